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
///
/// `{"orgs": [...]}`, each org as [`org`] gives it, in the order `each` hands them over;
/// written an org at a time, the bytes `serde_json::to_vec` gives for the whole tree.
pub fn usage_body(
    grants: &HashMap<Arc<str>, (u64, u64)>,
    each: impl FnOnce(&mut dyn FnMut(OrgSnapshot)),
) -> serde_json::Result<Vec<u8>> {
    let mut out = vec![b'{'];
    key(&mut out, "orgs", true)?;
    write_orgs(&mut out, each, |o| {
        org(o, grants.get(&o.org).copied().unwrap_or_default())
    })?;
    out.push(b'}');
    Ok(out)
}

/// Appends the JSON array of `value` of each org `each` hands over, one at a time: the bytes
/// `serde_json::to_vec` gives for the whole array, but an answer of 10 000 orgs never holds
/// all their JSON trees at once. After an error the rest are skipped and it is returned.
pub(super) fn write_orgs(
    out: &mut Vec<u8>,
    each: impl FnOnce(&mut dyn FnMut(OrgSnapshot)),
    value: impl Fn(&OrgSnapshot) -> Value,
) -> serde_json::Result<()> {
    out.push(b'[');
    let mut result = Ok(());
    let mut first = true;
    each(&mut |o| {
        if result.is_err() {
            return;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        result = serde_json::to_writer(&mut *out, &value(&o));
    });
    out.push(b']');
    result
}

/// Appends `"key":` (after a comma unless `first`) to the object being written into `out`.
pub(super) fn key(out: &mut Vec<u8>, key: &str, first: bool) -> serde_json::Result<()> {
    if !first {
        out.push(b',');
    }
    serde_json::to_writer(&mut *out, key)?;
    out.push(b':');
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::events::{ParseContext, parse_event};
    use crate::tracker::{Tracker, View};

    #[test]
    fn the_usage_answer_written_org_by_org_is_the_whole_tree_written_at_once() {
        let config = Config::parse(
            "[tiers.t]\nrpm = 10\nconcurrency = 2\n[[tiers.t.models]]\nmatch = [\"m\"]\nrpm = 2\n[[orgs]]\nid = \"acme\"\ntier = \"t\"\n",
            "t.toml",
        )
        .unwrap();
        let mut t = Tracker::new(&config);
        let mut out = Vec::new();
        let ctx = ParseContext::default();
        for line in [
            r#"{"ts":1000,"org":"acme","app":"a","model":"m","status":200}"#,
            r#"{"ts":2000,"org":"acme","app":"b","status":429,"error_code":"insufficient_quota"}"#,
            r#"{"ts":3000,"org":"globex","app":"a","status":202,"job_id":"j1"}"#,
            r#"{"ts":4000,"org":"initech","app":"\u00e9\"x","status":200,"tokens":5}"#,
        ] {
            let ev = parse_event(line.as_bytes(), &ctx).unwrap().event;
            t.apply(&ev, 4000, &mut out);
        }
        let orgs = t.snapshot_of(5000, 0, 100, View::Full);
        assert_eq!(orgs.len(), 3);
        let grants = HashMap::from([(Arc::from("globex"), (2, 1))]);
        let whole = json!({"orgs": orgs
            .iter()
            .map(|o| org(o, grants.get(&o.org).copied().unwrap_or_default()))
            .collect::<Vec<_>>()});
        let streamed = usage_body(&grants, |f| orgs.iter().cloned().for_each(f)).unwrap();
        assert_eq!(streamed, serde_json::to_vec(&whole).unwrap());
        let none = usage_body(&grants, |_| {}).unwrap();
        assert_eq!(none, br#"{"orgs":[]}"#);
    }
}
