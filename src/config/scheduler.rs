//! `[offpeak]`, `[[upstreams]]` and `[scheduler]`: when and how deferred batches are sent.

use std::ops::Range;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::channels::SecretRef;
use super::check::{Spanned2, at, backoff_ms, request_timeout};
use super::duration::HumanDuration;
use crate::model::valid_name;
use crate::offpeak::{OffPeak, Window};

/// Polling of asynchronous jobs an upstream creates (`[upstreams.poll]`).
#[derive(Debug, Clone)]
pub struct PollConfig {
    /// Path of the status request, `{id}` replaced by the job id.
    pub status_path: String,
    /// Dotted path of the job id in the creating response.
    pub id_field: String,
    /// Dotted path of the status in the status response.
    pub status_field: String,
    /// Statuses meaning done.
    pub done: Vec<String>,
    /// Statuses meaning failed.
    pub failed: Vec<String>,
    /// Time between polls of one job, ms.
    pub interval_ms: i64,
}

/// One `[[upstreams]]`.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Name batches refer to.
    pub name: String,
    /// Base URL requests' paths are appended to.
    pub base_url: String,
    /// The API key (sent as `Authorization: Bearer`); from the environment or a file only.
    pub api_key: Option<SecretRef>,
    /// Org whose limits this upstream draws on.
    pub org: String,
    /// Time allowed for one request, ms.
    pub timeout_ms: i64,
    /// Job polling, when the upstream's jobs are asynchronous.
    pub poll: Option<PollConfig>,
}

