//! Black-box: the command line without a daemon.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::run;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_lists_the_commands() {
    let out = run(&["--help"], std::path::Path::new("."));
    let help = text(&out.stdout);
    for cmd in ["run", "check-config", "replay", "status"] {
        assert!(help.contains(cmd), "{help}");
    }
}

#[test]
fn check_config_summarises_and_warns_about_unset_secrets() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ok.toml"),
        "[server]\ningest_token_env = \"SURELY_UNSET_TOKEN_VAR\"\n[tiers.gold]\nrpm = 100\n[[orgs]]\nid = \"acme\"\ntier = \"gold\"\n",
    )
    .unwrap();
    let out = run(&["check-config", "ok.toml"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let summary = text(&out.stdout);
    assert!(summary.contains("gold (100 rpm"), "{summary}");
    assert!(summary.contains("acme (gold)"), "{summary}");
    assert!(
        text(&out.stderr).contains("warning: $SURELY_UNSET_TOKEN_VAR"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_config_reads_off_peak_starts_as_crontab_does() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cron.toml"),
        "[offpeak]\ntimezone = \"America/New_York\"\n[[offpeak.windows]]\nstart = \"0 19 * * 1-5\"\nduration = \"11h\"\n",
    )
    .unwrap();
    let out = run(&["check-config", "cron.toml"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let summary = text(&out.stdout);
    let line = summary
        .lines()
        .find(|l| l.starts_with("off-peak"))
        .unwrap_or_else(|| panic!("{summary}"));
    // "next Mon 2026-11-30 19:00 EST .. Tue 2026-12-01 06:00 EST, ...": every opening is a
    // weekday evening (1-5 is Monday to Friday), whatever day the test runs.
    let opens: Vec<&str> = line
        .split_once(": next ")
        .map(|(_, w)| w.split(", ").collect())
        .unwrap_or_default();
    assert_eq!(opens.len(), 3, "{line}");
    for o in opens {
        // Run inside a window (a weekday evening or night in New York), the first is the
        // window open now: only its end is shown, 06:00 the next morning.
        if let Some(until) = o.strip_prefix("open now until ") {
            assert!(until.contains("06:00"), "{o} in {line}");
            continue;
        }
        let day = o.split_whitespace().next().unwrap_or("");
        assert!(
            ["Mon", "Tue", "Wed", "Thu", "Fri"].contains(&day) && o.contains("19:00"),
            "{o} in {line}"
        );
    }
    std::fs::write(
        dir.path().join("bad.toml"),
        "[[offpeak.windows]]\nstart = \"0 19 * * Fri-Mon\"\nduration = \"11h\"\n",
    )
    .unwrap();
    let out = run(&["check-config", "bad.toml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("bad.toml:2:9:") && text(&out.stderr).contains("runs backwards"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_config_errors_have_positions_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[server]\nlisten = \"127.0.0.1:1\"\n\n[tiers.x]\nrpm = \"five\"\n",
            "bad.toml:5:7: invalid type",
        ),
        (
            "[server]\nlistne = \"x\"\n",
            "bad.toml:2:1: unknown field `listne`",
        ),
        (
            "[scheduler]\nshare = 0.5\nspeed = 3\n",
            "bad.toml:3:1: unknown field `speed`",
        ),
        (
            "[detect]\nburst_window = \"10 sec\"\n",
            "bad.toml:2:16: invalid duration",
        ),
    ];
    for (content, want) in cases {
        std::fs::write(dir.path().join("bad.toml"), content).unwrap();
        let out = run(&["check-config", "bad.toml"], dir.path());
        assert_eq!(out.status.code(), Some(2), "{content}");
        assert!(
            text(&out.stderr).starts_with(want),
            "{content}: {}",
            text(&out.stderr)
        );
    }
    let out = run(&["check-config", "missing.toml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("missing.toml"),
        "{}",
        text(&out.stderr)
    );
}

const LOG: &str = r#"{"ts":"2026-11-02T15:00:00Z","org":"acme","status":200}
{"ts":"2026-11-02T15:00:01Z","org":"acme","status":200}
{"ts":"2026-11-02T15:00:02Z","org":"acme","status":200}
{"ts":"2026-11-02T15:00:03Z","org":"acme","status":429,"retry_after":10}
{"ts":"2026-11-02T15:00:04Z","org":"acme","status":200}
{broken
"#;

#[test]
fn replay_files_and_stdin_agree() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.jsonl"), LOG).unwrap();
    let out = run(&["replay", "--json", "a.jsonl"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let from_file: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(from_file["events"], 5);
    assert_eq!(from_file["rejected"], 1);
    let acme = &from_file["orgs"][0];
    assert_eq!(acme["requests"], 5);
    assert_eq!(acme["peak_rpm"], 5);
    assert_eq!(acme["retry_violations"], 1);
    assert_eq!(acme["rate_limited"]["burst"], 1);

    let mut child = Command::new(common::bin())
        .args(["replay", "--json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(LOG.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let from_stdin: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(from_stdin, from_file);

    let out = run(&["replay", "a.jsonl"], dir.path());
    let table = text(&out.stdout);
    assert!(
        table.contains("acme") && table.contains("burst=1") && table.contains("UsageHigh"),
        "{table}"
    );
}

#[test]
fn replay_uses_the_config_tiers() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.jsonl"), LOG).unwrap();
    std::fs::write(
        dir.path().join("big.toml"),
        "[[orgs]]\nid = \"acme\"\ntier = \"pro\"\n",
    )
    .unwrap();
    let out = run(
        &["replay", "--config", "big.toml", "--json", "a.jsonl"],
        dir.path(),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["orgs"][0]["rate_limited"]["unexplained"], 1,
        "50 rpm: no burst, no rpm cause"
    );
    assert_eq!(v["alerts"], serde_json::json!([]));
}

#[test]
fn replay_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["replay", "nope.jsonl"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("nope.jsonl"),
        "{}",
        text(&out.stderr)
    );
    // `__overflow__` is the tracker's name for the series past its bounds: an org given by
    // `--org` or by a source may not take it (nor be blank).
    std::fs::write(dir.path().join("e.jsonl"), "{\"status\":200}\n").unwrap();
    std::fs::write(
        dir.path().join("src.toml"),
        "[[sources.file]]\nname = \"s\"\npath = \"/nonexistent/*.log\"\norg = \"__overflow__\"\n",
    )
    .unwrap();
    for args in [
        &["replay", "--org", "__overflow__", "e.jsonl"][..],
        &["replay", "--org", "", "e.jsonl"][..],
        &["replay", "--config", "src.toml", "--source", "s", "e.jsonl"][..],
    ] {
        let out = run(args, dir.path());
        assert!(!out.status.success(), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("1-128 printable characters") && err.contains("__overflow__"),
            "{args:?}: {err}"
        );
    }
}

/// Replays `args` with `--json` at each of `threads` (the first is the reference), requires
/// every report to be byte-identical to the first, and returns it parsed.
fn same_report_for_threads(dir: &Path, threads: &[&str], args: &[&str]) -> serde_json::Value {
    let mut reports = Vec::new();
    for &t in threads {
        let mut all = vec!["replay", "--json", "--threads", t];
        all.extend_from_slice(args);
        let out = run(&all, dir);
        assert!(out.status.success(), "{}", text(&out.stderr));
        reports.push((t, out.stdout));
    }
    for (t, report) in &reports[1..] {
        assert!(
            report == &reports[0].1,
            "--threads {t} differs from --threads {}",
            reports[0].0
        );
    }
    serde_json::from_slice(&reports[0].1).unwrap()
}

/// A sparse log (a few lines a day, jobs left in flight, alerts that stay firing) makes the
/// replay clock jump by a day at a time: each jump is made up minute by minute, on every shard.
#[test]
fn replay_of_a_sparse_log_answers_the_same_for_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = String::new();
    let mut ts = 1_795_000_000_000i64;
    for i in 0..60 {
        ts += if i % 3 == 0 {
            86_400_000 + 61_000
        } else {
            1_500
        };
        let stamp = format!("{}.{:03}Z", chrono_like(ts / 1000), ts % 1000);
        let org = format!("o{}", i % 9);
        log.push_str(&format!(
            "{{\"ts\":\"{stamp}\",\"org\":\"{org}\",\"status\":202,\"job_id\":\"j{i}\"}}\n"
        ));
    }
    std::fs::write(dir.path().join("sparse.jsonl"), log).unwrap();
    std::fs::write(
        dir.path().join("sparse.toml"),
        "[detect]\nstuck_after = \"2m\"\nrelease_after = \"3d\"\n[alerts]\nrepeat_interval = \"10m\"\n",
    )
    .unwrap();
    let v = same_report_for_threads(
        dir.path(),
        &["1", "2", "8"],
        &["--config", "sparse.toml", "sparse.jsonl"],
    );
    // Reminders of the alerts still firing, every ten minutes through each quiet day.
    let alerts = v["alerts"].as_array().unwrap().len();
    assert!(alerts > 2_000, "{alerts}");
}

#[test]
fn replay_reads_nginx_and_envoy_logs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("access.log"),
        concat!(
            "203.0.113.7 - - [02/Nov/2026:15:00:00 +0000] \"POST /v1/videos HTTP/1.1\" 202 512 \"-\" \"sdk/1.0\"\n",
            "203.0.113.7 - - [02/Nov/2026:15:00:01 +0000] \"POST /v1/videos HTTP/1.1\" 429 64 \"-\" \"sdk/1.0\"\n",
            "this is not an access log line\n",
        ),
    )
    .unwrap();
    let out = run(
        &[
            "replay",
            "--format",
            "nginx",
            "--org",
            "acme",
            "--json",
            "access.log",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["events"].as_u64(), v["rejected"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(v["orgs"][0]["org"], "acme");
    let out = run(
        &["replay", "--format", "nginx", "--json", "access.log"],
        dir.path(),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["rejected"].as_u64(),
        Some(3),
        "without --org every line lacks an org"
    );

    std::fs::write(
        dir.path().join("envoy.log"),
        "[2026-11-02T15:00:00.310Z] \"POST /v1/videos HTTP/2\" 429 - 148 73 41 40 \"10.0.0.5\" \"curl/8.5.0\" \"7f1c2d3e\" \"api.example.com\" \"10.1.2.3:443\"\n",
    )
    .unwrap();
    let out = run(
        &[
            "replay",
            "--format",
            "envoy",
            "--org",
            "acme",
            "--json",
            "envoy.log",
        ],
        dir.path(),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["orgs"][0]["rate_limited"]["unexplained"], 1);
}

#[test]
fn a_reader_that_goes_away_is_not_a_crash() {
    // `check-config | head -1`: the reader closes the pipe before the summary is written.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.toml"),
        "[server]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let mut child = Command::new(common::bin())
        .args(["check-config", "c.toml"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A log that exercises what a block boundary could break: jobs that start in one block and
/// end in another, 429s with and without Retry-After, late events, escapes, objects back to
/// back, broken lines, CRLF ends, a line over the limit and blank lines; several orgs.
/// Bytes that are not UTF-8 (in a counted field and in one ignored) come only in the first
/// half, so blocks of text and blocks that are not both occur.
fn mixed_log(lines: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let base = 1_795_000_000_000i64; // 2026-11-18
    for i in 0..lines {
        let r = next();
        let org = format!("org-{}", r % 7);
        let late = if r % 97 == 0 { 40_000 } else { 0 };
        let ts = base + i as i64 * 37 - late;
        let ts = format!("{}.{:03}Z", chrono_like(ts / 1000), ts % 1000);
        let job = format!("j{}", (r >> 8) % 5_000);
        let line = match r % 23 {
            0 => {
                format!(r#"{{"ts":"{ts}","org":"{org}","kind":"job_completed","job_id":"{job}"}}"#)
            }
            1 => format!(
                r#"{{"ts":"{ts}","org":"{org}","status":429,"retry_after_ms":2000,"error_code":"rate_limit_exceeded"}}"#
            ),
            2 => format!(r#"{{"ts":"{ts}","org":"{org}","app":"a\u00e9","status":429}}"#),
            3 => format!(
                r#"{{"ts":"{ts}","org":"{org}","status":200}}{{"ts":"{ts}","org":"{org}","status":500}}"#
            ),
            4 => "{broken".to_string(),
            5 => format!("{{\"ts\":\"{ts}\",\"org\":\"{org}\",\"status\":200}}\r"),
            6 => String::new(),
            7 if i % 1_000 == 7 => format!(r#"{{"org":"{org}","pad":"{}"}}"#, "x".repeat(70_000)),
            8 => format!(
                r#"{{"ts":"{ts}","org":"{org}","status":200,"tokens":1500,"ratelimit":{{"limit_requests":60,"remaining_requests":3}}}}"#
            ),
            9 if i < lines / 2 && i % 7 == 0 => {
                out.extend(format!(r#"{{"ts":"{ts}","org":"{org}","app":""#).as_bytes());
                out.extend(b"\xff\xfe\"}\n");
                out.extend(
                    format!(r#"{{"ts":"{ts}","org":"{org}","status":200,"note":""#).as_bytes(),
                );
                out.extend(b"caf\xc3\"}\n");
                continue;
            }
            _ => format!(
                r#"{{"ts":"{ts}","org":"{org}","app":"app-{}","status":202,"job_id":"{job}","latency_ms":{}}}"#,
                r % 3,
                r % 900
            ),
        };
        out.extend(line.as_bytes());
        out.push(b'\n');
    }
    out
}

/// `secs` since the epoch as `YYYY-MM-DDTHH:MM:SS` (the tests have no date crate).
fn chrono_like(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// Lines of exactly `limit` bytes ended by CRLF, placed so that their `\r` falls on the last
/// byte of a read (64 KiB, 256 KiB, 1 MiB multiples and between), with short lines between.
fn crlf_on_read_boundaries(limit: usize) -> Vec<u8> {
    let json = |len: usize| {
        let head = r#"{"org":"o","ts":1795000000000,"status":200,"pad":""#;
        format!("{head}{}\"}}", "x".repeat(len - head.len() - 2))
    };
    let mut out = Vec::new();
    for target in [65_535usize, 262_143, 327_679, 524_287, 1_048_575, 1_310_719] {
        let start = target - limit;
        while out.len() < start {
            let room = start - out.len();
            if room >= 60 {
                out.extend(json(room.min(900) - 1).as_bytes());
            }
            out.push(b'\n');
        }
        out.extend(json(limit).as_bytes());
        out.extend(b"\r\n");
    }
    out
}

/// A log of many orgs for the sharded replay: more orgs than `max_orgs` and than
/// `max_new_orgs_per_second` lets in at once, repeated `request_id`s, jobs that finish, get
/// stuck and are released, quiet stretches the clock jumps over, and alerts firing at once in
/// several orgs (so ticks and reminders order transitions of orgs on different shards).
fn many_orgs_log(lines: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut ts = 1_795_000_000_000i64;
    for i in 0..lines {
        let r = next();
        // Every few hundred lines a quiet stretch of up to ten minutes.
        ts += if r % 400 == 0 {
            (r % 600_000) as i64
        } else {
            (r % 700) as i64
        };
        let late = if r % 53 == 0 { 30_000 } else { 0 };
        let t = ts - late;
        let stamp = format!("{}.{:03}Z", chrono_like(t / 1000), t % 1000);
        // New orgs keep coming, many in the first seconds.
        let orgs = 3 + (i as u64 / 40).min(70);
        let org = match r % 11 {
            0 => "acme".to_string(),
            1 => "globex".to_string(),
            _ => format!("o{}", (r >> 5) % orgs),
        };
        // A request id repeats now and then (dedupe decides before an org is chosen).
        let rid = if r % 5 == 0 {
            format!(r#","request_id":"r{}""#, (r >> 9) % 2_000)
        } else {
            String::new()
        };
        let job = format!("j{}", (r >> 12) % 300);
        let line = match (r >> 20) % 10 {
            0 => format!(
                r#"{{"ts":"{stamp}","org":"{org}","kind":"job_completed","job_id":"{job}"{rid}}}"#
            ),
            1 => format!(
                r#"{{"ts":"{stamp}","org":"{org}","app":"bot","status":429,"retry_after_ms":1000{rid}}}"#
            ),
            2 => format!(r#"{{"ts":"{stamp}","org":"{org}","status":200,"tokens":900{rid}}}"#),
            _ => format!(
                r#"{{"ts":"{stamp}","org":"{org}","app":"app-{}","status":202,"job_id":"{job}"{rid}}}"#,
                r % 4
            ),
        };
        out.extend(line.as_bytes());
        out.push(b'\n');
    }
    out
}

/// Blocks are held to a number of lines, and lines of many objects to the byte budget, on
/// the threads that decode them: the report stays the same. 30 000 short lines (several
/// blocks' worth of lines in one read), blank lines and lines of 500 objects each.
#[test]
fn replay_of_short_lines_and_lines_of_many_objects_answers_the_same_for_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = String::new();
    let t0 = 1_795_000_000_000i64;
    for i in 0..30_000i64 {
        log.push_str(&format!("{{\"ts\":{},\"org\":\"o{}\"}}\n", t0 + i, i % 5));
        if i % 1_000 == 0 {
            log.push('\n');
            for k in 0..500 {
                log.push_str(&format!("{{\"ts\":{},\"org\":\"m{}\"}}{{}}", t0 + i, k % 3));
            }
            log.push('\n');
        }
    }
    std::fs::write(dir.path().join("short.jsonl"), log).unwrap();
    let v = same_report_for_threads(dir.path(), &["1", "2", "8"], &["short.jsonl"]);
    // Every short line and every object named an org; each `{}` is rejected for the lack of one.
    assert_eq!(v["events"], 30_000 + 30 * 500, "{}", v["events"]);
    assert_eq!(v["rejected"], 30 * 500, "{}", v["rejected"]);
}

#[test]
fn replay_of_many_orgs_answers_the_same_for_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("orgs.jsonl"), many_orgs_log(40_000)).unwrap();
    std::fs::write(
        dir.path().join("orgs.toml"),
        "[limits]\nmax_orgs = 40\nmax_new_orgs_per_second = 4\nmax_request_ids = 500\n\
         [[orgs]]\nid = \"globex\"\ntier = \"pro\"\n\
         [[orgs]]\nid = \"idle-co\"\ntier = \"pro\"\n\
         [[orgs]]\nid = \"acme\"\ntier = \"pro\"\ndaily = 3000\n\
         [detect]\nstuck_after = \"2m\"\nrelease_after = \"5m\"\n\
         [alerts]\nfor = \"5s\"\nrepeat_interval = \"3m\"\n",
    )
    .unwrap();
    let v = same_report_for_threads(
        dir.path(),
        &["1", "2", "3", "8"],
        &["--config", "orgs.toml", "orgs.jsonl"],
    );
    let orgs = v["orgs"].as_array().unwrap();
    let named = |n: &str| orgs.iter().any(|o| o["org"] == n);
    // 40 orgs tracked (the configured ones among them, one never seen), the rest overflow.
    assert_eq!(orgs.len(), 41, "{v}");
    assert!(
        named("__overflow__") && named("idle-co") && named("acme"),
        "{v}"
    );
    let alerts = v["alerts"].as_array().unwrap();
    let fired_in = |name: &str| -> std::collections::BTreeSet<String> {
        alerts
            .iter()
            .filter(|a| a["alert"] == name)
            .map(|a| a["org"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        fired_in("JobsStuck").len() > 5,
        "{:?}",
        fired_in("JobsStuck")
    );
    assert!(alerts.len() > 500, "{}", alerts.len());
}

#[test]
fn replay_answers_the_same_for_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mixed.jsonl"), mixed_log(60_000)).unwrap();
    // Lines over 64 KiB are skipped by the framer here, across block boundaries too; lines
    // of exactly 1 KiB are not, wherever a read ends.
    std::fs::write(
        dir.path().join("small.toml"),
        "[[sources.file]]\nname = \"small\"\npath = \"/nonexistent/*.jsonl\"\nmax_line_bytes = 65536\n\
         [[sources.file]]\nname = \"kib\"\npath = \"/nonexistent/*.log\"\nmax_line_bytes = 1024\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("crlf.jsonl"), crlf_on_read_boundaries(1024)).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let fx = |name: &str| fixtures.join(name).display().to_string();
    let cases: Vec<Vec<String>> = vec![
        vec![
            "--config".into(),
            "small.toml".into(),
            "--source".into(),
            "small".into(),
            "mixed.jsonl".into(),
        ],
        vec!["mixed.jsonl".into(), fx("real-world.jsonl")],
        vec![fx("real-world.jsonl")],
        vec![
            "--config".into(),
            "small.toml".into(),
            "--source".into(),
            "kib".into(),
            "crlf.jsonl".into(),
        ],
        vec![
            "--format".into(),
            "nginx".into(),
            "--org".into(),
            "web".into(),
            fx("nginx-combined.log"),
        ],
        vec![
            "--format".into(),
            "envoy".into(),
            "--org".into(),
            "edge".into(),
            fx("envoy.log"),
        ],
        vec![
            "--field".into(),
            "ts=@timestamp".into(),
            "--field".into(),
            "org=organization.id".into(),
            "--field".into(),
            "app=client.app".into(),
            fx("mapped.jsonl"),
        ],
    ];
    for case in cases {
        let mut reports = Vec::new();
        for threads in ["1", "2", "8"] {
            let mut args = vec!["replay", "--json", "--threads", threads];
            args.extend(case.iter().map(String::as_str));
            let out = run(&args, dir.path());
            assert!(out.status.success(), "{case:?}: {}", text(&out.stderr));
            reports.push((threads, out.stdout));
        }
        let v: serde_json::Value = serde_json::from_slice(&reports[0].1).unwrap();
        assert!(v["events"].as_u64().unwrap() > 0, "{case:?}: {v}");
        if case.contains(&"crlf.jsonl".to_string()) {
            assert_eq!(
                v["rejected"], 0,
                "no line is over 1 KiB once its CR is dropped: {v}"
            );
        }
        for (threads, report) in &reports[1..] {
            assert!(
                report == &reports[0].1,
                "{case:?}: --threads {threads} differs from --threads 1"
            );
        }
    }
}
