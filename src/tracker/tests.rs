//! Tracker behaviour through its public surface, with explicit times.

use super::*;
use crate::detect::alerts::AlertKey;
use crate::detect::{Cause, Status, Transition};
use crate::events::{ParseContext, parse_event};
use crate::model::Dimension;
use crate::model::{AlertName, Severity};
use std::collections::BTreeMap;
use std::collections::HashMap;

const T0: i64 = 1_795_788_000_000; // 2026-11-27T14:00:00Z

fn config(extra: &str) -> Config {
    Config::parse(
        &format!(
            "[tiers.t10]\nrpm = 10\nconcurrency = 2\ndaily = 20\n\n[[orgs]]\nid = \"acme\"\ntier = \"t10\"\n{extra}"
        ),
        "test.toml",
    )
    .unwrap()
}

/// Applies one JSON event at `now` (the event's own `ts` if it has one).
pub(super) fn feed(t: &mut Tracker, json: &str, now: i64) -> Vec<Transition> {
    let ev = parse_event(json.as_bytes(), &ParseContext::default())
        .unwrap()
        .event;
    let mut out = Vec::new();
    t.apply(&ev, now, &mut out);
    out
}

/// Feeds a job event (`kind` `job_started`, `job_completed`, …) of `org` at `ts`.
fn job(t: &mut Tracker, org: &str, kind: &str, id: &str, ts: i64) -> Vec<Transition> {
    feed(
        t,
        &format!(r#"{{"org":"{org}","ts":{ts},"kind":"{kind}","job_id":"{id}"}}"#),
        T0,
    )
}

fn req(t: &mut Tracker, org: &str, ts: i64, status: u16) -> Vec<Transition> {
    feed(
        t,
        &format!(r#"{{"org":"{org}","ts":{ts},"status":{status}}}"#),
        ts,
    )
}

fn org<'a>(snap: &'a [OrgSnapshot], name: &str) -> &'a OrgSnapshot {
    snap.iter().find(|o| &*o.org == name).unwrap()
}

fn causes(t: &Tracker, name: &str) -> [u64; 6] {
    let all = t
        .report()
        .into_iter()
        .find(|r| &*r.org == name)
        .unwrap()
        .rate_limited;
    all[..6].try_into().unwrap()
}

fn fired(out: &[Transition], alert: AlertName) -> Vec<(Status, &'static str)> {
    out.iter()
        .filter(|t| t.alert == alert && t.notify)
        .map(|t| (t.status, t.severity.as_str()))
        .collect()
}

