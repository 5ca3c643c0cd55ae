//! Events: the unit of ingestion (SPEC §4), and the one intake path that makes them from bytes.
//!
//! Every source (HTTP bodies, the file tailer, `replay`) hands raw bytes to [`intake`], which
//! normalises them (a UTF-8 BOM, CRLF line ends), frames them into records (lines, JSON arrays,
//! objects back to back), and decodes each record with a [`format::LineFormat`] into a
//! `Wire` of fields as written. The private `wire` module validates that into an [`Event`] borrowing
//! from those bytes, with a [`FieldError`] for each field that did not parse, or exactly one
//! [`Rejection`] reason. This module never counts, stores or judges events; it only says what
//! an event is. The per-event path allocates only for strings with JSON escapes and for
//! field errors.

pub mod format;
pub mod intake;
mod values;
mod wire;

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;

pub use values::{http_date_ms, parse_go_duration_ms, parse_rfc3339_ms, retry_after_header_ms};

/// Live events further ahead of the wall clock than this are rejected (`future_timestamp`).
pub const MAX_FUTURE_MS: i64 = 5 * 60 * 1000;
/// Default largest accepted event (one NDJSON line or array element), in bytes.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 64 * 1024;

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
    pub(crate) fn new(reason: Reason, detail: impl Into<Cow<'static, str>>) -> Self {
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
#[derive(Debug, Clone, Copy)]
pub struct ParseContext<'c> {
    /// Org for events that carry none.
    pub default_org: Option<&'c str>,
    /// App for events that carry none (else `default`).
    pub default_app: Option<&'c str>,
    /// Wall clock in ms for the future-timestamp check (and the reference of absolute times
    /// in events without `ts`); `None` in replay (no check).
    pub now_ms: Option<i64>,
    /// Largest accepted event, in bytes (`too_large` beyond).
    pub max_event_bytes: usize,
}

impl Default for ParseContext<'_> {
    fn default() -> Self {
        ParseContext {
            default_org: None,
            default_app: None,
            now_ms: None,
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
        }
    }
}

/// An event field: what a format's value can be mapped to (`fields`), and the `field` label
/// of `event_field_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventField {
    /// `ts`.
    Ts,
    /// `org`.
    Org,
    /// `app`.
    App,
    /// `user`.
    User,
    /// `model`.
    Model,
    /// `kind`.
    Kind,
    /// `status`.
    Status,
    /// `job_id`.
    JobId,
    /// `retry_after`.
    RetryAfter,
    /// `error_code`.
    ErrorCode,
    /// `tokens`.
    Tokens,
    /// `latency_ms`.
    LatencyMs,
    /// `request_id`.
    RequestId,
    /// `ratelimit` (an object of the upstream's `x-ratelimit-*` values).
    RateLimit,
}

impl EventField {
    /// Every field, in label order.
    pub const ALL: [EventField; 14] = [
        EventField::Ts,
        EventField::Org,
        EventField::App,
        EventField::User,
        EventField::Model,
        EventField::Kind,
        EventField::Status,
        EventField::JobId,
        EventField::RetryAfter,
        EventField::ErrorCode,
        EventField::Tokens,
        EventField::LatencyMs,
        EventField::RequestId,
        EventField::RateLimit,
    ];

    /// Fields with one scalar value (all but `ratelimit`).
    pub(crate) const SCALARS: usize = 13;

    /// The field's name in the event schema.
    pub fn name(self) -> &'static str {
        match self {
            EventField::Ts => "ts",
            EventField::Org => "org",
            EventField::App => "app",
            EventField::User => "user",
            EventField::Model => "model",
            EventField::Kind => "kind",
            EventField::Status => "status",
            EventField::JobId => "job_id",
            EventField::RetryAfter => "retry_after",
            EventField::ErrorCode => "error_code",
            EventField::Tokens => "tokens",
            EventField::LatencyMs => "latency_ms",
            EventField::RequestId => "request_id",
            EventField::RateLimit => "ratelimit",
        }
    }

    /// The field named `name`.
    pub fn parse(name: &str) -> Option<EventField> {
        // A match compiles to a dispatch on length and bytes: this runs for every key of
        // every event.
        Some(match name {
            "ts" => EventField::Ts,
            "org" => EventField::Org,
            "app" => EventField::App,
            "user" => EventField::User,
            "model" => EventField::Model,
            "kind" => EventField::Kind,
            "status" => EventField::Status,
            "job_id" => EventField::JobId,
            "retry_after" => EventField::RetryAfter,
            "error_code" => EventField::ErrorCode,
            "tokens" => EventField::Tokens,
            "latency_ms" => EventField::LatencyMs,
            "request_id" => EventField::RequestId,
            "ratelimit" => EventField::RateLimit,
            _ => return None,
        })
    }

    /// The event field a `fields` key names, or the config error listing the known ones.
    pub fn of_key(key: &str) -> Result<EventField, String> {
        EventField::parse(key).ok_or_else(|| {
            format!(
                "fields.{key} is not an event field ({})",
                EventField::ALL.map(EventField::name).join(", ")
            )
        })
    }
}

