//! `POST /v1/admit`, `POST /v1/admit/{lease}` and `DELETE /v1/admit/{lease}` (issue
//! "Admission", SPEC §6): apps ask before they call the upstream.
//!
//! The decision is the live state's ([`Live::admit`]); what this part owns is the wait. An
//! ask with `wait` that does not fit joins its org's queue: the org's asks are weighed in
//! arrival order, only the one at the head is weighed again (when its refusal said it would
//! fit, when a lease is given back, and at least every [`RECHECK`]), and an ask that arrives
//! while others wait is refused at once rather than served before them. The queue is this
//! process's: replicas each keep their own (their decisions are still one, in the log).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::auth::Group;
use super::body;
use super::error::ApiError;
use super::state::ApiState;
use super::waiters::{Answer, Place};
use crate::live::Live;
use crate::live::admit::new_lease;
use crate::model::{Dimension, valid_name};
use crate::tracker::{Ask, AttachError, Verdict};

/// The head of a queue is weighed again at least this often (a job finishing through
/// `POST /v1/events` frees a slot without telling the queue).
const RECHECK: Duration = Duration::from_millis(100);
/// Most requests or tokens one ask may name.
const MAX_ASK: u64 = 1 << 40;
/// Longest `request_id`, as for events (SPEC §4).
const MAX_ID_BYTES: usize = 256;

/// The body of `POST /v1/admit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdmitBody {
    org: String,
    #[serde(default = "default_app")]
    app: String,
    #[serde(default = "one")]
    requests: u64,
    #[serde(default)]
    tokens: u64,
    #[serde(default)]
    job: bool,
    /// A duration (`"20s"`, `"500ms"`) or seconds as a number.
    #[serde(default)]
    wait: Option<serde_json::Value>,
    #[serde(default)]
    request_id: Option<String>,
}

fn default_app() -> String {
    "default".into()
}

fn one() -> u64 {
    1
}

/// The body of `POST /v1/admit/{lease}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttachBody {
    job_id: String,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_admission", message)
}

/// `wait` as a duration: a string with units or a number of seconds; at most `max`.
fn wait_of(v: Option<&serde_json::Value>, max: Duration) -> Result<Duration, ApiError> {
    let d = match v {
        None | Some(serde_json::Value::Null) => Duration::ZERO,
        Some(serde_json::Value::String(s)) => crate::config::parse_duration(s)
            .map_err(|e| bad(format!("wait {s:?} is not a duration: {e}")))?,
        Some(serde_json::Value::Number(n)) => n
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 86_400.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| bad("wait must be a duration (\"20s\") or seconds (0 or more)"))?,
        Some(_) => return Err(bad("wait must be a duration (\"20s\") or seconds")),
    };
    if d > max {
        return Err(bad(format!(
            "wait may be at most {}s ([admission] max_wait)",
            max.as_secs_f64()
        )));
    }
    Ok(d)
}

/// Most bytes of an admission body (an ask is a few hundred).
const MAX_ASK_BYTES: usize = 64 * 1024;

/// An admission route's body, at most [`MAX_ASK_BYTES`] (or `max_body_bytes` if smaller).
async fn read_small(
    st: &ApiState,
    headers: &HeaderMap,
    body: Body,
) -> Result<body::Held, ApiError> {
    let max = st.max_body_bytes.min(MAX_ASK_BYTES);
    body::read(&st.bodies, headers, body, max, st.body_read_timeout)
        .await
        .map_err(|e| match e {
            body::BodyError::TooLarge => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("an admission body may be at most {max} bytes"),
            ),
            e => e.to_api(max),
        })
}

