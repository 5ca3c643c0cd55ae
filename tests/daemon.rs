//! Black-box: the real binary, started on port 0, driven over TCP.

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, eventually, http, sample};

const TOKENS: [(&str, &str); 2] = [("T_INGEST", "ingest-1"), ("T_ADMIN", "admin-2")];

fn config(extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
ingest_token_env = "T_INGEST"
admin_token_env = "T_ADMIN"

[tiers.t10]
rpm = 10
concurrency = 2
daily = 100

[[orgs]]
id = "acme"
tier = "t10"
{extra}
"#
    )
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn ingest(d: &Daemon, body: &str) -> (u16, String) {
    http(
        "POST",
        &format!("{}/v1/events", d.base),
        &[
            ("Authorization", "Bearer ingest-1"),
            ("Content-Type", "application/x-ndjson"),
        ],
        body.as_bytes(),
    )
    .expect("daemon answers")
}

fn metrics(d: &Daemon) -> String {
    http("GET", &format!("{}/metrics", d.base), &[], b"")
        .map(|(_, b)| b)
        .unwrap_or_default()
}

#[test]
fn ingests_exports_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), &config(""), &TOKENS);
    let t = now_ms();
    let body = format!(
        "{{\"org\":\"acme\",\"app\":\"bot\",\"ts\":{},\"status\":202,\"job_id\":\"j1\"}}\n\
         {{\"org\":\"acme\",\"app\":\"bot\",\"ts\":{},\"status\":429,\"retry_after\":20}}\n\
         {{\"org\":\"acme\",\"app\":\"bot\",\"ts\":{},\"status\":200}}\n\
         not json\n",
        t - 3_000,
        t - 2_000,
        t - 1_000
    );
    let (status, answer) = ingest(&d, &body);
    assert_eq!(status, 202, "{answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        (v["accepted"].as_u64(), v["rejected"].as_u64()),
        (Some(3), Some(1))
    );

    let m = metrics(&d);
    assert_eq!(
        sample(&m, r#"ratewarden_usage{org="acme",dimension="rpm"}"#),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, r#"ratewarden_jobs_in_flight{org="acme"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            r#"ratewarden_retry_violations_total{org="acme",app="bot"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            r#"ratewarden_events_rejected_total{source="http",reason="invalid_json"}"#
        ),
        Some(1.0)
    );

    let (s, usage) = http(
        "GET",
        &format!("{}/v1/usage", d.base),
        &[("Authorization", "Bearer admin-2")],
        b"",
    )
    .unwrap();
    assert_eq!(s, 200);
    let u: serde_json::Value = serde_json::from_str(&usage).unwrap();
    assert_eq!(u["orgs"][0]["usage"]["concurrency"], 1);

    // `ratewarden status` renders the same data from the running daemon.
    let out = std::process::Command::new(common::bin())
        .args(["status", "--server", &d.base])
        .env("RATEWARDEN_ADMIN_TOKEN", "admin-2")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.contains("acme") && table.contains("3/10") && table.contains("1/2"),
        "{table}"
    );
    let denied = std::process::Command::new(common::bin())
        .args(["status", "--server", &d.base])
        .env("RATEWARDEN_ADMIN_TOKEN", "wrong")
        .output()
        .unwrap();
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("401"));

    let health = std::process::Command::new(common::bin())
        .args(["health", "--server", &d.base])
        .output()
        .unwrap();
    assert!(health.status.success(), "health of a ready daemon");

    // SIGHUP (a closed terminal, a reload by habit) would end it by default: logged and
    // ignored instead, each time, the daemon still answering.
    for n in 1..=2 {
        let hup = std::process::Command::new("kill")
            .args(["-HUP", &d.pid().to_string()])
            .status()
            .unwrap();
        assert!(hup.success());
        let warned = eventually(10, || {
            (d.log_text().matches("SIGHUP received and ignored").count() == n).then_some(())
        });
        assert!(warned.is_some(), "SIGHUP {n}: {}", d.log_text());
    }
    assert_eq!(d.exited(), None, "still running after SIGHUP");
    assert_eq!(
        common::http_status(&format!("{}/readyz", d.base)),
        Some(200)
    );

    let started = Instant::now();
    assert_eq!(
        d.terminate(Duration::from_secs(10)),
        Some(0),
        "{}",
        d.log_text()
    );
    let health = std::process::Command::new(common::bin())
        .args(["health", "--server", &d.base])
        .output()
        .unwrap();
    assert!(!health.status.success(), "health of a stopped daemon");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(d.find_log("stopped").is_some(), "{}", d.log_text());
}

