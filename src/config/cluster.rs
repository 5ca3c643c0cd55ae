//! `[cluster]`: several replicas sharing one Redis or Valkey (see the README, "Running several
//! replicas"). Absent, nothing changes: embedded SQLite, no Redis.

use std::ops::Range;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::channels::{SecretRef, secret};
use super::check::*;
use super::duration::HumanDuration;

/// `[cluster]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// `redis://host:port[/db]` or `rediss://…` (TLS); never with a password in it.
    pub redis_url: String,
    /// `redis_password_env` or `redis_password_file`.
    pub redis_password: Option<SecretRef>,
    /// This replica's name (default: the host name).
    pub replica_id: String,
    /// Redis replicas that must hold an entry (`WAIT`) before ingest answers 202.
    pub min_replicas_ack: u32,
    /// How long an append waits for them, ms.
    pub ack_timeout_ms: u64,
    /// Prefix of every key (several deployments may share one engine).
    pub key_prefix: String,
    /// How often the leader snapshots its tracker into the shared engine and trims the log
    /// behind it, ms.
    pub snapshot_interval_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    redis_url: Spanned<String>,
    redis_password_env: Option<String>,
    redis_password_file: Option<PathBuf>,
    replica_id: Option<Spanned<String>>,
    #[serde(default)]
    min_replicas_ack: u32,
    #[serde(default = "default_ack_timeout")]
    ack_timeout: Spanned<HumanDuration>,
    #[serde(default = "default_prefix")]
    key_prefix: Spanned<String>,
    #[serde(default = "default_snapshot_interval")]
    snapshot_interval: Spanned<HumanDuration>,
}

fn default_snapshot_interval() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(std::time::Duration::from_secs(60)))
}

fn default_ack_timeout() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(std::time::Duration::from_secs(1)))
}

fn default_prefix() -> Spanned<String> {
    Spanned::new(0..0, "ratewarden".into())
}

