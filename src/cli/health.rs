//! `ratewarden health`: whether a running daemon is ready (`GET /readyz` answers 2xx), for
//! container health checks that have no curl.

use super::api::{Api, ClientError};

/// `Ok` when the daemon at `server` is ready; else why not (unreachable, or its answer).
pub async fn ready(server: &str) -> Result<(), ClientError> {
    Api::new(server, None)?
        .call(reqwest::Method::GET, "/readyz", None)
        .await
        .map(drop)
}
