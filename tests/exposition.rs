//! `/metrics` exposition: which series an org gets, and what `[metrics]` switches off.
//! Driven through the library (live state, tracker, metrics registry) with an injected clock.

use std::sync::Arc;

use ratewarden::clock::ManualClock;
use ratewarden::config::Config;
use ratewarden::events::{ParseContext, parse_event};
use ratewarden::live::Live;
use ratewarden::metrics::Metrics;
use ratewarden::tracker::Tracker;

const NOW: i64 = 1_795_806_000_000;

/// The exposition after feeding `lines` (native JSON events) to a fresh state for `config`.
fn exposition(config: &str, lines: &[String]) -> String {
    let config = Config::parse(config, "t.toml").unwrap();
    let live = Live::in_memory(Tracker::new(&config), Arc::new(ManualClock::new(NOW)));
    let ctx = ParseContext::default();
    let mut events: Vec<_> = lines
        .iter()
        .map(|l| parse_event(l.as_bytes(), &ctx).unwrap().event)
        .collect();
    live.apply(&mut events, NOW, None);
    Metrics::new(Arc::new(live), &config).encode(true).unwrap()
}

/// Sample lines (not comments) that mention `org="name"`.
fn series_of<'a>(text: &'a str, org: &str) -> Vec<&'a str> {
    let label = format!("org=\"{org}\"");
    text.lines()
        .filter(|l| !l.starts_with('#') && l.contains(&label))
        .collect()
}

