//! The shared log of `[cluster]` against a real Redis: one order for every reader, whatever
//! number of replicas and tasks append; appends answer only once stored (and, with
//! `min_replicas_ack`, once a real Redis replica holds them); checkpoints stored with their
//! entry; passwords from the settings; an unreachable engine is an error, not a hang.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::redis::Redis;
use ratewarden::cluster::{ClusterError, ClusterSettings, EntryId, FileMarks, SharedLog};

/// The black-box tests run real daemons by the handful, and several measure time (a handover,
/// an outage): one at a time, so they do not starve each other of this machine's two cores.
static DAEMONS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    DAEMONS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn settings(url: &str, replica: &str) -> ClusterSettings {
    ClusterSettings::new(url, replica)
}

async fn read_all(log: &SharedLog) -> Vec<ratewarden::cluster::Entry> {
    let mut reader = log.reader().await.expect("a reader");
    let mut all = Vec::new();
    let mut after = EntryId::ZERO;
    loop {
        let got = reader
            .read_after(after, 500, Duration::from_millis(50))
            .await
            .expect("read");
        let Some(last) = got.last() else {
            return all;
        };
        after = last.id;
        all.extend(got);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_from_many_replicas_and_tasks_read_back_in_one_order() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path(), &[]);
    let mut tasks = Vec::new();
    for replica in ["a", "b", "c"] {
        let log = SharedLog::connect(&settings(&redis.url(), replica))
            .await
            .expect("connect");
        for task in 0..4 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..150 {
                    let bytes = format!("{replica}/{task}/{i}").into_bytes();
                    let id = log
                        .append(&bytes, &FileMarks::default())
                        .await
                        .expect("append");
                    ids.push((id, bytes));
                }
                ids
            }));
        }
    }
    let mut appended = HashMap::new();
    for t in tasks {
        for (id, bytes) in t.await.unwrap() {
            assert!(appended.insert(id, bytes).is_none(), "{id} answered twice");
        }
    }
    assert_eq!(appended.len(), 3 * 4 * 150);

    let one = SharedLog::connect(&settings(&redis.url(), "reader-1"))
        .await
        .unwrap();
    let two = SharedLog::connect(&settings(&redis.url(), "reader-2"))
        .await
        .unwrap();
    let (first, second) = (read_all(&one).await, read_all(&two).await);
    assert_eq!(first, second, "two readers read one order");
    assert_eq!(first.len(), appended.len());
    for pair in first.windows(2) {
        assert!(
            pair[0].id < pair[1].id,
            "{} then {}",
            pair[0].id,
            pair[1].id
        );
    }
    for e in &first {
        assert_eq!(appended.get(&e.id), Some(&e.bytes), "{}", e.id);
        assert!(
            e.bytes.starts_with(format!("{}/", e.replica).as_bytes()),
            "{} names its replica",
            e.id
        );
    }
    // Each task's own appends are in the log in the order it made them.
    let mut last_seen: HashMap<String, u32> = HashMap::new();
    for e in &first {
        let text = String::from_utf8(e.bytes.clone()).unwrap();
        let (who, i) = text.rsplit_once('/').unwrap();
        let i: u32 = i.parse().unwrap();
        if let Some(prev) = last_seen.insert(who.to_owned(), i) {
            assert_eq!(i, prev + 1, "{who}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_of_another_type_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path(), &[]);
    let a = SharedLog::connect(&settings(&redis.url(), "a"))
        .await
        .unwrap();
    redis_cli(&redis, &["SET", "ratewarden:checkpoints:a", "not a hash"]);
    let e = ratewarden::cluster::stored_checkpoints(&a)
        .await
        .expect_err("a string where a hash belongs");
    assert!(
        e.to_string().contains("WRONGTYPE")
            && e.to_string().contains("key_prefix holds another type"),
        "{e}"
    );
    // The entry of an append whose checkpoints cannot be stored is in the log: it is answered
    // stored (its lines are counted; reading them again would count them twice).
    let marks = FileMarks {
        set: vec![("8:1".to_owned(), b"offset=10".to_vec())],
        ..FileMarks::default()
    };
    let id = a
        .append(b"lines", &marks)
        .await
        .expect("the entry is stored");
    assert_eq!(read_all(&a).await.last().map(|e| e.id), Some(id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_is_stored_with_its_entry_per_replica() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path(), &[]);
    let a = SharedLog::connect(&settings(&redis.url(), "a"))
        .await
        .unwrap();
    let b = SharedLog::connect(&settings(&redis.url(), "b"))
        .await
        .unwrap();
    let marks = |offset: &str| FileMarks {
        set: vec![("8:1234".to_owned(), offset.as_bytes().to_vec())],
        ..FileMarks::default()
    };
    a.append(b"lines 1-10", &marks("offset=812")).await.unwrap();
    a.append(b"lines 11-12", &marks("offset=990"))
        .await
        .unwrap();
    a.mark_files(&FileMarks {
        set: vec![("8:99".to_owned(), b"offset=0".to_vec())],
        started: vec!["nginx".to_owned()],
        ..FileMarks::default()
    })
    .await
    .unwrap();
    let mut stored = a.checkpoints().await.unwrap();
    stored.sort();
    assert_eq!(
        stored,
        vec![
            ("8:1234".to_owned(), b"offset=990".to_vec()),
            ("8:99".to_owned(), b"offset=0".to_vec())
        ]
    );
    assert_eq!(a.started_sources().await.unwrap(), vec!["nginx".to_owned()]);
    a.mark_files(&FileMarks {
        forget: vec!["8:99".to_owned()],
        ..FileMarks::default()
    })
    .await
    .unwrap();
    assert_eq!(
        a.checkpoints().await.unwrap(),
        vec![("8:1234".to_owned(), b"offset=990".to_vec())],
        "a forgotten file's record goes"
    );
    assert_eq!(
        b.checkpoints().await.unwrap(),
        vec![],
        "b tails its own files"
    );
    assert!(b.started_sources().await.unwrap().is_empty());
    assert_eq!(read_all(&b).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_comes_from_the_settings() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path(), &["--requirepass", "s3cret pass"]);
    let without = match SharedLog::connect(&settings(&redis.url(), "a")).await {
        Ok(log) => log.append(b"x", &FileMarks::default()).await.map(|_| ()),
        Err(e) => Err(e),
    };
    let err = without.expect_err("no password, no entry");
    assert!(
        err.to_string().contains("NOAUTH") || err.to_string().contains("uthentication"),
        "{err}"
    );
    let mut s = settings(&redis.url(), "a");
    s.password = Some("s3cret pass".into());
    let log = SharedLog::connect(&s).await.expect("connect with password");
    log.append(b"x", &FileMarks::default())
        .await
        .expect("append");
    assert_eq!(read_all(&log).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_replicas_ack_waits_for_a_real_redis_replica() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Redis::start(dir.path(), &[]);
    let mut s = settings(&primary.url(), "a");
    s.min_replicas_ack = 1;
    s.ack_timeout = Duration::from_millis(200);
    let log = SharedLog::connect(&s).await.unwrap();
    match log.append(b"alone", &FileMarks::default()).await {
        Err(ClusterError::NotReplicated {
            wanted: 1, got: 0, ..
        }) => {}
        other => panic!("no Redis replica, no acknowledgement: {other:?}"),
    }

    let replica_dir = tempfile::tempdir().unwrap();
    let port = primary.port.to_string();
    let _replica = Redis::start(replica_dir.path(), &["--replicaof", "127.0.0.1", &port]);
    // Time enough for a loaded machine: the point is that the replica answers, not how fast
    // (the longest the config allows).
    s.ack_timeout = ratewarden::cluster::MAX_ACK_TIMEOUT;
    let log = SharedLog::connect(&s).await.unwrap();
    let started = Instant::now();
    let mut last = None;
    // The replica syncs first; then every append is acknowledged by it.
    while started.elapsed() < Duration::from_secs(20) {
        match log.append(b"held twice", &FileMarks::default()).await {
            Ok(id) => {
                last = Some(id);
                break;
            }
            Err(ClusterError::NotReplicated { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(last.is_some(), "a synced replica acknowledges the append");
    for _ in 0..20 {
        log.append(b"held twice", &FileMarks::default())
            .await
            .expect("acknowledged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_waits_for_the_next_entry() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path(), &[]);
    let log = SharedLog::connect(&settings(&redis.url(), "a"))
        .await
        .unwrap();
    let mut reader = log.reader().await.unwrap();
    let writer = log.clone();
    let append = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        writer.append(b"late", &FileMarks::default()).await.unwrap()
    });
    let started = Instant::now();
    let got = reader
        .read_after(EntryId::ZERO, 10, Duration::from_secs(5))
        .await
        .unwrap();
    let id = append.await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].id, got[0].bytes.as_slice()), (id, &b"late"[..]));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered when the entry came, not at the end of the wait"
    );
    let none = reader
        .read_after(id, 10, Duration::from_millis(50))
        .await
        .unwrap();
    assert!(none.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_is_not_there_is_an_error_soon() {
    let port = common::free_port();
    let started = Instant::now();
    let err = SharedLog::connect(&settings(&format!("redis://127.0.0.1:{port}"), "a"))
        .await
        .expect_err("nothing listens there");
    assert!(started.elapsed() < Duration::from_secs(5), "{err}");
    assert!(err.to_string().starts_with("redis: "), "{err}");
}

/// The test's events as JSON lines: 10 orgs, requests (some 429s, some with tokens), jobs
/// that start and finish (some finishing before their start arrives), late events, and
/// `request_id`s that come again, from another replica.
fn traffic(base_ms: i64) -> Vec<String> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut lines = Vec::new();
    for i in 0..900i64 {
        let r = next();
        let org = format!("org-{}", (r >> 20) % 10);
        let late = if r % 13 == 0 { 40_000 } else { 0 };
        let ts = ratewarden::clock::rfc3339(base_ms + i * 50 - late);
        let rid = if r % 7 == 0 {
            format!(r#","request_id":"r{}""#, i / 3)
        } else {
            String::new()
        };
        lines.push(match r % 5 {
            0 => format!(
                r#"{{"ts":"{ts}","org":"{org}","app":"a{}","status":429,"retry_after_ms":1000{rid}}}"#,
                r % 3
            ),
            1 => format!(
                r#"{{"ts":"{ts}","org":"{org}","kind":"job_completed","job_id":"j{}"}}"#,
                (r >> 8) % 40
            ),
            2 => format!(
                r#"{{"ts":"{ts}","org":"{org}","app":"a{}","status":200,"tokens":{}{rid}}}"#,
                r % 3,
                r % 2000
            ),
            _ => format!(
                r#"{{"ts":"{ts}","org":"{org}","app":"a{}","status":202,"job_id":"j{}"{rid}}}"#,
                r % 3,
                (r >> 8) % 40
            ),
        });
    }
    lines
}

fn parse(line: &str) -> ratewarden::events::Event<'_> {
    let ctx = ratewarden::events::ParseContext::default();
    match ratewarden::events::parse_event(line.as_bytes(), &ctx) {
        Ok(p) => p.event,
        Err(e) => panic!("{line}: {e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_following_the_log_answer_as_one_tracker_fed_every_event() {
    use ratewarden::clock::ManualClock;
    use ratewarden::live::Live;
    use ratewarden::tracker::Tracker;
    use std::sync::Arc;
    use tokio::sync::watch;

    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path(), &[]);
    let config = ratewarden::config::Config::default();
    let base = 1_795_000_000_000i64;
    let now = base + 60_000;
    let lines = traffic(base);

    // Three replicas: each appends a third of the events and follows the whole log.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut replicas = Vec::new();
    let mut followers = Vec::new();
    for name in ["a", "b", "c"] {
        let log = SharedLog::connect(&settings(&redis.url(), name))
            .await
            .unwrap();
        let live = Live::in_memory(Tracker::new(&config), Arc::new(ManualClock::new(now)));
        let (applied_tx, applied_rx) = watch::channel(EntryId::ZERO);
        let mut reader = log.reader().await.unwrap();
        let (follower, stop) = (live.clone(), stop_rx.clone());
        let mut upkeep = ratewarden::live::follow::Upkeep::new(
            log.clone(),
            ratewarden::cluster::Leadership::default(),
            &config,
        );
        followers.push(tokio::spawn(async move {
            follower
                .follow(&mut reader, &applied_tx, &stop, &mut upkeep)
                .await
        }));
        replicas.push((log, live, applied_rx));
    }
    let mut appends = Vec::new();
    for (k, (log, live, _)) in replicas.iter().enumerate() {
        let (log, live) = (log.clone(), live.clone());
        let mine: Vec<String> = lines
            .iter()
            .enumerate()
            .filter(|(i, _)| (i / 5) % 3 == k)
            .map(|(_, l)| l.clone())
            .collect();
        appends.push(tokio::spawn(async move {
            let mut appended = Vec::new();
            for chunk in mine.chunks(5) {
                let mut events: Vec<_> = chunk.iter().map(|l| parse(l)).collect();
                let entry = live.log_entry(&mut events, now);
                let id = log
                    .append(&entry, &FileMarks::default())
                    .await
                    .expect("append");
                appended.push((id, chunk.to_vec()));
            }
            appended
        }));
    }
    // Which lines each entry holds, in log order.
    let mut in_log = std::collections::BTreeMap::new();
    for a in appends {
        in_log.extend(a.await.unwrap());
    }
    let last = *in_log.keys().last().unwrap();
    for (name, (_, _, applied)) in ["a", "b", "c"].iter().zip(&mut replicas) {
        tokio::time::timeout(Duration::from_secs(5), applied.wait_for(|&id| id >= last))
            .await
            .unwrap_or_else(|_| panic!("replica {name} applied the log within 5 s"))
            .unwrap();
    }
    stop_tx.send_replace(true);
    for f in followers {
        f.await.unwrap().expect("the follower stops cleanly");
    }

    // One daemon's tracker fed every event directly, in the log's order (the order decides
    // answers: which copy of a request_id counts, a job id started again after it ended).
    let single = Live::in_memory(Tracker::new(&config), Arc::new(ManualClock::new(now)));
    for chunk in in_log.values() {
        let mut events: Vec<_> = chunk.iter().map(|l| parse(l)).collect();
        single.apply(&mut events, now, None);
    }
    let orgs: Vec<String> = (0..10).map(|o| format!("org-{o}")).collect();
    let loads = |live: &Live| -> Vec<_> { orgs.iter().map(|o| live.load_of(o, now)).collect() };
    let want = loads(&single);
    assert!(
        want.iter().all(|l| l.daily > 0),
        "every org counted something: {want:?}"
    );
    // Requests counted once per org and request_id, whichever replica took the copy in.
    let mut seen = std::collections::HashSet::new();
    let counted = lines
        .iter()
        .map(|l| parse(l))
        .filter(|e| e.kind == ratewarden::events::Kind::Request)
        .filter(|e| match &e.request_id {
            Some(rid) => seen.insert((e.org.to_string(), rid.to_string())),
            None => true,
        })
        .count() as u64;
    let requests = lines.iter().filter(|l| !l.contains("\"kind\"")).count() as u64;
    assert!(counted < requests, "some request_ids came again");
    assert_eq!(want.iter().map(|l| l.daily).sum::<u64>(), counted);
    let report = |live: &Live| live.with_tracker(|t| t.report());
    for (name, (_, live, _)) in ["a", "b", "c"].iter().zip(&replicas) {
        assert_eq!(loads(live), want, "replica {name} against one tracker");
        assert_eq!(
            report(live),
            report(&replicas[0].1),
            "replica {name} against a"
        );
    }
}

/// A Redis in a directory of its own, and `n` directories for replicas.
fn redis_and_dirs(n: usize) -> (tempfile::TempDir, Redis, Vec<tempfile::TempDir>) {
    let redis_dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(redis_dir.path(), &[]);
    let dirs = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
    (redis_dir, redis, dirs)
}

/// Replica `i` started in `dirs[i]` with `config(i)`, for each of `dirs`.
fn start_all(dirs: &[tempfile::TempDir], config: &dyn Fn(usize) -> String) -> Vec<common::Daemon> {
    dirs.iter()
        .enumerate()
        .map(|(i, d)| common::Daemon::start(d.path(), &config(i), &[]))
        .collect()
}

/// The config of replica `i` on the Redis at `url`: `before` goes ahead of `[cluster]`,
/// `cluster` into it.
fn replica_config(url: &str, i: usize, before: &str, cluster: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{before}[cluster]\nredis_url = \"{url}\"\nreplica_id = \"r{i}\"\n{cluster}"
    )
}

/// `n` successful requests of org `acme` at `ts`, request ids `ID-0` to `ID-(n-1)`, as NDJSON.
fn acme_body(ts: i64, id: &str, n: usize) -> String {
    (0..n)
        .map(|k| {
            format!("{{\"org\":\"acme\",\"ts\":{ts},\"status\":200,\"request_id\":\"{id}-{k}\"}}\n")
        })
        .collect()
}

/// What each replica at `bases` counts of `acme` in the rolling 24 h (`u64::MAX` when it
/// does not answer).
fn acme_daily(bases: &[String]) -> Vec<u64> {
    bases
        .iter()
        .map(|b| {
            common::metric(b, r#"ratewarden_usage{org="acme",dimension="daily"}"#)
                .map_or(u64::MAX, |v| v as u64)
        })
        .collect()
}

/// `POST /v1/events` of an NDJSON `body` to `base`: the status and the answer.
fn post_ndjson(base: &str, body: &str) -> Option<(u16, String)> {
    common::http(
        "POST",
        &format!("{base}/v1/events"),
        &[("Content-Type", "application/x-ndjson")],
        body.as_bytes(),
    )
}

/// `/v1/usage` without what moves with the moment it is asked (a stuck job's age, the seconds
/// until a window frees).
fn usage_of(base: &str) -> serde_json::Value {
    let (status, body) =
        common::http("GET", &format!("{base}/v1/usage"), &[], b"").expect("usage answers");
    assert_eq!(status, 200, "{body}");
    let mut v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.retain(|k, _| k != "age_seconds" && k != "headroom_seconds");
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

#[test]
fn three_daemons_on_one_redis_answer_as_one() {
    let _one = one_at_a_time();
    let (_redis_dir, redis, dirs) = redis_and_dirs(3);
    let orgs = "[[orgs]]\nid = \"acme\"\ntier = \"pro\"\n";
    let config = |i: usize| replica_config(&redis.url(), i, orgs, "");
    let mut daemons = start_all(&dirs[..3], &config);
    let now = chrono_now_ms();
    // Round-robin from three clients; every fifth request_id is sent again to the next
    // replica (a client retrying elsewhere); some events are a minute late.
    let clients: Vec<_> = (0..3)
        .map(|c| {
            let bases: Vec<String> = daemons.iter().map(|d| d.base.clone()).collect();
            std::thread::spawn(move || {
                let mut acked = 0u64;
                let mut sent = Vec::new();
                for k in 0..40u64 {
                    let n = c * 1000 + k;
                    let late = if k % 9 == 0 { 60_000 } else { 0 };
                    let org = ["acme", "globex", "initech"][(k % 3) as usize];
                    let line = format!(
                        "{{\"org\":\"{org}\",\"app\":\"c{c}\",\"ts\":{},\"status\":200,\"request_id\":\"q{n}\"}}\n",
                        now - late
                    );
                    let base = &bases[((c + k) % 3) as usize];
                    let (status, body) = post_ndjson(base, &line)
                    .expect("ingest answers");
                    assert_eq!(status, 202, "{body}");
                    acked += 1;
                    sent.push(line.clone());
                    if k % 5 == 0 {
                        let other = &bases[((c + k + 1) % 3) as usize];
                        let again = post_ndjson(other, &line)
                        .expect("ingest answers");
                        assert_eq!(again.0, 202, "{}", again.1);
                        sent.push(line);
                    }
                }
                (acked, sent)
            })
        })
        .collect();
    let (mut acked, mut sent) = (0u64, Vec::new());
    for c in clients {
        let (a, lines) = c.join().unwrap();
        acked += a;
        sent.extend(lines);
    }
    assert_eq!(acked, 120);

    // Every replica answers alike soon after the last acknowledgement (the contract's bound
    // is 1 s; the time taken is printed, the test allows more for a loaded machine), and
    // counts each request_id once.
    let last_ack = Instant::now();
    let settled = common::eventually(5, || {
        let all: Vec<_> = daemons.iter().map(|d| usage_of(&d.base)).collect();
        (all[0] == all[1] && all[1] == all[2]).then_some(all)
    });
    let all = settled.unwrap_or_else(|| {
        panic!(
            "replicas differ:\n{:#}",
            serde_json::json!(
                daemons
                    .iter()
                    .map(|d| usage_of(&d.base))
                    .collect::<Vec<_>>()
            )
        )
    });
    eprintln!(
        "three replicas answered alike {:?} after the last acknowledgement",
        last_ack.elapsed()
    );
    let daily: u64 = ["acme", "globex", "initech"]
        .iter()
        .map(|org| {
            common::metric(
                &daemons[2].base,
                &format!("ratewarden_usage{{org=\"{org}\",dimension=\"daily\"}}"),
            )
            .unwrap_or(0.0) as u64
        })
        .sum();
    assert_eq!(daily, acked, "each request_id counted once: {:#}", all[0]);
    for d in &daemons {
        assert_eq!(
            common::metric(&d.base, "ratewarden_cluster_config_differs"),
            Some(0.0),
            "replicas with one config do not differ"
        );
    }
    // One daemon without [cluster], fed the union of the events (repeats included), answers
    // exactly as the replicas do, asked at the same moment.
    let single_dir = tempfile::tempdir().unwrap();
    let single = common::Daemon::start(
        single_dir.path(),
        &format!("[server]\nlisten = \"127.0.0.1:0\"\n{orgs}"),
        &[],
    );
    let (status, body) = post_ndjson(&single.base, &sent.concat()).expect("ingest answers");
    assert_eq!(status, 202, "{body}");
    // Orgs and apps are listed in the order they were first seen, which differs between the
    // single daemon and the log; what each holds must not.
    fn in_name_order(mut v: serde_json::Value) -> serde_json::Value {
        let by = |key: &'static str| {
            move |a: &serde_json::Value, b: &serde_json::Value| {
                a[key].as_str().cmp(&b[key].as_str())
            }
        };
        if let Some(orgs) = v["orgs"].as_array_mut() {
            orgs.sort_by(by("org"));
            for o in orgs {
                if let Some(apps) = o["apps"].as_array_mut() {
                    apps.sort_by(by("app"));
                }
            }
        }
        v
    }
    let alike = common::eventually(5, || {
        let one = in_name_order(usage_of(&single.base));
        let replica = in_name_order(usage_of(&daemons[1].base));
        (one == replica).then_some(())
    });
    assert!(
        alike.is_some(),
        "a single daemon fed every event answers as the replicas:\n{:#}\n{:#}",
        usage_of(&single.base),
        usage_of(&daemons[1].base)
    );
    let from_usage: u64 = all[0]["orgs"]
        .as_array()
        .expect("orgs")
        .iter()
        .map(|o| o["usage"]["rpm"].as_u64().expect("rpm usage"))
        .sum();
    assert!(from_usage > 0, "{:#}", all[0]);

    // A replica started now catches up before it answers ready, and answers as the others do
    // at the same moment (the rolling minute has moved on since: late events leave it).
    let late_dir = tempfile::tempdir().unwrap();
    daemons.push(common::Daemon::start(late_dir.path(), &config(3), &[]));
    let caught_up = common::eventually(5, || {
        let all: Vec<_> = daemons.iter().map(|d| usage_of(&d.base)).collect();
        all.windows(2).all(|w| w[0] == w[1]).then_some(())
    });
    assert!(
        caught_up.is_some(),
        "a new replica catches up: {:#}",
        serde_json::json!(
            daemons
                .iter()
                .map(|d| usage_of(&d.base))
                .collect::<Vec<_>>()
        )
    );
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn redis_away_for_ten_seconds_loses_nothing_acknowledged() {
    let _one = one_at_a_time();
    let redis_dir = tempfile::tempdir().unwrap();
    let mut redis = Redis::start(
        redis_dir.path(),
        &["--appendonly", "yes", "--appendfsync", "always"],
    );
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let config = |i: usize| replica_config(&redis.url(), i, "", "");
    let daemons = start_all(&dirs[..2], &config);
    let bases: Vec<String> = daemons.iter().map(|d| d.base.clone()).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let now = chrono_now_ms();
    // Two clients post without pause, each event once (no retries: a 503 is simply not
    // counted, so what counts must equal what was acknowledged).
    let clients: Vec<_> = (0..2u64)
        .map(|c| {
            let (base, stop) = (bases[c as usize].clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut acked, mut refused, mut other) = (0u64, 0u64, Vec::new());
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    let body = acme_body(now, &format!("c{c}-{n}"), 10);
                    n += 1;
                    match post_ndjson(&base, &body) {
                        Some((202, _)) => acked += 10,
                        Some((503, _)) => {
                            refused += 10;
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        answer => other.push(format!("{answer:?}")),
                    }
                }
                (acked, refused, other)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    redis.kill();
    let down = Instant::now();
    // While Redis is away: not ready, the gauge says so, /metrics still answers.
    let noticed = common::eventually(10, || {
        let ready = common::http_status(&format!("{}/readyz", bases[0]));
        let gauge = common::metric(&bases[0], "ratewarden_cluster_connected");
        (ready == Some(503) && gauge == Some(0.0)).then_some(())
    });
    assert!(
        noticed.is_some(),
        "readyz 503 and cluster_connected 0 while Redis is away"
    );
    let (status, body) = post_ndjson(&bases[0], &acme_body(now, "away", 1)).expect("an answer");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("shared_log_unavailable"),
        "named for what it is: {body}"
    );
    let slept = down.elapsed();
    if slept < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_secs(10) - slept);
    }
    redis.start_again();
    let back = common::eventually(15, || {
        bases
            .iter()
            .all(|b| common::http_status(&format!("{b}/readyz")) == Some(200))
            .then_some(())
    });
    assert!(back.is_some(), "ready again once Redis is back");
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::Release);
    let (mut acked, mut refused) = (0, 0);
    for c in clients {
        let (a, r, other) = c.join().unwrap();
        assert!(
            other.is_empty(),
            "answers other than 202 and 503: {other:?}"
        );
        acked += a;
        refused += r;
    }
    assert!(refused > 0, "some posts met Redis away");
    let counted = common::eventually(5, || {
        let all = acme_daily(&bases);
        // A post in flight when Redis was killed may have reached it and lost only its
        // answer: counted, though answered 503 (one body of 10 per client at most).
        (all.iter().all(|&n| n == all[0]) && (acked..=acked + 20).contains(&all[0])).then_some(all)
    });
    assert!(
        counted.is_some(),
        "every replica counts the {acked} acknowledged events, alike ({refused} refused): {:?}",
        acme_daily(&bases)
    );
    eprintln!(
        "Redis away 10 s: {acked} events acknowledged, {refused} refused, counted {counted:?}"
    );
    assert_eq!(
        common::metric(&bases[1], "ratewarden_cluster_connected"),
        Some(1.0)
    );
}

/// A webhook receiver: answers 200 and keeps each delivery's id and body.
struct Hooks {
    url: String,
    hits: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl Hooks {
    fn start() -> Hooks {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let hits = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let sink = sink.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    loop {
                        let (mut id, mut len) = (String::new(), 0usize);
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        loop {
                            let mut h = String::new();
                            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                                return;
                            }
                            let h = h.trim_end();
                            if h.is_empty() {
                                break;
                            }
                            let (k, v) = h.split_once(':').unwrap_or((h, ""));
                            match k.to_ascii_lowercase().as_str() {
                                "x-ratewarden-delivery" => id = v.trim().to_owned(),
                                "content-length" => len = v.trim().parse().unwrap_or(0),
                                _ => {}
                            }
                        }
                        let mut body = vec![0; len];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        sink.lock()
                            .unwrap()
                            .push((id, String::from_utf8_lossy(&body).into_owned()));
                        let mut out = reader.get_ref();
                        let _ = out.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                    }
                });
            }
        });
        Hooks { url, hits }
    }

    fn hits(&self) -> Vec<(String, String)> {
        self.hits.lock().unwrap().clone()
    }
}

