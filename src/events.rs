//! Events: the unit of ingestion (SPEC §4), parsed and validated from raw bytes.
//!
//! Every source (HTTP bodies, replayed files, later the file tailer) hands raw bytes to
//! [`parse_event`] and gets either a validated [`Event`] borrowing from those bytes or exactly
//! one [`Rejection`] reason. This module never counts, stores or judges events; it only says
//! what an event is. The per-event path allocates only for strings with JSON escapes.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::value::RawValue;

/// Live events further ahead of the wall clock than this are rejected (`future_timestamp`).
pub const MAX_FUTURE_MS: i64 = 5 * 60 * 1000;
/// Default largest accepted event (one NDJSON line or array element), in bytes.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 64 * 1024;
/// Earliest accepted event time: 1970-01-01T00:00:00Z.
const MIN_TS_MS: i64 = 0;
/// Latest accepted event time: 2100-01-01T00:00:00Z. Anything later is a broken clock.
const MAX_TS_MS: i64 = 4_102_444_800_000;

/// Why an event was not accepted. The label value of `events_rejected_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Not a JSON object, or not JSON at all.
    InvalidJson,
    /// No `org` in the event and none supplied by the source.
    MissingOrg,
    /// A field has the wrong type or an out-of-range value.
    InvalidField,
    /// `ts` more than 5 minutes ahead of the wall clock (live only).
    FutureTimestamp,
    /// The event (or line) is larger than allowed.
    TooLarge,
}

impl Reason {
    /// Every reason, for pre-registering metric series.
    pub const ALL: [Reason; 5] = [
        Reason::InvalidJson,
        Reason::MissingOrg,
        Reason::InvalidField,
        Reason::FutureTimestamp,
        Reason::TooLarge,
    ];

    /// The stable name used in metrics and API answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidJson => "invalid_json",
            Reason::MissingOrg => "missing_org",
            Reason::InvalidField => "invalid_field",
            Reason::FutureTimestamp => "future_timestamp",
            Reason::TooLarge => "too_large",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected event: the reason plus a human detail for logs and API answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// The counted reason.
    pub reason: Reason,
    /// What exactly was wrong.
    pub detail: Cow<'static, str>,
}

impl Rejection {
    fn new(reason: Reason, detail: impl Into<Cow<'static, str>>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }

    /// An event larger than the source allows.
    pub fn too_large(len: usize, max: usize) -> Self {
        Rejection::new(
            Reason::TooLarge,
            format!("event is {len} bytes, the limit is {max}"),
        )
    }
}

/// What an event is (SPEC §4 `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
pub enum Kind {
    /// An API request; counts against RPM and daily usage whatever its status.
    Request,
    /// A job started (lifecycle only, not a request).
    JobStarted,
    /// A job finished successfully.
    JobCompleted,
    /// A job failed.
    JobFailed,
    /// A job was cancelled.
    JobCancelled,
}

/// Outcome of a request, the `outcome` label of `requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 1xx–3xx.
    Success,
    /// 429.
    RateLimited,
    /// Other 4xx.
    ClientError,
    /// 5xx.
    ServerError,
    /// No status known.
    Unknown,
}

impl Outcome {
    /// Every outcome, in label order.
    pub const ALL: [Outcome; 5] = [
        Outcome::Success,
        Outcome::RateLimited,
        Outcome::ClientError,
        Outcome::ServerError,
        Outcome::Unknown,
    ];

    /// Classifies an HTTP status.
    pub fn of(status: Option<u16>) -> Outcome {
        match status {
            None => Outcome::Unknown,
            Some(429) => Outcome::RateLimited,
            Some(400..=499) => Outcome::ClientError,
            Some(500..=599) => Outcome::ServerError,
            Some(_) => Outcome::Success,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::RateLimited => "rate_limited",
            Outcome::ClientError => "client_error",
            Outcome::ServerError => "server_error",
            Outcome::Unknown => "unknown",
        }
    }

