//! `[[alerts.email]]` and `[[alerts.webhook]]`: where notifications go.
//!
//! Validation here covers what can be known from the file: URLs, addresses, TLS mode, names.
//! Whether the secrets they name exist is checked by `check-config` (a warning) and `run`
//! (refuses to start), because the environment differs between the two.

use std::ops::Range;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::check::{Spanned2, at, request_timeout};
use super::duration::HumanDuration;
use crate::model::Severity;

/// Where a secret lives: an environment variable or a file (never the config itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// `*_env`: the variable's value.
    Env(String),
    /// `*_file`: the file's content, trailing newline removed.
    File(PathBuf),
}

impl SecretRef {
    /// The secret, or why it is not available.
    pub fn read(&self) -> Result<String, String> {
        match self {
            SecretRef::Env(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(v),
                Ok(_) => Err(format!("${var} is empty")),
                Err(_) => Err(format!("${var} is not set")),
            },
            SecretRef::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| format!("{}: {e}", path.display())),
        }
    }

    /// How the config refers to it, for messages.
    pub fn describe(&self) -> String {
        match self {
            SecretRef::Env(var) => format!("${var}"),
            SecretRef::File(path) => path.display().to_string(),
        }
    }
}

/// How to talk to the SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmailTls {
    /// Plain text (only for a relay on a trusted network).
    None,
    /// Upgrade with STARTTLS, required.
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
}

/// One `[[alerts.email]]`.
#[derive(Debug, Clone)]
pub struct EmailConfig {
    /// SMTP server.
    pub smtp_host: String,
    /// SMTP port (default by `tls`: 25, 587 or 465).
    pub smtp_port: u16,
    /// TLS mode.
    pub tls: EmailTls,
    /// SMTP user, if the server wants authentication.
    pub username: Option<String>,
    /// The password.
    pub password: Option<SecretRef>,
    /// Sender address.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// Extra CA certificate (PEM) to trust, for relays with a private CA.
    pub ca_file: Option<PathBuf>,
    /// Time allowed for one delivery, in ms.
    pub timeout_ms: i64,
}

/// Body format of a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// The SPEC §9 notification object.
    Json,
    /// A Slack incoming-webhook message.
    Slack,
    /// Alertmanager's `POST /api/v2/alerts`.
    Alertmanager,
}

/// Where a webhook's URL comes from. A webhook URL is a credential (Slack-style paths,
/// `?token=`), so it may live outside the file like any secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlRef {
    /// `url`, written in the config.
    Literal(String),
    /// `url_env` or `url_file`.
    Secret(SecretRef),
}

impl UrlRef {
    /// The URL, checked to be http(s) with a host, or why it is not available.
    pub fn resolve(&self) -> Result<String, String> {
        let url = match self {
            UrlRef::Literal(u) => u.clone(),
            UrlRef::Secret(s) => s.read()?,
        };
        match reqwest::Url::parse(&url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(url),
            // Never the value itself in the message: it may hold the credential.
            _ => Err(format!(
                "{} is not an http(s) URL",
                match self {
                    UrlRef::Literal(_) => "url".to_string(),
                    UrlRef::Secret(s) => s.describe(),
                }
            )),
        }
    }

    /// The URL as it may be shown (scheme, host, port).
    pub fn shown(&self) -> String {
        match self {
            UrlRef::Literal(u) => crate::outbound::redact(u),
            UrlRef::Secret(s) => format!("(URL from {})", s.describe()),
        }
    }
}

/// One `[[alerts.webhook]]`.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Full endpoint.
    pub url: UrlRef,
    /// Body format.
    pub format: WebhookFormat,
    /// HMAC secret, when deliveries are signed.
    pub secret: Option<SecretRef>,
    /// Time allowed for one delivery, in ms.
    pub timeout_ms: i64,
}

/// What kind of channel.
#[derive(Debug, Clone)]
pub enum ChannelKind {
    /// Email.
    Email(EmailConfig),
    /// Webhook.
    Webhook(WebhookConfig),
}

