//! Answers that take long to build or send: built on the blocking pool, a few at a time,
//! and sent in slices that hold their turn until the client has taken them.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::body;
use super::error::ApiError;
use super::state::LARGE_ANSWERS;

/// How long a request for a large answer waits for its turn before `503 busy`.
const LARGE_ANSWER_WAIT: Duration = Duration::from_secs(10);

/// Runs a long encoding on the blocking pool, so the async workers keep serving (ingest,
/// health) meanwhile; a failure is `500 internal` naming `what`.
pub(super) async fn off_workers<T: Send + 'static, E: std::fmt::Display + Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError> {
    let failed = || {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{what} encoding failed"),
        )
    };
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "{what} encoding failed");
            Err(failed())
        }
        Err(e) => {
            tracing::error!(error = %e, "{what} encoding panicked");
            Err(failed())
        }
    }
}

/// A turn to build and send a large answer; `503 busy` when none frees up in time.
pub(super) async fn large_answer(
    turns: &Arc<Semaphore>,
) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    match tokio::time::timeout(LARGE_ANSWER_WAIT, turns.clone().acquire_owned()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!("{LARGE_ANSWERS} large answers are being sent; retry"),
        )),
    }
}

/// A large answer of `bytes`, holding `permit` until the client has taken it (or gone).
pub(super) fn large(
    content_type: &'static str,
    bytes: impl Into<axum::body::Bytes>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Response {
    (
        [(header::CONTENT_TYPE, content_type)],
        Body::new(body::Sliced::new(bytes, permit)),
    )
        .into_response()
}
