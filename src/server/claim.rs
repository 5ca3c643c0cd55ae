//! What a replica decides once across the cluster before it makes a change (`[cluster]`):
//! the claim of a batch's `Idempotency-Key` in the shared engine. It never makes the change.

use std::time::Duration;

use axum::http::StatusCode;

use super::error::ApiError;
use super::state::ApiState;
use crate::cluster::SharedLog;
use crate::scheduler::{BatchError, NewBatch, Scheduler};

/// How long a replica's claim of a batch's `Idempotency-Key` lasts in the shared engine: long
/// enough for the batch it creates to reach every replica, whose own copy then answers a
/// repeat (the claim only settles two replicas given the key at once).
const BATCH_KEY_CLAIM: Duration = Duration::from_secs(600);

/// On a replica: claims the batch `Idempotency-Key` `key` in the shared engine before the
/// batch is created here, so that two replicas given it at once do not both create one. With
/// another body it is [`BatchError::KeyReused`]; with the same body (the client sent it to
/// another replica too) it waits, up to the durable wait, for that replica's batch to arrive
/// through the log, which then answers it as it stands.
pub(super) async fn claim_batch_key(
    st: &ApiState,
    log: &SharedLog,
    scheduler: &Scheduler,
    req: &NewBatch,
    key: &str,
    body_hash: u64,
) -> Result<(), ApiError> {
    let Some(id) = scheduler.keyed_batch_id(&req.upstream, req.org.as_deref(), key) else {
        return Ok(());
    };
    // A batch this replica holds already answers for its key (200 or 422) from its own
    // record, which outlives the claim (and a Redis that lost its data).
    if scheduler.holds(&id) {
        return Ok(());
    }
    match log.claim_batch_key(&id, body_hash, BATCH_KEY_CLAIM).await {
        Ok(None) => Ok(()),
        Ok(Some(first)) if first != body_hash => Err(BatchError::key_reused(&id).into()),
        Ok(Some(_)) => {
            let deadline = tokio::time::Instant::now() + st.durable_wait;
            while !scheduler.holds(&id) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(())
        }
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shared_log_unavailable",
            format!(
                "the shared engine (Redis) did not answer the Idempotency-Key's claim ({e}); nothing was created; retry later"
            ),
        )),
    }
}
