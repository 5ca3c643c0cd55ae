//! Who may use a route: bearer tokens (read once from the environment, compared in constant
//! time) and, with a web config's `basic_auth_users`, basic auth (bcrypt), either granting a
//! route (SPEC §6).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine as _;
use sha2::Digest as _;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

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

/// A route's group: which token grants it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// `POST /v1/events`, `/v1/admit`.
    Ingest,
    /// `/v1/usage`, `/v1/alerts`, `/v1/offpeak`, `/v1/batches`.
    Admin,
    /// `/metrics`.
    Metrics,
}

/// Tokens per route group, and the basic-auth users that may use every route.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    /// `basic_auth_users` of the web config; with it, every route (but `/healthz` and
    /// `/readyz`) needs basic auth or its group's token.
    pub basic: Option<Arc<BasicAuth>>,
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
            basic: server
                .web
                .as_ref()
                .filter(|w| !w.basic_auth_users.is_empty())
                .map(|w| {
                    Arc::new(BasicAuth::new(
                        w.basic_auth_users
                            .iter()
                            .map(|(u, h)| (u.clone(), h.0.clone()))
                            .collect(),
                    ))
                }),
        }
    }

    /// Whether the request may use a route of `group`: its bearer token, or (when configured)
    /// basic auth. Without basic auth, exactly the token rule of SPEC §6.
    pub async fn allow(&self, group: Group, headers: &HeaderMap) -> Result<(), ApiError> {
        let secret = match group {
            Group::Ingest => &self.ingest,
            Group::Admin => &self.admin,
            Group::Metrics => &self.metrics,
        };
        let Some(basic) = &self.basic else {
            return secret.check(headers);
        };
        if secret.is_set() && secret.check(headers).is_ok() {
            return Ok(());
        }
        match basic_credentials(headers) {
            Some((user, pass)) if basic.verify(&user, &pass).await => Ok(()),
            Some(_) => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "wrong user name or password",
            )
            .basic_challenge()),
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                if secret.is_set() {
                    "this route needs basic auth or an Authorization: Bearer token"
                } else {
                    "this route needs basic auth"
                },
            )
            .basic_challenge()),
        }
    }
}

/// The user and password of an `Authorization: Basic` header (RFC 7617), if there is one.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

/// Verified (user, password) pairs remembered, so a scraper does not pay bcrypt per request.
const CACHE_ENTRIES: usize = 4096;

/// bcrypt checks at once: each holds a blocking thread for tens of milliseconds, and a flood of
/// guesses must not take every core.
const CHECKS_AT_ONCE: usize = 2;

/// `basic_auth_users`: user → bcrypt hash, with the answers of checks already made.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// A hash of the same cost as the users' own, checked for unknown users so the time
    /// taken does not tell which user names exist; made at the first unknown user, not at
    /// start (a bcrypt hash takes as long as a check).
    decoy: Arc<std::sync::OnceLock<String>>,
    /// The users' bcrypt cost, for the decoy.
    cost: u32,
    /// SHA-256 of user, NUL, password → whether it matched.
    seen: Mutex<HashMap<[u8; 32], bool>>,
    checks: Semaphore,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl BasicAuth {
    /// The users of a web config (hashes already checked to be bcrypt when the file was read).
    pub fn new(users: BTreeMap<String, String>) -> BasicAuth {
        let cost = users
            .values()
            .find_map(|h| h.parse::<bcrypt::HashParts>().ok())
            .map_or(bcrypt::DEFAULT_COST, |p| p.get_cost());
        BasicAuth {
            users,
            decoy: Arc::default(),
            cost,
            seen: Mutex::new(HashMap::new()),
            checks: Semaphore::new(CHECKS_AT_ONCE),
        }
    }

    /// Whether `pass` is `user`'s password.
    pub async fn verify(&self, user: &str, pass: &str) -> bool {
        let mut h = sha2::Sha256::new();
        h.update(user.as_bytes());
        h.update([0]);
        h.update(pass.as_bytes());
        let key: [u8; 32] = h.finalize().into();
        if let Some(ok) = self.seen.lock().ok().and_then(|m| m.get(&key).copied()) {
            return ok;
        }
        let Ok(_permit) = self.checks.acquire().await else {
            return false;
        };
        let known = self.users.get(user);
        let hash = known.cloned();
        let (decoy, cost) = (self.decoy.clone(), self.cost);
        let pass = pass.to_string();
        let matched = tokio::task::spawn_blocking(move || {
            let hash = hash.as_deref().unwrap_or_else(|| {
                decoy.get_or_init(|| bcrypt::hash("ratewarden decoy", cost).unwrap_or_default())
            });
            bcrypt::verify(pass, hash)
        })
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(false);
        let ok = matched && known.is_some();
        if let Ok(mut m) = self.seen.lock() {
            if m.len() >= CACHE_ENTRIES {
                m.clear();
            }
            m.insert(key, ok);
        }
        ok
    }
}
