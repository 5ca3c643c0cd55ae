//! `ratewarden status`: a live usage table from a running daemon's `GET /v1/usage`.

use std::fmt::Write as _;

use serde_json::Value;

use super::api::{Api, ClientError};

/// Fetches `/v1/usage` from `server` with the admin `token` and renders it.
pub async fn fetch(server: &str, token: Option<&str>) -> Result<String, ClientError> {
    let api = Api::new(server, token.map(str::to_string))?;
    let v = api.json(reqwest::Method::GET, "/v1/usage", None).await?;
    Ok(render(&v))
}

/// "usage/limit" or just "usage" when unlimited; a limit the upstream reported (`learn`)
/// is marked `^`.
fn cell(org: &Value, dim: &str) -> String {
    let usage = org["usage"][dim].as_u64().unwrap_or(0);
    let learned = org["sources"][dim] == "upstream";
    match org["limits"][dim].as_u64() {
        Some(limit) if learned => format!("{usage}/{limit}^"),
        Some(limit) => format!("{usage}/{limit}"),
        None => usage.to_string(),
    }
}

/// Renders a `/v1/usage` answer as a table, busiest orgs first.
pub fn render(v: &Value) -> String {
    let mut orgs: Vec<&Value> = v["orgs"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    if orgs.is_empty() {
        return "no orgs seen yet\n".to_string();
    }
    // The busiest limit of the org or of any of its model scopes.
    let util = |o: &Value| {
        let of = |v: &Value| {
            v["utilization"]
                .as_object()
                .map(|m| m.values().filter_map(Value::as_f64).fold(0.0, f64::max))
                .unwrap_or(0.0)
        };
        o["models"]
            .as_array()
            .into_iter()
            .flatten()
            .map(of)
            .fold(of(o), f64::max)
    };
    orgs.sort_by(|a, b| util(b).total_cmp(&util(a)));
    let width = orgs
        .iter()
        .filter_map(|o| o["org"].as_str())
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(3)
        .max(3);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<width$}  {:<8}  {:>11}  {:>13}  {:>11}  {:>5}  {:>5}  {:>8}",
        "ORG", "TIER", "RPM", "DAILY", "CONCURRENCY", "STUCK", "PEAK%", "WAIT(s)"
    );
    for o in &orgs {
        let wait = o["headroom_seconds"]
            .as_object()
            .map(|m| {
                if m.values().any(Value::is_null) {
                    "job".to_string()
                } else {
                    m.values()
                        .filter_map(Value::as_u64)
                        .max()
                        .unwrap_or(0)
                        .to_string()
                }
            })
            .unwrap_or_else(|| "0".into());
        let _ = writeln!(
            out,
            "{:<width$}  {:<8}  {:>11}  {:>13}  {:>11}  {:>5}  {:>5.0}  {:>8}",
            o["org"].as_str().unwrap_or("?"),
            o["tier"].as_str().unwrap_or("?"),
            cell(o, "rpm"),
            cell(o, "daily"),
            cell(o, "concurrency"),
            o["stuck_jobs"].as_array().map_or(0, Vec::len),
            util(o) * 100.0,
            wait,
        );
        for m in o["models"].as_array().into_iter().flatten() {
            let sources: std::collections::BTreeSet<&str> = m["sources"]
                .as_object()
                .map(|s| s.values().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            // rpm and daily always, then every other dimension the scope limits.
            let others: Vec<String> = m["limits"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(d, _)| d.as_str())
                .filter(|d| !matches!(*d, "rpm" | "daily"))
                .map(|d| format!("  {d} {}", cell(m, d)))
                .collect();
            let _ = writeln!(
                out,
                "  model {:<w2$}  rpm {:>11}  daily {:>13}{}  source {}",
                m["model"].as_str().unwrap_or("?"),
                cell(m, "rpm"),
                cell(m, "daily"),
                others.concat(),
                if sources.is_empty() {
                    "config".to_string()
                } else {
                    sources.into_iter().collect::<Vec<_>>().join("+")
                },
                w2 = width + 2
            );
        }
        for a in o["apps"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "  {:<w2$}  rpm {:>5}  daily {:>7}  in flight {:>4}",
                a["app"].as_str().unwrap_or("?"),
                a["rpm"].as_u64().unwrap_or(0),
                a["daily"].as_u64().unwrap_or(0),
                a["in_flight"].as_u64().unwrap_or(0),
                w2 = width + 8
            );
        }
    }
    let learned = orgs.iter().any(|o| {
        o["sources"]
            .as_object()
            .is_some_and(|m| m.values().any(|v| v == "upstream"))
    });
    if learned {
        out.push_str(
            "^ the limit the upstream reports in its rate-limit headers ([limits] learn)\n",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_busiest_first_with_limits() {
        let v = serde_json::json!({"orgs": [
            {"org": "calm", "tier": "pro", "limits": {"rpm": 50}, "usage": {"rpm": 1, "daily": 3, "concurrency": 0},
             "utilization": {"rpm": 0.02}, "headroom_seconds": {"rpm": 0}, "apps": [], "stuck_jobs": []},
            {"org": "acme", "tier": "plus", "limits": {"rpm": 5, "concurrency": 1},
             "usage": {"rpm": 5, "daily": 9, "concurrency": 1}, "utilization": {"rpm": 1.0, "concurrency": 1.0},
             "headroom_seconds": {"rpm": 12, "concurrency": null},
             "apps": [{"app": "bot", "rpm": 5, "daily": 9, "in_flight": 1}], "stuck_jobs": []}
        ]});
        let text = render(&v);
        let acme = text.find("acme").unwrap();
        assert!(acme < text.find("calm").unwrap(), "{text}");
        assert!(text.contains("5/5"), "{text}");
        assert!(text.contains("job"), "waits on a job: {text}");
        assert!(text.contains("bot"), "{text}");
        assert_eq!(
            render(&serde_json::json!({"orgs": []})),
            "no orgs seen yet\n"
        );
    }
}
