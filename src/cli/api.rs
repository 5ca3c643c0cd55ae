//! The daemon's HTTP API as the CLI commands call it: one request, its errors told apart
//! (unreachable, refused with the daemon's own message, malformed answer).

/// Longest a command waits for the daemon's answer, and for a connection.
const TIMEOUT_MS: i64 = 30_000;
const CONNECT_MS: i64 = 5_000;

use serde_json::Value;

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon could not be reached.
    #[error("cannot reach {url}: {why}")]
    Unreachable {
        /// What was asked.
        url: String,
        /// Why (refused, timed out, ...).
        why: String,
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
        // The daemon's API answers directly; like every request ratewarden sends, it carries
        // the user agent and follows no redirect.
        let http = crate::outbound::client(TIMEOUT_MS, CONNECT_MS).map_err(|why| {
            ClientError::Unreachable {
                url: server.to_string(),
                why,
            }
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
        let unreachable = |e: reqwest::Error| ClientError::Unreachable {
            url: url.clone(),
            why: crate::outbound::error_text(&e),
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
