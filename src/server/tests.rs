//! The API through `router().oneshot()`, no socket, with a manual clock.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::clock::ManualClock;
use crate::config::Config;
use crate::live::Live;
use crate::tracker::Tracker;

const NOW: i64 = 1_795_788_000_000; // 2026-11-27T14:00:00Z

/// In-memory state for `config` with the given tokens and clock; not ready until the test
/// says so.
fn in_memory(config: &Config, tokens: Tokens, clock: Arc<dyn crate::clock::Clock>) -> ApiState {
    over(config, tokens, Live::in_memory(Tracker::new(config), clock))
}

/// State over `live` alone: no sources, channels or scheduler.
fn over(config: &Config, tokens: Tokens, live: Live) -> ApiState {
    let metrics = Arc::new(Metrics::new(Arc::new(live.clone()), config));
    ApiState::with_parts(
        config,
        tokens,
        Parts {
            live,
            metrics,
            sources: Vec::new(),
            channels: None,
            scheduler: None,
            cluster: None,
        },
    )
}

fn config(extra: &str) -> Config {
    Config::parse(
        &format!(
            "[server]\nmax_body_bytes = 4096\n[tiers.t10]\nrpm = 10\nconcurrency = 2\n\n[[orgs]]\nid = \"acme\"\ntier = \"t10\"\ndaily = 100\n{extra}"
        ),
        "t.toml",
    )
    .unwrap()
}

fn tokens() -> Tokens {
    Tokens {
        ingest: Secret::new(Some("in-tok")),
        admin: Secret::new(Some("ad-tok")),
        metrics: Secret::new(None),
        basic: None,
    }
}

fn state_with(config: &Config, tokens: Tokens) -> ApiState {
    let st = in_memory(config, tokens, Arc::new(ManualClock::new(NOW)));
    st.ready.store(true, Ordering::Release);
    st
}

fn state() -> ApiState {
    state_with(&config(""), tokens())
}