#[test]
fn the_wall_clock_moves_jobs_to_stuck_and_releases_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        dir.path(),
        &config("[detect]\nstuck_after = \"1s\"\nrelease_after = \"2s\"\n"),
        &TOKENS,
    );
    let body = format!(
        "{{\"org\":\"acme\",\"ts\":{},\"status\":202,\"job_id\":\"slow\"}}\n",
        now_ms()
    );
    assert_eq!(ingest(&d, &body).0, 202);
    let stuck = eventually(10, || {
        let m = metrics(&d);
        (sample(&m, r#"ratewarden_jobs_stuck{org="acme"}"#) == Some(1.0)).then_some(m)
    });
    assert!(stuck.is_some(), "job never became stuck: {}", metrics(&d));
    let (_, alerts) = http(
        "GET",
        &format!("{}/v1/alerts", d.base),
        &[("Authorization", "Bearer admin-2")],
        b"",
    )
    .unwrap();
    assert!(alerts.contains("JobsStuck"), "{alerts}");
    let released = eventually(10, || {
        let m = metrics(&d);
        (sample(
            &m,
            r#"ratewarden_jobs_finished_total{org="acme",outcome="timed_out"}"#,
        ) == Some(1.0))
        .then_some(m)
    })
    .expect("job released");
    assert_eq!(
        sample(&released, r#"ratewarden_jobs_in_flight{org="acme"}"#),
        Some(0.0)
    );
    assert!(
        d.find_log("alert firing").is_some(),
        "transitions are logged: {}",
        d.log_text()
    );
}

#[test]
fn a_flood_of_org_names_stays_within_max_orgs() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &config("[limits]\nmax_orgs = 10\n"), &TOKENS);
    let t = now_ms();
    let body: String = (0..500)
        .map(|i| format!("{{\"org\":\"flood-{i}\",\"ts\":{t},\"status\":200}}\n"))
        .collect();
    assert_eq!(ingest(&d, &body).0, 202);
    let m = metrics(&d);
    assert_eq!(
        sample(&m, r#"ratewarden_series_overflow_total{kind="org"}"#),
        Some(491.0),
        "acme + 9 new tracked"
    );
    assert_eq!(
        sample(
            &m,
            r#"ratewarden_usage{org="__overflow__",dimension="rpm"}"#
        ),
        Some(491.0)
    );
    // Every tracked org has a daily usage series (job series appear only with jobs).
    let tracked = m
        .lines()
        .filter(|l| l.starts_with("ratewarden_usage{") && l.contains(r#"dimension="daily""#))
        .count();
    assert_eq!(tracked, 11, "10 orgs and __overflow__");
}

#[test]
fn refuses_a_public_address_without_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let public = config("").replace("127.0.0.1:0", "0.0.0.0:0");
    let err = Daemon::try_start(dir.path(), &public, &[("T_INGEST", "x")])
        .err()
        .expect("refused");
    assert!(
        err.contains("refusing to listen on 0.0.0.0:0 without an admin token ($T_ADMIN)"),
        "{err}"
    );
    // With both tokens it starts.
    drop(Daemon::start(dir.path(), &public, &TOKENS));
    // Or when the operator says so explicitly.
    let open = public.replace("[server]", "[server]\nallow_unauthenticated = true");
    drop(Daemon::start(dir.path(), &open, &[]));
}

#[test]
fn runs_on_builtin_defaults_without_any_config() {
    let dir = tempfile::tempdir().unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:9747").is_ok();
    let mut child = std::process::Command::new(common::bin())
        .arg("run")
        .current_dir(dir.path())
        .env_remove("RATEWARDEN_CONFIG")
        .env_remove("RATEWARDEN_INGEST_TOKEN")
        .env_remove("RATEWARDEN_ADMIN_TOKEN")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    if free {
        let ready = eventually(20, || {
            (common::http_status("http://127.0.0.1:9747/readyz") == Some(200)).then_some(())
        });
        let _ = child.kill();
        let _ = child.wait();
        assert!(ready.is_some(), "defaults listen on 127.0.0.1:9747");
    } else {
        // Someone else holds the default port: the daemon must say so and exit non-zero.
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen on 127.0.0.1:9747"));
    }
}

#[test]
fn config_from_the_environment_variable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("env.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:0\"\n[limits]\nmax_orgs = 0\n",
    )
    .unwrap();
    let out = std::process::Command::new(common::bin())
        .arg("run")
        .env("RATEWARDEN_CONFIG", &path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "the file named by RATEWARDEN_CONFIG is read"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("env.toml:4:12: max_orgs must be at least 1")
    );
}

#[test]
fn history_and_out_of_order_events_do_not_page_anyone() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &config(""), &TOKENS);
    let now = now_ms();
    // A backfill for an org never seen: 30 requests within 10 s, a day and an hour ago
    // (rpm limit 10). Counted; not news.
    let old: String = (0..30)
        .map(|i| {
            format!(
                "{{\"org\":\"acme\",\"ts\":{},\"status\":200}}\n",
                now - 90_000_000 + i * 300
            )
        })
        .collect();
    assert_eq!(ingest(&d, &old).0, 202);
    // A job whose end a shipper delivered before its start, both a few seconds ago.
    let job = format!(
        "{{\"org\":\"acme\",\"ts\":{},\"kind\":\"job_completed\",\"job_id\":\"j1\"}}\n\
         {{\"org\":\"acme\",\"ts\":{},\"status\":202,\"job_id\":\"j1\"}}\n",
        now - 1_000,
        now - 5_000
    );
    assert_eq!(ingest(&d, &job).0, 202);
    let m = eventually(5, || {
        let m = metrics(&d);
        m.contains(r#"ratewarden_jobs_finished_total{org="acme",outcome="completed"} 1"#)
            .then_some(m)
    })
    .expect("the job counted as finished");
    assert_eq!(
        sample(
            &m,
            r#"ratewarden_requests_total{org="acme",app="default",outcome="success"}"#
        ),
        Some(31.0)
    );
    assert_eq!(
        sample(&m, r#"ratewarden_jobs_in_flight{org="acme"}"#),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &m,
            r#"ratewarden_usage{org="acme",dimension="concurrency"}"#
        ),
        Some(0.0),
        "no phantom job"
    );
    common::observe(Duration::from_millis(1500), "no alert fires");
    let logged = d.log_text();
    assert!(!logged.contains("alert firing"), "{logged}");
    let (_, alerts) = http(
        "GET",
        &format!("{}/v1/alerts", d.base),
        &[("Authorization", "Bearer admin-2")],
        b"",
    )
    .unwrap();
    assert!(alerts.contains(r#""alerts":[]"#), "{alerts}");
}
