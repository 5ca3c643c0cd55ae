//! `ratewarden batch …`: submits, lists, shows and cancels deferred batches through a running
//! daemon's `/v1/batches` API (SPEC §7), and renders the answers as tables.

use std::fmt::Write as _;

use reqwest::Method;
use serde_json::{Value, json};

use super::api::{Api, ClientError};

/// `batch submit`: `text` holds the requests, one JSON object per line; `mode` is `offpeak`
/// or `asap`. Returns the new batch, rendered.
pub async fn submit(
    api: &Api,
    upstream: &str,
    org: Option<&str>,
    mode: &str,
    text: &str,
) -> Result<String, ClientError> {
    let requests = read_requests(text)?;
    let body = json!({
        "upstream": upstream,
        "org": org,
        "mode": mode,
        "requests": requests,
    });
    let b = api
        .json(
            Method::POST,
            "/v1/batches",
            Some(body.to_string().into_bytes()),
        )
        .await?;
    Ok(render_batch(&b))
}

/// `batch list`: every batch, one line each.
pub async fn list(api: &Api) -> Result<String, ClientError> {
    let v = api.json(Method::GET, "/v1/batches", None).await?;
    Ok(render_batches(
        v["batches"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default(),
    ))
}

/// `batch status ID`: one batch in detail.
pub async fn status(api: &Api, id: &str) -> Result<String, ClientError> {
    Ok(render_batch(
        &api.json(Method::GET, &format!("/v1/batches/{id}"), None)
            .await?,
    ))
}

/// `batch items ID`: the items as the daemon sends them (NDJSON, one item per line).
pub async fn items(api: &Api, id: &str) -> Result<String, ClientError> {
    api.call(Method::GET, &format!("/v1/batches/{id}/items"), None)
        .await
}

/// `batch cancel ID`: cancels what is not sent yet; returns the batch as it now stands.
pub async fn cancel(api: &Api, id: &str) -> Result<String, ClientError> {
    Ok(render_batch(
        &api.json(Method::DELETE, &format!("/v1/batches/{id}"), None)
            .await?,
    ))
}

/// Reads requests, one JSON object per line (blank lines skipped), for `batch submit`.
pub fn read_requests(text: &str) -> Result<Vec<Value>, ClientError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .map_err(|e| ClientError::Input(format!("line {}: not JSON: {e}", n + 1)))?;
        if !v.is_object() || v.get("path").and_then(Value::as_str).is_none() {
            return Err(ClientError::Input(format!(
                "line {}: each line is one request object with at least a \"path\"",
                n + 1
            )));
        }
        out.push(v);
    }
    if out.is_empty() {
        return Err(ClientError::Input("no requests in the input".into()));
    }
    Ok(out)
}

fn count(b: &Value, state: &str) -> u64 {
    b["counts"][state].as_u64().unwrap_or(0)
}

/// One line per batch.
pub fn render_batches(batches: &[Value]) -> String {
    if batches.is_empty() {
        return "no batches\n".into();
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<22} {:<10} {:<12} {:<12} {:<8} {:>6} {:>6} {:>6} {:>6}  ETA",
        "ID", "STATE", "UPSTREAM", "ORG", "MODE", "ITEMS", "OK", "FAILED", "LEFT"
    );
    for b in batches {
        let left = count(b, "pending") + count(b, "retrying") + count(b, "in_flight");
        let _ = writeln!(
            out,
            "{:<22} {:<10} {:<12} {:<12} {:<8} {:>6} {:>6} {:>6} {:>6}  {}",
            b["id"].as_str().unwrap_or("?"),
            b["state"].as_str().unwrap_or("?"),
            b["upstream"].as_str().unwrap_or("?"),
            b["org"].as_str().unwrap_or("?"),
            b["mode"].as_str().unwrap_or("?"),
            b["items"].as_u64().unwrap_or(0),
            count(b, "succeeded"),
            count(b, "failed"),
            left,
            b["eta"].as_str().unwrap_or("-"),
        );
    }
    out
}

/// A batch in detail.
pub fn render_batch(b: &Value) -> String {
    let mut out = String::new();
    for key in [
        "id",
        "state",
        "upstream",
        "org",
        "mode",
        "created_at",
        "next_dispatch",
        "eta",
    ] {
        let v = match &b[key] {
            Value::String(s) => s.clone(),
            Value::Null => "-".into(),
            other => other.to_string(),
        };
        let _ = writeln!(out, "{key:<14} {v}");
    }
    let _ = writeln!(out, "{:<14} {}", "items", b["items"]);
    if let Some(counts) = b["counts"].as_object() {
        let parts: Vec<String> = counts
            .iter()
            .filter(|(_, n)| n.as_u64() != Some(0))
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        let _ = writeln!(out, "{:<14} {}", "counts", parts.join(" "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_json_objects_with_a_path() {
        let ok = read_requests("{\"path\":\"/v1/videos\",\"body\":{\"prompt\":\"a\"}}\n\n{\"path\":\"/x\",\"method\":\"GET\"}\n").unwrap();
        assert_eq!(ok.len(), 2);
        assert!(
            read_requests("{\"path\":\"/x\"}\nnot json\n")
                .unwrap_err()
                .to_string()
                .starts_with("line 2: not JSON")
        );
        assert!(
            read_requests("{\"body\":1}\n")
                .unwrap_err()
                .to_string()
                .contains("line 1")
        );
        assert!(read_requests("\n").is_err());
    }

    #[test]
    fn tables() {
        let b = serde_json::json!({"id": "b1", "state": "running", "upstream": "openai", "org": "acme", "mode": "asap",
            "items": 3, "counts": {"succeeded": 1, "failed": 0, "pending": 1, "in_flight": 1, "retrying": 0, "cancelled": 0},
            "eta": "2026-11-27T19:00:00.000Z", "next_dispatch": null, "created_at": "2026-11-27T18:00:00.000Z"});
        let t = render_batches(std::slice::from_ref(&b));
        assert!(
            t.contains("b1") && t.contains("running") && t.contains("2026-11-27T19:00:00.000Z"),
            "{t}"
        );
        let d = render_batch(&b);
        assert!(
            d.contains("counts         in_flight=1 pending=1 succeeded=1"),
            "{d}"
        );
        assert!(d.contains("next_dispatch  -"), "{d}");
    }
}