/// `POST /v1/admit`.
pub(super) async fn admit(
    State(st): State<ApiState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    st.tokens.allow(Group::Ingest, &headers).await?;
    let held = read_small(&st, &headers, body).await?;
    let req: AdmitBody = serde_json::from_slice(&held.bytes)
        .map_err(|e| bad(format!("not an admission ask: {e}")))?;
    drop(held);
    if !valid_name(&req.org) || !valid_name(&req.app) {
        return Err(bad("org and app must be 1-128 printable characters"));
    }
    if req.org == crate::model::OVERFLOW {
        return Err(bad("__overflow__ is not an org one can ask for"));
    }
    if req.requests > MAX_ASK || req.tokens > MAX_ASK {
        return Err(bad(format!("requests and tokens may be at most {MAX_ASK}")));
    }
    if req.requests == 0 && req.tokens == 0 && !req.job {
        return Err(bad(
            "the ask is for nothing: requests, tokens and job are all zero",
        ));
    }
    if let Some(id) = &req.request_id
        && (id.is_empty() || id.len() > MAX_ID_BYTES)
    {
        return Err(bad("request_id must be 1-256 bytes"));
    }
    let wait = wait_of(req.wait.as_ref(), st.admission.max_wait)?;
    let ask = Ask {
        org: &req.org,
        app: &req.app,
        requests: req.requests,
        tokens: req.tokens,
        job: req.job,
        request_id: req.request_id.as_deref(),
        share_bp: None,
    };
    let started = Instant::now();
    let answer = decide(&st, &ask, started + wait).await?;
    let waited = started.elapsed().as_secs_f64();
    Ok(match answer {
        Answer::Decided(
            Verdict::Granted {
                lease,
                expires_at_ms,
                ..
            },
            org,
        ) => {
            st.metrics.admission(&org, "granted", waited);
            let body = json!({
                "granted": true,
                "lease": lease,
                "expires_at": crate::clock::rfc3339(expires_at_ms),
            });
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Answer::Decided(
            Verdict::Refused {
                dimension,
                retry_after_ms,
            },
            org,
        ) => {
            st.metrics.admission(&org, "refused", waited);
            refused(dimension, retry_after_ms)
        }
        Answer::TimedOut(dimension, retry_after_ms, org) => {
            st.metrics.admission(&org, "timed_out", waited);
            refused(dimension, retry_after_ms)
        }
        Answer::Decided(Verdict::Untracked, org) => {
            st.metrics.admission(&org, "refused", waited);
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "org_not_tracked",
                format!(
                    "{} is not tracked ([limits] max_orgs or max_new_orgs_per_second reached): its usage and limits are unknown, so nothing can be granted",
                    req.org
                ),
            ));
        }
        Answer::Decided(Verdict::Reused, org) => {
            st.metrics.admission(&org, "refused", waited);
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "request_id_reused",
                "this request_id holds a grant of another ask (app, requests, tokens or job differ)",
            ));
        }
        Answer::Decided(Verdict::Never { dimension, cap }, org) => {
            st.metrics.admission(&org, "refused", waited);
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "exceeds_limit",
                format!(
                    "the ask can never fit: {} of {} in one call, and {org}'s share of its {} limit is {cap}",
                    if matches!(dimension, Dimension::Tpm | Dimension::Tpd) {
                        req.tokens
                    } else {
                        req.requests
                    },
                    if matches!(dimension, Dimension::Tpm | Dimension::Tpd) {
                        "tokens"
                    } else {
                        "requests"
                    },
                    dimension.as_str()
                ),
            ));
        }
    })
}

/// `429` with the dimension and when the ask would fit (`Retry-After` in whole seconds,
/// rounded up).
fn refused(dimension: Dimension, retry_after_ms: u64) -> Response {
    let body = json!({
        "granted": false,
        "dimension": dimension.as_str(),
        "retry_after_ms": retry_after_ms,
    });
    let mut resp = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    let secs = retry_after_ms.div_ceil(1_000).max(1);
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

async fn weigh(live: &Live, ask: &Ask<'_>, lease: &str) -> Result<(Verdict, Arc<str>), ApiError> {
    live.admit(ask, lease).await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_decided",
            format!(
                "{e}; nothing is held for this ask (should it still be decided, it is given back)"
            ),
        )
    })
}

/// Whether waiting until `deadline` can help an ask refused on `dimension`: a window frees
/// no sooner than it said (unless a grant is given back), a job slot may free any time.
fn fits_in_time(dimension: Dimension, retry_after_ms: u64, deadline: Instant) -> bool {
    dimension == Dimension::Concurrency
        || Instant::now() + Duration::from_millis(retry_after_ms) <= deadline
}

