//! Webhook delivery (JSON, Slack, Alertmanager) over reqwest, signed when a secret is set.

use hmac::{Hmac, KeyInit, Mac};
use reqwest::header::CONTENT_TYPE;
use sha2::Sha256;

use super::error::DeliveryError;
use super::render;
use crate::config::{WebhookConfig, WebhookFormat};
use crate::detect::Transition;
use crate::model::Severity;
use crate::outbound;

/// `sha256=<hex HMAC-SHA256 of timestamp + "." + body>` (SPEC §9).
pub fn signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length; the error case cannot happen.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Most bytes of a receiver's error answer read (500 characters of it are quoted).
const ANSWER_BYTES: usize = 4096;

/// Sends to one webhook.
pub struct WebhookSender {
    client: reqwest::Client,
    url: String,
    format: WebhookFormat,
    secret: Option<String>,
    /// The URL's credentials and the signing secret, scrubbed from the receiver's answers.
    secrets: outbound::Secrets,
    min: Severity,
    /// How long Alertmanager should keep a firing alert without a reminder.
    firing_for_ms: i64,
}

impl WebhookSender {
    /// A sender for `cfg`, its secret already read.
    pub fn new(
        cfg: &WebhookConfig,
        secret: Option<String>,
        min: Severity,
        firing_for_ms: i64,
    ) -> Result<WebhookSender, String> {
        // Notifications go to the configured URL only: a 3xx is a failed delivery.
        let client = outbound::client(cfg.timeout_ms, 5_000)?;
        let url = cfg.url.resolve()?;
        let mut secrets = outbound::Secrets::of_url(&url);
        if let Some(s) = &secret {
            secrets = secrets.with(s);
        }
        Ok(WebhookSender {
            client,
            url,
            format: cfg.format,
            secret,
            secrets,
            min,
            firing_for_ms,
        })
    }

    /// The body for `t` in this webhook's format; `None` when nothing is to be sent.
    pub fn body(&self, t: &Transition) -> Option<Vec<u8>> {
        match self.format {
            WebhookFormat::Json => Some(render::json_body(t)),
            WebhookFormat::Slack => Some(render::slack_body(t)),
            WebhookFormat::Alertmanager => {
                render::alertmanager_body(t, self.min, self.firing_for_ms)
            }
        }
    }

    /// Delivers `t` once.
    pub async fn send(
        &self,
        t: &Transition,
        delivery_id: &str,
        now_ms: i64,
    ) -> Result<(), DeliveryError> {
        match self.body(t) {
            Some(body) => self.post(body, delivery_id, now_ms).await,
            None => Ok(()),
        }
    }

    /// Delivers a group of notifications once, as one request.
    pub async fn send_group(
        &self,
        g: &render::Group<'_>,
        now_ms: i64,
    ) -> Result<(), DeliveryError> {
        let body = match self.format {
            WebhookFormat::Json => Some(g.json_body()),
            WebhookFormat::Slack => Some(g.slack_body()),
            WebhookFormat::Alertmanager => g.alertmanager_body(self.min, self.firing_for_ms),
        };
        match body {
            Some(body) => self.post(body, g.delivery_id, now_ms).await,
            None => Ok(()),
        }
    }

    /// One signed POST of `body`.
    async fn post(
        &self,
        body: Vec<u8>,
        delivery_id: &str,
        now_ms: i64,
    ) -> Result<(), DeliveryError> {
        let timestamp = (now_ms / 1000).to_string();
        let mut req = self
            .client
            .post(&self.url)
            .header(CONTENT_TYPE, "application/json")
            .header("X-Ratewarden-Delivery", delivery_id)
            .header("X-Ratewarden-Timestamp", &timestamp);
        if let Some(secret) = &self.secret {
            req = req.header(
                "X-Ratewarden-Signature",
                signature(secret.as_bytes(), &timestamp, &body),
            );
        }
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(|e| DeliveryError::Retry {
                // Never the URL: for a webhook it is a credential.
                message: outbound::error_text(&e),
                retry_after: None,
            })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = outbound::retry_after(resp.headers(), now_ms);
        let text = outbound::read_body(resp, ANSWER_BYTES, &self.secrets).await;
        let answer: String = text.chars().take(500).collect();
        let message = if status.is_redirection() {
            format!("HTTP {status}: redirects are not followed; configure the final URL")
        } else {
            format!("HTTP {status}: {answer}")
        };
        if status.as_u16() == 408 || status.as_u16() == 429 || status.is_server_error() {
            Err(DeliveryError::Retry {
                message,
                retry_after,
            })
        } else {
            Err(DeliveryError::Permanent { message })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // python3 -c "import hmac,hashlib;print(hmac.new(b'key',b'1700000000.{}',hashlib.sha256).hexdigest())"
        assert_eq!(
            signature(b"key", "1700000000", b"{}"),
            "sha256=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
    }
}