/// One notification channel.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    /// Name: label of `notifications_total{channel}`.
    pub name: String,
    /// Least severity sent.
    pub min_severity: Severity,
    /// Most deliveries a minute (0 = no limit); what arrives faster is sent grouped, several
    /// notifications in one.
    pub max_per_minute: u32,
    /// Email or webhook.
    pub kind: ChannelKind,
}

/// Default `max_per_minute` of a channel.
pub const DEFAULT_MAX_PER_MINUTE: u32 = 60;

impl ChannelConfig {
    /// Secrets the channel needs, with what they are for.
    pub fn secrets(&self) -> Vec<(&SecretRef, &'static str)> {
        match &self.kind {
            ChannelKind::Email(e) => e.password.iter().map(|s| (s, "SMTP password")).collect(),
            ChannelKind::Webhook(w) => {
                let url = match &w.url {
                    UrlRef::Secret(s) => Some((s, "webhook URL")),
                    UrlRef::Literal(_) => None,
                };
                url.into_iter()
                    .chain(w.secret.iter().map(|s| (s, "webhook signing secret")))
                    .collect()
            }
        }
    }

    /// `email` or `webhook/<format>`, for listings.
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            ChannelKind::Email(_) => "email",
            ChannelKind::Webhook(w) => match w.format {
                WebhookFormat::Json => "webhook",
                WebhookFormat::Slack => "slack",
                WebhookFormat::Alertmanager => "alertmanager",
            },
        }
    }
}

