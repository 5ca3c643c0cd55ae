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
mod json;
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

use crate::events::format::LineFormat;
use crate::events::intake::{Tally, body_records};
use crate::events::{FieldError, ParseContext, Reason, Rejection};
use crate::live::{DurableError, Live};
use crate::metrics::Metrics;
use crate::scheduler::{BatchError, NewBatch, Scheduler};
use answer::{large, large_answer, off_workers};
use encoding::CodingError;
pub use error::ApiError;
pub use state::{ApiState, DURABLE_WAIT, INGEST_CONCURRENCY, LARGE_ANSWERS, Parts};

/// Events of a body parsed before they are applied (see [`ingest_body`]).
const APPLY_SLICE: usize = 4096;
/// Most per-event errors listed in one ingest answer (the counts stay exact).
const MAX_LISTED_ERRORS: usize = 100;

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

/// Refuses a change before it is made while the store fails to write (a full disk): the
/// answer is an error only when nothing happened.
fn writable(live: &Live) -> Result<(), ApiError> {
    if live.healthy() {
        Ok(())
    } else if live.is_replica() {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shared_log_unavailable",
            "the shared log (Redis) cannot be reached; nothing of this request was taken; retry later",
        ))
    } else {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the store is failing to write (is the disk full?); nothing was changed; retry later",
        ))
    }
}

/// Waits until the store has committed `seq`. A change already made is never answered with
/// an error (a client's retry would make it twice): when the store does not confirm in time,
/// the answer says the change was made but is not yet stored (`"durable": false`).
///
/// A replica of a cluster acknowledges only what the shared log confirmed: events it did not
/// confirm (unreachable, timed out, or short of `min_replicas_ack`) are answered
/// `503 not_stored`, so the client sends them again. Whether a copy reached the log is not
/// known (a timed-out append may still land, one short of its replicas is on the primary), so
/// the answer says so; with a `request_id` the events count once however often they are sent.
async fn stored(st: &ApiState, live: &Live, seq: u64, what: &str) -> Result<bool, ApiError> {
    let not_stored = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_stored",
            format!(
                "the shared log (Redis) did not confirm the {what} (unreachable, or fewer Redis replicas than min_replicas_ack confirmed in time): they may or may not be counted; send them again with the same request_id, which counts once however often it is sent"
            ),
        )
    };
    match live.durable_at(seq, st.durable_wait).await {
        Ok(()) => Ok(true),
        Err(DurableError::NotStored) => Err(not_stored()),
        Err(e) if live.is_replica() => {
            tracing::warn!(error = %e, "{what} not confirmed by the shared log in time; answered 503");
            Err(not_stored())
        }
        Err(e) => {
            tracing::warn!(error = %e, "{what} applied but not confirmed by the store; answered as not yet durable");
            Ok(false)
        }
    }
}

/// The note an answer carries when its change is made but not yet stored.
const NOT_DURABLE: &str = "applied, but the store has not confirmed it (is the disk full?): do not send it again; it is written when the store recovers and lost if the daemon stops first";

/// The whole API.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/events", post(ingest))
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

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|t| {
            let t = t.trim().to_ascii_lowercase();
            t == "application/json" || t.ends_with("+json")
        })
        .unwrap_or(false)
}

/// Outcome of parsing and applying one body.
struct IngestResult {
    tally: Tally,
    /// What went wrong, by the event's index in the body: rejections, and accepted events'
    /// fields that did not parse (only the first [`MAX_LISTED_ERRORS`]).
    errors: Vec<(usize, Problem)>,
    /// Commit that holds the accepted events.
    seq: u64,
}

/// One entry of an ingest answer's `errors`.
enum Problem {
    Rejected(Rejection),
    Field(FieldError),
}

/// The whole body ([`body::read`]); `events` says whether a body too large counts as a
/// rejected event.
async fn read_body(
    st: &ApiState,
    headers: &HeaderMap,
    body: Body,
    events: bool,
) -> Result<body::Held, ApiError> {
    body::read(
        &st.bodies,
        headers,
        body,
        st.max_body_bytes,
        st.body_read_timeout,
    )
    .await
    .map_err(|e| {
        match e {
            body::BodyError::TooLarge if events => st.metrics.rejected("http", Reason::TooLarge, 1),
            body::BodyError::Unreadable(ref why) => {
                tracing::debug!(error = %why, "request body unreadable")
            }
            _ => {}
        }
        e.to_api(st.max_body_bytes)
    })
}

impl ApiError {
    fn of_coding(st: &ApiState, e: CodingError) -> ApiError {
        match e {
            CodingError::Unsupported(name) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
                format!(
                    "Content-Encoding {name:?} is not supported; send gzip, deflate, zstd or no encoding"
                ),
            ),
            CodingError::Undecodable(why) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "undecodable_body",
                format!("the body does not decode: {why}"),
            ),
            CodingError::TooLarge => {
                st.metrics.rejected("http", Reason::TooLarge, 1);
                body::too_large(st.max_body_bytes)
            }
            CodingError::Saturated => body::saturated(),
        }
    }
}

