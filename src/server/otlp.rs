//! OpenTelemetry in over HTTP (SPEC §6): `POST /v1/traces` and `POST /v1/logs` take OTLP/HTTP
//! export requests (`application/x-protobuf` or `application/json`, with the same
//! `Content-Encoding`s and body limits as `/v1/events`). Each GenAI span or log record becomes
//! an event ([`crate::events::otlp`]) applied as `/v1/events` applies its events; the answer is
//! the OTLP export response in the request's encoding, its `partial_success` counting the
//! records rejected.
//!
//! An export is answered 200 only once its events are stored; otherwise 503, which OTLP
//! exporters retry, and the span ids the events carry as `request_id` make the retry count
//! once. Errors are answered as OTLP/HTTP asks: a `google.rpc.Status` in the request's
//! encoding (JSON when it is neither protobuf nor JSON).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message;

use super::auth::Group;
use super::encoding;
use super::error::ApiError;
use super::ingest::{ingest_slot, read_body, stored, worker_failed};
use super::state::ApiState;
use crate::events::ParseContext;
use crate::events::intake::Tally;
use crate::events::otlp::{self, Encoding, Signal};

/// Most rejection reasons quoted in a partial success's `error_message`.
const QUOTED: usize = 5;

/// `POST /v1/traces`.
pub(super) async fn traces(st: State<ApiState>, headers: HeaderMap, body: Body) -> Response {
    answer(st, headers, body, Signal::Traces).await
}

/// `POST /v1/logs`.
pub(super) async fn logs(st: State<ApiState>, headers: HeaderMap, body: Body) -> Response {
    answer(st, headers, body, Signal::Logs).await
}

/// The export's answer, an error as a `google.rpc.Status` in the request's encoding.
async fn answer(
    State(st): State<ApiState>,
    headers: HeaderMap,
    body: Body,
    signal: Signal,
) -> Response {
    let enc = encoding_of(&headers);
    let protobuf = matches!(enc, Ok(Encoding::Protobuf));
    export(st, headers, body, signal, enc)
        .await
        .unwrap_or_else(|e| status_answer(e, protobuf))
}

/// `google.rpc.Status` (googleapis `google/rpc/status.proto`), which OTLP/HTTP answers errors
/// with; its `details` are left empty.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
struct RpcStatus {
    /// A `google.rpc.Code`.
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// `e` with its status and headers, its body a `google.rpc.Status`.
fn status_answer(e: ApiError, protobuf: bool) -> Response {
    let (status, message) = e.status_and_message();
    // google.rpc.Code by the HTTP status, as the gRPC-HTTP mapping pairs them.
    let code = match status.as_u16() {
        401 => 16,
        403 => 7,
        404 => 5,
        408 => 4,
        429 => 8,
        500 => 13,
        503 => 14,
        _ => 3,
    };
    let rpc = RpcStatus {
        code,
        message: message.to_string(),
    };
    let mut resp = e.into_response();
    let (ct, body) = if protobuf {
        ("application/x-protobuf", rpc.encode_to_vec())
    } else {
        (
            "application/json",
            serde_json::to_vec(&rpc).unwrap_or_default(),
        )
    };
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    resp.headers_mut().remove(header::CONTENT_LENGTH);
    *resp.body_mut() = Body::from(body);
    resp
}

/// The body's encoding by its `Content-Type` (OTLP/HTTP names exactly these two).
fn encoding_of(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|t| t.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match ct.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
        "application/json" => Ok(Encoding::Json),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("OTLP/HTTP bodies are application/x-protobuf or application/json, not {ct:?}"),
        )),
    }
}

/// Why an export was not taken.
enum Failure {
    Coding(encoding::CodingError),
    Invalid(String),
}

/// What one export came to.
struct Exported {
    tally: Tally,
    rejected: i64,
    message: String,
    seq: u64,
}

async fn export(
    st: ApiState,
    headers: HeaderMap,
    body: Body,
    signal: Signal,
    enc: Result<Encoding, ApiError>,
) -> Result<Response, ApiError> {
    st.tokens.allow(Group::Ingest, &headers).await?;
    let enc = enc?;
    let coding = encoding::coding(&headers).map_err(|e| ApiError::of_coding(&st, e))?;
    let held = read_body(&st, &headers, body, true).await?;
    let _slot = ingest_slot(&st)?;
    let live = st.live.clone();
    let map = st.otlp.clone();
    let max = st.max_body_bytes;
    let done = tokio::task::spawn_blocking(move || {
        let super::body::Held { bytes, mut charge } = held;
        let body = encoding::decode(coding, &bytes, max, &mut charge).map_err(Failure::Coding)?;
        let now = live.now_ms();
        let ctx = ParseContext {
            now_ms: Some(now),
            ..ParseContext::default()
        };
        let decoded = otlp::decode(signal, enc, &body, &map, &ctx).map_err(Failure::Invalid)?;
        let mut tally = Tally::default();
        let mut reasons = Vec::new();
        let mut events = Vec::with_capacity(decoded.events.len());
        for r in decoded.events {
            tally.note(&r);
            match r {
                Ok(p) => events.push(p.event),
                Err(rej) if reasons.len() < QUOTED => reasons.push(rej.detail.to_string()),
                Err(_) => {}
            }
        }
        let rejected = i64::try_from(tally.rejected_total()).unwrap_or(i64::MAX);
        let seq = live.apply(&mut events, now, None);
        Ok(Exported {
            tally,
            rejected,
            message: reasons.join("; "),
            seq,
        })
    })
    .await
    .map_err(|e| worker_failed("OTLP ingest", &e))?;
    let done = match done {
        Ok(d) => d,
        Err(Failure::Coding(coding)) => return Err(ApiError::of_coding(&st, coding)),
        Err(Failure::Invalid(why)) => {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_otlp", why));
        }
    };
    st.metrics.intake("otlp", &done.tally);
    let what = match signal {
        Signal::Traces => "spans",
        Signal::Logs => "log records",
    };
    if done.tally.accepted > 0 && !stored(&st, &st.live, done.seq, what).await? {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_stored",
            format!(
                "the {what} are counted but the store has not confirmed them; send them again (their span ids count them once)"
            ),
        ));
    }
    if done.rejected > 0 {
        tracing::debug!(rejected = done.rejected, why = %done.message, "OTLP records rejected");
    }
    let message =
        (done.rejected > 0).then(|| format!("{} rejected: {}", done.rejected, done.message));
    let response = match signal {
        Signal::Traces => encode(
            enc,
            &ExportTraceServiceResponse {
                partial_success: message.map(|error_message| ExportTracePartialSuccess {
                    rejected_spans: done.rejected,
                    error_message,
                }),
            },
        ),
        Signal::Logs => encode(
            enc,
            &ExportLogsServiceResponse {
                partial_success: message.map(|error_message| ExportLogsPartialSuccess {
                    rejected_log_records: done.rejected,
                    error_message,
                }),
            },
        ),
    };
    Ok(response)
}

fn encode<M: Message + serde::Serialize>(enc: Encoding, m: &M) -> Response {
    let (ct, body) = match enc {
        Encoding::Protobuf => ("application/x-protobuf", m.encode_to_vec()),
        Encoding::Json => (
            "application/json",
            serde_json::to_vec(m).unwrap_or_else(|_| b"{}".to_vec()),
        ),
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(ct))],
        body,
    )
        .into_response()
}
