//! Black-box: file sources of the real binary over real files: fixtures of every format, and
//! exactly-once counting while the daemon is killed and the log is rotated.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use common::{Daemon, eventually, metric};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn fixtures_of_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    for f in [
        "nginx-combined.log",
        "nginx-custom.log",
        "envoy.log",
        "mapped.jsonl",
    ] {
        std::fs::copy(fixture(f), logs.join(f)).unwrap();
    }
    let l = logs.display();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[[sources.file]]
name = "combined"
path = "{l}/nginx-combined.log"
format = "nginx"
org = "webapp"

[[sources.file]]
name = "custom"
path = "{l}/nginx-custom.log"
format = "nginx"
org = "fallback"
log_format = '$time_iso8601 "$request" $status $request_time org="$http_x_org" app="$http_x_app" ra="$upstream_http_retry_after" rid=$request_id'
[sources.file.fields]
org = "$http_x_org"
app = "$http_x_app"
retry_after = "$upstream_http_retry_after"

[[sources.file]]
name = "edge"
path = "{l}/envoy.log"
format = "envoy"
org = "edge-org"

[[sources.file]]
name = "mapped"
path = "{l}/*.jsonl"
org = "fallback"
[sources.file.fields]
ts = "@timestamp"
org = "organization.id"
app = "client.app"
status = "response.status"
job_id = "response.job"
error_code = "response.error"
"#
    );
    let d = Daemon::start(dir.path(), &config, &[]);
    let ingested = |source: &str| {
        metric(
            &d.base,
            &format!(r#"ratewarden_events_ingested_total{{source="{source}"}}"#),
        )
    };
    let rejected = |source: &str, reason: &str| {
        metric(
            &d.base,
            &format!(r#"ratewarden_events_rejected_total{{source="{source}",reason="{reason}"}}"#),
        )
    };
    let requests = |org: &str, app: &str, outcome: &str| {
        metric(
            &d.base,
            &format!(r#"ratewarden_requests_total{{org="{org}",app="{app}",outcome="{outcome}"}}"#),
        )
    };
    let field_errors = |source: &str, field: &str| {
        metric(
            &d.base,
            &format!(r#"ratewarden_event_field_errors_total{{source="{source}",field="{field}"}}"#),
        )
    };
    let all_read = eventually(15, || {
        (["combined", "edge", "mapped"]
            .iter()
            .all(|s| ingested(s) == Some(5.0))
            && ingested("custom") == Some(7.0))
        .then_some(())
    });
    assert!(all_read.is_some(), "{}", d.log_text());

    // nginx combined: a hostile request line still parses; garbage, a short line and a bad date do not.
    assert_eq!(rejected("combined", "invalid_field"), Some(3.0));
    assert_eq!(requests("webapp", "default", "success"), Some(2.0));
    assert_eq!(requests("webapp", "default", "rate_limited"), Some(1.0));
    assert_eq!(requests("webapp", "default", "server_error"), Some(1.0));
    assert_eq!(requests("webapp", "default", "client_error"), Some(1.0));

    // nginx custom: org, app and Retry-After from the line; "-" falls back to the source's org.
    // A status "2xx" and a Retry-After "soon" cost those fields, not the requests.
    assert_eq!(rejected("custom", "invalid_field"), Some(0.0));
    assert_eq!(field_errors("custom", "status"), Some(1.0));
    assert_eq!(field_errors("custom", "retry_after"), Some(1.0));
    assert_eq!(requests("acme", "x", "unknown"), Some(1.0));
    assert_eq!(requests("acme", "render-bot", "rate_limited"), Some(3.0));
    assert_eq!(requests("beta", "default", "success"), Some(1.0));
    assert_eq!(
        requests("fallback", "default", "success"),
        Some(2.0),
        "one nginx line, one JSON line"
    );
    assert_eq!(
        metric(
            &d.base,
            r#"ratewarden_retry_violations_total{org="acme",app="render-bot"}"#
        ),
        Some(2.0),
        "429s two and four seconds after ones that said Retry-After: 20"
    );

    // Envoy: "-" response code is an unknown outcome.
    assert_eq!(rejected("edge", "invalid_field"), Some(2.0));
    assert_eq!(requests("edge-org", "default", "unknown"), Some(1.0));
    assert_eq!(requests("edge-org", "default", "server_error"), Some(1.0));

    // JSON with dotted paths: only the line whose ts does not parse is rejected.
    assert_eq!(rejected("mapped", "invalid_field"), Some(1.0));
    assert_eq!(rejected("mapped", "invalid_json"), Some(1.0));
    assert_eq!(field_errors("mapped", "status"), Some(1.0));
    assert_eq!(requests("delta", "default", "unknown"), Some(1.0));
    assert_eq!(requests("delta", "studio", "rate_limited"), Some(1.0));
    assert_eq!(
        metric(
            &d.base,
            r#"ratewarden_rate_limited_total{org="delta",app="studio",cause="quota"}"#
        ),
        Some(1.0)
    );
    assert_eq!(requests("delta", "batch", "success"), Some(1.0));
}

/// What the log writer is told to do.
enum Rotate {
    Rename,
    CopyTruncate,
}

/// Appends a line every 2 ms to `app.log` until stopped, rotating on command. Rotation is done
/// between two writes, so copytruncate's own race (lines written between copy and truncate)
/// cannot lose lines here.
fn writer(
    dir: PathBuf,
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    commands: mpsc::Receiver<(Rotate, mpsc::Sender<()>)>,
) {
    let path = dir.join("app.log");
    let open = |p: &Path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap()
    };
    let mut file = open(&path);
    let mut generation = 0;
    let mut seq = 0u64;
    while !stop.load(Ordering::Acquire) {
        // A line every 2 ms, unless a rotation is asked for first.
        if let Ok((cmd, done)) = commands.recv_timeout(Duration::from_millis(2)) {
            generation += 1;
            match cmd {
                Rotate::Rename => {
                    std::fs::rename(&path, dir.join(format!("app.log.{generation}"))).unwrap();
                    // A few lines still go to the renamed file, as with a writer that reopens late.
                    for _ in 0..3 {
                        writeln!(file, r#"{{"status":200,"seq":{seq},"late":true}}"#).unwrap();
                        seq += 1;
                        written.fetch_add(1, Ordering::AcqRel);
                    }
                    file = open(&path);
                }
                Rotate::CopyTruncate => {
                    std::fs::copy(&path, dir.join(format!("app.log.{generation}"))).unwrap();
                    file.set_len(0).unwrap();
                }
            }
            let _ = done.send(());
        }
        writeln!(file, r#"{{"status":200,"seq":{seq}}}"#).unwrap();
        seq += 1;
        written.fetch_add(1, Ordering::AcqRel);
    }
}

#[test]
fn every_line_counted_exactly_once_through_kill_9_and_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[[sources.file]]\nname = \"app\"\npath = \"{}/*.log\"\norg = \"acme\"\n",
        logs.display()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel();
    let w = {
        let (logs, stop, written) = (logs.clone(), stop.clone(), written.clone());
        std::thread::spawn(move || writer(logs, stop, written, rx))
    };
    let rotate = |how: Rotate| {
        let (done_tx, done_rx) = mpsc::channel();
        tx.send((how, done_tx)).unwrap();
        done_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    };
    let daily = |d: &Daemon| metric(&d.base, r#"ratewarden_usage{org="acme",dimension="daily"}"#);

    let mut d = Daemon::start(dir.path(), &config, &[]);
    // Six crashes: rotations of both styles while running and while stopped.
    let plan: [(Option<Rotate>, Option<Rotate>); 6] = [
        (None, None),
        (Some(Rotate::Rename), None),
        (None, Some(Rotate::CopyTruncate)),
        (Some(Rotate::CopyTruncate), None),
        (None, Some(Rotate::Rename)),
        (Some(Rotate::Rename), Some(Rotate::CopyTruncate)),
    ];
    // The daemon has counted `more` lines beyond what it had when asked.
    let counts_on = |d: &Daemon, more: f64| {
        let from = eventually(10, || daily(d)).expect("the daemon answers");
        assert!(
            eventually(10, || daily(d).filter(|&n| n >= from + more)).is_some(),
            "counting goes on from {from}\n{}",
            d.log_text()
        );
    };
    // The writer has written `more` lines beyond what it had when asked.
    let writes_on = |more: u64| {
        let from = written.load(Ordering::Acquire);
        assert!(
            eventually(10, || (written.load(Ordering::Acquire) >= from + more)
                .then_some(()))
            .is_some()
        );
    };
    for (while_running, while_stopped) in plan {
        counts_on(&d, 100.0);
        if let Some(r) = while_running {
            rotate(r);
        }
        counts_on(&d, 100.0);
        d.kill9();
        writes_on(50);
        if let Some(r) = while_stopped {
            rotate(r);
        }
        writes_on(50);
        d = Daemon::start(dir.path(), &config, &[]);
    }
    counts_on(&d, 100.0);
    stop.store(true, Ordering::Release);
    w.join().unwrap();
    let total = written.load(Ordering::Acquire) as f64;
    let caught_up = eventually(30, || (daily(&d) == Some(total)).then_some(()));
    assert!(
        caught_up.is_some(),
        "wrote {total} lines, counted {:?}\n{}",
        daily(&d),
        d.log_text()
    );
    common::observe(Duration::from_secs(2), "no line is counted twice");
    assert_eq!(
        daily(&d),
        Some(total),
        "nothing counted twice after settling"
    );
    assert!(
        total > 1_000.0,
        "the test wrote enough lines to mean something: {total}"
    );
}
