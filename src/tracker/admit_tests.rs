//! Admission through the tracker's surface: grants, reservations completed by events, job
//! leases, and the property that no window of the upstream ever holds more grants than the
//! share of the limit, with every refusal's `retry_after_ms` exact.

use super::*;
use crate::events::{ParseContext, parse_event};
use crate::model::Dimension;
use proptest::prelude::*;
use std::sync::Arc;

const T0: i64 = 1_795_788_000_000; // 2026-11-27T14:00:00Z

fn config(tier: &str, admission: &str) -> Config {
    Config::parse(
        &format!(
            "[tiers.t]\n{tier}\n\n[[orgs]]\nid = \"acme\"\ntier = \"t\"\n\n[admission]\n{admission}\n\
             [detect]\nstuck_after = \"1m\"\nrelease_after = \"5m\"\n"
        ),
        "test.toml",
    )
    .unwrap()
}

fn ask(requests: u64, tokens: u64, job: bool) -> Ask<'static> {
    Ask {
        org: "acme",
        app: "bot",
        requests,
        tokens,
        job,
        request_id: None,
        share_bp: None,
    }
}

fn admit(t: &mut Tracker, a: &Ask<'_>, lease: &str, now: i64) -> Verdict {
    t.admit(a, lease, now, &mut Vec::new())
}

fn feed(t: &mut Tracker, json: &str, now: i64) -> bool {
    let ev = parse_event(json.as_bytes(), &ParseContext::default())
        .unwrap()
        .event;
    t.apply(&ev, now, &mut Vec::new())
}

fn usage(t: &Tracker, now: i64) -> (u64, u64, u64) {
    let l = t.load_of("acme", now);
    (l.rpm, l.daily, l.in_flight)
}

fn granted(v: &Verdict) -> bool {
    matches!(v, Verdict::Granted { .. })
}

#[test]
fn grants_fill_the_limit_and_the_refusal_says_when_the_next_fits() {
    let mut t = Tracker::new(&config("rpm = 3", "margin = \"0s\""));
    for i in 0..3 {
        let v = admit(&mut t, &ask(1, 0, false), &format!("l{i}"), T0 + i * 1_000);
        assert!(granted(&v), "{v:?}");
    }
    let v = admit(&mut t, &ask(1, 0, false), "l3", T0 + 2_500);
    // The first grant (second T0) leaves the 61-bucket window at T0 + 61 s.
    assert_eq!(
        v,
        Verdict::Refused {
            dimension: Dimension::Rpm,
            retry_after_ms: 61_000 - 2_500
        }
    );
    assert!(!granted(&admit(
        &mut t,
        &ask(1, 0, false),
        "l4",
        T0 + 60_999
    )));
    assert!(granted(&admit(
        &mut t,
        &ask(1, 0, false),
        "l5",
        T0 + 61_000
    )));
    assert_eq!(usage(&t, T0 + 61_000).0, 3);
}

#[test]
fn the_margin_lengthens_every_window_and_share_lowers_the_cap() {
    let mut t = Tracker::new(&config("rpm = 10", "margin = \"2s\"\nshare = 0.5"));
    for i in 0..5 {
        assert!(granted(&admit(
            &mut t,
            &ask(1, 0, false),
            &format!("l{i}"),
            T0
        )));
    }
    match admit(&mut t, &ask(1, 0, false), "x", T0) {
        Verdict::Refused {
            dimension: Dimension::Rpm,
            retry_after_ms,
        } => assert_eq!(retry_after_ms, 63_000),
        v => panic!("{v:?}"),
    }
    assert_eq!(
        admit(&mut t, &ask(6, 0, false), "y", T0 + 100_000),
        Verdict::Never {
            dimension: Dimension::Rpm,
            cap: 5
        }
    );
}

