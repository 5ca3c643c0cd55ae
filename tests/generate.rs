//! `ratewarden generate rules|dashboard`: with no config the output is the shipped files, byte
//! for byte; for a config with two tiers and orgs with their own thresholds, the rules pass
//! `promtool check rules` and a `promtool test rules` written here (each org alerts at its own
//! thresholds), and the dashboard passes the checks the shipped one does.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn stdout_of(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8 output")
}

/// `ratewarden generate ARGS...` in `dir`; its standard output.
fn generate(args: &[&str], dir: &Path) -> String {
    let mut all = vec!["generate"];
    all.extend_from_slice(args);
    stdout_of(&common::run(&all, dir), &all.join(" "))
}

#[test]
fn with_no_config_the_output_is_the_shipped_files() {
    let dir = tempfile::tempdir().unwrap();
    let compose = root().join("deploy/compose/ratewarden.toml");
    let compose = compose.to_str().unwrap();
    for (args, shipped) in [
        (&["rules"][..], "alerts/ratewarden.rules.yml"),
        (&["dashboard"][..], "dashboards/ratewarden.json"),
        (
            &["dashboard", "--datasource", "prometheus"][..],
            "deploy/compose/grafana/dashboards/ratewarden.json",
        ),
    ] {
        let want = std::fs::read_to_string(root().join(shipped)).unwrap();
        let got = generate(args, dir.path());
        assert!(
            got == want,
            "{shipped} is not what `ratewarden generate {}` writes; run\n  \
             cargo run -q -- generate {} --output {shipped}\n\
             and python3 deploy/kubernetes/generate-prometheusrule.py after the rules",
            args.join(" "),
            args.join(" ")
        );
        // The Compose stack loads these files: they must fit its config as well.
        let mut with_config = args.to_vec();
        with_config.extend(["--config", compose]);
        assert!(
            generate(&with_config, dir.path()) == want,
            "deploy/compose/ratewarden.toml needs other files than {shipped}"
        );
        // --output writes the same bytes.
        let file = dir.path().join("out");
        let mut to_file = args.to_vec();
        to_file.extend(["--output", file.to_str().unwrap()]);
        assert_eq!(generate(&to_file, dir.path()), "");
        assert!(std::fs::read_to_string(&file).unwrap() == want);
    }
}

#[test]
fn a_bad_config_is_told_like_check_config_does() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[tiers.small]\nrpm = \"ten\"\n").unwrap();
    for what in ["rules", "dashboard"] {
        let out = common::run(
            &["generate", what, "--config", path.to_str().unwrap()],
            dir.path(),
        );
        assert_eq!(out.status.code(), Some(2));
        assert!(out.stdout.is_empty());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with(&format!("{}:2:7: ", path.display())),
            "{err}"
        );
    }
}

/// Two tiers; `big.co` has its own thresholds and `bigxco` (which `big.co` as an unescaped
/// regex would match) has not; an org whose name holds every character that could break
/// YAML or PromQL has a third pair.
const TWO_TIERS: &str = r#"
[limits]
default_tier = "small"

[tiers.small]
rpm = 10
concurrency = 2

[tiers.big]
rpm = 100
daily = 5000
tpm = 100000

[[orgs]]
id = "big.co"
tier = "big"
thresholds = [0.5, 0.8]

[[orgs]]
id = "bigxco"
tier = "big"

[[orgs]]
id = "tiny"

[[orgs]]
id = 'we"ird \ #|: é'
thresholds = [0.6, 0.95]
"#;

/// How the rules file writes the weird org in a promtool series selector and in YAML.
const WEIRD_SERIES: &str = r#"we\"ird \\ #|: é"#;
const WEIRD_YAML: &str = r#""we\"ird \\ #|: é""#;

fn usage_alert(severity: &str, org: &str, dim: &str, percent: u32) -> String {
    let (summary, description) = (
        format!("{org} at {percent}% of its {dim} limit"),
        if severity == "warning" {
            format!(
                "{org} has used {percent}% of its {dim} limit for a minute; 429s follow at 100 %."
            )
        } else {
            format!(
                "{org} is about to be rate limited on {dim}: {percent}% of the limit is in use."
            )
        },
    );
    format!(
        "          - exp_labels: {{severity: {severity}, org: {}, dimension: {dim}}}
            exp_annotations:
              summary: {}
              description: {}
              runbook_url: https://github.com/ratewarden/ratewarden/blob/main/README.md#runbook-usagehigh
",
        if org.contains('"') { WEIRD_YAML } else { org },
        Value::from(summary),
        Value::from(description),
    )
}

