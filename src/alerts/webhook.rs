//! Webhook delivery (JSON, Slack, Alertmanager) over reqwest, signed when a secret is set.

use crate::model::Severity;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use sha2::Sha256;

use super::{DeliveryError, render};
use crate::config::{WebhookConfig, WebhookFormat};
use crate::detect::Transition;

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

/// Seconds or an HTTP date, as a wait from `now_ms` (the one reading of `Retry-After` that
/// events use too).
pub fn parse_retry_after(value: &str, now_ms: i64) -> Option<Duration> {
    crate::events::retry_after_header_ms(value, now_ms).map(|ms| Duration::from_millis(ms as u64))
}

/// The wait a response's `Retry-After` header asks for, if it has a readable one.
pub fn retry_after(headers: &reqwest::header::HeaderMap, now_ms: i64) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, now_ms))
}

/// Sends to one webhook.
pub struct WebhookSender {
    client: reqwest::Client,
    url: String,
    format: WebhookFormat,
    secret: Option<String>,
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
        let client = reqwest::Client::builder()
            // Notifications go to the configured URL only: a 3xx is a failed delivery.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(cfg.timeout_ms as u64))
            .connect_timeout(Duration::from_millis(cfg.timeout_ms.min(5_000) as u64))
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(WebhookSender {
            client,
            url: cfg.url.resolve()?,
            format: cfg.format,
            secret,
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
            .header(USER_AGENT, crate::USER_AGENT)
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
                message: crate::outbound::error_text(&e),
                retry_after: None,
            })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = retry_after(resp.headers(), now_ms);
        let text = resp.text().await.unwrap_or_default();
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

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(parse_retry_after("7", 0), Some(Duration::from_secs(7)));
        let now = chrono::DateTime::parse_from_rfc2822("Fri, 27 Nov 2026 14:00:00 GMT")
            .unwrap()
            .timestamp_millis();
        assert_eq!(
            parse_retry_after("Fri, 27 Nov 2026 14:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Fri, 27 Nov 2026 13:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
