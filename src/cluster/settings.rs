//! What `[cluster]` says, as the shared log needs it.

use std::time::Duration;

/// How to reach the shared engine and what this replica is called, from `[cluster]`.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// `redis://` or `rediss://` (TLS) URL, without a password.
    pub redis_url: String,
    /// From `redis_password_env` or `redis_password_file`, never from the config file.
    pub password: Option<String>,
    /// This replica's name in the log and in its keys (default: the host name).
    pub replica_id: String,
    /// Redis replicas that must hold an entry (`WAIT`) before it counts as stored; 0: the
    /// primary's word is enough.
    pub min_replicas_ack: u32,
    /// How long an append waits for those replicas.
    pub ack_timeout: Duration,
    /// Prefix of every key ratewarden uses, so several deployments can share one engine.
    pub key_prefix: String,
}

impl ClusterSettings {
    /// Settings for `redis_url` with the defaults of `[cluster]`.
    pub fn new(redis_url: impl Into<String>, replica_id: impl Into<String>) -> ClusterSettings {
        ClusterSettings {
            redis_url: redis_url.into(),
            password: None,
            replica_id: replica_id.into(),
            min_replicas_ack: 0,
            ack_timeout: Duration::from_secs(1),
            key_prefix: "ratewarden".into(),
        }
    }
}