/// `[scheduler]`.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Share of each limit batches may use (at least 1 of each).
    pub share: f64,
    /// Attempts after the first before an item fails.
    pub max_retries: u32,
    /// Full-jitter backoff base, ms.
    pub backoff_base_ms: i64,
    /// Full-jitter backoff cap, ms.
    pub backoff_cap_ms: i64,
    /// Consecutive 429s that open an upstream's circuit.
    pub circuit_after: u32,
    /// How long an open circuit waits before letting one request through, ms.
    pub circuit_cooldown_ms: i64,
    /// Most requests in one batch.
    pub max_batch_items: usize,
    /// Most items not yet finished, over all batches.
    pub max_pending_items: usize,
    /// A finished (completed or cancelled) batch is forgotten this long after it finished, ms.
    pub retention_ms: i64,
    /// Most bytes of an upstream's answer kept with an item (longer ones are truncated, and
    /// the item says so).
    pub max_result_bytes: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWindow {
    start: Spanned<String>,
    duration: HumanDuration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawOffPeak {
    timezone: Spanned<String>,
    windows: Option<Vec<Spanned<RawWindow>>>,
}

impl Default for RawOffPeak {
    fn default() -> Self {
        RawOffPeak {
            timezone: Spanned::new(0..0, "America/New_York".into()),
            windows: None,
        }
    }
}

/// The SPEC §3 default windows: weekday nights from 19:00 for 11 h, weekends from Saturday
/// 00:00 for 48 h.
const DEFAULT_WINDOWS: [(&str, i64); 2] = [
    ("0 0 19 * * Mon-Fri", 11 * 3_600_000),
    ("0 0 0 * * Sat", 48 * 3_600_000),
];

impl RawOffPeak {
    pub(super) fn validate(&self) -> Result<OffPeak, Spanned2> {
        let tz: chrono_tz::Tz = self.timezone.get_ref().parse().map_err(|_| {
            at(
                self.timezone.span(),
                format!(
                    "unknown time zone {:?} (an IANA name like \"Europe/Berlin\")",
                    self.timezone.get_ref()
                ),
            )
        })?;
        let windows = match &self.windows {
            None => DEFAULT_WINDOWS
                .iter()
                .map(|(e, d)| Window::new(e, *d).map_err(|e| at(0..0, e)))
                .collect::<Result<Vec<_>, _>>()?,
            Some(list) => list
                .iter()
                .map(|w| {
                    let r = w.get_ref();
                    Window::new(r.start.get_ref(), r.duration.as_millis_i64())
                        .map_err(|e| at(r.start.span(), e))
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        Ok(OffPeak { tz, windows })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPoll {
    status_path: Spanned<String>,
    #[serde(default = "default_id")]
    id_field: String,
    #[serde(default = "default_status")]
    status_field: String,
    done: Spanned<Vec<String>>,
    #[serde(default)]
    failed: Vec<String>,
    #[serde(default = "default_poll_interval")]
    interval: Spanned<HumanDuration>,
}

fn default_id() -> String {
    "id".into()
}

fn default_status() -> String {
    "status".into()
}

fn default_poll_interval() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(std::time::Duration::from_secs(10)))
}

fn default_timeout() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(std::time::Duration::from_secs(60)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    name: Spanned<String>,
    base_url: Spanned<String>,
    api_key_env: Option<String>,
    api_key_file: Option<PathBuf>,
    org: Spanned<String>,
    #[serde(default = "default_timeout")]
    timeout: Spanned<HumanDuration>,
    poll: Option<RawPoll>,
}

impl RawUpstream {
    pub(super) fn name_span(&self) -> Range<usize> {
        self.name.span()
    }

    pub(super) fn validate(&self, whole: Range<usize>) -> Result<UpstreamConfig, Spanned2> {
        let name = self.name.get_ref();
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return Err(at(
                self.name.span(),
                "upstream names are 1-64 characters of A-Z a-z 0-9 _ . -",
            ));
        }
        let url = self.base_url.get_ref();
        if let Err(why) = crate::outbound::Base::parse(url) {
            return Err(at(
                self.base_url.span(),
                format!("base_url {} {why}", crate::outbound::redact(url)),
            ));
        }
        if !valid_name(self.org.get_ref()) {
            return Err(at(
                self.org.span(),
                "org must be 1-128 printable characters",
            ));
        }
        let api_key = match (&self.api_key_env, &self.api_key_file) {
            (Some(_), Some(_)) => {
                return Err(at(whole, "set api_key_env or api_key_file, not both"));
            }
            (Some(v), None) => Some(SecretRef::Env(v.clone())),
            (None, Some(p)) => Some(SecretRef::File(p.clone())),
            (None, None) => None,
        };
        let poll = match &self.poll {
            None => None,
            Some(p) => {
                if !p.status_path.get_ref().contains("{id}") {
                    return Err(at(p.status_path.span(), "status_path must contain {id}"));
                }
                if !p.status_path.get_ref().starts_with('/')
                    || p.status_path.get_ref().starts_with("//")
                {
                    // Appended to base_url; without a leading / the job id would be read as
                    // part of the host, and // reads as a host of its own in some clients.
                    return Err(at(
                        p.status_path.span(),
                        "status_path must start with / (one: // would name a host)",
                    ));
                }
                if p.done.get_ref().is_empty() {
                    return Err(at(p.done.span(), "done needs at least one status"));
                }
                let interval_ms = p.interval.get_ref().as_millis_i64();
                if interval_ms < 100 {
                    return Err(at(p.interval.span(), "interval must be at least 100ms"));
                }
                Some(PollConfig {
                    status_path: p.status_path.get_ref().clone(),
                    id_field: p.id_field.clone(),
                    status_field: p.status_field.clone(),
                    done: p.done.get_ref().clone(),
                    failed: p.failed.clone(),
                    interval_ms,
                })
            }
        };
        Ok(UpstreamConfig {
            name: name.clone(),
            base_url: url.trim_end_matches('/').to_string(),
            api_key,
            org: self.org.get_ref().clone(),
            timeout_ms: request_timeout(&self.timeout)?,
            poll,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawScheduler {
    share: Spanned<f64>,
    max_retries: u32,
    backoff_base: Spanned<HumanDuration>,
    backoff_cap: Spanned<HumanDuration>,
    circuit_after: Spanned<u32>,
    circuit_cooldown: HumanDuration,
    max_batch_items: Spanned<u64>,
    max_pending_items: Spanned<u64>,
    retention: Spanned<HumanDuration>,
    max_result_bytes: Spanned<u64>,
}

impl Default for RawScheduler {
    fn default() -> Self {
        let d = |ms: u64| HumanDuration(std::time::Duration::from_millis(ms));
        RawScheduler {
            share: Spanned::new(0..0, 0.7),
            max_retries: 5,
            backoff_base: Spanned::new(0..0, d(1_000)),
            backoff_cap: Spanned::new(0..0, d(64_000)),
            circuit_after: Spanned::new(0..0, 5),
            circuit_cooldown: d(60_000),
            max_batch_items: Spanned::new(0..0, 10_000),
            max_pending_items: Spanned::new(0..0, 100_000),
            retention: Spanned::new(0..0, d(7 * 24 * 3_600_000)),
            max_result_bytes: Spanned::new(0..0, 16 * 1024),
        }
    }
}

impl RawScheduler {
    pub(super) fn validate(&self) -> Result<SchedulerConfig, Spanned2> {
        let share = *self.share.get_ref();
        if !(share > 0.0 && share <= 1.0) {
            return Err(at(self.share.span(), "share must be above 0 and at most 1"));
        }
        let (base, cap) = backoff_ms(
            &self.backoff_base,
            &self.backoff_cap,
            ("backoff_base", "backoff_cap"),
        )?;
        if *self.circuit_after.get_ref() == 0 {
            return Err(at(
                self.circuit_after.span(),
                "circuit_after must be at least 1",
            ));
        }
        let count = |v: &Spanned<u64>, what: &str| -> Result<usize, Spanned2> {
            match usize::try_from(*v.get_ref()) {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(at(v.span(), format!("{what} must be at least 1"))),
            }
        };
        let retention = self.retention.get_ref().as_millis_i64();
        if retention < 60_000 {
            return Err(at(
                self.retention.span(),
                "retention must be at least 1m (finished batches are kept that long)",
            ));
        }
        let result = *self.max_result_bytes.get_ref();
        if !(256..=1 << 20).contains(&result) {
            return Err(at(
                self.max_result_bytes.span(),
                "max_result_bytes must be between 256 and 1048576",
            ));
        }
        Ok(SchedulerConfig {
            share,
            max_retries: self.max_retries,
            backoff_base_ms: base,
            backoff_cap_ms: cap,
            circuit_after: *self.circuit_after.get_ref(),
            circuit_cooldown_ms: self.circuit_cooldown.as_millis_i64(),
            max_batch_items: count(&self.max_batch_items, "max_batch_items")?,
            max_pending_items: count(&self.max_pending_items, "max_pending_items")?,
            retention_ms: retention,
            max_result_bytes: usize::try_from(result).unwrap_or(1 << 20),
        })
    }
}
