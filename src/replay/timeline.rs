//! Usage over time for `replay --html`: per org and minute, the highest rpm, rolling-24 h and
//! concurrency usage seen, and the requests, 429s by cause, bursts and stuck jobs that began
//! in that minute.
//!
//! It only reads the tracker after each event (recorded only when `--html` asks, so a plain
//! replay pays nothing) and never decides anything: the 429 causes, bursts and stuck jobs are
//! the tracker's own counters, differenced, so the timeline adds up to the report's totals.

use std::collections::{BTreeMap, HashMap};
use std::io;

use serde_json::value::RawValue;

use crate::detect::Cause;
use crate::model::DailyWindow;
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
    /// Rolling 24 h or calendar day (`daily_window`).
    daily_window: DailyWindow,
}

/// The timeline of every org seen.
#[derive(Debug, Default)]
pub struct Timeline {
    orgs: HashMap<String, OrgLine>,
}

/// Points drawn per org at most: longer replays are drawn in wider steps (highest usage and
/// summed counts per step), so a month of minutes stays a file a browser opens quickly.
const MAX_POINTS: i64 = 1_500;

/// Numbers in the whole report at most (about 13 per point): with many orgs each gets fewer
/// points (never under [`MIN_POINTS`]), so the file stays tens of megabytes at 10 000 orgs.
const POINTS_BUDGET: i64 = 4_000_000;

/// Points per org at least, however many orgs.
const MIN_POINTS: i64 = 60;

/// Minutes the rolling 24 h spans, as the tracker's daily window counts them (its 1 441
/// one-minute buckets).
const DAILY_MINUTES: i64 = 1_441;

