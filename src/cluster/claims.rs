//! What must be decided once across replicas before a change is made, because the change
//! itself is made by whichever replica takes the request: a batch's `Idempotency-Key`. Two
//! replicas given the same key at once must not both create a batch under its id; the first
//! to claim it in the engine creates it, the other answers as the key's contract says.

use std::time::Duration;

use super::log::{ClusterError, SharedLog};

impl SharedLog {
    /// Claims batch `id` (an `Idempotency-Key`'s) for a submission whose body hashes to
    /// `hash`, for `ttl` (`SET … NX PX … GET`, Redis ≥ 7); returns the hash noted by the
    /// submission that claimed it first, or `None` when this one did.
    pub async fn claim_batch_key(
        &self,
        id: &str,
        hash: u64,
        ttl: Duration,
    ) -> Result<Option<u64>, ClusterError> {
        let key = self.key(&format!("batch-key:{id}"));
        let held: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(format!("{hash:016x}"))
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .arg("GET")
            .query_async(&mut self.conn())
            .await?;
        held.map(|h| {
            u64::from_str_radix(&h, 16)
                .map_err(|_| ClusterError::Reply(format!("key {key} holds {h:?}, not a body hash")))
        })
        .transpose()
    }
}