/// Two replicas on one Redis delivering to one webhook receiver, once one of them leads.
struct Alerting {
    _redis: Redis,
    _redis_dir: tempfile::TempDir,
    hooks: Hooks,
    dirs: Vec<tempfile::TempDir>,
    daemons: Vec<common::Daemon>,
    leader: usize,
}

impl Alerting {
    fn start() -> Alerting {
        let (_redis_dir, redis, dirs) = redis_and_dirs(2);
        let hooks = Hooks::start();
        let alerts = format!(
            "[alerts]\nretry_base = \"100ms\"\n[[alerts.webhook]]\nname = \"hook\"\nurl = \"{}\"\nformat = \"json\"\n",
            hooks.url
        );
        let config = |i: usize| replica_config(&redis.url(), i, &alerts, "");
        let daemons = start_all(&dirs[..2], &config);
        let leader =
            common::eventually(10, || daemons.iter().position(leading)).expect("one replica leads");
        Alerting {
            _redis: redis,
            _redis_dir,
            hooks,
            dirs,
            daemons,
            leader,
        }
    }
}

fn leading(d: &common::Daemon) -> bool {
    d.log_text().contains("this replica delivers notifications")
}

/// One job in flight in an org of the default tier (1 concurrent) fires UsageHigh there.
fn start_job(d: &common::Daemon, org: &str) {
    let now = chrono_now_ms();
    let (status, body) = d.post_events(&format!(
        "{{\"org\":\"{org}\",\"ts\":{now},\"status\":202,\"job_id\":\"j-{org}\"}}\n"
    ));
    assert_eq!(status, 202, "{body}");
}

