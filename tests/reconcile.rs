//! Upstream truth, black box: an app calls a fake rate-limited provider, captures the
//! rate-limit headers of each answer and sends them with its events; more calls reach the
//! provider without ratewarden seeing them. The daemon must show the provider's limits, the
//! untracked traffic as drift, `LimitMismatch` where the config is wrong, and adopt the
//! provider's limits under `learn = true` (also across a restart).

mod common;

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Daemon, eventually, http, metric};
use serde_json::Value;

/// A provider with OpenAI's (`/v1/responses`, 60 rpm) and Anthropic's (`/v1/messages`,
/// 50 rpm) header families, counting each org's requests over a rolling minute.
struct Provider {
    addr: String,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Provider {
    fn start() -> Provider {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen: Arc<Mutex<HashMap<String, VecDeque<Instant>>>> = Arc::default();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let seen = seen.clone();
                std::thread::spawn(move || answer(stream, &seen));
            }
        });
        Provider { addr }
    }

    /// Calls `path` for `org`; answers the status and the response headers.
    fn call(&self, path: &str, org: &str) -> (u16, Vec<(String, String)>) {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        let body = r#"{"model":"m","input":"hi"}"#;
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: x\r\nOpenAI-Organization: {org}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let head = text.split("\r\n\r\n").next().unwrap_or_default();
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        (status, headers)
    }
}

fn answer(stream: TcpStream, seen: &Mutex<HashMap<String, VecDeque<Instant>>>) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split(' ').nth(1).unwrap_or("/").to_string();
    let (mut org, mut length) = (String::new(), 0usize);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            match n.to_ascii_lowercase().as_str() {
                "openai-organization" => org = v.trim().to_string(),
                "content-length" => length = v.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let now = Instant::now();
    let used = {
        let mut seen = seen.lock().unwrap();
        let q = seen.entry(format!("{org}{path}")).or_default();
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            q.pop_front();
        }
        q.push_back(now);
        q.len() as u64
    };
    let headers = if path == "/v1/messages" {
        let reset = chrono::DateTime::from_timestamp_millis(now_ms() + 60_000)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        format!(
            "anthropic-ratelimit-requests-limit: 50\r\nanthropic-ratelimit-requests-remaining: {}\r\nanthropic-ratelimit-requests-reset: {reset}\r\nanthropic-ratelimit-input-tokens-limit: 40000\r\nanthropic-ratelimit-input-tokens-remaining: 39000\r\nanthropic-ratelimit-input-tokens-reset: {reset}\r\nrequest-id: req_1\r\n",
            50 - used
        )
    } else {
        format!(
            "x-ratelimit-limit-requests: 60\r\nx-ratelimit-remaining-requests: {}\r\nx-ratelimit-reset-requests: 1m0s\r\nx-ratelimit-limit-tokens: 150000\r\nx-ratelimit-remaining-tokens: 149000\r\nx-ratelimit-reset-tokens: 6m0s\r\n",
            60 - used
        )
    };
    let reply = "{\"ok\":true}";
    let mut stream = reader.into_inner();
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    );
}

