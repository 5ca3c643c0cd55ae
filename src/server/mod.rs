//! The HTTP API (SPEC §6): event ingest, usage, alerts, `/metrics`, health.
//!
//! [`router`] builds the whole API from an [`ApiState`] so tests drive it with `oneshot`
//! and no socket. Handlers validate and authorize, then hand events to the [`Live`] state;
//! they never hold the tracker lock across an `.await`. Errors are JSON
//! `{"error":{"code","message"}}` and never leak internals. [`conn`] accepts connections
//! (TLS from the web config by [`tls`], re-read when its files change); [`auth`] decides who
//! may use a route (bearer tokens, basic auth).

mod admit;
mod answer;
pub mod auth;
pub mod body;
mod claim;
pub mod conn;
mod encoding;
mod error;
mod ingest;
mod json;
mod otlp;
mod page;
mod state;
pub mod tls;
mod waiters;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::sync::Semaphore;

pub use auth::{BasicAuth, Group, Secret, Tokens};

use crate::metrics::Metrics;
use crate::scheduler::{BatchError, NewBatch, Scheduler};
use answer::{large, large_answer, off_workers};
pub use error::ApiError;
use ingest::{NOT_DURABLE, read_body, stored, writable};
pub use state::{ApiState, DURABLE_WAIT, INGEST_CONCURRENCY, LARGE_ANSWERS, Parts};

/// What is answered while stored state is being recovered: `/healthz`, `/metrics` (the
/// registry alone: nothing is tracked yet), and `503 starting` for everything else.
pub fn starting_router(tokens: Arc<Tokens>, metrics: Arc<Metrics>) -> Router {
    #[derive(Clone)]
    struct Starting {
        tokens: Arc<Tokens>,
        metrics: Arc<Metrics>,
        large_answers: Arc<Semaphore>,
    }
    let st = Starting {
        tokens,
        metrics,
        large_answers: Arc::new(Semaphore::new(LARGE_ANSWERS)),
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route(
            "/metrics",
            get(async |State(st): State<Starting>, headers: HeaderMap| {
                metrics_answer(&st.tokens, &st.metrics, &st.large_answers, &headers).await
            }),
        )
        .fallback(async || starting())
        .with_state(st)
}

/// What every route that needs recovered state answers until it is.
fn starting() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "starting",
        "recovering stored state; retry shortly",
    )
}

/// The whole API.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/events", post(ingest::ingest))
        .route("/v1/traces", post(otlp::traces))
        .route("/v1/logs", post(otlp::logs))
        .route("/v1/admit", post(admit::admit))
        .route(
            "/v1/admit/{lease}",
            post(admit::attach).delete(admit::release),
        )
        .route("/", get(page::index))
        .route("/v1/status", get(page::status))
        .route("/v1/usage", get(usage))
        .route("/v1/alerts", get(alerts))
        .route("/v1/offpeak", get(offpeak))
        .route("/v1/batches", post(create_batch).get(list_batches))
        .route("/v1/batches/{id}", get(get_batch).delete(cancel_batch))
        .route("/v1/batches/{id}/items", get(batch_items))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(state)
}

/// What the spare lane answers ([`conn::LANE`]): health and metrics only, so they get
/// through while every regular connection is taken.
pub fn lane_router(state: ApiState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(async || {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_connections",
                "every connection is taken; only /healthz, /readyz and /metrics are answered",
            )
        })
        .with_state(state)
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

async fn readyz(State(st): State<ApiState>) -> Response {
    let live = &st.live;
    if !live.healthy() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the store is failing to commit",
        )
        .into_response();
    }
    let waiting: Vec<&str> = st
        .sources
        .iter()
        .filter(|h| !h.ready.load(Ordering::Acquire))
        .map(|h| h.name.as_str())
        .collect();
    if !waiting.is_empty() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "sources_not_ready",
            format!("file sources not running: {}", waiting.join(", ")),
        )
        .into_response();
    }
    if st.ready.load(Ordering::Acquire) {
        axum::Json(json!({"status": "ready"})).into_response()
    } else {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "starting up").into_response()
    }
}

