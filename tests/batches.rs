//! Black-box: the dispatcher of the real binary against a fake rate-limited upstream, and the
//! dispatcher driven by an injected clock through an off-peak window.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::upstream::{Misbehave, Upstream};
use common::{Daemon, eventually, http, metric};
use serde_json::{Value, json};

const KEY: (&str, &str) = ("T_UP_KEY", "sk-test-do-not-leak");

fn config(up: &Upstream, rpm: u64, concurrency: u64, share: f64, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[tiers.api]
rpm = {rpm}
concurrency = {concurrency}

[[orgs]]
id = "acme"
tier = "api"

[[upstreams]]
name = "fake"
base_url = "{}"
api_key_env = "T_UP_KEY"
org = "acme"
timeout = "1s"

[scheduler]
share = {share}
max_retries = 5
backoff_base = "100ms"
backoff_cap = "400ms"
circuit_after = 3
circuit_cooldown = "2s"
{extra}
"#,
        up.url()
    )
}

fn submit(d: &Daemon, n: usize) -> String {
    let requests: Vec<Value> = (0..n)
        .map(|i| json!({"path": "/v1/videos", "body": {"prompt": format!("clip {i}")}}))
        .collect();
    let body = json!({"upstream": "fake", "mode": "asap", "requests": requests}).to_string();
    common::create_batch(d, &body)
}

fn batch(d: &Daemon, id: &str) -> Value {
    let (_, body) = http("GET", &format!("{}/v1/batches/{id}", d.base), &[], b"").unwrap();
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

fn items(d: &Daemon, id: &str) -> Vec<Value> {
    let (_, body) = http(
        "GET",
        &format!("{}/v1/batches/{id}/items", d.base),
        &[],
        b"",
    )
    .unwrap();
    body.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn completed(d: &Daemon, id: &str, secs: u64) -> Value {
    eventually(secs, || {
        let b = batch(d, id);
        (b["state"] == "completed").then_some(b)
    })
    .unwrap_or_else(|| panic!("batch did not complete: {}\n{}", batch(d, id), d.log_text()))
}

#[test]
fn paced_evenly_under_the_share_without_a_single_429() {
    let up = Upstream::start(1200, 100, Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    // 1200 rpm × 0.5 = 600 rpm: one request every 100 ms.
    let d = Daemon::start(dir.path(), &config(&up, 1200, 100, 0.5, ""), &[KEY]);
    let id = submit(&d, 15);
    let b = completed(&d, &id, 20);
    assert_eq!(b["counts"]["succeeded"], 15);
    let seen = up.seen();
    assert_eq!(seen.len(), 15);
    assert_eq!(up.limited(), 0, "no 429 caused by our own pacing");
    for pair in seen.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_millis(90),
            "evenly spaced, no bursts: {gap:?}"
        );
    }
    assert!(
        seen.iter()
            .all(|s| s.authorization.as_deref() == Some("Bearer sk-test-do-not-leak"))
    );
    let keys: HashSet<_> = seen
        .iter()
        .map(|s| s.key.clone().expect("Idempotency-Key on every attempt"))
        .collect();
    assert_eq!(keys.len(), 15);
    // The requests were counted as the org's usage.
    assert!(
        metric(&d.base, r#"ratewarden_usage{org="acme",dimension="rpm"}"#).unwrap_or(0.0) >= 15.0
    );
    assert_eq!(
        metric(
            &d.base,
            r#"ratewarden_batch_requests_total{org="acme",outcome="success"}"#
        ),
        Some(15.0)
    );
    assert_eq!(
        metric(
            &d.base,
            r#"ratewarden_batch_items{org="acme",state="succeeded"}"#
        ),
        Some(15.0)
    );
    assert_eq!(
        metric(
            &d.base,
            r#"ratewarden_events_ingested_total{source="scheduler"}"#
        ),
        Some(15.0)
    );
    // The key is never stored, logged or answered.
    let listing = serde_json::to_string(&items(&d, &id)).unwrap();
    assert!(!listing.contains("sk-test") && !d.log_text().contains("sk-test"));
    let store = std::fs::read(dir.path().join("ratewarden-data/state.sqlite")).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&store).contains("sk-test"));
}