/// One org's series, as the report's script reads them.
#[derive(serde::Serialize)]
struct Series {
    step_minutes: i64,
    /// Start of each step, Unix seconds.
    t: Vec<i64>,
    rpm: Vec<u64>,
    daily: Vec<u64>,
    concurrency: Vec<u64>,
    requests: Vec<u64>,
    rate_limited: BTreeMap<&'static str, Vec<u64>>,
    bursts: Vec<u64>,
    stuck: Vec<u64>,
    rpm_limit: u64,
    daily_limit: u64,
}

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
        line.daily_window = load.limits.daily_window;
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

    /// Per org, its series as JSON: `{"step_minutes", "t": [unix s], "rpm", "daily",
    /// "concurrency", "requests", "rate_limited": {cause: [...]}, "bursts", "stuck",
    /// "rpm_limit", "daily_limit"}`, every minute from the org's first to its last, in steps
    /// of `step_minutes`.
    ///
    /// Usage is sampled when the org has an event; a quiet minute still has usage, from what
    /// came before: the rolling 24 h is the sum of the requests of the last 1 441 minutes (as
    /// the tracker counts it; a calendar day's, of the minutes since its reset), the rolling minute at least the previous minute's requests
    /// (what its window holds as the quiet minute starts), and jobs in flight stay as they
    /// were last seen.
    pub fn series(&self) -> io::Result<BTreeMap<String, Box<RawValue>>> {
        let orgs = i64::try_from(self.orgs.len().max(1)).unwrap_or(i64::MAX);
        let max_points = (POINTS_BUDGET / 13 / orgs).clamp(MIN_POINTS, MAX_POINTS);
        let mut out = BTreeMap::new();
        for (org, line) in &self.orgs {
            let (Some((&first, _)), Some((&last, _))) = (
                line.minutes.first_key_value(),
                line.minutes.last_key_value(),
            ) else {
                continue;
            };
            let span = last - first + 1;
            let step = (span + max_points - 1) / max_points;
            let steps = usize::try_from((span + step - 1) / step).unwrap_or(0);
            let mut agg = vec![Minute::default(); steps];
            // Requests of the last DAILY_MINUTES minutes, or of the calendar day so far (its
            // end in ms; the next day's bounds are looked up only when it ends).
            let mut day_sum = 0u64;
            let mut day_end = i64::MIN;
            let (mut prev_requests, mut in_flight) = (0u64, 0u64);
            let quiet = Minute::default();
            let requests_at = |minute: i64| line.minutes.get(&minute).map_or(0, |m| m.requests);
            for minute in first..=last {
                let seen = line.minutes.get(&minute);
                let m = seen.unwrap_or(&quiet);
                let at_ms = minute.saturating_mul(60_000);
                match line.daily_window {
                    DailyWindow::Rolling => {
                        day_sum += m.requests;
                        day_sum -= requests_at(minute - DAILY_MINUTES);
                    }
                    calendar => {
                        if at_ms >= day_end {
                            day_sum = 0;
                            day_end = calendar.day_of(at_ms).map_or(i64::MAX, |d| d.1);
                        }
                        day_sum += m.requests;
                    }
                }
                if seen.is_some() {
                    in_flight = m.concurrency;
                }
                let Some(a) = usize::try_from((minute - first) / step)
                    .ok()
                    .and_then(|i| agg.get_mut(i))
                else {
                    continue;
                };
                a.rpm = a.rpm.max(m.rpm).max(prev_requests);
                a.daily = a.daily.max(m.daily).max(day_sum);
                a.concurrency = a.concurrency.max(m.concurrency).max(in_flight);
                a.requests += m.requests;
                for (x, y) in a.rate_limited.iter_mut().zip(m.rate_limited) {
                    *x += y;
                }
                a.bursts += m.bursts;
                a.stuck += m.stuck;
                prev_requests = m.requests;
            }
            let col = |f: fn(&Minute) -> u64| agg.iter().map(f).collect::<Vec<_>>();
            let series = Series {
                step_minutes: step,
                t: (0..steps as i64).map(|i| (first + i * step) * 60).collect(),
                rpm: col(|m| m.rpm),
                daily: col(|m| m.daily),
                concurrency: col(|m| m.concurrency),
                requests: col(|m| m.requests),
                rate_limited: Cause::ALL
                    .iter()
                    .map(|c| {
                        (
                            c.as_str(),
                            agg.iter().map(|m| m.rate_limited[c.index()]).collect(),
                        )
                    })
                    .collect(),
                bursts: col(|m| m.bursts),
                stuck: col(|m| m.stuck),
                rpm_limit: line.rpm_limit,
                daily_limit: line.daily_limit,
            };
            out.insert(
                org.clone(),
                RawValue::from_string(serde_json::to_string(&series)?)?,
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn series_of(lines: &[String]) -> serde_json::Value {
        series_with(&Config::default(), lines)
    }

    fn series_with(config: &Config, lines: &[String]) -> serde_json::Value {
        let mut r = super::super::Replayer::new(config, 0).unwrap();
        r.apply.timeline = Some(Timeline::default());
        for l in lines {
            r.line(l.as_bytes()).unwrap();
        }
        let report = r.finish().unwrap();
        let t = report.timeline.as_ref().unwrap().series().unwrap();
        serde_json::from_str(t["gap"].get()).unwrap()
    }

    #[test]
    fn quiet_minutes_keep_the_usage_their_windows_still_hold() {
        let mut lines: Vec<String> = (0..10)
            .map(|i| {
                format!(
                    "{{\"ts\":\"2026-11-27T14:00:{:02}Z\",\"org\":\"gap\",\"status\":200}}",
                    i * 5
                )
            })
            .collect();
        lines.push("{\"ts\":\"2026-11-27T14:10:00Z\",\"org\":\"gap\",\"status\":429}".into());
        let s = series_of(&lines);
        assert_eq!(s["step_minutes"], 1);
        assert_eq!(s["t"].as_array().unwrap().len(), 11);
        assert_eq!(
            s["daily"],
            serde_json::json!([10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 11])
        );
        assert_eq!(
            s["rpm"][1], 10,
            "the minute after still holds the last minute's requests"
        );
        assert_eq!(s["rpm"][5], 0);
        let requests: u64 = s["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(requests, 11);
        let limited: u64 = s["rate_limited"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| {
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n.as_u64().unwrap())
                    .sum::<u64>()
            })
            .sum();
        assert_eq!(limited, 1);
    }

    #[test]
    fn long_spans_are_drawn_in_wider_steps_that_keep_the_peaks() {
        let lines: Vec<String> = (0..3)
            .map(|d| {
                format!(
                    "{{\"ts\":\"2026-11-{:02}T10:00:00Z\",\"org\":\"gap\",\"status\":200}}",
                    1 + d * 20
                )
            })
            .collect();
        let s = series_of(&lines);
        let step = s["step_minutes"].as_i64().unwrap();
        assert!(step > 1);
        let points = s["t"].as_array().unwrap().len() as i64;
        assert!(points <= MAX_POINTS, "{points}");
        let daily = s["daily"].as_array().unwrap();
        assert_eq!(daily.iter().map(|v| v.as_u64().unwrap()).max(), Some(1));
        // A day after each request its rolling 24 h is empty again.
        assert!(daily.iter().any(|v| v == 0));
    }

    #[test]
    fn a_calendar_day_starts_again_at_its_reset_in_quiet_minutes_too() {
        let config = Config::parse(
            "[tiers.cal]\ndaily = 10\ndaily_window = \"calendar\"\ndaily_timezone = \"America/Los_Angeles\"\n\
             [[orgs]]\nid = \"gap\"\ntier = \"cal\"\n",
            "t.toml",
        )
        .unwrap();
        // Midnight Pacific is 08:00Z: two requests before it, one well after.
        let lines: Vec<String> = ["07:58:00", "07:59:00", "08:03:00"]
            .iter()
            .map(|t| format!("{{\"ts\":\"2026-01-16T{t}Z\",\"org\":\"gap\",\"status\":200}}"))
            .collect();
        let s = series_with(&config, &lines);
        assert_eq!(
            s["daily"],
            serde_json::json!([1, 2, 0, 0, 0, 1]),
            "quiet minutes after the reset hold nothing of the day before"
        );
    }
}