#[test]
fn a_reported_request_completes_its_grant_and_is_not_counted_again() {
    let mut t = Tracker::new(&config("rpm = 10\ntpm = 1000", ""));
    let rid = Ask {
        request_id: Some("r-1"),
        ..ask(1, 300, false)
    };
    assert!(granted(&admit(&mut t, &rid, "lease-a", T0)));
    assert!(granted(&admit(&mut t, &ask(1, 100, false), "lease-b", T0)));
    assert_eq!(usage(&t, T0).0, 2);
    // Asking again with the same request id answers the same grant, reserving nothing.
    match admit(&mut t, &rid, "lease-c", T0 + 10) {
        Verdict::Granted {
            lease, repeated, ..
        } => assert_eq!((&*lease, repeated), ("lease-a", true)),
        v => panic!("{v:?}"),
    }
    assert!(feed(
        &mut t,
        &format!(
            r#"{{"org":"acme","app":"bot","ts":{},"status":200,"request_id":"r-1","tokens":500}}"#,
            T0 + 400
        ),
        T0 + 400
    ));
    assert!(feed(
        &mut t,
        &format!(
            r#"{{"org":"acme","app":"bot","ts":{},"status":429,"lease":"lease-b","tokens":50}}"#,
            T0 + 500
        ),
        T0 + 500
    ));
    assert_eq!(usage(&t, T0 + 500).0, 2, "each completed grant counts once");
    let snap = t.snapshot(T0 + 500);
    let acme = snap.iter().find(|o| &*o.org == "acme").unwrap();
    let tpm = acme.usage.iter().find(|u| u.0 == Dimension::Tpm).unwrap().1;
    assert_eq!(
        tpm,
        300 + 100 + 200,
        "tokens above the reservation are added"
    );
    // The same report again is a duplicate; a request never reported still counts.
    assert!(!feed(
        &mut t,
        &format!(
            r#"{{"org":"acme","ts":{},"status":200,"lease":"lease-b"}}"#,
            T0 + 600
        ),
        T0 + 600
    ));
    assert_eq!(usage(&t, T0 + 600).0, 2);
    assert!(t.reservations().is_empty());
}

#[test]
fn job_leases_hold_a_slot_until_released_attached_and_finished_or_expired() {
    let mut t = Tracker::new(&config("rpm = 100\nconcurrency = 2", "lease_ttl = \"2m\""));
    let mut out = Vec::new();
    assert!(granted(&admit(&mut t, &ask(1, 0, true), "j1", T0)));
    assert!(granted(&admit(&mut t, &ask(1, 0, true), "j2", T0 + 1_000)));
    // Full: the first slot comes back when j1's lease expires (2 minutes).
    assert_eq!(
        admit(&mut t, &ask(1, 0, true), "j3", T0 + 5_000),
        Verdict::Refused {
            dimension: Dimension::Concurrency,
            retry_after_ms: 120_000 - 5_000
        }
    );
    // A call without a job still fits.
    assert!(granted(&admit(&mut t, &ask(1, 0, false), "c1", T0 + 5_000)));
    assert!(t.release("j2", T0 + 6_000, &mut out));
    assert!(!t.release("j2", T0 + 6_000, &mut out), "released once");
    assert_eq!(usage(&t, T0 + 6_000).2, 1);
    assert!(granted(&admit(&mut t, &ask(1, 0, true), "j3", T0 + 6_000)));
    // j3's job gets its upstream id; its finishing event gives the slot back.
    assert_eq!(t.attach("j3", "vid_1"), Ok(()));
    assert_eq!(t.attach("c1", "vid_2"), Err(AttachError::NotAJob));
    assert_eq!(t.attach("nope", "vid_2"), Err(AttachError::NoLease));
    feed(
        &mut t,
        &format!(
            r#"{{"org":"acme","ts":{},"kind":"job_completed","job_id":"vid_1"}}"#,
            T0 + 30_000
        ),
        T0 + 30_000,
    );
    assert_eq!(usage(&t, T0 + 30_000).2, 1);
    // j1 expires at T0 + 2 min: nothing in flight after.
    t.tick(T0 + 120_000, &mut out);
    assert_eq!(usage(&t, T0 + 120_000).2, 0);
    // A report of a 2xx call with a job id takes over the lease's slot (no second job).
    assert!(granted(&admit(
        &mut t,
        &ask(1, 0, true),
        "j4",
        T0 + 121_000
    )));
    feed(
        &mut t,
        &format!(
            r#"{{"org":"acme","ts":{},"status":200,"lease":"j4","job_id":"vid_9"}}"#,
            T0 + 121_500
        ),
        T0 + 121_500,
    );
    assert_eq!(usage(&t, T0 + 121_500).2, 1);
    feed(
        &mut t,
        &format!(
            r#"{{"org":"acme","ts":{},"kind":"job_failed","job_id":"vid_9"}}"#,
            T0 + 122_000
        ),
        T0 + 122_000,
    );
    assert_eq!(usage(&t, T0 + 122_000).2, 0);
    // A failed call gives its lease's slot back at once.
    assert!(granted(&admit(
        &mut t,
        &ask(1, 0, true),
        "j5",
        T0 + 123_000
    )));
    feed(
        &mut t,
        &format!(
            r#"{{"org":"acme","ts":{},"status":429,"lease":"j5"}}"#,
            T0 + 123_100
        ),
        T0 + 123_100,
    );
    assert_eq!(usage(&t, T0 + 123_100).2, 0);
}

