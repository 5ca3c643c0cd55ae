//! What the scheduler tells the rest: its metrics (items by state per org) and the events its
//! own requests feed back to the tracker, so they count against the org like any other
//! request (SPEC §7: batch traffic shares the limits with interactive traffic).

use std::collections::HashMap;
use std::time::Duration;

use super::batch::{ItemState, State};
use crate::events::{Event, Kind};
use crate::metrics::Metrics;

/// Sets `ratewarden_batch_items{org,state}` for `org` from the batches held.
pub(super) fn gauges(metrics: &Metrics, st: &State, org: &str) {
    let mut counts: HashMap<ItemState, i64> = HashMap::new();
    for b in st.batches.iter().filter(|b| b.header.org == org) {
        for i in &b.items {
            *counts.entry(i.state).or_default() += 1;
        }
    }
    for s in ItemState::ALL {
        metrics.batch_items(org, s.as_str(), counts.get(&s).copied().unwrap_or(0));
    }
}

/// The request event for an attempt sent at `sent_at` that the upstream answered with
/// `status` at `now`.
pub(super) fn answered(
    org: &str,
    sent_at: i64,
    status: u16,
    retry_after: Option<Duration>,
    now: i64,
) -> Event<'static> {
    Event {
        ts_ms: Some(sent_at),
        org: org.to_string().into(),
        app: Some("batch".into()),
        kind: Kind::Request,
        status: Some(status),
        job_id: None,
        retry_after_ms: retry_after.map(|r| r.as_millis() as i64),
        error_code: None,
        tokens: None,
        input_tokens: None,
        output_tokens: None,
        images: None,
        latency_ms: Some((now - sent_at).max(0) as f64),
        request_id: None,
        upstream: Vec::new(),
        model: None,
        batch: false,
    }
}

/// The job event (`kind`: completed or failed) for a polled job of `org` that ended at `now`.
pub(super) fn job_ended(org: &str, job_id: &str, kind: Kind, now: i64) -> Event<'static> {
    Event {
        ts_ms: Some(now),
        org: org.to_string().into(),
        app: Some("batch".into()),
        kind,
        status: None,
        job_id: Some(job_id.to_string().into()),
        retry_after_ms: None,
        error_code: None,
        tokens: None,
        input_tokens: None,
        output_tokens: None,
        images: None,
        latency_ms: None,
        request_id: None,
        upstream: Vec::new(),
        model: None,
        batch: false,
    }
}
