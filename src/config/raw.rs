//! The file as written (SPEC §3): serde structs with `deny_unknown_fields`, and their
//! validation into [`super::Config`], each error placed at the text it is about.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use crate::events::format::{Dialect, LineFormat, Template};
use crate::model::ModelScope;

use super::channels::ChannelConfig;
use super::check::*;
use super::duration::HumanDuration;
use super::scheduler::UpstreamConfig;

use super::settings::*;
use super::tiers::{RawOrg, RawTier, model_scopes, presets};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawConfig {
    server: RawServer,
    storage: RawStorage,
    limits: RawLimits,
    tiers: BTreeMap<String, Spanned<RawTier>>,
    orgs: Vec<RawOrg>,
    detect: RawDetect,
    alerts: RawAlerts,
    sources: RawSources,
    offpeak: super::scheduler::RawOffPeak,
    upstreams: Vec<Spanned<super::scheduler::RawUpstream>>,
    scheduler: super::scheduler::RawScheduler,
    admission: super::admission::RawAdmission,
    metrics: RawMetrics,
    otlp: super::otlp::RawOtlp,
    cluster: Option<Spanned<super::cluster::RawCluster>>,
    limit_sources: Vec<Spanned<super::limit_sources::RawLimitSource>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMetrics {
    per_app: bool,
    job_histogram: bool,
    job_duration_buckets: Spanned<Vec<f64>>,
}

impl Default for RawMetrics {
    fn default() -> Self {
        let d = MetricsConfig::default();
        RawMetrics {
            per_app: d.per_app,
            job_histogram: d.job_histogram,
            job_duration_buckets: Spanned::new(0..0, d.job_duration_buckets.to_vec()),
        }
    }
}

impl RawMetrics {
    fn validate(self) -> Result<MetricsConfig, Spanned2> {
        let span = self.job_duration_buckets.span();
        let buckets = self.job_duration_buckets.into_inner();
        if buckets.is_empty() || buckets.len() > MAX_JOB_BUCKETS {
            return Err(at(
                span,
                format!(
                    "job_duration_buckets must list 1 to {MAX_JOB_BUCKETS} upper bounds in seconds (+Inf is implied)"
                ),
            ));
        }
        if buckets.iter().any(|b| !b.is_finite() || *b <= 0.0) {
            return Err(at(
                span,
                "job_duration_buckets must be positive, finite seconds",
            ));
        }
        if buckets.windows(2).any(|w| w[0] >= w[1]) {
            return Err(at(span, "job_duration_buckets must be strictly increasing"));
        }
        Ok(MetricsConfig {
            per_app: self.per_app,
            job_histogram: self.job_histogram,
            job_duration_buckets: buckets.into(),
        })
    }
}

/// Most bounds `job_duration_buckets` may list: each is a series per org.
const MAX_JOB_BUCKETS: usize = 30;

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
            if !crate::model::valid_given_name(v.get_ref()) {
                return Err(at(
                    v.span(),
                    format!(
                        "must be 1-128 printable characters (and not {})",
                        crate::model::OVERFLOW
                    ),
                ));
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
    write_timeout: Spanned<HumanDuration>,
    max_connections: Option<Spanned<u64>>,
    max_inflight_bytes: Option<Spanned<u64>>,
    web_config_file: String,
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
            write_timeout: d(60),
            max_connections: None,
            max_inflight_bytes: None,
            web_config_file: String::new(),
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
    learn: bool,
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
            learn: false,
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
    email: Vec<Spanned<super::channels::RawEmail>>,
    webhook: Vec<Spanned<super::channels::RawWebhook>>,
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

impl RawConfig {
    pub(super) fn validate(self) -> Result<Config, Spanned2> {
        let server = self.server.validate()?;
        let limits = self.limits.validate()?;

        let mut tiers = presets();
        let mut tier_models: BTreeMap<String, Vec<ModelScope>> = BTreeMap::new();
        for (name, raw) in &self.tiers {
            if name.is_empty() {
                return Err(at(raw.span(), "tier names must not be empty"));
            }
            let base = tiers.get(name).copied().unwrap_or_default();
            let limits = raw.get_ref().apply(base)?;
            tiers.insert(name.clone(), limits);
            let scopes = model_scopes(&raw.get_ref().models, &[], limits.daily_window)?;
            if !scopes.is_empty() {
                tier_models.insert(name.clone(), scopes);
            }
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
        // Checked against `[alerts] hysteresis` once that is known.
        let mut own_thresholds: Vec<(std::ops::Range<usize>, u32)> = Vec::new();
        for raw in &self.orgs {
            let id = raw.id.get_ref();
            if !crate::model::valid_given_name(id) {
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
            let thresholds_bp = match &raw.thresholds {
                Some(t) => {
                    let pair = threshold_pair(t)?;
                    own_thresholds.push((t.span(), pair[0]));
                    Some(pair)
                }
                None => None,
            };
            let limits = raw.overrides().apply(*base)?;
            let base_models = tier_models.get(&tier).map_or(&[][..], Vec::as_slice);
            let models = model_scopes(&raw.models, base_models, limits.daily_window)?;
            orgs.push(OrgConfig {
                id: id.clone(),
                tier,
                limits,
                models,
                thresholds_bp,
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

        let mut limit_sources: Vec<super::limit_sources::LimitSource> = Vec::new();
        for raw in &self.limit_sources {
            let l = raw.get_ref().validate(raw.span())?;
            if limit_sources
                .iter()
                .any(|o| o.org == l.org && o.kind == l.kind)
            {
                return Err(at(
                    raw.get_ref().org_span(),
                    format!(
                        "org {:?} has two {} limit sources: the limits of one would overwrite the other's",
                        l.org,
                        l.kind.as_str()
                    ),
                ));
            }
            limit_sources.push(l);
        }

        let detect = self.detect.validate()?;
        let admission = self.admission.validate(detect.release_after_ms)?;
        Ok(Config {
            admission,
            offpeak: self.offpeak.validate()?,
            upstreams,
            limit_sources,
            scheduler: self.scheduler.validate()?,
            cluster: match self.cluster {
                Some(c) => {
                    let whole = c.span();
                    Some(c.into_inner().validate(whole)?)
                }
                None => None,
            },
            metrics: self.metrics.validate()?,
            otlp: self.otlp.validate()?,
            sources,
            server,
            storage: StorageConfig {
                path: self.storage.path,
            },
            limits,
            tiers,
            tier_models,
            orgs,
            detect,
            alerts: {
                let alerts = self.alerts.validate()?;
                if let Some((span, _)) = own_thresholds
                    .into_iter()
                    .find(|(_, warning)| alerts.hysteresis_bp >= *warning)
                {
                    return Err(at(
                        span,
                        "the warning threshold must be above [alerts] hysteresis",
                    ));
                }
                alerts
            },
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
            write_timeout: timeout(&self.write_timeout, "write_timeout")?,
            max_connections,
            max_inflight_bytes: usize::try_from(max_inflight).unwrap_or(usize::MAX),
            web_config_file: (!self.web_config_file.trim().is_empty())
                .then(|| std::path::PathBuf::from(self.web_config_file)),
            web: None,
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
            learn: self.learn,
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

/// `[warning, critical]` ratios as basis points: two of them, `0 < warning < critical <= 1`.
fn threshold_pair(thresholds: &Spanned<Vec<f64>>) -> Result<[u32; 2], Spanned2> {
    let span = thresholds.span();
    let t = thresholds.get_ref();
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
    Ok([warning_bp, critical_bp])
}

impl RawAlerts {
    fn validate(self) -> Result<AlertsConfig, Spanned2> {
        let [warning_bp, critical_bp] = threshold_pair(&self.thresholds)?;
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