/// A name fit for a key and a log field: what `valid_name` allows, 1–64 characters.
fn key_safe(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl RawCluster {
    pub(super) fn validate(self, whole: Range<usize>) -> Result<ClusterConfig, Spanned2> {
        let url = self.redis_url.get_ref().trim();
        let span = self.redis_url.span();
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| at(span.clone(), format!("redis_url is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "redis" | "rediss") {
            return Err(at(
                span,
                "redis_url must start with redis:// or rediss:// (TLS)",
            ));
        }
        if parsed.password().is_some() {
            return Err(at(
                span,
                "redis_url holds a password; give it in redis_password_env or redis_password_file instead, so the config file holds no secret",
            ));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(at(span, "redis_url names no host"));
        }
        let redis_password = secret(
            &self.redis_password_env,
            &self.redis_password_file,
            &whole,
            "redis_password",
        )?;
        let replica_id = match self.replica_id {
            Some(r) if !key_safe(r.get_ref()) => {
                return Err(at(
                    r.span(),
                    "replica_id is 1-64 characters of A-Z a-z 0-9 _ . -",
                ));
            }
            Some(r) => r.into_inner(),
            None => host_name(),
        };
        if !key_safe(self.key_prefix.get_ref()) {
            return Err(at(
                self.key_prefix.span(),
                "key_prefix is 1-64 characters of A-Z a-z 0-9 _ . -",
            ));
        }
        let ack = self.ack_timeout.get_ref().0;
        if self.min_replicas_ack > 0 && ack.is_zero() {
            return Err(at(
                self.ack_timeout.span(),
                "ack_timeout must be above 0 when min_replicas_ack is set (WAIT 0 waits forever)",
            ));
        }
        if ack > crate::cluster::MAX_ACK_TIMEOUT {
            return Err(at(
                self.ack_timeout.span(),
                format!(
                    "ack_timeout is at most {:?} (a WAIT must answer before the connection gives up on Redis)",
                    crate::cluster::MAX_ACK_TIMEOUT
                ),
            ));
        }
        let every = self.snapshot_interval.get_ref().0;
        if every < std::time::Duration::from_millis(100) {
            return Err(at(
                self.snapshot_interval.span(),
                "snapshot_interval must be at least 100ms",
            ));
        }
        Ok(ClusterConfig {
            snapshot_interval_ms: every.as_millis() as u64,
            redis_url: url.to_owned(),
            redis_password,
            replica_id,
            min_replicas_ack: self.min_replicas_ack,
            ack_timeout_ms: ack.as_millis() as u64,
            key_prefix: self.key_prefix.into_inner(),
        })
    }
}

/// The host name, made key-safe (`replica_id`'s default); `replica` if there is none.
pub fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let safe: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if safe.is_empty() {
        "replica".into()
    } else {
        safe
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, SecretRef};

    fn parse(cluster: &str) -> Result<Config, String> {
        Config::parse(&format!("[cluster]\n{cluster}"), "t.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn a_cluster_needs_only_a_url() {
        let c = parse("redis_url = \"redis://redis:6379\"\n").expect("valid");
        let cl = c.cluster.expect("[cluster] set");
        assert_eq!(cl.redis_url, "redis://redis:6379");
        assert_eq!((cl.min_replicas_ack, cl.ack_timeout_ms), (0, 1_000));
        assert_eq!(cl.key_prefix, "ratewarden");
        assert!(!cl.replica_id.is_empty(), "the host name by default");
        assert!(
            Config::parse("", "t.toml")
                .expect("empty")
                .cluster
                .is_none()
        );
    }

    #[test]
    fn everything_can_be_set() {
        let c = parse(
            "redis_url = \"rediss://cache.internal:6380/2\"\nredis_password_file = \"/run/secrets/redis\"\n\
             replica_id = \"pod-7\"\nmin_replicas_ack = 1\nack_timeout = \"250ms\"\nkey_prefix = \"rw-prod\"\n",
        )
        .expect("valid");
        let cl = c.cluster.expect("set");
        assert_eq!(
            cl.redis_password,
            Some(SecretRef::File("/run/secrets/redis".into()))
        );
        assert_eq!(
            (
                cl.replica_id.as_str(),
                cl.min_replicas_ack,
                cl.ack_timeout_ms
            ),
            ("pod-7", 1, 250)
        );
    }

    #[test]
    fn a_password_that_cannot_be_read_is_a_missing_secret() {
        let c = parse(
            "redis_url = \"redis://r\"\nredis_password_env = \"RW_SURELY_UNSET_REDIS_PASSWORD\"\n",
        )
        .expect("valid");
        let missing = c.missing_secrets();
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert_eq!(
            (missing[0].0.as_str(), missing[0].1),
            ("[cluster]", "Redis password")
        );
        assert!(c.summary().contains("cluster: replica"), "{}", c.summary());
    }

    #[test]
    fn mistakes_are_named_at_their_line() {
        for (text, want) in [
            (
                "redis_url = \"http://redis:6379\"\n",
                "redis:// or rediss://",
            ),
            (
                "redis_url = \"redis://:hunter2@redis:6379\"\n",
                "holds a password",
            ),
            ("redis_url = \"not a url\"\n", "not a URL"),
            (
                "redis_url = \"redis://r\"\nreplica_id = \"a b\"\n",
                "replica_id is 1-64",
            ),
            (
                "redis_url = \"redis://r\"\nredis_password_env = \"A\"\nredis_password_file = \"/f\"\n",
                "not both",
            ),
            (
                "redis_url = \"redis://r\"\nmin_replicas_ack = 1\nack_timeout = \"0s\"\n",
                "ack_timeout must be above 0",
            ),
            (
                "redis_url = \"redis://r\"\nmin_replicas_ack = 1\nack_timeout = \"5s\"\n",
                "ack_timeout is at most 4s",
            ),
            ("redis_url = \"redis://r\"\nport = 1\n", "unknown field"),
            ("replica_id = \"a\"\n", "redis_url"),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.contains(want), "{text}: {err}");
            assert!(
                err.contains("t.toml:"),
                "{text}: the error names its place: {err}"
            );
        }
    }
}