impl fmt::Display for EventField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A field of an accepted event that did not parse: the event counts without it (SPEC §4).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// Which field.
    pub field: EventField,
    /// What was wrong with its value.
    pub detail: Cow<'static, str>,
}

impl FieldError {
    pub(crate) fn new(field: EventField, detail: impl Into<Cow<'static, str>>) -> FieldError {
        FieldError {
            field,
            detail: detail.into(),
        }
    }
}

/// An accepted event and the fields it lost on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed<'a> {
    /// The validated event.
    pub event: Event<'a>,
    /// Fields that did not parse and were treated as absent (no allocation when empty).
    pub field_errors: Vec<FieldError>,
}

/// Parses and validates one native JSON event. `bytes` is one JSON object (an NDJSON line or
/// array element); trailing objects (Fluent Bit's `json_stream`) are the business of
/// [`intake`], which every source goes through.
pub fn parse_event<'a>(bytes: &'a [u8], ctx: &ParseContext<'a>) -> Result<Parsed<'a>, Rejection> {
    let mut out = None;
    format::LineFormat::Json { fields: Vec::new() }.decode(
        bytes,
        ctx,
        &mut intake::FieldSet::default(),
        |r| {
            if out.is_none() {
                out = Some(r);
            }
        },
    );
    out.unwrap_or_else(|| {
        Err(Rejection::new(
            Reason::InvalidJson,
            "an event must be a JSON object",
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::valid_name;

    fn parsed(s: &str) -> Parsed<'_> {
        parse_event(s.as_bytes(), &ParseContext::default()).unwrap()
    }

    fn ok(s: &str) -> Event<'_> {
        parsed(s).event
    }

    fn reason(s: &str) -> Reason {
        parse_event(s.as_bytes(), &ParseContext::default())
            .unwrap_err()
            .reason
    }

    /// The fields that did not parse, for an event that was accepted.
    fn lost(s: &str) -> Vec<EventField> {
        parsed(s).field_errors.iter().map(|e| e.field).collect()
    }

    #[test]
    fn parses_a_full_event_borrowing_strings() {
        let p = parsed(
            r#"{"ts":"2026-11-27T14:00:00.123Z","org":"acme","app":"bot","user":"u","model":"sora-2",
            "kind":"request","status":429,"job_id":"j1","retry_after":2.5,"error_code":"rate_limit_exceeded",
            "tokens":12,"latency_ms":340.5,"request_id":"r1","extra":{"ignored":[1,2]},
            "ratelimit":{"limit_requests":50,"remaining_requests":0,"reset_requests":"6m0s"}}"#,
        );
        assert!(p.field_errors.is_empty(), "{:?}", p.field_errors);
        let e = p.event;
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
        assert_eq!(
            at(r#""1795788000""#),
            1_795_788_000_000,
            "epoch as a string"
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
    fn only_org_ts_and_kind_reject_an_event() {
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
            reason(r#"{"org":""}"#),
            Reason::MissingOrg,
            "empty = absent"
        );
        assert_eq!(reason(r#"{"org":"-"}"#), Reason::MissingOrg);
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
        assert_eq!(reason(r#"{"org":"a","ts":true}"#), Reason::InvalidField);
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
            Reason::InvalidField,
            "a lifecycle event without a job changes nothing"
        );
        assert_eq!(reason(r#"{"org":"a\u0000b"}"#), Reason::InvalidField);
        assert_eq!(reason(r#"{"org":"__overflow__"}"#), Reason::InvalidField);
        assert_eq!(reason(r#"{"org":{"id":"a"}}"#), Reason::InvalidField);
        assert_eq!(
            reason(&format!(r#"{{"org":"{}"}}"#, "x".repeat(129))),
            Reason::InvalidField
        );
        assert_eq!(reason(r#"{"org":"a","org":"b"}"#), Reason::InvalidField);
        assert_eq!(
            reason(r#"{"org":"a","ts":1764230400,"ts":1764230400}"#),
            Reason::InvalidField,
            "never counted at the receive time instead"
        );
        assert_eq!(
            reason(r#"{"org":"a","kind":"job_completed","kind":"job_completed","job_id":"j"}"#),
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
    fn a_field_that_does_not_parse_costs_that_field_not_the_request() {
        use EventField as F;
        for (line, field) in [
            (r#"{"org":"a","status":99}"#, F::Status),
            (r#"{"org":"a","status":600}"#, F::Status),
            (r#"{"org":"a","status":200.5}"#, F::Status),
            (r#"{"org":"a","status":"2xx"}"#, F::Status),
            (r#"{"org":"a","tokens":-1}"#, F::Tokens),
            (r#"{"org":"a","tokens":"many"}"#, F::Tokens),
            (r#"{"org":"a","retry_after":-1}"#, F::RetryAfter),
            (r#"{"org":"a","retry_after":"soon"}"#, F::RetryAfter),
            (r#"{"org":"a","latency_ms":"fast"}"#, F::LatencyMs),
            (r#"{"org":"a","app":""}"#, F::App),
            (r#"{"org":"a","app":{"name":"x"}}"#, F::App),
            (r#"{"org":"a","app":"__overflow__"}"#, F::App),
            (
                r#"{"org":"a","ratelimit":{"reset_requests":"soon"}}"#,
                F::RateLimit,
            ),
            (r#"{"org":"a","ratelimit":"50"}"#, F::RateLimit),
            (r#"{"org":"a","status":200,"status":429}"#, F::Status),
        ] {
            let p = parse_event(line.as_bytes(), &ParseContext::default())
                .unwrap_or_else(|r| panic!("{line} rejected: {r:?}"));
            let fields: Vec<_> = p.field_errors.iter().map(|e| e.field).collect();
            if line.contains(r#""app":"""#) {
                assert!(fields.is_empty(), "empty app is absent: {line}");
                continue;
            }
            assert_eq!(fields, vec![field], "{line}");
            assert!(!p.field_errors[0].detail.is_empty());
        }
        let e = ok(r#"{"org":"a","status":"2xx","app":"bot"}"#);
        assert_eq!((e.status, e.outcome()), (None, Outcome::Unknown));
        assert_eq!(e.app_name(), "bot", "the other fields stay");
        assert_eq!(
            lost(&format!(r#"{{"org":"a","model":"{}"}}"#, "x".repeat(257))),
            vec![EventField::Model]
        );
    }

    #[test]
    fn numbers_sent_as_strings_are_read_as_numbers() {
        let p = parsed(
            r#"{"org":"acme","ts":"1795788000","status":"429","retry_after":"7","tokens":"12",
            "latency_ms":"4.5","ratelimit":{"limit_requests":"50","remaining_requests":"0","reset_requests":"20"}}"#,
        );
        assert!(p.field_errors.is_empty(), "{:?}", p.field_errors);
        let e = p.event;
        assert_eq!(e.ts_ms, Some(1_795_788_000_000));
        assert_eq!(e.status, Some(429));
        assert_eq!(e.retry_after_ms, Some(7_000));
        assert_eq!(e.tokens, Some(12));
        assert_eq!(e.latency_ms, Some(4.5));
        let rl = e.ratelimit.unwrap();
        assert_eq!(
            (
                rl.limit_requests,
                rl.remaining_requests,
                rl.reset_requests_ms
            ),
            (Some(50), Some(0), Some(20_000))
        );
        assert_eq!(ok(r#"{"org":"a","status":0}"#).outcome(), Outcome::Unknown);
        assert!(lost(r#"{"org":"a","status":0,"retry_after":null}"#).is_empty());
        let date = ok(
            r#"{"org":"a","ts":"2026-11-30T10:00:00Z","retry_after":"Mon, 30 Nov 2026 10:00:07 GMT"}"#,
        );
        assert_eq!(date.retry_after_ms, Some(7_000));
    }

    #[test]
    fn field_names_round_trip() {
        for f in EventField::ALL {
            assert_eq!(EventField::parse(f.name()), Some(f));
        }
        assert_eq!(EventField::parse("organisation"), None);
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
            ..ParseContext::default()
        };
        let ev = |s: &'static str| parse_event(s.as_bytes(), &ctx).unwrap().event;
        assert_eq!(ev(r#"{"status":200}"#).app_name(), "shipper");
        assert_eq!(ev(r#"{"org":"x","app":"own"}"#).app_name(), "own");
        assert_eq!(ev(r#"{"status":200}"#).org, "fallback");
        assert_eq!(ev(r#"{"org":"-"}"#).org, "fallback");
        assert_eq!(ev(r#"{"org":"x"}"#).org, "x");
    }

    #[test]
    fn escaped_strings_are_owned() {
        let e = ok(r#"{"org":"a\"b"}"#);
        assert_eq!(e.org, "a\"b");
    }
}
