//! The files users import and deploy, each checked by the real tool: promtool (rules, rule
//! tests, metrics lint), amtool, a real Prometheus scraping a real daemon (every dashboard
//! query returns data, every rule loads, the expected alerts fire), grafana-foundation-sdk,
//! kubernetes-validate and the Prometheus Operator's CRD schemas, systemd-analyze.
//! `scripts/test` installs what they need (Debian prometheus, PyPI and npm packages).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::upstream::Upstream;
use common::{Daemon, Prometheus, eventually, http, tool};
use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn rules_pass_promtool_checks_and_unit_tests() {
    let promtool = tool("promtool");
    let out = run(Command::new(&promtool)
        .args(["check", "rules"])
        .arg(root().join("alerts/ratewarden.rules.yml")));
    assert!(
        text(&out).contains("SUCCESS: 21 rules found"),
        "{}",
        text(&out)
    );
    let out = run(Command::new(&promtool)
        .args(["test", "rules", "ratewarden.rules.test.yml"])
        .current_dir(root().join("alerts/tests")));
    assert!(text(&out).contains("SUCCESS"), "{}", text(&out));
}

#[test]
fn every_runbook_url_leads_to_a_readme_section() {
    let rules = std::fs::read_to_string(root().join("alerts/ratewarden.rules.yml")).unwrap();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    // GitHub's heading anchors: lower case, spaces to '-', punctuation dropped.
    let anchors: Vec<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(|h| {
            h.to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect();
    let urls: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("runbook_url: "))
        .collect();
    assert_eq!(urls.len(), 15, "one per alert");
    for url in urls {
        let (page, anchor) = url.split_once('#').expect("an anchor");
        assert!(page.ends_with("/README.md"), "{url}");
        assert!(
            anchors.iter().any(|a| a == anchor),
            "no README heading for #{anchor}"
        );
    }
}

#[test]
fn the_alertmanager_example_is_valid() {
    let out = run(Command::new(tool("amtool"))
        .args(["check-config"])
        .arg(root().join("alerts/alertmanager.example.yml")));
    assert!(text(&out).contains("SUCCESS"), "{}", text(&out));
}

#[test]
fn the_dashboard_passes_grafanas_schema_library_and_its_queries_parse() {
    // That it is what `ratewarden generate dashboard` writes is tests/generate.rs's part.
    common::dashboard::check(&root().join("dashboards/ratewarden.json"));
}

#[test]
fn kubernetes_manifests_validate_against_their_schemas() {
    let k8s = root().join("deploy/kubernetes");
    run(Command::new("python3")
        .arg(k8s.join("generate-prometheusrule.py"))
        .arg("--check"));
    let out = run(Command::new("python3")
        .args(["-m", "kubernetes_validate"])
        .args(["--strict", "-k", "1.30.0"])
        .args(["configmap.yaml", "statefulset.yaml", "service.yaml"].map(|f| k8s.join(f))));
    assert_eq!(
        text(&out).matches("passed for resource").count(),
        3,
        "{}",
        text(&out)
    );
    let support = root().join("tests/support/k8s");
    assert!(
        support.join("node_modules").exists(),
        "run `npm ci --prefix tests/support/k8s` (scripts/test does)"
    );
    let out = run(Command::new("node")
        .arg(support.join("validate.mjs"))
        .args(["servicemonitor.yaml", "prometheusrule.yaml"].map(|f| k8s.join(f))));
    assert_eq!(text(&out).matches("PASS").count(), 2, "{}", text(&out));
    // Every manifest is part of the kustomization.
    let kustomization = std::fs::read_to_string(k8s.join("kustomization.yaml")).unwrap();
    for f in [
        "configmap.yaml",
        "statefulset.yaml",
        "service.yaml",
        "servicemonitor.yaml",
        "prometheusrule.yaml",
    ] {
        assert!(
            kustomization.contains(f),
            "{f} missing from kustomization.yaml"
        );
    }
}

/// The `ratewarden.toml` a ConfigMap manifest holds.
fn configmap_toml(path: &std::path::Path) -> String {
    let cm = std::fs::read_to_string(path).unwrap();
    cm.split("ratewarden.toml: |\n")
        .nth(1)
        .unwrap()
        .lines()
        .map(|l| format!("{}\n", l.trim_start()))
        .collect()
}

/// Every host path a Compose file bind-mounts (relative to `deploy`) exists.
fn bind_mounts_exist(compose: &str, deploy: &std::path::Path) {
    for line in compose
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("- ./") || l.starts_with("- ../"))
    {
        let host = line.trim_start_matches("- ").split(':').next().unwrap();
        assert!(deploy.join(host).exists(), "{host} does not exist");
    }
}

