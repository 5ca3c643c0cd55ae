//! Configuration: the TOML file of SPEC §3, parsed once into a validated [`Config`].
//!
//! Raw serde structs (`deny_unknown_fields`) mirror the file; [`Config::parse`] turns them into
//! the validated form every other module uses: durations in milliseconds, thresholds in integer
//! basis points, tiers resolved per org. Nothing downstream re-reads or re-validates the file.
//! Every error carries the position of the offending text (`FILE:LINE:COL: message`).
//!
//! Sections that later features bring (`sources`, alert channels, `offpeak`, `upstreams`,
//! `scheduler`) are refused with a clear message until they work, never silently ignored.

mod admission;
mod channels;
mod check;
mod cluster;
mod duration;
mod limit_sources;
mod otlp;
mod raw;
mod scheduler;
mod settings;
mod tiers;
mod web;

use std::path::Path;

pub use admission::{AdmissionConfig, MAX_MARGIN_MS};
pub use channels::{
    ChannelConfig, ChannelKind, EmailConfig, EmailTls, SecretRef, WebhookConfig, WebhookFormat,
};
pub use cluster::{ClusterConfig, host_name};
pub use duration::{HumanDuration, parse_duration};
pub use limit_sources::{LimitScope, LimitSource, LimitSourceKind};
pub use scheduler::{PollConfig, SchedulerConfig, UpstreamConfig};
pub use settings::*;
pub use web::{
    BcryptHash, CipherSuite, ClientAuth, Curve, PemSource, TlsSettings, TlsVersion, WebConfig,
    WebConfigError,
};

use crate::model::Limits;

use check::{Spanned2, at, line_col};
use raw::RawConfig;

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
        let mut config = Config::parse(&text, &shown)?;
        if let Some(web) = &config.server.web_config_file {
            config.server.web = Some(WebConfig::load(web).map_err(|e| match e {
                web::WebConfigError::Io { path, source } => ConfigError::Io { path, source },
                web::WebConfigError::Invalid {
                    path,
                    line,
                    col,
                    message,
                } => ConfigError::Invalid {
                    path,
                    line,
                    col,
                    message,
                },
            })?);
        }
        Ok(config)
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

    /// The model scopes of orgs not named in the config (their tier's).
    pub fn default_models(&self) -> Vec<crate::model::ModelScope> {
        self.tier_models
            .get(&self.limits.default_tier)
            .cloned()
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
        let cluster = self.cluster.iter().filter_map(|c| {
            c.redis_password
                .as_ref()
                .and_then(|p| p.read().err())
                .map(|why| ("[cluster]".to_string(), "Redis password", why))
        });
        let limit_sources = self.limit_sources.iter().filter_map(|l| {
            l.admin_key()
                .read()
                .err()
                .map(|why| (format!("limit source {}", l.describe()), "admin key", why))
        });
        channels
            .chain(upstreams)
            .chain(cluster)
            .chain(limit_sources)
            .collect()
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
        if let Some(w) = &self.server.web {
            out.push_str(&format!(
                "web config {}: {}, {} basic auth user(s), {} extra header(s)\n",
                w.path.display(),
                match &w.tls {
                    Some(t) => format!(
                        "TLS {:?}..{:?}, clients {:?}",
                        t.min_version, t.max_version, t.client_auth
                    ),
                    None => "plain HTTP".into(),
                },
                w.basic_auth_users.len(),
                w.headers.len()
            ));
        }
        out.push_str(&format!("tiers: {}\n", tiers.join(", ")));
        let scopes = |scopes: &[crate::model::ModelScope]| -> String {
            scopes
                .iter()
                .map(|m| {
                    let limited: Vec<String> = crate::model::Dimension::ALL
                        .into_iter()
                        .filter(|d| d.limit(&m.limits) > 0)
                        .map(|d| format!("{} {}", d.limit(&m.limits), d.as_str()))
                        .collect();
                    let limits = if limited.is_empty() {
                        "no limits of its own".to_string()
                    } else {
                        limited.join(", ")
                    };
                    format!("{} [{}] ({limits})", m.name, m.models.join(" "))
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        for (name, models) in &self.tier_models {
            out.push_str(&format!("tier {name} models: {}\n", scopes(models)));
        }
        for o in self
            .orgs
            .iter()
            .filter(|o| !o.models.is_empty() && self.tier_models.get(&o.tier) != Some(&o.models))
        {
            out.push_str(&format!("org {} models: {}\n", o.id, scopes(&o.models)));
        }
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
            "otlp (/v1/traces, /v1/logs): org from {}{}; app from {}\n",
            self.otlp.org_attributes.join(", "),
            self.otlp
                .default_org
                .as_ref()
                .map_or(String::new(), |o| format!(", else {o}")),
            self.otlp.app_attributes.join(", ")
        ));
        for l in &self.limit_sources {
            let scope = match &l.scope {
                LimitScope::Project(p) => format!("project {p}"),
                LimitScope::Organization => "the organization".to_string(),
                LimitScope::Workspace(w) => format!("workspace {w}"),
            };
            out.push_str(&format!(
                "limits of org {}: source {} ({scope} at {}, every {} s, failing after {} s), replacing the configured ones\n",
                l.org,
                l.kind.source_name(),
                crate::outbound::redact(&l.base_url),
                l.interval_ms / 1000,
                l.failing_after_ms / 1000
            ));
        }
        out.push_str(if self.limits.learn {
            "limits source: config until the upstream reports its own in rate-limit headers, then upstream (learn = true)\n"
        } else {
            "limits source: config (upstream rate-limit headers are compared: LimitMismatch)\n"
        });
        out.push_str(&format!(
            "alerts: warning at {}%, critical at {}%, resolve {} points below, for {} ms\n",
            self.alerts.warning_bp as f64 / 100.0,
            self.alerts.critical_bp as f64 / 100.0,
            self.alerts.hysteresis_bp as f64 / 100.0,
            self.alerts.for_ms
        ));
        if let Some(c) = &self.cluster {
            out.push_str(&format!(
                "cluster: replica {} on {} (keys {}:*), min_replicas_ack {}, snapshots every {} ms\n",
                c.replica_id,
                crate::outbound::redact(&c.redis_url),
                c.key_prefix,
                c.min_replicas_ack,
                c.snapshot_interval_ms
            ));
        }
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

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
                tpd: 0,
                daily_window: crate::model::DailyWindow::Rolling,
                ..Limits::default()
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