/// promtool cases for the rules of [`TWO_TIERS`].
fn two_tier_tests() -> String {
    let weird = "we\"ird \\ #|: é";
    format!(
        r#"rule_files:
  - rules.yml

evaluation_interval: 30s

tests:
  - name: big.co warns at its own 50 %; bigxco and tiny at 55 % do not
    interval: 30s
    input_series:
      - series: 'ratewarden_utilization_ratio{{org="big.co",dimension="rpm"}}'
        values: '0.55x10'
      - series: 'ratewarden_utilization_ratio{{org="bigxco",dimension="rpm"}}'
        values: '0.55x10'
      - series: 'ratewarden_utilization_ratio{{org="tiny",dimension="rpm"}}'
        values: '0.55x10'
    alert_rule_test:
      - eval_time: 2m
        alertname: RatewardenUsageHigh
        exp_alerts:
{big_warn}
  - name: at 85 % big.co is critical (its 80 %), bigxco only warns (the default 90 %)
    interval: 30s
    input_series:
      - series: 'ratewarden_utilization_ratio{{org="big.co",dimension="tpm"}}'
        values: '0.85x10'
      - series: 'ratewarden_utilization_ratio{{org="bigxco",dimension="tpm"}}'
        values: '0.85x10'
    alert_rule_test:
      - eval_time: 2m
        alertname: RatewardenUsageHigh
        exp_alerts:
{big_crit}{bigx_warn}
  - name: the third pair holds for its org only, whatever its name holds
    interval: 30s
    input_series:
      - series: 'ratewarden_utilization_ratio{{org="{weird_series}",dimension="concurrency"}}'
        values: '0.62x10'
      - series: 'ratewarden_utilization_ratio{{org="{weird_series}",dimension="rpm"}}'
        values: '0.92x10'
      - series: 'ratewarden_utilization_ratio{{org="tiny",dimension="concurrency"}}'
        values: '0.92x10'
    alert_rule_test:
      - eval_time: 2m
        alertname: RatewardenUsageHigh
        exp_alerts:
{weird_warn}{weird_rpm}{tiny_crit}
  - name: DailyQuotaExhausted, as big sets a daily limit; a model scope's series beside the org's pair with their own
    interval: 30s
    input_series:
      - series: 'ratewarden_usage{{org="big.co",dimension="daily"}}'
        values: '5000x4'
      - series: 'ratewarden_limit{{org="big.co",dimension="daily"}}'
        values: '5000x4'
      - series: 'ratewarden_usage{{org="big.co",model="gpt-image-1",dimension="daily"}}'
        values: '20x4'
      - series: 'ratewarden_limit{{org="big.co",model="gpt-image-1",dimension="daily"}}'
        values: '20x4'
      - series: 'ratewarden_usage{{org="bigxco",model="gpt-image-1",dimension="daily"}}'
        values: '3x4'
      - series: 'ratewarden_limit{{org="bigxco",model="gpt-image-1",dimension="daily"}}'
        values: '20x4'
      - series: 'ratewarden_usage{{org="bigxco",dimension="daily"}}'
        values: '30x4'
      - series: 'ratewarden_limit{{org="bigxco",dimension="daily"}}'
        values: '5000x4'
    alert_rule_test:
      - eval_time: 1m
        alertname: RatewardenDailyQuotaExhausted
        exp_alerts:
          - exp_labels: {{severity: critical, org: big.co, dimension: daily}}
            exp_annotations:
              summary: "big.co has used its whole daily quota"
              description: "big.co made 5000 requests in its daily window, its daily limit; every request fails until the window frees up: old requests leave a rolling 24 h, a calendar day (daily_window = calendar) resets at its local daily_reset."
              runbook_url: https://github.com/ratewarden/ratewarden/blob/main/README.md#runbook-dailyquotaexhausted
          - exp_labels: {{severity: critical, org: big.co, model: gpt-image-1, dimension: daily}}
            exp_annotations:
              summary: "big.co gpt-image-1 has used its whole daily quota"
              description: "big.co (model gpt-image-1) made 20 requests in its daily window, its daily limit; every request fails until the window frees up: old requests leave a rolling 24 h, a calendar day (daily_window = calendar) resets at its local daily_reset."
              runbook_url: https://github.com/ratewarden/ratewarden/blob/main/README.md#runbook-dailyquotaexhausted

  - name: LimitMismatch when the upstream reports 120 rpm for big.co, configured 100
    interval: 1m
    input_series:
      - series: 'ratewarden_upstream_limit{{org="big.co",dimension="rpm"}}'
        values: '120x10'
      - series: 'ratewarden_limit{{org="big.co",dimension="rpm"}}'
        values: '100x10'
      - series: 'ratewarden_limit{{org="big.co",model="gpt-4o",dimension="rpm"}}'
        values: '30x10'
      - series: 'ratewarden_upstream_limit{{org="bigxco",dimension="rpm"}}'
        values: '100x10'
      - series: 'ratewarden_limit{{org="bigxco",dimension="rpm"}}'
        values: '100x10'
    alert_rule_test:
      - eval_time: 7m
        alertname: RatewardenLimitMismatch
        exp_alerts:
          - exp_labels: {{severity: warning, org: big.co, dimension: rpm}}
            exp_annotations:
              summary: "big.co's rpm limit is 120 upstream, not as configured"
              description: "For 5 minutes the upstream's rate-limit headers have reported 120 as the rpm limit of big.co, which differs from its configured limit: usage alerts and headroom are judged against the wrong number."
              runbook_url: https://github.com/ratewarden/ratewarden/blob/main/README.md#runbook-limitmismatch
"#,
        big_warn = usage_alert("warning", "big.co", "rpm", 55),
        big_crit = usage_alert("critical", "big.co", "tpm", 85),
        bigx_warn = usage_alert("warning", "bigxco", "tpm", 85),
        weird_series = WEIRD_SERIES,
        weird_warn = usage_alert("warning", weird, "concurrency", 62),
        weird_rpm = usage_alert("warning", weird, "rpm", 92),
        tiny_crit = usage_alert("critical", "tiny", "concurrency", 92),
    )
}