#[test]
fn every_request_counts_whatever_its_status() {
    let mut t = Tracker::new(&config(""));
    for (i, status) in [200, 429, 500, 404].into_iter().enumerate() {
        req(&mut t, "acme", T0 + i as i64 * 20_000, status);
    }
    feed(&mut t, r#"{"org":"acme","ts":1795788061000}"#, T0 + 61_000);
    let s = t.snapshot(T0 + 61_000);
    let a = org(&s, "acme");
    assert_eq!(
        a.usage_of(Dimension::Rpm),
        Some(4),
        "t0+20 .. t0+61 (conservative 61 s)"
    );
    assert_eq!(a.usage_of(Dimension::Daily), Some(5));
    assert_eq!(a.apps[0].requests, [1, 1, 1, 1, 1]);
}

#[test]
fn cause_concurrency() {
    let mut t = Tracker::new(&config(""));
    feed(
        &mut t,
        &format!(r#"{{"org":"acme","ts":{T0},"status":202,"job_id":"a"}}"#),
        T0,
    );
    feed(
        &mut t,
        &format!(
            r#"{{"org":"acme","ts":{},"status":202,"job_id":"b"}}"#,
            T0 + 20_000
        ),
        T0,
    );
    req(&mut t, "acme", T0 + 40_000, 429);
    assert_eq!(causes(&t, "acme")[Cause::Concurrency.index()], 1);
}

#[test]
fn cause_rpm_counts_prior_requests_only() {
    let mut t = Tracker::new(&config(""));
    for i in 0..9 {
        req(&mut t, "acme", T0 + i * 5_000, 200);
    }
    req(&mut t, "acme", T0 + 50_000, 429);
    assert_eq!(
        causes(&t, "acme")[Cause::Unexplained.index()],
        1,
        "9 prior < 10: not rpm"
    );
    req(&mut t, "acme", T0 + 55_000, 429);
    assert_eq!(
        causes(&t, "acme")[Cause::Rpm.index()],
        1,
        "10 prior (the 429 counts too)"
    );
}

#[test]
fn cause_daily_quota_and_burst() {
    let mut t = Tracker::new(&config(""));
    // 20 requests spread over hours: daily limit 20 reached, rpm and bursts quiet.
    for i in 0..20 {
        req(&mut t, "acme", T0 + i * 600_000, 200);
    }
    let end = T0 + 20 * 600_000;
    req(&mut t, "acme", end, 429);
    assert_eq!(causes(&t, "acme")[Cause::Daily.index()], 1);
    feed(
        &mut t,
        &format!(
            r#"{{"org":"acme","ts":{},"status":429,"error_code":"insufficient_quota"}}"#,
            end + 60_000
        ),
        end,
    );
    assert_eq!(causes(&t, "acme")[Cause::Quota.index()], 1);

    // Burst: threshold for 10 rpm, W 10 s, factor 3 is 5; 5 prior within 10 s, rpm below 10.
    let mut b = Tracker::new(&config("[[orgs]]\nid = \"b\"\ntier = \"t10\"\ndaily = 0\n"));
    for i in 0..5 {
        req(&mut b, "b", T0 + i * 1_000, 200);
    }
    req(&mut b, "b", T0 + 5_000, 429);
    assert_eq!(causes(&b, "b")[Cause::Burst.index()], 1);
}

#[test]
fn burst_episodes_at_and_one_below_the_threshold() {
    let mut t = Tracker::new(&config(""));
    // acme: threshold 5 within 10 s.
    let mut out = Vec::new();
    for i in 0..4 {
        out.extend(req(&mut t, "acme", T0 + i * 2_000, 200));
    }
    assert!(fired(&out, AlertName::BurstDetected).is_empty(), "4 of 5");
    out.extend(req(&mut t, "acme", T0 + 8_000, 200));
    assert_eq!(
        fired(&out, AlertName::BurstDetected),
        vec![(Status::Firing, "warning")]
    );
    let mut tick = Vec::new();
    t.tick(T0 + 10_000, &mut tick);
    assert_eq!(
        fired(&tick, AlertName::BurstDetected),
        vec![(Status::Resolved, "warning")]
    );
    assert_eq!(t.report()[0].bursts, 1);
}

#[test]
fn unconfigured_org_gets_the_default_tier_and_overflow_past_max_orgs() {
    let mut t = Tracker::new(&config("[limits]\nmax_orgs = 2\nmax_apps_per_org = 1\n"));
    req(&mut t, "new-1", T0, 200);
    req(&mut t, "new-2", T0, 200);
    req(&mut t, "new-3", T0, 200);
    feed(
        &mut t,
        &format!(r#"{{"org":"new-1","app":"second","ts":{T0}}}"#),
        T0,
    );
    let s = t.snapshot(T0);
    let names: Vec<_> = s.iter().map(|o| o.org.to_string()).collect();
    assert_eq!(
        names,
        vec!["acme", "new-1", "__overflow__"],
        "acme is configured and counts"
    );
    assert_eq!(&*org(&s, "new-1").tier, "plus");
    assert_eq!(org(&s, "new-1").limit_of(Dimension::Rpm), Some(5));
    assert_eq!(org(&s, "__overflow__").usage_of(Dimension::Rpm), Some(2));
    assert!(org(&s, "__overflow__").limits.is_empty(), "no limits");
    let apps: Vec<_> = org(&s, "new-1")
        .apps
        .iter()
        .map(|a| a.app.to_string())
        .collect();
    assert_eq!(apps, vec!["default", "__overflow__"]);
    assert_eq!(
        t.overflow(),
        Overflow {
            orgs: 2,
            apps: 1,
            jobs: 0
        }
    );
}

#[test]
fn new_orgs_per_second_are_bounded_and_counted() {
    let mut t = Tracker::new(&config("[limits]\nmax_new_orgs_per_second = 3\n"));
    t.note_clock(T0);
    let mut out = Vec::new();
    for i in 0..10 {
        out.extend(feed(
            &mut t,
            &format!(r#"{{"org":"new-{i}","ts":{T0},"kind":"job_started","job_id":"j{i}"}}"#),
            T0,
        ));
    }
    let s = t.snapshot(T0);
    let names: Vec<&str> = s.iter().map(|o| &*o.org).collect();
    assert_eq!(
        names,
        vec!["acme", "new-0", "new-1", "new-2", "__overflow__"]
    );
    assert_eq!(t.new_orgs_refused(), 7);
    assert_eq!(t.overflow().orgs, 0, "not past max_orgs");
    // Each created org's first job fills its one concurrency slot: 3 alerts, not 10.
    assert_eq!(
        out.iter()
            .filter(|x| x.alert == AlertName::UsageHigh)
            .count(),
        3
    );
    // Known orgs keep counting; the next second admits new ones again.
    req(&mut t, "new-1", T0 + 10, 200);
    t.note_clock(T0 + 1_000);
    req(&mut t, "new-9", T0 + 1_000, 200);
    let s = t.snapshot(T0 + 1_000);
    assert_eq!(org(&s, "new-1").usage_of(Dimension::Rpm), Some(1));
    assert_eq!(org(&s, "new-9").usage_of(Dimension::Rpm), Some(1));
    // Without a clock (replay) event time decides the second.
    let mut r = Tracker::new(&config("[limits]\nmax_new_orgs_per_second = 1\n"));
    req(&mut r, "a", T0, 200);
    req(&mut r, "b", T0 + 10, 200);
    req(&mut r, "c", T0 + 1_000, 200);
    assert_eq!(r.new_orgs_refused(), 1);
    assert!(r.snapshot(T0 + 1_000).iter().any(|o| &*o.org == "c"));
}

#[test]
fn overflow_org_raises_no_alerts() {
    let mut t = Tracker::new(&config("[limits]\nmax_orgs = 1\n"));
    let mut out = Vec::new();
    for i in 0..50 {
        out.extend(req(&mut t, "flood", T0 + i, 429));
    }
    assert!(out.is_empty(), "{out:?}");
}

/// A job stuck and released between two ticks (a replay's minute ticks over a quiet
/// stretch, `release_after` under a minute after `stuck_after`) is still alerted on: firing
/// and resolved at the tick that finds it past both, not nothing.
#[test]
fn a_job_stuck_and_released_between_ticks_still_alerts() {
    let mut t = Tracker::new(&config(
        "[detect]\nstuck_after = \"30s\"\nrelease_after = \"50s\"\n",
    ));
    feed(
        &mut t,
        &format!(r#"{{"org":"acme","ts":{T0},"status":202,"job_id":"j1"}}"#),
        T0,
    );
    let mut out = Vec::new();
    t.tick(T0 + 60_000, &mut out);
    assert_eq!(
        fired(&out, AlertName::JobsStuck),
        vec![(Status::Firing, "warning"), (Status::Resolved, "warning")]
    );
    assert!(out.iter().all(|t| t.ts_ms == T0 + 60_000), "{out:?}");
    let s = t.snapshot(T0 + 60_000);
    assert_eq!(org(&s, "acme").jobs_in_flight, 0, "released");
    // Past only the first deadline, it fires once and stays firing.
    feed(
        &mut t,
        &format!(
            r#"{{"org":"acme","ts":{},"status":202,"job_id":"j2"}}"#,
            T0 + 61_000
        ),
        T0 + 61_000,
    );
    out.clear();
    t.tick(T0 + 100_000, &mut out);
    assert_eq!(
        fired(&out, AlertName::JobsStuck),
        vec![(Status::Firing, "warning")]
    );
}

#[test]
fn jobs_stuck_then_released_with_alert() {
    let mut t = Tracker::new(&config(
        "[detect]\nstuck_after = \"10m\"\nrelease_after = \"30m\"\n",
    ));
    feed(
        &mut t,
        &format!(r#"{{"org":"acme","app":"bot","ts":{T0},"status":202,"job_id":"j1"}}"#),
        T0,
    );
    let mut out = Vec::new();
    t.tick(T0 + 599_999, &mut out);
    assert!(out.is_empty());
    t.tick(T0 + 600_000, &mut out);
    assert_eq!(
        fired(&out, AlertName::JobsStuck),
        vec![(Status::Firing, "warning")]
    );
    let s = t.snapshot(T0 + 700_000);
    let a = org(&s, "acme");
    assert_eq!(a.jobs_stuck, 1);
    assert_eq!(a.stuck_jobs[0].job_id, "j1");
    assert_eq!(&*a.stuck_jobs[0].app, "bot");
    assert_eq!(a.stuck_jobs[0].age_seconds, 700);
    out.clear();
    t.tick(T0 + 1_800_000, &mut out);
    assert_eq!(
        fired(&out, AlertName::JobsStuck),
        vec![(Status::Resolved, "warning")]
    );
    let s = t.snapshot(T0 + 1_800_000);
    let a = org(&s, "acme");
    assert_eq!(a.jobs_in_flight, 0, "released");
    assert_eq!(a.jobs_finished[JobOutcome::TimedOut as usize], 1);
    assert_eq!(a.apps[0].in_flight, 0);
    assert_eq!(t.report()[0].stuck_jobs, 1);
    // A late finishing event for a released job changes nothing.
    job(&mut t, "acme", "job_completed", "j1", T0 + 1_900_000);
    assert_eq!(
        t.snapshot(T0)[0].jobs_finished[JobOutcome::Completed as usize],
        0
    );
}

#[test]
fn job_lifecycle_events_and_durations() {
    let mut t = Tracker::new(&config(""));
    feed(
        &mut t,
        &format!(r#"{{"org":"acme","kind":"job_started","job_id":"x","ts":{T0}}}"#),
        T0,
    );
    feed(
        &mut t,
        &format!(r#"{{"org":"acme","ts":{T0},"status":200,"job_id":"y"}}"#),
        T0,
    );
    feed(
        &mut t,
        &format!(r#"{{"org":"acme","ts":{T0},"status":429,"job_id":"z"}}"#),
        T0,
    );
    let s = t.snapshot(T0);
    assert_eq!(
        org(&s, "acme").jobs_in_flight,
        2,
        "a 429 with a job_id starts nothing"
    );
    assert_eq!(
        org(&s, "acme").usage_of(Dimension::Rpm),
        Some(2),
        "job_started is not a request"
    );
    job(&mut t, "acme", "job_failed", "x", T0 + 42_000);
    job(&mut t, "acme", "job_cancelled", "y", T0 + 1_000);
    let s = t.snapshot(T0);
    let a = org(&s, "acme");
    assert_eq!(a.jobs_in_flight, 0);
    assert_eq!(a.jobs_finished, [0, 1, 1, 0]);
    assert_eq!(a.job_duration.count(), 2);
    assert_eq!(a.job_duration.sum, 43.0);
    assert_eq!(a.job_duration.counts[0], 1, "1 s job in the le=1 bucket");
}

#[test]
fn usage_high_with_hysteresis_through_the_tracker() {
    // Concurrency limit 20: 14 jobs = 70 %, 13 = 65 % (holds), 12 = 60 % (resolves).
    let mut t = Tracker::new(&config(
        "[tiers.c20]\nconcurrency = 20\n[[orgs]]\nid = \"c\"\ntier = \"c20\"\n",
    ));
    let mut out = Vec::new();
    let start = |t: &mut Tracker, id: u32| {
        feed(
            t,
            &format!(r#"{{"org":"c","ts":{T0},"status":202,"job_id":"j{id}"}}"#),
            T0,
        )
    };
    let done = |t: &mut Tracker, id: u32| {
        feed(
            t,
            &format!(r#"{{"org":"c","ts":{T0},"kind":"job_completed","job_id":"j{id}"}}"#),
            T0,
        )
    };
    for i in 0..13 {
        out.extend(start(&mut t, i));
    }
    assert!(
        fired(&out, AlertName::UsageHigh).is_empty(),
        "65 %: one below the threshold"
    );
    out.extend(start(&mut t, 13));
    assert_eq!(
        fired(&out, AlertName::UsageHigh),
        vec![(Status::Firing, "warning")],
        "70 %"
    );
    out.clear();
    // 70 → 65 → 70 → 65 …: inside the band, no new notification.
    for _ in 0..3 {
        out.extend(done(&mut t, 13));
        out.extend(start(&mut t, 13));
    }
    out.extend(done(&mut t, 13));
    assert!(out.is_empty(), "no flapping: {out:?}");
    for i in 13..18 {
        out.extend(start(&mut t, i));
    }
    assert_eq!(
        fired(&out, AlertName::UsageHigh),
        vec![(Status::Firing, "critical")],
        "90 %"
    );
    assert_eq!(t.active_alerts(T0).len(), 1);
    out.clear();
    // 17 jobs = 85 %: critical holds (90 − 5); 16 = 80 %: silently back to warning.
    out.extend(done(&mut t, 17));
    assert!(out.is_empty(), "{out:?}");
    out.extend(done(&mut t, 16));
    assert!(
        fired(&out, AlertName::UsageHigh).is_empty(),
        "no notification for critical → warning"
    );
    assert_eq!(t.active_alerts(T0)[0].severity.as_str(), "warning");
    out.clear();
    for i in 0..16 {
        out.extend(done(&mut t, i));
    }
    assert_eq!(
        fired(&out, AlertName::UsageHigh),
        vec![(Status::Resolved, "warning")]
    );
    assert!(t.active_alerts(T0).is_empty());
}

#[test]
fn usage_falls_with_the_clock_and_resolves() {
    let mut t = Tracker::new(&config(""));
    let mut out = Vec::new();
    for i in 0..9 {
        out.extend(req(&mut t, "acme", T0 + i * 6_000, 200));
    }
    assert_eq!(
        fired(&out, AlertName::UsageHigh),
        vec![(Status::Firing, "warning"), (Status::Firing, "critical")]
    );
    out.clear();
    t.tick(T0 + 200_000, &mut out);
    assert_eq!(
        fired(&out, AlertName::UsageHigh),
        vec![(Status::Resolved, "critical")]
    );
}

#[test]
fn daily_quota_exhausted_fires_and_resolves() {
    let mut t = Tracker::new(&config(""));
    let mut out = Vec::new();
    for i in 0..20 {
        out.extend(req(&mut t, "acme", T0 + i * 600_000, 200));
    }
    assert_eq!(
        fired(&out, AlertName::DailyQuotaExhausted),
        vec![(Status::Firing, "critical")]
    );
    out.clear();
    t.tick(T0 + 24 * 3_600_000 + 1_300_000, &mut out); // 17 of 20 left: below 95 %
    assert_eq!(
        fired(&out, AlertName::DailyQuotaExhausted),
        vec![(Status::Resolved, "critical")]
    );
}

#[test]
fn retry_violations_and_storms_per_app() {
    let mut t = Tracker::new(&config("[detect]\nretry_storm_after = 3\n"));
    let mut out = Vec::new();
    for i in 0..3 {
        out.extend(feed(
            &mut t,
            &format!(
                r#"{{"org":"acme","app":"bot","ts":{},"status":429,"retry_after":30}}"#,
                T0 + i * 40_000
            ),
            T0,
        ));
    }
    // The 2nd and 3rd 429 came 40 s after a 30 s Retry-After: not violations.
    assert_eq!(t.report()[0].retry_violations, 0);
    assert_eq!(
        fired(&out, AlertName::RetryStorm),
        vec![(Status::Firing, "critical")]
    );
    assert_eq!(
        out.iter()
            .find(|x| x.alert == AlertName::RetryStorm)
            .unwrap()
            .app
            .as_deref(),
        Some("bot")
    );
    // Another app is not in violation; the same app 1 s later is.
    feed(
        &mut t,
        &format!(
            r#"{{"org":"acme","app":"other","ts":{},"status":200}}"#,
            T0 + 81_000
        ),
        T0,
    );
    out.clear();
    out.extend(feed(
        &mut t,
        &format!(
            r#"{{"org":"acme","app":"bot","ts":{},"status":200}}"#,
            T0 + 81_000
        ),
        T0,
    ));
    assert_eq!(t.report()[0].retry_violations, 1);
    assert_eq!(
        fired(&out, AlertName::RetryStorm),
        vec![(Status::Resolved, "critical")]
    );
}

#[test]
fn late_events_are_judged_at_their_own_time() {
    let mut t = Tracker::new(&config(""));
    // Ten requests a minute ago fill the rpm window of that time…
    for i in 0..10 {
        req(&mut t, "acme", T0 + i * 100, 200);
    }
    // …then the clock moves on two minutes with one request.
    req(&mut t, "acme", T0 + 120_000, 200);
    // A late 429 from back then is explained by rpm, as of then.
    req(&mut t, "acme", T0 + 1_000, 429);
    assert_eq!(causes(&t, "acme")[Cause::Rpm.index()], 1);
    // Live rpm now holds only the recent request (the late one is two minutes old).
    let s = t.snapshot(T0 + 120_000);
    assert_eq!(org(&s, "acme").usage_of(Dimension::Rpm), Some(1));
    assert_eq!(org(&s, "acme").usage_of(Dimension::Daily), Some(12));
}

#[test]
fn headroom_seconds() {
    let mut t = Tracker::new(&config(""));
    feed(
        &mut t,
        &format!(r#"{{"org":"acme","ts":{T0},"status":202,"job_id":"j1"}}"#),
        T0,
    );
    feed(
        &mut t,
        &format!(r#"{{"org":"acme","ts":{T0},"status":202,"job_id":"j2"}}"#),
        T0,
    );
    for i in 0..8 {
        req(&mut t, "acme", T0 + 10_000 + i, 200);
    }
    let s = t.snapshot(T0 + 20_000);
    let h: HashMap<_, _> = org(&s, "acme").headroom_seconds.iter().copied().collect();
    // The two at T0 leave the window (61 one-second buckets) at T0 + 61 s.
    assert_eq!(h[&Dimension::Rpm], Some(41));
    assert_eq!(h[&Dimension::Concurrency], None, "waits on a job");
    assert_eq!(h[&Dimension::Daily], Some(0));
    assert!(
        !h.contains_key(&Dimension::Tpm),
        "unlimited dimensions are left out"
    );
}

#[test]
fn tokens_are_tracked_when_sent() {
    let mut t = Tracker::new(&config(
        "[tiers.tok]\ntpm = 1000\n[[orgs]]\nid = \"tok\"\ntier = \"tok\"\n",
    ));
    let out = feed(
        &mut t,
        &format!(r#"{{"org":"tok","ts":{T0},"status":200,"tokens":950}}"#),
        T0,
    );
    assert!(
        out.iter()
            .any(|x| x.dimension == Some(Dimension::Tpm) && x.severity.as_str() == "critical")
    );
    feed(
        &mut t,
        &format!(r#"{{"org":"tok","ts":{T0},"status":200,"tokens":10}}"#),
        T0,
    );
    let s = t.snapshot(T0);
    assert_eq!(org(&s, "tok").usage_of(Dimension::Tpm), Some(960));
    assert_eq!(
        org(&s, "acme").usage_of(Dimension::Tpm),
        None,
        "no token windows without tokens"
    );
}

#[test]
fn job_cap_drops_the_oldest() {
    let mut t = Tracker::new(&config("[limits]\nmax_jobs_per_org = 3\n"));
    for i in 0..5 {
        feed(
            &mut t,
            &format!(
                r#"{{"org":"acme","ts":{},"status":202,"job_id":"j{i}"}}"#,
                T0 + i
            ),
            T0,
        );
    }
    // acme's concurrency limit is 2, so its cap is max(3, 2 × 2) = 4.
    let s = t.snapshot(T0);
    assert_eq!(org(&s, "acme").jobs_in_flight, 4);
    assert_eq!(org(&s, "acme").apps[0].in_flight, 4);
    assert_eq!(t.overflow().jobs, 1);
    // An org allowed more concurrency than the cap keeps twice its limit.
    let mut big = Tracker::new(&config(
        "[limits]\nmax_jobs_per_org = 3\n[tiers.wide]\nconcurrency = 4\n[[orgs]]\nid = \"w\"\ntier = \"wide\"\n",
    ));
    for i in 0..10 {
        feed(
            &mut big,
            &format!(
                r#"{{"org":"w","ts":{},"status":202,"job_id":"j{i}"}}"#,
                T0 + i
            ),
            T0,
        );
    }
    assert_eq!(org(&big.snapshot(T0), "w").jobs_in_flight, 8);
}

/// A tracker for an org `o` with the limits in `tier` (TOML body of `[tiers.x]`).
fn tracker_with(tier: &str) -> Tracker {
    Tracker::new(
        &Config::parse(
            &format!("[tiers.x]\n{tier}\n[[orgs]]\nid = \"o\"\ntier = \"x\"\n"),
            "t",
        )
        .unwrap(),
    )
}

fn reqs_at(t: &mut Tracker, times: &[i64]) -> Vec<Transition> {
    let mut out = Vec::new();
    for &ts in times {
        out.extend(feed(
            t,
            &format!(r#"{{"org":"o","ts":{ts},"status":200}}"#),
            ts,
        ));
    }
    out
}

/// (status, severity, dimension, ts) of the UsageHigh/DailyQuotaExhausted notifications.
fn current_state(out: &[Transition]) -> Vec<(Status, &'static str, Option<Dimension>, i64)> {
    out.iter()
        .filter(|t| {
            t.notify
                && matches!(
                    t.alert,
                    AlertName::UsageHigh | AlertName::DailyQuotaExhausted
                )
        })
        .map(|t| (t.status, t.severity.as_str(), t.dimension, t.ts_ms))
        .collect()
}

#[test]
fn a_late_event_does_not_resolve_or_refire_the_present() {
    // rpm 5: four requests at 10:00:10 are 80 %, a warning.
    let at = |s: &str| crate::events::parse_rfc3339_ms(s).unwrap();
    let mut t = tracker_with("rpm = 5");
    let out = reqs_at(&mut t, &[at("2026-11-30T10:00:10Z"); 4]);
    assert_eq!(
        current_state(&out),
        vec![(
            Status::Firing,
            "warning",
            Some(Dimension::Rpm),
            at("2026-11-30T10:00:10Z")
        )]
    );
    // One stamped 09:59:00: outside the present minute. Counted in its own window, it
    // neither resolves the warning (the rpm of 09:59:00 was 1) nor fires it again.
    let late = reqs_at(&mut t, &[at("2026-11-30T09:59:00Z")]);
    assert!(current_state(&late).is_empty(), "{late:?}");
    let s = t.snapshot(at("2026-11-30T10:00:10Z"));
    assert_eq!(org(&s, "o").usage_of(Dimension::Rpm), Some(4));
    assert_eq!(org(&s, "o").usage_of(Dimension::Daily), Some(5));
    let usage_high = |t: &Tracker| {
        t.active_alerts(at("2026-11-30T10:00:10Z"))
            .into_iter()
            .filter(|a| a.alert == AlertName::UsageHigh)
            .map(|a| a.severity)
            .collect::<Vec<_>>()
    };
    assert_eq!(usage_high(&t), [Severity::Warning]);
    // One stamped 10:00:05 is inside the present minute: 5 of 5, critical, dated now.
    let late = reqs_at(&mut t, &[at("2026-11-30T10:00:05Z")]);
    assert_eq!(
        current_state(&late),
        vec![(
            Status::Firing,
            "critical",
            Some(Dimension::Rpm),
            at("2026-11-30T10:00:10Z")
        )]
    );
}

#[test]
fn a_20_hour_late_request_raises_the_daily_count_without_resolving() {
    let mut t = tracker_with("daily = 10");
    let now = T0 + 86_400_000;
    let out = reqs_at(
        &mut t,
        &[
            now - 30_000,
            now - 20_000,
            now - 10_000,
            now - 5_000,
            now - 4_000,
            now - 3_000,
            now,
        ],
    );
    assert_eq!(
        current_state(&out),
        vec![(Status::Firing, "warning", Some(Dimension::Daily), now)],
        "7 of 10"
    );
    let late = reqs_at(&mut t, &[now - 20 * 3_600_000]);
    assert!(current_state(&late).is_empty(), "{late:?}");
    let s = t.snapshot(now);
    assert_eq!(
        org(&s, "o").usage_of(Dimension::Daily),
        Some(8),
        "raised, not 0 %"
    );
    assert_eq!(t.active_alerts(now)[0].severity, Severity::Warning);
    // One more late one reaches 90 %: critical, dated at the present.
    let late = reqs_at(&mut t, &[now - 19 * 3_600_000]);
    assert_eq!(
        current_state(&late),
        vec![(Status::Firing, "critical", Some(Dimension::Daily), now)]
    );
}

/// A deterministic shuffle (xorshift), so a failure can be replayed.
fn shuffled<T: Clone>(items: &[T], seed: u64) -> Vec<T> {
    let mut v = items.to_vec();
    let mut x = seed.max(1);
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

#[test]
fn forty_six_requests_in_23_seconds_shuffled_end_as_sorted() {
    // 50 rpm; 46 requests, two a second for 23 s.
    let times: Vec<i64> = (0..46).map(|i| T0 + i * 500).collect();
    let run = |order: &[i64]| {
        let mut t = tracker_with("rpm = 50");
        let out = reqs_at(&mut t, order);
        let end = *times.last().unwrap();
        let s = t.snapshot(end);
        let levels: Vec<_> = current_state(&out).iter().map(|c| (c.0, c.1)).collect();
        (
            t.report()[0].peaks.rpm,
            org(&s, "o").usage_of(Dimension::Rpm),
            levels,
            out,
        )
    };
    let (peak, usage, levels, _) = run(&times);
    assert_eq!((peak, usage), (46, Some(46)));
    assert_eq!(
        levels,
        vec![(Status::Firing, "warning"), (Status::Firing, "critical")]
    );
    for seed in 1..=20 {
        let (p, u, l, out) = run(&shuffled(&times, seed));
        assert_eq!((p, u, &l), (peak, usage, &levels), "seed {seed}");
        assert_monotonic(&out);
    }
}

/// No transition is dated before the one it follows for the same alert, and none ends
/// before it began; the first that breaks this, if any.
fn out_of_order(out: &[Transition]) -> Option<String> {
    let mut last: BTreeMap<AlertKey, i64> = BTreeMap::new();
    for t in out {
        if let Some(prev) = last.insert(AlertKey::of(t), t.ts_ms)
            && t.ts_ms < prev
        {
            return Some(format!("{t:?} dated before {prev}"));
        }
        if t.ts_ms < t.starts_at_ms {
            return Some(format!("ends before it starts: {t:?}"));
        }
    }
    None
}

fn assert_monotonic(out: &[Transition]) {
    assert_eq!(out_of_order(out), None);
}

#[test]
fn late_bursts_count_as_episodes_but_alert_only_while_on() {
    // rpm 6, window 10 s: threshold 3.
    let mut t = tracker_with("rpm = 6");
    let mut out = reqs_at(&mut t, &[T0, T0 + 60_000]);
    // Two late requests complete a burst at T0 + 2 s, over long before the present.
    out.extend(reqs_at(&mut t, &[T0 + 1_000, T0 + 2_000]));
    assert_eq!(t.report()[0].bursts, 1);
    assert!(
        out.iter().all(|t| t.alert != AlertName::BurstDetected),
        "{out:?}"
    );
    // More late requests inside that episode are the same episode.
    reqs_at(&mut t, &[T0 + 2_500, T0 + 500]);
    assert_eq!(t.report()[0].bursts, 1);
    // Late requests making a burst still on at the present fire it, dated now.
    let out = reqs_at(&mut t, &[T0 + 58_000, T0 + 59_000]);
    assert_eq!(t.report()[0].bursts, 2);
    let b: Vec<_> = out
        .iter()
        .filter(|t| t.alert == AlertName::BurstDetected)
        .collect();
    assert_eq!(b.len(), 1, "{out:?}");
    assert_eq!((b[0].status, b[0].ts_ms), (Status::Firing, T0 + 60_000));
    let mut closed = Vec::new();
    t.tick(T0 + 70_000, &mut closed);
    assert_eq!(closed[0].status, Status::Resolved);
    assert_monotonic(&[b[0].clone(), closed[0].clone()]);
}

#[test]
fn the_clock_never_dates_a_change_before_an_event_ahead_of_it() {
    // Live events may run up to 5 minutes ahead of the wall clock.
    let mut t = tracker_with("rpm = 5");
    let ahead = T0 + 120_000;
    let mut out = reqs_at(&mut t, &[ahead; 4]);
    t.tick(T0, &mut out);
    t.tick(T0 + 1_000, &mut out);
    assert_eq!(
        current_state(&out).len(),
        1,
        "no resolve from a clock behind: {out:?}"
    );
    t.tick(ahead + 61_000, &mut out);
    assert_eq!(current_state(&out).last().unwrap().0, Status::Resolved);
    assert_monotonic(&out);
}

#[test]
fn an_event_ahead_of_the_clock_does_not_blind_its_org() {
    // The daemon's clock is T0; one shipper's clock runs 290 s fast.
    let mut t = tracker_with("rpm = 10");
    t.note_clock(T0);
    let mut out = reqs_at(&mut t, &[T0 + 290_000]);
    out.extend(reqs_at(
        &mut t,
        &[T0, T0 + 10, T0 + 20, T0 + 30, T0 + 40, T0 + 50, T0 + 60],
    ));
    let fired: Vec<_> = current_state(&out).iter().map(|c| (c.0, c.1)).collect();
    assert_eq!(fired, [(Status::Firing, "warning")], "7 of 10 now: {out:?}");
    assert!(
        out.iter().all(|x| x.ts_ms <= T0),
        "nothing dated in the future: {out:?}"
    );
    // A future 429 does not hide the run of real ones either.
    let mut t = tracker_with("rpm = 1000");
    t.note_clock(T0);
    let mut out = Vec::new();
    for ts in [T0 + 290_000, T0, T0 + 1, T0 + 2, T0 + 3, T0 + 4] {
        out.extend(feed(
            &mut t,
            &format!(r#"{{"org":"o","ts":{ts},"status":429}}"#),
            ts,
        ));
    }
    assert!(
        out.iter()
            .any(|x| x.alert == AlertName::RetryStorm && x.status == Status::Firing),
        "{out:?}"
    );
}

#[test]
fn history_fed_to_the_daemon_pages_nobody() {
    let mut t = tracker_with("rpm = 10\nconcurrency = 1");
    t.note_clock(T0);
    let year = 365 * 86_400_000;
    let mut out = Vec::new();
    // A job started an hour ago (past release_after) and never ended.
    out.extend(feed(
        &mut t,
        &format!(
            r#"{{"org":"o","ts":{},"status":202,"job_id":"old"}}"#,
            T0 - 3_600_000
        ),
        T0,
    ));
    // A run of eight 429s a year ago.
    for i in 0..8 {
        out.extend(feed(
            &mut t,
            &format!(r#"{{"org":"o","ts":{},"status":429}}"#, T0 - year + i),
            T0,
        ));
    }
    assert!(out.iter().all(|x| !x.notify), "{out:?}");
    let s = t.snapshot(T0);
    assert_eq!(org(&s, "o").jobs_in_flight, 0);
    assert_eq!(
        org(&s, "o").jobs_finished[JobOutcome::TimedOut as usize],
        1,
        "counted as what it was"
    );
    assert_eq!(t.report()[0].stuck_jobs, 1);
}

#[test]
fn a_late_burst_counts_while_another_is_open() {
    // rpm 6, window 10 s: threshold 3.
    let mut t = tracker_with("rpm = 6");
    reqs_at(&mut t, &[T0 + 100_000, T0 + 100_001, T0 + 100_002]);
    assert_eq!(t.report()[0].bursts, 1);
    reqs_at(&mut t, &[T0, T0 + 1, T0 + 2]);
    assert_eq!(t.report()[0].bursts, 2, "a separate burst 100 s earlier");
    reqs_at(&mut t, &[T0 + 50_000, T0 + 50_001, T0 + 50_002]);
    assert_eq!(t.report()[0].bursts, 3);
}

#[test]
fn a_job_and_its_request_may_share_a_request_id() {
    let mut t = tracker_with("concurrency = 2");
    feed(
        &mut t,
        &format!(r#"{{"org":"o","ts":{T0},"status":202,"job_id":"j","request_id":"r"}}"#),
        T0,
    );
    feed(
        &mut t,
        &format!(
            r#"{{"org":"o","ts":{},"kind":"job_completed","job_id":"j","request_id":"r"}}"#,
            T0 + 5
        ),
        T0 + 5,
    );
    let s = t.snapshot(T0 + 5);
    assert_eq!(org(&s, "o").jobs_in_flight, 0);
    // The same completion again is a duplicate.
    assert!(
        !t.apply(
            &parse_event(
                format!(
                    r#"{{"org":"o","ts":{},"kind":"job_completed","job_id":"j","request_id":"r"}}"#,
                    T0 + 5
                )
                .as_bytes(),
                &ParseContext::default()
            )
            .unwrap()
            .event,
            T0 + 5,
            &mut Vec::new()
        )
    );
}

#[test]
fn a_job_end_stamped_before_its_start_is_its_end() {
    // Two shippers' clocks a second apart: the end, stamped first, arrives first.
    let mut t = tracker_with("concurrency = 1");
    let mut out = feed(
        &mut t,
        &format!(
            r#"{{"org":"o","ts":{},"kind":"job_completed","job_id":"j"}}"#,
            T0 - 1_000
        ),
        T0,
    );
    out.extend(feed(
        &mut t,
        &format!(r#"{{"org":"o","ts":{T0},"status":202,"job_id":"j"}}"#),
        T0,
    ));
    let s = t.snapshot(T0);
    assert_eq!(org(&s, "o").jobs_in_flight, 0);
    assert_eq!(
        org(&s, "o").jobs_finished[JobOutcome::Completed as usize],
        1
    );
    assert!(current_state(&out).is_empty(), "{out:?}");
    assert_eq!(t.report()[0].peaks.concurrency, 0);
}

mod order {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The same events of one org, sorted or in any order (several shippers), end in the
        /// same current usage, peaks and current-state alerts, and every transition follows
        /// the one before it in time.
        #[test]
        fn any_order_ends_as_sorted(
            gaps in prop::collection::vec(0i64..3_000, 5..120),
            jobs in prop::collection::vec(any::<bool>(), 5..120),
            seed in 1u64..u64::MAX,
        ) {
            // Events within 4 minutes: inside the windows' exact reach (5 minutes of slack).
            // Some requests start jobs; most jobs finish (or fail) a while later.
            let mut ts = T0;
            let mut lines: Vec<(i64, String)> = Vec::new();
            for (i, (g, job)) in gaps.iter().zip(jobs.iter().cycle()).enumerate() {
                ts += g;
                if *job && i % 3 == 0 {
                    lines.push((ts, format!(r#"{{"org":"o","ts":{ts},"status":202,"job_id":"j{i}"}}"#)));
                    if i % 4 != 0 {
                        let done = ts + (g * 7) % 20_000;
                        let kind = if i % 5 == 0 { "job_failed" } else { "job_completed" };
                        lines.push((done, format!(r#"{{"org":"o","ts":{done},"kind":"{kind}","job_id":"j{i}"}}"#)));
                    }
                } else {
                    lines.push((ts, format!(r#"{{"org":"o","ts":{ts},"status":200}}"#)));
                }
            }
            lines.sort_by_key(|(t, _)| *t);
            let ts = lines.last().map_or(T0, |(t, _)| *t);
            let lines: Vec<String> = lines.into_iter().map(|(_, l)| l).collect();
            let end = ts;
            let run = |order: &[String]| {
                let mut t = tracker_with("rpm = 40\ndaily = 60\nconcurrency = 30");
                let mut out = Vec::new();
                for l in order {
                    let ev_ts: i64 = l.split("\"ts\":").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
                    out.extend(feed(&mut t, l, ev_ts));
                }
                t.tick(end, &mut out);
                let s = t.snapshot(end);
                let o = org(&s, "o").clone();
                let report = t.report()[0].clone();
                (o, report, out, t)
            };
            let (a, ra, out_a, ta) = run(&lines);
            let (b, rb, out_b, tb) = run(&shuffled(&lines, seed));
            prop_assert_eq!(&a.usage, &b.usage);
            prop_assert_eq!(ra.peaks, rb.peaks);
            prop_assert_eq!(ra.requests, rb.requests);
            prop_assert_eq!(a.jobs_finished, b.jobs_finished);
            prop_assert_eq!(a.jobs_in_flight, b.jobs_in_flight);
            // Current-state alerts agree wherever the final value leaves no room for the
            // path: outside the hysteresis bands (65-70 % and 85-90 %).
            let actives = |t: &Tracker| -> Vec<(Option<Dimension>, Severity)> {
                t.active_alerts(end).iter()
                    .filter(|x| matches!(x.alert, AlertName::UsageHigh | AlertName::DailyQuotaExhausted))
                    .map(|x| (x.dimension, x.severity)).collect()
            };
            let in_band = |d: Dimension| {
                let (u, l) = (a.usage_of(d).unwrap_or(0) * 100, a.limit_of(d).unwrap_or(1));
                (u >= 65 * l && u < 70 * l) || (u >= 85 * l && u < 90 * l)
            };
            if !Dimension::ALL.iter().any(|&d| a.limit_of(d).is_some() && in_band(d)) {
                prop_assert_eq!(actives(&ta), actives(&tb));
            }
            for out in [&out_a, &out_b] {
                prop_assert_eq!(out_of_order(out), None);
            }
        }
    }
}

/// Upstream's remaining requests and tokens in a snapshot.
fn remaining(o: &OrgSnapshot) -> [Option<u64>; 2] {
    use crate::model::UpstreamDimension as U;
    [U::Rpm, U::Tpm].map(|d| {
        o.upstream
            .iter()
            .find(|u| u.dimension == d)
            .and_then(|u| u.remaining)
    })
}

#[test]
fn upstream_remaining_reads_the_limit_again_after_its_reset() {
    let mut t = Tracker::new(&config(""));
    feed(
        &mut t,
        &format!(
            r#"{{"org":"acme","ts":{T0},"status":429,"ratelimit":{{"limit_requests":50,"remaining_requests":0,"reset_requests":"1s","remaining_tokens":0,"reset_tokens":"2s"}}}}"#
        ),
        T0,
    );
    assert_eq!(remaining(&t.snapshot(T0 + 999)[0]), [Some(0), Some(0)]);
    assert_eq!(
        remaining(&t.snapshot(T0 + 1_000)[0]),
        [Some(50), Some(0)],
        "the limit again once the reset passed"
    );
    assert_eq!(
        remaining(&t.snapshot(T0 + 2_000)[0]),
        [Some(50), None],
        "no known token limit: no value rather than a stale 0"
    );
    // It survives a snapshot and restore.
    let back = Tracker::restore(&config(""), &t.encode().unwrap()).unwrap();
    assert_eq!(
        remaining(&back.snapshot(T0 + 1_000)[0]),
        [Some(50), Some(0)]
    ); // A report without a reset time holds for a minute, then says nothing.
    feed(
        &mut t,
        &format!(
            r#"{{"org":"acme","ts":{},"status":200,"ratelimit":{{"limit_requests":50,"remaining_requests":0}}}}"#,
            T0 + 3_000
        ),
        T0 + 3_000,
    );
    assert_eq!(remaining(&t.snapshot(T0 + 62_999)[0])[0], Some(0));
    assert_eq!(remaining(&t.snapshot(T0 + 63_000)[0])[0], None);
}

#[test]
fn upstream_remaining_keeps_the_newest_report() {
    let mut t = Tracker::new(&config(""));
    feed(
        &mut t,
        &format!(
            r#"{{"org":"acme","ts":{},"status":200,"ratelimit":{{"remaining_requests":7}}}}"#,
            T0 + 10
        ),
        T0,
    );
    feed(
        &mut t,
        &format!(
            r#"{{"org":"acme","ts":{T0},"status":200,"ratelimit":{{"remaining_requests":9,"remaining_tokens":500}}}}"#
        ),
        T0,
    );
    assert_eq!(remaining(&t.snapshot(T0)[0]), [Some(7), Some(500)]);
}

#[test]
fn snapshot_restore_keeps_every_kind_of_state() {
    let cfg = config("[detect]\nstuck_after = \"10s\"\nrelease_after = \"1h\"\n");
    let mut t = Tracker::new(&cfg);
    let mut out = Vec::new();
    for i in 0..9 {
        out.extend(req(&mut t, "acme", T0 + i * 1_000, 200));
    }
    feed(
        &mut t,
        &format!(
            r#"{{"org":"acme","app":"bot","ts":{T0},"status":202,"job_id":"j1","request_id":"r1"}}"#
        ),
        T0,
    );
    req(&mut t, "other", T0, 429);
    t.tick(T0 + 20_000, &mut out);
    assert!(fired(&out, AlertName::UsageHigh).contains(&(Status::Firing, "critical")));
    assert_eq!(
        fired(&out, AlertName::JobsStuck),
        vec![(Status::Firing, "warning")]
    );
    let bytes = t.encode().unwrap();

    let mut back = Tracker::restore(&cfg, &bytes).unwrap();
    assert_eq!(back.report(), t.report());
    let (a, b) = (t.snapshot(T0 + 20_000), back.snapshot(T0 + 20_000));
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(
            (&x.org, &x.tier, &x.usage, &x.limits),
            (&y.org, &y.tier, &y.usage, &y.limits)
        );
        assert_eq!(
            (x.jobs_in_flight, x.jobs_stuck, x.bursts),
            (y.jobs_in_flight, y.jobs_stuck, y.bursts)
        );
        assert_eq!(x.alerts, y.alerts);
    }
    // The request id is remembered, so a replayed event does not count again.
    let dup = parse_event(
        br#"{"org":"acme","app":"bot","ts":1795788000000,"status":202,"job_id":"j1","request_id":"r1"}"#,
        &ParseContext::default(),
    )
    .unwrap()
    .event;
    assert!(!back.apply(&dup, T0, &mut Vec::new()));
    // Alert state survived: the clock moving on resolves what fired before the restore.
    let mut later = Vec::new();
    back.tick(T0 + 200_000, &mut later);
    assert!(
        fired(&later, AlertName::UsageHigh).contains(&(Status::Resolved, "critical")),
        "{later:?}"
    );
    // Existing apps are found again, not duplicated.
    feed(
        &mut back,
        &format!(r#"{{"org":"acme","app":"bot","ts":{}}}"#, T0 + 200_000),
        T0,
    );
    assert_eq!(org(&back.snapshot(T0 + 200_000), "acme").apps.len(), 2);
}

#[test]
fn restore_applies_the_current_config() {
    let mut t = Tracker::new(&config(""));
    req(&mut t, "acme", T0, 200);
    req(&mut t, "newcomer", T0, 200);
    let bytes = t.encode().unwrap();
    let changed = Config::parse(
        "[[orgs]]\nid = \"acme\"\ntier = \"pro\"\n[limits]\ndefault_tier = \"pro\"\n",
        "t",
    )
    .unwrap();
    let back = Tracker::restore(&changed, &bytes).unwrap();
    let s = back.snapshot(T0);
    assert_eq!(org(&s, "acme").limit_of(Dimension::Rpm), Some(50));
    assert_eq!(&*org(&s, "newcomer").tier, "pro");
    assert_eq!(org(&s, "newcomer").usage_of(Dimension::Rpm), Some(1));
    assert!(matches!(
        Tracker::restore(&changed, b"RWT9xxxx"),
        Err(snapshot::RestoreError::Version { .. })
    ));
    assert!(matches!(
        Tracker::restore(&changed, b"RWT2\xff\xff\xff"),
        Err(snapshot::RestoreError::Corrupt(_))
    ));
}

#[test]
fn a_snapshot_of_format_3_with_dense_windows_is_read_and_the_new_one_is_smaller() {
    let cfg = config("");
    let mut t = Tracker::new(&cfg);
    for i in 0..400 {
        let org = format!("o{}", i % 4);
        feed(
            &mut t,
            &format!(
                r#"{{"org":"{org}","app":"a{}","ts":{},"status":200,"tokens":{{"total":10}}}}"#,
                i % 3,
                T0 + i * 3_100
            ),
            T0,
        );
    }
    let mut v3 = super::window::writing_dense(|| t.encode_v4());
    v3[..4].copy_from_slice(b"RWT3");
    let v4 = t.encode().unwrap();
    assert!(
        v4.len() * 4 < v3.len(),
        "compact {} bytes, dense {} bytes",
        v4.len(),
        v3.len()
    );
    let back = Tracker::restore(&cfg, &v3).unwrap();
    for now in [T0 + 1_240_000, T0 + 1_300_000, T0 + 90_000_000] {
        let (a, b) = (t.snapshot(now), back.snapshot(now));
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.usage, y.usage, "{} at {now}", x.org);
            let apps = |s: &crate::tracker::OrgSnapshot| {
                s.apps.iter().map(|a| (a.rpm, a.daily)).collect::<Vec<_>>()
            };
            assert_eq!(apps(x), apps(y));
        }
    }
}

#[test]
fn job_histograms_survive_format_4_and_start_over_when_their_bounds_change() {
    let cfg = config("");
    let mut t = Tracker::new(&cfg);
    for (i, secs) in [(0, 3), (1, 40), (2, 9_000)] {
        let start = T0 + i * 1_000;
        feed(
            &mut t,
            &format!(r#"{{"org":"a","ts":{start},"kind":"job_started","job_id":"j{i}"}}"#),
            T0,
        );
        let end = start + secs * 1_000;
        feed(
            &mut t,
            &format!(r#"{{"org":"a","ts":{end},"kind":"job_completed","job_id":"j{i}"}}"#),
            T0,
        );
    }
    feed(
        &mut t,
        &format!(r#"{{"org":"idle","ts":{T0},"status":200}}"#),
        T0,
    );
    let now = T0 + 10_000_000;
    let before = t.snapshot(now);
    let hist = |s: &[crate::tracker::OrgSnapshot], o: &str| org(s, o).job_duration.clone();
    assert_eq!(hist(&before, "a").count(), 3);
    assert_eq!(hist(&before, "a").counts[1], 1, "3 s in le=5");
    assert!(
        hist(&before, "idle").counts.is_empty(),
        "no buckets before a job ends"
    );
    for bytes in [t.encode().unwrap(), t.encode_v4()] {
        let back = Tracker::restore(&cfg, &bytes).unwrap();
        let after = back.snapshot(now);
        assert_eq!(hist(&after, "a"), hist(&before, "a"), "{:?}", &bytes[..4]);
        assert!(hist(&after, "idle").counts.is_empty());
    }
    let other = config("[metrics]\njob_duration_buckets = [10, 60]\n");
    let mut back = Tracker::restore(&other, &t.encode().unwrap()).unwrap();
    assert_eq!(
        hist(&back.snapshot(now), "a").count(),
        0,
        "other bounds: starts over"
    );
    feed(
        &mut back,
        &format!(r#"{{"org":"a","ts":{now},"kind":"job_started","job_id":"k"}}"#),
        now,
    );
    let later = now + 30_000;
    feed(
        &mut back,
        &format!(r#"{{"org":"a","ts":{later},"kind":"job_completed","job_id":"k"}}"#),
        later,
    );
    assert_eq!(hist(&back.snapshot(later), "a").counts, vec![0, 1, 0]);
}

#[test]
fn duplicate_request_ids_count_once() {
    let mut t = Tracker::new(&config(""));
    let line = format!(r#"{{"org":"acme","ts":{T0},"status":200,"request_id":"abc"}}"#);
    let ev = parse_event(line.as_bytes(), &ParseContext::default())
        .unwrap()
        .event;
    assert!(t.apply(&ev, T0, &mut Vec::new()));
    assert!(!t.apply(&ev, T0, &mut Vec::new()));
    let other_org = parse_event(
        br#"{"org":"b","ts":1795788000000,"request_id":"abc"}"#,
        &ParseContext::default(),
    )
    .unwrap()
    .event;
    assert!(
        t.apply(&other_org, T0, &mut Vec::new()),
        "ids are scoped per org"
    );
    assert_eq!(
        org(&t.snapshot(T0), "acme").usage_of(Dimension::Rpm),
        Some(1)
    );
}

#[test]
fn firing_alerts_are_repeated_every_repeat_interval() {
    let mut t = Tracker::new(&config(
        "[alerts]\nrepeat_interval = \"1h\"\n[detect]\nstuck_after = \"1d\"\nrelease_after = \"2d\"\n",
    ));
    let start = |t: &mut Tracker, id: &str| {
        feed(
            t,
            &format!(r#"{{"org":"acme","ts":{T0},"status":202,"job_id":"{id}"}}"#),
            T0,
        )
    };
    start(&mut t, "a");
    start(&mut t, "b");
    let reminders = |t: &mut Tracker, at: i64| {
        let mut out = Vec::new();
        t.tick(at, &mut out);
        out.into_iter().filter(|x| x.repeat).collect::<Vec<_>>()
    };
    assert!(reminders(&mut t, T0 + 3_599_999).is_empty());
    let r = reminders(&mut t, T0 + 3_600_000);
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].alert, r[0].dimension, r[0].severity),
        (
            AlertName::UsageHigh,
            Some(Dimension::Concurrency),
            crate::model::Severity::Critical
        )
    );
    assert_eq!(r[0].starts_at_ms, T0, "a reminder keeps the original start");
    assert!(
        reminders(&mut t, T0 + 3_601_000).is_empty(),
        "not again until another hour"
    );
    // A restart keeps the schedule.
    let mut back = Tracker::restore(&config("[alerts]\nrepeat_interval = \"1h\"\n[detect]\nstuck_after = \"1d\"\nrelease_after = \"2d\"\n"), &t.encode().unwrap()).unwrap();
    assert_eq!(reminders(&mut back, T0 + 7_200_000).len(), 1);
    job(&mut t, "acme", "job_completed", "a", T0 + 3_700_000);
    job(&mut t, "acme", "job_completed", "b", T0 + 3_700_000);
    assert!(
        reminders(&mut t, T0 + 9_000_000).is_empty(),
        "resolved alerts are not repeated"
    );
}

#[test]
fn severity_changes_carry_the_previous_severity_and_the_peak() {
    let mut t = Tracker::new(&config(
        "[tiers.c20]\nconcurrency = 20\n[[orgs]]\nid = \"c\"\ntier = \"c20\"\n",
    ));
    let mut out = Vec::new();
    for i in 0..18 {
        out.extend(feed(
            &mut t,
            &format!(r#"{{"org":"c","ts":{T0},"status":202,"job_id":"j{i}"}}"#),
            T0,
        ));
    }
    let esc = out
        .iter()
        .find(|x| x.severity.as_str() == "critical")
        .unwrap();
    assert_eq!(esc.previous_severity.map(|s| s.as_str()), Some("warning"));
    out.clear();
    for i in 0..18 {
        out.extend(feed(
            &mut t,
            &format!(r#"{{"org":"c","ts":{T0},"kind":"job_completed","job_id":"j{i}"}}"#),
            T0,
        ));
    }
    let lowered = out.iter().find(|x| !x.notify).unwrap();
    assert_eq!(
        (
            lowered.severity.as_str(),
            lowered.previous_severity.map(|s| s.as_str())
        ),
        ("warning", Some("critical"))
    );
    let resolved = out.iter().find(|x| x.status == Status::Resolved).unwrap();
    assert_eq!(
        resolved.severity.as_str(),
        "warning",
        "the label set that was firing"
    );
    assert_eq!(
        resolved.peak.as_str(),
        "critical",
        "reaches channels that only take critical"
    );
}

/// A request of acme at `ts` carrying `headers` (a JSON object's inside).
fn with_headers(t: &mut Tracker, ts: i64, headers: &str) -> Vec<Transition> {
    feed(
        t,
        &format!(r#"{{"org":"acme","ts":{ts},"status":200,"headers":{{{headers}}}}}"#),
        ts,
    )
}

fn upstream_of(o: &OrgSnapshot, d: crate::model::UpstreamDimension) -> UpstreamSnapshot {
    *o.upstream.iter().find(|u| u.dimension == d).unwrap()
}

#[test]
fn usage_drift_is_the_upstream_use_ratewarden_did_not_see() {
    use crate::model::UpstreamDimension as U;
    let mut t = Tracker::new(&config(""));
    for i in 0..3 {
        req(&mut t, "acme", T0 + i, 200);
    }
    // The upstream counts 7 of its 10 used, ratewarden 4 (three and this one).
    with_headers(
        &mut t,
        T0 + 10,
        r#""x-ratelimit-limit-requests":"10","x-ratelimit-remaining-requests":"3","x-ratelimit-reset-requests":"20s""#,
    );
    let u = upstream_of(&t.snapshot(T0 + 10)[0], U::Rpm);
    assert_eq!(
        (u.limit, u.remaining, u.drift),
        (Some(10), Some(3), Some(3))
    );
    let later = upstream_of(&t.snapshot(T0 + 20_010)[0], U::Rpm);
    assert_eq!(
        (later.remaining, later.drift),
        (Some(10), Some(0)),
        "past the reset the window is the upstream's full limit and nothing is known untracked"
    );
    let back = Tracker::restore(&config(""), &t.encode().unwrap()).unwrap();
    assert_eq!(upstream_of(&back.snapshot(T0 + 10)[0], U::Rpm), u);
}

#[test]
fn limit_mismatch_fires_while_the_upstream_reports_another_limit() {
    let mut t = Tracker::new(&config(""));
    let out = with_headers(
        &mut t,
        T0,
        r#""anthropic-ratelimit-requests-limit":"50","anthropic-ratelimit-requests-remaining":"49""#,
    );
    let fired: Vec<_> = out
        .iter()
        .filter(|tr| tr.alert == AlertName::LimitMismatch)
        .collect();
    assert_eq!(fired.len(), 1, "{out:?}");
    let f = fired[0];
    assert_eq!(
        (f.status, f.dimension, f.usage, f.limit, f.severity),
        (
            Status::Firing,
            Some(Dimension::Rpm),
            Some(50),
            Some(10),
            Severity::Warning
        )
    );
    assert_eq!(
        f.summary(),
        "acme is configured for 10 rpm but the upstream reports 50"
    );
    assert!(
        t.active_alerts(T0 + 1)
            .iter()
            .any(|a| a.alert == AlertName::LimitMismatch)
    );
    // The same report again changes nothing; a matching one resolves it.
    let again = with_headers(
        &mut t,
        T0 + 1,
        r#""anthropic-ratelimit-requests-limit":"50""#,
    );
    assert!(!again.iter().any(|tr| tr.alert == AlertName::LimitMismatch));
    // Reports that alternate (two keys on different tiers) keep one alert open.
    let mismatches = |out: &[Transition]| {
        out.iter()
            .filter(|tr| tr.alert == AlertName::LimitMismatch)
            .map(|tr| tr.status)
            .collect::<Vec<_>>()
    };
    for i in 0..6 {
        let v = if i % 2 == 0 { 10 } else { 50 };
        let out = with_headers(
            &mut t,
            T0 + 2 + i,
            &format!(r#""anthropic-ratelimit-requests-limit":"{v}""#),
        );
        assert!(mismatches(&out).is_empty(), "no flapping: {out:?}");
    }
    // Agreeing reports resolve it once none has differed for five minutes.
    let early = with_headers(
        &mut t,
        T0 + 60_000,
        r#""anthropic-ratelimit-requests-limit":"10""#,
    );
    assert!(mismatches(&early).is_empty());
    let at = T0 + 7 + crate::detect::alerts::MISMATCH_CLEAR_MS;
    let fixed = with_headers(&mut t, at, r#""anthropic-ratelimit-requests-limit":"10""#);
    assert_eq!(mismatches(&fixed), [Status::Resolved]);
    assert_eq!(
        fixed
            .iter()
            .find(|tr| tr.alert == AlertName::LimitMismatch)
            .unwrap()
            .summary(),
        "resolved: acme is configured for 10 rpm, and the upstream reports 10"
    );
    // An unlimited dimension the upstream limits is no mismatch.
    let tokens = with_headers(&mut t, at + 1, r#""x-ratelimit-limit-tokens":"90000""#);
    assert!(!tokens.iter().any(|tr| tr.alert == AlertName::LimitMismatch));
}

#[test]
fn learn_adopts_the_reported_limits() {
    let learn = "[limits]\nlearn = true\n";
    let mut t = Tracker::new(&config(learn));
    let out = with_headers(
        &mut t,
        T0,
        r#""x-ratelimit-limit-requests":"60","x-ratelimit-limit-tokens":"90000","x-ratelimit-remaining-tokens":"89000""#,
    );
    assert!(!out.iter().any(|tr| tr.alert == AlertName::LimitMismatch));
    let o = &t.snapshot(T0)[0];
    assert_eq!(o.limit_of(Dimension::Rpm), Some(60));
    assert_eq!(
        o.limit_of(Dimension::Tpm),
        Some(90_000),
        "a limit the config left unset"
    );
    assert_eq!(
        o.limit_of(Dimension::Daily),
        Some(20),
        "not reported: configured"
    );
    assert_eq!(o.learned, [Dimension::Rpm, Dimension::Tpm]);
    let back = Tracker::restore(&config(learn), &t.encode().unwrap()).unwrap();
    assert_eq!(back.snapshot(T0)[0].limit_of(Dimension::Rpm), Some(60));
    // A reported 0 is never adopted as "unlimited": the configured limit applies again.
    let mut zero = Tracker::restore(&config(learn), &t.encode().unwrap()).unwrap();
    with_headers(&mut zero, T0 + 1, r#""x-ratelimit-limit-requests":"0""#);
    assert_eq!(zero.snapshot(T0 + 1)[0].limit_of(Dimension::Rpm), Some(10));
    // The same state under a config without `learn`: configured limits, and the mismatch.
    let mut strict = Tracker::restore(&config(""), &t.encode().unwrap()).unwrap();
    assert_eq!(strict.snapshot(T0)[0].limit_of(Dimension::Rpm), Some(10));
    let out = with_headers(&mut strict, T0 + 1, r#""x-ratelimit-limit-requests":"60""#);
    assert!(out.iter().any(|tr| tr.alert == AlertName::LimitMismatch));
}

#[test]
fn limit_mismatch_is_judged_again_when_the_config_changes() {
    let mut t = Tracker::new(&config(""));
    let out = with_headers(&mut t, T0, r#""x-ratelimit-limit-requests":"60""#);
    assert!(out.iter().any(|tr| tr.alert == AlertName::LimitMismatch));
    // The config now says 60: the clock resolves it, without waiting for another report.
    let fixed = config("rpm = 60\n");
    let mut back = Tracker::restore(&fixed, &t.encode().unwrap()).unwrap();
    let mut out = Vec::new();
    back.tick(T0 + crate::detect::alerts::MISMATCH_CLEAR_MS, &mut out);
    let resolved: Vec<_> = out
        .iter()
        .filter(|tr| tr.alert == AlertName::LimitMismatch)
        .collect();
    assert_eq!(resolved.len(), 1, "{out:?}");
    assert_eq!(resolved[0].status, Status::Resolved);
    // Learnt under `learn`, then `learn` turned off: the stored report raises it at once.
    let learn = "[limits]\nlearn = true\n";
    let mut l = Tracker::new(&config(learn));
    with_headers(&mut l, T0, r#""x-ratelimit-limit-requests":"4000""#);
    let mut strict = Tracker::restore(&config(""), &l.encode().unwrap()).unwrap();
    let mut out = Vec::new();
    strict.tick(T0 + 1_000, &mut out);
    assert!(
        out.iter()
            .any(|tr| tr.alert == AlertName::LimitMismatch && tr.status == Status::Firing),
        "{out:?}"
    );
}

/// A tracker whose org `gem` has 5 requests a calendar day, reset at midnight Pacific.
fn calendar() -> Tracker {
    Tracker::new(
        &Config::parse(
            "[tiers.gemini]\nrpm = 100\ndaily = 5\ndaily_window = \"calendar\"\ndaily_timezone = \"America/Los_Angeles\"\n\
             [[orgs]]\nid = \"gem\"\ntier = \"gemini\"\n",
            "t.toml",
        )
        .unwrap(),
    )
}

fn at(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_millis()
}

#[test]
fn a_calendar_day_resets_at_local_midnight_and_its_alerts_with_it() {
    let mut t = calendar();
    // 23:50 PST on 2026-01-15 is 07:50Z on the 16th.
    let mut out = Vec::new();
    for i in 0..4 {
        out.extend(req(&mut t, "gem", at("2026-01-16T07:50:00Z") + i, 200));
    }
    assert!(
        out.iter()
            .any(|tr| tr.alert == AlertName::UsageHigh && tr.dimension == Some(Dimension::Daily)),
        "4 of 5: {out:?}"
    );
    let before = t.snapshot(at("2026-01-16T07:59:00Z"));
    assert_eq!(org(&before, "gem").usage_of(Dimension::Daily), Some(4));
    let until_midnight = org(&before, "gem")
        .headroom_seconds
        .iter()
        .find(|(d, _)| *d == Dimension::Daily)
        .unwrap()
        .1;
    assert_eq!(until_midnight, Some(0), "one more still fits");
    req(&mut t, "gem", at("2026-01-16T07:55:00Z"), 200);
    let full = t.snapshot(at("2026-01-16T07:56:00Z"));
    let wait = org(&full, "gem")
        .headroom_seconds
        .iter()
        .find(|(d, _)| *d == Dimension::Daily)
        .unwrap()
        .1;
    assert_eq!(wait, Some(4 * 60), "full until local midnight");
    // The clock passes midnight: the day's usage is 0 and the alert resolves.
    let mut out = Vec::new();
    t.tick(at("2026-01-16T08:00:30Z"), &mut out);
    assert!(
        out.iter().any(|tr| tr.alert == AlertName::UsageHigh
            && tr.dimension == Some(Dimension::Daily)
            && tr.status == Status::Resolved),
        "{out:?}"
    );
    req(&mut t, "gem", at("2026-01-16T08:10:00Z"), 200);
    let after = t.snapshot(at("2026-01-16T08:11:00Z"));
    assert_eq!(org(&after, "gem").usage_of(Dimension::Daily), Some(1));
    // A rolling window would still hold all six: the peak is the day's, 5.
    assert_eq!(
        t.report()
            .iter()
            .find(|r| &*r.org == "gem")
            .unwrap()
            .peaks
            .daily,
        5
    );
}

#[test]
fn the_25_hour_day_counts_its_first_hour_to_its_end() {
    let mut t = calendar();
    // 2026-11-01 falls back: the day runs from 07:00Z to 08:00Z on the 2nd.
    req(&mut t, "gem", at("2026-11-01T07:05:00Z"), 200);
    req(&mut t, "gem", at("2026-11-02T07:30:00Z"), 200);
    let snap = t.snapshot(at("2026-11-02T07:59:00Z"));
    assert_eq!(org(&snap, "gem").usage_of(Dimension::Daily), Some(2));
    let next = t.snapshot(at("2026-11-02T08:00:00Z"));
    assert_eq!(org(&next, "gem").usage_of(Dimension::Daily), Some(0));
    // A restored tracker still holds the whole day.
    let back = Tracker::restore(
        &Config::parse(
            "[tiers.gemini]\nrpm = 100\ndaily = 5\ndaily_window = \"calendar\"\ndaily_timezone = \"America/Los_Angeles\"\n\
             [[orgs]]\nid = \"gem\"\ntier = \"gemini\"\n",
            "t.toml",
        )
        .unwrap(),
        &t.encode().unwrap(),
    )
    .unwrap();
    let snap = back.snapshot(at("2026-11-02T07:59:00Z"));
    assert_eq!(org(&snap, "gem").usage_of(Dimension::Daily), Some(2));
}

#[test]
fn admission_on_a_full_calendar_day_waits_for_the_reset() {
    let mut t = calendar();
    for i in 0..5 {
        req(&mut t, "gem", at("2026-01-16T07:00:00Z") + i, 200);
    }
    let ask = Ask {
        org: "gem",
        app: "a",
        requests: 1,
        tokens: 0,
        job: false,
        request_id: None,
        share_bp: None,
    };
    let mut out = Vec::new();
    let now = at("2026-01-16T07:30:00Z");
    match t.admit(&ask, "l1", now, &mut out) {
        Verdict::Refused {
            dimension,
            retry_after_ms,
        } => {
            assert_eq!(dimension, Dimension::Daily);
            assert_eq!(retry_after_ms, 30 * 60_000, "until midnight Pacific");
        }
        v => panic!("{v:?}"),
    }
    let granted = t.admit(&ask, "l2", at("2026-01-16T08:00:01Z"), &mut out);
    assert!(matches!(granted, Verdict::Granted { .. }), "{granted:?}");
}

#[test]
fn apps_are_found_by_name_past_the_scan_and_after_a_restore() {
    let cfg = config("[limits]\nmax_apps_per_org = 20\n");
    let mut t = Tracker::new(&cfg);
    for round in 0..2 {
        for a in 0..12 {
            feed(
                &mut t,
                &format!(
                    r#"{{"org":"acme","app":"app-{a}","ts":{},"status":200}}"#,
                    T0 + round
                ),
                T0,
            );
        }
    }
    let apps = |t: &Tracker| {
        let s = t.snapshot(T0 + 1);
        org(&s, "acme")
            .apps
            .iter()
            .map(|a| (a.app.to_string(), a.daily))
            .collect::<Vec<_>>()
    };
    let want: Vec<_> = (0..12).map(|a| (format!("app-{a}"), 2)).collect();
    assert_eq!(apps(&t), want, "each app once, found again by name");
    let mut back = Tracker::restore(&cfg, &t.encode().unwrap()).unwrap();
    feed(
        &mut back,
        r#"{"org":"acme","app":"app-11","status":200}"#,
        T0 + 1,
    );
    let mut want = want;
    want[11].1 = 3;
    assert_eq!(apps(&back), want);
    // One name held for the apps of every org that uses it.
    feed(
        &mut back,
        r#"{"org":"other","app":"app-3","status":200}"#,
        T0 + 1,
    );
    let a = &back.orgs[back.index["acme"]].apps[3].name;
    let b = &back.orgs[back.index["other"]].apps[0].name;
    assert!(Arc::ptr_eq(a, b));
}