/// Weighs `ask`, waiting in its org's queue until `deadline` when it does not fit.
async fn decide(st: &ApiState, ask: &Ask<'_>, deadline: Instant) -> Result<Answer, ApiError> {
    let waiters = &st.admission.waiters;
    let lease = new_lease();
    // Asks that arrive while others of the org wait are not weighed before them.
    let queued = waiters.with(|orgs| {
        orgs.get(ask.org)
            .filter(|q| !q.waiting.is_empty())
            .map(|q| q.head_refused)
    });
    if let Some(head) = queued
        && Instant::now() >= deadline
    {
        let now = Instant::now();
        let (dim, at) = head.unwrap_or((Dimension::Rpm, now + RECHECK));
        let ms = at.saturating_duration_since(now).as_millis().max(1) as u64;
        let org = st.live.with_tracker(|t| t.tracked_as(ask.org));
        return Ok(Answer::Decided(
            Verdict::Refused {
                dimension: dim,
                retry_after_ms: ms,
            },
            org,
        ));
    }
    if queued.is_none() {
        let (v, org) = weigh(&st.live, ask, &lease).await?;
        match v {
            Verdict::Refused {
                dimension,
                retry_after_ms,
            } if fits_in_time(dimension, retry_after_ms, deadline) => {}
            v => return Ok(Answer::Decided(v, org)),
        }
    }
    let me = waiters.next.fetch_add(1, Ordering::Relaxed);
    let (changed, waiting) = waiters.with(|orgs| {
        let q = orgs.entry(ask.org.to_string()).or_default();
        q.waiting.push_back(me);
        (q.changed.clone(), q.waiting.len())
    });
    st.metrics.admission_waiting(ask.org, waiting as i64);
    st.live.note_waiting(ask.org, waiting);
    let note_left = |left: usize| {
        st.metrics.admission_waiting(ask.org, left as i64);
        st.live.note_waiting(ask.org, left);
    };
    let _place = Place {
        waiters,
        org: ask.org,
        id: me,
        left: &note_left,
    };
    let mut last: Option<(Dimension, u64, Arc<str>)> = None;
    loop {
        let notified = changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let head = waiters.with(|orgs| {
            orgs.get(ask.org)
                .and_then(|q| q.waiting.front())
                .is_some_and(|&w| w == me)
        });
        let mut wake_at = deadline;
        if head {
            let (v, org) = weigh(&st.live, ask, &lease).await?;
            match v {
                Verdict::Refused {
                    dimension,
                    retry_after_ms,
                } => {
                    let at = Instant::now() + Duration::from_millis(retry_after_ms);
                    waiters.with(|orgs| {
                        if let Some(q) = orgs.get_mut(ask.org) {
                            q.head_refused = Some((dimension, at));
                        }
                    });
                    if !fits_in_time(dimension, retry_after_ms, deadline) {
                        return Ok(Answer::TimedOut(dimension, retry_after_ms, org));
                    }
                    last = Some((dimension, retry_after_ms, org));
                    wake_at = wake_at.min(at).min(Instant::now() + RECHECK);
                }
                v => return Ok(Answer::Decided(v, org)),
            }
        }
        if Instant::now() >= deadline {
            let now = Instant::now();
            let head_refused = waiters.with(|orgs| orgs.get(ask.org).and_then(|q| q.head_refused));
            let (dim, ms, org) = match last {
                Some(l) => l,
                None => {
                    let (dim, at) = head_refused.unwrap_or((Dimension::Rpm, now + RECHECK));
                    let ms = at.saturating_duration_since(now).as_millis().max(1) as u64;
                    (dim, ms, st.live.with_tracker(|t| t.tracked_as(ask.org)))
                }
            };
            return Ok(Answer::TimedOut(dim, ms, org));
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(wake_at.into()) => {}
        }
    }
}

/// `DELETE /v1/admit/{lease}`: gives the grant back (a job's slot at once).
pub(super) async fn release(
    State(st): State<ApiState>,
    headers: HeaderMap,
    Path(lease): Path<String>,
) -> Result<Response, ApiError> {
    st.tokens.allow(Group::Ingest, &headers).await?;
    let (held, seq) = st.live.release(&lease);
    if !held {
        return Err(no_lease());
    }
    st.admission.waiters.wake_all();
    stored(&st, seq).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Waits until commit `seq` is stored: a replica's release or attach is only made where the
/// shared log applies it, so one the log did not take must not be answered as done.
async fn stored(st: &ApiState, seq: u64) -> Result<(), ApiError> {
    st.live.durable_at(seq, st.durable_wait).await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_stored",
            format!("{e}; nothing was changed for certain, send it again"),
        )
    })
}

fn no_lease() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_lease",
        "no lease of that id is held (never granted, released, expired or completed)",
    )
}

/// `POST /v1/admit/{lease}` `{"job_id": ...}`: the job's finishing event gives the slot back.
pub(super) async fn attach(
    State(st): State<ApiState>,
    headers: HeaderMap,
    Path(lease): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    st.tokens.allow(Group::Ingest, &headers).await?;
    let held = read_small(&st, &headers, body).await?;
    let req: AttachBody = serde_json::from_slice(&held.bytes)
        .map_err(|e| bad(format!("expected {{\"job_id\": \"...\"}}: {e}")))?;
    if req.job_id.is_empty() || req.job_id.len() > MAX_ID_BYTES {
        return Err(bad("job_id must be 1-256 bytes"));
    }
    match st.live.attach(&lease, &req.job_id) {
        Ok(seq) => {
            stored(&st, seq).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Err(AttachError::NoLease) => Err(no_lease()),
        Err(e) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "cannot_attach",
            e.to_string(),
        )),
    }
}
