//! OpenTelemetry in, black box: the real OpenTelemetry Python SDK and its OTLP/HTTP exporter
//! (PyPI `opentelemetry-sdk`, `opentelemetry-exporter-otlp-proto-http`, installed by
//! scripts/test) export GenAI client spans to `POST /v1/traces`; OTLP/JSON log records go to
//! `POST /v1/logs` gzipped. Usage, tokens and 429s must match what was sent, a retried export
//! must count once, and bad bodies get clear errors.

mod common;

use std::io::Write;
use std::process::Command;

use common::{Daemon, http, metric};
use serde_json::Value;

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
[tiers.genai]
rpm = 100
tpm = 100000
[[orgs]]
id = "acme"
tier = "genai"
[[orgs]]
id = "globex"
tier = "genai"
"#;

fn usage_of(d: &Daemon, org: &str) -> Value {
    let (status, body) = http("GET", &format!("{}/v1/usage", d.base), &[], b"").unwrap();
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["orgs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["org"] == org)
        .cloned()
        .unwrap_or_else(|| panic!("{org} not in {v}"))
}

#[test]
fn spans_from_the_python_sdk_count_as_requests_tokens_and_429s() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), CONFIG, &[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/otlp_genai.py");
    // Exported twice, as an exporter retrying after a lost answer would.
    let out = Command::new("python3")
        .args([script, &format!("{}/v1/traces", d.base), "2"])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the SDK's export failed (scripts/test installs opentelemetry-sdk): {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log_text()
    );
    let sent: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (ok, limited, tokens) = (
        sent["ok"].as_u64().unwrap(),
        sent["rate_limited"].as_u64().unwrap(),
        sent["tokens"].as_u64().unwrap(),
    );
    assert_eq!((ok, limited), (6, 2));

    let acme = usage_of(&d, "acme");
    assert_eq!(acme["usage"]["rpm"], ok + limited, "{acme}");
    assert_eq!(acme["usage"]["tpm"], tokens, "{acme}");
    let apps: Vec<(String, u64)> = acme["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["app"].as_str().unwrap().to_string(),
                a["rpm"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(apps.contains(&("render-bot".into(), 6)), "{apps:?}");
    assert!(apps.contains(&("batch".into(), 2)), "{apps:?}");

    let m = |s: &str| metric(&d.base, s).unwrap_or(0.0);
    let success = m(r#"ratewarden_requests_total{org="acme",app="render-bot",outcome="success"}"#)
        + m(r#"ratewarden_requests_total{org="acme",app="batch",outcome="success"}"#);
    let rate_limited =
        m(r#"ratewarden_requests_total{org="acme",app="render-bot",outcome="rate_limited"}"#)
            + m(r#"ratewarden_requests_total{org="acme",app="batch",outcome="rate_limited"}"#);
    assert_eq!((success, rate_limited), (ok as f64, limited as f64));
    assert_eq!(
        m(r#"ratewarden_events_ingested_total{source="otlp"}"#),
        2.0 * (ok + limited) as f64,
        "both exports were read; the second counted nothing twice"
    );
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(body).unwrap();
    e.finish().unwrap()
}

#[test]
fn genai_log_records_in_gzipped_json_and_bad_exports() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), CONFIG, &[]);
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let logs = format!(
        r#"{{"resourceLogs":[{{"resource":{{"attributes":[{{"key":"ratewarden.org","value":{{"stringValue":"globex"}}}}]}},
        "scopeLogs":[{{"logRecords":[
          {{"timeUnixNano":"{now_ns}","eventName":"gen_ai.client.inference.operation.details","spanId":"00f067aa0ba902b7",
            "attributes":[{{"key":"gen_ai.usage.input_tokens","value":{{"intValue":"300"}}}},
                          {{"key":"gen_ai.usage.output_tokens","value":{{"intValue":"50"}}}}]}},
          {{"timeUnixNano":"{now_ns}","eventName":"gen_ai.client.inference.operation.details","spanId":"00f067aa0ba902b8",
            "attributes":[{{"key":"error.type","value":{{"stringValue":"insufficient_quota"}}}},
                          {{"key":"http.response.status_code","value":{{"intValue":"429"}}}}]}},
          {{"timeUnixNano":"{now_ns}","eventName":"gen_ai.client.inference.operation.details",
            "attributes":[{{"key":"ratewarden.org","value":{{"stringValue":"bad\u0007org"}}}}]}},
          {{"timeUnixNano":"{now_ns}","body":{{"stringValue":"not a GenAI record"}}}}
        ]}}]}}]}}"#
    );
    let url = format!("{}/v1/logs", d.base);
    let (status, body) = http(
        "POST",
        &url,
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
        ],
        &gzip(logs.as_bytes()),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer["partialSuccess"]["rejectedLogRecords"], 1,
        "{answer}"
    );
    assert!(
        answer["partialSuccess"]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("org"),
        "{answer}"
    );
    let globex = usage_of(&d, "globex");
    assert_eq!(globex["usage"]["rpm"], 2, "{globex}");
    assert_eq!(globex["usage"]["tpm"], 350, "{globex}");
    assert_eq!(
        metric(
            &d.base,
            r#"ratewarden_rate_limited_total{org="globex",app="default",cause="quota"}"#
        ),
        Some(1.0)
    );

    let (status, body) = http("POST", &url, &[("Content-Type", "text/plain")], b"x").unwrap();
    assert_eq!(status, 415, "{body}");
    let rpc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(rpc["code"], 3, "{rpc}");
    assert!(
        rpc["message"]
            .as_str()
            .unwrap()
            .contains("application/x-protobuf")
    );
    let (status, body) = http(
        "POST",
        &format!("{}/v1/traces", d.base),
        &[("Content-Type", "application/x-protobuf")],
        b"\xff\xff\xff not protobuf",
    )
    .unwrap();
    assert_eq!(status, 400, "{body}");
    // A google.rpc.Status in protobuf: code 3 (field 1), then the message (field 2).
    assert!(body.starts_with("\u{8}\u{3}\u{12}"), "{body:?}");
    assert!(body.contains("not an OTLP protobuf message"), "{body}");
    // Nothing of the bad bodies counted, and the daemon is still there.
    assert_eq!(usage_of(&d, "globex")["usage"]["rpm"], 2);
}
