//! Admission against the test suite's fake rate-limited upstream (rpm 60, concurrency 3): many
//! clients that each ask `POST /v1/admit` before calling the upstream, report what happened
//! through `POST /v1/events`, and report their jobs' ends, never meet a 429 from the upstream
//! while using nearly all of its rpm; on one daemon, and on three replicas sharing Redis.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::redis::Redis;
use common::upstream::Upstream;
use serde_json::{Value, json};

const RPM: usize = 60;
const CONCURRENCY: usize = 3;
const CLIENTS: usize = 64;
const RUN: Duration = Duration::from_secs(60);

/// The black-box tests here run real daemons: one at a time on two cores.
static DAEMONS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    DAEMONS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

const ORG: &str =
    "[tiers.upstream]\nrpm = 60\nconcurrency = 3\n\n[[orgs]]\nid = \"acme\"\ntier = \"upstream\"\n";

/// What the clients saw.
#[derive(Default)]
struct Tally {
    granted: AtomicU64,
    refused: AtomicU64,
    upstream_ok: AtomicU64,
    upstream_429: AtomicU64,
    reports_failed: AtomicU64,
}

fn post_json(url: &str, body: &Value) -> Option<(u16, String)> {
    common::http(
        "POST",
        url,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
}

/// One client: ask (waiting up to 5 s), call the upstream, report the call (with the lease
/// and the job id), poll the job until done and report its end, until `until`.
fn client(i: usize, base: &str, upstream: &str, until: Instant, tally: &Tally) {
    let app = format!("client-{}", i % 8);
    let report = |ev: Value| {
        let ok = matches!(post_json(&format!("{base}/v1/events"), &ev), Some((202, _)));
        if !ok {
            tally.reports_failed.fetch_add(1, Ordering::Relaxed);
        }
    };
    while Instant::now() < until {
        let ask = json!({"org": "acme", "app": app, "job": true, "wait": "5s"});
        let Some((status, body)) = post_json(&format!("{base}/v1/admit"), &ask) else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let answer: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if status == 429 {
            tally.refused.fetch_add(1, Ordering::Relaxed);
            let wait = answer["retry_after_ms"].as_u64().unwrap_or(100).min(1_000);
            std::thread::sleep(Duration::from_millis(wait));
            continue;
        }
        assert_eq!(status, 200, "admit answered {status}: {body}");
        tally.granted.fetch_add(1, Ordering::Relaxed);
        let lease = answer["lease"].as_str().expect("a lease").to_string();
        let (status, body) = post_json(&format!("{upstream}/v1/videos"), &json!({"prompt": i}))
            .expect("the upstream answers");
        let job: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let id = job["id"].as_str().map(str::to_string);
        let mut ev =
            json!({"org": "acme", "app": app, "ts": now_ms(), "status": status, "lease": lease});
        if let Some(id) = &id {
            ev["job_id"] = json!(id);
        }
        report(ev);
        match (status, id) {
            (200, Some(id)) => {
                tally.upstream_ok.fetch_add(1, Ordering::Relaxed);
                // Poll until the upstream says the job is done, then say so.
                loop {
                    std::thread::sleep(Duration::from_millis(200));
                    let polled =
                        common::http("GET", &format!("{upstream}/v1/videos/{id}"), &[], b"");
                    if polled.is_some_and(|(_, b)| b.contains("completed")) {
                        break;
                    }
                }
                report(
                    json!({"org": "acme", "app": app, "ts": now_ms(), "kind": "job_completed", "job_id": id}),
                );
            }
            (429, _) => {
                tally.upstream_429.fetch_add(1, Ordering::Relaxed);
            }
            (s, _) => panic!("the upstream answered {s}: {body}"),
        }
    }
}

/// Runs [`CLIENTS`] clients spread over `bases` for [`RUN`] against `upstream`.
fn drive(bases: &[String], upstream: &Upstream, started: Instant) -> Arc<Tally> {
    let tally = Arc::new(Tally::default());
    let until = started + RUN;
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (base, up, tally) = (
                bases[i % bases.len()].clone(),
                upstream.url(),
                tally.clone(),
            );
            std::thread::spawn(move || client(i, &base, &up, until, &tally))
        })
        .collect();
    for t in threads {
        t.join().expect("a client panicked");
    }
    tally
}