    /// Position in [`Outcome::ALL`], for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The upstream's `x-ratelimit-*` headers as carried by an event.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, Deserialize)]
pub struct RateLimitInfo {
    /// `x-ratelimit-limit-requests`.
    pub limit_requests: Option<u64>,
    /// `x-ratelimit-remaining-requests`.
    pub remaining_requests: Option<u64>,
    /// `x-ratelimit-reset-requests`, in milliseconds.
    pub reset_requests_ms: Option<i64>,
    /// `x-ratelimit-limit-tokens`.
    pub limit_tokens: Option<u64>,
    /// `x-ratelimit-remaining-tokens`.
    pub remaining_tokens: Option<u64>,
    /// `x-ratelimit-reset-tokens`, in milliseconds.
    pub reset_tokens_ms: Option<i64>,
}

/// A validated event, borrowing its strings from the input where it can.
///
/// Serialized (postcard) into the store's journal; the field order is part of that format.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub struct Event<'a> {
    /// Event time in Unix milliseconds; `None` means "when received" (or the replay clock).
    pub ts_ms: Option<i64>,
    /// Organization the limits apply to.
    #[serde(borrow)]
    pub org: Cow<'a, str>,
    /// Application within the org (`None` = `default`).
    pub app: Option<Cow<'a, str>>,
    /// Request or job lifecycle event.
    pub kind: Kind,
    /// HTTP status of a request.
    pub status: Option<u16>,
    /// Job id, scoped per org.
    pub job_id: Option<Cow<'a, str>>,
    /// Retry-After sent with a 429, in milliseconds.
    pub retry_after_ms: Option<i64>,
    /// Upstream error code, e.g. `insufficient_quota`.
    pub error_code: Option<Cow<'a, str>>,
    /// Tokens consumed.
    pub tokens: Option<u64>,
    /// Request latency in milliseconds.
    pub latency_ms: Option<f64>,
    /// Dedupe key.
    pub request_id: Option<Cow<'a, str>>,
    /// Upstream rate-limit headers.
    pub ratelimit: Option<RateLimitInfo>,
}

impl Event<'_> {
    /// The request outcome.
    pub fn outcome(&self) -> Outcome {
        Outcome::of(self.status)
    }

    /// The app, `default` when absent.
    pub fn app_name(&self) -> &str {
        self.app.as_deref().unwrap_or("default")
    }
}

/// What the source knows that the event may not say.
#[derive(Debug, Clone, Copy, Default)]
pub struct ParseContext<'c> {
    /// Org for events that carry none.
    pub default_org: Option<&'c str>,
    /// App for events that carry none (else `default`).
    pub default_app: Option<&'c str>,
    /// Wall clock in ms for the future-timestamp check; `None` in replay (no check).
    pub now_ms: Option<i64>,
}

/// A 64-bit FNV-1a hash of `parts`, each followed by a separator so ("ab","c") and
/// ("a","bc") differ. Stable across processes and versions: it is used for stored keys and
/// alert fingerprints. Not a defence against chosen collisions.
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.iter().chain(&[0x1f]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// True for a valid org/app name: 1–128 printable characters.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.chars().count() <= 128 && !s.chars().any(char::is_control)
}

