//! The checks every Grafana dashboard we ship or generate must pass, shared by
//! `tests/ecosystem.rs` (the shipped file) and `tests/generate.rs` (generated ones).

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::installed;

/// Checks the dashboard at `path` for the default `[alerts] thresholds`: see [`check_at`].
pub fn check(path: &Path) {
    check_at(path, "0.7,0.9");
}

/// Checks the dashboard at `path`: grafana-foundation-sdk (Grafana's own schema library), the
/// import contract and utilization gauges coloured at `thresholds` ("0.7,0.9"), through
/// `tests/support/check_dashboard.py`; then, where promtool is installed, that every query
/// (panels and variables, as [`queries`] gives them) parses as PromQL.
pub fn check_at(path: &Path, thresholds: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(root.join("tests/support/check_dashboard.py"))
        .args(["--thresholds", thresholds])
        .arg(path)
        .output()
        .expect("python3 runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains(" 0 problems"),
        "{}: {text}",
        path.display()
    );

    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let Some(promtool) = installed("promtool") else {
        eprintln!(
            "promtool is not installed: the dashboard's queries are not parsed (scripts/test installs it)"
        );
        return;
    };
    // One recording rule per query makes `promtool check rules` parse them all, without a
    // Prometheus. A JSON string is a YAML double-quoted scalar.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, q)) in queries(&dash).iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard_query_{i}\n        expr: {}\n",
            Value::from(concrete(q))
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("queries.yml"), rules).unwrap();
    let out = Command::new(promtool)
        .args(["check", "rules"])
        .arg(dir.path().join("queries.yml"))
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "{}: a query does not parse: {}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every query the dashboard sends, with where it is (a panel's title, or the variable): the
/// panels' expressions and, for each variable, the PromQL question its Grafana
/// `label_values(metric, label)` asks.
pub fn queries(dash: &Value) -> Vec<(String, String)> {
    let mut queries: Vec<(String, String)> = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            queries.push((
                p["title"].as_str().unwrap().to_string(),
                t["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        let def = v["definition"].as_str().unwrap();
        let inner = def
            .trim_start_matches("label_values(")
            .trim_end_matches(')');
        let (metric, label) = inner.rsplit_once(',').unwrap();
        queries.push((
            format!("variable {}", v["name"]),
            format!("group by ({}) ({metric})", label.trim()),
        ));
    }
    queries
}

/// A query as Grafana sends it with every org and app selected.
pub fn concrete(q: &str) -> String {
    q.replace("$org", ".*")
        .replace("$app", ".*")
        .replace("$__rate_interval", "1m")
}
