//! Black-box: the store of the real binary: acknowledged events survive `kill -9`, request ids
//! make retries exact, one daemon per data directory.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{Daemon, eventually, http, metric};

const CONFIG: &str =
    "[server]\nlisten = \"127.0.0.1:0\"\n[[orgs]]\nid = \"acme\"\ntier = \"pro\"\n";

fn post(base: &str, body: &str) -> Option<u16> {
    http(
        "POST",
        &format!("{base}/v1/events"),
        &[("Content-Type", "application/x-ndjson")],
        body.as_bytes(),
    )
    .map(|(s, _)| s)
}

fn batch(first: u64, n: u64, ts: i64) -> String {
    (first..first + n)
        .map(|i| {
            format!("{{\"org\":\"acme\",\"ts\":{ts},\"status\":200,\"request_id\":\"req-{i}\"}}\n")
        })
        .collect()
}

fn daily(base: &str) -> Option<f64> {
    metric(base, r#"ratewarden_usage{org="acme",dimension="daily"}"#)
}

#[test]
fn acknowledged_events_survive_kill_9_and_retries_count_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), CONFIG, &[]);
    let base = d.base.clone();
    let ts = chrono::Utc::now().timestamp_millis();
    const PER_POST: u64 = 50;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    // Four clients post without pause; the daemon is killed while they do.
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (base, stop, acked, next) =
                (base.clone(), stop.clone(), acked.clone(), next.clone());
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                while !stop.load(Ordering::Acquire) {
                    let first = next.fetch_add(PER_POST, Ordering::AcqRel);
                    match post(&base, &batch(first, PER_POST, ts)) {
                        Some(202) => {
                            acked.fetch_add(PER_POST, Ordering::AcqRel);
                            mine.push(first);
                        }
                        _ => break,
                    }
                }
                mine
            })
        })
        .collect();
    eventually(20, || {
        (acked.load(Ordering::Acquire) >= 20_000).then_some(())
    });
    d.kill9();
    stop.store(true, Ordering::Release);
    let acked_batches: Vec<u64> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let acked_events = acked.load(Ordering::Acquire);
    let sent_events = next.load(Ordering::Acquire);
    assert_eq!(acked_batches.len() as u64 * PER_POST, acked_events);

    let d = Daemon::start(dir.path(), CONFIG, &[]);
    let after = daily(&d.base).unwrap_or(0.0) as u64;
    assert!(
        after >= acked_events,
        "lost acknowledged events: {after} < {acked_events}"
    );
    assert!(
        after <= sent_events,
        "counted more than was sent: {after} > {sent_events}"
    );

    // A shipper that did not get its answer sends again, and may repeat acknowledged batches
    // too: request ids make the total exact.
    for first in (0..sent_events).step_by(PER_POST as usize) {
        assert_eq!(post(&d.base, &batch(first, PER_POST, ts)), Some(202));
    }
    assert_eq!(daily(&d.base), Some(sent_events as f64));
    assert!(acked_events >= 20_000, "{acked_events}");
}

#[test]
fn a_request_id_counts_once_across_http_and_a_log_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("requests.jsonl");
    let now = chrono::Utc::now().timestamp_millis();
    std::fs::write(
        &log,
        format!("{{\"org\":\"acme\",\"ts\":{now},\"status\":200,\"request_id\":\"shared-1\"}}\n"),
    )
    .unwrap();
    let config = format!(
        "{CONFIG}\n[[sources.file]]\nname = \"app\"\npath = \"{}\"\n",
        log.display()
    );
    let d = Daemon::start(dir.path(), &config, &[]);
    assert!(eventually(10, || (daily(&d.base) == Some(1.0)).then_some(())).is_some());
    let same =
        format!("{{\"org\":\"acme\",\"ts\":{now},\"status\":200,\"request_id\":\"shared-1\"}}\n");
    let (status, body) = d.post_events(&same);
    assert_eq!(status, 202);
    assert!(
        body.contains("\"accepted\":1"),
        "accepted, not counted: {body}"
    );
    let other =
        format!("{{\"org\":\"acme\",\"ts\":{now},\"status\":200,\"request_id\":\"shared-2\"}}\n");
    assert_eq!(post(&d.base, &other), Some(202));
    assert_eq!(daily(&d.base), Some(2.0));
}

