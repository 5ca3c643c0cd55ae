//! Event ingest over HTTP (`POST /v1/events`) and what every route that changes state
//! shares: reading a body within its limits, refusing a change while the store cannot write,
//! and answering only once a change is stored. It parses through `events` and applies through
//! [`Live`]; it never reads or changes tracker state itself.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::auth::Group;
use super::body;
use super::encoding::{self, CodingError};
use super::error::ApiError;
use super::state::ApiState;
use crate::events::format::LineFormat;
use crate::events::intake::{Tally, body_records};
use crate::events::{FieldError, ParseContext, Reason, Rejection};
use crate::live::{DurableError, Live};

/// Events of a body parsed before they are applied (see [`ingest_body`]).
const APPLY_SLICE: usize = 4096;
/// Most per-event errors listed in one ingest answer (the counts stay exact).
const MAX_LISTED_ERRORS: usize = 100;

/// Refuses a change before it is made while the store fails to write (a full disk): the
/// answer is an error only when nothing happened.
pub(super) fn writable(live: &Live) -> Result<(), ApiError> {
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
pub(super) async fn stored(
    st: &ApiState,
    live: &Live,
    seq: u64,
    what: &str,
) -> Result<bool, ApiError> {
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
pub(super) const NOT_DURABLE: &str = "applied, but the store has not confirmed it (is the disk full?): do not send it again; it is written when the store recovers and lost if the daemon stops first";

pub(super) fn is_json(headers: &HeaderMap) -> bool {
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
pub(super) async fn read_body(
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
    pub(super) fn of_coding(st: &ApiState, e: CodingError) -> ApiError {
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

/// The answer when the blocking task parsing a body of `what` (events, OTLP) panicked or
/// was cancelled: logged, and a 500 that says nothing of the internals.
pub(super) fn worker_failed(what: &str, e: &tokio::task::JoinError) -> ApiError {
    tracing::error!(error = %e, "{what} worker failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "ingest failed",
    )
}

/// A turn to parse and apply a body that has arrived (taken only once the body is here: a
/// client that announces a body and sends it slowly holds its own connection, not everyone's
/// ingest); 429 while the daemon is saturated, 503 while the store cannot write.
pub(super) fn ingest_slot(st: &ApiState) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    let slot = st
        .ingest_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| body::saturated())?;
    if st.live.pending_bytes() > crate::live::MAX_PENDING_BYTES {
        return Err(body::saturated());
    }
    writable(&st.live)?;
    Ok(slot)
}

pub(super) async fn ingest(
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
    let _slot = ingest_slot(&st)?;
    let json_type = is_json(&headers);
    let worker = live.clone();
    let max = st.max_body_bytes;
    let result = tokio::task::spawn_blocking(move || {
        let body::Held { bytes, mut charge } = held;
        let body = encoding::decode(coding, &bytes, max, &mut charge)?;
        Ok(ingest_body(&worker, &body, json_type))
    })
    .await
    .map_err(|e| worker_failed("ingest", &e))?
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