async fn call(st: &ApiState, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
    let resp = router(st.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn post(body: impl Into<Body>, content_type: &str, token: Option<&str>) -> Request<Body> {
    let mut b = Request::post("/v1/events").header(header::CONTENT_TYPE, content_type);
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(body.into()).unwrap()
}

fn get(path: &str, token: Option<&str>) -> Request<Body> {
    let mut b = Request::get(path);
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Body::empty()).unwrap()
}

fn ev(offset_ms: i64, extra: &str) -> String {
    format!(r#"{{"org":"acme","ts":{}{extra}}}"#, NOW + offset_ms)
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap()
}

async fn metrics_text(st: &ApiState) -> String {
    call(st, get("/metrics", None)).await.2
}

#[tokio::test]
async fn ndjson_ingest_reports_per_event_errors() {
    let st = state();
    let body = [
        ev(-3_000, r#","status":200"#),
        String::new(),
        "{not json".into(),
        r#"{"status":200}"#.into(),
        ev(-1_000, r#","status":"x""#),
        ev(600_000, ""),
        ev(0, r#","status":429"#),
    ]
    .join("\n");
    let (status, _, body) = call(&st, post(body, "application/x-ndjson", Some("in-tok"))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let v = json(&body);
    assert_eq!(
        v["accepted"], 3,
        "a status that does not parse costs the status"
    );
    assert_eq!(v["rejected"], 3);
    let errors: Vec<(u64, &str)> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let what = e["reason"].as_str().or(e["field"].as_str()).unwrap();
            (e["index"].as_u64().unwrap(), what)
        })
        .collect();
    assert_eq!(
        errors,
        vec![
            (1, "invalid_json"),
            (2, "missing_org"),
            (3, "status"),
            (4, "future_timestamp")
        ],
        "blank lines take no index; field errors name the field"
    );
    assert!(v["errors"][2].get("reason").is_none(), "{body}");
    let m = metrics_text(&st).await;
    assert!(
        m.contains(r#"ratewarden_events_ingested_total{source="http"} 3"#),
        "{m}"
    );
    assert!(m.contains(
        r#"ratewarden_events_rejected_total{source="http",reason="future_timestamp"} 1"#
    ));
    assert!(m.contains(r#"ratewarden_usage{org="acme",dimension="rpm"} 3"#));
    assert!(
        m.contains(r#"ratewarden_event_field_errors_total{source="http",field="status"} 1"#),
        "{m}"
    );
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn encoded(body: Vec<u8>, encoding: &str) -> Request<Body> {
    let mut req = post(body, "application/x-ndjson", Some("in-tok"));
    req.headers_mut()
        .insert(header::CONTENT_ENCODING, encoding.parse().unwrap());
    req
}

#[tokio::test]
async fn compressed_bodies_are_decoded() {
    use std::io::Write;
    let st = state();
    let ndjson = format!(
        "{}\n{}\n",
        ev(0, r#","status":200"#),
        ev(0, r#","status":429"#)
    );
    let deflated = {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(ndjson.as_bytes()).unwrap();
        e.finish().unwrap()
    };
    for (body, encoding) in [
        (gzip(ndjson.as_bytes()), "gzip"),
        (gzip(ndjson.as_bytes()), "x-gzip"),
        (gzip(ndjson.as_bytes()), " GZIP "),
        (deflated, "deflate"),
        (zstd::encode_all(ndjson.as_bytes(), 3).unwrap(), "zstd"),
        (ndjson.clone().into_bytes(), "identity"),
    ] {
        let (status, _, body) = call(&st, encoded(body, encoding)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{encoding}: {body}");
        assert_eq!(json(&body)["accepted"], 2, "{encoding}: {body}");
    }
    // Two gzip members back to back (`cat a.gz b.gz`): every event of both.
    let mut two = gzip(ndjson.as_bytes());
    two.extend(gzip(ndjson.as_bytes()));
    let (status, _, body) = call(&st, encoded(two, "gzip")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(json(&body)["accepted"], 4, "{body}");
    let m = metrics_text(&st).await;
    assert!(
        m.contains(r#"ratewarden_events_ingested_total{source="http"} 16"#),
        "{m}"
    );
}

#[tokio::test]
async fn other_encodings_are_415_and_bad_streams_400() {
    let st = state();
    for encoding in ["br", "compress", "gzip, zstd"] {
        let (status, headers, body) = call(&st, encoded(b"{}".to_vec(), encoding)).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{encoding}");
        assert!(body.contains(encoding), "names the encoding: {body}");
        assert_eq!(
            json(&body)["error"]["code"],
            "unsupported_encoding",
            "{body}"
        );
        assert_eq!(headers[header::ACCEPT_ENCODING], "gzip, deflate, zstd");
    }
    let (status, _, body) = call(&st, encoded(b"not gzip at all".to_vec(), "gzip")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(json(&body)["error"]["code"], "undecodable_body");
    let m = metrics_text(&st).await;
    assert!(m.contains(r#"ratewarden_events_ingested_total{source="http"} 0"#));
}

#[tokio::test]
async fn a_compression_bomb_stops_at_max_body_bytes_decoded() {
    let st = state();
    // 64 MiB of spaces is a body of ~64 KiB compressed and 16 000 times max_body_bytes
    // decoded; reading stops at the limit.
    let bomb = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let block = vec![b' '; 1 << 20];
        for _ in 0..64 {
            e.write_all(&block).unwrap();
        }
        e.finish().unwrap()
    };
    assert!(bomb.len() < 4096 * 64, "{}", bomb.len());
    let (status, _, body) = call(&st, encoded(bomb, "gzip")).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    let m = metrics_text(&st).await;
    assert!(
        m.contains(r#"ratewarden_events_rejected_total{source="http",reason="too_large"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn bodies_as_real_shippers_write_them() {
    let st = state();
    // A byte-order mark before a JSON array (Windows tools).
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(br#"[{"org":"acme","status":200},{"org":"acme","status":429}]"#);
    let (status, _, body) = call(&st, post(bom, "application/json", Some("in-tok"))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        (
            json(&body)["accepted"].clone(),
            json(&body)["rejected"].clone()
        ),
        (json!(2), json!(0))
    );
    // Fluent Bit's json_stream: objects back to back, no newline.
    let stream = format!("{}{}", ev(0, ""), ev(0, r#","status":"429""#));
    let (status, _, body) = call(&st, post(stream, "application/json", Some("in-tok"))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(json(&body)["accepted"], 2, "{body}");
    // CRLF lines; numbers as strings; a field that does not parse is listed with its field.
    let crlf = format!(
        "{}\r\n{}\r\n",
        ev(0, r#","status":"429","retry_after":"7","tokens":"12""#),
        ev(0, r#","status":"-","latency_ms":"slow""#)
    );
    let (status, _, body) = call(&st, post(crlf, "application/x-ndjson", Some("in-tok"))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let v = json(&body);
    assert_eq!(
        (v["accepted"].clone(), v["rejected"].clone()),
        (json!(2), json!(0))
    );
    assert_eq!(v["errors"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(v["errors"][0]["index"], 1);
    assert_eq!(v["errors"][0]["field"], "latency_ms");
    let s = call(&st, get("/v1/usage", Some("ad-tok"))).await.2;
    assert_eq!(json(&s)["orgs"][0]["usage"]["rpm"], 6, "{s}");
    let m = metrics_text(&st).await;
    assert!(
        m.contains(
            r#"ratewarden_requests_total{org="acme",app="default",outcome="rate_limited"} 3"#
        ),
        "{m}"
    );
    assert!(
        m.contains(r#"ratewarden_requests_total{org="acme",app="default",outcome="unknown"} 2"#),
        "no status and status \"-\": {m}"
    );
}

#[tokio::test]
async fn json_bodies_array_object_and_lines() {
    let st = state();
    let array = format!("[{},{}]", ev(0, ""), ev(1, ""));
    let (s, _, b) = call(&st, post(array, "application/json", Some("in-tok"))).await;
    assert_eq!(
        (s, json(&b)["accepted"].clone()),
        (StatusCode::ACCEPTED, json!(2))
    );
    let (s, _, b) = call(
        &st,
        post(ev(2, ""), "application/json; charset=utf-8", Some("in-tok")),
    )
    .await;
    assert_eq!(
        (s, json(&b)["accepted"].clone()),
        (StatusCode::ACCEPTED, json!(1))
    );
    let lines = format!("{}\n{}\n", ev(3, ""), ev(4, ""));
    let (s, _, b) = call(&st, post(lines, "application/json", Some("in-tok"))).await;
    assert_eq!(
        (s, json(&b)["accepted"].clone()),
        (StatusCode::ACCEPTED, json!(2)),
        "JSON lines under application/json"
    );
    let (s, _, b) = call(
        &st,
        post("[1, {\"org\":\"x\"}]", "application/json", Some("in-tok")),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(json(&b)["errors"][0]["index"], 0);
}

#[tokio::test]
async fn empty_or_invalid_bodies_are_400_and_counted() {
    let st = state();
    for (body, ct) in [
        ("", "application/x-ndjson"),
        ("[]", "application/json"),
        ("{bad\n[1,2\n", "text/plain"),
    ] {
        let (s, _, b) = call(&st, post(body, ct, Some("in-tok"))).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body:?}: {b}");
        assert_eq!(json(&b)["error"]["code"], "no_valid_events");
    }
    let m = metrics_text(&st).await;
    assert!(
        m.contains(r#"ratewarden_events_rejected_total{source="http",reason="invalid_json"} 2"#),
        "{m}"
    );
}

#[tokio::test]
async fn auth_on_every_route_group() {
    let st = state_with(
        &config(""),
        Tokens {
            metrics: Secret::new(Some("m-tok")),
            ..tokens()
        },
    );
    let (s, h, b) = call(&st, post(ev(0, ""), "application/x-ndjson", None)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(h[header::WWW_AUTHENTICATE], "Bearer");
    assert_eq!(json(&b)["error"]["code"], "unauthorized");
    let (s, _, _) = call(&st, post(ev(0, ""), "application/x-ndjson", Some("ad-tok"))).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "admin token does not open ingest"
    );
    for path in ["/v1/usage", "/v1/alerts"] {
        assert_eq!(call(&st, get(path, None)).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(
            call(&st, get(path, Some("in-tok"))).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(call(&st, get(path, Some("ad-tok"))).await.0, StatusCode::OK);
    }
    assert_eq!(
        call(&st, get("/metrics", None)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&st, get("/metrics", Some("m-tok"))).await.0,
        StatusCode::OK
    );
    // Health is never behind a token.
    assert_eq!(call(&st, get("/healthz", None)).await.0, StatusCode::OK);
    // With basic auth users, basic auth or the group's token grants a route; a route with no
    // token (metrics here) needs basic auth.
    let users = [("ops".to_string(), bcrypt::hash("pw", 4).unwrap())].into();
    let st = state_with(
        &config(""),
        Tokens {
            basic: Some(std::sync::Arc::new(super::auth::BasicAuth::new(users))),
            ..tokens()
        },
    );
    let basic = |path: &str, cred: &str| {
        use base64::Engine as _;
        Request::get(path)
            .header(
                header::AUTHORIZATION,
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(cred)
                ),
            )
            .body(Body::empty())
            .unwrap()
    };
    for path in ["/v1/usage", "/metrics"] {
        assert_eq!(call(&st, basic(path, "ops:pw")).await.0, StatusCode::OK);
        let (s, h, _) = call(&st, basic(path, "ops:nope")).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
        let challenges: Vec<_> = h.get_all(header::WWW_AUTHENTICATE).iter().collect();
        assert_eq!(
            challenges,
            ["Basic realm=\"ratewarden\", charset=\"UTF-8\"", "Bearer"],
            "one challenge per line, or Chromium never asks for the login"
        );
        assert_eq!(
            call(&st, basic(path, "eve:pw")).await.0,
            StatusCode::UNAUTHORIZED,
            "an unknown user with a known password"
        );
        assert_eq!(call(&st, get(path, None)).await.0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        call(&st, get("/v1/usage", Some("ad-tok"))).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&st, get("/metrics", Some("ad-tok"))).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(call(&st, get("/healthz", None)).await.0, StatusCode::OK);
    // Without tokens configured the routes are open.
    let open = state_with(&config(""), Tokens::default());
    assert_eq!(
        call(&open, post(ev(0, ""), "application/x-ndjson", None))
            .await
            .0,
        StatusCode::ACCEPTED
    );
    assert_eq!(call(&open, get("/v1/usage", None)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn oversized_bodies_are_413_with_or_without_length() {
    let st = state();
    let big = "x".repeat(5000);
    // No Content-Length (as with chunked uploads): the limit holds while reading.
    let (s, _, b) = call(
        &st,
        post(big.clone(), "application/x-ndjson", Some("in-tok")),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    assert_eq!(json(&b)["error"]["code"], "too_large");
    // A declared length over the limit is refused before reading.
    let mut req = post(big, "application/x-ndjson", Some("in-tok"));
    req.headers_mut()
        .insert(header::CONTENT_LENGTH, "5000".parse().unwrap());
    assert_eq!(call(&st, req).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    let m = metrics_text(&st).await;
    assert!(
        m.contains(r#"ratewarden_events_rejected_total{source="http",reason="too_large"} 2"#),
        "{m}"
    );
}

#[tokio::test]
async fn single_event_over_64k_is_too_large_but_the_rest_count() {
    let cfg = Config::parse("[server]\nmax_body_bytes = 1000000\n", "t.toml").unwrap();
    let st = state_with(&cfg, Tokens::default());
    let huge = format!(r#"{{"org":"a","model":"{}"}}"#, "m".repeat(70_000));
    let body = format!("{huge}\n{}\n", ev(0, ""));
    let (s, _, b) = call(&st, post(body, "application/x-ndjson", None)).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(json(&b)["errors"][0]["reason"], "too_large");
    assert_eq!(json(&b)["accepted"], 1);
}

#[tokio::test]
async fn errors_list_is_capped_but_counts_are_exact() {
    let cfg = Config::parse("[server]\nmax_body_bytes = 1000000\n", "t.toml").unwrap();
    let st = state_with(&cfg, Tokens::default());
    let mut lines: Vec<String> = (0..150).map(|_| "{bad".to_string()).collect();
    lines.push(ev(0, ""));
    let (s, _, b) = call(&st, post(lines.join("\n"), "application/x-ndjson", None)).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let v = json(&b);
    assert_eq!(v["rejected"], 150);
    assert_eq!(v["errors"].as_array().unwrap().len(), 100);
}

#[tokio::test]
async fn saturated_ingest_answers_429_with_retry_after() {
    let st = state();
    let permits = st
        .ingest_slots
        .clone()
        .acquire_many_owned(INGEST_CONCURRENCY as u32)
        .await
        .unwrap();
    let (s, h, b) = call(&st, post(ev(0, ""), "application/x-ndjson", Some("in-tok"))).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{b}");
    assert_eq!(h[header::RETRY_AFTER], "1");
    drop(permits);
    assert_eq!(
        call(&st, post(ev(0, ""), "application/x-ndjson", Some("in-tok")))
            .await
            .0,
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn usage_answer_shape() {
    let st = state();
    let body = [
        ev(-5_000, r#","app":"bot","status":202,"job_id":"j1""#),
        ev(-4_000, r#","app":"bot","status":202,"job_id":"j2""#),
        ev(-3_000, r#","app":"ui","status":200"#),
        r#"{"org":"other","status":200}"#.to_string(),
    ]
    .join("\n");
    call(&st, post(body, "application/x-ndjson", Some("in-tok"))).await;
    let (s, _, b) = call(&st, get("/v1/usage", Some("ad-tok"))).await;
    assert_eq!(s, StatusCode::OK);
    let v = json(&b);
    let acme = &v["orgs"][0];
    assert_eq!(acme["org"], "acme");
    assert_eq!(acme["tier"], "t10");
    assert_eq!(
        acme["limits"],
        json!({"rpm": 10, "daily": 100, "concurrency": 2})
    );
    assert_eq!(
        acme["usage"],
        json!({"rpm": 3, "daily": 3, "concurrency": 2})
    );
    assert_eq!(acme["utilization"]["concurrency"], 1.0);
    assert_eq!(acme["utilization"]["rpm"], 0.3);
    assert_eq!(
        acme["headroom_seconds"],
        json!({"rpm": 0, "daily": 0, "concurrency": null})
    );
    assert_eq!(
        acme["apps"],
        json!([{"app": "bot", "rpm": 2, "daily": 2, "in_flight": 2}, {"app": "ui", "rpm": 1, "daily": 1, "in_flight": 0}])
    );
    assert_eq!(acme["stuck_jobs"], json!([]));
    let other = &v["orgs"][1];
    assert_eq!(other["tier"], "plus");
    assert_eq!(
        other["limits"],
        json!({"rpm": 5, "concurrency": 1}),
        "unlimited daily left out"
    );
    assert!(other["utilization"].get("daily").is_none());
    assert_eq!(
        other["usage"]["daily"], 1,
        "usage of unlimited dimensions is still shown"
    );
}

#[tokio::test]
async fn alerts_route_and_gauge_follow_transitions() {
    let st = state();
    let body = [
        ev(0, r#","status":202,"job_id":"a""#),
        ev(1, r#","status":202,"job_id":"b""#),
    ]
    .join("\n");
    call(&st, post(body, "application/x-ndjson", Some("in-tok"))).await;
    let (_, _, b) = call(&st, get("/v1/alerts", Some("ad-tok"))).await;
    let v = json(&b);
    let a = &v["alerts"][0];
    assert_eq!(a["alert"], "UsageHigh");
    assert_eq!(a["severity"], "critical");
    assert_eq!(a["dimension"], "concurrency");
    assert_eq!(a["status"], "firing");
    assert_eq!(a["summary"], "acme at 100% of its 2 concurrent jobs");
    assert_eq!(
        a["starts_at"], "2026-11-27T14:00:00.000Z",
        "the event 1 ms ahead of the clock is judged as if it came now"
    );
    let m = metrics_text(&st).await;
    assert!(
        m.contains(r#"ratewarden_alerts_firing{org="acme",alert="UsageHigh",dimension="concurrency",severity="critical"} 1"#),
        "{m}"
    );
    let done = [
        ev(2, r#","kind":"job_completed","job_id":"a""#),
        ev(3, r#","kind":"job_failed","job_id":"b""#),
    ]
    .join("\n");
    call(&st, post(done, "application/x-ndjson", Some("in-tok"))).await;
    let (_, _, b) = call(&st, get("/v1/alerts", Some("ad-tok"))).await;
    assert_eq!(json(&b)["alerts"], json!([]));
    assert!(
        !metrics_text(&st)
            .await
            .contains("ratewarden_alerts_firing{")
    );
}

#[tokio::test]
async fn metrics_exposition_names_and_types() {
    let st = state();
    let body = [
        ev(-2_000, r#","app":"bot","status":202,"job_id":"j1""#),
        ev(
            -1_000,
            r#","app":"bot","status":429,"ratelimit":{"remaining_requests":0}"#,
        ),
        ev(0, r#","app":"bot","kind":"job_completed","job_id":"j1""#),
    ]
    .join("\n");
    call(&st, post(body, "application/x-ndjson", Some("in-tok"))).await;
    let (s, h, m) = call(&st, get("/metrics", None)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        h[header::CONTENT_TYPE],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    for line in [
        "# TYPE ratewarden_requests counter",
        r#"ratewarden_requests_total{org="acme",app="bot",outcome="rate_limited"} 1"#,
        r#"ratewarden_rate_limited_total{org="acme",app="bot",cause="unexplained"} 1"#,
        r#"ratewarden_limit{org="acme",dimension="daily"} 100"#,
        r#"ratewarden_utilization_ratio{org="acme",dimension="rpm"} 0.2"#,
        r#"ratewarden_jobs_in_flight{org="acme"} 0"#,
        r#"ratewarden_jobs_stuck{org="acme"} 0"#,
        r#"ratewarden_jobs_finished_total{org="acme",outcome="completed"} 1"#,
        r#"ratewarden_job_duration_seconds_count{org="acme"} 1"#,
        r#"ratewarden_job_duration_seconds_bucket{le="5.0",org="acme"} 1"#,
        r#"ratewarden_bursts_total{org="acme"} 0"#,
        r#"ratewarden_retry_violations_total{org="acme",app="bot"} 0"#,
        r#"ratewarden_upstream_remaining{org="acme",dimension="rpm"} 0"#,
        r#"ratewarden_series_overflow_total{kind="org"} 0"#,
        r#"ratewarden_build_info{version=""#,
        "# EOF",
    ] {
        assert!(m.contains(line), "missing {line:?} in\n{m}");
    }
    assert!(!m.contains("_total_total"));
    // Clients that only take the classic text format get it.
    let mut req = get("/metrics", None);
    req.headers_mut()
        .insert(header::ACCEPT, "text/plain".parse().unwrap());
    let (_, h, classic) = call(&st, req).await;
    assert_eq!(
        h[header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert!(
        classic.contains("# TYPE ratewarden_build_info gauge") && !classic.contains("# EOF"),
        "{classic}"
    );
    let mut req = get("/metrics", None);
    req.headers_mut().insert(
        header::ACCEPT,
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            .parse()
            .unwrap(),
    );
    assert!(
        call(&st, req).await.2.contains("# EOF"),
        "what Prometheus asks for"
    );
}

#[tokio::test]
async fn health_readiness_and_unknown_routes() {
    let st = state();
    st.ready.store(false, Ordering::Release);
    let (s, _, b) = call(&st, get("/readyz", None)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json(&b)["error"]["code"], "not_ready");
    st.ready.store(true, Ordering::Release);
    assert_eq!(call(&st, get("/readyz", None)).await.0, StatusCode::OK);
    let (s, _, b) = call(&st, get("/v2/nothing", None)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(json(&b)["error"]["code"], "not_found");
}

/// A real store whose commits fail while `fail` is set: a full disk.
struct Flaky {
    inner: crate::store::sqlite::SqliteStore,
    fail: Arc<std::sync::atomic::AtomicBool>,
}

impl crate::store::StateStore for Flaky {
    fn recover(&mut self) -> Result<crate::store::Recovered, crate::store::StoreError> {
        self.inner.recover()
    }
    fn journal_after(
        &mut self,
        seq: u64,
        f: &mut dyn FnMut(u64, &[u8]),
    ) -> Result<(), crate::store::StoreError> {
        self.inner.journal_after(seq, f)
    }
    fn commit(&mut self, c: &crate::store::Commit<'_>) -> Result<(), crate::store::StoreError> {
        if self.fail.load(Ordering::Acquire) {
            return Err(crate::store::StoreError::Io {
                path: "state.sqlite".into(),
                source: std::io::Error::other("No space left on device"),
            });
        }
        self.inner.commit(c)
    }
    fn location(&self) -> String {
        self.inner.location()
    }
    fn keep_copy(&mut self) -> Result<String, crate::store::StoreError> {
        self.inner.keep_copy()
    }
}

/// An API over a durable store that can be made to fail, and that store's switch.
fn flaky_state(
    dir: &std::path::Path,
) -> (
    ApiState,
    Arc<std::sync::atomic::AtomicBool>,
    crate::live::Writer,
) {
    let config = config("");
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let store = Flaky {
        inner: crate::store::sqlite::SqliteStore::open(dir).unwrap(),
        fail: fail.clone(),
    };
    let (live, writer, _) = crate::live::Live::recover(
        &config,
        Box::new(store),
        Arc::new(ManualClock::new(NOW)),
        None,
        false,
    )
    .unwrap();
    let mut st = over(&config, tokens(), live);
    st.durable_wait = std::time::Duration::from_millis(300);
    st.ready.store(true, Ordering::Release);
    (st, fail, writer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_never_answers_an_error_after_the_change() {
    let dir = tempfile::tempdir().unwrap();
    let (st, fail, writer) = flaky_state(dir.path());
    let events = |n: i64| {
        (0..n)
            .map(|i| ev(i, r#","status":200"#))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let usage = |st: &ApiState| {
        let st = st.clone();
        async move {
            json(&call(&st, get("/v1/usage", Some("ad-tok"))).await.2)["orgs"][0]["usage"]["daily"]
                .clone()
        }
    };
    let (status, _, _) = call(&st, post(events(2), "application/x-ndjson", Some("in-tok"))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // The disk fills: the change in flight is applied and said to be not yet stored — a 2xx,
    // so the shipper does not send it again.
    fail.store(true, Ordering::Release);
    let (status, _, body) =
        call(&st, post(events(3), "application/x-ndjson", Some("in-tok"))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(json(&body)["durable"], false, "{body}");
    assert_eq!(usage(&st).await, 5);
    // Now the store is known to fail: refused before anything is applied.
    let (status, _, body) =
        call(&st, post(events(4), "application/x-ndjson", Some("in-tok"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(json(&body)["error"]["code"], "store_unavailable");
    assert_eq!(
        usage(&st).await,
        5,
        "an error leaves no trace in the counts"
    );
    let (status, _, body) = call(&st, get("/readyz", None)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let m = metrics_text(&st).await;
    assert!(m.contains("ratewarden_store_writable 0"), "{m}");
    assert!(
        !m.contains("ratewarden_store_commit_failures_total 0"),
        "{m}"
    );
    // Space returns: the daemon writes again by itself and takes events.
    fail.store(false, Ordering::Release);
    let back = std::time::Instant::now();
    loop {
        let (status, _, _) = call(&st, get("/readyz", None)).await;
        if status == StatusCode::OK {
            break;
        }
        assert!(back.elapsed() < std::time::Duration::from_secs(5));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, _, body) =
        call(&st, post(events(1), "application/x-ndjson", Some("in-tok"))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(json(&body).get("durable").is_none(), "{body}");
    assert_eq!(usage(&st).await, 6);
    assert!(
        metrics_text(&st)
            .await
            .contains("ratewarden_store_writable 1")
    );
    let live = st.live.clone();
    drop(st);
    tokio::task::spawn_blocking(move || {
        drop(live);
        writer.shutdown();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn batch_items_page_with_a_link_to_the_next() {
    let cfg = config(
        "[[upstreams]]\nname = \"u\"\nbase_url = \"http://127.0.0.1:9\"\norg = \"acme\"\n[scheduler]\nmax_batch_items = 2000\n",
    );
    let mut st = state_with(&cfg, tokens());
    let live = st.live.clone();
    let metrics = st.metrics.clone();
    let now = live.now_ms();
    st.scheduler = Some(Arc::new(Scheduler::new(
        &cfg,
        live,
        metrics,
        Vec::new(),
        Vec::new(),
        now,
    )));
    let requests: Vec<Value> = (0..1000)
        .map(|i| json!({"path": format!("/v1/x/{i}")}))
        .collect();
    let body = json!({"upstream": "u", "requests": requests}).to_string();
    let req = Request::post("/v1/batches")
        .header(header::AUTHORIZATION, "Bearer ad-tok")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap();
    // max_body_bytes is 4096 in these tests; this body is larger.
    let big = ApiState {
        max_body_bytes: 1 << 20,
        ..st.clone()
    };
    let (status, _, answer) = call(&big, req).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let id = json(&answer)["id"].as_str().unwrap().to_string();
    let indexes = |text: &str| -> Vec<u64> {
        text.lines()
            .map(|l| json(l)["index"].as_u64().unwrap())
            .collect()
    };
    // Everything, streamed in frames, without parameters.
    let (status, headers, all) =
        call(&st, get(&format!("/v1/batches/{id}/items"), Some("ad-tok"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(indexes(&all), (0..1000).collect::<Vec<_>>());
    assert!(headers.get(header::LINK).is_none());
    // Pages, following the Link header to the end.
    let mut next = Some(format!("/v1/batches/{id}/items?limit=300"));
    let mut seen = Vec::new();
    let mut pages = 0;
    while let Some(path) = next.take() {
        let (status, headers, page) = call(&st, get(&path, Some("ad-tok"))).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let got = indexes(&page);
        assert!(got.len() <= 300);
        seen.extend(got);
        pages += 1;
        next = headers.get(header::LINK).map(|v| {
            let v = v.to_str().unwrap();
            assert!(v.ends_with("; rel=\"next\""), "{v}");
            v[1..v.find('>').unwrap()].to_string()
        });
    }
    assert_eq!(pages, 4);
    assert_eq!(seen, (0..1000).collect::<Vec<_>>());
    // Bad parameters are JSON errors.
    for q in ["limit=0", "after=-1", "limit=x", "page=2"] {
        let (status, _, body) = call(
            &st,
            get(&format!("/v1/batches/{id}/items?{q}"), Some("ad-tok")),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}: {body}");
        assert_eq!(json(&body)["error"]["code"], "invalid_query", "{q}");
    }
    let (status, _, body) = call(&st, get("/v1/batches/nope/items?limit=5", Some("ad-tok"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn counts_past_two_to_the_63_are_field_errors_never_negative_gauges() {
    let st = state_with(&config("tpm = 1000\n"), tokens());
    let body = [
        ev(0, r#","status":200,"tokens":18446744073709551615"#),
        ev(1, r#","status":200,"tokens":"9223372036854775808""#),
        ev(2, r#","status":200,"tokens":9223372036854775807"#),
        ev(
            3,
            r#","status":429,"ratelimit":{"limit_requests":18446744073709551615,"remaining_requests":3}"#,
        ),
    ]
    .join("\n");
    let (status, _, answer) = call(&st, post(body, "application/x-ndjson", Some("in-tok"))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let a = json(&answer);
    assert_eq!(a["accepted"], 4, "{a}");
    let fields: Vec<&str> = a["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["tokens", "tokens", "ratelimit"], "{a}");
    let text = metrics_text(&st).await;
    let negative: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && l.rsplit(' ').next().is_some_and(|v| v.starts_with('-')))
        .collect();
    assert!(negative.is_empty(), "{negative:?}");
    assert!(
        text.contains("ratewarden_usage{org=\"acme\",dimension=\"tpm\"} 9223372036854775807"),
        "{text}"
    );
}

#[tokio::test]
async fn a_wrong_method_is_a_json_405_with_allow() {
    let st = state();
    for (method, path) in [
        ("DELETE", "/v1/events"),
        ("POST", "/v1/usage"),
        ("PUT", "/metrics"),
    ] {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let (status, headers, body) = call(&st, req).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_eq!(json(&body)["error"]["code"], "method_not_allowed", "{body}");
        assert!(
            headers.contains_key(header::ALLOW),
            "{method} {path}: {headers:?}"
        );
    }
}

fn admit_req(body: &str, token: Option<&str>) -> Request<Body> {
    let mut b = Request::post("/v1/admit").header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Body::from(body.to_string())).unwrap()
}

fn lease_req(method: &str, lease: &str, body: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(format!("/v1/admit/{lease}"))
        .header(header::AUTHORIZATION, "Bearer in-tok")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn admit_grants_until_the_limit_then_says_when_with_retry_after() {
    let st = state();
    let ask = r#"{"org":"acme","app":"bot","requests":1}"#;
    let (status, _, _) = call(&st, admit_req(ask, None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let mut leases = Vec::new();
    for _ in 0..10 {
        let (status, _, body) = call(&st, admit_req(ask, Some("in-tok"))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let v = json(&body);
        assert_eq!(v["granted"], true);
        // The margin (1 s by default) is the time the call has to reach the upstream.
        assert_eq!(v["expires_at"], "2026-11-27T14:00:01.000Z");
        leases.push(v["lease"].as_str().unwrap().to_string());
    }
    let (status, headers, body) = call(&st, admit_req(ask, Some("in-tok"))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let v = json(&body);
    assert_eq!(
        (v["granted"].clone(), v["dimension"].clone()),
        (json!(false), json!("rpm"))
    );
    // 61 one-second buckets plus the 1 s margin.
    assert_eq!(v["retry_after_ms"], 62_000);
    assert_eq!(headers[header::RETRY_AFTER], "62");
    // A report of a granted call completes it: usage stays 10, and the grant is done.
    let report = format!(
        r#"{{"org":"acme","app":"bot","ts":{NOW},"status":200,"lease":"{}"}}"#,
        leases[0]
    );
    let (status, _, body) = call(&st, post(report, "application/json", Some("in-tok"))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (_, _, body) = call(&st, get("/v1/usage", Some("ad-tok"))).await;
    let acme = json(&body)["orgs"][0].clone();
    assert_eq!(acme["usage"]["rpm"], 10);
    assert_eq!(acme["admission"], json!({"reservations": 9, "leases": 0}));
    let m = metrics_text(&st).await;
    assert!(
        m.contains(r#"ratewarden_admissions_total{org="acme",outcome="granted"} 10"#),
        "{m}"
    );
    assert!(
        m.contains(r#"ratewarden_admissions_total{org="acme",outcome="refused"} 1"#),
        "{m}"
    );
    assert!(
        m.contains("ratewarden_admission_wait_seconds_count 11"),
        "{m}"
    );
}

#[tokio::test]
async fn admit_refuses_bad_asks_with_the_reason() {
    let st = state();
    for (body, status, says) in [
        ("{", StatusCode::BAD_REQUEST, "not an admission ask"),
        (
            r#"{"app":"x"}"#,
            StatusCode::BAD_REQUEST,
            "missing field `org`",
        ),
        (
            r#"{"org":"acme","color":1}"#,
            StatusCode::BAD_REQUEST,
            "unknown field `color`",
        ),
        (r#"{"org":""}"#, StatusCode::BAD_REQUEST, "1-128 printable"),
        (
            r#"{"org":"acme","requests":0}"#,
            StatusCode::BAD_REQUEST,
            "for nothing",
        ),
        (
            r#"{"org":"acme","wait":"soon"}"#,
            StatusCode::BAD_REQUEST,
            "not a duration",
        ),
        (
            r#"{"org":"acme","wait":"2h"}"#,
            StatusCode::BAD_REQUEST,
            "at most 60s",
        ),
        (
            r#"{"org":"acme","wait":-1}"#,
            StatusCode::BAD_REQUEST,
            "seconds (0 or more)",
        ),
        (
            r#"{"org":"acme","request_id":""}"#,
            StatusCode::BAD_REQUEST,
            "request_id",
        ),
        (
            r#"{"org":"acme","requests":11}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "acme's share of its rpm limit is 10",
        ),
    ] {
        let (got, _, text) = call(&st, admit_req(body, Some("in-tok"))).await;
        assert_eq!(got, status, "{body}: {text}");
        assert!(text.contains(says), "{body}: {text}");
    }
    let (status, _, text) = call(&st, lease_req("DELETE", "nope", "")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    let (status, _, text) = call(&st, lease_req("POST", "nope", r#"{"job_id":"j"}"#)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
}

#[tokio::test]
async fn job_leases_free_their_slot_on_delete_and_on_the_attached_jobs_end() {
    let st = state();
    let ask = r#"{"org":"acme","app":"bot","job":true}"#;
    let mut leases = Vec::new();
    for _ in 0..2 {
        let (status, _, body) = call(&st, admit_req(ask, Some("in-tok"))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        leases.push(json(&body)["lease"].as_str().unwrap().to_string());
    }
    let (status, _, body) = call(&st, admit_req(ask, Some("in-tok"))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(json(&body)["dimension"], "concurrency");
    let (status, _, _) = call(&st, lease_req("DELETE", &leases[0], "")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, body) = call(&st, admit_req(ask, Some("in-tok"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, text) = call(&st, lease_req("POST", &leases[1], r#"{"job_id":"vid_7"}"#)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    let (status, _, text) = call(&st, lease_req("POST", &leases[1], r#"{"id":"x"}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    let done = format!(r#"{{"org":"acme","ts":{NOW},"kind":"job_completed","job_id":"vid_7"}}"#);
    let (status, _, _) = call(&st, post(done, "application/json", Some("in-tok"))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _, body) = call(&st, admit_req(ask, Some("in-tok"))).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the finished job's slot is free: {body}"
    );
}

#[tokio::test]
async fn waiting_asks_are_served_in_arrival_order_when_room_frees() {
    let config = config("");
    let clock = Arc::new(ManualClock::new(NOW));
    let st = in_memory(&config, tokens(), clock.clone());
    st.ready.store(true, Ordering::Release);
    let job = r#"{"org":"acme","app":"bot","job":true}"#;
    let mut held = Vec::new();
    for _ in 0..2 {
        let (_, _, body) = call(&st, admit_req(job, Some("in-tok"))).await;
        held.push(json(&body)["lease"].as_str().unwrap().to_string());
    }
    // Three waiters, in order; a caller that does not wait is refused while they wait.
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..3 {
        let (st, order) = (st.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let ask = r#"{"org":"acme","app":"bot","job":true,"wait":"5s"}"#;
            let (status, _, body) = call(&st, admit_req(ask, Some("in-tok"))).await;
            order.lock().unwrap().push(i);
            (status, body)
        }));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let m = metrics_text(&st).await;
    assert!(
        m.contains(r#"ratewarden_admission_waiting{org="acme"} 3"#),
        "{m}"
    );
    let (status, _, body) = call(
        &st,
        admit_req(r#"{"org":"acme","requests":1}"#, Some("in-tok")),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "jumps no queue: {body}"
    );
    // Each release lets the next in line through.
    for lease in &held {
        let (status, _, _) = call(&st, lease_req("DELETE", lease, "")).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The third waits until its deadline and is told so.
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
    assert_eq!(answers[0].0, StatusCode::OK, "{}", answers[0].1);
    assert_eq!(answers[1].0, StatusCode::OK, "{}", answers[1].1);
    assert_eq!(
        answers[2].0,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        answers[2].1
    );
    let m = metrics_text(&st).await;
    assert!(
        m.contains(r#"ratewarden_admissions_total{org="acme",outcome="timed_out"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"ratewarden_admission_waiting{org="acme"} 0"#),
        "{m}"
    );
}

#[tokio::test]
async fn a_waiting_client_that_goes_away_leaves_the_queue() {
    let st = state();
    let job = r#"{"org":"acme","app":"bot","job":true}"#;
    let mut held = Vec::new();
    for _ in 0..2 {
        let (_, _, body) = call(&st, admit_req(job, Some("in-tok"))).await;
        held.push(json(&body)["lease"].as_str().unwrap().to_string());
    }
    let gone = {
        let st = st.clone();
        tokio::spawn(async move {
            let ask = r#"{"org":"acme","app":"bot","job":true,"wait":"30s"}"#;
            call(&st, admit_req(ask, Some("in-tok"))).await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(
        metrics_text(&st)
            .await
            .contains(r#"ratewarden_admission_waiting{org="acme"} 1"#)
    );
    // The client hangs up: its handler is dropped mid-wait.
    gone.abort();
    let _ = gone.await;
    let m = metrics_text(&st).await;
    assert!(
        m.contains(r#"ratewarden_admission_waiting{org="acme"} 0"#),
        "{m}"
    );
    // Nobody waits now: a slot given back is there for the next ask at once.
    let (status, _, _) = call(&st, lease_req("DELETE", &held[0], "")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, body) = call(&st, admit_req(job, Some("in-tok"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn an_ask_that_cannot_fit_within_its_wait_is_answered_at_once() {
    let st = state();
    for _ in 0..10 {
        call(
            &st,
            admit_req(r#"{"org":"acme","requests":1}"#, Some("in-tok")),
        )
        .await;
    }
    let started = std::time::Instant::now();
    let (status, _, body) = call(
        &st,
        admit_req(r#"{"org":"acme","requests":1,"wait":"5s"}"#, Some("in-tok")),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "answered without waiting"
    );
    assert_eq!(json(&body)["retry_after_ms"], 62_000);
    let (status, _, body) = call(&st, admit_req(r#"{"org":"__overflow__"}"#, Some("in-tok"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}
