//! JSON answers of `/v1/usage` and `/v1/alerts` (SPEC §11).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::detect::Transition;
use crate::model::Dimension;
use crate::offpeak::OffPeak;
use crate::tracker::OrgSnapshot;

/// `GET /v1/usage`; `grants` holds each org's admission grants not yet completed by their
/// events and the job leases among them.
pub fn usage(orgs: &[OrgSnapshot], grants: &HashMap<Arc<str>, (u64, u64)>) -> Value {
    json!({"orgs": orgs.iter().map(|o| org(o, grants.get(&o.org).copied().unwrap_or_default())).collect::<Vec<_>>()})
}

pub(super) fn org(o: &OrgSnapshot, (reservations, leases): (u64, u64)) -> Value {
    let obj = |pairs: Vec<(String, Value)>| Value::Object(pairs.into_iter().collect::<Map<_, _>>());
    let limits = per_dimension(&o.limits);
    let usage = per_dimension(&o.usage);
    let utilization = utilization(&o.limits, &o.usage);
    let headroom = per_dimension(&o.headroom_seconds);
    let sources = sources(&o.limits, |d| {
        if o.learned.contains(&d) {
            "upstream"
        } else {
            "config"
        }
    });
    let upstream = obj(o
        .upstream
        .iter()
        .map(|u| {
            let v = json!({
                "limit": u.limit,
                "remaining": u.remaining,
                "drift": u.drift,
                "reset_at": u.reset_at_ms.map(crate::clock::rfc3339),
            });
            (u.dimension.to_string(), v)
        })
        .collect());
    json!({
        "org": &*o.org,
        "tier": &*o.tier,
        "limits": limits,
        "sources": sources,
        "upstream": upstream,
        "usage": usage,
        "utilization": utilization,
        "headroom_seconds": headroom,
        "apps": o.apps.iter().map(|a| json!({
            "app": &*a.app, "rpm": a.rpm, "daily": a.daily, "in_flight": a.in_flight,
        })).collect::<Vec<_>>(),
        "stuck_jobs": o.stuck_jobs.iter().map(|j| json!({
            "job_id": j.job_id, "app": &*j.app, "age_seconds": j.age_seconds,
        })).collect::<Vec<_>>(),
        "admission": {"reservations": reservations, "leases": leases},
        "models": o.models.iter().map(model).collect::<Vec<_>>(),
    })
}

/// One model scope of an org in `/v1/usage`.
fn model(m: &crate::tracker::ScopeSnapshot) -> Value {
    json!({
        "model": &*m.model,
        "match": m.models.iter().map(|s| &**s).collect::<Vec<_>>(),
        "limits": per_dimension(&m.limits),
        "sources": sources(&m.limits, |d| match &m.source {
            Some(s) if m.sourced.contains(&d) => s,
            _ => "config",
        }),
        "usage": per_dimension(&m.usage),
        "utilization": utilization(&m.limits, &m.usage),
        "headroom_seconds": per_dimension(&m.headroom_seconds),
        "rate_limited": m.rate_limited.iter().map(|(app, counts)| {
            let causes: Map<_, _> = crate::detect::Cause::ALL
                .into_iter()
                .filter(|c| counts[c.index()] > 0)
                .map(|c| (c.as_str().to_string(), json!(counts[c.index()])))
                .collect();
            (app.to_string(), Value::Object(causes))
        }).collect::<Map<_, _>>(),
    })
}

/// `{"rpm": value, ...}` of per-dimension values.
fn per_dimension<T: serde::Serialize>(values: &[(Dimension, T)]) -> Value {
    Value::Object(
        values
            .iter()
            .map(|(d, v)| (d.to_string(), json!(v)))
            .collect(),
    )
}

/// Usage over limit of each limited dimension.
fn utilization(limits: &[(Dimension, u64)], usage: &[(Dimension, u64)]) -> Value {
    let used = |d| usage.iter().find(|(x, _)| *x == d).map_or(0, |(_, v)| *v);
    Value::Object(
        limits
            .iter()
            .map(|&(d, l)| (d.to_string(), json!(used(d) as f64 / l as f64)))
            .collect(),
    )
}

/// Where each limit comes from (`from`: `config`, `upstream`, a limit source's name).
fn sources<'a>(limits: &[(Dimension, u64)], from: impl Fn(Dimension) -> &'a str) -> Value {
    Value::Object(
        limits
            .iter()
            .map(|&(d, _)| (d.to_string(), json!(from(d))))
            .collect(),
    )
}

/// One entry of `GET /v1/alerts`: the notification body of the alert's current state.
pub fn alert(t: &Transition) -> Value {
    crate::alerts::render::json(t)
}

/// `GET /v1/offpeak` (and the status page's `offpeak`): whether a window is open at `now`,
/// the next opening and closing, and the zone.
pub fn offpeak(o: &OffPeak, now: i64) -> Value {
    let s = o.status(now);
    json!({
        "open": s.open,
        "next_open": s.next_open.map(crate::clock::rfc3339),
        "next_close": s.next_close.map(crate::clock::rfc3339),
        "timezone": o.tz.name(),
    })
}
