//! Black-box: inputs as real producers write them (Windows byte-order marks and CRLF, Fluent
//! Bit's json_stream, numbers as strings, Envoy's status 0, nginx's packaged formats, Istio,
//! compressed rotations), through every intake path of the real binary: `POST /v1/events`,
//! the file tailer and `replay`, which must agree.

mod common;

use std::path::{Path, PathBuf};

use common::{Daemon, eventually, metric, run};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A temporary directory for the daemon and its `logs/` folder.
fn dir_with_logs() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    (dir, logs)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn replay_json(dir: &Path, args: &[&str]) -> Value {
    let out = run(&[&["replay", "--json"], args].concat(), dir);
    assert!(
        out.status.success(),
        "replay {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("replay --json prints JSON")
}

fn org<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["orgs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["org"] == name)
        .unwrap_or_else(|| panic!("no org {name} in {report}"))
}

/// The counters of one source on a running daemon.
fn source_counts(base: &str, source: &str) -> [Option<f64>; 6] {
    let m = |s: String| metric(base, &s);
    [
        m(format!(
            r#"ratewarden_events_ingested_total{{source="{source}"}}"#
        )),
        m(format!(
            r#"ratewarden_events_rejected_total{{source="{source}",reason="invalid_json"}}"#
        )),
        m(format!(
            r#"ratewarden_events_rejected_total{{source="{source}",reason="missing_org"}}"#
        )),
        m(format!(
            r#"ratewarden_events_rejected_total{{source="{source}",reason="invalid_field"}}"#
        )),
        m(format!(
            r#"ratewarden_event_field_errors_total{{source="{source}",field="status"}}"#
        )),
        m(format!(
            r#"ratewarden_event_field_errors_total{{source="{source}",field="latency_ms"}}"#
        )),
    ]
}

#[test]
fn one_fixture_through_http_the_tailer_and_replay_gives_equal_counts() {
    let (dir, logs) = dir_with_logs();
    let bytes = std::fs::read(fixture("real-world.jsonl")).unwrap();
    assert!(bytes.starts_with(b"\xEF\xBB\xBF") && bytes.windows(2).any(|w| w == b"\r\n"));
    std::fs::write(logs.join("app.jsonl"), &bytes).unwrap();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[[sources.file]]\nname = \"file\"\npath = \"{}/*.jsonl\"\n",
        logs.display()
    );
    let d = Daemon::start(dir.path(), &config, &[]);
    let (status, body) = d.post_body("application/x-ndjson", &bytes);
    assert_eq!(status, 202, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&answer["accepted"], &answer["rejected"]),
        (&9.into(), &3.into())
    );
    let fields: Vec<&str> = answer["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, ["status", "latency_ms"], "{body}");

    let expected = [9.0, 1.0, 1.0, 1.0, 1.0, 1.0].map(Some);
    let file = eventually(15, || {
        let c = source_counts(&d.base, "file");
        (c == expected).then_some(c)
    });
    assert_eq!(file, Some(expected), "{}", d.log_text());
    assert_eq!(source_counts(&d.base, "http"), expected, "HTTP = tailer");

    let report = replay_json(dir.path(), &[fixture("real-world.jsonl").to_str().unwrap()]);
    // A rotated, gzip-compressed copy replays the same.
    let gz = dir.path().join("real-world.jsonl.1.gz");
    std::fs::write(&gz, gzip(&bytes)).unwrap();
    let from_gz = replay_json(dir.path(), &[gz.to_str().unwrap()]);
    assert_eq!(from_gz, report);
    assert_eq!(
        (&report["events"], &report["rejected"]),
        (&9.into(), &3.into())
    );
    assert_eq!(
        report["field_errors"],
        serde_json::json!({"status": 1, "latency_ms": 1})
    );
    // Both daemon paths counted into the same orgs: twice what replay counts once.
    for (name, outcome, n) in [
        ("acme", "rate_limited", 1.0),
        ("acme", "unknown", 1.0),
        ("acme", "success", 2.0),
        ("acme", "server_error", 1.0),
        ("beta", "rate_limited", 1.0),
        ("beta", "unknown", 2.0),
        ("beta", "success", 1.0),
    ] {
        let total: f64 = ["default", "win-app"]
            .iter()
            .filter_map(|app| {
                metric(
                    &d.base,
                    &format!(
                        r#"ratewarden_requests_total{{org="{name}",app="{app}",outcome="{outcome}"}}"#
                    ),
                )
            })
            .sum();
        assert_eq!(total, 2.0 * n, "{name} {outcome}");
    }
    assert_eq!(org(&report, "acme")["requests"], 5);
    assert_eq!(org(&report, "beta")["requests"], 4);
    assert_eq!(
        org(&report, "beta")["retry_violations"],
        3,
        "three requests within the 30 s an HTTP-date Retry-After asked for"
    );
}