#[test]
fn one_leader_delivers_each_notification_once_and_hands_over_on_sigterm() {
    let _one = one_at_a_time();
    // Every field is bound: what is left out of a pattern is dropped (Redis stopped) at once.
    let Alerting {
        _redis,
        _redis_dir,
        hooks,
        dirs,
        mut daemons,
        leader,
    } = Alerting::start();
    for (k, org) in ["o1", "o2", "o3"].iter().enumerate() {
        start_job(&daemons[k % 2], org);
    }
    let firing =
        |n: usize| common::eventually(15, || (hooks.hits().len() >= n).then_some(())).is_some();
    assert!(firing(3), "three notifications: {:?}", hooks.hits());
    common::observe(Duration::from_secs(3), "no replica sends them again");
    let hits = hooks.hits();
    let ids: std::collections::HashSet<_> = hits.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!((hits.len(), ids.len()), (3, 3), "each once: {hits:?}");
    // The follower drops from its outbox what the leader delivered.
    let follower = 1 - leader;
    let pruned = common::eventually(10, || {
        (common::store_value(dirs[follower].path(), "SELECT COUNT(*) FROM outbox") == Some(0))
            .then_some(())
    });
    assert!(pruned.is_some(), "the follower's outbox empties");

    // The leader stops; the other takes over within 15 s and sends what comes next, once.
    assert_eq!(daemons[leader].terminate(Duration::from_secs(20)), Some(0));
    let took_over = Instant::now();
    start_job(&daemons[follower], "o4");
    start_job(&daemons[follower], "o5");
    assert!(firing(5), "two more after the handover: {:?}", hooks.hits());
    assert!(
        took_over.elapsed() < Duration::from_secs(15),
        "taken over in {:?}",
        took_over.elapsed()
    );
    common::observe(
        Duration::from_secs(3),
        "nothing is sent twice after the handover",
    );
    let hits = hooks.hits();
    let ids: std::collections::HashSet<_> = hits.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!((hits.len(), ids.len()), (5, 5), "each once: {hits:?}");
    assert!(
        leading(&daemons[follower]),
        "{}",
        daemons[follower].log_text()
    );
    eprintln!(
        "leader SIGTERM: the other replica delivered the next notifications {:?} after",
        took_over.elapsed()
    );
}