fn successes(org: &str, apps: usize) -> Vec<String> {
    (0..apps)
        .map(|a| format!(r#"{{"org":"{org}","app":"app-{a}","ts":{NOW},"status":200}}"#))
        .collect()
}

#[test]
fn an_org_with_only_successful_requests_has_few_series() {
    let text = exposition(
        "[tiers.t]\nrpm = 60\ndaily = 1000\nconcurrency = 5\n[[orgs]]\nid = \"acme\"\ntier = \"t\"\n",
        &successes("acme", 3),
    );
    let series = series_of(&text, "acme");
    assert!(
        series.len() <= 15,
        "{} series:\n{}",
        series.len(),
        series.join("\n")
    );
    // What it does say: each app's successes, its usage and limits.
    assert_eq!(
        series
            .iter()
            .filter(|l| l.starts_with("ratewarden_requests_total{"))
            .count(),
        3
    );
    for absent in [
        "ratewarden_job_duration_seconds",
        "ratewarden_jobs_in_flight",
        "ratewarden_jobs_finished_total",
        "ratewarden_rate_limited_total",
        "ratewarden_retry_violations_total",
        r#"dimension="concurrency""#,
        r#"outcome="rate_limited""#,
    ] {
        assert!(
            !series.iter().any(|l| l.contains(absent)),
            "{absent} says nothing yet:\n{}",
            series.join("\n")
        );
    }
    assert!(
        series
            .iter()
            .any(|l| l.starts_with("ratewarden_bursts_total{"))
    );
}

#[test]
fn series_appear_once_they_have_something_to_say() {
    let mut lines = successes("acme", 1);
    lines.push(format!(
        r#"{{"org":"acme","app":"app-0","ts":{NOW},"status":429}}"#
    ));
    lines.push(format!(
        r#"{{"org":"acme","kind":"job_started","job_id":"j1","ts":{}}}"#,
        NOW - 60_000
    ));
    lines.push(format!(
        r#"{{"org":"acme","kind":"job_completed","job_id":"j1","ts":{NOW}}}"#
    ));
    let text = exposition("", &lines);
    let series = series_of(&text, "acme").join("\n");
    // A 429: every cause from zero, and retry violations (possible from now on).
    assert_eq!(series.matches("ratewarden_rate_limited_total{").count(), 6);
    assert!(series.contains("ratewarden_retry_violations_total{"));
    // A job: the job series, the concurrency dimension and the histogram.
    assert!(series.contains(r#"ratewarden_jobs_in_flight{org="acme"} 0"#));
    assert!(series.contains(r#"ratewarden_usage{org="acme",dimension="concurrency"} 0"#));
    assert!(series.contains(r#"ratewarden_job_duration_seconds_count{org="acme"} 1"#));
}

#[test]
fn metrics_section_switches_per_app_series_and_the_histogram_off() {
    let mut lines = successes("acme", 3);
    lines.push(format!(
        r#"{{"org":"acme","app":"app-1","ts":{NOW},"status":429}}"#
    ));
    lines.push(format!(
        r#"{{"org":"acme","kind":"job_completed","job_id":"j1","ts":{NOW}}}"#
    ));
    lines.push(format!(
        r#"{{"org":"acme","kind":"job_started","job_id":"j2","ts":{}}}"#,
        NOW - 1_000
    ));
    lines.push(format!(
        r#"{{"org":"acme","kind":"job_completed","job_id":"j2","ts":{NOW}}}"#
    ));
    let on = exposition("", &lines);
    assert!(
        on.contains(r#"ratewarden_requests_total{org="acme",app="app-0",outcome="success"} 1"#)
    );
    assert!(on.contains("ratewarden_job_duration_seconds_bucket{"));
    let off = exposition(
        "[metrics]\nper_app = false\njob_histogram = false\n",
        &lines,
    );
    assert!(!off.contains("app=\""), "no app label:\n{off}");
    // Summed over the org's apps.
    assert!(off.contains(r#"ratewarden_requests_total{org="acme",outcome="success"} 3"#));
    assert!(off.contains(r#"ratewarden_requests_total{org="acme",outcome="rate_limited"} 1"#));
    assert_eq!(
        off.matches(r#"ratewarden_rate_limited_total{org="acme",cause="#)
            .count(),
        6,
        "{off}"
    );
    assert!(off.contains(r#"ratewarden_retry_violations_total{org="acme"} 0"#));
    assert!(!off.contains("ratewarden_job_duration_seconds"));
    // The job counters stay.
    assert!(off.contains(r#"ratewarden_jobs_finished_total{org="acme",outcome="completed"} 1"#));
}

#[test]
fn an_unknown_metrics_setting_is_refused() {
    let err = Config::parse("[metrics]\nper_apps = false\n", "t.toml").unwrap_err();
    assert!(err.to_string().contains("per_apps"), "{err}");
}

#[test]
fn job_duration_buckets_are_set_by_the_config() {
    let lines = vec![
        format!(
            r#"{{"org":"acme","kind":"job_started","job_id":"j1","ts":{}}}"#,
            NOW - 45_000
        ),
        format!(r#"{{"org":"acme","kind":"job_completed","job_id":"j1","ts":{NOW}}}"#),
    ];
    let text = exposition(
        "[metrics]\njob_duration_buckets = [10, 60, 600.5]\n",
        &lines,
    );
    let buckets: Vec<&str> = series_of(&text, "acme")
        .into_iter()
        .filter(|l| l.starts_with("ratewarden_job_duration_seconds_bucket"))
        .collect();
    assert_eq!(
        buckets,
        [
            r#"ratewarden_job_duration_seconds_bucket{org="acme",le="10"} 0"#,
            r#"ratewarden_job_duration_seconds_bucket{org="acme",le="60"} 1"#,
            r#"ratewarden_job_duration_seconds_bucket{org="acme",le="600.5"} 1"#,
            r#"ratewarden_job_duration_seconds_bucket{org="acme",le="+Inf"} 1"#,
        ]
    );
    for (bad, says) in [
        ("[]", "1 to 30"),
        ("[5, 1]", "strictly increasing"),
        ("[1, 1]", "strictly increasing"),
        ("[0, 1]", "positive"),
        ("[-1]", "positive"),
        ("[\"5s\"]", "invalid type"),
    ] {
        let err = Config::parse(
            &format!("[metrics]\njob_duration_buckets = {bad}\n"),
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(says) && err.contains("t.toml:2"),
            "{bad}: {err}"
        );
    }
}
