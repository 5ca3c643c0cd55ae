//! Email delivery over SMTP with lettre: plain text plus a small HTML part.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::error::DeliveryError;
use super::render;
use crate::config::{EmailConfig, EmailTls};
use crate::detect::Transition;

/// Sends to one set of recipients through one SMTP server.
pub struct EmailSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl EmailSender {
    /// A sender for `cfg`, its password already read.
    pub fn new(cfg: &EmailConfig, password: Option<String>) -> Result<EmailSender, String> {
        let parse = |a: &str| a.parse::<Mailbox>().map_err(|e| format!("{a:?}: {e}"));
        let from = parse(&cfg.from)?;
        let to = cfg
            .to
            .iter()
            .map(|a| parse(a))
            .collect::<Result<Vec<_>, _>>()?;
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(cfg.smtp_host.as_str())
                .port(cfg.smtp_port)
                .timeout(Some(Duration::from_millis(cfg.timeout_ms as u64)));
        if cfg.tls != EmailTls::None {
            let mut params = TlsParameters::builder(cfg.smtp_host.clone());
            if let Some(path) = &cfg.ca_file {
                let pem =
                    std::fs::read(path).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
                let cert = Certificate::from_pem(&pem)
                    .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
                params = params.add_root_certificate(cert);
            }
            let params = params
                .build_rustls()
                .map_err(|e| format!("TLS setup: {e}"))?;
            builder = builder.tls(match cfg.tls {
                EmailTls::Starttls => Tls::Required(params),
                _ => Tls::Wrapper(params),
            });
        }
        if let (Some(user), Some(password)) = (&cfg.username, password) {
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(EmailSender {
            transport: builder.build(),
            from,
            to,
        })
    }

    /// Delivers `t` once.
    pub async fn send(&self, t: &Transition, delivery_id: &str) -> Result<(), DeliveryError> {
        self.mail(
            render::subject(t),
            render::text_body(t, delivery_id),
            render::html_body(t, delivery_id),
        )
        .await
    }

    /// Delivers a group of notifications once, as one message.
    pub async fn send_group(&self, g: &render::Group<'_>) -> Result<(), DeliveryError> {
        self.mail(g.subject(), g.text_body(), g.html_body()).await
    }

    async fn mail(&self, subject: String, text: String, html: String) -> Result<(), DeliveryError> {
        let mut message = Message::builder().from(self.from.clone()).subject(subject);
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = message
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| DeliveryError::Permanent {
                message: format!("cannot build the message: {e}"),
            })?;
        self.transport.send(message).await.map(|_| ()).map_err(|e| {
            let message = format!("SMTP: {e}");
            if e.is_permanent() {
                DeliveryError::Permanent { message }
            } else {
                DeliveryError::Retry {
                    message,
                    retry_after: None,
                }
            }
        })
    }
}