#[test]
fn kill_9_of_any_replica_under_load_loses_no_acknowledged_event() {
    let _one = one_at_a_time();
    let (_redis_dir, redis, dirs) = redis_and_dirs(3);
    let config = |i: usize| replica_config(&redis.url(), i, "", "");
    let daemons = start_all(&dirs[..3], &config);
    let bases = std::sync::Arc::new(std::sync::Mutex::new(
        daemons.iter().map(|d| d.base.clone()).collect::<Vec<_>>(),
    ));
    let daemons = std::sync::Arc::new(std::sync::Mutex::new(daemons));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let now = chrono_now_ms();
    // Three clients post to any replica that answers, as a shipper does: a body not
    // acknowledged is sent again, with the same request_ids, until one replica takes it (a
    // body that reached Redis before its replica was killed then counts once). What counts
    // must be exactly what was acknowledged.
    let clients: Vec<_> = (0..3u64)
        .map(|c| {
            let (bases, stop) = (bases.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut acked, mut retries) = (0u64, 0u64);
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    let body = acme_body(now, &format!("c{c}-{n}"), 5);
                    let mut attempt = 0u64;
                    loop {
                        let base = bases.lock().unwrap()[((c + n + attempt) % 3) as usize].clone();
                        if let Some((202, _)) = post_ndjson(&base, &body) {
                            break;
                        }
                        attempt += 1;
                        retries += 1;
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    acked += 5;
                    n += 1;
                }
                (acked, retries)
            })
        })
        .collect();
    // 20 cycles: kill -9 a replica (in turn, by a fixed pseudo-random order) and start it again.
    let mut x = 0x9E37_79B9u32;
    for _ in 0..20 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let i = (x % 3) as usize;
        std::thread::sleep(Duration::from_millis(150));
        let restarted = {
            daemons.lock().unwrap()[i].kill9();
            common::Daemon::start(dirs[i].path(), &config(i), &[])
        };
        bases.lock().unwrap()[i] = restarted.base.clone();
        daemons.lock().unwrap()[i] = restarted;
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Release);
    let (mut acked, mut retries) = (0u64, 0u64);
    for c in clients {
        let (a, r) = c.join().unwrap();
        acked += a;
        retries += r;
    }
    assert!(acked > 0);
    let bases = bases.lock().unwrap().clone();
    let counted = common::eventually(10, || {
        let all = acme_daily(&bases);
        all.iter().all(|&n| n == acked).then_some(all)
    });
    eprintln!(
        "20 kill -9 cycles: {acked} events acknowledged, {retries} bodies sent again, counted {counted:?}"
    );
    assert!(
        counted.is_some(),
        "every replica counts what was acknowledged ({acked}), alike"
    );
}

#[test]
fn a_leader_killed_with_kill_9_loses_no_notification() {
    let _one = one_at_a_time();
    let Alerting {
        _redis,
        _redis_dir,
        hooks,
        dirs: _dirs,
        mut daemons,
        leader,
    } = Alerting::start();
    let follower = 1 - leader;
    // Alerts fire, and the leader is killed at once, whatever it had sent by then.
    for org in ["k1", "k2", "k3"] {
        start_job(&daemons[follower], org);
    }
    daemons[leader].kill9();
    let killed = Instant::now();
    for org in ["k4", "k5"] {
        start_job(&daemons[follower], org);
    }
    let ids = || {
        hooks
            .hits()
            .into_iter()
            .map(|(id, _)| id)
            .collect::<std::collections::HashSet<_>>()
    };
    let all = common::eventually(25, || (ids().len() >= 5).then_some(()));
    assert!(
        all.is_some(),
        "every notification arrives once the other replica leads: {:?}\n{}",
        hooks.hits(),
        daemons[follower].log_text()
    );
    let hits = hooks.hits();
    eprintln!(
        "leader kill -9: all 5 notifications delivered {:?} after the kill, {} deliveries in all (repeats carry the same id)",
        killed.elapsed(),
        hits.len()
    );
    assert_eq!(ids().len(), 5, "{hits:?}");
    assert!(leading(&daemons[follower]));
}

