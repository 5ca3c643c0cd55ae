//! Configuration: the TOML file of SPEC §3, parsed once into a validated [`Config`].
//!
//! Raw serde structs (`deny_unknown_fields`) mirror the file; [`Config::parse`] turns them into
//! the validated form every other module uses: durations in milliseconds, thresholds in integer
//! basis points, tiers resolved per org. Nothing downstream re-reads or re-validates the file.
//! Every error carries the position of the offending text (`FILE:LINE:COL: message`).
//!
//! Sections that later features bring (`sources`, alert channels, `offpeak`, `upstreams`,
//! `scheduler`) are refused with a clear message until they work, never silently ignored.

mod channels;
mod duration;
mod scheduler;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

pub use channels::{
    ChannelConfig, ChannelKind, EmailConfig, EmailTls, SecretRef, WebhookConfig, WebhookFormat,
};
pub use duration::{HumanDuration, parse_duration};
pub use scheduler::{PollConfig, SchedulerConfig, UpstreamConfig};

use crate::events::format::{Dialect, LineFormat, Template};
use crate::model::{Limits, valid_name};

/// Default listen address (SPEC §2).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9747";
/// Environment variable that points `run` at a config file when `--config` is absent.
pub const CONFIG_ENV: &str = "RATEWARDEN_CONFIG";

/// A configuration error, positioned in the file where possible.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file that failed.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file was read but is not a valid configuration.
    #[error("{path}:{line}:{col}: {message}")]
    Invalid {
        /// The file, as given by the user.
        path: String,
        /// 1-based line of the offending text.
        line: usize,
        /// 1-based column (in characters) of the offending text.
        col: usize,
        /// What is wrong and, where it helps, what to write instead.
        message: String,
    },
}

/// A validation failure before it is placed in a file.
struct Spanned2 {
    span: Range<usize>,
    message: String,
}

fn at(span: Range<usize>, message: impl Into<String>) -> Spanned2 {
    Spanned2 {
        span,
        message: message.into(),
    }
}

/// A request timeout (`timeout` of a channel or an upstream), in ms: at least 100 ms, since
/// nothing answers sooner and `"0s"` would fail every attempt at once.
fn request_timeout(v: &Spanned<HumanDuration>) -> Result<i64, Spanned2> {
    let ms = v.get_ref().as_millis_i64();
    if ms < 100 {
        return Err(at(v.span(), "timeout must be at least 100ms"));
    }
    Ok(ms)
}

/// A backoff's `base` and `cap` (named `names` in messages), in ms: the base at least 1 ms,
/// the cap not below it.
fn backoff_ms(
    base: &Spanned<HumanDuration>,
    cap: &Spanned<HumanDuration>,
    names: (&str, &str),
) -> Result<(i64, i64), Spanned2> {
    let (base_ms, cap_ms) = (
        base.get_ref().as_millis_i64(),
        cap.get_ref().as_millis_i64(),
    );
    if base_ms < 1 {
        return Err(at(base.span(), format!("{} must be at least 1ms", names.0)));
    }
    if cap_ms < base_ms {
        return Err(at(
            cap.span(),
            format!("{} must not be below {}", names.1, names.0),
        ));
    }
    Ok((base_ms, cap_ms))
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address the HTTP API and `/metrics` listen on.
    pub listen: SocketAddr,
    /// Variable holding the bearer token for `POST /v1/events` (`None`: no variable named).
    pub ingest_token_env: Option<String>,
    /// Variable holding the bearer token for `/v1/usage`, `/v1/alerts`, `/v1/batches`.
    pub admin_token_env: Option<String>,
    /// Variable holding the optional bearer token for `/metrics`.
    pub metrics_token_env: Option<String>,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Allow a non-loopback listen address without ingest and admin tokens.
    pub allow_unauthenticated: bool,
    /// A request's head must arrive within this long once its first byte has.
    pub header_read_timeout: std::time::Duration,
    /// A connection with no request in progress and no bytes moving is closed after this.
    pub idle_timeout: std::time::Duration,
    /// A request body must arrive within this long (408 otherwise).
    pub body_read_timeout: std::time::Duration,
    /// Most connections served at once; `None` sizes it to the open-file limit at start.
    pub max_connections: Option<usize>,
    /// Bytes of request bodies held in memory at once, across all requests (raw and
    /// decoded); beyond it requests are answered 429 with `Retry-After`.
    pub max_inflight_bytes: usize,
}

/// Default `[server] max_inflight_bytes`: eight maximal bodies of the default size.
pub const DEFAULT_MAX_INFLIGHT_BYTES: u64 = 128 * 1024 * 1024;

/// `[storage]`.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Directory of the embedded store.
    pub path: PathBuf,
}

/// `[limits]`: tier defaults and cardinality bounds.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Tier of orgs not named in `[[orgs]]`.
    pub default_tier: String,
    /// Orgs tracked individually (configured orgs included); others share `__overflow__`.
    pub max_orgs: usize,
    /// Apps tracked individually per org; others share `__overflow__`.
    pub max_apps_per_org: usize,
    /// Jobs tracked in flight per org; past it the oldest is dropped (counted as overflow).
    pub max_jobs_per_org: usize,
    /// `request_id`s remembered for deduplication (0 turns it off).
    pub max_request_ids: usize,
    /// Orgs first seen in one second (of the daemon's clock; of event time in replay) that
    /// are tracked individually; events of further new orgs in that second share
    /// `__overflow__`.
    pub max_new_orgs_per_second: usize,
}

/// One `[[orgs]]` entry with its tier resolved.
#[derive(Debug, Clone)]
pub struct OrgConfig {
    /// Organization id as it appears in events.
    pub id: String,
    /// Tier name (for display).
    pub tier: String,
    /// Tier limits with this org's overrides applied.
    pub limits: Limits,
}

/// `[detect]`, durations in milliseconds.
#[derive(Debug, Clone)]
pub struct DetectConfig {
    /// A job in flight longer than this is stuck.
    pub stuck_after_ms: i64,
    /// A job in flight longer than this stops holding a concurrency slot (`timed_out`).
    pub release_after_ms: i64,
    /// Burst window `W`.
    pub burst_window_ms: i64,
    /// Burst factor: threshold is `max(2, ceil(rpm × W/60 s × factor))`.
    pub burst_factor: f64,
    /// Consecutive 429s for one org/app that make a retry storm.
    pub retry_storm_after: u32,
}