/// Parses and validates one event. `bytes` is one JSON object (an NDJSON line or array element).
pub fn parse_event<'a>(bytes: &'a [u8], ctx: &ParseContext<'a>) -> Result<Event<'a>, Rejection> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(Rejection::new(
            Reason::InvalidJson,
            "an event must be a JSON object",
        ));
    }
    // One UTF-8 check of the whole line is cheaper than serde_json's check of every string.
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Rejection::new(Reason::InvalidJson, "event is not valid UTF-8"))?;
    let wire: Wire<'a> = serde_json::from_str(text).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => Rejection::new(Reason::InvalidField, e.to_string()),
            _ => Rejection::new(Reason::InvalidJson, e.to_string()),
        }
    })?;
    wire.validate(ctx)
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    ts: Option<WireTs<'a>>,
    #[serde(borrow, default)]
    org: Option<Text<'a>>,
    #[serde(borrow, default)]
    app: Option<Text<'a>>,
    #[serde(borrow, default)]
    user: Option<Text<'a>>,
    #[serde(borrow, default)]
    model: Option<Text<'a>>,
    #[serde(borrow, default)]
    kind: Option<Text<'a>>,
    #[serde(default)]
    status: Option<i64>,
    #[serde(borrow, default)]
    job_id: Option<Text<'a>>,
    #[serde(default)]
    retry_after: Option<f64>,
    #[serde(borrow, default)]
    error_code: Option<Text<'a>>,
    #[serde(default)]
    tokens: Option<u64>,
    #[serde(default)]
    latency_ms: Option<f64>,
    #[serde(borrow, default)]
    request_id: Option<Text<'a>>,
    #[serde(borrow, default)]
    ratelimit: Option<WireRateLimit<'a>>,
}

#[derive(Deserialize)]
struct WireRateLimit<'a> {
    #[serde(default)]
    limit_requests: Option<u64>,
    #[serde(default)]
    remaining_requests: Option<u64>,
    #[serde(borrow, default)]
    reset_requests: Option<Text<'a>>,
    #[serde(default)]
    limit_tokens: Option<u64>,
    #[serde(default)]
    remaining_tokens: Option<u64>,
    #[serde(borrow, default)]
    reset_tokens: Option<Text<'a>>,
}

/// An event time as a log format carries it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TsField<'a> {
    /// RFC 3339 text.
    Rfc3339(&'a str),
    /// Unix milliseconds.
    Millis(i64),
    /// Unix seconds (`$msec`).
    Seconds(f64),
}

/// Event fields taken from a non-JSON line (nginx, Envoy), already typed. Built into an
/// [`Event`] by [`event_from_fields`] with exactly the validation of JSON events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields<'a> {
    /// `ts`.
    pub ts: Option<TsField<'a>>,
    /// `org`.
    pub org: Option<&'a str>,
    /// `app`.
    pub app: Option<&'a str>,
    /// `user`.
    pub user: Option<&'a str>,
    /// `model`.
    pub model: Option<&'a str>,
    /// `kind`.
    pub kind: Option<&'a str>,
    /// `status`.
    pub status: Option<i64>,
    /// `job_id`.
    pub job_id: Option<&'a str>,
    /// `retry_after`, seconds.
    pub retry_after: Option<f64>,
    /// `error_code`.
    pub error_code: Option<&'a str>,
    /// `tokens`.
    pub tokens: Option<u64>,
    /// `latency_ms`.
    pub latency_ms: Option<f64>,
    /// `request_id`.
    pub request_id: Option<&'a str>,
}

/// Validates fields taken from a log line into an event.
pub fn event_from_fields<'a>(
    f: Fields<'a>,
    ctx: &ParseContext<'a>,
) -> Result<Event<'a>, Rejection> {
    let t = |s: Option<&'a str>| s.map(|s| Text(Cow::Borrowed(s)));
    Wire {
        ts: f.ts.map(|ts| match ts {
            TsField::Rfc3339(s) => WireTs::Text(Cow::Borrowed(s)),
            TsField::Millis(ms) => WireTs::Millis(ms),
            TsField::Seconds(s) => WireTs::Number(s),
        }),
        org: t(f.org),
        app: t(f.app),
        user: t(f.user),
        model: t(f.model),
        kind: t(f.kind),
        status: f.status,
        job_id: t(f.job_id),
        retry_after: f.retry_after,
        error_code: t(f.error_code),
        tokens: f.tokens,
        latency_ms: f.latency_ms,
        request_id: t(f.request_id),
        ratelimit: None,
    }
    .validate(ctx)
}