/// `redis-cli` against `redis`, its answer trimmed.
fn redis_cli(redis: &Redis, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn the_log_is_trimmed_behind_snapshots_and_a_new_replica_starts_from_one() {
    let _one = one_at_a_time();
    let (_redis_dir, redis, dirs) = redis_and_dirs(3);
    let config = |i: usize| replica_config(&redis.url(), i, "", "snapshot_interval = \"500ms\"\n");
    let daemons = start_all(&dirs[..2], &config);
    let now = chrono_now_ms();
    for k in 0..300u64 {
        let org = format!("org-{}", k % 30);
        let (status, body) = daemons[(k % 2) as usize].post_events(&format!(
            "{{\"org\":\"{org}\",\"ts\":{now},\"status\":200,\"request_id\":\"t{k}\"}}\n"
        ));
        assert_eq!(status, 202, "{body}");
    }
    // Each post (and each replica's tick every second) is an entry; the leader's snapshots
    // trim them away behind both replicas.
    let trimmed = common::eventually(10, || {
        let len: u64 = redis_cli(&redis, &["XLEN", "ratewarden:log"])
            .parse()
            .ok()?;
        (len < 50).then_some(len)
    });
    assert!(
        trimmed.is_some(),
        "the log is trimmed: {} entries left",
        redis_cli(&redis, &["XLEN", "ratewarden:log"])
    );
    assert!(!redis_cli(&redis, &["HGET", "ratewarden:snapshot", "at"]).is_empty());

    // A replica started now restores the snapshot and follows on: it answers as the others.
    let third = common::Daemon::start(dirs[2].path(), &config(2), &[]);
    let recovered = third.find_log("state recovered").expect("recovery logged");
    assert_eq!(recovered["fields"]["from_snapshot"], true, "{recovered}");
    let alike = common::eventually(5, || {
        let all: Vec<_> = [&daemons[0], &daemons[1], &third]
            .iter()
            .map(|d| usage_of(&d.base))
            .collect();
        (all[0] == all[1] && all[1] == all[2]).then_some(all)
    });
    let all = alike.expect("the new replica answers as the others");
    let daily: u64 = all[2]["orgs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            o["apps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["daily"].as_u64().unwrap())
                .sum::<u64>()
        })
        .sum();
    assert_eq!(daily, 300, "{:#}", all[2]);
}

#[test]
fn sigterm_while_redis_does_not_answer_still_stops() {
    let _one = one_at_a_time();
    let (_redis_dir, redis, dirs) = redis_and_dirs(1);
    let mut daemon = common::Daemon::start(
        dirs[0].path(),
        &replica_config(&redis.url(), 0, "", ""),
        &[],
    );
    let pid = redis.pid().to_string();
    let signal = |sig: &str| {
        std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill runs")
    };
    // A frozen Redis: connections stay open, nothing is answered.
    signal("-STOP");
    std::thread::sleep(Duration::from_secs(1));
    let asked = Instant::now();
    let code = daemon.terminate(Duration::from_secs(30));
    let took = asked.elapsed();
    signal("-CONT");
    assert!(code.is_some(), "stopped within 30 s of SIGTERM");
    eprintln!("SIGTERM with Redis frozen: stopped after {took:?} (exit {code:?})");
}

#[test]
fn a_replica_tailing_a_rotating_file_counts_every_line_once_through_kill_9_and_redis_away() {
    let _one = one_at_a_time();
    let redis_dir = tempfile::tempdir().unwrap();
    let mut redis = Redis::start(
        redis_dir.path(),
        &["--appendonly", "yes", "--appendfsync", "always"],
    );
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let logs = tempfile::tempdir().unwrap();
    let source = format!(
        "[[sources.file]]\nname = \"app\"\npath = \"{}/app.log\"\norg = \"filed\"\n",
        logs.path().display()
    );
    // r0 tails the file; r1 and r2 take HTTP.
    let config = |i: usize| replica_config(&redis.url(), i, if i == 0 { &source } else { "" }, "");
    let mut daemons = start_all(&dirs, &config);
    let bases: Vec<String> = daemons.iter().map(|d| d.base.clone()).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let now = chrono_now_ms();

    // The writer appends lines without request ids (a line read twice would count twice) and
    // rotates by rename + create every 5 000 lines (about 2 s: slower than the tailer's 1 s
    // scan, as any tailer needs, or a file created and renamed away between two scans is
    // never seen).
    let rotated = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = {
        let (dir, stop, rotated) = (logs.path().to_path_buf(), stop.clone(), rotated.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            let (mut written, mut rotations) = (0u64, 0u64);
            let open = || {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("app.log"))
                    .unwrap()
            };
            let mut file = open();
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                let mut chunk = String::new();
                for _ in 0..25 {
                    chunk.push_str(&format!(
                        "{{\"org\":\"filed\",\"app\":\"tail\",\"ts\":{now},\"status\":200}}\n"
                    ));
                }
                file.write_all(chunk.as_bytes()).unwrap();
                written += 25;
                if written % 5000 == 0 {
                    rotations += 1;
                    std::fs::rename(
                        dir.join("app.log"),
                        dir.join(format!("app.log.{rotations}")),
                    )
                    .unwrap();
                    file = open();
                    rotated.store(rotations, std::sync::atomic::Ordering::Release);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (written, rotations)
        })
    };
    // Two clients post to r1 and r2, sending a body again until it is acknowledged.
    let clients: Vec<_> = (1..3usize)
        .map(|c| {
            let (base, stop) = (bases[c].clone(), stop.clone());
            std::thread::spawn(move || {
                let mut acked = 0u64;
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    let body = acme_body(now, &format!("c{c}-{n}"), 5);
                    while !matches!(post_ndjson(&base, &body), Some((202, _))) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    acked += 5;
                    n += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                acked
            })
        })
        .collect();

    // The tailing replica killed twice under load, then Redis away for 6 s: the file rotates
    // twice while the source cannot store, so the file between the two rotations is followed
    // only if the source goes on scanning while it waits.
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(1500));
        daemons[0].kill9();
        daemons[0] = common::Daemon::start(dirs[0].path(), &config(0), &[]);
    }
    std::thread::sleep(Duration::from_millis(1000));
    redis.kill();
    let before = rotated.load(std::sync::atomic::Ordering::Acquire);
    std::thread::sleep(Duration::from_secs(6));
    let during = rotated.load(std::sync::atomic::Ordering::Acquire) - before;
    redis.start_again();
    let back = common::eventually(15, || {
        daemons
            .iter()
            .all(|d| common::http_status(&format!("{}/readyz", d.base)) == Some(200))
            .then_some(())
    });
    assert!(back.is_some(), "ready again once Redis is back");
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, std::sync::atomic::Ordering::Release);
    let (written, rotations) = writer.join().unwrap();
    let acked: u64 = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert!(
        rotations >= 4 && during >= 2,
        "the file rotated under the tailer ({rotations}), twice while Redis was away ({during})"
    );

    let daily = |org: &str| -> Vec<u64> {
        daemons
            .iter()
            .map(|d| {
                common::metric(
                    &d.base,
                    &format!("ratewarden_usage{{org=\"{org}\",dimension=\"daily\"}}"),
                )
                .map_or(u64::MAX, |v| v as u64)
            })
            .collect()
    };
    let counted = common::eventually(20, || {
        let (filed, acme) = (daily("filed"), daily("acme"));
        (filed.iter().all(|&n| n == written) && acme.iter().all(|&n| n == acked))
            .then_some((filed, acme))
    });
    eprintln!(
        "tailing replica killed twice, Redis away 6 s: {written} lines written ({rotations} rotations, {during} in the outage), {acked} events acknowledged over HTTP; counted {counted:?}"
    );
    assert!(
        counted.is_some(),
        "every replica counts each line once ({written}) and what HTTP acknowledged ({acked}): filed {:?}, acme {:?}\n{}",
        daily("filed"),
        daily("acme"),
        daemons[0].log_text()
    );
    let all: Vec<_> = daemons.iter().map(|d| usage_of(&d.base)).collect();
    assert!(
        all.windows(2).all(|w| w[0] == w[1]),
        "replicas answer alike: {:#}",
        serde_json::json!(all)
    );
}

#[test]
fn a_replica_started_before_its_redis_waits_for_it() {
    let _one = one_at_a_time();
    let (_redis_dir, mut redis, dirs) = redis_and_dirs(1);
    let url = redis.url();
    redis.kill();
    // Redis comes up 4 s after the replica (a pod scheduled before its Redis): the replica
    // waits, not ready, instead of exiting.
    let later = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(4));
        redis.start_again();
        redis
    });
    let started = Instant::now();
    let d = common::Daemon::start(dirs[0].path(), &replica_config(&url, 0, "", ""), &[]);
    let _redis = later.join().unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "not ready before Redis answers ({:?})",
        started.elapsed()
    );
    assert!(
        d.find_log("cannot reach the shared engine").is_some(),
        "says why it waits:\n{}",
        d.log_text()
    );
    let (status, body) = post_ndjson(&d.base, &acme_body(chrono_now_ms(), "w", 3)).unwrap();
    assert_eq!(status, 202, "{body}");
}

