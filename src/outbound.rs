//! Outbound HTTP: the one client setup, and its hygiene — what may appear in an error, and
//! where a request may go. Alert delivery and the batch dispatcher both build on it.
//!
//! Every client sends [`USER_AGENT`], follows no redirect (a redirect would carry an API key or
//! a signed body to a host nobody configured) and reads answers a chunk at a time up to a cap
//! ([`read_body`]). [`retry_after`] reads `Retry-After` (RFC 9110 §10.2.3) and [`backoff_ms`]
//! is the full-jitter backoff both retry loops use.
//!
//! A webhook URL is a credential (Slack-style paths, `?token=`), and an upstream request
//! carries the API key: so no error text, log line or stored message ever holds a whole URL
//! ([`redact`], [`error_text`]), and a request is built only from the configured base URL
//! plus a path that cannot move it to another host, port or scheme ([`Base::url`]); a value
//! from a remote answer goes into a path as one percent-encoded segment ([`segment`]).

use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Url;
use reqwest::header::RETRY_AFTER;

/// The `User-Agent` of every request ratewarden sends (webhooks, upstream APIs).
pub const USER_AGENT: &str = concat!("ratewarden/", env!("CARGO_PKG_VERSION"));

/// An HTTP client for outbound requests: [`USER_AGENT`], no redirects, the whole request
/// bounded by `timeout_ms` and connecting by at most `connect_ms` of it.
pub fn client(timeout_ms: i64, connect_ms: i64) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_millis(timeout_ms.max(0) as u64))
        .connect_timeout(Duration::from_millis(
            timeout_ms.min(connect_ms).max(0) as u64
        ))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}

/// Credentials a remote answer must not repeat back into our errors, logs, store or API: a
/// receiver that echoes the request (an error page quoting the URL, a debug endpoint
/// returning the headers) would otherwise hand them to whoever reads those.
#[derive(Debug, Clone, Default)]
pub struct Secrets(Vec<String>);

/// What a scrubbed secret reads as.
const SCRUBBED: &str = "[redacted]";

impl Secrets {
    /// The secrets of a URL that is itself a credential (a webhook's): the whole URL, its
    /// path and query, the password, every query value and every path segment of 8 or more
    /// characters (Slack-style tokens; short words such as `api` are left alone).
    pub fn of_url(text: &str) -> Secrets {
        let mut s = Secrets::default().with(text);
        if let Ok(url) = Url::parse(text) {
            s = s.with(url.path());
            if let Some(q) = url.query() {
                s = s.with(q);
            }
            if let Some(p) = url.password() {
                s = s.with(p);
            }
            for (_, v) in url.query_pairs() {
                s = s.with(&v);
            }
            for seg in url.path_segments().into_iter().flatten() {
                if seg.len() >= 8 {
                    s = s.with(seg);
                }
            }
        }
        s
    }

    /// These and `secret` (ignored when shorter than 4 bytes: too common to mean anything).
    pub fn with(mut self, secret: &str) -> Secrets {
        if secret.len() >= 4 && !self.0.iter().any(|s| s == secret) {
            self.0.push(secret.to_string());
            // Longest first, so a URL goes as a whole before its parts are looked for.
            self.0.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
        self
    }

    /// `text` with every secret replaced by `[redacted]`. A text that still holds one in an
    /// encoded form (JSON `\uXXXX` or `\/` escapes, `%XX`: an answer that echoes the request
    /// as JSON) is withheld whole, since its parts could not be told apart.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.0 {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), SCRUBBED);
            }
        }
        if !self.0.is_empty() && (out.contains('\\') || out.contains('%')) {
            let plain = unescaped(&out);
            if self.0.iter().any(|s| plain.contains(s.as_str())) {
                return WITHHELD.to_string();
            }
        }
        out
    }
}

/// What an answer is quoted as when it holds a secret in an encoded form.
const WITHHELD: &str = "[answer withheld: it holds a secret in an encoded form]";

/// `text` with JSON escapes (`\uXXXX`, `\/`, `\"`, `\\`) and percent escapes decoded, for
/// looking for secrets; what does not decode stays as it is.
fn unescaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let decoded = match c {
            '\\' => match rest.get(1..2) {
                Some("u") => rest
                    .get(2..6)
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .and_then(char::from_u32)
                    .map(|ch| (ch, 6)),
                Some(e @ ("/" | "\"" | "\\")) => e.chars().next().map(|ch| (ch, 2)),
                _ => None,
            },
            '%' => rest
                .get(1..3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .filter(u8::is_ascii)
                .map(|b| (char::from(b), 3)),
            _ => None,
        };
        let (ch, len) = decoded.unwrap_or((c, c.len_utf8()));
        out.push(ch);
        rest = &rest[len..];
    }
    out
}

