//! Limit sources against fake admin APIs that answer in the providers' documented shapes,
//! two pages each: the limits are imported at start and follow a change; a 500 or a hang
//! keeps the last values and fires `LimitSourceFailing`, a good poll resolves it; the admin
//! key is in no error, log line or metric.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ratewarden::clock::SystemClock;
use ratewarden::config::{LimitScope, LimitSource, LimitSourceKind};
use ratewarden::detect::{Status, Transition};
use ratewarden::metrics::LimitSourceMetrics;
use ratewarden::model::{AlertName, SourcedLimits};
use ratewarden::sources::limits::{AdminKey, Source, fetch, run};
use serde_json::json;

const KEY: &str = "sk-admin-THE-SECRET-KEY-0123456789";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Ok,
    /// 500, echoing the request headers (the key among them) in the body.
    Fail,
    /// Answers after 5 s, far past the source's timeout.
    Hang,
}

#[derive(Default)]
struct Fake {
    mode: Option<Mode>,
    /// Multiplies every limit: a later poll sees changed values.
    version: u64,
    /// Requests seen: (path and query, the key header's value).
    seen: Vec<(String, String)>,
}

type Shared = Arc<Mutex<Fake>>;

async fn misbehave(fake: &Shared, headers: &HeaderMap) -> Option<Response> {
    let mode = fake.lock().unwrap().mode.unwrap_or(Mode::Ok);
    match mode {
        Mode::Ok => None,
        Mode::Fail => {
            let echoed: Vec<String> = headers
                .iter()
                .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
                .collect();
            Some(
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("internal error; you sent {}", echoed.join("; ")),
                )
                    .into_response(),
            )
        }
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Some(StatusCode::OK.into_response())
        }
    }
}

fn record(fake: &Shared, what: String, key: Option<&str>) {
    fake.lock()
        .unwrap()
        .seen
        .push((what, key.unwrap_or("").to_string()));
}

/// OpenAI's `GET /v1/organization/projects/{project_id}/rate_limits`.
async fn openai(
    State(fake): State<Shared>,
    Path(project): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_start_matches("Bearer ").to_string());
    record(&fake, format!("openai {project} {q:?}"), auth.as_deref());
    if auth.as_deref() != Some(KEY) {
        return (StatusCode::UNAUTHORIZED, "bad key").into_response();
    }
    if let Some(r) = misbehave(&fake, &headers).await {
        return r;
    }
    let v = fake.lock().unwrap().version;
    let body = match q.get("after").map(String::as_str) {
        None => json!({"object": "list", "data": [
            {"object": "project.rate_limit", "id": "rl-gpt-4o", "model": "gpt-4o",
             "max_requests_per_1_minute": 500 * v, "max_tokens_per_1_minute": 30000 * v,
             "max_requests_per_1_day": 10000, "batch_1_day_max_input_tokens": 90000}],
            "first_id": "rl-gpt-4o", "last_id": "rl-gpt-4o", "has_more": true}),
        Some("rl-gpt-4o") => json!({"object": "list", "data": [
            {"object": "project.rate_limit", "id": "rl-dall-e-3", "model": "dall-e-3",
             "max_requests_per_1_minute": 7, "max_tokens_per_1_minute": 0,
             "max_images_per_1_minute": 5 * v, "max_audio_megabytes_per_1_minute": 1}],
            "first_id": "rl-dall-e-3", "last_id": "rl-dall-e-3", "has_more": false}),
        Some(_) => return (StatusCode::BAD_REQUEST, "unknown cursor").into_response(),
    };
    axum::Json(body).into_response()
}

