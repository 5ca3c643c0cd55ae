//! Scheduler decisions with an injected clock: no HTTP, no waiting.

use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use super::*;
use crate::clock::{Clock, ManualClock};
use crate::events::{ParseContext, parse_event};
use crate::tracker::Tracker;

/// Friday 2026-11-27 14:00 EST: the default off-peak windows are closed until 19:00 EST.
const FRI_14H: i64 = 1_795_806_000_000;
const FRI_19H: i64 = FRI_14H + 5 * 3_600_000;

fn config(extra: &str) -> Config {
    Config::parse(
        &format!(
            "[tiers.up]\nrpm = 120\nconcurrency = 4\n[[orgs]]\nid = \"acme\"\ntier = \"up\"\n\
             [[upstreams]]\nname = \"u\"\nbase_url = \"http://127.0.0.1:9\"\norg = \"acme\"\n\
             [scheduler]\nshare = 0.5\nmax_retries = 2\ncircuit_after = 2\ncircuit_cooldown = \"30s\"\nbackoff_base = \"1s\"\nbackoff_cap = \"4s\"\n{extra}"
        ),
        "t.toml",
    )
    .unwrap()
}

struct Fixture {
    clock: Arc<ManualClock>,
    live: Live,
    sched: Scheduler,
}

fn fixture(extra: &str, at: i64) -> Fixture {
    let cfg = config(extra);
    let clock = Arc::new(ManualClock::new(at));
    let live = Live::in_memory(Tracker::new(&cfg), clock.clone());
    let metrics = Arc::new(Metrics::new(Arc::new(live.clone()), &cfg));
    let sched = Scheduler::new(&cfg, live.clone(), metrics, Vec::new(), Vec::new(), at);
    Fixture { clock, live, sched }
}

fn batch(mode: &str, n: usize) -> NewBatch {
    serde_json::from_value(json!({
        "upstream": "u",
        "mode": mode,
        "requests": (0..n).map(|i| json!({"path": "/v1/videos", "body": {"prompt": format!("clip {i}")}})).collect::<Vec<_>>(),
    }))
    .unwrap()
}

/// Every item row of a batch.
fn rows(sched: &Scheduler, id: &str) -> Vec<Value> {
    sched.items_page(id, None, usize::MAX).unwrap().0
}

fn send(f: &Fixture) -> Option<Dispatch> {
    match f.sched.next("u", f.clock.now_ms()) {
        Next::Send(d) => Some(d),
        _ => None,
    }
}

fn answer(status: u16, retry_after: Option<u64>) -> Attempt {
    Attempt::Answer {
        status,
        body: format!("{{\"status\":{status}}}"),
        retry_after: retry_after.map(Duration::from_secs),
        job_id: None,
    }
}

#[test]
fn offpeak_batches_wait_for_the_window_then_start() {
    let f = fixture("", FRI_14H);
    f.sched
        .create(batch("offpeak", 2), None, f.live.now_ms())
        .unwrap();
    match f.sched.next("u", FRI_14H) {
        Next::Wait(until) => assert_eq!(until, FRI_19H, "waits for 19:00 EST"),
        other => panic!("{other:?}"),
    }
    f.clock.set(FRI_19H - 1);
    assert!(send(&f).is_none(), "still closed one ms before");
    f.clock.set(FRI_19H);
    assert!(send(&f).is_some(), "sends once the window opens");
    // An asap batch does not wait.
    let g = fixture("", FRI_14H);
    g.sched
        .create(batch("asap", 1), None, g.live.now_ms())
        .unwrap();
    assert!(send(&g).is_some());
}

#[test]
fn dispatches_are_evenly_spaced_at_the_share() {
    // 120 rpm × 0.5 = 60 rpm: one every second.
    let f = fixture("", FRI_14H);
    f.sched
        .create(batch("asap", 3), None, f.live.now_ms())
        .unwrap();
    let d = send(&f).unwrap();
    f.sched.settle(&d, answer(200, None), f.live.now_ms());
    f.clock.advance(500);
    match f.sched.next("u", f.clock.now_ms()) {
        Next::Wait(until) => assert_eq!(until, FRI_14H + 1_000),
        other => panic!("{other:?}"),
    }
    f.clock.advance(500);
    assert!(send(&f).is_some());
}