/// What every run must show: no 429 from the upstream, at least 90 % of its rpm used, no
/// more jobs at once than it allows, every report taken.
fn assert_saturated_without_429(tally: &Tally, upstream: &Upstream, started: Instant, what: &str) {
    let seen = upstream.seen();
    // Calls that reached the upstream within the run (clients waiting at its end finish
    // after it).
    let ok = seen
        .iter()
        .filter(|s| s.status == 200 && s.at < started + RUN)
        .count() as u64;
    eprintln!(
        "{what}: {} grants, {} refusals, upstream {} ok ({} within the run), {} limited (max in flight {})",
        tally.granted.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
        tally.upstream_ok.load(Ordering::Relaxed),
        ok,
        upstream.limited(),
        upstream.max_in_flight(),
    );
    assert_eq!(upstream.limited(), 0, "{what}: the upstream answered 429");
    assert_eq!(tally.upstream_429.load(Ordering::Relaxed), 0, "{what}");
    // The rpm capacity of a 60 s run from an empty window is RPM calls.
    let capacity = RPM as u64 * RUN.as_secs() / 60;
    assert!(
        ok * 10 >= capacity * 9,
        "{what}: {ok} calls made, under 90 % of the {capacity} the upstream allowed"
    );
    assert!(upstream.max_in_flight() <= CONCURRENCY, "{what}");
    assert_eq!(seen.iter().filter(|s| s.status == 429).count(), 0, "{what}");
    assert_eq!(tally.reports_failed.load(Ordering::Relaxed), 0, "{what}");
}

#[test]
fn clients_that_ask_first_never_meet_a_429_and_use_the_rpm() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(RPM, CONCURRENCY, Duration::from_millis(800));
    let daemon = common::Daemon::start(
        dir.path(),
        &format!("[server]\nlisten = \"127.0.0.1:0\"\n{ORG}"),
        &[],
    );
    let started = Instant::now();
    let tally = drive(std::slice::from_ref(&daemon.base), &upstream, started);
    assert_saturated_without_429(&tally, &upstream, started, "one daemon");
    let granted = common::metric(
        &daemon.base,
        r#"ratewarden_admissions_total{org="acme",outcome="granted"}"#,
    );
    assert_eq!(granted, Some(tally.granted.load(Ordering::Relaxed) as f64));
}

#[test]
fn clients_spread_over_three_replicas_never_meet_a_429_and_use_the_rpm() {
    let _one = one_at_a_time();
    let redis_dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(redis_dir.path(), &[]);
    let upstream = Upstream::start(RPM, CONCURRENCY, Duration::from_millis(800));
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let daemons: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let config = format!(
                "[server]\nlisten = \"127.0.0.1:0\"\n{ORG}[cluster]\nredis_url = \"{}\"\nreplica_id = \"r{i}\"\n",
                redis.url()
            );
            common::Daemon::start(d.path(), &config, &[])
        })
        .collect();
    let bases: Vec<String> = daemons.iter().map(|d| d.base.clone()).collect();
    let started = Instant::now();
    let tally = drive(&bases, &upstream, started);
    assert_saturated_without_429(&tally, &upstream, started, "three replicas");
    // Every replica holds the same grants: each says the org used the same rpm.
    let rpm: Vec<_> = bases
        .iter()
        .map(|b| common::metric(b, r#"ratewarden_usage{org="acme",dimension="rpm"}"#))
        .collect();
    assert!(rpm.windows(2).all(|w| w[0] == w[1]), "{rpm:?}");
}

/// The batch dispatcher asks the same arbiter, under `[scheduler] share`: grants apps got
/// leave the batch only the rest of its share, and what the batch was granted counts for
/// the apps that ask after it.
#[test]
fn the_batch_dispatcher_takes_its_slots_from_the_same_arbiter() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(100, 100, Duration::from_millis(100));
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[tiers.t]\nrpm = 20\n\n[[orgs]]\nid = \"acme\"\ntier = \"t\"\n\n\
         [scheduler]\nshare = 0.5\n\n[[upstreams]]\nname = \"fake\"\nbase_url = \"{}\"\norg = \"acme\"\ntimeout = \"2s\"\n",
        upstream.url()
    );
    let daemon = common::Daemon::start(dir.path(), &config, &[]);
    let admit = |n: usize| -> usize {
        (0..n)
            .filter(|_| {
                let ask = json!({"org": "acme", "app": "interactive"});
                matches!(
                    post_json(&format!("{}/v1/admit", daemon.base), &ask),
                    Some((200, _))
                )
            })
            .count()
    };
    // Apps take 8 of the 20: the batch's share (10) has 2 left.
    assert_eq!(admit(8), 8);
    let requests: Vec<Value> = (0..6)
        .map(|i| json!({"method": "POST", "path": "/v1/videos", "body": {"n": i}}))
        .collect();
    common::create_batch(
        &daemon,
        &json!({"upstream": "fake", "org": "acme", "mode": "asap", "requests": requests})
            .to_string(),
    );
    // The spacing at the share is 6 s: the first goes at once, the second 6 s later.
    let sent = common::eventually(20, || (upstream.seen().len() >= 2).then_some(()));
    assert!(sent.is_some(), "two batch requests were sent");
    common::observe(
        Duration::from_secs(7),
        "the batch waiting for room it has not got",
    );
    assert_eq!(
        upstream.seen().len(),
        2,
        "the batch took only the rest of its share"
    );
    // Apps see the batch's grants: 20 - 8 - 2 = 10 left for them.
    assert_eq!(admit(12), 10);
    let granted = common::metric(
        &daemon.base,
        r#"ratewarden_admissions_total{org="acme",outcome="granted"}"#,
    )
    .unwrap_or(0.0);
    assert_eq!(
        granted,
        8.0 + 2.0 + 10.0,
        "every grant, the batch's included, came from the arbiter"
    );
    assert_eq!(upstream.limited(), 0);
}

