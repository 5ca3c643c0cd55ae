//! The live status page in a real browser: Debian's headless Chromium (installed by
//! `scripts/test` when missing) against a running daemon with traffic. The page's DOM shows
//! the numbers `/v1/usage` gives, an alert that fires appears without a reload, it loads
//! nothing but from the daemon, it stays usable at 1 000 orgs and at phone width, and
//! screenshots are written under `target/screenshots/`.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Daemon, eventually, http};
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};
use serde_json::Value;

const ADMIN: &str = "page-admin-token";

fn chromium() -> PathBuf {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("Chromium (scripts/test installs Debian's chromium)")
}

fn browser(width: u32, height: u32) -> Browser {
    Browser::new(
        LaunchOptions::default_builder()
            .path(Some(chromium()))
            .sandbox(false)
            .window_size(Some((width, height)))
            .idle_browser_timeout(Duration::from_secs(120))
            .build()
            .unwrap(),
    )
    .expect("Chromium starts")
}

/// The status page of `d` in a new tab of `b`, the admin token given in its form (and the
/// filter set to `filter`), once globex's card is drawn.
fn open_page(b: &Browser, d: &Daemon, filter: &str) -> std::sync::Arc<Tab> {
    let tab = b.new_tab().unwrap();
    tab.set_default_timeout(Duration::from_secs(20));
    tab.navigate_to(&format!("{}/", d.base))
        .unwrap()
        .wait_until_navigated()
        .unwrap();
    tab.wait_for_element("#login input#token").unwrap();
    js(
        &tab,
        &format!(
            "document.getElementById('filter').value = '{filter}'; document.getElementById('token').value = '{ADMIN}'; document.getElementById('login').requestSubmit(); 1"
        ),
    );
    tab.wait_for_element("[data-org=\"globex\"] [data-dim=\"rpm\"]")
        .unwrap();
    tab
}

/// The value of a JavaScript expression in the page.
fn js(tab: &Tab, expr: &str) -> Value {
    tab.evaluate(expr, false)
        .unwrap_or_else(|e| panic!("{expr}: {e}"))
        .value
        .unwrap_or(Value::Null)
}

fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn post(d: &Daemon, lines: &[String]) {
    let (status, body) = http(
        "POST",
        &format!("{}/v1/events", d.base),
        &[("content-type", "application/x-ndjson")],
        (lines.join("\n") + "\n").as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 202, "{body}");
}

fn event(org: &str, secs_ago: i64, extra: &str) -> String {
    let ts = chrono::Utc::now() - chrono::Duration::seconds(secs_ago);
    format!(
        "{{\"ts\":\"{}\",\"org\":\"{org}\",\"app\":\"bot\"{extra}}}",
        ts.to_rfc3339()
    )
}

fn usage(d: &Daemon) -> Value {
    let (status, body) = http(
        "GET",
        &format!("{}/v1/usage", d.base),
        &[("authorization", &format!("Bearer {ADMIN}"))],
        b"",
    )
    .unwrap();
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

/// Each org's dimensions as the page shows them: `{org: {dim: [usage, limit]}}`, read from
/// the `data-` attributes and checked against the visible text.
const DOM_NUMBERS: &str = r#"(() => {
  const out = {};
  for (const card of document.querySelectorAll('#orgs .card')) {
    const dims = {};
    for (const row of card.querySelectorAll('[data-dim]')) {
      const text = row.querySelector('.value').textContent;
      const u = Number(row.dataset.usage), l = row.dataset.limit === '' ? null : Number(row.dataset.limit);
      if (!text.startsWith(l === null ? `${u} (no limit)` : `${u} / ${l}`)) return 'text differs: ' + text;
      dims[row.dataset.dim] = [u, l];
    }
    out[card.dataset.org] = dims;
  }
  return JSON.stringify(out);
})()"#;

/// The same shape from `/v1/usage`, for `orgs`.
fn usage_numbers(u: &Value, orgs: &[&str]) -> Value {
    let mut out = serde_json::Map::new();
    for o in u["orgs"].as_array().unwrap() {
        let name = o["org"].as_str().unwrap();
        if !orgs.contains(&name) {
            continue;
        }
        let mut dims = serde_json::Map::new();
        for (d, v) in o["usage"].as_object().unwrap() {
            dims.insert(d.clone(), serde_json::json!([v, o["limits"][d]]));
        }
        out.insert(name.to_string(), Value::Object(dims));
    }
    Value::Object(out)
}