#[test]
fn a_second_instance_with_a_running_replicas_id_does_not_start() {
    let _one = one_at_a_time();
    let (_redis_dir, redis, dirs) = redis_and_dirs(4);
    let logs = tempfile::tempdir().unwrap();
    let line = |i: usize| {
        format!(
            "{{\"org\":\"filed\",\"app\":\"tail\",\"ts\":{},\"status\":200}}\n",
            chrono_now_ms() + i as i64
        )
    };
    std::fs::write(
        logs.path().join("app.log"),
        (0..1000).map(line).collect::<String>(),
    )
    .unwrap();
    let source = format!(
        "[[sources.file]]\nname = \"app\"\npath = \"{}/app.log\"\norg = \"filed\"\n",
        logs.path().display()
    );
    // r0 tails the file; its twin (the same replica_id and file, another directory) is
    // started while r0 runs: it must not start, nor read a line under r0's checkpoints.
    let mut a = common::Daemon::start(
        dirs[0].path(),
        &replica_config(&redis.url(), 0, &source, ""),
        &[],
    );
    let c = common::Daemon::start(
        dirs[2].path(),
        &replica_config(&redis.url(), 1, "", ""),
        &[],
    );
    let filed = |d: &common::Daemon| {
        common::metric(
            &d.base,
            "ratewarden_usage{org=\"filed\",dimension=\"daily\"}",
        )
    };
    assert_eq!(
        common::eventually(10, || (filed(&c) == Some(1000.0)).then_some(())),
        Some(()),
        "r1 counts r0's lines"
    );
    let started = std::time::Instant::now();
    let twin = common::Daemon::try_start(
        dirs[1].path(),
        &replica_config(&redis.url(), 0, &source, ""),
        &[],
    );
    let took = started.elapsed();
    let log = match twin {
        Ok(mut d) => {
            d.kill9();
            panic!("the twin started:\n{}", d.log_text())
        }
        Err(log) => log,
    };
    assert!(
        log.contains("another running ratewarden uses replica_id")
            && log.contains(&format!("pid {}", a.pid())),
        "the twin says why, naming the running instance:\n{log}"
    );
    assert!(
        !log.contains("file source started"),
        "the twin read nothing:\n{log}"
    );
    std::fs::OpenOptions::new()
        .append(true)
        .open(logs.path().join("app.log"))
        .and_then(|mut f| {
            std::io::Write::write_all(
                &mut f,
                (1000..1500).map(line).collect::<String>().as_bytes(),
            )
        })
        .unwrap();
    assert_eq!(
        common::eventually(10, || (filed(&c) == Some(1500.0)
            && filed(&a) == Some(1500.0))
        .then_some(())),
        Some(()),
        "every line counted once, by the running instance: r0 {:?}, r1 {:?}",
        filed(&a),
        filed(&c)
    );
    assert_eq!(
        a.exited(),
        None,
        "the running instance goes on:\n{}",
        a.log_text()
    );
    eprintln!("a twin of a running replica refused after {took:?}");

    // Restarted at once after kill -9 (its note still in Redis), a replica is not its own
    // twin: its predecessor's process is gone from this host.
    a.kill9();
    let started = std::time::Instant::now();
    let mut a = common::Daemon::start(
        dirs[0].path(),
        &replica_config(&redis.url(), 0, &source, ""),
        &[],
    );
    eprintln!(
        "restarted after kill -9 and ready in {:?}",
        started.elapsed()
    );
    assert_eq!(a.exited(), None, "{}", a.log_text());
    // Stopped cleanly, it lets go of its id.
    assert_eq!(a.terminate(Duration::from_secs(20)), Some(0));
    assert_eq!(
        redis_cli(&redis, &["EXISTS", "ratewarden:replica:r0"]).trim(),
        "0"
    );
    // A note without an expiry was not written by a replica: taken over at once, saying so.
    redis_cli(&redis, &["SET", "ratewarden:replica:r4", "hello"]);
    let r4 = common::Daemon::start(
        dirs[1].path(),
        &replica_config(&redis.url(), 4, "", ""),
        &[],
    );
    assert!(r4.log_text().contains("has no expiry"), "{}", r4.log_text());
    // A note left by an instance on another host that stopped renewing it (a pod moved to
    // another node, killed) is taken over once it is seen not to be renewed.
    redis_cli(
        &redis,
        &[
            "SET",
            "ratewarden:replica:r3",
            "host elsewhere, pid 1, started 2026-01-01T00:00:00.000Z",
            "PX",
            "10000",
        ],
    );
    let started = std::time::Instant::now();
    let d = common::Daemon::start(
        dirs[3].path(),
        &replica_config(&redis.url(), 3, "", ""),
        &[],
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "it watched the note for a renewal period first ({took:?})"
    );
    drop(d);
}

#[test]
fn replicas_with_different_limits_say_so_in_a_gauge() {
    let _one = one_at_a_time();
    let (_redis_dir, redis, dirs) = redis_and_dirs(3);
    let orgs = |rpm: u32| format!("[[orgs]]\nid = \"acme\"\ntier = \"pro\"\nrpm = {rpm}\n");
    // r0 and r1 agree; r2 was given another limit (a rolling change, or a mistake).
    let config =
        |i: usize| replica_config(&redis.url(), i, &orgs(if i == 2 { 90 } else { 60 }), "");
    let daemons = start_all(&dirs, &config);
    let gauge = |d: &common::Daemon| common::metric(&d.base, "ratewarden_cluster_config_differs");
    let seen = common::eventually(10, || {
        let all: Vec<_> = daemons.iter().map(gauge).collect();
        (all == [Some(1.0), Some(1.0), Some(2.0)]).then_some(all)
    });
    assert!(
        seen.is_some(),
        "r0 and r1 see one replica differ, r2 sees two: {:?}",
        daemons.iter().map(gauge).collect::<Vec<_>>()
    );
    assert!(
        daemons[2]
            .log_text()
            .contains("these replicas run another config"),
        "{}",
        daemons[2].log_text()
    );
}

/// A batch of 8 video jobs to the fake upstream, as a JSON body.
fn video_batch(tag: &str) -> String {
    let requests: Vec<serde_json::Value> = (0..8)
        .map(
            |i| serde_json::json!({"path": "/v1/videos", "body": {"prompt": format!("{tag} {i}")}}),
        )
        .collect();
    serde_json::json!({"upstream": "fake", "mode": "asap", "requests": requests}).to_string()
}

/// A config with upstream `fake` at `url` drawing on org `acme` (2 jobs at once).
fn batch_config(url: &str) -> String {
    format!(
        r#"[tiers.api]
rpm = 600
concurrency = 2

[[orgs]]
id = "acme"
tier = "api"

[[upstreams]]
name = "fake"
base_url = "{}"
org = "acme"
timeout = "2s"

[upstreams.poll]
status_path = "/v1/videos/{{id}}"
id_field = "id"
status_field = "status"
done = ["completed"]
failed = ["failed"]
interval = "100ms"

[scheduler]
share = 1.0
"#,
        url
    )
}

/// `GET /v1/batches/ID` on `d`.
fn batch_on(d: &common::Daemon, id: &str) -> serde_json::Value {
    common::http("GET", &format!("{}/v1/batches/{id}", d.base), &[], b"")
        .and_then(|(_, b)| serde_json::from_str(&b).ok())
        .unwrap_or_default()
}

/// Successful batch requests `d` sent itself.
fn sent_by(d: &common::Daemon) -> f64 {
    common::metric(
        &d.base,
        r#"ratewarden_batch_requests_total{org="acme",outcome="success"}"#,
    )
    .unwrap_or(0.0)
}