#[test]
fn grants_and_leases_survive_a_snapshot() {
    let c = config("rpm = 2\nconcurrency = 1", "");
    let mut t = Tracker::new(&c);
    assert!(granted(&admit(&mut t, &ask(1, 0, true), "j1", T0)));
    assert!(granted(&admit(&mut t, &ask(1, 0, false), "c1", T0)));
    let mut back = Tracker::restore(&c, &t.encode().unwrap()).unwrap();
    assert_eq!(back.reservations().len(), 2);
    assert!(!granted(&admit(
        &mut back,
        &ask(1, 0, false),
        "c2",
        T0 + 10
    )));
    assert!(back.release("j1", T0 + 20, &mut Vec::new()));
    assert_eq!(usage(&back, T0 + 20).2, 0);
    assert!(feed(
        &mut back,
        &format!(
            r#"{{"org":"acme","ts":{},"status":200,"lease":"c1"}}"#,
            T0 + 30
        ),
        T0 + 30
    ));
    assert_eq!(
        usage(&back, T0 + 30).0,
        2,
        "the restored grant was completed, not recounted"
    );
    assert!(back.reservations().is_empty());
}

#[test]
fn a_job_lease_lives_until_its_job_ends_whatever_reports_it() {
    let mut t = Tracker::new(&config("rpm = 100\nconcurrency = 3", ""));
    let mut out = Vec::new();
    // A 2xx report without a job id keeps the slot: the job id may follow.
    assert!(granted(&admit(&mut t, &ask(1, 0, true), "j1", T0)));
    feed(
        &mut t,
        &format!(r#"{{"org":"acme","ts":{T0},"status":200,"lease":"j1"}}"#),
        T0,
    );
    assert_eq!(usage(&t, T0).2, 1);
    assert_eq!(t.reservations().per_org()[&Arc::from("acme")], (1, 1));
    // Attached, then its job ends: the lease is done too (no longer listed, 404 to DELETE).
    assert_eq!(t.attach("j1", "vid_1"), Ok(()));
    feed(
        &mut t,
        &format!(r#"{{"org":"acme","ts":{T0},"kind":"job_completed","job_id":"vid_1"}}"#),
        T0,
    );
    assert_eq!(usage(&t, T0).2, 0);
    assert!(t.reservations().is_empty());
    assert!(!t.release("j1", T0, &mut out));
    // The same through the report that carries both lease and job id.
    assert!(granted(&admit(&mut t, &ask(1, 0, true), "j2", T0)));
    feed(
        &mut t,
        &format!(r#"{{"org":"acme","ts":{T0},"status":201,"lease":"j2","job_id":"vid_2"}}"#),
        T0,
    );
    assert_eq!(usage(&t, T0).2, 1);
    feed(
        &mut t,
        &format!(r#"{{"org":"acme","ts":{T0},"kind":"job_failed","job_id":"vid_2"}}"#),
        T0,
    );
    assert_eq!(usage(&t, T0).2, 0);
    assert!(t.reservations().is_empty());
}

#[test]
fn untracked_orgs_and_reused_request_ids_are_not_granted() {
    let c = Config::parse(
        "[limits]\nmax_orgs = 1\n[tiers.t]\nrpm = 5\n[[orgs]]\nid = \"acme\"\ntier = \"t\"\n",
        "t.toml",
    )
    .unwrap();
    let mut t = Tracker::new(&c);
    let other = Ask {
        org: "other",
        ..ask(1, 0, false)
    };
    assert_eq!(admit(&mut t, &other, "o1", T0), Verdict::Untracked);
    let first = Ask {
        request_id: Some("r"),
        ..ask(1, 0, false)
    };
    assert!(granted(&admit(&mut t, &first, "a1", T0)));
    let second = Ask {
        request_id: Some("r"),
        ..ask(2, 0, false)
    };
    assert_eq!(admit(&mut t, &second, "a2", T0), Verdict::Reused);
    assert_eq!(usage(&t, T0).0, 1);
}

/// One step of a random run.
#[derive(Debug, Clone)]
enum Step {
    /// Advance the clock by ms, then ask (requests, tokens, job); a grant's call reaches
    /// the upstream `delay` ms later (up to the margin) and is reported then if `report`.
    Ask {
        gap: i64,
        requests: u64,
        tokens: u64,
        job: bool,
        delay: i64,
        report: bool,
    },
    /// Release the n-th lease granted so far.
    Release(usize),
    /// Wait for the last refusal's retry_after, then ask as `Ask` does: callers that retry
    /// when told meet the window's edges exactly.
    Retry {
        requests: u64,
        job: bool,
        delay: i64,
    },
    /// Traffic that does not ask (counted, never refused).
    Raw { gap: i64 },
    /// The clock ticks after `gap` ms.
    Tick { gap: i64 },
}

/// How late a call reaches the upstream after its grant: often at either end of the margin.
fn delay() -> impl Strategy<Value = i64> {
    prop_oneof![Just(0i64), Just(2_000), 0i64..=2_000]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0i64..4_000, 1u64..3, 0u64..400, any::<bool>(), delay(), any::<bool>()).prop_map(
            |(gap, requests, tokens, job, delay, report)| Step::Ask { gap, requests, tokens, job, delay, report }
        ),
        4 => (1u64..3, any::<bool>(), delay()).prop_map(|(requests, job, delay)| Step::Retry { requests, job, delay }),
        1 => (0usize..64).prop_map(Step::Release),
        1 => (0i64..3_000).prop_map(|gap| Step::Raw { gap }),
        1 => (0i64..30_000).prop_map(|gap| Step::Tick { gap }),
    ]
}

/// The most arrivals (time, weight) in any window `(t − width, t]`.
fn max_in_window(mut arrivals: Vec<(i64, u64)>, width: i64) -> u64 {
    arrivals.sort_unstable();
    let (mut best, mut sum, mut lo) = (0, 0u64, 0);
    for hi in 0..arrivals.len() {
        sum += arrivals[hi].1;
        while arrivals[lo].0 <= arrivals[hi].0 - width {
            sum -= arrivals[lo].1;
            lo += 1;
        }
        best = best.max(sum);
    }
    best
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]
    /// Random interleavings of asks, reports, releases, lease expiries and traffic that does
    /// not ask: the calls granted never exceed share × limit in any upstream window of rpm,
    /// tpm and daily kind, whatever their delay up to the margin, nor the concurrency cap at
    /// any moment; and each refusal's retry_after_ms is exact: asked again 1 ms before it is
    /// refused, asked then it is granted (on a copy that sees nothing else).
    #[test]
    fn grants_never_exceed_a_limit_and_refusals_say_exactly_when(
        steps in prop::collection::vec(step(), 1..120),
        share in prop_oneof![Just("1.0"), Just("0.5")],
    ) {
        let c = config(
            "rpm = 8\ntpm = 1500\ndaily = 40\nconcurrency = 3",
            &format!("margin = \"2s\"\nshare = {share}\nlease_ttl = \"90s\""),
        );
        let caps = if share == "1.0" { (8, 1500, 40, 3) } else { (4, 750, 20, 1) };
        let mut t = Tracker::new(&c);
        let mut now = T0;
        let mut calls: Vec<(i64, u64, u64)> = Vec::new();
        // Lease intervals of job grants: (granted, given back or expired).
        let mut leases: Vec<(String, i64, Option<i64>)> = Vec::new();
        let mut out = Vec::new();
        let mut next_retry = now;
        for (i, s) in steps.into_iter().enumerate() {
            let s = match s {
                Step::Retry { requests, job, delay } => {
                    let gap = (next_retry - now).max(0);
                    Step::Ask { gap, requests, tokens: 0, job, delay, report: false }
                }
                s => s,
            };
            match s {
                Step::Ask { gap, requests, tokens, job, delay, report } => {
                    now += gap;
                    let a = Ask { org: "acme", app: "bot", requests, tokens, job, request_id: None, share_bp: None };
                    let lease = format!("l{i}");
                    match t.admit(&a, &lease, now, &mut out) {
                        Verdict::Granted { .. } => {
                            calls.push((now + delay, requests, tokens));
                            if job {
                                leases.push((lease.clone(), now, None));
                            }
                            if report && !job {
                                let ev = format!(
                                    r#"{{"org":"acme","app":"bot","ts":{},"status":200,"lease":"{lease}","tokens":{tokens}}}"#,
                                    now + delay
                                );
                                feed(&mut t, &ev, now);
                            }
                        }
                        Verdict::Refused { retry_after_ms, .. } => {
                            next_retry = now + retry_after_ms as i64;
                            let copy = |t: &Tracker| Tracker::restore(&c, &t.encode().unwrap()).unwrap();
                            let retry = now + retry_after_ms as i64;
                            if retry_after_ms > 1 {
                                let mut early = copy(&t);
                                let v = admit(&mut early, &a, "probe", retry - 1);
                                prop_assert!(!granted(&v), "granted 1 ms before retry_after ({retry_after_ms} ms): {v:?}");
                            }
                            let mut on_time = copy(&t);
                            let v = admit(&mut on_time, &a, "probe", retry);
                            prop_assert!(granted(&v), "refused at retry_after ({retry_after_ms} ms): {v:?}");
                        }
                        Verdict::Never { .. } => prop_assert!(requests > caps.0 || tokens > caps.1),
                        v => prop_assert!(false, "{v:?}"),
                    }
                }
                Step::Retry { .. } => unreachable!("turned into an ask above"),
                Step::Release(n) => {
                    if let Some(l) = leases.get_mut(n)
                        && l.2.is_none()
                        && t.release(&l.0, now, &mut out)
                    {
                        l.2 = Some(now);
                    }
                }
                Step::Raw { gap } => {
                    now += gap;
                    feed(&mut t, &format!(r#"{{"org":"acme","app":"other","ts":{now},"status":200}}"#), now);
                }
                Step::Tick { gap } => {
                    now += gap;
                    t.tick(now, &mut out);
                }
            }
            // Leases the tracker let go of by their ttl.
            for l in leases.iter_mut().filter(|l| l.2.is_none()) {
                if t.reservations().get(&l.0).is_none() {
                    l.2 = Some(l.1 + 90_000);
                }
            }
        }
        let req: Vec<_> = calls.iter().map(|c| (c.0, c.1)).collect();
        let tok: Vec<_> = calls.iter().map(|c| (c.0, c.2)).collect();
        prop_assert!(max_in_window(req.clone(), 60_000) <= caps.0);
        prop_assert!(max_in_window(tok, 60_000) <= caps.1);
        prop_assert!(max_in_window(req, 86_400_000) <= caps.2);
        // Concurrency: at every grant, leases held at once.
        for &(_, start, _) in &leases {
            let held = leases
                .iter()
                .filter(|l| l.1 <= start && l.2.is_none_or(|end| end > start))
                .count() as u64;
            prop_assert!(held <= caps.3, "{held} leases at once");
        }
    }
}

/// A job whose two deadlines both fall between ticks, found by an admission of its org (it
/// releases what is due before it weighs): judged stuck, then released, there, as a tick
/// would have judged it; the tick after has nothing left to say about it.
#[test]
fn an_admission_that_finds_a_job_stuck_and_released_alerts_as_a_tick_would() {
    use crate::detect::Status;
    use crate::model::AlertName;
    let mut t = Tracker::new(&config("concurrency = 4", "margin = \"0s\""));
    feed(
        &mut t,
        &format!(r#"{{"org":"acme","ts":{T0},"status":202,"job_id":"j1"}}"#),
        T0,
    );
    // Past `stuck_after` (1 min) and `release_after` (5 min) with no tick between.
    let now = T0 + 6 * 60_000;
    let mut out = Vec::new();
    assert!(granted(&t.admit(&ask(1, 0, false), "l1", now, &mut out)));
    let stuck: Vec<Status> = out
        .iter()
        .filter(|t| t.alert == AlertName::JobsStuck && t.notify)
        .map(|t| t.status)
        .collect();
    assert_eq!(stuck, [Status::Firing, Status::Resolved], "{out:?}");
    assert!(out.iter().all(|t| t.ts_ms == now), "{out:?}");
    assert_eq!(usage(&t, now).2, 0, "j1 released");
    out.clear();
    t.tick(now + 1_000, &mut out);
    assert!(
        out.iter().all(|t| t.alert != AlertName::JobsStuck),
        "{out:?}"
    );
}