/// Anthropic's `GET /v1/organizations/rate_limits` and the workspace variant.
async fn anthropic_page(
    fake: Shared,
    workspace: Option<String>,
    q: HashMap<String, String>,
    headers: HeaderMap,
) -> Response {
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    record(&fake, format!("anthropic {workspace:?} {q:?}"), key);
    if key != Some(KEY)
        || headers
            .get("anthropic-version")
            .and_then(|v| v.to_str().ok())
            != Some("2023-06-01")
    {
        return (StatusCode::UNAUTHORIZED, "bad key or version").into_response();
    }
    if let Some(r) = misbehave(&fake, &headers).await {
        return r;
    }
    let v = fake.lock().unwrap().version;
    let limits = |rpm: u64, itpm: u64, otpm: u64| {
        if workspace.is_some() {
            json!([
                {"type": "requests_per_minute", "value": rpm, "org_limit": 4000, "source": {"type": "workspace"}},
                {"type": "input_tokens_per_minute", "value": itpm, "org_limit": itpm, "source": {"type": "organization"}},
                {"type": "output_tokens_per_minute", "value": otpm, "org_limit": otpm, "source": {"type": "organization"}},
            ])
        } else {
            json!([
                {"type": "requests_per_minute", "value": rpm},
                {"type": "input_tokens_per_minute", "value": itpm},
                {"type": "output_tokens_per_minute", "value": otpm},
            ])
        }
    };
    let kind = if workspace.is_some() {
        "workspace_rate_limit"
    } else {
        "rate_limit"
    };
    // A cursor with characters that must be encoded, to be sent back as it was given.
    let cursor = "page_2/a+b=c&d";
    let body = match q.get("page").map(String::as_str) {
        None => json!({"data": [
            {"type": kind, "id": "rl_sonnet", "group": {"type": "model_group"}, "group_type": "model_group",
             "models": ["claude-sonnet-4-5", "claude-sonnet-4-5-20250929"],
             "limits": limits(4000 * v, 2_000_000, 400_000)},
            {"type": kind, "id": "rl_batch", "group": {"type": "batch"}, "group_type": "batch",
             "models": null, "limits": [{"type": "requests_per_minute", "value": 4000}]}],
            "next_page": cursor}),
        Some(c) if c == cursor => json!({"data": [
            {"type": kind, "id": "rl_haiku", "group": {"type": "model_group"}, "group_type": "model_group",
             "models": ["claude-haiku-4-5"], "limits": limits(50 * v, 50_000, 10_000)}],
            "next_page": null}),
        Some(_) => return (StatusCode::BAD_REQUEST, "unknown cursor").into_response(),
    };
    axum::Json(body).into_response()
}

/// Starts the fake on a free port; returns its base URL and state.
async fn fake_admin_api() -> (String, Shared) {
    let fake: Shared = Arc::new(Mutex::new(Fake {
        version: 1,
        ..Fake::default()
    }));
    let app = axum::Router::new()
        .route(
            "/v1/organization/projects/{project}/rate_limits",
            get(openai),
        )
        .route(
            "/v1/organizations/rate_limits",
            get(
                |State(f): State<Shared>,
                 Query(q): Query<HashMap<String, String>>,
                 h: HeaderMap| { anthropic_page(f, None, q, h) },
            ),
        )
        .route(
            "/v1/organizations/workspaces/{workspace}/rate_limits",
            get(
                |State(f): State<Shared>,
                 Path(w): Path<String>,
                 Query(q): Query<HashMap<String, String>>,
                 h: HeaderMap| anthropic_page(f, Some(w), q, h),
            ),
        )
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), fake)
}

fn source(kind: LimitSourceKind, scope: LimitScope, base_url: &str) -> Source {
    Source::new(
        LimitSource {
            kind,
            admin_key_env: "UNUSED_IN_THESE_TESTS".into(),
            scope,
            org: "acme".into(),
            base_url: base_url.to_string(),
            // Far below what the config allows (1m), to watch several polls in a test.
            interval_ms: 200,
            failing_after_ms: 700,
            timeout_ms: 300,
        },
        AdminKey::new(KEY.to_string()),
    )
}

fn client() -> reqwest::Client {
    ratewarden::outbound::client(10_000, 2_000).unwrap()
}