#[test]
fn the_status_page_shows_usage_alerts_appear_live_and_it_works_at_scale_and_on_a_phone() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        dir.path(),
        "[storage]\npath = \"store\"\n[[orgs]]\nid = \"acme\"\ntier = \"pro\"\n[[orgs]]\nid = \"globex\"\ntier = \"plus\"\n",
        &[("RATEWARDEN_ADMIN_TOKEN", ADMIN)],
    );
    let mut lines: Vec<String> = (0..12)
        .map(|i| {
            event(
                "acme",
                2 + i,
                ",\"kind\":\"request\",\"status\":200,\"tokens\":250",
            )
        })
        .collect();
    lines.extend((0..3).map(|i| event("globex", 3 + i, ",\"kind\":\"request\",\"status\":200")));
    post(&d, &lines);

    let b = browser(1200, 900);
    // The admin token is asked for once and kept in the tab's session storage.
    let tab = open_page(&b, &d, "");
    assert_eq!(
        js(&tab, "sessionStorage.getItem('ratewarden.token')"),
        Value::String(ADMIN.into())
    );

    // The DOM shows /v1/usage's numbers for both orgs (read again until a refresh has
    // caught up: the rpm windows move with the clock).
    let matched = eventually(15, || {
        let want = usage_numbers(&usage(&d), &["acme", "globex"]);
        let got: Value = serde_json::from_str(js(&tab, DOM_NUMBERS).as_str()?).ok()?;
        let got = usage_numbers(
            &serde_json::json!({"orgs": got.as_object()?.iter().map(|(org, dims)| {
                serde_json::json!({"org": org,
                    "usage": dims.as_object().unwrap().iter().map(|(d, v)| (d.clone(), v[0].clone())).collect::<serde_json::Map<_, _>>(),
                    "limits": dims.as_object().unwrap().iter().filter(|(_, v)| !v[1].is_null()).map(|(d, v)| (d.clone(), v[1].clone())).collect::<serde_json::Map<_, _>>()})
            }).collect::<Vec<_>>()}),
            &["acme", "globex"],
        );
        (got == want).then_some(())
    });
    assert!(
        matched.is_some(),
        "page {} vs usage {}",
        js(&tab, DOM_NUMBERS),
        usage_numbers(&usage(&d), &["acme", "globex"])
    );
    assert_eq!(
        js(
            &tab,
            "document.querySelector('[data-org=acme] [data-dim=rpm] .value').textContent.includes('12 / 50')"
        ),
        Value::Bool(true)
    );
    // What the provider's headers report shows beside the org's own numbers.
    post(
        &d,
        &[event(
            "acme",
            1,
            ",\"kind\":\"request\",\"status\":200,\"headers\":{\"x-ratelimit-limit-requests\":\"60\",\"x-ratelimit-remaining-requests\":\"40\",\"x-ratelimit-reset-requests\":\"50s\"}",
        )],
    );
    let upstream = eventually(15, || {
        let text = js(
            &tab,
            "document.querySelector('[data-org=acme] [data-dim=rpm] .upstream').textContent",
        );
        text.as_str()
            .is_some_and(|t| t.contains("upstream limit 60") && t.contains("40 left upstream"))
            .then_some(text)
    });
    assert!(
        upstream.is_some(),
        "{}",
        js(
            &tab,
            "document.querySelector('[data-org=acme] [data-dim=rpm]').textContent"
        )
    );
    // The rpm chart is drawn (uPlot's canvas) from the last hour's per-minute counts.
    assert_eq!(
        js(
            &tab,
            "!!document.querySelector('[data-org=acme] .chart canvas')"
        ),
        Value::Bool(true)
    );

    // An alert that fires shows up without a reload: globex (plus: 1 concurrent job) starts
    // a job, UsageHigh on concurrency goes critical.
    js(&tab, "window.__sameDocument = true; 1");
    assert_eq!(
        js(
            &tab,
            "document.querySelectorAll('[data-org=globex] li[data-alert=UsageHigh]').length"
        ),
        serde_json::json!(0)
    );
    post(
        &d,
        &[event(
            "globex",
            0,
            ",\"kind\":\"job_started\",\"job_id\":\"render-1\"",
        )],
    );
    let appeared = eventually(15, || {
        (js(
            &tab,
            "!!document.querySelector('[data-org=globex] li[data-alert=UsageHigh].critical')",
        ) == Value::Bool(true))
        .then_some(())
    });
    assert!(appeared.is_some(), "the alert appeared on the page");
    assert_eq!(
        js(&tab, "window.__sameDocument === true"),
        Value::Bool(true),
        "no reload happened"
    );
    assert_eq!(
        js(
            &tab,
            "document.querySelector('[data-org=globex] .jobs .in-flight').textContent"
        ),
        Value::String("1".into())
    );
    // Nothing was loaded from anywhere but the daemon.
    let origin = d.base.clone();
    let foreign = js(
        &tab,
        &format!(
            "JSON.stringify(performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith('{origin}')))"
        ),
    );
    assert_eq!(foreign, Value::String("[]".into()));
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .unwrap();
    std::fs::write(shots().join("status-page.png"), png).unwrap();

    // 1 000 orgs more: the page keeps up, sorts by utilization and filters.
    let many: Vec<String> = (0..1000)
        .flat_map(|i| {
            let n = 1 + i % 4;
            (0..n).map(move |k| {
                event(
                    &format!("tenant-{i:04}"),
                    1 + k,
                    ",\"kind\":\"request\",\"status\":200",
                )
            })
        })
        .collect();
    for chunk in many.chunks(1000) {
        post(&d, chunk);
    }
    let counted = eventually(20, || {
        js(&tab, "document.getElementById('summary').textContent")
            .as_str()?
            .starts_with("1002 orgs")
            .then_some(())
    });
    assert!(
        counted.is_some(),
        "{}",
        js(&tab, "document.getElementById('summary').textContent")
    );
    assert_eq!(
        js(&tab, "document.querySelectorAll('#orgs .card').length"),
        serde_json::json!(200),
        "a bounded number of cards is drawn"
    );
    assert_eq!(
        js(&tab, "document.querySelector('#orgs .card').dataset.org"),
        Value::String("globex".into()),
        "sorted by utilization: globex (100 % of its concurrency) first"
    );
    js(
        &tab,
        "const f = document.getElementById('filter'); f.value = 'tenant-012'; f.dispatchEvent(new Event('input')); 1",
    );
    let filtered = eventually(5, || {
        let shown = js(
            &tab,
            "[...document.querySelectorAll('#orgs .card')].map(c => c.dataset.org).sort().join()",
        );
        let want = (0..10)
            .map(|k| format!("tenant-012{k}"))
            .collect::<Vec<_>>()
            .join(",");
        (shown.as_str() == Some(want.as_str())).then_some(())
    });
    assert!(
        filtered.is_some(),
        "the filter narrows the cards to tenant-0120..9"
    );
    drop(tab);
    drop(b);

    // A phone-width screen: one column, nothing wider than the screen.
    let phone = browser(390, 844);
    let tab = open_page(&phone, &d, "globex");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        js(
            &tab,
            "document.documentElement.scrollWidth <= window.innerWidth && document.querySelector('#orgs .card').getBoundingClientRect().width <= window.innerWidth"
        ),
        Value::Bool(true),
        "no horizontal scrolling at {} px",
        js(&tab, "window.innerWidth")
    );
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .unwrap();
    std::fs::write(shots().join("status-page-phone.png"), png).unwrap();
}

