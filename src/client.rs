//! Commands that talk to a running daemon: `status` and `batch …`. The admin token comes from
//! `RATEWARDEN_ADMIN_TOKEN`.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::Value;

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon could not be reached.
    #[error("cannot reach {url}: {source}")]
    Unreachable {
        /// What was asked.
        url: String,
        /// Why.
        source: reqwest::Error,
    },
    /// The daemon answered with an error.
    #[error("{url} answered {status}: {message}")]
    Refused {
        /// What was asked.
        url: String,
        /// HTTP status.
        status: u16,
        /// The daemon's error message.
        message: String,
    },
    /// The answer was not what the command expected.
    #[error("{url} answered something unexpected: {detail}")]
    Malformed {
        /// What was asked.
        url: String,
        /// What was wrong.
        detail: String,
    },
    /// The command's own input is wrong.
    #[error("{0}")]
    Input(String),
}

/// A daemon's API.
pub struct Api {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    /// The API at `server`, with the admin `token`.
    pub fn new(server: &str, token: Option<String>) -> Result<Api, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|source| ClientError::Unreachable {
                url: server.to_string(),
                source,
            })?;
        Ok(Api {
            base: server.trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.is_empty()),
            http,
        })
    }

    /// Sends a request and returns the answer's body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<String, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b);
        }
        let unreachable = |source| ClientError::Unreachable {
            url: url.clone(),
            source,
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let text = resp.text().await.map_err(unreachable)?;
        if !status.is_success() {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or(text);
            return Err(ClientError::Refused {
                url,
                status: status.as_u16(),
                message,
            });
        }
        Ok(text)
    }

    /// `call` for a JSON answer.
    pub async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Value, ClientError> {
        let text = self.call(method, path, body).await?;
        serde_json::from_str(&text).map_err(|e| ClientError::Malformed {
            url: format!("{}{path}", self.base),
            detail: e.to_string(),
        })
    }
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
