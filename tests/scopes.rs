//! Model scopes and calendar days, black box: the shared fixture (`tests/fixtures/scopes.*`)
//! gives the same 429 causes through `replay` and through the daemon; live events fill two
//! models of one org separately, with the scope on every series, alert and answer; a restart
//! keeps what the scopes counted.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Daemon, eventually, http, metric, run};
use serde_json::Value;

fn config() -> String {
    let fixture = std::fs::read_to_string(fixture("scopes.toml")).unwrap();
    format!("[server]\nlisten = \"127.0.0.1:0\"\n{fixture}")
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn get(d: &Daemon, path: &str) -> Value {
    let (status, body) = http("GET", &format!("{}{path}", d.base), &[], b"").unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[test]
fn replay_and_the_daemon_explain_the_fixture_alike() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("scopes.toml"), config()).unwrap();
    let out = run(
        &[
            "replay",
            "--config",
            "scopes.toml",
            "--json",
            fixture("scopes.jsonl").to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = |org: &str| {
        report["orgs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["org"] == org)
            .unwrap()
            .clone()
    };
    // What the fixture is built to show (see its comments).
    let acme = row("acme");
    assert_eq!(acme["models"][0]["model"], "gpt-image-1");
    assert_eq!(acme["models"][0]["rate_limited"]["rpm"], 1);
    assert_eq!(acme["models"][0]["rate_limited"]["ipm"], 1);
    assert_eq!(
        acme["rate_limited"]["unexplained"], 1,
        "gpt-4o was not full"
    );
    let sunny = row("sunny");
    assert_eq!(
        sunny["rate_limited"]["daily"], 2,
        "one before midnight Pacific, one of the flash scope's own"
    );
    assert_eq!(
        sunny["rate_limited"]["unexplained"], 1,
        "after midnight Pacific the calendar day is new"
    );
    assert_eq!(sunny["models"][0]["rate_limited"]["daily"], 1);

    let d = Daemon::start(dir.path(), &config(), &[]);
    let body = std::fs::read_to_string(fixture("scopes.jsonl")).unwrap();
    let (status, answer) = d.post_events(&body);
    assert_eq!(status, 202, "{answer}");
    let metrics = http("GET", &format!("{}/metrics", d.base), &[], b"")
        .unwrap()
        .1;
    for o in report["orgs"].as_array().unwrap() {
        let org = o["org"].as_str().unwrap();
        for (cause, n) in o["rate_limited"].as_object().unwrap() {
            // The org's count is its series without a model plus those of its scopes.
            let mut daemon = common::sample(
                &metrics,
                &format!(
                    r#"ratewarden_rate_limited_total{{org="{org}",app="default",cause="{cause}"}}"#
                ),
            )
            .unwrap_or(0.0);
            for m in o["models"].as_array().into_iter().flatten() {
                let model = m["model"].as_str().unwrap();
                let scoped = common::sample(
                    &metrics,
                    &format!(
                        r#"ratewarden_rate_limited_total{{org="{org}",app="default",cause="{cause}",model="{model}"}}"#
                    ),
                )
                .unwrap_or(0.0);
                assert_eq!(
                    scoped,
                    m["rate_limited"][cause].as_f64().unwrap_or(0.0),
                    "{org} {model} {cause}\n{metrics}"
                );
                daemon += scoped;
            }
            assert_eq!(daemon, n.as_f64().unwrap(), "{org} {cause}\n{metrics}");
        }
    }
}

#[test]
fn two_models_fill_separately_live_and_keep_their_counts_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), &config(), &[]);
    let t = now_ms();
    let mut lines = String::new();
    for i in 0..3 {
        lines.push_str(&format!(
            r#"{{"ts":{},"org":"acme","app":"studio","model":"gpt-image-1","status":200,"images":1}}"#,
            t - 3_000 + i
        ));
        lines.push('\n');
    }
    lines.push_str(&format!(
        r#"{{"ts":{},"org":"acme","app":"chat","model":"gpt-4o-2024-08-06","status":200,"tokens":400}}"#,
        t - 2_000
    ));
    lines.push('\n');
    let (status, answer) = d.post_events(&lines);
    assert_eq!(status, 202, "{answer}");

    let m = |s: &str| metric(&d.base, s);
    assert_eq!(
        m(r#"ratewarden_usage{org="acme",dimension="rpm"}"#),
        Some(4.0)
    );
    assert_eq!(
        m(r#"ratewarden_usage{org="acme",model="gpt-image-1",dimension="rpm"}"#),
        Some(3.0)
    );
    assert_eq!(
        m(r#"ratewarden_utilization_ratio{org="acme",model="gpt-image-1",dimension="rpm"}"#),
        Some(1.0)
    );
    assert_eq!(
        m(r#"ratewarden_usage{org="acme",model="gpt-image-1",dimension="ipm"}"#),
        Some(3.0)
    );
    assert_eq!(
        m(r#"ratewarden_usage{org="acme",model="gpt-4o",dimension="tpm"}"#),
        Some(400.0)
    );
    assert_eq!(
        m(r#"ratewarden_limit{org="acme",model="gpt-4o",dimension="rpm"}"#),
        Some(5.0)
    );
    assert_eq!(
        m(r#"ratewarden_utilization_ratio{org="acme",dimension="rpm"}"#),
        Some(0.04),
        "the org's own series keep no model label"
    );

    let usage = get(&d, "/v1/usage");
    let acme = usage["orgs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["org"] == "acme")
        .unwrap();
    let image = &acme["models"][0];
    assert_eq!(image["model"], "gpt-image-1");
    assert_eq!(image["match"][0], "gpt-image-1");
    assert_eq!(image["usage"]["rpm"], 3);
    assert_eq!(image["limits"]["ipm"], 4);
    assert_eq!(acme["models"][1]["usage"]["tpm"], 400);

    // gpt-image-1 at its 3 rpm: a critical UsageHigh of that scope only.
    let alerts = eventually(5, || {
        let v = get(&d, "/v1/alerts");
        let list = v["alerts"].as_array().cloned().unwrap_or_default();
        list.into_iter()
            .find(|a| a["alert"] == "UsageHigh" && a["model"] == "gpt-image-1")
    })
    .expect("UsageHigh of gpt-image-1");
    assert_eq!(alerts["severity"], "critical");
    assert_eq!(alerts["dimension"], "rpm");
    assert!(
        alerts["summary"]
            .as_str()
            .unwrap()
            .contains("acme's gpt-image-1 at 100% of its 3 rpm"),
        "{alerts}"
    );
    assert_eq!(
        m(
            r#"ratewarden_alerts_firing{org="acme",model="gpt-image-1",alert="UsageHigh",dimension="rpm",severity="critical"}"#
        ),
        Some(1.0)
    );
    let status = run(&["status", "--server", &d.base], dir.path());
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("model gpt-image-1") && text.contains("ipm 3/4"),
        "{text}"
    );
    assert!(
        text.contains(" 100 "),
        "PEAK% counts the scope at 100 %: {text}"
    );

    // A restart keeps what the scope counted (journal and snapshot alike).
    assert_eq!(d.terminate(Duration::from_secs(15)), Some(0));
    let d = Daemon::start(dir.path(), &config(), &[]);
    assert_eq!(
        metric(
            &d.base,
            r#"ratewarden_usage{org="acme",model="gpt-image-1",dimension="rpm"}"#
        ),
        Some(3.0)
    );
}