fn interactive(f: &Fixture, n: usize) {
    let now = f.clock.now_ms();
    let mut events: Vec<_> = (0..n)
        .map(|_| {
            parse_event(
                format!(r#"{{"org":"acme","ts":{now},"status":200}}"#)
                    .leak()
                    .as_bytes(),
                &ParseContext::default(),
            )
            .unwrap()
            .event
        })
        .collect();
    f.live.apply(&mut events, now, None);
}

#[test]
fn interactive_traffic_leaves_less_for_batches() {
    let f = fixture("", FRI_14H);
    f.sched
        .create(batch("asap", 2), None, f.live.now_ms())
        .unwrap();
    // 59 interactive requests this minute: one more reaches the batch share of 60.
    interactive(&f, 59);
    assert!(send(&f).is_some());
    f.clock.advance(1_000);
    assert!(
        matches!(f.sched.next("u", f.clock.now_ms()), Next::Wait(_)),
        "the answer is still outstanding: 59 + 1 = 60"
    );
    // Usage falls out of the window: room again.
    f.clock.advance(61_000);
    assert!(send(&f).is_some());
}

#[test]
fn concurrency_share_counts_requests_awaiting_an_answer() {
    // 4 concurrent × 0.5 = 2.
    let f = fixture("", FRI_14H);
    f.sched
        .create(batch("asap", 3), None, f.live.now_ms())
        .unwrap();
    assert!(send(&f).is_some());
    f.clock.advance(1_000);
    assert!(send(&f).is_some());
    f.clock.advance(1_000);
    assert!(
        matches!(f.sched.next("u", f.clock.now_ms()), Next::Wait(_)),
        "two awaiting answers fill the share"
    );
}

#[test]
fn retry_after_is_honoured_and_failures_are_final() {
    let f = fixture("", FRI_14H);
    f.sched
        .create(batch("asap", 2), None, f.live.now_ms())
        .unwrap();
    let d = send(&f).unwrap();
    f.sched.settle(&d, answer(429, Some(20)), f.live.now_ms());
    let items = rows(&f.sched, &d.batch);
    assert_eq!(items[0]["state"], "retrying");
    // The other item goes meanwhile; the retried one not before 20 s.
    f.clock.advance(1_000);
    let other = send(&f).unwrap();
    assert_eq!(other.index, 1);
    f.sched.settle(&other, answer(400, None), f.live.now_ms());
    let items = rows(&f.sched, &d.batch);
    assert_eq!(items[1]["state"], "failed", "400 fails at once");
    assert_eq!(items[1]["attempts"], 1);
    assert!(items[1]["error"].as_str().unwrap().starts_with("HTTP 400"));
    f.clock.set(FRI_14H + 19_999);
    assert!(send(&f).is_none());
    f.clock.set(FRI_14H + 20_000);
    let again = send(&f).unwrap();
    assert_eq!(
        (again.index, again.key.clone()),
        (0, d.key.clone()),
        "same idempotency key on retry"
    );
}

#[test]
fn max_retries_then_failed() {
    let f = fixture("", FRI_14H);
    f.sched
        .create(batch("asap", 1), None, f.live.now_ms())
        .unwrap();
    for attempt in 1..=3 {
        let d = send(&f).unwrap_or_else(|| panic!("attempt {attempt}"));
        f.sched.settle(&d, answer(503, None), f.live.now_ms());
        f.clock.advance(10_000);
    }
    let id = f.sched.list(f.live.now_ms())[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let items = rows(&f.sched, &id);
    assert_eq!(items[0]["state"], "failed", "1 attempt + max_retries 2");
    assert_eq!(
        f.sched.get(&id, f.live.now_ms()).unwrap()["state"],
        "completed"
    );
}

#[test]
fn circuit_opens_after_consecutive_429s_and_half_opens() {
    let f = fixture("", FRI_14H);
    f.sched
        .create(batch("asap", 3), None, f.live.now_ms())
        .unwrap();
    for _ in 0..2 {
        let d = send(&f).unwrap();
        f.sched.settle(&d, answer(429, Some(1)), f.live.now_ms());
        f.clock.advance(1_000);
    }
    // Open for 30 s from the second 429.
    match f.sched.next("u", f.clock.now_ms()) {
        Next::Wait(until) => assert_eq!(until, FRI_14H + 1_000 + 30_000),
        other => panic!("{other:?}"),
    }
    f.clock.set(FRI_14H + 31_000);
    let probe = send(&f).expect("one probe after the cooldown");
    f.clock.advance(1_000);
    assert!(send(&f).is_none(), "only one probe at a time");
    f.sched.settle(&probe, answer(200, None), f.live.now_ms());
    assert!(send(&f).is_some(), "closed again after a success");
}

#[test]
fn cancel_stops_pending_items() {
    let f = fixture("", FRI_14H);
    let (b, _, _) = f
        .sched
        .create(batch("asap", 3), None, f.live.now_ms())
        .unwrap();
    let id = b["id"].as_str().unwrap();
    let d = send(&f).unwrap();
    let (summary, _) = f.sched.cancel(id, f.live.now_ms()).unwrap();
    assert_eq!(summary["state"], "cancelled");
    assert_eq!(summary["counts"]["cancelled"], 2);
    assert_eq!(summary["counts"]["in_flight"], 1, "the one sent finishes");
    f.clock.advance(2_000);
    assert!(send(&f).is_none());
    f.sched.settle(&d, answer(200, None), f.live.now_ms());
    assert_eq!(rows(&f.sched, id)[0]["state"], "succeeded");
}

#[test]
fn restored_in_flight_items_are_sent_again_with_their_key() {
    let f = fixture("", FRI_14H);
    f.sched
        .create(batch("asap", 1), None, f.live.now_ms())
        .unwrap();
    let d = send(&f).unwrap();
    // What the store would hold: the header and the item as in flight.
    let (batches, items) = {
        let st = f.sched.lock();
        let fx = Effects {
            headers: vec![0],
            items: vec![(0, 0)],
            ..Effects::default()
        };
        persist::records(&st, &fx, &f.sched.metrics)
    };
    let cfg = config("");
    let metrics = Arc::new(Metrics::new(Arc::new(f.live.clone()), &cfg));
    let restored = Scheduler::new(
        &cfg,
        f.live.clone(),
        metrics,
        batches,
        items,
        f.live.now_ms(),
    );
    let again = match restored.next("u", FRI_14H + 5_000) {
        Next::Send(d) => d,
        other => panic!("{other:?}"),
    };
    assert_eq!(again.key, d.key);
    assert_eq!(rows(&restored, &d.batch)[0]["attempts"], 2);
}

#[test]
fn polled_jobs_hold_their_item_until_done() {
    let f = fixture(
        "[upstreams.poll]\nstatus_path = \"/v1/videos/{id}\"\ndone = [\"completed\"]\nfailed = [\"failed\"]\ninterval = \"1s\"\n",
        FRI_14H,
    );
    f.sched
        .create(batch("asap", 1), None, f.live.now_ms())
        .unwrap();
    let d = send(&f).unwrap();
    let ev = f
        .sched
        .settle(
            &d,
            Attempt::Answer {
                status: 200,
                body: r#"{"id":"vid_1","status":"queued"}"#.into(),
                retry_after: None,
                job_id: Some("vid_1".into()),
            },
            f.live.now_ms(),
        )
        .unwrap();
    assert_eq!(
        ev.job_id.as_deref(),
        Some("vid_1"),
        "the request event starts a job in the tracker"
    );
    assert_eq!(rows(&f.sched, &d.batch)[0]["state"], "in_flight");
    let polls = f.sched.polls_due("u", f.clock.now_ms());
    assert_eq!(polls.len(), 1);
    assert!(
        f.sched.polls_due("u", f.clock.now_ms() + 500).is_empty(),
        "not before the interval"
    );
    assert!(
        f.sched
            .polled(&polls[0], JobStatus::Running, f.live.now_ms())
            .is_none()
    );
    let done = f
        .sched
        .polled(
            &polls[0],
            JobStatus::Done(r#"{"status":"completed"}"#.into()),
            f.live.now_ms(),
        )
        .unwrap();
    assert_eq!(done.kind, crate::events::Kind::JobCompleted);
    assert_eq!(rows(&f.sched, &d.batch)[0]["state"], "succeeded");
}

#[test]
fn batch_limits_and_validation() {
    let f = fixture("", FRI_14H);
    let err = |v: Value| {
        f.sched
            .create(serde_json::from_value(v).unwrap(), None, FRI_14H)
            .unwrap_err()
    };
    assert!(matches!(
        err(json!({"upstream": "nope", "requests": [{"path": "/x"}]})),
        BatchError::NotFound(_)
    ));
    assert!(matches!(
        err(json!({"upstream": "u", "org": "other", "requests": [{"path": "/x"}]})),
        BatchError::Invalid(_)
    ));
    assert!(matches!(
        err(json!({"upstream": "u", "requests": []})),
        BatchError::Invalid(_)
    ));
    assert!(matches!(
        err(json!({"upstream": "u", "requests": [{"path": "x"}]})),
        BatchError::Invalid(_)
    ));
    assert!(matches!(
        err(json!({"upstream": "u", "requests": [{"path": "/x", "method": "TRACE"}]})),
        BatchError::Invalid(_)
    ));
    let small = {
        let cfg = Config::parse(
            "[[upstreams]]\nname = \"u\"\nbase_url = \"http://x\"\norg = \"acme\"\n[scheduler]\nmax_batch_items = 2\nmax_pending_items = 3\n",
            "t",
        )
        .unwrap();
        let clock = Arc::new(ManualClock::new(FRI_14H));
        let live = Live::in_memory(Tracker::new(&cfg), clock);
        let metrics = Arc::new(Metrics::new(Arc::new(live.clone()), &cfg));
        Scheduler::new(&cfg, live, metrics, Vec::new(), Vec::new(), FRI_14H)
    };
    assert!(matches!(
        small.create(batch("asap", 3), None, FRI_14H),
        Err(BatchError::TooLarge(_))
    ));
    small.create(batch("asap", 2), None, FRI_14H).unwrap();
    assert!(matches!(
        small.create(batch("asap", 2), None, FRI_14H),
        Err(BatchError::Full(_))
    ));
    // Caller keys are kept.
    let (b, _, _) = f
        .sched
        .create(serde_json::from_value(json!({"upstream": "u", "mode": "asap", "requests": [{"path": "/x", "idempotency_key": "mine-1"}]})).unwrap(), None, FRI_14H)
        .unwrap();
    assert_eq!(
        rows(&f.sched, b["id"].as_str().unwrap())[0]["idempotency_key"],
        "mine-1"
    );
}

#[test]
fn eta_follows_the_pacing_rate_and_the_windows() {
    let f = fixture("", FRI_14H);
    let (asap, _, _) = f
        .sched
        .create(batch("asap", 60), None, f.live.now_ms())
        .unwrap();
    // 60 rpm: 60 items take a minute.
    assert_eq!(asap["eta"], crate::clock::rfc3339(FRI_14H + 60_000));
    let (night, _, _) = f
        .sched
        .create(batch("offpeak", 60), None, f.live.now_ms())
        .unwrap();
    // Behind the asap batch (120 items at 60 rpm) once the window opens at 19:00.
    assert_eq!(night["eta"], crate::clock::rfc3339(FRI_19H + 120_000));
    assert_eq!(night["next_dispatch"], crate::clock::rfc3339(FRI_19H));
}

#[test]
fn finished_batches_are_forgotten_after_retention() {
    let f = fixture("retention = \"1h\"\n", FRI_14H);
    let (done, _, _) = f
        .sched
        .create(batch("asap", 1), None, f.live.now_ms())
        .unwrap();
    let (open, _, _) = f
        .sched
        .create(batch("offpeak", 1), None, f.live.now_ms())
        .unwrap();
    let d = send(&f).unwrap();
    assert_eq!(d.batch, done["id"].as_str().unwrap());
    f.clock.advance(10_000);
    f.sched.settle(&d, answer(200, None), f.live.now_ms());
    let done = done["id"].as_str().unwrap();
    let open = open["id"].as_str().unwrap();
    // Kept for the retention from when it finished, not from when it was created.
    assert_eq!(f.sched.prune(FRI_14H + 10_000 + 3_599_999), 0);
    assert!(f.sched.get(done, f.live.now_ms()).is_ok());
    assert_eq!(f.sched.prune(FRI_14H + 10_000 + 3_600_000), 1);
    assert!(matches!(
        f.sched.get(done, f.live.now_ms()),
        Err(BatchError::NotFound(_))
    ));
    // A batch with work left is never forgotten, however old.
    assert_eq!(f.sched.prune(FRI_14H + 30 * 86_400_000), 0);
    assert!(f.sched.get(open, f.live.now_ms()).is_ok());
    assert_eq!(f.sched.list(f.live.now_ms()).len(), 1);
    // The index still finds what is left after the removal.
    f.sched.cancel(open, f.live.now_ms()).unwrap();
    assert_eq!(
        f.sched.get(open, f.live.now_ms()).unwrap()["state"],
        "cancelled"
    );
}

#[test]
fn a_batch_with_an_item_of_a_newer_format_is_never_forgotten() {
    let f = fixture("retention = \"1h\"\n", FRI_14H);
    f.sched
        .create(batch("asap", 2), None, f.live.now_ms())
        .unwrap();
    for _ in 0..2 {
        let d = send(&f).unwrap();
        f.clock.advance(1_000);
        f.sched.settle(&d, answer(200, None), f.live.now_ms());
    }
    let (batches, items) = {
        let st = f.sched.lock();
        assert!(st.batches[0].header.finished_ms.is_some());
        let fx = Effects {
            headers: vec![0],
            items: vec![(0, 0), (0, 1)],
            ..Effects::default()
        };
        persist::records(&st, &fx, &f.sched.metrics)
    };
    let restore = |items: Vec<ItemRecord>| {
        let cfg = config("retention = \"1h\"\n");
        let metrics = Arc::new(Metrics::new(Arc::new(f.live.clone()), &cfg));
        Scheduler::new(
            &cfg,
            f.live.clone(),
            metrics,
            batches.clone(),
            items,
            FRI_14H,
        )
    };
    // As written: finished, so forgotten after the retention.
    assert_eq!(restore(items.clone()).prune(FRI_14H + 86_400_000), 1);
    // Its second item written by a newer ratewarden: kept, rows and all.
    let mut newer = items;
    newer[1].record[4] += 1;
    let kept = restore(newer);
    assert_eq!(kept.prune(FRI_14H + 86_400_000), 0);
    assert_eq!(kept.list(FRI_14H).len(), 1);
}

#[test]
fn item_rows_page_by_index() {
    let f = fixture("", FRI_14H);
    let (b, _, _) = f
        .sched
        .create(batch("offpeak", 5), None, f.live.now_ms())
        .unwrap();
    let id = b["id"].as_str().unwrap();
    let idx = |rows: &[Value]| {
        rows.iter()
            .map(|r| r["index"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    let (rows, more) = f.sched.items_page(id, None, 2).unwrap();
    assert_eq!((idx(&rows), more), (vec![0, 1], true));
    assert_eq!(f.sched.page_end(id, None, 2).unwrap(), Some(1));
    let (rows, more) = f.sched.items_page(id, Some(1), 2).unwrap();
    assert_eq!((idx(&rows), more), (vec![2, 3], true));
    let (rows, more) = f.sched.items_page(id, Some(3), 2).unwrap();
    assert_eq!((idx(&rows), more), (vec![4], false));
    assert_eq!(f.sched.page_end(id, Some(3), 2).unwrap(), None);
    let (rows, more) = f.sched.items_page(id, Some(4), 2).unwrap();
    assert!(rows.is_empty() && !more);
    assert!(f.sched.items_page("nope", None, 2).is_err());
}

#[test]
fn long_answers_are_cut_and_say_so() {
    let f = fixture("max_result_bytes = 256\n", FRI_14H);
    let (b, _, _) = f
        .sched
        .create(batch("asap", 2), None, f.live.now_ms())
        .unwrap();
    let id = b["id"].as_str().unwrap();
    let d = send(&f).unwrap();
    let long = format!("{{\"data\":\"{}\"}}", "é".repeat(400));
    f.sched.settle(
        &d,
        Attempt::Answer {
            status: 200,
            body: long.clone(),
            retry_after: None,
            job_id: None,
        },
        f.live.now_ms(),
    );
    let row = &rows(&f.sched, id)[0];
    assert_eq!(row["result_truncated"], true);
    assert_eq!(row["result_bytes"], long.len());
    let kept = row["result"].as_str().unwrap();
    assert!(kept.len() <= 256 && kept.len() >= 254, "{}", kept.len());
    assert!(long.starts_with(kept));
    // A short answer is kept whole, as JSON, with no flag.
    f.clock.advance(2_000);
    let d = send(&f).unwrap();
    f.sched.settle(&d, answer(200, None), f.live.now_ms());
    let row = &rows(&f.sched, id)[1];
    assert_eq!(row["result"]["status"], 200);
    assert!(row.get("result_truncated").is_none());
}

#[test]
fn batches_stored_before_retention_existed_still_load() {
    // Encoded exactly as the first stores wrote them (no finished_ms, no result_bytes).
    #[derive(Serialize)]
    struct OldHeader<'a> {
        id: &'a str,
        upstream: &'a str,
        org: &'a str,
        mode: Mode,
        created_ms: i64,
        cancelled: bool,
    }
    #[derive(Serialize)]
    struct OldItem<'a> {
        index: u32,
        method: &'a str,
        path: &'a str,
        body: Option<&'a str>,
        key: &'a str,
        state: ItemState,
        attempts: u32,
        next_attempt_ms: i64,
        dispatched_ms: Option<i64>,
        last_status: Option<u16>,
        job_id: Option<&'a str>,
        result: Option<&'a str>,
        error: Option<&'a str>,
    }
    let header = postcard::to_stdvec(&OldHeader {
        id: "old",
        upstream: "u",
        org: "acme",
        mode: Mode::Asap,
        created_ms: FRI_14H - 30 * 86_400_000,
        cancelled: false,
    })
    .unwrap();
    let item = postcard::to_stdvec(&OldItem {
        index: 0,
        method: "POST",
        path: "/v1/videos",
        body: None,
        key: "k0",
        state: ItemState::Succeeded,
        attempts: 1,
        next_attempt_ms: 0,
        dispatched_ms: Some(FRI_14H - 30 * 86_400_000),
        last_status: Some(200),
        job_id: None,
        result: Some("{\"ok\":true}"),
        error: None,
    })
    .unwrap();
    let cfg = config("retention = \"1h\"\n");
    let clock = Arc::new(ManualClock::new(FRI_14H));
    let live = Live::in_memory(Tracker::new(&cfg), clock.clone());
    let metrics = Arc::new(Metrics::new(Arc::new(live.clone()), &cfg));
    let sched = Scheduler::new(
        &cfg,
        live,
        metrics,
        vec![BatchRecord {
            id: "old".into(),
            record: header,
        }],
        vec![ItemRecord {
            batch: "old".into(),
            index: 0,
            record: item,
        }],
        FRI_14H,
    );
    assert_eq!(sched.get("old", FRI_14H).unwrap()["state"], "completed");
    assert_eq!(rows(&sched, "old")[0]["result"]["ok"], true);
    // Finished long ago but with no date: kept a full retention from this start.
    assert_eq!(sched.prune(FRI_14H + 3_599_999), 0);
    assert_eq!(sched.prune(FRI_14H + 3_600_000), 1);
}