async fn usage(State(st): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    st.tokens.allow(Group::Admin, &headers).await?;
    let live = st.live.clone();
    let permit = large_answer(&st.large_answers).await?;
    // Off the async workers: tens of thousands of series take a while to copy and encode,
    // and ingest must not wait behind it (the tracker lock is taken a slice at a time).
    let body = off_workers("usage", move || {
        let now = live.now_ms();
        let grants = live.with_tracker(|t| t.reservations().per_org());
        json::usage_body(&grants, |f| {
            live.each_org_snapshot(now, crate::tracker::View::Full, f)
        })
    })
    .await?;
    Ok(large("application/json", body, permit))
}

async fn alerts(State(st): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    st.tokens.allow(Group::Admin, &headers).await?;
    let live = &st.live;
    let now = live.now_ms();
    let active = live.with_tracker(|t| t.active_alerts(now));
    let channels: Vec<_> = st
        .channels
        .as_ref()
        .map(|c| {
            c.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .values()
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    Ok(axum::Json(json!({
        "alerts": active.iter().map(json::alert).collect::<Vec<_>>(),
        "channels": channels,
    }))
    .into_response())
}

async fn offpeak(State(st): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    st.tokens.allow(Group::Admin, &headers).await?;
    Ok(axum::Json(json::offpeak(&st.offpeak, st.live.now_ms())).into_response())
}

impl ApiState {
    fn scheduler(&self) -> Result<&Arc<Scheduler>, ApiError> {
        self.scheduler.as_ref().ok_or_else(starting)
    }
}

impl From<BatchError> for ApiError {
    fn from(e: BatchError) -> Self {
        let (status, code) = match &e {
            BatchError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_batch"),
            BatchError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            BatchError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            BatchError::Full(_) => (StatusCode::TOO_MANY_REQUESTS, "queue_full"),
            BatchError::KeyReused(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

async fn create_batch(
    State(st): State<ApiState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    st.tokens.allow(Group::Admin, &headers).await?;
    let scheduler = st.scheduler()?.clone();
    let held = read_body(&st, &headers, body, false).await?;
    let req: NewBatch = serde_json::from_slice(&held.bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_batch",
            format!("not a batch: {e}"),
        )
    })?;
    let live = &st.live;
    let key = headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 255)
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_batch",
                        "Idempotency-Key must be 1-255 visible ASCII characters",
                    )
                })
        })
        .transpose()?;
    writable(live)?;
    let body_hash = crate::model::stable_hash(&[&held.bytes]);
    if let (Some(log), Some(k)) = (&st.cluster, key) {
        claim::claim_batch_key(&st, log, &scheduler, &req, k, body_hash).await?;
    }
    let (mut summary, seq, created) =
        scheduler.create(req, key.map(|k| (k, body_hash)), st.live.now_ms())?;
    if !created {
        // The same submission again (a client's retry): the first batch, unchanged.
        return Ok((StatusCode::OK, axum::Json(summary)).into_response());
    }
    if !stored(&st, live, seq, "batch").await? {
        summary["durable"] = json!(false);
        summary["warning"] = json!(NOT_DURABLE);
    }
    Ok((StatusCode::CREATED, axum::Json(summary)).into_response())
}

async fn list_batches(
    State(st): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    st.tokens.allow(Group::Admin, &headers).await?;
    Ok(axum::Json(json!({"batches": st.scheduler()?.list(st.live.now_ms())})).into_response())
}

async fn get_batch(
    State(st): State<ApiState>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    st.tokens.allow(Group::Admin, &headers).await?;
    Ok(axum::Json(st.scheduler()?.get(&id, st.live.now_ms())?).into_response())
}

async fn cancel_batch(
    State(st): State<ApiState>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    st.tokens.allow(Group::Admin, &headers).await?;
    let live = &st.live;
    writable(live)?;
    let (mut summary, seq) = st.scheduler()?.cancel(&id, st.live.now_ms())?;
    if !stored(&st, live, seq, "cancel").await? {
        summary["durable"] = json!(false);
        summary["warning"] = json!(NOT_DURABLE);
    }
    Ok(axum::Json(summary).into_response())
}