/// An answer's first `max` bytes, read a chunk at a time so that a huge (or endless) answer
/// costs no more than that; the rest is not read. A body that fails half-way is what arrived.
/// `secrets` are scrubbed from it (see [`Secrets`]).
pub async fn read_body(mut resp: reqwest::Response, max: usize, secrets: &Secrets) -> String {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = max - out.len();
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= max {
            break;
        }
    }
    secrets.scrub(&String::from_utf8_lossy(&out))
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110 §10.2.3), as a wait from `now_ms`; the
/// same reading events use.
pub fn parse_retry_after(value: &str, now_ms: i64) -> Option<Duration> {
    crate::events::retry_after_header_ms(value, now_ms).map(|ms| Duration::from_millis(ms as u64))
}

/// The wait a response's `Retry-After` header asks for, if it has a readable one.
pub fn retry_after(headers: &reqwest::header::HeaderMap, now_ms: i64) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, now_ms))
}

/// Full-jitter exponential backoff (ms): a random wait between `base` and
/// `min(cap, base × 2^attempts)`, drawn from `rng`.
pub fn backoff_ms(rng: &mut fastrand::Rng, base: i64, cap: i64, attempts: u32) -> i64 {
    let ceiling = base
        .saturating_mul(1i64 << attempts.min(30))
        .min(cap)
        .max(base);
    rng.i64(base..=ceiling)
}

/// Characters escaped in a value put into a path: everything but RFC 3986's unreserved
/// characters (§2.3), so the value stays one segment and cannot add a query (`?a&b=c`), a
/// fragment or a parent step, wherever in the URL the template puts it.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A URL as it may be shown: scheme, host and port, nothing of its path, query or user.
pub fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{}://{h}:{p}/…", u.scheme()),
            (Some(h), None) => format!("{}://{h}/…", u.scheme()),
            _ => "(a URL)".into(),
        },
        Err(_) => "(a URL)".into(),
    }
}

/// A reqwest error as text without the URL it was for.
pub fn error_text(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the answer could not be read"
    } else if e.is_redirect() {
        "too many redirects"
    } else {
        "request failed"
    };
    // The source chain says why (refused, reset, certificate); reqwest's own text would add
    // the URL.
    let mut cause = std::error::Error::source(e);
    let mut why = None;
    while let Some(c) = cause {
        why = Some(c.to_string());
        cause = c.source();
    }
    match why {
        Some(w) if !w.contains("://") => format!("{kind}: {w}"),
        _ => kind.to_string(),
    }
}

/// `value` as one path segment, percent-encoded (`@127.0.0.1:9/x` and `../../admin` stay
/// one harmless segment). Empty, `.` and `..` cannot be one: URL parsers read them (also
/// percent-encoded) as "this" and "the parent".
pub fn segment(value: &str) -> Result<String, String> {
    if matches!(value, "" | "." | "..") {
        return Err(format!("{value:?} cannot be a path segment"));
    }
    Ok(utf8_percent_encode(value, SEGMENT).to_string())
}

/// A configured base URL that requests are built on and held to.
#[derive(Debug, Clone)]
pub struct Base {
    url: Url,
}