#[test]
fn interactive_traffic_leaves_the_batch_only_the_rest_of_the_share() {
    let up = Upstream::start(10_000, 100, Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    // 600 rpm × 0.5 = 300 for batches and interactive traffic together.
    let d = Daemon::start(dir.path(), &config(&up, 600, 100, 0.5, ""), &[KEY]);
    let now = chrono::Utc::now().timestamp_millis();
    let interactive: String = (0..296)
        .map(|_| format!("{{\"org\":\"acme\",\"ts\":{now},\"status\":200}}\n"))
        .collect();
    assert_eq!(d.post_events(&interactive).0, 202);
    let id = submit(&d, 10);
    assert!(eventually(10, || (up.seen().len() >= 4).then_some(())).is_some());
    common::observe(
        Duration::from_secs(2),
        "no batch request beyond the share left this minute",
    );
    assert_eq!(
        up.seen().len(),
        4,
        "296 interactive + 4 batch = 300 this minute"
    );
    let b = batch(&d, &id);
    assert_eq!(b["counts"]["succeeded"], 4);
    assert_eq!(b["counts"]["pending"], 6);
    let usage = metric(&d.base, r#"ratewarden_usage{org="acme",dimension="rpm"}"#).unwrap();
    assert!(usage <= 300.0, "{usage}");
}

#[test]
fn retry_after_is_honoured() {
    let up = Upstream::start(1200, 100, Duration::ZERO);
    up.script(&[Misbehave::TooMany(Some(2))]);
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &config(&up, 1200, 100, 0.5, ""), &[KEY]);
    let id = submit(&d, 2);
    completed(&d, &id, 20);
    let seen = up.seen();
    let first = seen[0].key.clone();
    let attempts: Vec<_> = seen.iter().filter(|s| s.key == first).collect();
    assert_eq!(attempts.len(), 2);
    let gap = attempts[1].at - attempts[0].at;
    assert!(
        gap >= Duration::from_secs(2),
        "Retry-After: 2 honoured, gap {gap:?}"
    );
    assert_eq!(items(&d, &id)[0]["attempts"], 2);
}

#[test]
fn a_400_fails_at_once_with_the_upstreams_answer() {
    let up = Upstream::start(1200, 100, Duration::ZERO);
    up.script(&[Misbehave::BadRequest]);
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &config(&up, 1200, 100, 0.5, ""), &[KEY]);
    let id = submit(&d, 2);
    let b = completed(&d, &id, 20);
    assert_eq!(
        (
            b["counts"]["failed"].as_u64(),
            b["counts"]["succeeded"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let failed = items(&d, &id)
        .into_iter()
        .find(|i| i["state"] == "failed")
        .unwrap();
    assert_eq!(failed["attempts"], 1, "not retried");
    assert_eq!(failed["last_status"], 400);
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("prompt rejected"),
        "{failed}"
    );
    assert_eq!(up.seen().iter().filter(|s| s.status == 400).count(), 1);
    assert_eq!(
        metric(
            &d.base,
            r#"ratewarden_batch_requests_total{org="acme",outcome="client_error"}"#
        ),
        Some(1.0)
    );
    // The operator hears of it without turning on debug logs: the failure with its reason
    // as it happens, and the batch's tally when it finishes.
    let log = d.log_text();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("failed for good")
            && l.contains("prompt rejected")),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("batch finished with failed items")
            && l.contains("\"succeeded\":1")
            && l.contains("\"failed\":1")),
        "{log}"
    );
}

