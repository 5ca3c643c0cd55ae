//! Bearer tokens, read once from the environment and compared in constant time.

use axum::http::{HeaderMap, StatusCode, header};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::config::ServerConfig;

/// A token, or `None` when its variable is unset or empty (that route is open).
#[derive(Clone, Default)]
pub struct Secret(Option<String>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token itself.
        f.write_str(if self.0.is_some() {
            "Secret(set)"
        } else {
            "Secret(none)"
        })
    }
}

impl Secret {
    /// A fixed token (tests), or none.
    pub fn new(token: Option<&str>) -> Secret {
        Secret(token.filter(|t| !t.is_empty()).map(str::to_string))
    }

    /// The token held by the variable `name`, if it is set and non-empty.
    pub fn from_env(name: Option<&str>) -> Secret {
        Secret(
            name.and_then(|n| std::env::var(n).ok())
                .filter(|v| !v.is_empty()),
        )
    }

    /// True when a token is configured.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Checks the request's `Authorization: Bearer` header.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(want) = &self.0 else {
            return Ok(());
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
        match given {
            Some(token) if bool::from(token.as_bytes().ct_eq(want.as_bytes())) => Ok(()),
            Some(_) => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the bearer token does not match",
            )),
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this route needs an Authorization: Bearer token",
            )),
        }
    }
}

/// Tokens per route group.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    /// `POST /v1/events`.
    pub ingest: Secret,
    /// `/v1/usage`, `/v1/alerts`, `/v1/batches`.
    pub admin: Secret,
    /// `/metrics`.
    pub metrics: Secret,
}

impl Tokens {
    /// Reads the variables the config names.
    pub fn from_env(server: &ServerConfig) -> Tokens {
        Tokens {
            ingest: Secret::from_env(server.ingest_token_env.as_deref()),
            admin: Secret::from_env(server.admin_token_env.as_deref()),
            metrics: Secret::from_env(server.metrics_token_env.as_deref()),
        }
    }
}