impl Base {
    /// Parses a base URL (http or https, a host, no `user:password@`).
    pub fn parse(text: &str) -> Result<Base, String> {
        let url = Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err("not an http(s) URL with a host".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "has a user:password@ part: credentials go in the *_env or *_file setting of the key, never in a URL"
                    .into(),
            );
        }
        Ok(Base { url })
    }

    /// The URL for `path` (which starts with `/`) under this base, or why it would leave the
    /// configured scheme, host and port, or climb out of the base URL's path (`/../admin`,
    /// `/%2e%2e/admin`): then nothing is sent.
    pub fn url(&self, path: &str) -> Result<Url, String> {
        let base = self.url.as_str().trim_end_matches('/');
        let url = Url::parse(&format!("{base}{path}"))
            .map_err(|e| format!("the path does not make a URL: {e}"))?;
        if url.scheme() != self.url.scheme()
            || url.host_str() != self.url.host_str()
            || url.port_or_known_default() != self.url.port_or_known_default()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Err("refused: the request would go to another host than base_url".into());
        }
        let prefix = self.url.path().trim_end_matches('/');
        let inside = url
            .path()
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        if !inside {
            return Err(format!(
                "refused: the path leaves base_url's path {}",
                if prefix.is_empty() { "/" } else { prefix }
            ));
        }
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_echoed_in_an_encoded_form_withholds_the_answer() {
        let secrets = Secrets::default().with("sk-admin-LEAK-42");
        assert_eq!(
            secrets.scrub("bad key sk-admin-LEAK-42"),
            "bad key [redacted]"
        );
        for encoded in [
            r#"{"error":"bad key sk\u002dadmin\u002dLEAK\u002d42"}"#,
            "bad key sk%2Dadmin%2DLEAK%2D42",
        ] {
            assert_eq!(secrets.scrub(encoded), WITHHELD, "{encoded}");
        }
        let plain = r#"{"error":"rate limited\u0021", "path":"\/v1\/x", "pct":"100%"}"#;
        assert_eq!(
            secrets.scrub(plain),
            plain,
            "nothing to hide: quoted as it is"
        );
        assert_eq!(unescaped("a\\u00e9b%41\\/%zz\\q"), "aébA/%zz\\q");
    }

    #[test]
    fn urls_are_shown_without_their_secrets() {
        assert_eq!(
            redact("https://hooks.slack.com/services/T000/B000/XXXX?token=s3cret"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            redact("http://user:pw@h:9093/api/v2/alerts"),
            "http://h:9093/…"
        );
        assert_eq!(redact("not a url"), "(a URL)");
    }

    #[test]
    fn remote_values_stay_one_segment() {
        let base = Base::parse("http://127.0.0.1:8080/api").unwrap();
        for id in ["@127.0.0.1:9/x", "../../admin", "a/b?c#d", "x%2F", "..."] {
            let path = format!("/v1/videos/{}", segment(id).unwrap());
            let url = base.url(&path).unwrap();
            assert_eq!(url.host_str(), Some("127.0.0.1"), "{id}");
            assert_eq!(url.port(), Some(8080), "{id}");
            assert!(url.path().starts_with("/api/v1/videos/"), "{id}: {url}");
            assert_eq!(url.path_segments().unwrap().count(), 4, "{id}: {url}");
        }
    }

    #[test]
    fn a_value_cannot_add_to_a_query() {
        let base = Base::parse("http://127.0.0.1:8080/api").unwrap();
        let path = format!("/s?id={}", segment("1&admin=true#x").unwrap());
        let url = base.url(&path).unwrap();
        assert_eq!(url.query(), Some("id=1%26admin%3Dtrue%23x"));
        assert_eq!(url.query_pairs().count(), 1);
    }

    #[test]
    fn a_path_cannot_climb_out_of_the_base_path() {
        let base = Base::parse("http://h.example/api/").unwrap();
        assert!(base.url("/v1/x").is_ok());
        for path in [
            "/../p4",
            "/../../p4",
            "/%2e%2e/p8",
            "/v1/../../p",
            "/.%2E/p",
        ] {
            let e = base.url(path).unwrap_err();
            assert!(e.contains("leaves base_url's path /api"), "{path}: {e}");
        }
        let root = Base::parse("http://h.example").unwrap();
        assert!(root.url("/../x").is_ok(), "nothing to leave at the root");
    }

    #[test]
    fn echoed_credentials_are_scrubbed() {
        let url = "https://hooks.example.com/hook/SECRETPATH2?token=SECRETQ2";
        let s = Secrets::of_url(url).with("sk-SECRETKEY123");
        let echoed = format!(
            "<h1>500</h1> POST {url} GET /hook/SECRETPATH2?token=SECRETQ2 token=SECRETQ2 \
             Authorization: Bearer sk-SECRETKEY123 at /hook"
        );
        let clean = s.scrub(&echoed);
        for secret in ["SECRETPATH2", "SECRETQ2", "sk-SECRETKEY123"] {
            assert!(!clean.contains(secret), "{clean}");
        }
        assert!(clean.contains("at /hook"), "short words stay: {clean}");
        assert_eq!(Secrets::default().with("ab").scrub("ab cd"), "ab cd");
    }

    #[test]
    fn dot_segments_are_refused() {
        for id in ["", ".", ".."] {
            assert!(segment(id).is_err(), "{id:?}");
        }
    }

    #[test]
    fn a_path_cannot_move_the_request() {
        let base = Base::parse("http://api.example.com").unwrap();
        assert!(base.url("/v1/x").is_ok());
        assert!(base.url("@evil.example.com/x").is_err());
        assert!(base.url(":9/x").is_err());
        assert!(Base::parse("https://u:p@api.example.com").is_err());
        assert!(Base::parse("ftp://api.example.com").is_err());
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(parse_retry_after("7", 0), Some(Duration::from_secs(7)));
        let now = chrono::DateTime::parse_from_rfc2822("Fri, 27 Nov 2026 14:00:00 GMT")
            .unwrap()
            .timestamp_millis();
        assert_eq!(
            parse_retry_after("Fri, 27 Nov 2026 14:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Fri, 27 Nov 2026 13:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