#[test]
fn rules_for_two_tiers_and_own_thresholds_pass_promtool() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("two.toml"), TWO_TIERS).unwrap();
    let rules = generate(&["rules", "--config", "two.toml"], dir.path());
    // Only the dimensions some org has a limit in: tpd is nobody's.
    assert!(
        rules.contains("limits set in rpm, daily, concurrency, tpm "),
        "{rules}"
    );
    let Some(promtool) = common::installed("promtool") else {
        eprintln!(
            "promtool is not installed: the generated rules are not checked (scripts/test installs it)"
        );
        return;
    };
    std::fs::write(dir.path().join("rules.yml"), &rules).unwrap();
    std::fs::write(dir.path().join("rules.test.yml"), two_tier_tests()).unwrap();
    let out = std::process::Command::new(&promtool)
        .args(["check", "rules", "rules.yml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        stdout_of(&out, "promtool check rules"),
        String::from_utf8_lossy(&out.stderr)
    );
    // 6 recording rules; UsageHigh twice (a branch per pair in each); DailyQuotaExhausted;
    // 13 others. "SUCCESS" also says promtool's lint (duplicate rules) found nothing.
    assert!(text.contains("SUCCESS: 22 rules found"), "{text}");
    let out = std::process::Command::new(&promtool)
        .args(["test", "rules", "rules.test.yml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool test rules:\n{}{}\nrules:\n{rules}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_dashboard_for_two_tiers_passes_the_shipped_dashboards_checks() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("two.toml"), TWO_TIERS).unwrap();
    let text = generate(&["dashboard", "--config", "two.toml"], dir.path());
    assert!(text.is_ascii(), "non-ASCII is escaped");
    let path = dir.path().join("dashboard.json");
    std::fs::write(&path, &text).unwrap();
    common::dashboard::check(&path);

    let dash: Value = serde_json::from_str(&text).unwrap();
    let panels = dash["panels"].as_array().unwrap();
    let panel = |title: &str| panels.iter().find(|p| p["title"] == title);
    for dim in ["rpm", "daily", "concurrency", "tpm"] {
        assert!(panel(&format!("{dim} utilization")).is_some(), "{dim}");
    }
    assert!(panel("tpd utilization").is_none(), "no org has a tpd limit");
    assert!(panel("Tokens per minute vs limit").is_some());
    assert!(panel("Upstream limit vs configured").is_some());
    // Each org with its own thresholds is coloured at them.
    let gauge = panel("tpm utilization").unwrap();
    let overrides = gauge["fieldConfig"]["overrides"].as_array().unwrap();
    let steps = |org: &str| -> Vec<Value> {
        let o = overrides
            .iter()
            .find(|o| o["matcher"]["options"] == org)
            .unwrap_or_else(|| panic!("an override for {org}"));
        o["properties"][0]["value"]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["value"].clone())
            .collect()
    };
    assert_eq!(steps("big.co"), [Value::Null, 0.5.into(), 0.8.into()]);
    assert_eq!(
        steps("we\"ird \\ #|: é"),
        [Value::Null, 0.6.into(), 0.95.into()]
    );
    assert_eq!(overrides.len(), 2, "bigxco and tiny use the defaults");
}

#[test]
fn other_alerts_thresholds_and_every_dimension_pass_the_same_checks() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("all.toml"),
        "[tiers.plus]\ndaily = 100\ntpm = 1000\ntpd = 10000\n[alerts]\nthresholds = [0.6, 0.875]\n",
    )
    .unwrap();
    let text = generate(&["dashboard", "--config", "all.toml"], dir.path());
    let path = dir.path().join("dashboard.json");
    std::fs::write(&path, &text).unwrap();
    common::dashboard::check_at(&path, "0.6,0.875");
    let dash: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        dash["panels"][0]["title"],
        "Utilization (warning 60 %, critical 87.5 %)"
    );
    let rules = generate(&["rules", "--config", "all.toml"], dir.path());
    assert!(rules.contains("(ratewarden_utilization_ratio) >= 0.60 < 0.875\n"));
    assert!(rules.contains("(ratewarden_utilization_ratio) >= 0.875\n"));
    assert!(rules.contains("limits set in rpm, daily, concurrency, tpm, tpd "));
}
