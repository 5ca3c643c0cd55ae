//! A limit source ready to poll: its config and its admin key, and why a poll failed.

use std::fmt;

use crate::config::LimitSource;

/// The most bytes of one page accepted; a longer answer is a failed poll.
pub const MAX_BODY_BYTES: usize = 8 << 20;

/// The most pages one poll follows; a cursor that never ends is a failed poll.
pub const MAX_PAGES: usize = 1000;

/// An admin key. It shows as `[redacted]` in `Debug` and has no `Display`: the only way to
/// the text is [`AdminKey::expose`], for the request header.
#[derive(Clone)]
pub struct AdminKey(String);

impl AdminKey {
    /// Wraps a key.
    pub fn new(key: String) -> AdminKey {
        AdminKey(key)
    }

    /// The key, to put in a request header and nowhere else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// One `[[limit_sources]]` with its key.
#[derive(Debug, Clone)]
pub struct Source {
    /// As configured.
    pub config: LimitSource,
    /// Its admin key.
    pub key: AdminKey,
}

impl Source {
    /// `config` with `key`.
    pub fn new(config: LimitSource, key: AdminKey) -> Source {
        Source { config, key }
    }

    /// `config` with the key read from its `admin_key_env` now; the error names the variable.
    pub fn from_env(config: LimitSource) -> Result<Source, FetchError> {
        match config.admin_key().read() {
            Ok(key) => Ok(Source::new(config, AdminKey::new(key))),
            Err(why) => Err(FetchError::Key(why)),
        }
    }
}

/// Why a poll failed. No message holds the admin key or a whole URL.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The admin key's variable is unset or empty.
    #[error("no admin key: {0}")]
    Key(String),
    /// The request URL could not be built from base_url.
    #[error("cannot build the request: {0}")]
    Url(String),
    /// The request failed (connect, timeout, reset); the text has no URL.
    #[error("request failed: {0}")]
    Request(String),
    /// The API answered with an error status (its answer quoted in part, scrubbed of the key).
    #[error("the admin API answered {status}: {body}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// Up to 256 bytes of the answer.
        body: String,
    },
    /// The answer is longer than [`MAX_BODY_BYTES`].
    #[error("the answer is longer than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    /// The answer is not the documented shape.
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// More than [`MAX_PAGES`] pages, or a cursor that repeats.
    #[error("pagination did not end: {0}")]
    Pages(String),
}