#[test]
fn errors_drops_and_slow_answers_are_retried_with_the_same_key() {
    let up = Upstream::start(1200, 100, Duration::ZERO);
    up.script(&[
        Misbehave::ServerError,
        Misbehave::Drop,
        Misbehave::Slow(Duration::from_millis(1500)),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &config(&up, 1200, 100, 0.5, ""), &[KEY]);
    let id = submit(&d, 1);
    let b = completed(&d, &id, 30);
    assert_eq!(b["counts"]["succeeded"], 1);
    let item = &items(&d, &id)[0];
    assert_eq!(item["attempts"], 4, "503, dropped, timed out, then 200");
    let keys: HashSet<_> = up.seen().iter().map(|s| s.key.clone()).collect();
    assert_eq!(keys.len(), 1, "one key for every attempt: {:?}", up.seen());
}

#[test]
fn the_circuit_opens_after_consecutive_429s_and_recovers() {
    let up = Upstream::start(1200, 100, Duration::ZERO);
    up.script(&[
        Misbehave::TooMany(None),
        Misbehave::TooMany(None),
        Misbehave::TooMany(None),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &config(&up, 1200, 100, 0.5, ""), &[KEY]);
    let id = submit(&d, 4);
    let b = completed(&d, &id, 30);
    assert_eq!(b["counts"]["succeeded"], 4);
    let seen = up.seen();
    let third_429 = seen.iter().filter(|s| s.status == 429).nth(2).unwrap().at;
    let next = seen.iter().find(|s| s.at > third_429).unwrap().at;
    assert!(
        next - third_429 >= Duration::from_millis(1900),
        "quiet while open (cooldown 2 s): {:?}",
        next - third_429
    );
    assert!(d.log_text().contains("circuit open") && d.log_text().contains("circuit closed"));
}

#[test]
fn kill_9_mid_batch_resumes_with_the_same_keys_and_loses_nothing() {
    let mut up = Upstream::start(1200, 100, Duration::ZERO);
    // Slow answers, so some are in flight when the daemon dies.
    up.script(&vec![Misbehave::Slow(Duration::from_millis(400)); 40]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&up, 1200, 100, 0.5, "");
    let mut d = Daemon::start(dir.path(), &cfg, &[KEY]);
    let id = submit(&d, 20);
    assert!(eventually(20, || (up.seen().len() >= 8).then_some(())).is_some());
    d.kill9();
    let before = up.seen().len();
    // Let answers to the dead daemon finish; then a fresh upstream keeps the record.
    assert!(eventually(10, || (up.answering() == 0).then_some(())).is_some());
    let addr = up.addr;
    let old = up.seen();
    drop(up);
    // Once the old upstream's port is free again.
    assert!(eventually(5, || std::net::TcpListener::bind(addr).ok().map(drop)).is_some());
    up = Upstream::start_on(addr, 1200, 100, Duration::ZERO);
    let d = Daemon::start(dir.path(), &cfg, &[KEY]);
    let b = completed(&d, &id, 30);
    assert_eq!(b["counts"]["succeeded"], 20, "nothing lost");
    let listed: HashMap<String, u64> = items(&d, &id)
        .iter()
        .map(|i| {
            (
                i["idempotency_key"].as_str().unwrap().to_string(),
                i["attempts"].as_u64().unwrap(),
            )
        })
        .collect();
    let all: Vec<_> = old
        .iter()
        .chain(up.seen().iter())
        .map(|s| s.key.clone().unwrap())
        .collect();
    let distinct: HashSet<_> = all.iter().cloned().collect();
    assert_eq!(distinct.len(), 20, "every attempt used its item's key");
    assert!(distinct.iter().all(|k| listed.contains_key(k)));
    let repeated = all.len() - distinct.len();
    assert!(
        repeated >= 1,
        "some items were in flight at the crash and were sent again"
    );
    assert!(
        repeated <= before,
        "only items in flight at the crash were sent again ({repeated})"
    );
    // Each item's attempts are the times its key reached an upstream, plus at most one: an
    // attempt the kill cut off after it was stored as in flight and before it left.
    for (key, attempts) in &listed {
        let reached = all.iter().filter(|k| *k == key).count() as u64;
        assert!(
            *attempts == reached || *attempts == reached + 1,
            "{key}: {attempts} attempts, reached the upstream {reached} times"
        );
    }
    let resent: Vec<_> = listed.values().filter(|a| **a > 1).collect();
    // Every item sent twice says so in its attempts. An item can also count an attempt that
    // never arrived: the kill can land after it was stored as in flight and before its
    // request left, and it is then sent again (with its key) after the restart.
    assert!(
        resent.len() >= repeated && resent.len() <= before,
        "items sent twice say so in attempts ({} resent, {repeated} seen twice)",
        resent.len()
    );
}

/// The dispatcher itself, with an injected clock: nothing while the window is closed, then it
/// starts when the clock reaches the window (no waiting for a real evening).
#[test]
fn offpeak_batches_start_when_the_injected_clock_opens_the_window() {
    use ratewarden::clock::ManualClock;
    use ratewarden::config::Config;
    use ratewarden::live::Live;
    use ratewarden::metrics::Metrics;
    use ratewarden::scheduler::Scheduler;
    use ratewarden::scheduler::dispatch::Dispatcher;
    use ratewarden::tracker::Tracker;

    let up = Upstream::start(1200, 100, Duration::ZERO);
    let cfg = Config::parse(&config(&up, 1200, 100, 0.5, ""), "t.toml").unwrap();
    // SAFETY of the environment: this test is the only one in this binary reading T_UP_KEY.
    unsafe { std::env::set_var(KEY.0, KEY.1) };
    // Friday 14:00 EST; the default window opens at 19:00 EST.
    let friday_14h = 1_795_806_000_000;
    let clock = Arc::new(ManualClock::new(friday_14h));
    let live = Live::in_memory(Tracker::new(&cfg), clock.clone());
    let metrics = Arc::new(Metrics::new(Arc::new(live.clone()), &cfg));
    let sched = Arc::new(Scheduler::new(
        &cfg,
        live.clone(),
        metrics.clone(),
        Vec::new(),
        Vec::new(),
        friday_14h,
    ));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dispatcher = Dispatcher::new(sched.clone(), live.clone(), metrics)
            .unwrap()
            .start();
        let req = serde_json::from_value(
            json!({"upstream": "fake", "mode": "offpeak", "requests": [{"path": "/v1/videos"}]}),
        )
        .unwrap();
        sched.create(req, None, friday_14h).unwrap();
        tokio::task::spawn_blocking(|| {
            common::observe(
                Duration::from_secs(1),
                "nothing is sent while the window is closed",
            )
        })
        .await
        .unwrap();
        assert!(up.seen().is_empty(), "window closed: nothing sent");
        clock.set(friday_14h + 5 * 3_600_000);
        let started = Instant::now();
        while up.seen().is_empty() && started.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(up.seen().len(), 1, "sent once the clock reached 19:00 EST");
        dispatcher.stop().await;
    });
}