async fn ingest(
    State(st): State<ApiState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    st.tokens.allow(Group::Ingest, &headers).await?;
    let live = st.live.clone();
    let coding = encoding::coding(&headers).map_err(|e| ApiError::of_coding(&st, e))?;
    // The limit holds for the bytes on the wire and again for the decoded body (a small
    // compression bomb stops at the limit); both are charged to the in-flight budget.
    let held = read_body(&st, &headers, body, true).await?;
    // A slot is taken only once the body is here: a client that announces a body and sends
    // it slowly holds its own connection, not everyone's ingest.
    let _slot = st
        .ingest_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| body::saturated())?;
    if live.pending_bytes() > crate::live::MAX_PENDING_BYTES {
        return Err(body::saturated());
    }
    writable(&live)?;
    let json_type = is_json(&headers);
    let worker = live.clone();
    let max = st.max_body_bytes;
    let result = tokio::task::spawn_blocking(move || {
        let body::Held { bytes, mut charge } = held;
        let body = encoding::decode(coding, &bytes, max, &mut charge)?;
        Ok(ingest_body(&worker, &body, json_type))
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "ingest worker failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "ingest failed",
        )
    })?
    .map_err(|e| ApiError::of_coding(&st, e))?;

    let tally = &result.tally;
    let durable = tally.accepted == 0 || stored(&st, &live, result.seq, "events").await?;
    st.metrics.intake("http", tally);
    let errors: Vec<_> = result
        .errors
        .iter()
        .map(|(i, p)| match p {
            Problem::Rejected(r) => {
                json!({"index": i, "reason": r.reason.as_str(), "message": r.detail})
            }
            Problem::Field(f) => json!({
                "index": i,
                "field": f.field.name(),
                "message": format!("{}: {}; the event counted without it", f.field, f.detail),
            }),
        })
        .collect();
    let rejected = tally.rejected_total();
    if tally.accepted == 0 {
        tracing::debug!(rejected, "ingest body had no valid event");
        let message = if rejected == 0 {
            "the body holds no events".to_string()
        } else {
            format!("none of the {rejected} events is valid")
        };
        let body = json!({
            "error": {"code": "no_valid_events", "message": message},
            "accepted": 0, "rejected": rejected, "errors": errors,
        });
        return Ok((StatusCode::BAD_REQUEST, axum::Json(body)).into_response());
    }
    let mut body = json!({"accepted": tally.accepted, "rejected": rejected, "errors": errors});
    if !durable {
        body["durable"] = json!(false);
        body["warning"] = json!(NOT_DURABLE);
    }
    Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response())
}

fn ingest_body(live: &Live, bytes: &[u8], json_type: bool) -> IngestResult {
    let now = live.now_ms();
    let ctx = ParseContext {
        now_ms: Some(now),
        ..ParseContext::default()
    };
    let format = LineFormat::Json { fields: Vec::new() };
    let mut tally = Tally::default();
    let mut errors = Vec::new();
    let mut events = Vec::new();
    let mut index = 0usize;
    let mut found = Default::default();
    let mut seq = 0;
    body_records(bytes, json_type, |record| {
        format.decode(record, &ctx, &mut found, |r| {
            tally.note(&r);
            match r {
                Ok(p) => {
                    for e in p.field_errors {
                        if errors.len() < MAX_LISTED_ERRORS {
                            errors.push((index, Problem::Field(e)));
                        }
                    }
                    events.push(p.event);
                }
                Err(r) => {
                    tracing::debug!(index, reason = %r.reason, detail = %r.detail, "event rejected");
                    if errors.len() < MAX_LISTED_ERRORS {
                        errors.push((index, Problem::Rejected(r)));
                    }
                }
            }
            index += 1;
        });
        // Applied in slices, so that what a body costs beyond its bytes stays small however
        // many events it holds (and the tracker lock is never held for a whole body).
        if events.len() >= APPLY_SLICE {
            seq = live.apply(&mut events, now, None);
            events.clear();
        }
    });
    if !events.is_empty() || seq == 0 {
        seq = live.apply(&mut events, now, None);
    }
    IngestResult { tally, errors, seq }
}

async fn usage(State(st): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    st.tokens.allow(Group::Admin, &headers).await?;
    let live = st.live.clone();
    let permit = large_answer(&st.large_answers).await?;
    // Off the async workers: tens of thousands of series take a while to copy and encode,
    // and ingest must not wait behind it (the tracker lock is taken a slice at a time).
    let body = off_workers("usage", move || {
        let now = live.now_ms();
        let orgs = live.org_snapshots(now, crate::tracker::View::Full);
        let grants = live.with_tracker(|t| t.reservations().per_org());
        serde_json::to_vec(&json::usage(&orgs, &grants))
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