#[test]
fn batches_are_dispatched_by_the_leader_alone_within_the_limits_across_handovers() {
    use common::upstream::Upstream;
    let _one = one_at_a_time();
    // Jobs run 1.5 s and the org may run 2 at once: the upstream answers 429 to a third.
    let up = Upstream::start(600, 2, Duration::from_millis(1500));
    let (_redis_dir, redis, dirs) = redis_and_dirs(3);
    let before = batch_config(&up.url());
    let config = |i: usize| replica_config(&redis.url(), i, &before, "");
    let mut daemons = start_all(&dirs, &config);
    let first =
        common::eventually(10, || daemons.iter().position(leading)).expect("one replica leads");
    let other = (first + 1) % 3;
    // Submitted to a replica that does not lead: the leader sends it.
    let id = common::create_batch(&daemons[other], &video_batch("one"));
    let started = common::eventually(10, || (up.seen().len() >= 3).then_some(()));
    assert!(
        started.is_some(),
        "the leader sends the batch: {:?}\n{}",
        up.seen(),
        daemons[first].log_text()
    );
    assert!(sent_by(&daemons[first]) >= 1.0);
    for (i, d) in daemons.iter().enumerate() {
        if i != first {
            assert_eq!(sent_by(d), 0.0, "only the leader sends");
        }
    }
    let seen_there = common::eventually(5, || {
        (batch_on(&daemons[other], &id)["counts"]["succeeded"]
            .as_u64()
            .unwrap_or(0)
            >= 1)
            .then_some(())
    });
    assert!(
        seen_there.is_some(),
        "the other replicas' copies follow the leader's"
    );

    // SIGTERM of the leader mid-batch: another takes over and finishes it.
    let handover = Instant::now();
    assert_eq!(daemons[first].terminate(Duration::from_secs(20)), Some(0));
    let done = common::eventually(40, || {
        let b = batch_on(&daemons[other], &id);
        (b["state"] == "completed").then_some(b)
    })
    .unwrap_or_else(|| panic!("the batch is finished: {:?}", up.seen()));
    let after_sigterm = handover.elapsed();
    assert_eq!(done["counts"]["succeeded"], 8, "{done}");
    let second = [0, 1, 2]
        .into_iter()
        .find(|&i| i != first && leading(&daemons[i]))
        .expect("another replica leads");
    let third = 3 - first - second;

    // kill -9 of the new leader mid-batch: the last replica takes over once the lease
    // lapses, and sends again only what was in flight.
    let seen_before = up.seen().len();
    let id2 = common::create_batch(&daemons[third], &video_batch("two"));
    let started = common::eventually(10, || (up.seen().len() >= seen_before + 3).then_some(()));
    assert!(started.is_some(), "the new leader sends the second batch");
    let killed = Instant::now();
    daemons[second].kill9();
    let done2 = common::eventually(40, || {
        let b = batch_on(&daemons[third], &id2);
        (b["state"] == "completed").then_some(b)
    });
    let seen = up.seen();
    eprintln!(
        "two batches of 8 across a leader SIGTERM and a leader kill -9: done {after_sigterm:?} after the SIGTERM and {:?} after the kill; upstream saw {} creating requests, {} answered 429, at most {} jobs at once",
        killed.elapsed(),
        seen.len(),
        up.limited(),
        up.max_in_flight()
    );
    let done2 = done2.unwrap_or_else(|| {
        panic!(
            "the last replica finishes the second batch: {seen:?}\n{}",
            daemons[third].log_text()
        )
    });
    assert_eq!(done2["counts"]["succeeded"], 8, "{done2}");
    assert_eq!(
        up.limited(),
        0,
        "never past the limits, across both handovers"
    );
    assert!(up.max_in_flight() <= 2, "{}", up.max_in_flight());
    let mut keys: Vec<String> = seen.iter().filter_map(|s| s.key.clone()).collect();
    keys.sort();
    let sent = keys.len();
    keys.dedup();
    assert_eq!(keys.len(), 16, "every item of both batches sent");
    assert!(
        sent - keys.len() <= 4,
        "only what was in flight at a handover is sent again ({} repeats)",
        sent - keys.len()
    );
    assert!(
        sent_by(&daemons[third]) >= 1.0,
        "the last leader sent the rest"
    );
}

#[test]
fn an_engine_that_lost_its_data_gets_it_back_from_the_running_replicas() {
    let _one = one_at_a_time();
    let (_redis_dir, redis, dirs) = redis_and_dirs(3);
    let logs = tempfile::tempdir().unwrap();
    let now = chrono_now_ms();
    let lines = |from: usize, to: usize| -> String {
        (from..to)
            .map(|i| {
                format!(
                    "{{\"org\":\"filed\",\"app\":\"tail\",\"ts\":{},\"status\":200}}\n",
                    now + i as i64
                )
            })
            .collect()
    };
    let file = logs.path().join("app.log");
    std::fs::write(&file, lines(0, 1000)).unwrap();
    let source = format!(
        "[[sources.file]]\nname = \"app\"\npath = \"{}\"\norg = \"filed\"\n",
        file.display()
    );
    let config = |i: usize| replica_config(&redis.url(), i, if i == 0 { &source } else { "" }, "");
    let mut r0 = common::Daemon::start(dirs[0].path(), &config(0), &[]);
    let r1 = common::Daemon::start(dirs[1].path(), &config(1), &[]);
    assert_eq!(
        post_ndjson(&r1.base, &acme_body(now, "before", 100)).map(|r| r.0),
        Some(202)
    );
    let counts = |d: &common::Daemon| {
        (
            common::metric(
                &d.base,
                "ratewarden_usage{org=\"filed\",dimension=\"daily\"}",
            ),
            common::metric(
                &d.base,
                "ratewarden_usage{org=\"acme\",dimension=\"daily\"}",
            ),
        )
    };
    let both = |want: (f64, f64)| {
        common::eventually(10, || {
            (counts(&r0) == (Some(want.0), Some(want.1))
                && counts(&r1) == (Some(want.0), Some(want.1)))
                .then_some(())
        })
    };
    assert_eq!(
        both((1000.0, 100.0)),
        Some(()),
        "{:?} {:?}",
        counts(&r0),
        counts(&r1)
    );

    // The engine loses everything while both replicas run.
    redis_cli(&redis, &["FLUSHALL"]);
    let noticed = common::eventually(10, || {
        [&r0, &r1]
            .iter()
            .any(|d| d.log_text().contains("the shared engine lost its data"))
            .then_some(())
    });
    assert_eq!(noticed, Some(()), "a replica notices within a lease period");
    assert_eq!(
        post_ndjson(&r1.base, &acme_body(now, "after", 50)).map(|r| r.0),
        Some(202)
    );
    let put_back = common::eventually(15, || {
        (redis_cli(&redis, &["EXISTS", "ratewarden:snapshot"]).trim() == "1"
            && redis_cli(&redis, &["HLEN", "ratewarden:checkpoints:r0"]).trim() == "1"
            && redis_cli(&redis, &["SISMEMBER", "ratewarden:sources:r0", "app"]).trim() == "1")
            .then_some(())
    });
    assert_eq!(
        put_back,
        Some(()),
        "the leader's snapshot and r0's checkpoint are in the engine again: {} {} {}\n{}",
        redis_cli(&redis, &["EXISTS", "ratewarden:snapshot"]),
        redis_cli(&redis, &["HGETALL", "ratewarden:checkpoints:r0"]),
        redis_cli(&redis, &["SMEMBERS", "ratewarden:sources:r0"]),
        r0.log_text()
    );
    std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, lines(1000, 1500).as_bytes()))
        .unwrap();
    assert_eq!(
        both((1500.0, 150.0)),
        Some(()),
        "{:?} {:?}",
        counts(&r0),
        counts(&r1)
    );

    // The tailing replica killed and started again resumes its file where it was, and a new
    // replica starts from the snapshot put back: nothing counted twice, nothing lost.
    r0.kill9();
    let r0 = common::Daemon::start(dirs[0].path(), &config(0), &[]);
    let r2 = common::Daemon::start(dirs[2].path(), &config(2), &[]);
    let all = common::eventually(10, || {
        [&r0, &r1, &r2]
            .iter()
            .all(|d| counts(d) == (Some(1500.0), Some(150.0)))
            .then_some(())
    });
    assert_eq!(
        all,
        Some(()),
        "after the loss: r0 {:?}, r1 {:?}, r2 {:?}",
        counts(&r0),
        counts(&r1),
        counts(&r2)
    );
    assert_eq!(usage_of(&r1.base), usage_of(&r2.base));

    // The engine loses everything while the tailing replica is down: the running ones put
    // the counts back, and the tailer resumes its file from the copy of its checkpoints in
    // its local store (not from the start, which would count the file twice).
    let mut r0 = r0;
    r0.kill9();
    redis_cli(&redis, &["FLUSHALL"]);
    let put_back = common::eventually(15, || {
        (redis_cli(&redis, &["EXISTS", "ratewarden:snapshot"]).trim() == "1").then_some(())
    });
    assert_eq!(
        put_back,
        Some(()),
        "the leader's snapshot is back\n{}",
        r1.log_text()
    );
    let r0 = common::Daemon::start(dirs[0].path(), &config(0), &[]);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, lines(1500, 1600).as_bytes()))
        .unwrap();
    let all = common::eventually(10, || {
        [&r0, &r1, &r2]
            .iter()
            .all(|d| counts(d) == (Some(1600.0), Some(150.0)))
            .then_some(())
    });
    assert_eq!(
        all,
        Some(()),
        "the tailer down at the loss: r0 {:?}, r1 {:?}, r2 {:?}\n{}",
        counts(&r0),
        counts(&r1),
        counts(&r2),
        r0.log_text()
    );
    assert!(
        r0.log_text()
            .contains("resuming from the copy in the local store"),
        "{}",
        r0.log_text()
    );

    // With no replica running to put it back, every replica that ran on the engine before
    // says it starts from nothing, not only the first to start.
    drop((r0, r1, r2));
    redis_cli(&redis, &["FLUSHALL"]);
    let r1 = common::Daemon::start(dirs[1].path(), &config(1), &[]);
    assert!(
        r1.log_text()
            .contains("the shared engine holds none of this cluster's data"),
        "{}",
        r1.log_text()
    );
    let r2 = common::Daemon::start(dirs[2].path(), &config(2), &[]);
    assert!(
        r2.log_text()
            .contains("the shared engine lost its data since this replica last started"),
        "{}",
        r2.log_text()
    );
}