#[test]
fn a_submission_retried_with_its_idempotency_key_is_one_batch() {
    let up = Upstream::start(1200, 100, Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &config(&up, 1200, 100, 0.5, ""), &[KEY]);
    let body = json!({"upstream": "fake", "mode": "asap", "requests": [{"path": "/v1/videos", "body": {"prompt": "once"}}]})
        .to_string();
    let post = || {
        http(
            "POST",
            &format!("{}/v1/batches", d.base),
            &[
                ("Content-Type", "application/json"),
                ("Idempotency-Key", "nightly-2026-11-30"),
            ],
            body.as_bytes(),
        )
        .unwrap()
    };
    let (first, a) = post();
    let (again, b) = post();
    assert_eq!((first, again), (201, 200), "{a} / {b}");
    let id = |s: &str| serde_json::from_str::<Value>(s).unwrap()["id"].clone();
    assert_eq!(id(&a), id(&b));
    let id = id(&a).as_str().unwrap().to_string();
    completed(&d, &id, 20);
    assert_eq!(up.seen().len(), 1, "the upstream got the request once");
    let (_, list) = http("GET", &format!("{}/v1/batches", d.base), &[], b"").unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&list).unwrap()["batches"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // The key again with another request is not a retry: 422, and nothing is created.
    let other = r#"{"upstream":"fake","mode":"asap","requests":[{"path":"/v1/videos","body":{"prompt":"else"}}]}"#;
    let (status, answer) = http(
        "POST",
        &format!("{}/v1/batches", d.base),
        &[
            ("Content-Type", "application/json"),
            ("Idempotency-Key", "nightly-2026-11-30"),
        ],
        other.as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 422, "{answer}");
    assert!(answer.contains("idempotency_key_reused"), "{answer}");
    let (_, list) = http("GET", &format!("{}/v1/batches", d.base), &[], b"").unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&list).unwrap()["batches"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}