/// The app: calls the provider and reports the call with its headers as captured.
fn tracked_call(d: &Daemon, p: &Provider, path: &str, org: &str) {
    let (status, headers) = p.call(path, org);
    assert_eq!(status, 200);
    let headers: serde_json::Map<String, Value> = headers
        .into_iter()
        .map(|(n, v)| (n, Value::String(v)))
        .collect();
    let ev = serde_json::json!({
        "ts": now_ms(), "org": org, "app": "bot", "status": status, "headers": headers,
    });
    let (code, body) = d.post_events(&ev.to_string());
    assert_eq!(code, 202, "{body}");
    assert!(body.contains(r#""accepted":1"#), "{body}");
}

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
[tiers.openai]
rpm = 40
[tiers.anthropic]
rpm = 30
[[orgs]]
id = "acme"
tier = "openai"
[[orgs]]
id = "globex"
tier = "anthropic"
"#;

fn get(d: &Daemon, path: &str) -> Value {
    let (status, body) = http("GET", &format!("{}{path}", d.base), &[], b"").unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn org<'a>(usage: &'a Value, name: &str) -> &'a Value {
    usage["orgs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["org"] == name)
        .unwrap()
}

#[test]
fn provider_headers_show_the_real_limits_the_untracked_traffic_and_a_wrong_config() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), CONFIG, &[]);
    let p = Provider::start();
    // Another team's script on the same orgs: the provider counts it, ratewarden never sees it.
    for _ in 0..5 {
        p.call("/v1/responses", "acme");
    }
    for _ in 0..2 {
        p.call("/v1/messages", "globex");
    }
    for _ in 0..3 {
        tracked_call(&d, &p, "/v1/responses", "acme");
    }
    for _ in 0..2 {
        tracked_call(&d, &p, "/v1/messages", "globex");
    }

    let series = |s: &str| metric(&d.base, s);
    assert_eq!(
        series(r#"ratewarden_upstream_limit{org="acme",dimension="rpm"}"#),
        Some(60.0)
    );
    assert_eq!(
        series(r#"ratewarden_upstream_remaining{org="acme",dimension="rpm"}"#),
        Some(52.0),
        "60 less the 8 calls the provider saw"
    );
    assert_eq!(
        series(r#"ratewarden_usage_drift{org="acme",dimension="rpm"}"#),
        Some(5.0),
        "the five calls ratewarden did not see"
    );
    assert_eq!(
        series(r#"ratewarden_upstream_limit{org="acme",dimension="tpm"}"#),
        Some(150_000.0)
    );
    assert_eq!(
        series(r#"ratewarden_upstream_limit{org="globex",dimension="itpm"}"#),
        Some(40_000.0)
    );
    assert_eq!(
        series(r#"ratewarden_usage_drift{org="globex",dimension="rpm"}"#),
        Some(2.0)
    );
    for (o, configured, reported) in [("acme", 40, 60), ("globex", 30, 50)] {
        assert_eq!(
            series(&format!(
                r#"ratewarden_alerts_firing{{org="{o}",alert="LimitMismatch",dimension="rpm",severity="warning"}}"#
            )),
            Some(1.0),
            "{o}"
        );
        let alerts = get(&d, "/v1/alerts");
        let a = alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["alert"] == "LimitMismatch" && a["org"] == o)
            .unwrap_or_else(|| panic!("no LimitMismatch for {o}: {alerts}"));
        let text = a.to_string();
        assert!(
            text.contains(&format!(
                "configured for {configured} rpm but the upstream reports {reported}"
            )),
            "{text}"
        );
    }
    let usage = get(&d, "/v1/usage");
    let acme = org(&usage, "acme");
    assert_eq!(acme["limits"]["rpm"], 40);
    assert_eq!(acme["sources"]["rpm"], "config");
    assert_eq!(acme["upstream"]["rpm"]["limit"], 60);
    assert_eq!(acme["upstream"]["rpm"]["drift"], 5);
}

#[test]
fn learn_adopts_the_provider_limits_and_keeps_them_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("{CONFIG}\n[limits]\nlearn = true\n");
    let mut d = Daemon::start(dir.path(), &config, &[]);
    let p = Provider::start();
    tracked_call(&d, &p, "/v1/responses", "acme");
    tracked_call(&d, &p, "/v1/messages", "globex");
    let usage = get(&d, "/v1/usage");
    let acme = org(&usage, "acme");
    assert_eq!(acme["limits"]["rpm"], 60);
    assert_eq!(acme["sources"]["rpm"], "upstream");
    assert_eq!(
        acme["limits"]["tpm"], 150_000,
        "a limit the config did not set"
    );
    assert_eq!(org(&usage, "globex")["limits"]["rpm"], 50);
    assert!(
        !get(&d, "/v1/alerts").to_string().contains("LimitMismatch"),
        "learnt limits are no mismatch"
    );
    let status = common::run(&["status", "--server", &d.base], dir.path());
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(table.contains("1/60^"), "{table}");
    assert!(
        table.contains("^ the limit the upstream reports"),
        "{table}"
    );

    assert_eq!(d.terminate(Duration::from_secs(10)), Some(0));
    let d = Daemon::start(dir.path(), &config, &[]);
    let after = eventually(10, || {
        let usage = get(&d, "/v1/usage");
        (org(&usage, "acme")["limits"]["rpm"] == 60).then_some(usage)
    });
    assert!(after.is_some(), "the learnt limit is lost on restart");
}
