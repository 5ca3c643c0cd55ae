//! The validated configuration every other module reads: durations in milliseconds,
//! thresholds in basis points, tiers resolved per org. Built only by `raw`; never re-read.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::events::format::LineFormat;
use crate::model::Limits;

use super::channels::ChannelConfig;
use super::scheduler::{SchedulerConfig, UpstreamConfig};

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
    /// An answer must be taken by the client within this long once it is ready; a client
    /// that reads slower is disconnected (it would hold the answer's memory meanwhile).
    pub write_timeout: std::time::Duration,
    /// Most connections served at once; `None` sizes it to the open-file limit at start.
    pub max_connections: Option<usize>,
    /// Bytes of request bodies held in memory at once, across all requests (raw and
    /// decoded); beyond it requests are answered 429 with `Retry-After`.
    pub max_inflight_bytes: usize,
    /// `web_config_file`: the exporter-toolkit web configuration (TLS, basic auth, headers).
    pub web_config_file: Option<std::path::PathBuf>,
    /// That file, read by [`Config::load`] (`None` without one, or from [`Config::parse`]).
    pub web: Option<super::web::WebConfig>,
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
    /// Adopt the limits the upstream reports in its rate-limit headers in place of the
    /// configured ones (shown as `source: upstream`).
    pub learn: bool,
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
    /// Its model scopes: its tier's, changed and extended by `[[orgs.models]]`.
    pub models: Vec<crate::model::ModelScope>,
    /// Its own `UsageHigh` thresholds `[warning, critical]` in basis points, if set
    /// (`thresholds = [0.6, 0.85]`); otherwise `[alerts] thresholds` apply.
    pub thresholds_bp: Option<[u32; 2]>,
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
    /// Model scopes of the tiers that have any (`[[tiers.NAME.models]]`).
    pub tier_models: BTreeMap<String, Vec<crate::model::ModelScope>>,
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
    /// `[[limit_sources]]`: admin APIs polled for the limits of an org.
    pub limit_sources: Vec<super::limit_sources::LimitSource>,
    /// `[scheduler]`.
    pub scheduler: SchedulerConfig,
    /// `[metrics]`.
    pub metrics: MetricsConfig,
    /// `[otlp]`.
    pub otlp: crate::events::otlp::OtlpMapping,
    /// `[admission]`.
    pub admission: super::admission::AdmissionConfig,
    /// `[cluster]`: several replicas on Redis or Valkey; `None`, one process on SQLite.
    pub cluster: Option<super::cluster::ClusterConfig>,
}

impl Config {
    /// A fingerprint of what shapes the tracker's answers and notifications (limits, tiers,
    /// orgs, detection, alerts and their channels, admission): replicas of one cluster apply one log,
    /// and answer alike only with equal fingerprints. Stable across processes of one version
    /// (a hash of the parsed config's debug form, which holds no hash maps).
    pub fn shared_fingerprint(&self) -> u64 {
        let shaping = format!(
            "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
            self.limits,
            self.tiers,
            self.tier_models,
            self.orgs,
            self.detect,
            self.alerts,
            self.admission
        );
        crate::model::stable_hash(&[shaping.as_bytes()])
    }
}

/// `[metrics]`: which optional series `/metrics` exports.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsConfig {
    /// Per-app series (`requests_total`, `rate_limited_total`, `retry_violations_total` with
    /// an `app` label); when off, one series per org (summed over its apps, no `app` label).
    pub per_app: bool,
    /// `job_duration_seconds` (a histogram per org that finished a job).
    pub job_histogram: bool,
    /// Upper bounds of `job_duration_seconds`, in seconds, strictly increasing (`+Inf` is
    /// implied). Changing them starts the histograms over (their counts cannot be re-bucketed).
    pub job_duration_buckets: std::sync::Arc<[f64]>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            per_app: true,
            job_histogram: true,
            job_duration_buckets: crate::model::JOB_DURATION_BUCKETS.into(),
        }
    }
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
        for (v, unit) in [
            (self.tpd, "tpd"),
            (self.ipm, "ipm"),
            (self.itpm, "itpm"),
            (self.otpm, "otpm"),
            (self.batch_queue_tokens, "batch queue tokens"),
        ] {
            if v > 0 {
                write!(f, ", {v} {unit}")?;
            }
        }
        if let crate::model::DailyWindow::Calendar { tz, reset_minute } = self.daily_window {
            write!(
                f,
                ", daily resets at {:02}:{:02} {tz}",
                reset_minute / 60,
                reset_minute % 60
            )?;
        }
        Ok(())
    }
}