#[test]
fn the_issue_inputs_through_files_and_replay() {
    let (dir, logs) = dir_with_logs();
    // nginx's JSON log with everything as strings, mapped with `fields`.
    std::fs::write(
        logs.join("nginx.json"),
        "{\"time\":\"2026-11-02T10:00:01+00:00\",\"org\":\"acme\",\"status\":\"429\",\"request_time\":\"0.004\",\"retry_after\":\"7\"}\n\
         {\"time\":\"2026-11-02T10:00:03+00:00\",\"org\":\"acme\",\"status\":\"429\",\"request_time\":\"0.004\",\"retry_after\":\"7\"}\n",
    )
    .unwrap();
    // Envoy: the client went away, status 0.
    std::fs::write(
        logs.join("envoy.log"),
        "[2026-11-02T10:00:02.120Z] \"POST /v1/videos HTTP/1.1\" 0 DC 0 0 5001 - \"-\" \"curl/8.5.0\" \"id-2\" \"api.example.com\" \"-\"\n",
    )
    .unwrap();
    // nginx combined with CRLF line ends, a byte-order mark on the first line.
    let combined = std::fs::read_to_string(fixture("nginx-combined.log")).unwrap();
    let crlf = format!("\u{feff}{}", combined.replace('\n', "\r\n"));
    std::fs::write(logs.join("access.log"), &crlf).unwrap();
    let l = logs.display();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[[sources.file]]
name = "nginx-json"
path = "{l}/nginx.json"
[sources.file.fields]
ts = "time"
latency_ms = "request_time"

[[sources.file]]
name = "envoy"
path = "{l}/envoy.log"
format = "envoy"
org = "edge"

[[sources.file]]
name = "combined"
path = "{l}/access.log"
format = "nginx"
org = "web"
"#
    );
    let d = Daemon::start(dir.path(), &config, &[]);
    let m = |s: &str| metric(&d.base, s);
    let read = eventually(15, || {
        (m(r#"ratewarden_events_ingested_total{source="nginx-json"}"#) == Some(2.0)
            && m(r#"ratewarden_events_ingested_total{source="envoy"}"#) == Some(1.0)
            && m(r#"ratewarden_events_ingested_total{source="combined"}"#) == Some(5.0))
        .then_some(())
    });
    assert!(read.is_some(), "{}", d.log_text());
    assert_eq!(
        m(r#"ratewarden_requests_total{org="acme",app="default",outcome="rate_limited"}"#),
        Some(2.0)
    );
    assert_eq!(
        m(r#"ratewarden_retry_violations_total{org="acme",app="default"}"#),
        Some(1.0),
        "retry_after \"7\" read as 7 s: the second 429 came 2 s later"
    );
    assert_eq!(
        m(r#"ratewarden_requests_total{org="edge",app="default",outcome="unknown"}"#),
        Some(1.0)
    );
    assert_eq!(
        m(r#"ratewarden_events_rejected_total{source="combined",reason="invalid_field"}"#),
        Some(3.0),
        "the same three lines as without CRLF"
    );
    drop(d);

    // replay reads each source as the daemon does, and the ad hoc form agrees.
    std::fs::write(dir.path().join("r.toml"), &config).unwrap();
    let cfg = dir.path().join("r.toml");
    let cfg = cfg.to_str().unwrap();
    let by_source = |source: &str, file: &str| {
        let path = logs.join(file);
        replay_json(
            dir.path(),
            &["--config", cfg, "--source", source, path.to_str().unwrap()],
        )
    };
    let r = by_source("nginx-json", "nginx.json");
    assert_eq!(r["events"], 2);
    assert_eq!(org(&r, "acme")["rate_limited"]["unexplained"], 2);
    assert_eq!(org(&r, "acme")["retry_violations"], 1);
    let r = by_source("envoy", "envoy.log");
    assert_eq!(
        (&r["events"], &org(&r, "edge")["requests"]),
        (&1.into(), &1.into())
    );
    let r = by_source("combined", "access.log");
    assert_eq!((&r["events"], &r["rejected"]), (&5.into(), &3.into()));
    let path = logs.join("access.log");
    let adhoc = replay_json(
        dir.path(),
        &["--format", "nginx", "--org", "web", path.to_str().unwrap()],
    );
    assert_eq!(
        adhoc["events"], r["events"],
        "CRLF lines count as the tailer counts them"
    );
    assert_eq!(adhoc["orgs"], r["orgs"]);
}

#[test]
fn compressed_files_are_skipped_and_excluded_paths_never_read() {
    let (dir, logs) = dir_with_logs();
    let line = "{\"org\":\"acme\",\"status\":200}\n";
    std::fs::write(logs.join("app.log"), line.repeat(3)).unwrap();
    // A rotated, compressed generation (gzip), zstd and xz ones, and a plain old one that
    // `exclude` names.
    let gz = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(line.repeat(50).as_bytes()).unwrap();
        e.finish().unwrap()
    };
    std::fs::write(logs.join("app.log.1.gz"), &gz).unwrap();
    std::fs::write(
        logs.join("app.log.2.zst"),
        zstd::encode_all(line.repeat(50).as_bytes(), 3).unwrap(),
    )
    .unwrap();
    std::fs::write(logs.join("app.log.3.xz"), b"\xfd7zXZ\x00\x00\x04garbage").unwrap();
    std::fs::write(logs.join("app.log.old"), line.repeat(7)).unwrap();
    std::fs::write(logs.join("app.log.bak"), line.repeat(9)).unwrap();
    // Empty when the source finds it, an archive when its bytes arrive.
    std::fs::write(logs.join("app.log.4"), b"").unwrap();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[[sources.file]]\nname = \"app\"\npath = \"{}/app.log*\"\nexclude = [\"*.old\", \"app.log.bak\"]\n",
        logs.display()
    );
    let d = Daemon::start(dir.path(), &config, &[]);
    let m = |s: &str| metric(&d.base, s);
    let skipped = r#"ratewarden_source_files_skipped_total{source="app",reason="compressed"}"#;
    assert!(
        eventually(10, || (m(skipped) == Some(3.0)).then_some(())).is_some(),
        "{}",
        d.log_text()
    );
    std::fs::write(logs.join("app.log.4"), &gz).unwrap();
    assert!(
        eventually(10, || (m(skipped) == Some(4.0)).then_some(())).is_some(),
        "{}",
        d.log_text()
    );
    common::observe(
        std::time::Duration::from_millis(1500),
        "no line of a skipped file is read",
    );
    assert_eq!(
        m(r#"ratewarden_events_ingested_total{source="app"}"#),
        Some(3.0),
        "only app.log is read"
    );
    assert_eq!(
        m(r#"ratewarden_events_rejected_total{source="app",reason="invalid_json"}"#),
        Some(0.0),
        "no binary line was parsed"
    );
    assert_eq!(m(skipped), Some(4.0), "each archive skipped once");
    let logged = d.log_text();
    assert_eq!(
        logged.matches("skipping a compressed file").count(),
        4,
        "{logged}"
    );
    assert!(!logged.contains("app.log.old"), "excluded: {logged}");
    assert!(
        !logged.contains("app.log.bak"),
        "excluded by its name: {logged}"
    );
    drop(d);
    // replay reads compressed rotations (gzip, zstd) and refuses the others by name.
    let gz = logs.join("app.log.1.gz");
    let r = replay_json(dir.path(), &["--org", "acme", gz.to_str().unwrap()]);
    assert_eq!(r["events"], 50);
    let zst = logs.join("app.log.2.zst");
    let r = replay_json(dir.path(), &[zst.to_str().unwrap()]);
    assert_eq!(r["events"], 50);
    let xz = run(
        &["replay", logs.join("app.log.3.xz").to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(xz.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&xz.stderr).contains("compressed with xz"),
        "{}",
        String::from_utf8_lossy(&xz.stderr)
    );
}

#[test]
fn a_json_stream_line_counts_alike_on_every_path() {
    // Fluent Bit's json_stream: 2 000 objects back to back, one 100 KB line.
    let (dir, logs) = dir_with_logs();
    let line: String = (0..2000)
        .map(|i| format!(r#"{{"ts":"2026-11-02T10:00:00Z","org":"acme","request_id":"r{i}"}}"#))
        .collect();
    assert!(line.len() > 64 * 1024);
    std::fs::write(logs.join("stream.log"), format!("{line}\n")).unwrap();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[[sources.file]]\nname = \"fb\"\npath = \"{}/stream.log\"\nmax_line_bytes = 1048576\n",
        logs.display()
    );
    let d = Daemon::start(dir.path(), &config, &[]);
    let (status, body) = d.post_body("application/json", line.as_bytes());
    assert_eq!(status, 202, "{body}");
    assert!(body.contains(r#""accepted":2000"#), "{body}");
    let tailed = eventually(10, || {
        (metric(&d.base, r#"ratewarden_events_ingested_total{source="fb"}"#) == Some(2000.0))
            .then_some(())
    });
    assert!(tailed.is_some(), "{}", d.log_text());
    let r = replay_json(dir.path(), &[logs.join("stream.log").to_str().unwrap()]);
    assert_eq!((&r["events"], &r["rejected"]), (&2000.into(), &0.into()));
}

#[test]
fn a_source_whose_first_lines_are_all_rejected_says_so_once() {
    let (dir, logs) = dir_with_logs();
    // A format check-config accepts but that matches none of these lines.
    std::fs::write(
        logs.join("access.log"),
        "203.0.113.7 - - [02/Nov/2026:15:00:00 +0000] \"POST /v1/videos HTTP/1.1\" 202 512\n"
            .repeat(3),
    )
    .unwrap();
    std::fs::write(
        logs.join("app.jsonl"),
        "{\"organization\":\"acme\",\"code\":200}\n".repeat(3),
    )
    .unwrap();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[[sources.file]]
name = "edge"
path = "{l}/access.log"
format = "nginx"
org = "web"
log_format = '$remote_addr [$time_local] "$request" $status $body_bytes_sent "$http_referer"'
[[sources.file]]
name = "mapped"
path = "{l}/app.jsonl"
org = "fallback"
[sources.file.fields]
status = "response.status"
"#,
        l = logs.display()
    );
    std::fs::write(dir.path().join("c.toml"), &config).unwrap();
    let out = run(
        &["check-config", dir.path().join("c.toml").to_str().unwrap()],
        dir.path(),
    );
    assert!(out.status.success(), "check-config accepts it");
    let d = Daemon::start(dir.path(), &config, &[]);
    let warned = eventually(10, || {
        d.find_log("none of the first lines of this source was accepted")
    })
    .unwrap_or_else(|| panic!("{}", d.log_text()));
    assert_eq!(warned["fields"]["source"], "edge");
    assert_eq!(warned["fields"]["reason"], "invalid_field");
    assert!(
        warned["fields"]["sample"]
            .as_str()
            .unwrap()
            .starts_with("203.0.113.7"),
        "{warned}"
    );
    let missing = eventually(10, || {
        d.find_log("a mapped field was found in none of the first lines")
    })
    .unwrap_or_else(|| panic!("{}", d.log_text()));
    assert_eq!(missing["fields"]["source"], "mapped");
    assert_eq!(missing["fields"]["field"], "status");
    assert_eq!(missing["fields"]["path"], "response.status");
    // Once: more lines do not repeat it.
    std::fs::write(
        logs.join("access.log"),
        "203.0.113.7 - - [02/Nov/2026:15:00:00 +0000] \"GET / HTTP/1.1\" 200 1\n".repeat(5),
    )
    .unwrap();
    common::observe(
        std::time::Duration::from_millis(1500),
        "the first-lines warning is not repeated",
    );
    let logged = d.log_text();
    assert_eq!(
        logged
            .matches("none of the first lines of this source was accepted")
            .count(),
        1,
        "{logged}"
    );
}

#[test]
fn replay_reads_every_format_the_daemon_reads() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    // nginx's packaged `main` format.
    let main = p(
        "main.log",
        "198.51.100.7 - - [02/Nov/2026:10:00:01 +0000] \"POST /v1/videos HTTP/1.1\" 429 97 \"-\" \"openai-python/1.51.0\" \"203.0.113.9, 10.0.0.2\"\n\
         198.51.100.7 - - [02/Nov/2026:10:00:02 +0000] \"POST /v1/videos HTTP/1.1\" 200 97 \"-\" \"openai-python/1.51.0\" \"-\"\n",
    );
    let r = replay_json(
        dir.path(),
        &[
            "--format",
            "nginx",
            "--line-format",
            "main",
            "--org",
            "web",
            &main,
        ],
    );
    assert_eq!((&r["events"], &r["rejected"]), (&2.into(), &0.into()));
    // Istio's default access-log format.
    let istio = p(
        "istio.log",
        "[2026-11-02T10:00:03.409Z] \"POST /v1/videos HTTP/1.1\" 429 - via_upstream - \"-\" 0 135 4 4 \"-\" \"curl/8.5.0\" \"84961386-6d84-929d-98bd-c5aee93b5c88\" \"api.example.com\" \"10.44.1.27:443\" outbound|443||api.example.com 10.44.1.23:37652 10.0.45.184:443 10.44.1.23:46520 - default\n",
    );
    let r = replay_json(
        dir.path(),
        &[
            "--format",
            "envoy",
            "--line-format",
            "istio",
            "--org",
            "mesh",
            &istio,
        ],
    );
    assert_eq!(org(&r, "mesh")["rate_limited"]["unexplained"], 1, "{r}");
    // Envoy operators with arguments, org from a header, Retry-After as an HTTP date.
    let custom = p(
        "envoy.log",
        "1793613602 429 acme-eu ra=Mon, 02 Nov 2026 10:00:09 GMT\n1793613604 429 acme-eu ra=-\n",
    );
    let r = replay_json(
        dir.path(),
        &[
            "--format",
            "envoy",
            "--line-format",
            "%START_TIME(%s)% %RESPONSE_CODE% %REQ(X-ORG-ID)% ra=%RESP(RETRY-AFTER)%",
            "--field",
            "org=%REQ(X-ORG-ID)%",
            &custom,
        ],
    );
    assert_eq!(org(&r, "acme-eu")["requests"], 2, "{r}");
    assert_eq!(
        org(&r, "acme-eu")["retry_violations"],
        1,
        "the second 429 came 2 s into a 7 s Retry-After"
    );
    // ECS-style flat dotted keys through --field.
    let ecs = p(
        "ecs.jsonl",
        "{\"@timestamp\":\"2026-11-02T10:00:05Z\",\"organization.id\":\"ecs-org\",\"http.response.status_code\":503}\n",
    );
    let r = replay_json(
        dir.path(),
        &[
            "--field",
            "ts=@timestamp",
            "--field",
            "org=organization.id",
            "--field",
            "status=http.response.status_code",
            &ecs,
        ],
    );
    assert_eq!(org(&r, "ecs-org")["requests"], 1, "{r}");

    // Mistakes are usage errors with a reason.
    let bad = run(
        &["replay", "--format", "json", "--line-format", "main", &main],
        dir.path(),
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--line-format needs"));
    let bad = run(&["replay", "--source", "nope", &main], dir.path());
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no [[sources.file]] named \"nope\""));
    let bad = run(
        &[
            "replay",
            "--format",
            "envoy",
            "--line-format",
            "%START_TIME",
            &main,
        ],
        dir.path(),
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("Envoy operator"));
}

/// A calendar day's quota in replay: the same tracker as the daemon's, so the daemon's unit
/// tests of the window hold here too; this checks the whole path from the config file.
#[test]
fn replay_counts_a_calendar_day_and_resets_at_local_midnight() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cal.toml");
    std::fs::write(
        &config,
        "[tiers.gemini]\nrpm = 100\ndaily = 3\ndaily_window = \"calendar\"\ndaily_timezone = \"America/Los_Angeles\"\n\
         [tiers.rolling]\nrpm = 100\ndaily = 3\n\
         [[orgs]]\nid = \"gem\"\ntier = \"gemini\"\n[[orgs]]\nid = \"roll\"\ntier = \"rolling\"\n",
    )
    .unwrap();
    // Three requests before midnight Pacific (08:00Z), three after, for both orgs.
    let mut lines = String::new();
    for org in ["gem", "roll"] {
        for ts in [
            "2026-01-16T07:50:00Z",
            "2026-01-16T07:51:00Z",
            "2026-01-16T07:52:00Z",
            "2026-01-16T08:05:00Z",
            "2026-01-16T08:06:00Z",
            "2026-01-16T08:07:00Z",
        ] {
            lines.push_str(&format!(
                "{{\"ts\":\"{ts}\",\"org\":\"{org}\",\"status\":200}}\n"
            ));
        }
    }
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, lines).unwrap();
    let r = replay_json(
        dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            events.to_str().unwrap(),
        ],
    );
    assert_eq!(org(&r, "gem")["peak_daily"], 3, "{r}");
    assert_eq!(org(&r, "roll")["peak_daily"], 6, "{r}");
    let quota = |name: &str| -> Vec<(String, String)> {
        r["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["org"] == name && a["alert"] == "DailyQuotaExhausted")
            .map(|a| {
                (
                    a["status"].as_str().unwrap_or("").to_string(),
                    a["ts"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    let gem = quota("gem");
    assert_eq!(gem.first().map(|a| a.0.as_str()), Some("firing"), "{r}");
    assert!(
        gem.iter()
            .any(|(s, ts)| s == "resolved" && ts.as_str() >= "2026-01-16T08:00:00"),
        "the calendar quota resolves once the day turns: {gem:?}"
    );
    assert!(
        quota("roll").iter().all(|(s, _)| s != "resolved"),
        "the rolling 24 h still holds all six"
    );
}