fn default_timeout() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(std::time::Duration::from_secs(10)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEmail {
    name: Option<Spanned<String>>,
    smtp_host: Spanned<String>,
    smtp_port: Option<Spanned<u16>>,
    tls: Option<EmailTls>,
    username: Option<String>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    from: Spanned<String>,
    to: Spanned<Vec<String>>,
    min_severity: Option<Severity>,
    max_per_minute: Option<u32>,
    ca_file: Option<PathBuf>,
    #[serde(default = "default_timeout")]
    timeout: Spanned<HumanDuration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    name: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    url_env: Option<String>,
    url_file: Option<PathBuf>,
    format: Option<WebhookFormat>,
    secret_env: Option<String>,
    secret_file: Option<PathBuf>,
    min_severity: Option<Severity>,
    max_per_minute: Option<u32>,
    #[serde(default = "default_timeout")]
    timeout: Spanned<HumanDuration>,
}

fn name(raw: &Option<Spanned<String>>, default: String) -> Result<String, Spanned2> {
    match raw {
        Some(n) => {
            let v = n.get_ref();
            let ok = !v.is_empty()
                && v.len() <= 64
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if ok {
                Ok(v.clone())
            } else {
                Err(at(
                    n.span(),
                    "channel names are 1-64 characters of A-Z a-z 0-9 _ . -",
                ))
            }
        }
        None => Ok(default),
    }
}

pub(super) fn secret(
    env: &Option<String>,
    file: &Option<PathBuf>,
    whole: &Range<usize>,
    what: &str,
) -> Result<Option<SecretRef>, Spanned2> {
    match (env, file) {
        (Some(_), Some(_)) => Err(at(
            whole.clone(),
            format!("set {what}_env or {what}_file, not both"),
        )),
        (Some(v), None) if v.trim().is_empty() => {
            Err(at(whole.clone(), format!("{what}_env is empty")))
        }
        (Some(v), None) => Ok(Some(SecretRef::Env(v.clone()))),
        (None, Some(p)) => Ok(Some(SecretRef::File(p.clone()))),
        (None, None) => Ok(None),
    }
}

impl RawEmail {
    pub(super) fn name_span(&self) -> Option<Range<usize>> {
        self.name.as_ref().map(Spanned::span)
    }

    pub(super) fn validate(
        &self,
        index: usize,
        whole: Range<usize>,
    ) -> Result<ChannelConfig, Spanned2> {
        let host = self.smtp_host.get_ref().trim();
        if host.is_empty() {
            return Err(at(self.smtp_host.span(), "smtp_host is empty"));
        }
        let address = |s: &str, span: Range<usize>| -> Result<String, Spanned2> {
            s.parse::<lettre::message::Mailbox>()
                .map(|_| s.to_string())
                .map_err(|e| at(span, format!("{s:?} is not an email address: {e}")))
        };
        let from = address(self.from.get_ref(), self.from.span())?;
        if self.to.get_ref().is_empty() {
            return Err(at(self.to.span(), "to needs at least one address"));
        }
        let to = self
            .to
            .get_ref()
            .iter()
            .map(|a| address(a, self.to.span()))
            .collect::<Result<Vec<_>, _>>()?;
        let tls = self.tls.unwrap_or(EmailTls::Starttls);
        let password = secret(&self.password_env, &self.password_file, &whole, "password")?;
        if password.is_some() && self.username.is_none() {
            return Err(at(whole, "a password needs a username"));
        }
        Ok(ChannelConfig {
            name: name(&self.name, format!("email-{}", index + 1))?,
            min_severity: self.min_severity.unwrap_or(Severity::Warning),
            max_per_minute: self.max_per_minute.unwrap_or(DEFAULT_MAX_PER_MINUTE),
            kind: ChannelKind::Email(EmailConfig {
                smtp_host: host.to_string(),
                smtp_port: match &self.smtp_port {
                    Some(p) if *p.get_ref() == 0 => {
                        return Err(at(p.span(), "smtp_port must be 1-65535"));
                    }
                    Some(p) => *p.get_ref(),
                    None => match tls {
                        EmailTls::None => 25,
                        EmailTls::Starttls => 587,
                        EmailTls::Tls => 465,
                    },
                },
                tls,
                username: self.username.clone(),
                password,
                from,
                to,
                ca_file: self.ca_file.clone(),
                timeout_ms: request_timeout(&self.timeout)?,
            }),
        })
    }
}

impl RawWebhook {
    pub(super) fn name_span(&self) -> Option<Range<usize>> {
        self.name.as_ref().map(Spanned::span)
    }

    pub(super) fn validate(
        &self,
        index: usize,
        whole: Range<usize>,
    ) -> Result<ChannelConfig, Spanned2> {
        let from_secret = secret(&self.url_env, &self.url_file, &whole, "url")?;
        let url = match (&self.url, from_secret) {
            (Some(u), None) => {
                let shown = crate::outbound::redact(u.get_ref());
                match reqwest::Url::parse(u.get_ref()) {
                    Ok(p) if matches!(p.scheme(), "http" | "https") && p.host_str().is_some() => {}
                    // Messages show only scheme and host: the rest may be the credential.
                    Ok(_) => {
                        return Err(at(u.span(), format!("{shown} is not an http(s) URL")));
                    }
                    Err(e) => return Err(at(u.span(), format!("url is not a URL: {e}"))),
                }
                UrlRef::Literal(u.get_ref().clone())
            }
            (None, Some(s)) => UrlRef::Secret(s),
            (Some(u), Some(_)) => {
                return Err(at(u.span(), "set url, url_env or url_file, only one"));
            }
            (None, None) => {
                return Err(at(whole, "a webhook needs url, url_env or url_file"));
            }
        };
        Ok(ChannelConfig {
            name: name(&self.name, format!("webhook-{}", index + 1))?,
            min_severity: self.min_severity.unwrap_or(Severity::Warning),
            max_per_minute: self.max_per_minute.unwrap_or(DEFAULT_MAX_PER_MINUTE),
            kind: ChannelKind::Webhook(WebhookConfig {
                url,
                format: self.format.unwrap_or(WebhookFormat::Json),
                secret: secret(&self.secret_env, &self.secret_file, &whole, "secret")?,
                timeout_ms: request_timeout(&self.timeout)?,
            }),
        })
    }
}
