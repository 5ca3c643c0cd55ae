//! The live status page: `GET /` (one HTML file, every asset embedded in the binary) and
//! `GET /v1/status`, the one JSON document it polls.
//!
//! `/v1/status` carries each org exactly as `/v1/usage` does, with what a person looking at
//! it needs besides (its thresholds, the last hour's requests per minute), the active alerts,
//! the batches and the off-peak window, all read at one instant. It is behind the admin token
//! like `/v1/usage`. The page itself holds no data: it is served to anyone unless basic auth
//! is configured (then it asks for the login, so the browser sends it with every poll); with
//! only a bearer token, the page asks for the token once and keeps it in session storage.
//! This module never computes usage; it arranges what the tracker, scheduler and off-peak
//! windows report.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::answer::{large, large_answer, off_workers};
use super::auth::Group;
use super::error::ApiError;
use super::json as answers;
use super::state::ApiState;
use crate::clock::rfc3339;

/// The page: markup, style and script in one file, uPlot inlined (`assets/vendor/uplot`).
static PAGE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| crate::assets::with_uplot(include_str!("page/index.html")));

/// `GET /`.
pub(super) async fn index(
    State(st): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if st.tokens.basic.is_some() {
        st.tokens.allow(Group::Admin, &headers).await?;
    }
    let mut resp = (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        PAGE.as_str(),
    )
        .into_response();
    // Everything is inline: nothing may be loaded from anywhere, nor the page be framed.
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; frame-ancestors 'none'",
        ),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// `GET /v1/status`: `{"now", "orgs": [...], "alerts": [...], "batches": [...], "offpeak"}`.
pub(super) async fn status(
    State(st): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    st.tokens.allow(Group::Admin, &headers).await?;
    let live = st.live.clone();
    let scheduler = st.scheduler.clone();
    let offpeak = st.offpeak.clone();
    let permit = large_answer(&st.large_answers).await?;
    let body = off_workers("status", move || {
        let now = live.now_ms();
        let grants = live.with_tracker(|t| t.reservations().per_org());
        let active = live.with_tracker(|t| t.active_alerts(now));
        // The object as serde_json writes it (keys in order), the orgs one at a time: at
        // 10 000 orgs their JSON trees together were hundreds of megabytes.
        let mut out = vec![b'{'];
        let alerts: Vec<Value> = active.iter().map(answers::alert).collect();
        answers::key(&mut out, "alerts", true)?;
        serde_json::to_writer(&mut out, &alerts)?;
        answers::key(&mut out, "batches", false)?;
        serde_json::to_writer(
            &mut out,
            &scheduler.map(|s| s.list(now)).unwrap_or_default(),
        )?;
        answers::key(&mut out, "now", false)?;
        serde_json::to_writer(&mut out, &rfc3339(now))?;
        answers::key(&mut out, "offpeak", false)?;
        serde_json::to_writer(&mut out, &answers::offpeak(&offpeak, now))?;
        answers::key(&mut out, "orgs", false)?;
        let each =
            |f: &mut dyn FnMut(_)| live.each_org_snapshot(now, crate::tracker::View::Page, f);
        answers::write_orgs(&mut out, each, |o| {
            let mut v = answers::org(o, grants.get(&o.org).copied().unwrap_or_default());
            v["thresholds"] = json!(o.thresholds_bp.map(|bp| f64::from(bp) / 10_000.0));
            v["jobs"] = json!({"in_flight": o.jobs_in_flight, "stuck": o.jobs_stuck});
            v["requests_per_minute"] = json!(o.requests_per_minute);
            v
        })?;
        out.push(b'}');
        Ok::<_, serde_json::Error>(out)
    })
    .await?;
    Ok(large("application/json", body, permit))
}