#[test]
fn a_damaged_shared_snapshot_is_named_and_kept_by_recover() {
    let _one = one_at_a_time();
    let (_redis_dir, redis, dirs) = redis_and_dirs(1);
    redis_cli(
        &redis,
        &[
            "HSET",
            "ratewarden:snapshot",
            "at",
            "1-0",
            "state",
            "not a snapshot",
        ],
    );
    let config = replica_config(&redis.url(), 0, "", "");
    let log = match common::Daemon::try_start(dirs[0].path(), &config, &[]) {
        Ok(mut d) => {
            d.kill9();
            panic!("started on a damaged snapshot:\n{}", d.log_text())
        }
        Err(log) => log,
    };
    assert!(
        log.contains("the shared snapshot (Redis key ratewarden:snapshot) is damaged")
            && log.contains("run --recover")
            && !log.contains("state.sqlite.damaged"),
        "the error names the Redis key, not the local file:\n{log}"
    );
    let d = common::Daemon::try_start_with(dirs[0].path(), &config, &[], &["--recover"])
        .unwrap_or_else(|log| panic!("--recover starts:\n{log}"));
    let kept = redis_cli(&redis, &["KEYS", "ratewarden:snapshot:damaged-*"]);
    assert!(
        kept.trim().starts_with("ratewarden:snapshot:damaged-"),
        "{kept}\n{}",
        d.log_text()
    );
    assert_eq!(
        redis_cli(&redis, &["HGET", kept.trim(), "state"]).trim(),
        "not a snapshot",
        "the damaged snapshot is kept as it was"
    );
    drop(d);

    // Damage to its other fields, or a key of another type, is named the same way, and
    // `--recover` moves such a snapshot aside.
    let damages: [&[&str]; 4] = [
        &[
            "HSET",
            "ratewarden:snapshot",
            "at",
            "not an id",
            "state",
            "x",
        ],
        &["HSET", "ratewarden:snapshot", "at", "1-0"],
        &[
            "HSET",
            "ratewarden:snapshot",
            "at",
            "1-0",
            "state",
            "x",
            "batches",
            "junk",
        ],
        &["SET", "ratewarden:snapshot", "hello"],
    ];
    for damage in damages {
        redis_cli(&redis, &["DEL", "ratewarden:snapshot"]);
        redis_cli(&redis, damage);
        let log = match common::Daemon::try_start(dirs[0].path(), &config, &[]) {
            Ok(mut d) => {
                d.kill9();
                panic!("started on {damage:?}:\n{}", d.log_text())
            }
            Err(log) => log,
        };
        assert!(
            log.contains("the shared snapshot (Redis key ratewarden:snapshot) is damaged"),
            "{damage:?}: {log}"
        );
        let d = common::Daemon::try_start_with(dirs[0].path(), &config, &[], &["--recover"])
            .unwrap_or_else(|log| panic!("--recover starts on {damage:?}:\n{log}"));
        drop(d);
    }
}

#[test]
fn one_idempotency_key_given_to_two_replicas_at_once_creates_one_batch() {
    use common::upstream::Upstream;
    let _one = one_at_a_time();
    let up = Upstream::start(600, 2, Duration::from_millis(1500));
    let (_redis_dir, redis, dirs) = redis_and_dirs(2);
    let before = batch_config(&up.url());
    let daemons = start_all(&dirs, &|i| replica_config(&redis.url(), i, &before, ""));
    let bases: Vec<String> = daemons.iter().map(|d| d.base.clone()).collect();
    // Both replicas given `key` at once, with `bodies[0]` and `bodies[1]`.
    let at_once = |key: &str, bodies: [String; 2]| -> Vec<(u16, serde_json::Value)> {
        let go = std::sync::Arc::new(std::sync::Barrier::new(2));
        let posts: Vec<_> = bodies
            .into_iter()
            .zip(bases.clone())
            .map(|(body, base)| {
                let (go, key) = (go.clone(), key.to_string());
                std::thread::spawn(move || {
                    go.wait();
                    let (status, answer) = common::http(
                        "POST",
                        &format!("{base}/v1/batches"),
                        &[
                            ("Idempotency-Key", &key),
                            ("Content-Type", "application/json"),
                        ],
                        body.as_bytes(),
                    )
                    .expect("answered");
                    (status, serde_json::from_str(&answer).unwrap_or_default())
                })
            })
            .collect();
        posts.into_iter().map(|p| p.join().unwrap()).collect()
    };
    for round in 0..5 {
        let answers = at_once(
            &format!("diff-{round}"),
            [
                video_batch(&format!("a{round}")),
                video_batch(&format!("b{round}")),
            ],
        );
        let mut statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
        statuses.sort();
        assert_eq!(
            statuses,
            [201, 422],
            "another body under the key: {answers:?}"
        );
        let answers = at_once(
            &format!("same-{round}"),
            [
                video_batch(&format!("s{round}")),
                video_batch(&format!("s{round}")),
            ],
        );
        let mut statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
        statuses.sort();
        assert_eq!(statuses, [200, 201], "the same body twice: {answers:?}");
        assert_eq!(answers[0].1["id"], answers[1].1["id"], "{answers:?}");
        let id = answers[0].1["id"].as_str().expect("an id").to_string();
        assert!(
            daemons
                .iter()
                .all(|d| batch_on(d, &id)["id"] == id.as_str()),
            "both replicas hold the batch"
        );
    }
    // Once every replica holds the batch, its own record answers for the key, even after
    // Redis lost the claim.
    let post = |d: &common::Daemon, body: &str| {
        common::http(
            "POST",
            &format!("{}/v1/batches", d.base),
            &[
                ("Idempotency-Key", "kept"),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
        .map(|(status, _)| status)
    };
    let (first, other) = (video_batch("first"), video_batch("other"));
    assert_eq!(post(&daemons[0], &first), Some(201));
    let held = common::eventually(5, || (post(&daemons[1], &first) == Some(200)).then_some(()));
    assert_eq!(held, Some(()), "the other replica holds the batch");
    redis_cli(&redis, &["FLUSHALL"]);
    assert_eq!(post(&daemons[1], &other), Some(422), "another body");
    assert_eq!(
        post(&daemons[1], &first),
        Some(200),
        "the first body, again"
    );
    assert_eq!(
        post(&daemons[0], &first),
        Some(200),
        "the first body, again"
    );
}

#[test]
fn values_written_into_the_engine_by_something_else_are_named_and_passed_over() {
    let _one = one_at_a_time();
    let (_redis_dir, redis, dirs) = redis_and_dirs(1);
    // A lease key without an expiry (no replica writes one) is taken over, saying so.
    redis_cli(&redis, &["SET", "ratewarden:leader", "junk"]);
    let config = replica_config(&redis.url(), 0, "", "");
    let mut d = common::Daemon::start(dirs[0].path(), &config, &[]);
    assert!(
        common::eventually(10, || leading(&d).then_some(())).is_some(),
        "leads despite the junk lease:\n{}",
        d.log_text()
    );
    assert!(d.log_text().contains("taken over"), "{}", d.log_text());
    // Log entries not written by a replica are passed over, named; the next ones apply.
    redis_cli(
        &redis,
        &["XADD", "ratewarden:log", "*", "b", "junk", "r", "x"],
    );
    redis_cli(&redis, &["XADD", "ratewarden:log", "*", "hello", "world"]);
    let now = chrono_now_ms();
    assert_eq!(
        post_ndjson(&d.base, &acme_body(now, "after-junk", 3)).map(|r| r.0),
        Some(202)
    );
    let counted = common::eventually(10, || {
        (common::metric(
            &d.base,
            "ratewarden_usage{org=\"acme\",dimension=\"daily\"}",
        ) == Some(3.0))
        .then_some(())
    });
    assert_eq!(counted, Some(()), "{}", d.log_text());
    let log = d.log_text();
    assert!(
        log.contains("not a journal entry") && log.contains("was not written by a replica"),
        "{log}"
    );
    // An epoch that is not an integer is named, not taken for an unreachable engine.
    assert_eq!(d.terminate(Duration::from_secs(20)), Some(0));
    redis_cli(&redis, &["SET", "ratewarden:leader:epoch", "abc"]);
    let d = common::Daemon::start(dirs[0].path(), &config, &[]);
    let named = common::eventually(10, || {
        d.log_text()
            .contains(
                "the lease script failed on keys ratewarden:leader and ratewarden:leader:epoch",
            )
            .then_some(())
    });
    assert_eq!(named, Some(()), "{}", d.log_text());
    assert!(
        !d.log_text()
            .contains("cannot reach the shared engine for the lease")
    );
}