/// Validates an already parsed JSON object (a log line whose fields were moved to where the
/// event schema expects them).
pub fn event_from_value<'a>(
    value: serde_json::Value,
    ctx: &ParseContext<'a>,
) -> Result<Event<'a>, Rejection> {
    if !value.is_object() {
        return Err(Rejection::new(
            Reason::InvalidJson,
            "an event must be a JSON object",
        ));
    }
    let wire = Wire::deserialize(value)
        .map_err(|e| Rejection::new(Reason::InvalidField, e.to_string()))?;
    wire.validate(ctx)
}

/// A JSON string that borrows from the input unless it has escapes. (serde's own `Cow`
/// support does not borrow inside an `Option`.)
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

fn text(t: Option<Text<'_>>) -> Option<Cow<'_, str>> {
    t.map(|t| t.0)
}

/// `ts` as written: a string (RFC 3339) or a number (epoch s, or ms above 1e12).
enum WireTs<'a> {
    Text(Cow<'a, str>),
    Number(f64),
    /// Already milliseconds (from a log format), exempt from the seconds/ms heuristic.
    Millis(i64),
}

impl<'de: 'a, 'a> Deserialize<'de> for WireTs<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = WireTs<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an RFC 3339 string or epoch seconds/milliseconds")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<WireTs<'a>, E> {
                Ok(WireTs::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<WireTs<'a>, E> {
                Ok(WireTs::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<WireTs<'a>, E> {
                Ok(WireTs::Number(v as f64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<WireTs<'a>, E> {
                Ok(WireTs::Number(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<WireTs<'a>, E> {
                Ok(WireTs::Number(v))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

fn invalid(detail: impl Into<Cow<'static, str>>) -> Rejection {
    Rejection::new(Reason::InvalidField, detail)
}

fn short_string(name: &'static str, v: &Option<Cow<'_, str>>) -> Result<(), Rejection> {
    match v {
        Some(s) if s.len() > 256 => Err(invalid(format!("{name} is longer than 256 bytes"))),
        _ => Ok(()),
    }
}

impl<'a> Wire<'a> {
    fn validate(self, ctx: &ParseContext<'a>) -> Result<Event<'a>, Rejection> {
        let (app, user, model, kind) = (
            text(self.app),
            text(self.user),
            text(self.model),
            text(self.kind),
        );
        let (job_id, error_code, request_id) = (
            text(self.job_id),
            text(self.error_code),
            text(self.request_id),
        );
        let org = match text(self.org) {
            Some(org) => {
                if !valid_name(&org) || org == crate::tracker::OVERFLOW {
                    return Err(invalid("org must be 1-128 printable characters"));
                }
                org
            }
            None => match ctx.default_org {
                Some(org) => Cow::Borrowed(org),
                None => {
                    return Err(Rejection::new(
                        Reason::MissingOrg,
                        "event has no org and its source supplies none",
                    ));
                }
            },
        };
        if let Some(app) = &app
            && (!valid_name(app) || app == crate::tracker::OVERFLOW)
        {
            return Err(invalid("app must be 1-128 printable characters"));
        }
        let app = app.or(ctx.default_app.map(Cow::Borrowed));
        let kind = match kind.as_deref() {
            None | Some("request") => Kind::Request,
            Some("job_started") => Kind::JobStarted,
            Some("job_completed") => Kind::JobCompleted,
            Some("job_failed") => Kind::JobFailed,
            Some("job_cancelled") => Kind::JobCancelled,
            Some(_) => {
                return Err(invalid(
                    "unknown kind (request, job_started, job_completed, job_failed, job_cancelled)",
                ));
            }
        };
        let status = match self.status {
            None => None,
            Some(s @ 100..=599) => Some(s as u16),
            Some(_) => return Err(invalid("status must be an HTTP status 100-599")),
        };
        short_string("user", &user)?;
        short_string("model", &model)?;
        short_string("job_id", &job_id)?;
        short_string("error_code", &error_code)?;
        short_string("request_id", &request_id)?;
        if let Some(j) = &job_id
            && j.is_empty()
        {
            return Err(invalid("job_id must not be empty"));
        }
        if kind != Kind::Request && job_id.is_none() {
            return Err(invalid("job lifecycle events need a job_id"));
        }
        let retry_after_ms = match self.retry_after {
            None => None,
            Some(v) if v.is_finite() && (0.0..=1e9).contains(&v) => Some((v * 1000.0) as i64),
            Some(_) => return Err(invalid("retry_after must be a number of seconds >= 0")),
        };
        if let Some(l) = self.latency_ms
            && !(l.is_finite() && l >= 0.0)
        {
            return Err(invalid("latency_ms must be a number >= 0"));
        }
        let ts_ms = match &self.ts {
            None => None,
            Some(WireTs::Number(n)) => Some(epoch_number_ms(*n)?),
            Some(WireTs::Millis(ms)) => Some(check_range(*ms)?),
            Some(WireTs::Text(t)) => Some(
                parse_rfc3339_ms(t)
                    .ok_or_else(|| invalid("ts is not an RFC 3339 time"))
                    .and_then(check_range)?,
            ),
        };
        if let (Some(ts), Some(now)) = (ts_ms, ctx.now_ms)
            && ts > now + MAX_FUTURE_MS
        {
            return Err(Rejection::new(
                Reason::FutureTimestamp,
                "ts is more than 5 minutes ahead of the clock",
            ));
        }
        let ratelimit = match self.ratelimit {
            None => None,
            Some(r) => Some(RateLimitInfo {
                limit_requests: r.limit_requests,
                remaining_requests: r.remaining_requests,
                reset_requests_ms: reset(text(r.reset_requests).as_deref(), "reset_requests")?,
                limit_tokens: r.limit_tokens,
                remaining_tokens: r.remaining_tokens,
                reset_tokens_ms: reset(text(r.reset_tokens).as_deref(), "reset_tokens")?,
            }),
        };
        Ok(Event {
            ts_ms,
            org,
            app,
            kind,
            status,
            job_id,
            retry_after_ms,
            error_code,
            tokens: self.tokens,
            latency_ms: self.latency_ms,
            request_id,
            ratelimit,
        })
    }
}

fn reset(v: Option<&str>, name: &'static str) -> Result<Option<i64>, Rejection> {
    v.map(|s| {
        parse_go_duration_ms(s).ok_or_else(|| {
            invalid(format!(
                "ratelimit.{name} must be a duration like \"6m0s\" or \"20ms\""
            ))
        })
    })
    .transpose()
}

fn check_range(ms: i64) -> Result<i64, Rejection> {
    if (MIN_TS_MS..MAX_TS_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err(invalid("ts is outside 1970..2100"))
    }
}

/// Epoch seconds, or milliseconds when above 1e12 (SPEC §4).
fn epoch_number_ms(n: f64) -> Result<i64, Rejection> {
    let ms = if n > 1e12 { n } else { n * 1000.0 };
    if !ms.is_finite() || ms < MIN_TS_MS as f64 || ms >= MAX_TS_MS as f64 {
        return Err(invalid("ts is outside 1970..2100"));
    }
    Ok(ms.round() as i64)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// RFC 3339 to Unix ms. A hand-rolled fast path for the common shape
/// (`2026-11-27T14:00:00.123Z`, any fraction, `Z` or `±hh:mm`), and chrono for the rest.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    fast_rfc3339(s.as_bytes()).or_else(|| {
        chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_millis())
    })
}

fn fast_rfc3339(b: &[u8]) -> Option<i64> {
    fn num(b: &[u8]) -> Option<u32> {
        let mut v = 0u32;
        for &c in b {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + (c - b'0') as u32;
        }
        Some(v)
    }
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(&b[0..4])? as i64, num(&b[5..7])?, num(&b[8..10])?);
    let (h, mi, s) = (num(&b[11..13])?, num(&b[14..16])?, num(&b[17..19])?);
    // Leap seconds and other oddities go to chrono.
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 59
    {
        return None;
    }
    let mut i = 19;
    let mut frac_ms = 0i64;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                frac_ms = frac_ms * 10 + (b[i] - b'0') as i64;
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..3 {
            frac_ms *= 10;
        }
    }
    let offset_min: i64 = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = num(&b[i + 1..i + 3])? as i64;
            let om = num(&b[i + 4..i + 6])? as i64;
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 60 + om;
            if *sign == b'-' { -off } else { off }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + (h * 3600 + mi * 60 + s) as i64 - offset_min * 60;
    Some(secs * 1000 + frac_ms)
}

/// A Go duration (`"6m0s"`, `"1.5s"`, `"20ms"`, `"0s"`), as OpenAI sends in
/// `x-ratelimit-reset-*`, to milliseconds.
pub fn parse_go_duration_ms(s: &str) -> Option<i64> {
    if s == "0" {
        return Some(0);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if n == 0 {
            return None;
        }
        let v: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_ms = match &rest[..u] {
            "ns" => 1e-6,
            "us" | "µs" => 1e-3,
            "ms" => 1.0,
            "s" => 1e3,
            "m" => 6e4,
            "h" => 3.6e6,
            _ => return None,
        };
        rest = &rest[u..];
        total += v * unit_ms;
    }
    (total.is_finite() && total < 1e15).then(|| total.round() as i64)
}

/// Splits an HTTP body into event slices (SPEC §6 body formats).
///
/// With a JSON content type the body is first read as one value (an object or an array of
/// objects); if it is not one JSON value it is NDJSON, as some shippers send JSON lines under
/// `application/json`. Any other type is NDJSON. Blank lines take no index.
pub fn split_body(body: &[u8], json_type: bool) -> Vec<&[u8]> {
    if json_type {
        if let Ok(items) = serde_json::from_slice::<Vec<&RawValue>>(body) {
            return items.into_iter().map(|r| r.get().as_bytes()).collect();
        }
        if serde_json::from_slice::<&RawValue>(body).is_ok() {
            return vec![trim(body)];
        }
    }
    body.split(|&b| b == b'\n')
        .map(trim)
        .filter(|l| !l.is_empty())
        .collect()
}

fn trim(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b
        && first.is_ascii_whitespace()
    {
        b = rest;
    }
    while let [rest @ .., last] = b
        && last.is_ascii_whitespace()
    {
        b = rest;
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Event<'_> {
        parse_event(s.as_bytes(), &ParseContext::default()).unwrap()
    }

    fn reason(s: &str) -> Reason {
        parse_event(s.as_bytes(), &ParseContext::default())
            .unwrap_err()
            .reason
    }

    #[test]
    fn parses_a_full_event_borrowing_strings() {
        let e = ok(
            r#"{"ts":"2026-11-27T14:00:00.123Z","org":"acme","app":"bot","user":"u","model":"sora-2",
            "kind":"request","status":429,"job_id":"j1","retry_after":2.5,"error_code":"rate_limit_exceeded",
            "tokens":12,"latency_ms":340.5,"request_id":"r1","extra":{"ignored":[1,2]},
            "ratelimit":{"limit_requests":50,"remaining_requests":0,"reset_requests":"6m0s"}}"#,
        );
        assert_eq!(e.ts_ms, Some(1_795_788_000_123));
        assert!(matches!(e.org, Cow::Borrowed("acme")));
        assert_eq!(e.app_name(), "bot");
        assert_eq!(e.status, Some(429));
        assert_eq!(e.outcome(), Outcome::RateLimited);
        assert_eq!(e.retry_after_ms, Some(2500));
        assert_eq!(e.tokens, Some(12));
        let rl = e.ratelimit.unwrap();
        assert_eq!(rl.remaining_requests, Some(0));
        assert_eq!(rl.reset_requests_ms, Some(360_000));
    }

    #[test]
    fn timestamps_in_every_accepted_form() {
        let at = |ts: &str| ok(&format!(r#"{{"org":"a","ts":{ts}}}"#)).ts_ms.unwrap();
        assert_eq!(at(r#""2026-11-27T14:00:00Z""#), 1_795_788_000_000);
        assert_eq!(at(r#""2026-11-27T15:00:00+01:00""#), 1_795_788_000_000);
        assert_eq!(at(r#""2026-11-27T09:00:00.5-05:00""#), 1_795_788_000_500);
        assert_eq!(at(r#""2026-11-27T14:00:00.123456789Z""#), 1_795_788_000_123);
        assert_eq!(
            at(r#""2026-11-27 14:00:00Z""#),
            1_795_788_000_000,
            "chrono path"
        );
        assert_eq!(at("1795788000"), 1_795_788_000_000, "epoch seconds");
        assert_eq!(at("1795788000.25"), 1_795_788_000_250, "fractional seconds");
        assert_eq!(
            at("1795788000123"),
            1_795_788_000_123,
            "epoch ms above 1e12"
        );
        // Fast path agrees with chrono on a leap day.
        assert_eq!(
            parse_rfc3339_ms("2028-02-29T23:59:59.999Z"),
            chrono::DateTime::parse_from_rfc3339("2028-02-29T23:59:59.999Z")
                .ok()
                .map(|t| t.timestamp_millis())
        );
    }

    #[test]
    fn every_rejection_reason() {
        assert_eq!(reason("{not json"), Reason::InvalidJson);
        assert_eq!(reason("[1,2]"), Reason::InvalidJson);
        assert_eq!(reason("42"), Reason::InvalidJson);
        assert_eq!(reason(""), Reason::InvalidJson);
        assert_eq!(
            parse_event(b"{\"org\":\"a\xff\"}", &ParseContext::default())
                .unwrap_err()
                .reason,
            Reason::InvalidJson,
            "invalid UTF-8"
        );
        assert_eq!(reason(r#"{"status":200}"#), Reason::MissingOrg);
        assert_eq!(
            reason(r#"{"org":"a","status":"200"}"#),
            Reason::InvalidField
        );
        assert_eq!(reason(r#"{"org":"a","status":99}"#), Reason::InvalidField);
        assert_eq!(reason(r#"{"org":"a","status":600}"#), Reason::InvalidField);
        assert_eq!(
            reason(r#"{"org":"a","status":200.5}"#),
            Reason::InvalidField
        );
        assert_eq!(
            reason(r#"{"org":"a","ts":"yesterday"}"#),
            Reason::InvalidField
        );
        assert_eq!(
            reason(r#"{"org":"a","ts":"2026-13-01T00:00:00Z"}"#),
            Reason::InvalidField
        );
        assert_eq!(reason(r#"{"org":"a","ts":-5}"#), Reason::InvalidField);
        assert_eq!(reason(r#"{"org":"a","ts":1e300}"#), Reason::InvalidField);
        assert_eq!(
            reason(r#"{"org":"a","ts":"9999-01-01T00:00:00Z"}"#),
            Reason::InvalidField
        );
        assert_eq!(
            reason(r#"{"org":"a","kind":"jobstart"}"#),
            Reason::InvalidField
        );
        assert_eq!(
            reason(r#"{"org":"a","kind":"job_completed"}"#),
            Reason::InvalidField
        );
        assert_eq!(reason(r#"{"org":""}"#), Reason::InvalidField);
        assert_eq!(reason(r#"{"org":"a\u0000b"}"#), Reason::InvalidField);
        assert_eq!(reason(r#"{"org":"__overflow__"}"#), Reason::InvalidField);
        assert_eq!(
            reason(&format!(r#"{{"org":"{}"}}"#, "x".repeat(129))),
            Reason::InvalidField
        );
        assert_eq!(
            reason(&format!(r#"{{"org":"a","model":"{}"}}"#, "x".repeat(257))),
            Reason::InvalidField
        );
        assert_eq!(reason(r#"{"org":"a","tokens":-1}"#), Reason::InvalidField);
        assert_eq!(
            reason(r#"{"org":"a","retry_after":-1}"#),
            Reason::InvalidField
        );
        assert_eq!(reason(r#"{"org":"a","org":"b"}"#), Reason::InvalidField);
        assert_eq!(
            reason(r#"{"org":"a","ratelimit":{"reset_requests":"soon"}}"#),
            Reason::InvalidField
        );
        let future = parse_event(
            br#"{"org":"a","ts":1795788400}"#,
            &ParseContext {
                now_ms: Some(1_795_788_000_000),
                ..ParseContext::default()
            },
        );
        assert_eq!(future.unwrap_err().reason, Reason::FutureTimestamp);
        let near = parse_event(
            br#"{"org":"a","ts":1795788299}"#,
            &ParseContext {
                now_ms: Some(1_795_788_000_000),
                ..ParseContext::default()
            },
        );
        assert!(near.is_ok(), "4m59s ahead is accepted");
        assert_eq!(Rejection::too_large(10, 5).reason, Reason::TooLarge);
    }

    #[test]
    fn org_names_count_characters_not_bytes() {
        let name = "é".repeat(128);
        assert!(valid_name(&name));
        assert!(!valid_name(&"é".repeat(129)));
        assert_eq!(ok(&format!(r#"{{"org":"{name}"}}"#)).org, name);
    }

    #[test]
    fn source_default_org_applies_only_when_missing() {
        let ctx = ParseContext {
            default_org: Some("fallback"),
            default_app: Some("shipper"),
            now_ms: None,
        };
        assert_eq!(
            parse_event(br#"{"status":200}"#, &ctx).unwrap().app_name(),
            "shipper"
        );
        assert_eq!(
            parse_event(br#"{"org":"x","app":"own"}"#, &ctx)
                .unwrap()
                .app_name(),
            "own"
        );
        assert_eq!(
            parse_event(br#"{"status":200}"#, &ctx).unwrap().org,
            "fallback"
        );
        assert_eq!(parse_event(br#"{"org":"x"}"#, &ctx).unwrap().org, "x");
    }

    #[test]
    fn escaped_strings_are_owned() {
        let e = ok(r#"{"org":"a\"b"}"#);
        assert_eq!(e.org, "a\"b");
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration_ms("6m0s"), Some(360_000));
        assert_eq!(parse_go_duration_ms("1.5s"), Some(1_500));
        assert_eq!(parse_go_duration_ms("20ms"), Some(20));
        assert_eq!(parse_go_duration_ms("1h2m3s"), Some(3_723_000));
        assert_eq!(parse_go_duration_ms("0"), Some(0));
        assert_eq!(parse_go_duration_ms(""), None);
        assert_eq!(parse_go_duration_ms("5x"), None);
    }

    #[test]
    fn body_splitting() {
        assert_eq!(split_body(b"{\"a\":1}\n\n{\"b\":2}\r\n", false).len(), 2);
        assert_eq!(split_body(b"[{\"a\":1},{\"b\":2}]", true).len(), 2);
        assert_eq!(split_body(b" {\"a\":1} ", true), vec![&b"{\"a\":1}"[..]]);
        // JSON lines under application/json fall back to NDJSON.
        assert_eq!(split_body(b"{\"a\":1}\n{\"b\":2}\n", true).len(), 2);
        // An array under NDJSON is one (invalid) line.
        assert_eq!(split_body(b"[{\"a\":1}]", false).len(), 1);
        assert!(split_body(b"", true).is_empty());
        assert!(split_body(b"[]", true).is_empty());
        assert!(split_body(b"\n \n", false).is_empty());
    }
}