#[test]
fn a_second_daemon_on_the_same_directory_fails_fast() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Daemon::start(dir.path(), CONFIG, &[]);
    let started = std::time::Instant::now();
    let second = Daemon::try_start(dir.path(), CONFIG, &[])
        .err()
        .expect("refused");
    assert!(second.contains("in use by another ratewarden"), "{second}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn state_survives_a_clean_restart_through_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), CONFIG, &[]);
    let ts = chrono::Utc::now().timestamp_millis();
    assert_eq!(post(&d.base, &batch(0, 30, ts)), Some(202));
    let job = format!("{{\"org\":\"acme\",\"ts\":{ts},\"status\":202,\"job_id\":\"j1\"}}\n");
    assert_eq!(post(&d.base, &job), Some(202));
    assert_eq!(d.terminate(Duration::from_secs(10)), Some(0));
    let d = Daemon::start(dir.path(), CONFIG, &[]);
    assert!(
        d.find_log("state recovered")
            .is_some_and(|v| v["fields"]["from_snapshot"] == true),
        "{}",
        d.log_text()
    );
    assert_eq!(daily(&d.base), Some(31.0));
    assert_eq!(
        metric(&d.base, r#"ratewarden_jobs_in_flight{org="acme"}"#),
        Some(1.0)
    );
    assert_eq!(post(&d.base, &batch(0, 30, ts)), Some(202));
    assert_eq!(
        daily(&d.base),
        Some(31.0),
        "request ids are remembered across restarts"
    );
}

#[test]
fn a_store_written_by_the_previous_version_is_read() {
    // tests/fixtures/store-v2 was written by the release before late-event handling (its
    // snapshot format RWT2): 8 successes, a job started, six 429s, and an upstream report.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/store-v2/state.sqlite"),
        data.join("state.sqlite"),
    )
    .unwrap();
    let config = "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"./data\"\n\
                  [tiers.t]\nrpm = 10\nconcurrency = 2\ndaily = 20\n[[orgs]]\nid = \"acme\"\ntier = \"t\"\n";
    let d = Daemon::start(dir.path(), config, &[]);
    let recovered = d
        .find_log("state recovered")
        .unwrap_or_else(|| panic!("{}", d.log_text()));
    assert_eq!(recovered["fields"]["from_snapshot"], true, "{recovered}");
    let m = |s: &str| metric(&d.base, s);
    assert_eq!(
        m(r#"ratewarden_requests_total{org="acme",app="bot",outcome="success"}"#),
        Some(9.0)
    );
    assert_eq!(
        m(r#"ratewarden_requests_total{org="acme",app="bot",outcome="rate_limited"}"#),
        Some(6.0)
    );
    assert_eq!(
        m(r#"ratewarden_rate_limited_total{org="acme",app="bot",cause="rpm"}"#),
        Some(5.0)
    );
    assert_eq!(m(r#"ratewarden_bursts_total{org="acme"}"#), Some(2.0));
    assert_eq!(
        m(r#"ratewarden_retry_violations_total{org="acme",app="bot"}"#),
        Some(5.0)
    );
    // It goes on counting, and a clean stop writes the current format.
    assert_eq!(
        d.post_events(r#"{"org":"acme","app":"bot","status":200}"#)
            .0,
        202
    );
    assert_eq!(
        m(r#"ratewarden_requests_total{org="acme",app="bot",outcome="success"}"#),
        Some(10.0)
    );
    let mut d = d;
    assert_eq!(d.terminate(Duration::from_secs(10)), Some(0));
    let db = rusqlite::Connection::open(data.join("state.sqlite")).unwrap();
    let state: Vec<u8> = db
        .query_row("SELECT state FROM snapshot", [], |r| r.get(0))
        .unwrap();
    // The current format: the checksummed envelope around RWT8.
    assert_eq!(&state[..4], b"RWS1");
    assert_eq!(&state[8..12], b"RWT8");
    drop(db);
    let d = Daemon::start(dir.path(), config, &[]);
    assert_eq!(
        metric(
            &d.base,
            r#"ratewarden_requests_total{org="acme",app="bot",outcome="success"}"#
        ),
        Some(10.0)
    );
}

/// The store file under the default `[storage] path`.
fn store_file(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join("ratewarden-data").join("state.sqlite")
}

/// Files beside the store kept by `--recover`.
fn kept_copies(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir.join("ratewarden-data"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            n.starts_with("state.sqlite.damaged-") && !n.ends_with("-wal") && !n.ends_with("-shm")
        })
        .collect()
}

#[test]
fn an_empty_or_unreadable_store_is_not_a_first_start() {
    for (what, bytes) in [
        ("empty", Vec::new()),
        (
            "garbage",
            b"this is not a database, it was overwritten".repeat(200),
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut d = Daemon::start(dir.path(), CONFIG, &[]);
            let ts = chrono::Utc::now().timestamp_millis();
            assert_eq!(post(&d.base, &batch(0, 5, ts)), Some(202));
            assert_eq!(d.terminate(Duration::from_secs(10)), Some(0));
        }
        std::fs::write(store_file(dir.path()), &bytes).unwrap();
        let refused = Daemon::try_start(dir.path(), CONFIG, &[])
            .err()
            .unwrap_or_else(|| panic!("{what}: started on a damaged store"));
        assert!(
            refused.contains("state.sqlite is damaged") && refused.contains("run --recover"),
            "{what}: {refused}"
        );
        assert_eq!(
            std::fs::read(store_file(dir.path())).unwrap(),
            bytes,
            "{what}: nothing was changed"
        );
        // --recover keeps the file aside and starts from what can be read (nothing here).
        let d = Daemon::try_start_with(dir.path(), CONFIG, &[], &["--recover"])
            .unwrap_or_else(|log| panic!("{what}: {log}"));
        let copies = kept_copies(dir.path());
        assert_eq!(copies.len(), 1, "{what}: {copies:?}");
        let kept = dir.path().join("ratewarden-data").join(&copies[0]);
        assert_eq!(std::fs::read(kept).unwrap(), bytes, "{what}");
        let log = d.log_text();
        assert!(log.contains("run --recover"), "{what}: {log}");
        assert!(log.contains("is kept as"), "{what}: {log}");
        assert_eq!(daily(&d.base), Some(0.0), "{what}");
        // The new store is a real one: counts survive a restart without --recover.
        let ts = chrono::Utc::now().timestamp_millis();
        assert_eq!(post(&d.base, &batch(100, 3, ts)), Some(202));
        let mut d = d;
        assert_eq!(d.terminate(Duration::from_secs(10)), Some(0));
        let d = Daemon::start(dir.path(), CONFIG, &[]);
        assert_eq!(daily(&d.base), Some(3.0), "{what}");
    }
}

#[test]
fn a_corrupt_journal_entry_stops_start_until_recovered() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut d = Daemon::start(dir.path(), CONFIG, &[]);
        let ts = chrono::Utc::now().timestamp_millis();
        for k in 0..3 {
            assert_eq!(post(&d.base, &batch(k * 10, 10, ts)), Some(202));
        }
        // No clean stop: the events are in journal entries after the last snapshot.
        d.kill9();
    }
    {
        let db = rusqlite::Connection::open(store_file(dir.path())).unwrap();
        let entries: i64 = db
            .query_row("SELECT COUNT(*) FROM journal", [], |r| r.get(0))
            .unwrap();
        assert!(entries >= 3, "{entries} journal entries");
        db.execute(
            "UPDATE journal SET data = x'02ff00ff00ff00ff' WHERE seq = (SELECT MIN(seq) FROM journal WHERE events = 10)",
            [],
        )
        .unwrap();
    }
    let refused = Daemon::try_start(dir.path(), CONFIG, &[])
        .err()
        .expect("refused");
    assert!(
        refused.contains("journal entries") && refused.contains("cannot be read"),
        "{refused}"
    );
    assert!(refused.contains("state.sqlite is damaged"), "{refused}");
    let mut d = Daemon::try_start_with(dir.path(), CONFIG, &[], &["--recover"])
        .unwrap_or_else(|log| panic!("{log}"));
    assert_eq!(daily(&d.base), Some(20.0), "the two readable entries count");
    let log = d.log_text();
    assert!(log.contains("1 journal entries"), "{log}");
    assert_eq!(kept_copies(dir.path()).len(), 1);
    // The damage is gone for good: once the snapshot written at once has replaced the
    // entries (the newest commit is a snapshot), a plain start works and counts the same.
    let snapshot_is_newest = common::eventually(10, || {
        let snap = common::store_value(
            dir.path(),
            "SELECT value FROM meta WHERE key = 'snapshot_seq'",
        )?;
        let last =
            common::store_value(dir.path(), "SELECT value FROM meta WHERE key = 'last_seq'")?;
        (snap == last).then_some(())
    });
    assert!(snapshot_is_newest.is_some(), "{}", d.log_text());
    d.kill9();
    let d = Daemon::start(dir.path(), CONFIG, &[]);
    assert_eq!(daily(&d.base), Some(20.0));
}

#[test]
fn damaged_pages_are_salvaged_table_by_table() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut d = Daemon::start(dir.path(), CONFIG, &[]);
        let ts = chrono::Utc::now().timestamp_millis();
        assert_eq!(post(&d.base, &batch(0, 7, ts)), Some(202));
        assert_eq!(d.terminate(Duration::from_secs(10)), Some(0));
    }
    // Overwrite the pages after the schema: every table's root is damaged.
    let path = store_file(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 8192, "{} bytes", bytes.len());
    for b in &mut bytes[4096..] {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let refused = Daemon::try_start(dir.path(), CONFIG, &[])
        .err()
        .expect("refused");
    assert!(refused.contains("is damaged"), "{refused}");
    let d = Daemon::try_start_with(dir.path(), CONFIG, &[], &["--recover"])
        .unwrap_or_else(|log| panic!("{log}"));
    let log = d.log_text();
    assert!(log.contains("the rest is lost"), "{log}");
    assert_eq!(daily(&d.base), Some(0.0));
    assert_eq!(kept_copies(dir.path()).len(), 1);
}

#[test]
fn a_store_cut_short_under_its_write_ahead_log_is_named_damaged() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut d = Daemon::start(dir.path(), CONFIG, &[]);
        let ts = chrono::Utc::now().timestamp_millis();
        for i in 0..20 {
            assert_eq!(post(&d.base, &batch(i * 50, 50, ts)), Some(202));
        }
        // Killed: the write-ahead log stays beside the file.
        d.kill9();
    }
    let path = store_file(dir.path());
    let wal = path.with_file_name("state.sqlite-wal");
    assert!(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0) > 0);
    let half = std::fs::metadata(&path).unwrap().len() / 2;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(half)
        .unwrap();
    let refused = Daemon::try_start(dir.path(), CONFIG, &[])
        .err()
        .expect("refused");
    assert!(refused.contains("is damaged"), "{refused}");
    assert!(refused.contains("--recover"), "{refused}");
    let d = Daemon::try_start_with(dir.path(), CONFIG, &[], &["--recover"])
        .unwrap_or_else(|log| panic!("{log}"));
    assert_eq!(kept_copies(dir.path()).len(), 1, "{}", d.log_text());
}

#[test]
fn a_journal_of_a_newer_version_is_refused_not_salvaged() {
    let dir = tempfile::tempdir().unwrap();
    three_entries(dir.path());
    // Format byte 6 becomes 12.
    let newest = "(SELECT MAX(seq) FROM journal)";
    let db = rusqlite::Connection::open(store_file(dir.path())).unwrap();
    let mut blob: Vec<u8> = db
        .query_row(
            &format!("SELECT data FROM journal WHERE seq = {newest}"),
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(blob[0], 6, "the format this ratewarden writes");
    blob[0] = 12;
    db.execute(
        &format!("UPDATE journal SET data = ?1 WHERE seq = {newest}"),
        [blob],
    )
    .unwrap();
    drop(db);
    for flags in [&[][..], &["--recover"][..]] {
        let log = match Daemon::try_start_with(dir.path(), CONFIG, &[], flags) {
            Err(log) => log,
            Ok(d) => panic!("started on a newer journal ({flags:?}):\n{}", d.log_text()),
        };
        assert!(log.contains("newer than this ratewarden knows"), "{log}");
        assert!(log.contains("run the ratewarden that wrote it"), "{log}");
    }
    assert!(
        kept_copies(dir.path()).is_empty(),
        "nothing dropped or set aside"
    );
}

/// Runs SQL on the stopped daemon's store.
fn tamper(dir: &std::path::Path, sql: &str) {
    let db = rusqlite::Connection::open(store_file(dir)).unwrap();
    db.execute_batch(sql).unwrap();
}

/// Flips one bit of a blob in the stopped daemon's store, as a bad disk would.
fn flip(dir: &std::path::Path, select: &str, update: &str, at: usize) {
    let db = rusqlite::Connection::open(store_file(dir)).unwrap();
    let mut blob: Vec<u8> = db.query_row(select, [], |r| r.get(0)).unwrap();
    blob[at] ^= 0x04;
    db.execute(update, [blob]).unwrap();
}

/// A store holding three journal entries of 10 events each after its snapshot (or none).
fn three_entries(dir: &std::path::Path) {
    let mut d = Daemon::start(dir, CONFIG, &[]);
    let ts = chrono::Utc::now().timestamp_millis();
    for k in 0..3 {
        assert_eq!(post(&d.base, &batch(k * 10, 10, ts)), Some(202));
    }
    d.kill9();
}

fn refused(dir: &std::path::Path) -> String {
    let log = match Daemon::try_start(dir, CONFIG, &[]) {
        Err(log) => log,
        Ok(d) => panic!("started on a damaged store:\n{}", d.log_text()),
    };
    assert!(log.contains("state.sqlite is damaged"), "{log}");
    log
}

#[test]
fn flipped_bits_and_missing_rows_are_found_not_counted() {
    // A bit flipped inside an entry's events: the checksum says so.
    let dir = tempfile::tempdir().unwrap();
    three_entries(dir.path());
    let first = "(SELECT MIN(seq) FROM journal WHERE events = 10)";
    flip(
        dir.path(),
        &format!("SELECT data FROM journal WHERE seq = {first}"),
        &format!("UPDATE journal SET data = ?1 WHERE seq = {first}"),
        40,
    );
    let log = refused(dir.path());
    assert!(log.contains("1 journal entries"), "{log}");

    // An entry deleted from the middle: the next one names it.
    let dir = tempfile::tempdir().unwrap();
    three_entries(dir.path());
    tamper(
        dir.path(),
        "DELETE FROM journal WHERE seq = (SELECT seq FROM journal ORDER BY seq LIMIT 1 OFFSET 1)",
    );
    let log = refused(dir.path());
    assert!(log.contains("are missing"), "{log}");
    let d = Daemon::try_start_with(dir.path(), CONFIG, &[], &["--recover"])
        .unwrap_or_else(|log| panic!("{log}"));
    assert_eq!(daily(&d.base), Some(20.0), "what is there still counts");
    drop(d);

    // The newest entry copied as one more: it repeats history, found and skipped.
    let dir = tempfile::tempdir().unwrap();
    three_entries(dir.path());
    tamper(
        dir.path(),
        "INSERT INTO journal SELECT seq + 1, events, data FROM journal \
         WHERE seq = (SELECT MAX(seq) FROM journal); \
         UPDATE meta SET value = value + 1 WHERE key IN ('last_seq', 'journal_seq')",
    );
    let log = refused(dir.path());
    assert!(log.contains("repeats events already counted"), "{log}");
    let d = Daemon::try_start_with(dir.path(), CONFIG, &[], &["--recover"])
        .unwrap_or_else(|log| panic!("{log}"));
    assert_eq!(daily(&d.base), Some(30.0), "counted once");
    drop(d);

    // The newest entry deleted: the store noted it.
    let dir = tempfile::tempdir().unwrap();
    three_entries(dir.path());
    tamper(
        dir.path(),
        "DELETE FROM journal WHERE seq = (SELECT MAX(seq) FROM journal)",
    );
    let log = refused(dir.path());
    assert!(log.contains("(the newest) is missing"), "{log}");
    let d = Daemon::try_start_with(dir.path(), CONFIG, &[], &["--recover"])
        .unwrap_or_else(|log| panic!("{log}"));
    assert_eq!(daily(&d.base), Some(20.0), "what is there still counts");
    drop(d);

    // The snapshot row deleted, or a bit of it flipped.
    for deleted in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut d = Daemon::start(dir.path(), CONFIG, &[]);
            let ts = chrono::Utc::now().timestamp_millis();
            assert_eq!(post(&d.base, &batch(0, 10, ts)), Some(202));
            assert_eq!(d.terminate(Duration::from_secs(10)), Some(0));
        }
        if deleted {
            tamper(dir.path(), "DELETE FROM snapshot");
        } else {
            flip(
                dir.path(),
                "SELECT state FROM snapshot",
                "UPDATE snapshot SET state = ?1",
                30,
            );
        }
        let log = refused(dir.path());
        assert!(log.contains("snapshot"), "{log}");
        let d = Daemon::try_start_with(dir.path(), CONFIG, &[], &["--recover"])
            .unwrap_or_else(|log| panic!("{log}"));
        assert_eq!(daily(&d.base), Some(0.0), "the snapshot held them all");
    }

    // A table dropped: refused naming the file, and --recover carries over the rest.
    let dir = tempfile::tempdir().unwrap();
    three_entries(dir.path());
    tamper(dir.path(), "DROP TABLE outbox");
    let log = refused(dir.path());
    assert!(log.contains("table outbox is missing"), "{log}");
    let d = Daemon::try_start_with(dir.path(), CONFIG, &[], &["--recover"])
        .unwrap_or_else(|log| panic!("{log}"));
    assert_eq!(daily(&d.base), Some(30.0), "{}", d.log_text());
}

#[test]
fn recover_reads_a_write_ahead_log_whose_database_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    three_entries(dir.path());
    let wal = dir.path().join("ratewarden-data").join("state.sqlite-wal");
    let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert!(wal_len > 0, "kill -9 leaves the log");
    std::fs::write(store_file(dir.path()), b"").unwrap();
    refused(dir.path());
    let d = Daemon::try_start_with(dir.path(), CONFIG, &[], &["--recover"])
        .unwrap_or_else(|log| panic!("{log}"));
    assert_eq!(daily(&d.base), Some(30.0), "{}", d.log_text());
    // The kept log is as it was found.
    let kept = kept_copies(dir.path());
    let kept_wal = dir
        .path()
        .join("ratewarden-data")
        .join(format!("{}-wal", kept[0]));
    assert_eq!(std::fs::metadata(kept_wal).unwrap().len(), wal_len);
}