#[tokio::test]
async fn openai_project_limits_over_two_pages() {
    let (base, fake) = fake_admin_api().await;
    let s = source(
        LimitSourceKind::Openai,
        LimitScope::Project("proj_1".into()),
        &base,
    );
    let got = fetch(&s, &client()).await.unwrap();
    assert_eq!(
        (got.source.as_str(), got.org.as_str()),
        ("openai-admin", "acme")
    );
    let shown: Vec<String> = got
        .scopes
        .iter()
        .map(|s| {
            format!(
                "{} rpm={:?} tpm={:?} ipm={:?} daily={:?} batch={:?}",
                s.models.join(","),
                s.rpm,
                s.tpm,
                s.ipm,
                s.daily,
                s.batch_queue_tokens
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            "gpt-4o rpm=Some(500) tpm=Some(30000) ipm=None daily=Some(10000) batch=Some(90000)",
            "dall-e-3 rpm=Some(7) tpm=Some(0) ipm=Some(5) daily=None batch=None",
        ]
    );
    let seen = fake.lock().unwrap().seen.clone();
    assert_eq!(seen.len(), 2, "two pages: {seen:?}");
    assert!(
        seen.iter().all(|(_, key)| key == KEY),
        "the key arrives: {seen:?}"
    );
    assert!(seen[1].0.contains("\"after\": \"rl-gpt-4o\""), "{seen:?}");
}

#[tokio::test]
async fn anthropic_organization_and_workspace_limits_over_two_pages() {
    let (base, fake) = fake_admin_api().await;
    for scope in [
        LimitScope::Organization,
        LimitScope::Workspace("wrkspc_01".into()),
    ] {
        let s = source(LimitSourceKind::Anthropic, scope.clone(), &base);
        let got = fetch(&s, &client()).await.unwrap();
        assert_eq!(got.source, "anthropic-admin");
        let shown: Vec<String> = got
            .scopes
            .iter()
            .map(|s| {
                format!(
                    "{} rpm={:?} itpm={:?} otpm={:?}",
                    s.models.join(","),
                    s.rpm,
                    s.itpm,
                    s.otpm
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                "claude-sonnet-4-5,claude-sonnet-4-5-20250929 rpm=Some(4000) itpm=Some(2000000) otpm=Some(400000)",
                "claude-haiku-4-5 rpm=Some(50) itpm=Some(50000) otpm=Some(10000)",
            ],
            "{scope:?}: the batch group is no model scope"
        );
    }
    let seen = fake.lock().unwrap().seen.clone();
    assert_eq!(seen.len(), 4, "two pages each: {seen:?}");
    assert!(seen.iter().all(|(_, key)| key == KEY), "{seen:?}");
    assert!(
        seen[1].0.contains("\"page\": \"page_2/a+b=c&d\""),
        "cursor sent back as given: {seen:?}"
    );
    assert!(
        seen[2].0.contains("Some(\"wrkspc_01\")") && seen[2].0.contains("include_inherited"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn errors_never_hold_the_key() {
    let (base, fake) = fake_admin_api().await;
    fake.lock().unwrap().mode = Some(Mode::Fail);
    for s in [
        source(
            LimitSourceKind::Openai,
            LimitScope::Project("p".into()),
            &base,
        ),
        source(LimitSourceKind::Anthropic, LimitScope::Organization, &base),
    ] {
        let e = fetch(&s, &client()).await.unwrap_err().to_string();
        assert!(
            e.starts_with("the admin API answered 500: internal error; you sent"),
            "{e}"
        );
        assert!(!e.contains(KEY) && !e.contains("THE-SECRET"), "{e}");
        assert!(e.contains("[redacted]"), "the echo was scrubbed: {e}");
        assert!(!format!("{s:?}").contains(KEY), "Debug of a source");
    }
    fake.lock().unwrap().mode = Some(Mode::Hang);
    let s = source(
        LimitSourceKind::Openai,
        LimitScope::Project("p".into()),
        &base,
    );
    let started = Instant::now();
    let e = fetch(&s, &client()).await.unwrap_err().to_string();
    assert!(e.contains("timed out"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the source's timeout bounds it"
    );
    // Nothing listens: a connection error.
    let s = source(
        LimitSourceKind::Openai,
        LimitScope::Project("p".into()),
        "http://127.0.0.1:9",
    );
    let e = fetch(&s, &client()).await.unwrap_err().to_string();
    assert!(e.starts_with("request failed") && !e.contains(KEY), "{e}");
}

/// Log lines written while a test runs (on this thread: the tests run on a current-thread
/// runtime, so the poller's tasks log here too).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

async fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_poller_imports_follows_keeps_the_last_values_and_alerts() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (base, fake) = fake_admin_api().await;
    let mut registry = prometheus_client::registry::Registry::with_prefix("ratewarden");
    let metrics = LimitSourceMetrics::register(&mut registry);
    let limits: Arc<Mutex<Vec<SourcedLimits>>> = Arc::default();
    let alerts: Arc<Mutex<Vec<Transition>>> = Arc::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let poller = tokio::spawn(run(
        vec![
            source(
                LimitSourceKind::Openai,
                LimitScope::Project("proj_1".into()),
                &base,
            ),
            source(LimitSourceKind::Anthropic, LimitScope::Organization, &base),
        ],
        client(),
        Arc::new(SystemClock),
        metrics,
        {
            let limits = limits.clone();
            move |l| limits.lock().unwrap().push(l)
        },
        {
            let alerts = alerts.clone();
            move |t| alerts.lock().unwrap().push(t)
        },
        async {
            let _ = stopped.await;
        },
    ));
    let rpm_of = |source: &str, model: &str| -> Option<u64> {
        let l = limits.lock().unwrap();
        l.iter()
            .rev()
            .find(|l| l.source == source)
            .and_then(|l| l.scopes.iter().find(|s| s.models[0] == model))
            .and_then(|s| s.rpm)
    };

    // Imported at start.
    eventually("both sources imported", || {
        rpm_of("openai-admin", "gpt-4o") == Some(500)
            && rpm_of("anthropic-admin", "claude-haiku-4-5") == Some(50)
    })
    .await;

    // Refreshed after a change, which is logged and counted.
    fake.lock().unwrap().version = 2;
    eventually("the changed values", || {
        rpm_of("openai-admin", "gpt-4o") == Some(1000)
            && rpm_of("anthropic-admin", "claude-haiku-4-5") == Some(100)
    })
    .await;
    let text = logs.text();
    assert!(
        text.contains("limit changed at the source")
            && text.contains("model=gpt-4o")
            && text.contains("dimension=\"rpm\"")
            && text.contains("old=Some(500) new=Some(1000)"),
        "{text}"
    );

    // A 500: the last values stay (nothing new reaches the sink) and the alert fires.
    fake.lock().unwrap().mode = Some(Mode::Fail);
    let good = limits.lock().unwrap().len();
    let firing = |alerts: &[Transition], status: Status| {
        alerts
            .iter()
            .filter(|t| t.alert == AlertName::LimitSourceFailing && t.status == status)
            .count()
    };
    eventually("LimitSourceFailing for both sources", || {
        firing(&alerts.lock().unwrap(), Status::Firing) == 2
    })
    .await;
    assert!(
        limits.lock().unwrap().len() <= good + 2,
        "at most polls already under way"
    );
    assert_eq!(
        rpm_of("openai-admin", "gpt-4o"),
        Some(1000),
        "the last good values"
    );
    {
        let a = alerts.lock().unwrap();
        let t = a
            .iter()
            .find(|t| t.app.as_deref() == Some("openai-admin"))
            .unwrap();
        assert_eq!(
            (&*t.org, t.limit),
            ("acme", Some(0)),
            "failing_after 700 ms is 0 s"
        );
        assert!(
            t.summary()
                .contains("no poll of the limit source succeeded"),
            "{}",
            t.summary()
        );
    }

    // Answers again: resolved.
    fake.lock().unwrap().mode = Some(Mode::Ok);
    eventually("the resolves", || {
        firing(&alerts.lock().unwrap(), Status::Resolved) == 2
    })
    .await;

    // A hang past the timeout fails the same way.
    fake.lock().unwrap().mode = Some(Mode::Hang);
    eventually("LimitSourceFailing again", || {
        firing(&alerts.lock().unwrap(), Status::Firing) == 4
    })
    .await;
    assert_eq!(rpm_of("anthropic-admin", "claude-haiku-4-5"), Some(100));

    // Shutdown stops and joins every source's task.
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(2), poller)
        .await
        .expect("run returns at shutdown")
        .unwrap();

    let exposition = {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    };
    for want in [
        "ratewarden_limit_source_polls_total{source=\"openai-admin\",org=\"acme\",result=\"success\"}",
        "ratewarden_limit_source_polls_total{source=\"anthropic-admin\",org=\"acme\",result=\"error\"}",
        "ratewarden_limit_source_changes_total{source=\"openai-admin\",org=\"acme\"} 3",
        "ratewarden_limit_source_changes_total{source=\"anthropic-admin\",org=\"acme\"} 2",
        "ratewarden_limit_source_last_success_timestamp_seconds{source=\"openai-admin\",org=\"acme\"}",
    ] {
        assert!(exposition.contains(want), "{want}\n{exposition}");
    }
    let text = logs.text();
    assert!(text.contains("limit source poll failed"), "{text}");
    for (what, haystack) in [("log", &text), ("metrics", &exposition)] {
        assert!(
            !haystack.contains(KEY) && !haystack.contains("THE-SECRET"),
            "the key in the {what}"
        );
    }
    let a = format!("{:?}", alerts.lock().unwrap());
    assert!(!a.contains(KEY), "the key in an alert");
}

/// A poll that runs longer than `failing_after` (a slow admin API, many pages): the alert
/// fires while it still runs, not when it ends.
#[tokio::test]
async fn failing_fires_while_a_slow_poll_still_runs() {
    let (base, fake) = fake_admin_api().await;
    fake.lock().unwrap().mode = Some(Mode::Hang);
    let mut s = source(
        LimitSourceKind::Openai,
        LimitScope::Project("proj_1".into()),
        &base,
    );
    // The hang (5 s) is within the timeout; failing_after (700 ms) is far shorter.
    s.config.timeout_ms = 10_000;
    let mut registry = prometheus_client::registry::Registry::with_prefix("ratewarden");
    let metrics = LimitSourceMetrics::register(&mut registry);
    let alerts: Arc<Mutex<Vec<Transition>>> = Arc::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let poller = tokio::spawn(run(
        vec![s],
        client(),
        Arc::new(SystemClock),
        metrics,
        |_| {},
        {
            let alerts = alerts.clone();
            move |t| alerts.lock().unwrap().push(t)
        },
        async {
            let _ = stopped.await;
        },
    ));
    eventually("LimitSourceFailing during the poll", || {
        alerts
            .lock()
            .unwrap()
            .iter()
            .any(|t| t.alert == AlertName::LimitSourceFailing && t.status == Status::Firing)
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "fired after {:?}, not while the 5 s poll ran",
        started.elapsed()
    );
    let _ = stop.send(());
    poller.await.unwrap();
}

mod common;

/// The daemon itself: a project's limits imported at start into its model scopes (shown as
/// `openai-admin` in `/v1/usage` and `status`), followed after a change, kept through a 500
/// that fires `LimitSourceFailing` (in `/v1/alerts`, the log and `alerts_firing`), resolved
/// by the next good poll; the key in no log line, stored file or API answer.
#[test]
fn the_daemon_puts_the_source_limits_in_force_and_never_shows_the_key() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (base, fake) = rt.block_on(fake_admin_api());
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[tiers.openai]
rpm = 1000
[[tiers.openai.models]]
match = ["gpt-4o", "gpt-4o-2024-*"]
rpm = 100
tpm = 1000
[[orgs]]
id = "acme"
tier = "openai"
[[limit_sources]]
kind = "openai"
admin_key_env = "RW_TEST_OPENAI_ADMIN_KEY"
project_id = "proj_1"
org = "acme"
base_url = "{base}"
interval = "5s"
failing_after = "6s"
timeout = "1s"
"#
    );
    let d = common::Daemon::start(dir.path(), &config, &[("RW_TEST_OPENAI_ADMIN_KEY", KEY)]);
    let get = |path: &str| -> serde_json::Value {
        let (status, body) = common::http("GET", &format!("{}{path}", d.base), &[], b"").unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    let scope = |name: &str| -> Option<serde_json::Value> {
        let usage = get("/v1/usage");
        let acme = usage["orgs"]
            .as_array()?
            .iter()
            .find(|o| o["org"] == "acme")?
            .clone();
        acme["models"]
            .as_array()?
            .iter()
            .find(|m| m["model"] == name)
            .cloned()
    };
    // Imported at start: the configured gpt-4o scope takes the project's values, dall-e-3
    // (in no configured scope) becomes a scope of its own.
    let gpt = common::eventually(10, || scope("gpt-4o").filter(|m| m["limits"]["rpm"] == 500))
        .expect("the project's gpt-4o limits in force");
    assert_eq!(gpt["limits"]["tpm"], 30000);
    assert_eq!(gpt["sources"]["rpm"], "openai-admin");
    assert_eq!(gpt["limits"]["batch_queue_tokens"], 90000);
    let dalle = scope("dall-e-3").expect("dall-e-3 added");
    assert_eq!(dalle["limits"]["ipm"], 5);
    let status = common::run(&["status", "--server", &d.base], dir.path());
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("source openai-admin"), "{text}");

    // A request of a dated gpt-4o id counts in the scope whose limits the source set.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let (code, answer) = d.post_events(&format!(
        r#"{{"ts":{now},"org":"acme","model":"gpt-4o-2024-08-06","status":200,"tokens":300}}"#
    ));
    assert_eq!(code, 202, "{answer}");
    assert_eq!(
        common::metric(
            &d.base,
            r#"ratewarden_utilization_ratio{org="acme",model="gpt-4o",dimension="tpm"}"#
        ),
        Some(0.01)
    );

    // The provider raises the limits: the next poll follows, logs and counts the change.
    fake.lock().unwrap().version = 2;
    common::eventually(15, || {
        scope("gpt-4o").filter(|m| m["limits"]["rpm"] == 1000)
    })
    .expect("the changed limit followed");
    assert!(
        common::metric(
            &d.base,
            r#"ratewarden_limit_source_changes_total{source="openai-admin",org="acme"}"#
        )
        .is_some_and(|n| n >= 1.0)
    );

    // A 500 keeps the last values and fires LimitSourceFailing once no poll succeeded for
    // failing_after.
    fake.lock().unwrap().mode = Some(Mode::Fail);
    let firing = common::eventually(20, || {
        get("/v1/alerts")["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["alert"] == "LimitSourceFailing")
            .cloned()
    })
    .expect("LimitSourceFailing fires");
    assert_eq!(firing["org"], "acme");
    assert_eq!(
        scope("gpt-4o").unwrap()["limits"]["rpm"],
        1000,
        "the last good values"
    );
    assert!(
        common::metric(
            &d.base,
            r#"ratewarden_alerts_firing{org="acme",alert="LimitSourceFailing",dimension="",severity="warning"}"#
        ) == Some(1.0)
    );
    fake.lock().unwrap().mode = None;
    common::eventually(15, || {
        let alerts = get("/v1/alerts");
        let any = alerts["alerts"]
            .as_array()?
            .iter()
            .any(|a| a["alert"] == "LimitSourceFailing");
        (!any).then_some(())
    })
    .expect("a good poll resolves it");

    // The key: sent to the provider, and nowhere else.
    assert!(fake.lock().unwrap().seen.iter().all(|(_, k)| k == KEY));
    let answers = [
        common::http("GET", &format!("{}/metrics", d.base), &[], b"")
            .unwrap()
            .1,
        get("/v1/usage").to_string(),
        get("/v1/alerts").to_string(),
        d.log_text(),
    ];
    for a in &answers {
        assert!(
            !a.contains(KEY) && !a.contains("THE-SECRET"),
            "the key leaked: {a}"
        );
    }
    let mut d = d;
    assert_eq!(d.terminate(Duration::from_secs(15)), Some(0));
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        let found = bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes());
        assert!(!found, "the key is in {}", entry.display());
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