#[test]
fn the_replica_deployments_validate() {
    let replicas = root().join("deploy/kubernetes/replicas");
    let out = run(Command::new("python3")
        .args(["-m", "kubernetes_validate"])
        .args(["--strict", "-k", "1.30.0"])
        .args(["configmap.yaml", "pdb.yaml", "redis.yaml"].map(|f| replicas.join(f))));
    assert_eq!(
        text(&out).matches("passed for resource").count(),
        4,
        "{}",
        text(&out)
    );
    let kustomization = std::fs::read_to_string(replicas.join("kustomization.yaml")).unwrap();
    for f in [
        "../",
        "redis.yaml",
        "pdb.yaml",
        "configmap.yaml",
        "statefulset.yaml",
    ] {
        assert!(kustomization.contains(f), "{f} missing from the overlay");
    }
    let patch = std::fs::read_to_string(replicas.join("statefulset.yaml")).unwrap();
    assert!(patch.contains("replicas: 3"), "{patch}");
    // The replicas' configs (Kubernetes and Compose) are valid and name the shared log.
    let toml = configmap_toml(&replicas.join("configmap.yaml"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cm.toml"), &toml).unwrap();
    let deploy = root().join("deploy");
    for config in [
        dir.path().join("cm.toml"),
        deploy.join("compose/ratewarden-cluster.toml"),
    ] {
        let text_of = std::fs::read_to_string(&config).unwrap();
        assert!(text_of.contains("[cluster]"), "{}", config.display());
        run(Command::new(common::bin())
            .args(["check-config"])
            .arg(&config));
    }
    let compose = std::fs::read_to_string(deploy.join("docker-compose.replicas.yml")).unwrap();
    for service in [
        "redis:",
        "ratewarden-1:",
        "ratewarden-2:",
        "ratewarden-3:",
        "prometheus:",
    ] {
        assert!(
            compose.contains(&format!("\n  {service}")),
            "service {service}"
        );
    }
    bind_mounts_exist(&compose, &deploy);
    let prometheus =
        std::fs::read_to_string(deploy.join("compose/prometheus-replicas.yml")).unwrap();
    for target in [
        "ratewarden-1:9747",
        "ratewarden-2:9747",
        "ratewarden-3:9747",
    ] {
        assert!(prometheus.contains(target), "{target}");
    }
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let analyze = tool("systemd-analyze");
    // systemd-analyze insists that ExecStart's binary exists: point it at the one just built.
    let unit = std::fs::read_to_string(root().join("deploy/systemd/ratewarden.service")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ratewarden.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/ratewarden", common::bin()),
    )
    .unwrap();
    let out = run(Command::new(&analyze).arg("verify").arg(&path));
    assert!(text(&out).trim().is_empty(), "warnings: {}", text(&out));
    let out = run(Command::new(&analyze)
        .args(["security", "--offline=true"])
        .arg(&path));
    let score: f64 = text(&out)
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for ratewarden.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .expect("an exposure score");
    assert!(score <= 2.0, "exposure {score} (0 best, 10 worst)");
}

/// The training run of the profile-guided build (`scripts/build-pgo`, which the Dockerfile
/// builds with) drives a binary through replay and the daemon and fails on any answer it does
/// not expect, so the build does not rot as the CLI and the API change. The two builds
/// themselves take ten minutes and are left to the script.
#[test]
fn the_profile_guided_build_trains_on_replay_and_the_daemon() {
    let out = run(Command::new("python3")
        .arg(root().join("bench/pgo_train.py"))
        .args(["--bin", common::bin(), "--lines", "3000", "--orgs", "10"]));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("replay done") && log.contains("daemon done"),
        "{log}"
    );
    // The script refuses what it cannot use before it starts a ten-minute build.
    for bad in [
        &["--lines", "0"][..],
        &["--lines", "abc"],
        &["--lines"],
        &["--bogus"],
    ] {
        let out = Command::new(root().join("scripts/build-pgo"))
            .args(bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("usage: scripts/build-pgo"),
            "{bad:?}"
        );
    }
    let docker = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    assert!(docker.contains("RUN scripts/build-pgo"), "{docker}");
    for copied in ["COPY bench ./bench", "COPY scripts ./scripts"] {
        assert!(docker.contains(copied), "the Dockerfile lacks `{copied}`");
    }
}

#[test]
fn the_compose_stack_refers_to_files_that_exist() {
    let deploy = root().join("deploy");
    let compose = std::fs::read_to_string(deploy.join("docker-compose.yml")).unwrap();
    for service in ["ratewarden:", "prometheus:", "alertmanager:", "grafana:"] {
        assert!(
            compose.contains(&format!("\n  {service}")),
            "service {service}"
        );
    }
    // Host paths of bind mounts, relative to deploy/.
    bind_mounts_exist(&compose, &deploy);
    assert!(
        std::fs::read_to_string(deploy.join("Dockerfile"))
            .unwrap()
            .contains("HEALTHCHECK")
    );
    let prometheus = std::fs::read_to_string(deploy.join("compose/prometheus.yml")).unwrap();
    assert!(prometheus.contains("/etc/prometheus/rules/ratewarden.rules.yml"));
    // The compose config is a valid ratewarden config.
    run(Command::new(common::bin())
        .args(["check-config"])
        .arg(deploy.join("compose/ratewarden.toml")));
    // So is the one in the Kubernetes ConfigMap.
    let toml = configmap_toml(&deploy.join("kubernetes/configmap.yaml"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cm.toml"), toml).unwrap();
    run(Command::new(common::bin())
        .args(["check-config"])
        .arg(dir.path().join("cm.toml")));
}

// ------------------------------------------------------------------ a real Prometheus

/// Generates `what` (`rules`, `dashboard`) for the config at `config`.
fn generate(what: &str, config: &Path) -> String {
    let out = run(Command::new(common::bin())
        .args(["generate", what, "--config"])
        .arg(config));
    String::from_utf8(out.stdout).unwrap()
}

fn start_prometheus(dir: &Path, rules: &str, targets: &[&str]) -> Prometheus {
    // The rules with `for` durations cut to zero and the recording interval to 1 s, so the
    // expressions are judged in seconds; `for` itself is covered by the promtool tests.
    let fast: String = rules
        .lines()
        .map(|l| {
            let t = l.trim_start();
            let indent = &l[..l.len() - t.len()];
            if t.starts_with("for: ") {
                format!("{indent}for: 0s\n")
            } else if t.starts_with("interval: ") {
                format!("{indent}interval: 1s\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(dir.join("rules.yml"), fast).unwrap();
    common::start_prometheus(
        dir,
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - rules.yml\n\
             scrape_configs:\n  - job_name: ratewarden\n    static_configs:\n      - targets: {targets:?}\n"
        ),
    )
}

fn promql(p: &Prometheus, query: &str) -> Value {
    let url = format!("{}/api/v1/query?query={}", p.base, urlencode(query));
    let (_, body) = http("GET", &url, &[], b"").unwrap();
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A receiver that refuses every notification (so `notifications_total{outcome="failed"}` moves).
fn refusing_receiver() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut s = stream;
            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
            let mut buf = [0u8; 65536];
            let _ = std::io::Read::read(&mut s, &mut buf);
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 7\r\nConnection: close\r\n\r\nno such");
        }
    });
    format!("http://{addr}/hook")
}

fn events(d: &Daemon, lines: &[String]) {
    let (status, answer) = d.post_events(&(lines.join("\n") + "\n"));
    assert_eq!(status, 202, "{answer}");
}

#[test]
fn prometheus_scrapes_the_daemon_every_panel_has_data_and_the_alerts_fire() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(1200, 100, Duration::ZERO);
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[limits]
max_orgs = 3

[tiers.small]
rpm = 10
concurrency = 2
daily = 30
tpm = 100000

[[orgs]]
id = "acme"
tier = "small"

[detect]
stuck_after = "1s"
release_after = "1h"

[alerts]
retry_base = "100ms"
retry_cap = "200ms"
max_age = "1s"

[[alerts.webhook]]
name = "hook"
url = "{}"

[[upstreams]]
name = "fake"
base_url = "{}"
org = "beta"

[scheduler]
share = 0.5
"#,
        refusing_receiver(),
        up.url()
    );
    let d = Daemon::start(dir.path(), &config, &[]);
    // The rules and the dashboard generated for this config (rpm, daily, concurrency and tpm
    // limits), as its users would load them; the shipped ones are a subset.
    let rules = generate("rules", &dir.path().join("ratewarden.toml"));
    let dashboard = generate("dashboard", &dir.path().join("ratewarden.toml"));
    let target = d.base.trim_start_matches("http://").to_string();
    let prom = start_prometheus(dir.path(), &rules, &[&target]);
    let up_query = || {
        promql(&prom, r#"up{job="ratewarden"}"#)["data"]["result"][0]["value"][1].as_str()
            == Some("1")
    };
    assert!(
        eventually(30, || up_query().then_some(())).is_some(),
        "Prometheus scrapes the daemon"
    );

    let now = || chrono::Utc::now().timestamp_millis();
    let ev = |body: &str| format!("{{\"org\":\"acme\",\"ts\":{},{body}}}", now());
    // Phase 1 creates the series (so the counters' first increase falls inside the windows).
    events(
        &d,
        &[
            ev(r#""app":"bot","status":429,"retry_after":30"#),
            ev(
                r#""app":"ui","status":200,"ratelimit":{"limit_requests":12,"remaining_requests":4,"remaining_tokens":900}"#,
            ),
            ev(r#""app":"ui","status":202,"job_id":"done-1""#),
        ],
    );
    // Once Prometheus has scraped phase 1, phase 2's increases fall inside its windows.
    assert!(
        eventually(30, || {
            (promql(&prom, "sum(ratewarden_events_ingested_total)")["data"]["result"][0]["value"]
                [1]
            .as_str()
                == Some("3"))
            .then_some(())
        })
        .is_some(),
        "Prometheus scraped phase 1"
    );
    // Phase 2: over every threshold.
    let mut lines = Vec::new();
    for _ in 0..7 {
        lines.push(ev(
            r#""app":"bot","status":429,"retry_after":30,"error_code":"rate_limit_exceeded""#,
        ));
    }
    for i in 0..22 {
        lines.push(ev(&format!(
            r#""app":"ui","status":200,"request_id":"r{i}""#
        )));
    }
    lines.push(ev(r#""app":"ui","status":202,"job_id":"stuck-1""#));
    lines.push(ev(r#""app":"ui","status":202,"job_id":"stuck-2""#));
    lines.push(ev(r#""app":"ui","kind":"job_completed","job_id":"done-1""#));
    for i in 0..6 {
        lines.push(format!("{{\"org\":\"flood-{i}\",\"status\":200}}"));
    }
    for _ in 0..5 {
        lines.push("{not json".into());
    }
    events(&d, &lines);
    let batch = json!({"upstream": "fake", "mode": "asap", "requests": [{"path": "/v1/videos"}, {"path": "/v1/videos"}]}).to_string();
    let (status, answer) = http(
        "POST",
        &format!("{}/v1/batches", d.base),
        &[],
        batch.as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 201, "{answer}");

    // Every dashboard query returns data through Prometheus's API.
    let dash: Value = serde_json::from_str(&dashboard).unwrap();
    let queries = common::dashboard::queries(&dash);
    assert!(queries.len() >= 30);
    assert!(
        queries
            .iter()
            .any(|(_, q)| q.contains("ratewarden_usage_drift")),
        "the dashboard shows the usage drift"
    );
    let concrete = common::dashboard::concrete;
    let empty = |qs: &[(String, String)]| -> Vec<String> {
        qs.iter()
            .filter(|(_, q)| {
                let r = promql(&prom, &concrete(q));
                r["status"] != "success" || r["data"]["result"].as_array().is_none_or(Vec::is_empty)
            })
            .map(|(t, q)| format!("{t}: {q}"))
            .collect()
    };
    let settled = eventually(40, || empty(&queries).is_empty().then_some(()));
    assert!(
        settled.is_some(),
        "panels without data:\n{}",
        empty(&queries).join("\n")
    );

    // Every rule loads and is healthy.
    let (_, loaded) = http("GET", &format!("{}/api/v1/rules", prom.base), &[], b"").unwrap();
    let loaded: Value = serde_json::from_str(&loaded).unwrap();
    let all: Vec<&Value> = loaded["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    let written = rules
        .lines()
        .filter(|l| {
            l.trim_start().starts_with("- alert:") || l.trim_start().starts_with("- record:")
        })
        .count();
    assert_eq!(all.len(), written);
    assert!(all.iter().all(|r| r["health"] == "ok"), "{all:?}");

    // The expected alerts fire; the exporter ones do not.
    let expected = [
        "RatewardenUsageHigh",
        "RatewardenDailyQuotaExhausted",
        "RatewardenJobsStuck",
        "RatewardenRateLimited",
        "RatewardenBurstDetected",
        "RatewardenRetryStorm",
        "RatewardenRetryAfterIgnored",
        "RatewardenNotificationsFailing",
        "RatewardenEventsRejected",
    ];
    let firing = || -> Vec<String> {
        let (_, body) = http("GET", &format!("{}/api/v1/alerts", prom.base), &[], b"").unwrap();
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        v["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["state"] == "firing")
            .map(|a| a["labels"]["alertname"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let all_fired = eventually(40, || {
        let f = firing();
        expected
            .iter()
            .all(|e| f.iter().any(|x| x == e))
            .then_some(f)
    });
    let f = all_fired.unwrap_or_else(|| panic!("firing: {:?}\nexpected: {expected:?}", firing()));
    for quiet in [
        "RatewardenExporterDown",
        "RatewardenExporterAbsent",
        "RatewardenNotificationBacklog",
    ] {
        assert!(!f.iter().any(|x| x == quiet), "{quiet} fired");
    }
    let critical = promql(
        &prom,
        r#"ALERTS{alertname="RatewardenUsageHigh",alertstate="firing",severity="critical",org="acme"}"#,
    );
    assert!(
        !critical["data"]["result"].as_array().unwrap().is_empty(),
        "acme at or over 90 %"
    );

    // promtool's lint is clean on the exposition (classic text format, as promtool reads it).
    let (_, metrics) = {
        let url = format!("{}/metrics", d.base);
        let rest = url.trim_start_matches("http://");
        let (host, path) = rest.split_once('/').unwrap();
        let mut s = std::net::TcpStream::connect(host).unwrap();
        write!(s, "GET /{path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n").unwrap();
        let mut resp = String::new();
        std::io::Read::read_to_string(&mut s, &mut resp).unwrap();
        let (head, body) = resp.split_once("\r\n\r\n").unwrap();
        (head.to_string(), body.to_string())
    };
    let mut check = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success() && text(&out).trim().is_empty(),
        "promtool check metrics: {}",
        text(&out)
    );
}

/// The first sample of an instant query's answer, as a number.
fn value(p: &Prometheus, query: &str) -> Option<f64> {
    promql(p, query)["data"]["result"][0]["value"][1]
        .as_str()?
        .parse()
        .ok()
}

#[test]
fn three_replicas_scraped_give_one_alert_and_rates_counted_once() {
    let redis_dir = tempfile::tempdir().unwrap();
    let redis = common::redis::Redis::start(redis_dir.path(), &[]);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let daemons: Vec<Daemon> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let config = format!(
                "[server]\nlisten = \"127.0.0.1:0\"\n[tiers.small]\nrpm = 10\nconcurrency = 2\ndaily = 0\n\
                 [[orgs]]\nid = \"acme\"\ntier = \"small\"\n\
                 [cluster]\nredis_url = \"{}\"\nreplica_id = \"r{i}\"\n",
                redis.url()
            );
            Daemon::start(d.path(), &config, &[])
        })
        .collect();
    let targets: Vec<String> = daemons
        .iter()
        .map(|d| d.base.trim_start_matches("http://").to_string())
        .collect();
    let prom_dir = tempfile::tempdir().unwrap();
    // This config's limits are the built-in defaults' dimensions: the shipped rules fit it.
    let shipped = std::fs::read_to_string(root().join("alerts/ratewarden.rules.yml")).unwrap();
    let prom = start_prometheus(
        prom_dir.path(),
        &shipped,
        &targets.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(
        eventually(30, || (value(&prom, "count(up == 1)") == Some(3.0))
            .then_some(()))
        .is_some(),
        "Prometheus scrapes the three replicas"
    );
    // Nine requests (90 % of 10 rpm) through one replica: every replica shows them. The
    // first makes the series, so Prometheus sees the other eight as an increase.
    let now = chrono::Utc::now().timestamp_millis();
    let lines: Vec<String> = (0..9)
        .map(|i| format!("{{\"org\":\"acme\",\"app\":\"ui\",\"ts\":{now},\"status\":200,\"request_id\":\"q{i}\"}}"))
        .collect();
    events(&daemons[1], &lines[..1]);
    let scraped = r#"count(ratewarden_requests_total{org="acme"})"#;
    assert!(
        eventually(30, || (value(&prom, scraped) == Some(3.0)).then_some(())).is_some(),
        "every replica exports the first request"
    );
    events(&daemons[2], &lines[1..]);
    let firing = r#"count(ALERTS{alertname="RatewardenUsageHigh",alertstate="firing",org="acme"})"#;
    assert!(
        eventually(30, || (value(&prom, firing) == Some(1.0)).then_some(())).is_some(),
        "one UsageHigh alert for acme, not one per replica: {}",
        promql(&prom, r#"ALERTS{alertname="RatewardenUsageHigh"}"#)
    );
    assert_eq!(
        value(
            &prom,
            r#"count(ratewarden_utilization_ratio{org="acme",dimension="rpm"})"#
        ),
        Some(3.0),
        "each replica exports the org-wide series"
    );
    // The recording rule and the dashboard count the requests once, not three times: each
    // replica's rate of the same counter differs only by its scrape times.
    let per_instance = |window: &str| -> Vec<f64> {
        promql(
            &prom,
            &format!(
                r#"sum by (instance) (rate(ratewarden_requests_total{{org="acme"}}[{window}]))"#
            ),
        )["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["value"][1].as_str()?.parse().ok())
            .collect()
    };
    // The dashboard's own panel, as Grafana would send it for org acme.
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("dashboards/ratewarden.json")).unwrap(),
    )
    .unwrap();
    let panel_expr = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["title"] == "Requests by outcome")
        .and_then(|p| p["targets"][0]["expr"].as_str())
        .expect("the requests panel")
        .replace("$org", "acme")
        .replace("$app", ".*")
        .replace("$__rate_interval", "1m");
    let counted_once = eventually(30, || {
        let rates = per_instance("1m");
        let slow = per_instance("5m");
        let panel = value(&prom, &format!("sum({panel_expr})"))?;
        let plain = value(
            &prom,
            r#"sum(rate(ratewarden_requests_total{org="acme"}[1m]))"#,
        )?;
        let recorded = value(&prom, r#"org:ratewarden_requests:rate5m{org="acme"}"#)?;
        let (lo, hi) = (
            slow.iter().copied().fold(f64::MAX, f64::min),
            slow.iter().copied().fold(0.0, f64::max),
        );
        let (bottom, top) = (
            rates.iter().copied().fold(f64::MAX, f64::min),
            rates.iter().copied().fold(0.0, f64::max),
        );
        // Queries are answered a few milliseconds apart: within 10 % is one replica's count
        // (three would be 200 % more).
        (rates.len() == 3
            && slow.len() == 3
            && bottom > 0.0
            && panel >= 0.9 * bottom
            && panel <= 1.1 * top
            && plain > 2.5 * panel
            && recorded >= 0.5 * lo
            && recorded <= 1.5 * hi)
            .then_some((rates, panel, plain, recorded))
    });
    assert!(
        counted_once.is_some(),
        "rates counted once across replicas: per instance {:?} (5 m: {:?}), recorded {}",
        per_instance("1m"),
        per_instance("5m"),
        promql(&prom, r#"org:ratewarden_requests:rate5m{org="acme"}"#)
    );
}