/// `GET /v1/batches/{id}/items[?after=I&limit=N]`: NDJSON rows, streamed a page at a time
/// (the scheduler's lock is held per page, and the answer is never whole in memory). With a
/// `limit` and more rows left, `Link: <…?after=I&limit=N>; rel="next"` (RFC 8288) names the
/// next page.
async fn batch_items(
    State(st): State<ApiState>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
    query: Result<
        axum::extract::Query<std::collections::HashMap<String, String>>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<Response, ApiError> {
    st.tokens.allow(Group::Admin, &headers).await?;
    let scheduler = st.scheduler()?.clone();
    let bad = |what: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", what);
    let query = query.map_err(|e| bad(e.body_text()))?.0;
    let after = match query.get("after") {
        Some(a) => Some(
            a.parse::<u32>()
                .map_err(|_| bad(format!("after must be an item index, not {a:?}")))?,
        ),
        None => None,
    };
    let limit = match query.get("limit") {
        Some(l) => Some(l.parse::<usize>().ok().filter(|n| *n >= 1).ok_or_else(|| {
            bad(format!(
                "limit must be a whole number of at least 1, not {l:?}"
            ))
        })?),
        None => None,
    };
    if let Some(k) = query.keys().find(|k| *k != "after" && *k != "limit") {
        return Err(bad(format!("unknown parameter {k:?} (after, limit)")));
    }
    // Fails now (404) rather than after a 200 has begun.
    let next = scheduler.page_end(&id, after, limit.unwrap_or(usize::MAX))?;
    let mut resp = Response::new(Body::new(ItemRows {
        scheduler: scheduler.clone(),
        id: id.clone(),
        after,
        left: limit.unwrap_or(usize::MAX),
    }));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    if let (Some(limit), Some(last)) = (limit, next) {
        let link = format!(
            "</v1/batches/{}/items?after={last}&limit={limit}>; rel=\"next\"",
            percent_encoding::utf8_percent_encode(&id, percent_encoding::NON_ALPHANUMERIC)
        );
        if let Ok(v) = HeaderValue::from_str(&link) {
            resp.headers_mut().insert(header::LINK, v);
        }
    }
    Ok(resp)
}

/// Rows a page at a time.
const ROWS_PER_FRAME: usize = 256;

/// The body of [`batch_items`]: each frame is the next page of rows.
struct ItemRows {
    scheduler: Arc<Scheduler>,
    id: String,
    after: Option<u32>,
    left: usize,
}

impl http_body::Body for ItemRows {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.left.min(ROWS_PER_FRAME);
        // A batch forgotten (past its retention) while it was being read ends the rows.
        let Ok((rows, _)) = self.scheduler.items_page(&self.id, self.after, n) else {
            return std::task::Poll::Ready(None);
        };
        let Some(last) = rows.last().and_then(|r| r["index"].as_u64()) else {
            return std::task::Poll::Ready(None);
        };
        self.after = u32::try_from(last).ok();
        self.left = if self.after.is_some() {
            self.left - rows.len()
        } else {
            0
        };
        let mut text = String::new();
        for row in rows {
            text.push_str(&row.to_string());
            text.push('\n');
        }
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(text.into()))))
    }
}

async fn metrics(State(st): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    metrics_answer(&st.tokens, &st.metrics, &st.large_answers, &headers).await
}

/// `/metrics`, for the running API and while starting.
async fn metrics_answer(
    tokens: &Tokens,
    metrics: &Arc<Metrics>,
    large_answers: &Arc<Semaphore>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    tokens.allow(Group::Metrics, headers).await?;
    let metrics = metrics.clone();
    // OpenMetrics unless the client asks for the classic text format and not for OpenMetrics.
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let classic = accept.contains("text/plain") && !accept.contains("application/openmetrics-text");
    let permit = large_answer(large_answers).await?;
    let text = off_workers("metrics", move || metrics.encode(classic)).await?;
    let content_type = if classic {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    };
    Ok(large(content_type, text, permit))
}

#[cfg(test)]
mod tests;