/// `replay --html` on the test fixtures: the file opens from disk in Chromium with no network
/// request, draws the charts of every org, and its overview holds `replay --json`'s numbers.
#[test]
fn the_replay_html_report_opens_offline_with_a_chart_per_org_and_the_json_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    // Two fixtures and a generated hour with 429s, bursts and a stuck job, so every chart
    // has something on it.
    let mut hour = String::new();
    for m in 0..60 {
        for k in 0..(3 + (m % 7)) {
            let status = if (20..25).contains(&m) && k % 2 == 0 {
                429
            } else {
                200
            };
            hour.push_str(&format!(
                "{{\"ts\":\"2026-11-02T11:{m:02}:{:02}Z\",\"org\":\"gamma\",\"app\":\"bot\",\"status\":{status}}}\n",
                k * 5
            ));
        }
    }
    hour.push_str("{\"ts\":\"2026-11-02T11:05:00Z\",\"org\":\"gamma\",\"kind\":\"job_started\",\"job_id\":\"stuck-1\"}\n");
    std::fs::write(dir.path().join("hour.jsonl"), hour).unwrap();
    let inputs = [
        fixtures.join("real-world.jsonl").display().to_string(),
        fixtures.join("mapped.jsonl").display().to_string(),
        dir.path().join("hour.jsonl").display().to_string(),
    ];
    let report = dir.path().join("report.html");
    let mut args = vec!["replay", "--json", "--html", report.to_str().unwrap()];
    args.extend(inputs.iter().map(String::as_str));
    let out = common::run(&args, dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Without --json the same file is written beside the text report.
    let plain = dir.path().join("plain.html");
    let mut args = vec!["replay", "--html", plain.to_str().unwrap()];
    args.extend(inputs.iter().map(String::as_str));
    assert!(common::run(&args, dir.path()).status.success());
    assert!(std::fs::metadata(&plain).unwrap().len() > 50_000);
    // The report never replaces one of its inputs, and goes through a symlink to its target.
    let before = std::fs::read(&inputs[2]).unwrap();
    let out = common::run(&["replay", "--html", &inputs[2], &inputs[2]], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("also an input"));
    assert_eq!(std::fs::read(&inputs[2]).unwrap(), before);
    std::os::unix::fs::symlink("target.html", dir.path().join("link.html")).unwrap();
    assert!(
        common::run(&["replay", "--html", "link.html", &inputs[0]], dir.path())
            .status
            .success()
    );
    assert!(
        std::fs::symlink_metadata(dir.path().join("link.html"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        std::fs::metadata(dir.path().join("target.html"))
            .unwrap()
            .len()
            > 50_000
    );

    let b = browser(1200, 1000);
    let tab = b.new_tab().unwrap();
    tab.set_default_timeout(Duration::from_secs(20));
    tab.navigate_to(&format!("file://{}", report.display()))
        .unwrap()
        .wait_until_navigated()
        .unwrap();
    tab.wait_for_element("body[data-ready=true]").unwrap();
    assert_eq!(
        js(&tab, "performance.getEntriesByType('resource').length"),
        serde_json::json!(0),
        "nothing is fetched"
    );
    let orgs = json["orgs"].as_array().unwrap();
    assert!(orgs.len() >= 3, "{json}");
    for o in orgs {
        let name = o["org"].as_str().unwrap();
        let charts = js(
            &tab,
            &format!(
                "document.querySelectorAll('section.org[data-org=\"{name}\"] .chart canvas').length"
            ),
        );
        assert_eq!(
            charts,
            serde_json::json!(3),
            "{name}: rpm, rolling 24 h and 429 charts"
        );
        for k in [
            "requests",
            "peak_rpm",
            "peak_daily",
            "peak_concurrency",
            "bursts",
            "stuck_jobs",
            "retry_violations",
        ] {
            let shown = js(
                &tab,
                &format!(
                    "document.querySelector('#overview tr[data-org=\"{name}\"] [data-k={k}]').textContent"
                ),
            );
            assert_eq!(shown, Value::String(o[k].to_string()), "{name} {k}");
        }
        let total: u64 = o["rate_limited"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        let shown = js(
            &tab,
            &format!(
                "document.querySelector('#overview tr[data-org=\"{name}\"] [data-k=rate_limited]').textContent"
            ),
        );
        assert_eq!(shown, Value::String(total.to_string()), "{name} 429s");
        // The timeline adds up to the report: its per-minute requests and 429s sum to the
        // org's totals.
        let sums = js(
            &tab,
            &format!(
                "(() => {{ const t = JSON.parse(document.getElementById('data').textContent).timelines['{name}']; const s = (a) => a.reduce((x, y) => x + y, 0); return [s(t.requests), Object.values(t.rate_limited).map(s).reduce((x, y) => x + y, 0)].join(); }})()"
            ),
        );
        assert_eq!(
            sums,
            Value::String(format!("{},{total}", o["requests"])),
            "{name} timeline sums"
        );
    }
    let alerts = json["alerts"].as_array().unwrap().len();
    assert_eq!(
        js(
            &tab,
            "document.querySelectorAll('details tr[data-alert]').length"
        ),
        serde_json::json!(alerts),
        "every alert transition is in a timeline"
    );
    let gamma = js(
        &tab,
        "document.querySelector('section.org[data-org=gamma]').scrollIntoView(); 1",
    );
    assert_eq!(gamma, serde_json::json!(1));
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .unwrap();
    std::fs::write(shots().join("replay-report.png"), png).unwrap();
}
