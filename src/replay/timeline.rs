//! Usage over time for `replay --html`: per org and minute, the highest rpm, rolling-24 h and
//! concurrency usage seen, and the requests, 429s by cause, bursts and stuck jobs that began
//! in that minute.
//!
//! It only reads the tracker after each event (recorded only when `--html` asks, so a plain
//! replay pays nothing) and never decides anything: the 429 causes, bursts and stuck jobs are
//! the tracker's own counters, differenced, so the timeline adds up to the report's totals.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

use crate::detect::Cause;
use crate::tracker::{OrgReport, Tracker};

/// One minute of one org.
#[derive(Debug, Clone, Default)]
struct Minute {
    rpm: u64,
    daily: u64,
    concurrency: u64,
    requests: u64,
    rate_limited: [u64; Cause::ALL.len()],
    bursts: u64,
    stuck: u64,
}

/// One org's minutes, and its totals at the last event (to difference the next).
#[derive(Debug, Default)]
struct OrgLine {
    minutes: BTreeMap<i64, Minute>,
    last: Option<OrgReport>,
    rpm_limit: u64,
    daily_limit: u64,
}

/// The timeline of every org seen.
#[derive(Debug, Default)]
pub struct Timeline {
    orgs: HashMap<String, OrgLine>,
}

/// Points drawn per org at most: longer replays are drawn in wider steps (highest usage and
/// summed counts per step), so a month of minutes stays a file a browser opens quickly.
const MAX_POINTS: i64 = 1_500;

impl Timeline {
    /// Records what `org` looks like after an event at `ts` (event time), the replay clock
    /// being `now`.
    pub fn record(&mut self, tracker: &Tracker, org: &str, ts: i64, now: i64) {
        let Some((load, totals)) = tracker.glance(org, now) else {
            return;
        };
        let line = self.orgs.entry(org.to_string()).or_default();
        line.rpm_limit = load.limits.rpm;
        line.daily_limit = load.limits.daily;
        let m = line.minutes.entry(ts.div_euclid(60_000)).or_default();
        let before = line.last.as_ref();
        let diff = |now: u64, was: Option<u64>| now.saturating_sub(was.unwrap_or(0));
        m.requests += diff(totals.requests, before.map(|b| b.requests));
        for (i, n) in m.rate_limited.iter_mut().enumerate() {
            *n += diff(totals.rate_limited[i], before.map(|b| b.rate_limited[i]));
        }
        m.bursts += diff(totals.bursts, before.map(|b| b.bursts));
        m.stuck += diff(totals.stuck_jobs, before.map(|b| b.stuck_jobs));
        // Usage is judged at the replay clock; it belongs to the minute the clock is in.
        let u = line.minutes.entry(now.div_euclid(60_000)).or_default();
        u.rpm = u.rpm.max(load.rpm);
        u.daily = u.daily.max(load.daily);
        u.concurrency = u.concurrency.max(load.in_flight);
        line.last = Some(totals);
    }

    /// Per org: `{"step_minutes", "t": [unix s], "rpm", "daily", "concurrency", "requests",
    /// "rate_limited": {cause: [...]}, "bursts", "stuck", "rpm_limit", "daily_limit"}`, every
    /// minute from the org's first to its last (quiet minutes as zero), in steps of
    /// `step_minutes`.
    pub fn to_json(&self) -> BTreeMap<String, Value> {
        self.orgs
            .iter()
            .filter_map(|(org, line)| {
                let (&first, _) = line.minutes.first_key_value()?;
                let (&last, _) = line.minutes.last_key_value()?;
                let step = ((last - first + 1) + MAX_POINTS - 1) / MAX_POINTS;
                let steps = usize::try_from((last - first) / step + 1).unwrap_or(0);
                let mut agg = vec![Minute::default(); steps];
                for (&minute, m) in &line.minutes {
                    let Some(a) = usize::try_from((minute - first) / step)
                        .ok()
                        .and_then(|i| agg.get_mut(i))
                    else {
                        continue;
                    };
                    a.rpm = a.rpm.max(m.rpm);
                    a.daily = a.daily.max(m.daily);
                    a.concurrency = a.concurrency.max(m.concurrency);
                    a.requests += m.requests;
                    for (x, y) in a.rate_limited.iter_mut().zip(m.rate_limited) {
                        *x += y;
                    }
                    a.bursts += m.bursts;
                    a.stuck += m.stuck;
                }
                let col = |f: fn(&Minute) -> u64| agg.iter().map(f).collect::<Vec<_>>();
                let causes: serde_json::Map<String, Value> = Cause::ALL
                    .iter()
                    .map(|c| {
                        (
                            c.as_str().to_string(),
                            json!(
                                agg.iter()
                                    .map(|m| m.rate_limited[c.index()])
                                    .collect::<Vec<_>>()
                            ),
                        )
                    })
                    .collect();
                let t: Vec<i64> = (0..steps as i64).map(|i| (first + i * step) * 60).collect();
                Some((
                    org.clone(),
                    json!({
                        "step_minutes": step,
                        "t": t,
                        "rpm": col(|m| m.rpm),
                        "daily": col(|m| m.daily),
                        "concurrency": col(|m| m.concurrency),
                        "requests": col(|m| m.requests),
                        "rate_limited": causes,
                        "bursts": col(|m| m.bursts),
                        "stuck": col(|m| m.stuck),
                        "rpm_limit": line.rpm_limit,
                        "daily_limit": line.daily_limit,
                    }),
                ))
            })
            .collect()
    }
}