/// Apps waiting for room come first: the dispatcher asks only while none of the org's asks
/// wait, so a batch request that would fit (it needs no tokens) waits while an app waits for
/// tokens, and goes once the app is served. (An ask waits only when it can fit within its
/// wait: here the tokens of a minute ago free up 7 s after it asks.)
#[test]
fn the_batch_comes_behind_apps_that_wait() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(100, 100, Duration::from_millis(200));
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[tiers.t]\nrpm = 100\ntpm = 1000\n\n[[orgs]]\nid = \"acme\"\ntier = \"t\"\n\n\
         [scheduler]\nshare = 1.0\n\n[[upstreams]]\nname = \"fake\"\nbase_url = \"{}\"\norg = \"acme\"\ntimeout = \"2s\"\n",
        upstream.url()
    );
    let daemon = common::Daemon::start(dir.path(), &config, &[]);
    let base = daemon.base.clone();
    let url = format!("{base}/v1/admit");
    let first = post_json(&url, &json!({"org": "acme", "app": "app", "tokens": 900}));
    let granted_at = Instant::now();
    assert_eq!(first.map(|r| r.0), Some(200));
    // The 900 tokens leave the window 62 s after their grant (61 one-second buckets and
    // the 1 s margin).
    common::pace(
        Duration::from_secs(55).saturating_sub(granted_at.elapsed()),
        "the tokens' window moving on",
    );
    // An app waits for 500 tokens; a batch request needs none and would fit at once.
    let waiter = {
        let url = url.clone();
        std::thread::spawn(move || {
            post_json(
                &url,
                &json!({"org": "acme", "app": "app", "tokens": 500, "wait": "15s"}),
            )
        })
    };
    common::eventually(5, || {
        common::metric(&base, r#"ratewarden_admission_waiting{org="acme"}"#).filter(|n| *n == 1.0)
    })
    .expect("the app waits");
    common::create_batch(
        &daemon,
        &json!({"upstream": "fake", "org": "acme", "mode": "asap",
                "requests": [{"method": "POST", "path": "/v1/videos", "body": {}}]})
        .to_string(),
    );
    common::observe(Duration::from_millis(1500), "the batch while an app waits");
    assert_eq!(
        upstream.seen().len(),
        0,
        "the batch came behind the waiting app"
    );
    let (status, body) = waiter.join().unwrap().expect("the waiter is answered");
    assert_eq!(status, 200, "{body}");
    assert!(
        granted_at.elapsed() >= Duration::from_secs(61),
        "served when its tokens fit"
    );
    common::eventually(10, || (upstream.seen().len() == 1).then_some(()))
        .expect("the batch request is sent once no app waits");
    assert_eq!(upstream.limited(), 0);
}
