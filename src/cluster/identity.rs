//! Which engine's data a replica runs on. The first replica to reach an empty engine notes a
//! random cluster id in it (`KEY_PREFIX:cluster`, with an incarnation), and every replica keeps
//! the id (and incarnation) in its local store. An engine that lost its data (`FLUSHALL`, a Redis restarted
//! without persistence, another Redis behind the same URL) no longer holds it: a running
//! replica notices within a lease period and puts it back with a new (random) incarnation, which
//! tells every replica to put back what it holds (the leader a snapshot, each replica its
//! files' checkpoints); a replica starting finds its noted id gone and says that what it
//! starts from is not what was counted.

use super::log::{ClusterError, SharedLog};

/// What the engine holds under `KEY_PREFIX:cluster`: `"ID INCARNATION"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineMark {
    /// The cluster's id, chosen by the first replica.
    pub id: u64,
    /// Random, new each time the id is put back after the engine lost its data: a replica
    /// that knows another one learns of the loss.
    pub incarnation: u64,
}

impl SharedLog {
    /// Notes `mark` unless the engine holds one; returns what it holds now and whether it was
    /// noted now (the engine held none: it is new, or lost its data).
    pub async fn mark_engine(&self, mark: EngineMark) -> Result<(EngineMark, bool), ClusterError> {
        let key = self.key("cluster");
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(&key)
            .arg(format!("{} {}", mark.id, mark.incarnation))
            .arg("NX")
            .cmd("GET")
            .arg(&key);
        let (put, now): (Option<String>, Option<String>) =
            pipe.query_async(&mut self.conn()).await?;
        let held = now
            .as_deref()
            .and_then(|v| {
                let (id, incarnation) = v.split_once(' ')?;
                Some(EngineMark {
                    id: id.parse().ok()?,
                    incarnation: incarnation.parse().ok()?,
                })
            })
            .ok_or_else(|| {
                ClusterError::Reply(format!(
                    "key {key} holds {now:?}, not \"CLUSTER_ID INCARNATION\" (written by something else?)"
                ))
            })?;
        Ok((held, put.is_some()))
    }
}