/// `[alerts]` thresholds, in integer basis points (1/10 000) so comparisons are exact.
#[derive(Debug, Clone)]
pub struct AlertsConfig {
    /// Warning threshold (7000 = 70 %).
    pub warning_bp: u32,
    /// Critical threshold (9000 = 90 %).
    pub critical_bp: u32,
    /// Resolve strictly below `threshold − hysteresis`.
    pub hysteresis_bp: u32,
    /// A condition must hold this long before it fires.
    pub for_ms: i64,
    /// Re-send a firing alert this often (0: never).
    pub repeat_interval_ms: i64,
    /// Delivery retries: full-jitter backoff from this base...
    pub retry_base_ms: i64,
    /// ...up to this cap.
    pub retry_cap_ms: i64,
    /// A notification not delivered after this long is given up (counted as failed).
    pub max_age_ms: i64,
    /// Where notifications go.
    pub channels: Vec<ChannelConfig>,
}

/// `read_from` of a file source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadFrom {
    /// Read files present at the first start from their first byte.
    Beginning,
    /// Skip what files present at the first start already hold.
    End,
}

/// One `[[sources.file]]`, its format compiled.
#[derive(Debug, Clone)]
pub struct FileSourceConfig {
    /// Label value of `events_ingested_total{source}` and key of its checkpoints.
    pub name: String,
    /// Glob of the files to tail.
    pub path: String,
    /// Name of the format (`json`, `nginx`, `envoy`), for logs.
    pub format_name: &'static str,
    /// Compiled line format.
    pub format: LineFormat,
    /// Where to start in files present at the source's first start.
    pub read_from: ReadFrom,
    /// Org of lines that carry none.
    pub org: Option<String>,
    /// App of lines that carry none.
    pub app: Option<String>,
    /// Longer lines are skipped and counted as `too_large`.
    pub max_line_bytes: usize,
    /// Paths the glob matches that are never read (`exclude`, matched against the full path).
    pub exclude: Vec<glob::Pattern>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[storage]`.
    pub storage: StorageConfig,
    /// `[limits]`.
    pub limits: LimitsConfig,
    /// Every tier by name: built-in presets merged with `[tiers.*]`.
    pub tiers: BTreeMap<String, Limits>,
    /// Configured orgs, in file order.
    pub orgs: Vec<OrgConfig>,
    /// `[detect]`.
    pub detect: DetectConfig,
    /// `[alerts]`.
    pub alerts: AlertsConfig,
    /// `[[sources.file]]`.
    pub sources: Vec<FileSourceConfig>,
    /// `[offpeak]`.
    pub offpeak: crate::offpeak::OffPeak,
    /// `[[upstreams]]`.
    pub upstreams: Vec<UpstreamConfig>,
    /// `[scheduler]`.
    pub scheduler: SchedulerConfig,
}

impl Default for Config {
    fn default() -> Self {
        match Config::parse("", "<defaults>") {
            Ok(c) => c,
            // The empty document is part of the test suite; failing here is a programming error.
            Err(e) => panic!("built-in defaults do not validate: {e}"),
        }
    }
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Io {
            path: shown.clone(),
            source,
        })?;
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                // TOML is UTF-8 (TOML 1.0 §"Spec"); point at the first byte that is not.
                let good = e.utf8_error().valid_up_to();
                let bytes = e.as_bytes();
                let before = String::from_utf8_lossy(&bytes[..good]);
                let (line, col) = line_col(&before, before.len());
                return Err(ConfigError::Invalid {
                    path: shown,
                    line,
                    col,
                    message: format!(
                        "byte 0x{:02x} is not UTF-8: a config file must be UTF-8 text",
                        bytes[good]
                    ),
                });
            }
        };
        Config::parse(&text, &shown)
    }

    /// Validates `text`; `path` is only used in error messages.
    pub fn parse(text: &str, path: &str) -> Result<Config, ConfigError> {
        let place = |e: Spanned2| {
            let (line, col) = line_col(text, e.span.start);
            ConfigError::Invalid {
                path: path.to_string(),
                line,
                col,
                message: e.message,
            }
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            place(at(
                e.span().unwrap_or(0..0),
                e.message().trim_end().to_string(),
            ))
        })?;
        raw.validate().map_err(place)
    }

    /// The tier of orgs not named in the config.
    pub fn default_limits(&self) -> Limits {
        self.tiers
            .get(&self.limits.default_tier)
            .copied()
            .unwrap_or_default()
    }

    /// Channel and upstream secrets that cannot be read now: (who, what, why). `run` refuses
    /// to start with any; `check-config` warns.
    pub fn missing_secrets(&self) -> Vec<(String, &'static str, String)> {
        let channels = self.alerts.channels.iter().flat_map(|c| {
            c.secrets().into_iter().filter_map(|(s, what)| {
                s.read()
                    .err()
                    .map(|why| (format!("channel {}", c.name), what, why))
            })
        });
        let upstreams = self.upstreams.iter().filter_map(|u| {
            u.api_key
                .as_ref()
                .and_then(|k| k.read().err())
                .map(|why| (format!("upstream {}", u.name), "API key", why))
        });
        channels.chain(upstreams).collect()
    }

    /// Names of the `*_env` variables this config reads, with what each is for.
    pub fn secret_envs(&self) -> Vec<(&str, &'static str)> {
        let mut out = Vec::new();
        if let Some(v) = &self.server.ingest_token_env {
            out.push((v.as_str(), "ingest token (POST /v1/events)"));
        }
        if let Some(v) = &self.server.admin_token_env {
            out.push((v.as_str(), "admin token (/v1/usage, /v1/alerts)"));
        }
        if let Some(v) = &self.server.metrics_token_env {
            out.push((v.as_str(), "metrics token (/metrics)"));
        }
        out
    }
}

impl Config {
    /// The short summary `check-config` prints.
    pub fn summary(&self) -> String {
        let tiers: Vec<String> = self
            .tiers
            .iter()
            .map(|(name, l)| format!("{name} ({l})"))
            .collect();
        let orgs: Vec<String> = self
            .orgs
            .iter()
            .map(|o| format!("{} ({})", o.id, o.tier))
            .collect();
        let mut out = String::new();
        out.push_str(&format!(
            "listen {}, store {}\n",
            self.server.listen,
            self.storage.path.display()
        ));
        out.push_str(&format!("tiers: {}\n", tiers.join(", ")));
        out.push_str(&format!(
            "orgs: {} configured{}; others on {}\n",
            self.orgs.len(),
            if orgs.is_empty() {
                String::new()
            } else {
                format!(": {}", orgs.join(", "))
            },
            self.limits.default_tier
        ));
        out.push_str(&format!(
            "alerts: warning at {}%, critical at {}%, resolve {} points below, for {} ms\n",
            self.alerts.warning_bp as f64 / 100.0,
            self.alerts.critical_bp as f64 / 100.0,
            self.alerts.hysteresis_bp as f64 / 100.0,
            self.alerts.for_ms
        ));
        if self.sources.is_empty() {
            out.push_str("sources: 0 (events arrive by POST /v1/events)\n");
        } else {
            let list: Vec<String> = self
                .sources
                .iter()
                .map(|s| format!("{} ({} {})", s.name, s.format_name, s.path))
                .collect();
            out.push_str(&format!("sources: {}\n", list.join(", ")));
        }
        let now = chrono::Utc::now().timestamp_millis();
        let local = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms)
                .unwrap_or_default()
                .with_timezone(&self.offpeak.tz)
                .format("%a %Y-%m-%d %H:%M %Z")
                .to_string()
        };
        let endless = {
            let s = self.offpeak.status(now);
            s.open && s.next_close.is_none()
        };
        let windows: Vec<String> = if endless {
            vec!["open now, with no end (the windows overlap without a gap)".to_string()]
        } else {
            self.offpeak
                .upcoming(now, 3)
                .into_iter()
                .map(|(a, b)| {
                    if a <= now {
                        format!("open now until {}", local(b))
                    } else {
                        format!("{} .. {}", local(a), local(b))
                    }
                })
                .collect()
        };
        out.push_str(&format!(
            "off-peak ({}): next {}\n",
            self.offpeak.tz,
            if windows.is_empty() {
                "none".to_string()
            } else {
                windows.join(", ")
            }
        ));
        if !self.upstreams.is_empty() {
            let list: Vec<String> = self
                .upstreams
                .iter()
                .map(|u| {
                    format!(
                        "{} ({} for org {}{})",
                        u.name,
                        u.base_url,
                        u.org,
                        if u.poll.is_some() { ", polled" } else { "" }
                    )
                })
                .collect();
            out.push_str(&format!(
                "upstreams: {}; batches use {}% of each limit\n",
                list.join(", "),
                self.scheduler.share * 100.0
            ));
        }
        if self.alerts.channels.is_empty() {
            out.push_str("channels: 0 (transitions are logged and shown at /v1/alerts)\n");
        } else {
            let list: Vec<String> = self
                .alerts
                .channels
                .iter()
                .map(|c| {
                    let target = match &c.kind {
                        channels::ChannelKind::Webhook(w) => format!(" to {}", w.url.shown()),
                        channels::ChannelKind::Email(_) => String::new(),
                    };
                    format!(
                        "{} ({}{target}, {} and up)",
                        c.name,
                        c.kind_name(),
                        c.min_severity.as_str()
                    )
                })
                .collect();
            out.push_str(&format!("channels: {}\n", list.join(", ")));
        }
        out
    }
}

/// 1-based line and character column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = text[line_start..offset].chars().count() + 1;
    (line, col)
}

// ------------------------------------------------------------------ raw file structs

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    server: RawServer,
    storage: RawStorage,
    limits: RawLimits,
    tiers: BTreeMap<String, Spanned<RawTier>>,
    orgs: Vec<RawOrg>,
    detect: RawDetect,
    alerts: RawAlerts,
    sources: RawSources,
    offpeak: scheduler::RawOffPeak,
    upstreams: Vec<Spanned<scheduler::RawUpstream>>,
    scheduler: scheduler::RawScheduler,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawSources {
    file: Vec<Spanned<RawFileSource>>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawFormat {
    Json,
    Nginx,
    Envoy,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFileSource {
    name: Option<Spanned<String>>,
    path: Spanned<String>,
    format: Option<RawFormat>,
    read_from: Option<ReadFrom>,
    org: Option<Spanned<String>>,
    app: Option<Spanned<String>>,
    max_line_bytes: Option<Spanned<u64>>,
    log_format: Option<Spanned<String>>,
    fields: Option<Spanned<BTreeMap<String, String>>>,
    exclude: Option<Spanned<Vec<String>>>,
}

impl RawFileSource {
    fn validate(&self, index: usize, whole: Range<usize>) -> Result<FileSourceConfig, Spanned2> {
        let name = match &self.name {
            Some(n) => {
                let ok = !n.get_ref().is_empty()
                    && n.get_ref().len() <= 64
                    && n.get_ref()
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
                if !ok {
                    return Err(at(
                        n.span(),
                        "source names are 1-64 characters of A-Z a-z 0-9 _ . -",
                    ));
                }
                n.get_ref().clone()
            }
            None => format!("file-{}", index + 1),
        };
        let path = self.path.get_ref();
        if path.trim().is_empty() {
            return Err(at(
                self.path.span(),
                "path is empty: name a log file or a glob (\"/var/log/nginx/access.log*\")",
            ));
        }
        if let Err(e) = glob::Pattern::new(path) {
            return Err(at(self.path.span(), format!("invalid glob {path:?}: {e}")));
        }
        let mut exclude = Vec::new();
        if let Some(ex) = &self.exclude {
            for g in ex.get_ref() {
                exclude.push(
                    glob::Pattern::new(g)
                        .map_err(|e| at(ex.span(), format!("invalid exclude glob {g:?}: {e}")))?,
                );
            }
        }
        for v in [&self.org, &self.app].into_iter().flatten() {
            if !valid_name(v.get_ref()) {
                return Err(at(v.span(), "must be 1-128 printable characters"));
            }
        }
        let max_line_bytes = match &self.max_line_bytes {
            Some(m) if *m.get_ref() == 0 => {
                return Err(at(m.span(), "max_line_bytes must be at least 1"));
            }
            Some(m) => usize::try_from(*m.get_ref()).unwrap_or(usize::MAX),
            None => 65_536,
        };
        let empty = BTreeMap::new();
        let fields = self.fields.as_ref().map_or(&empty, |f| f.get_ref());
        let fields_span = self.fields.as_ref().map_or(whole.clone(), |f| f.span());
        let format = self.format.unwrap_or(RawFormat::Json);
        let (format_name, compiled) = match format {
            RawFormat::Json => {
                if let Some(l) = &self.log_format {
                    return Err(at(
                        l.span(),
                        "log_format applies to nginx and envoy sources only",
                    ));
                }
                (
                    "json",
                    LineFormat::json(fields).map_err(|e| at(fields_span, e))?,
                )
            }
            RawFormat::Nginx | RawFormat::Envoy => {
                let (dialect, default, label) = match format {
                    RawFormat::Nginx => (Dialect::Nginx, "combined", "nginx"),
                    _ => (Dialect::Envoy, "default", "envoy"),
                };
                let text = self
                    .log_format
                    .as_ref()
                    .map_or(default, |l| l.get_ref().as_str());
                let t = Template::compile(dialect, text, fields).map_err(|e| {
                    let span = if e.starts_with("fields.") {
                        fields_span.clone()
                    } else {
                        self.log_format.as_ref().map_or(whole.clone(), |l| l.span())
                    };
                    at(span, e)
                })?;
                (label, LineFormat::Template(t))
            }
        };
        Ok(FileSourceConfig {
            name,
            path: path.clone(),
            format_name,
            format: compiled,
            read_from: self.read_from.unwrap_or(ReadFrom::Beginning),
            org: self.org.as_ref().map(|o| o.get_ref().clone()),
            app: self.app.as_ref().map(|a| a.get_ref().clone()),
            max_line_bytes,
            exclude,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    listen: SocketAddr,
    ingest_token_env: String,
    admin_token_env: String,
    metrics_token_env: String,
    max_body_bytes: Spanned<u64>,
    allow_unauthenticated: bool,
    header_read_timeout: Spanned<HumanDuration>,
    idle_timeout: Spanned<HumanDuration>,
    body_read_timeout: Spanned<HumanDuration>,
    max_connections: Option<Spanned<u64>>,
    max_inflight_bytes: Option<Spanned<u64>>,
}

impl Default for RawServer {
    fn default() -> Self {
        let d = |s: u64| Spanned::new(0..0, HumanDuration(std::time::Duration::from_secs(s)));
        RawServer {
            listen: SocketAddr::from(([127, 0, 0, 1], 9747)),
            ingest_token_env: "RATEWARDEN_INGEST_TOKEN".into(),
            admin_token_env: "RATEWARDEN_ADMIN_TOKEN".into(),
            metrics_token_env: String::new(),
            max_body_bytes: Spanned::new(0..0, 16 * 1024 * 1024),
            allow_unauthenticated: false,
            header_read_timeout: d(10),
            idle_timeout: d(60),
            body_read_timeout: d(30),
            max_connections: None,
            max_inflight_bytes: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStorage {
    path: PathBuf,
}

impl Default for RawStorage {
    fn default() -> Self {
        RawStorage {
            path: PathBuf::from("./ratewarden-data"),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    default_tier: Spanned<String>,
    max_orgs: Spanned<u64>,
    max_apps_per_org: Spanned<u64>,
    max_jobs_per_org: Spanned<u64>,
    max_request_ids: u64,
    max_new_orgs_per_second: Spanned<u64>,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            default_tier: Spanned::new(0..0, "plus".into()),
            max_orgs: Spanned::new(0..0, 10_000),
            max_apps_per_org: Spanned::new(0..0, 100),
            max_jobs_per_org: Spanned::new(0..0, 1_000),
            max_request_ids: 1_000_000,
            max_new_orgs_per_second: Spanned::new(0..0, 1_000),
        }
    }
}

/// A limit value: 0 (unlimited) up to 2^63 − 1, the most a gauge (and Prometheus' integer
/// view of it) shows without turning negative.
fn limit<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = u64::deserialize(d)?;
    if i64::try_from(v).is_err() {
        return Err(serde::de::Error::custom(format!(
            "{v} is too large: a limit is at most {}",
            i64::MAX
        )));
    }
    Ok(Some(v))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTier {
    #[serde(default, deserialize_with = "limit")]
    rpm: Option<u64>,
    #[serde(default, deserialize_with = "limit")]
    concurrency: Option<u64>,
    #[serde(default, deserialize_with = "limit")]
    daily: Option<u64>,
    #[serde(default, deserialize_with = "limit")]
    tpm: Option<u64>,
    #[serde(default, deserialize_with = "limit")]
    tpd: Option<u64>,
}

impl RawTier {
    fn apply(&self, base: Limits) -> Limits {
        Limits {
            rpm: self.rpm.unwrap_or(base.rpm),
            concurrency: self.concurrency.unwrap_or(base.concurrency),
            daily: self.daily.unwrap_or(base.daily),
            tpm: self.tpm.unwrap_or(base.tpm),
            tpd: self.tpd.unwrap_or(base.tpd),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOrg {
    id: Spanned<String>,
    tier: Option<Spanned<String>>,
    #[serde(default, deserialize_with = "limit")]
    rpm: Option<u64>,
    #[serde(default, deserialize_with = "limit")]
    concurrency: Option<u64>,
    #[serde(default, deserialize_with = "limit")]
    daily: Option<u64>,
    #[serde(default, deserialize_with = "limit")]
    tpm: Option<u64>,
    #[serde(default, deserialize_with = "limit")]
    tpd: Option<u64>,
}

impl RawOrg {
    fn overrides(&self) -> RawTier {
        RawTier {
            rpm: self.rpm,
            concurrency: self.concurrency,
            daily: self.daily,
            tpm: self.tpm,
            tpd: self.tpd,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDetect {
    stuck_after: HumanDuration,
    release_after: Spanned<HumanDuration>,
    burst_window: Spanned<HumanDuration>,
    burst_factor: Spanned<f64>,
    retry_storm_after: Spanned<u32>,
}

impl Default for RawDetect {
    fn default() -> Self {
        let d = |s: u64| HumanDuration(std::time::Duration::from_secs(s));
        RawDetect {
            stuck_after: d(600),
            release_after: Spanned::new(0..0, d(1800)),
            burst_window: Spanned::new(0..0, d(10)),
            burst_factor: Spanned::new(0..0, 3.0),
            retry_storm_after: Spanned::new(0..0, 5),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAlerts {
    thresholds: Spanned<Vec<f64>>,
    hysteresis: Spanned<f64>,
    #[serde(rename = "for")]
    for_: HumanDuration,
    repeat_interval: HumanDuration,
    retry_base: Spanned<HumanDuration>,
    retry_cap: Spanned<HumanDuration>,
    max_age: HumanDuration,
    email: Vec<Spanned<channels::RawEmail>>,
    webhook: Vec<Spanned<channels::RawWebhook>>,
}

impl Default for RawAlerts {
    fn default() -> Self {
        RawAlerts {
            thresholds: Spanned::new(0..0, vec![0.70, 0.90]),
            hysteresis: Spanned::new(0..0, 0.05),
            for_: HumanDuration(std::time::Duration::ZERO),
            repeat_interval: HumanDuration(std::time::Duration::from_secs(4 * 3600)),
            retry_base: Spanned::new(0..0, HumanDuration(std::time::Duration::from_secs(1))),
            retry_cap: Spanned::new(0..0, HumanDuration(std::time::Duration::from_secs(300))),
            max_age: HumanDuration(std::time::Duration::from_secs(24 * 3600)),
            email: Vec::new(),
            webhook: Vec::new(),
        }
    }
}

/// Built-in tier presets (SPEC §3).
fn presets() -> BTreeMap<String, Limits> {
    let mut m = BTreeMap::new();
    m.insert(
        "plus".to_string(),
        Limits {
            rpm: 5,
            concurrency: 1,
            ..Limits::default()
        },
    );
    m.insert(
        "pro".to_string(),
        Limits {
            rpm: 50,
            concurrency: 5,
            ..Limits::default()
        },
    );
    m
}

/// A ratio like `0.70` as integer basis points, refusing more precision than that.
fn basis_points(span: &Range<usize>, what: &str, v: f64) -> Result<u32, Spanned2> {
    if !v.is_finite() || !(0.0..=1.0).contains(&v) {
        return Err(at(
            span.clone(),
            format!("{what} must be between 0 and 1, got {v}"),
        ));
    }
    let bp = (v * 10_000.0).round();
    if (v * 10_000.0 - bp).abs() > 1e-6 {
        return Err(at(
            span.clone(),
            format!("{what} {v} has more than 4 decimal places"),
        ));
    }
    Ok(bp as u32)
}

impl RawConfig {
    fn validate(self) -> Result<Config, Spanned2> {
        let server = self.server.validate()?;
        let limits = self.limits.validate()?;

        let mut tiers = presets();
        for (name, raw) in &self.tiers {
            if name.is_empty() {
                return Err(at(raw.span(), "tier names must not be empty"));
            }
            let base = tiers.get(name).copied().unwrap_or_default();
            tiers.insert(name.clone(), raw.get_ref().apply(base));
        }
        if !tiers.contains_key(&limits.default_tier) {
            return Err(at(
                self.limits.default_tier.span(),
                format!(
                    "unknown tier {:?} (known: {})",
                    limits.default_tier,
                    tiers.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }

        let mut orgs: Vec<OrgConfig> = Vec::with_capacity(self.orgs.len());
        for raw in &self.orgs {
            let id = raw.id.get_ref();
            if !valid_name(id) || id == crate::model::OVERFLOW {
                return Err(at(
                    raw.id.span(),
                    format!(
                        "invalid org id {id:?}: 1-128 printable characters, not {:?}",
                        crate::model::OVERFLOW
                    ),
                ));
            }
            if orgs.iter().any(|o| &o.id == id) {
                return Err(at(raw.id.span(), format!("org {id:?} is configured twice")));
            }
            let (tier, span) = match &raw.tier {
                Some(t) => (t.get_ref().clone(), t.span()),
                None => (limits.default_tier.clone(), raw.id.span()),
            };
            let Some(base) = tiers.get(&tier) else {
                return Err(at(
                    span,
                    format!(
                        "unknown tier {tier:?} (known: {})",
                        tiers.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            };
            orgs.push(OrgConfig {
                id: id.clone(),
                tier,
                limits: raw.overrides().apply(*base),
            });
        }
        if orgs.len() > limits.max_orgs {
            return Err(at(
                self.limits.max_orgs.span(),
                format!(
                    "max_orgs = {} is below the {} orgs configured",
                    limits.max_orgs,
                    orgs.len()
                ),
            ));
        }

        let mut sources: Vec<FileSourceConfig> = Vec::new();
        for (i, raw) in self.sources.file.iter().enumerate() {
            let source = raw.get_ref().validate(i, raw.span())?;
            if sources.iter().any(|s| s.name == source.name) {
                let span = raw.get_ref().name.as_ref().map_or(raw.span(), |n| n.span());
                return Err(at(span, format!("two sources are named {:?}", source.name)));
            }
            sources.push(source);
        }

        let mut upstreams: Vec<UpstreamConfig> = Vec::new();
        for raw in &self.upstreams {
            let u = raw.get_ref().validate(raw.span())?;
            if upstreams.iter().any(|o| o.name == u.name) {
                return Err(at(
                    raw.get_ref().name_span(),
                    format!("two upstreams are named {:?}", u.name),
                ));
            }
            upstreams.push(u);
        }

        Ok(Config {
            offpeak: self.offpeak.validate()?,
            upstreams,
            scheduler: self.scheduler.validate()?,
            sources,
            server,
            storage: StorageConfig {
                path: self.storage.path,
            },
            limits,
            tiers,
            orgs,
            detect: self.detect.validate()?,
            alerts: self.alerts.validate()?,
        })
    }
}

impl RawServer {
    fn validate(self) -> Result<ServerConfig, Spanned2> {
        let env = |s: String| if s.trim().is_empty() { None } else { Some(s) };
        let max_body = *self.max_body_bytes.get_ref();
        if max_body == 0 {
            return Err(at(
                self.max_body_bytes.span(),
                "max_body_bytes must be at least 1",
            ));
        }
        let timeout = |v: &Spanned<HumanDuration>, what: &str| {
            let d = v.get_ref().0;
            if d < std::time::Duration::from_millis(100) {
                return Err(at(v.span(), format!("{what} must be at least 100ms")));
            }
            Ok(d)
        };
        let max_connections = match &self.max_connections {
            Some(m) if *m.get_ref() < 16 => {
                return Err(at(m.span(), "max_connections must be at least 16"));
            }
            Some(m) => Some(usize::try_from(*m.get_ref()).unwrap_or(usize::MAX)),
            None => None,
        };
        // Unset, the budget holds at least one maximal body.
        let max_inflight = match &self.max_inflight_bytes {
            Some(m) if *m.get_ref() < max_body => {
                return Err(at(
                    m.span(),
                    format!(
                        "max_inflight_bytes ({}) must be at least max_body_bytes ({max_body}), or no maximal body could ever be read",
                        m.get_ref()
                    ),
                ));
            }
            Some(m) => *m.get_ref(),
            None => DEFAULT_MAX_INFLIGHT_BYTES.max(max_body),
        };
        Ok(ServerConfig {
            listen: self.listen,
            ingest_token_env: env(self.ingest_token_env),
            admin_token_env: env(self.admin_token_env),
            metrics_token_env: env(self.metrics_token_env),
            max_body_bytes: usize::try_from(max_body).unwrap_or(usize::MAX),
            allow_unauthenticated: self.allow_unauthenticated,
            header_read_timeout: timeout(&self.header_read_timeout, "header_read_timeout")?,
            idle_timeout: timeout(&self.idle_timeout, "idle_timeout")?,
            body_read_timeout: timeout(&self.body_read_timeout, "body_read_timeout")?,
            max_connections,
            max_inflight_bytes: usize::try_from(max_inflight).unwrap_or(usize::MAX),
        })
    }
}

impl RawLimits {
    fn validate(&self) -> Result<LimitsConfig, Spanned2> {
        let positive = |v: &Spanned<u64>, what: &str| -> Result<usize, Spanned2> {
            match usize::try_from(*v.get_ref()) {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(at(v.span(), format!("{what} must be at least 1"))),
            }
        };
        Ok(LimitsConfig {
            default_tier: self.default_tier.get_ref().clone(),
            max_orgs: positive(&self.max_orgs, "max_orgs")?,
            max_apps_per_org: positive(&self.max_apps_per_org, "max_apps_per_org")?,
            max_jobs_per_org: positive(&self.max_jobs_per_org, "max_jobs_per_org")?,
            max_request_ids: usize::try_from(self.max_request_ids).unwrap_or(usize::MAX),
            max_new_orgs_per_second: positive(
                &self.max_new_orgs_per_second,
                "max_new_orgs_per_second",
            )?,
        })
    }
}

impl RawDetect {
    fn validate(self) -> Result<DetectConfig, Spanned2> {
        let stuck = self.stuck_after.as_millis_i64();
        let release = self.release_after.get_ref().as_millis_i64();
        if release < stuck {
            return Err(at(
                self.release_after.span(),
                "release_after must not be shorter than stuck_after",
            ));
        }
        let window = self.burst_window.get_ref().as_millis_i64();
        if window < 1_000 {
            return Err(at(
                self.burst_window.span(),
                "burst_window must be at least 1s",
            ));
        }
        let factor = *self.burst_factor.get_ref();
        if !factor.is_finite() || factor <= 0.0 {
            return Err(at(
                self.burst_factor.span(),
                "burst_factor must be a positive number",
            ));
        }
        let storm = *self.retry_storm_after.get_ref();
        if storm == 0 {
            return Err(at(
                self.retry_storm_after.span(),
                "retry_storm_after must be at least 1",
            ));
        }
        Ok(DetectConfig {
            stuck_after_ms: stuck,
            release_after_ms: release,
            burst_window_ms: window,
            burst_factor: factor,
            retry_storm_after: storm,
        })
    }
}

impl RawAlerts {
    fn validate(self) -> Result<AlertsConfig, Spanned2> {
        let span = self.thresholds.span();
        let t = self.thresholds.get_ref();
        if t.len() != 2 {
            return Err(at(
                span,
                "thresholds must be two ratios: [warning, critical], e.g. [0.70, 0.90]",
            ));
        }
        let warning_bp = basis_points(&span, "warning threshold", t[0])?;
        let critical_bp = basis_points(&span, "critical threshold", t[1])?;
        if warning_bp == 0 || warning_bp >= critical_bp {
            return Err(at(
                span,
                "thresholds must satisfy 0 < warning < critical <= 1",
            ));
        }
        let hspan = self.hysteresis.span();
        let hysteresis_bp = basis_points(&hspan, "hysteresis", *self.hysteresis.get_ref())?;
        if hysteresis_bp >= warning_bp {
            return Err(at(
                hspan,
                "hysteresis must be smaller than the warning threshold",
            ));
        }
        let (retry_base_ms, retry_cap_ms) = backoff_ms(
            &self.retry_base,
            &self.retry_cap,
            ("retry_base", "retry_cap"),
        )?;
        let mut channels: Vec<ChannelConfig> = Vec::new();
        let mut spans = Vec::new();
        for (i, e) in self.email.iter().enumerate() {
            channels.push(e.get_ref().validate(i, e.span())?);
            spans.push(e.get_ref().name_span().unwrap_or(e.span()));
        }
        for (i, w) in self.webhook.iter().enumerate() {
            channels.push(w.get_ref().validate(i, w.span())?);
            spans.push(w.get_ref().name_span().unwrap_or(w.span()));
        }
        for (i, c) in channels.iter().enumerate() {
            if channels[..i].iter().any(|o| o.name == c.name) {
                return Err(at(
                    spans[i].clone(),
                    format!(
                        "two channels are named {:?}: names label notifications_total and must differ",
                        c.name
                    ),
                ));
            }
        }
        Ok(AlertsConfig {
            warning_bp,
            critical_bp,
            hysteresis_bp,
            for_ms: self.for_.as_millis_i64(),
            repeat_interval_ms: self.repeat_interval.as_millis_i64(),
            retry_base_ms,
            retry_cap_ms,
            max_age_ms: self.max_age.as_millis_i64(),
            channels,
        })
    }
}

impl fmt::Display for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let part = |v: u64, unit: &str| {
            if v == 0 {
                format!("unlimited {unit}")
            } else {
                format!("{v} {unit}")
            }
        };
        write!(
            f,
            "{}, {}, {}",
            part(self.rpm, "rpm"),
            part(self.concurrency, "concurrent"),
            part(self.daily, "daily")
        )?;
        if self.tpm > 0 {
            write!(f, ", {} tpm", self.tpm)?;
        }
        if self.tpd > 0 {
            write!(f, ", {} tpd", self.tpd)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text, "t.toml").unwrap_err().to_string()
    }

    #[test]
    fn empty_file_is_the_builtin_defaults() {
        let c = Config::parse("", "t.toml").unwrap();
        assert_eq!(c.server.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.limits.default_tier, "plus");
        assert_eq!(c.default_limits().rpm, 5);
        assert_eq!(c.default_limits().concurrency, 1);
        assert_eq!(c.tiers["pro"].rpm, 50);
        assert_eq!(c.alerts.warning_bp, 7000);
        assert_eq!(c.alerts.critical_bp, 9000);
        assert_eq!(c.alerts.hysteresis_bp, 500);
        assert_eq!(c.detect.stuck_after_ms, 600_000);
        assert_eq!(
            c.server.ingest_token_env.as_deref(),
            Some("RATEWARDEN_INGEST_TOKEN")
        );
        assert_eq!(c.server.metrics_token_env, None);
        assert_eq!(c.storage.path, PathBuf::from("./ratewarden-data"));
    }

    #[test]
    fn orgs_inherit_tier_and_override_fields() {
        let c = Config::parse(
            "[tiers.custom]\nrpm = 10\nconcurrency = 10\ndaily = 1000\n\n[tiers.plus]\ndaily = 7\n\n\
             [[orgs]]\nid = \"acme\"\ntier = \"plus\"\ndaily = 100\n\n[[orgs]]\nid = \"beta\"\ntier = \"custom\"\n\
             [[orgs]]\nid = \"gamma\"\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(
            c.orgs[0].limits,
            Limits {
                rpm: 5,
                concurrency: 1,
                daily: 100,
                tpm: 0,
                tpd: 0
            }
        );
        assert_eq!(c.orgs[1].limits.rpm, 10);
        assert_eq!(c.orgs[2].tier, "plus");
        assert_eq!(c.orgs[2].limits.daily, 7, "preset override applies");
    }

    #[test]
    fn type_errors_and_unknown_keys_have_positions() {
        assert_eq!(
            err("[server]\nlisten = \"127.0.0.1:1\"\n\n[tiers.x]\nrpm = \"five\"\n"),
            "t.toml:5:7: invalid type: string \"five\", expected u64"
        );
        let e = err("[server]\nlistne = \"x\"\n");
        assert!(e.starts_with("t.toml:2:1: unknown field `listne`"), "{e}");
        let e = err("[detect]\nstuck_after = \"10 parsecs\"\n");
        assert!(e.starts_with("t.toml:2:15: invalid duration"), "{e}");
        let e = err("[server\n");
        assert!(e.starts_with("t.toml:1:"), "{e}");
    }

    #[test]
    fn semantic_errors_have_positions() {
        let e = err("[[orgs]]\nid = \"acme\"\ntier = \"gold\"\n");
        assert!(e.starts_with("t.toml:3:8: unknown tier \"gold\""), "{e}");
        let e = err("[[orgs]]\nid = \"a\"\n[[orgs]]\nid = \"a\"\n");
        assert!(
            e.starts_with("t.toml:4:6: org \"a\" is configured twice"),
            "{e}"
        );
        let e = err("[alerts]\nthresholds = [0.9, 0.7]\n");
        assert!(e.starts_with("t.toml:2:14:"), "{e}");
        let e = err("[alerts]\nhysteresis = 0.8\n");
        assert!(e.contains("hysteresis must be smaller"), "{e}");
        let e = err("[detect]\nstuck_after = \"1h\"\nrelease_after = \"10m\"\n");
        assert!(e.starts_with("t.toml:3:17: release_after"), "{e}");
        let e = err("[limits]\nmax_orgs = 1\n[[orgs]]\nid = \"a\"\n[[orgs]]\nid = \"b\"\n");
        assert!(e.starts_with("t.toml:2:12: max_orgs"), "{e}");
        let e = err("[limits]\ndefault_tier = \"nope\"\n");
        assert!(e.starts_with("t.toml:2:16: unknown tier"), "{e}");
    }

    #[test]
    fn offpeak_upstreams_and_scheduler() {
        let c = Config::parse("", "t").unwrap();
        assert_eq!(c.offpeak.tz.name(), "America/New_York");
        assert_eq!(c.offpeak.windows.len(), 2, "the SPEC's default windows");
        assert_eq!(c.scheduler.share, 0.7);
        assert_eq!(
            (c.scheduler.backoff_base_ms, c.scheduler.backoff_cap_ms),
            (1_000, 64_000)
        );
        let c = Config::parse(
            "[offpeak]\ntimezone = \"Europe/Berlin\"\n[[offpeak.windows]]\nstart = \"0 0 22 * * *\"\nduration = \"8h\"\n\
             [[upstreams]]\nname = \"openai\"\nbase_url = \"https://api.openai.com/\"\napi_key_env = \"K\"\norg = \"acme\"\n\
             [upstreams.poll]\nstatus_path = \"/v1/videos/{id}\"\ndone = [\"completed\"]\nfailed = [\"failed\"]\ninterval = \"250ms\"\n\
             [scheduler]\nshare = 0.5\nmax_retries = 2\ncircuit_after = 3\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.offpeak.windows.len(), 1);
        let u = &c.upstreams[0];
        assert_eq!(
            u.base_url, "https://api.openai.com",
            "trailing slash dropped"
        );
        assert_eq!(u.poll.as_ref().unwrap().interval_ms, 250);
        assert_eq!(u.poll.as_ref().unwrap().id_field, "id");
        assert_eq!(
            (
                c.scheduler.share,
                c.scheduler.max_retries,
                c.scheduler.circuit_after
            ),
            (0.5, 2, 3)
        );
        assert!(
            c.summary().contains("off-peak (Europe/Berlin): next"),
            "{}",
            c.summary()
        );

        let e = err("[offpeak]\ntimezone = \"Mars/Olympus\"\n");
        assert!(e.starts_with("t.toml:2:12: unknown time zone"), "{e}");
        let e = err("[[offpeak.windows]]\nstart = \"at dusk\"\nduration = \"1h\"\n");
        assert!(e.starts_with("t.toml:2:9: invalid cron expression"), "{e}");
        let e = err("[[upstreams]]\nname = \"u\"\nbase_url = \"x\"\norg = \"a\"\n");
        assert!(e.starts_with("t.toml:3:12:"), "{e}");
        let e = err(
            "[[upstreams]]\nname = \"u\"\nbase_url = \"http://x\"\norg = \"a\"\n[upstreams.poll]\nstatus_path = \"/v\"\ndone = [\"ok\"]\n",
        );
        assert!(e.contains("status_path must contain {id}"), "{e}");
        let e = err("[scheduler]\nshare = 1.5\n");
        assert!(e.starts_with("t.toml:2:9: share"), "{e}");
        let e = err(
            "[[upstreams]]\nname = \"u\"\nbase_url = \"http://x\"\norg = \"a\"\n[[upstreams]]\nname = \"u\"\nbase_url = \"http://y\"\norg = \"a\"\n",
        );
        assert!(e.starts_with("t.toml:6:8: two upstreams"), "{e}");
    }

    #[test]
    fn file_sources() {
        let c = Config::parse(
            "[[sources.file]]\npath = \"/var/log/app/*.jsonl\"\norg = \"acme\"\n\
             [sources.file.fields]\norg = \"organization.id\"\n\
             [[sources.file]]\nname = \"edge\"\npath = \"/var/log/nginx/access.log\"\nformat = \"nginx\"\nread_from = \"end\"\n\
             log_format = '$time_iso8601 $status \"$http_x_org\"'\n[sources.file.fields]\norg = \"$http_x_org\"\n\
             [[sources.file]]\npath = \"/var/log/envoy.log\"\nformat = \"envoy\"\nmax_line_bytes = 1000\n",
            "t.toml",
        )
        .unwrap();
        let names: Vec<_> = c
            .sources
            .iter()
            .map(|s| (s.name.as_str(), s.format_name))
            .collect();
        assert_eq!(
            names,
            vec![("file-1", "json"), ("edge", "nginx"), ("file-3", "envoy")]
        );
        assert_eq!(c.sources[1].read_from, ReadFrom::End);
        assert_eq!(c.sources[0].read_from, ReadFrom::Beginning);
        assert_eq!(c.sources[0].max_line_bytes, 65_536);
        assert_eq!(c.sources[2].max_line_bytes, 1000);
        assert!(
            c.summary()
                .contains("edge (nginx /var/log/nginx/access.log)")
        );

        let e = err("[[sources.file]]\npath = \"/x/[\"\n");
        assert!(e.starts_with("t.toml:2:8: invalid glob"), "{e}");
        let e = err("[[sources.file]]\npath = \"/x\"\nformat = \"syslog\"\n");
        assert!(
            e.starts_with("t.toml:3:10: unknown variant `syslog`"),
            "{e}"
        );
        let e = err("[[sources.file]]\npath = \"/x\"\nformat = \"nginx\"\nlog_format = \"$a$b\"\n");
        assert!(
            e.starts_with("t.toml:4:14:") && e.contains("not separated"),
            "{e}"
        );
        let e = err(
            "[[sources.file]]\npath = \"/x\"\nformat = \"nginx\"\n[sources.file.fields]\norg = \"$http_x_org\"\n",
        );
        assert!(
            e.starts_with("t.toml:4:1:") && e.contains("does not contain"),
            "{e}"
        );
        let e = err(
            "[[sources.file]]\npath = \"/x\"\n[[sources.file]]\npath = \"/y\"\nname = \"file-1\"\n",
        );
        assert!(e.contains("two sources are named"), "{e}");
        let e = err("[[sources.file]]\npath = \"/x\"\npaht = 1\n");
        assert!(e.starts_with("t.toml:3:1: unknown field `paht`"), "{e}");
    }

    #[test]
    fn alert_channels() {
        let c = Config::parse(
            "[alerts]\nrepeat_interval = \"1h\"\nretry_base = \"2s\"\nretry_cap = \"1m\"\nmax_age = \"2h\"\n\
             [[alerts.email]]\nsmtp_host = \"smtp.example.com\"\ntls = \"tls\"\nusername = \"u\"\npassword_env = \"P\"\n\
             from = \"ratewarden@example.com\"\nto = [\"a@example.com\", \"On Call <b@example.com>\"]\nmin_severity = \"critical\"\n\
             [[alerts.webhook]]\nname = \"am\"\nurl = \"http://127.0.0.1:9093/api/v2/alerts\"\nformat = \"alertmanager\"\n\
             [[alerts.webhook]]\nurl = \"https://hooks.slack.com/services/x\"\nformat = \"slack\"\nsecret_file = \"/etc/s\"\n",
            "t.toml",
        )
        .unwrap();
        let a = &c.alerts;
        assert_eq!(
            (
                a.repeat_interval_ms,
                a.retry_base_ms,
                a.retry_cap_ms,
                a.max_age_ms
            ),
            (3_600_000, 2_000, 60_000, 7_200_000)
        );
        let names: Vec<_> = a
            .channels
            .iter()
            .map(|c| (c.name.as_str(), c.kind_name()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("email-1", "email"),
                ("am", "alertmanager"),
                ("webhook-2", "slack")
            ]
        );
        match &a.channels[0].kind {
            ChannelKind::Email(e) => {
                assert_eq!(e.smtp_port, 465, "default port for implicit TLS");
                assert_eq!(e.password, Some(SecretRef::Env("P".into())));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(a.channels[0].min_severity, crate::model::Severity::Critical);
        assert!(
            c.summary()
                .contains("am (alertmanager to http://127.0.0.1:9093/…, warning and up)"),
            "{}",
            c.summary()
        );

        let e = err("[[alerts.webhook]]\nurl = \"ftp://x/y\"\n");
        assert!(
            e.starts_with("t.toml:2:7:") && e.contains("not an http(s) URL"),
            "{e}"
        );
        let e = err("[[alerts.webhook]]\nurl = \"http://x\"\nformat = \"teams\"\n");
        assert!(e.starts_with("t.toml:3:10: unknown variant `teams`"), "{e}");
        let e = err(
            "[[alerts.email]]\nsmtp_host = \"h\"\nfrom = \"not an address\"\nto = [\"a@b.c\"]\n",
        );
        assert!(
            e.starts_with("t.toml:3:8:") && e.contains("not an email address"),
            "{e}"
        );
        let e = err("[[alerts.email]]\nsmtp_host = \"h\"\nfrom = \"a@b.c\"\nto = []\n");
        assert!(e.contains("at least one address"), "{e}");
        let e = err(
            "[[alerts.email]]\nsmtp_host = \"h\"\nfrom = \"a@b.c\"\nto = [\"x@y.z\"]\npassword_env = \"P\"\n",
        );
        assert!(e.contains("needs a username"), "{e}");
        let e = err("[alerts]\nretry_base = \"10s\"\nretry_cap = \"1s\"\n");
        assert!(e.starts_with("t.toml:3:13: retry_cap"), "{e}");
    }

    #[test]
    fn missing_secrets_are_reported() {
        let c = Config::parse(
            "[[alerts.webhook]]\nurl = \"http://x\"\nsecret_env = \"SURELY_UNSET_SECRET_VAR\"\n",
            "t.toml",
        )
        .unwrap();
        let missing = c.missing_secrets();
        assert_eq!(missing.len(), 1);
        assert!(missing[0].2.contains("$SURELY_UNSET_SECRET_VAR is not set"));
    }

    #[test]
    fn thresholds_are_exact_basis_points() {
        let c = Config::parse(
            "[alerts]\nthresholds = [0.7, 0.95]\nhysteresis = 0.05\n",
            "t",
        )
        .unwrap();
        assert_eq!((c.alerts.warning_bp, c.alerts.critical_bp), (7000, 9500));
        assert!(err("[alerts]\nthresholds = [0.70001, 0.9]\n").contains("decimal places"));
        assert!(err("[alerts]\nthresholds = [0.7]\n").contains("two ratios"));
    }

    #[test]
    fn edges_are_refused_at_their_place() {
        let cases = [
            (
                "[tiers.x]\nrpm = 9223372036854775808\n",
                "t.toml:2:7: 9223372036854775808 is too large",
            ),
            (
                "[[orgs]]\nid = \"a\"\ntpd = 18446744073709551615\n",
                "t.toml:3:7: 18446744073709551615 is too large",
            ),
            (
                "[[alerts.webhook]]\nname = \"ops\"\nurl = \"http://h/a\"\n[[alerts.webhook]]\nname = \"ops\"\nurl = \"http://h/b\"\n",
                "t.toml:5:8: two channels are named \"ops\"",
            ),
            (
                "[[alerts.email]]\nsmtp_host = \"h\"\nsmtp_port = 0\nfrom = \"a@b.c\"\nto = [\"x@y.z\"]\n",
                "t.toml:3:13: smtp_port must be 1-65535",
            ),
            (
                "[[alerts.webhook]]\nurl = \"http://h/a\"\ntimeout = \"0s\"\n",
                "t.toml:3:11: timeout must be at least 100ms",
            ),
            (
                "[[upstreams]]\nname = \"u\"\nbase_url = \"http://h\"\norg = \"a\"\ntimeout = \"0s\"\n",
                "t.toml:5:11: timeout must be at least 100ms",
            ),
            (
                "[[sources.file]]\npath = \" \"\n",
                "t.toml:2:8: path is empty",
            ),
        ];
        for (text, want) in cases {
            let e = err(text);
            assert!(e.starts_with(want), "{text}\n=> {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, b"[server]\nlisten = \"127.0.0.1:1\"\n# caf\xe9\n").unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(
            e.ends_with("c.toml:3:6: byte 0xe9 is not UTF-8: a config file must be UTF-8 text"),
            "{e}"
        );
    }

    #[test]
    fn the_inflight_budget_holds_at_least_one_maximal_body() {
        let c = Config::parse("", "t.toml").unwrap();
        assert_eq!(c.server.max_inflight_bytes, 128 << 20);
        let c = Config::parse("[server]\nmax_body_bytes = 268435456\n", "t.toml").unwrap();
        assert_eq!(
            c.server.max_inflight_bytes,
            256 << 20,
            "unset: at least one body"
        );
        let e = err("[server]\nmax_body_bytes = 1000\nmax_inflight_bytes = 999\n");
        assert!(
            e.starts_with("t.toml:3:22: max_inflight_bytes (999) must be at least max_body_bytes"),
            "{e}"
        );
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncé d", 7), (2, 4));
        assert_eq!(line_col("", 0), (1, 1));
    }
}
