//! What an event is (SPEC §4): its fields, kinds and outcomes, the reasons one is rejected and
//! the field errors an accepted one carries. Plain types the rest of `events` builds; this
//! file parses nothing.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;

use crate::model::UpstreamDimension;

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

/// Longest detail a rejection or field error keeps, in bytes: details quote the value at
/// fault, and a 30 KB value must not make every answer listing it 30 KB.
pub const MAX_DETAIL_BYTES: usize = 256;

/// `detail` cut to [`MAX_DETAIL_BYTES`] at a character boundary, marked with `…`.
fn bounded(detail: Cow<'static, str>) -> Cow<'static, str> {
    if detail.len() <= MAX_DETAIL_BYTES {
        return detail;
    }
    let mut end = MAX_DETAIL_BYTES;
    while !detail.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &detail[..end]))
}

impl Rejection {
    pub(crate) fn new(reason: Reason, detail: impl Into<Cow<'static, str>>) -> Self {
        Rejection {
            reason,
            detail: bounded(detail.into()),
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

/// One limit as the upstream reported it with a response: from the event's `ratelimit`
/// object or its `headers` (see `events::headers` for every header family read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct QuotaReport {
    /// Which limit.
    pub dimension: UpstreamDimension,
    /// The limit, when reported.
    pub limit: Option<u64>,
    /// What is left of it, when reported.
    pub remaining: Option<u64>,
    /// Milliseconds from the event's time until `remaining` is back to `limit`.
    pub reset_ms: Option<i64>,
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
    /// Tokens consumed (`tokens`, else `input_tokens` + `output_tokens`).
    pub tokens: Option<u64>,
    /// Input (prompt) tokens, when given apart.
    pub input_tokens: Option<u64>,
    /// Output (completion) tokens, when given apart.
    pub output_tokens: Option<u64>,
    /// Images generated.
    pub images: Option<u64>,
    /// Request latency in milliseconds.
    pub latency_ms: Option<f64>,
    /// Dedupe key: `request_id`, or the admission `lease` when the event names one.
    pub request_id: Option<Cow<'a, str>>,
    /// The limits the upstream reported (`ratelimit`, `headers`), at most one per dimension.
    pub upstream: Vec<QuotaReport>,
    /// The model called: it picks the org's model scope, if any matches.
    pub model: Option<Cow<'a, str>>,
    /// A batch submitted (OpenAI's Batch API): the 2xx request that enqueues it, whose
    /// `job_id` is the batch id; its input tokens count in `batch_queue_tokens` until the
    /// job's finishing event.
    pub batch: bool,
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
    /// `lease`: the admission lease the call was granted under (`POST /v1/admit`); it
    /// stands for the request's id, so the event completes that grant's reservation.
    Lease,
    /// `input_tokens`.
    InputTokens,
    /// `output_tokens`.
    OutputTokens,
    /// `images`.
    Images,
    /// `batch`: the request submits a batch.
    Batch,
    /// `ratelimit` (an object of the upstream's `x-ratelimit-*` values).
    RateLimit,
    /// `headers`: the response's headers as captured (`name → value`), of which the
    /// upstream's rate-limit headers are read.
    Headers,
}

impl EventField {
    /// Every field, in label order.
    pub const ALL: [EventField; 20] = [
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
        EventField::Lease,
        EventField::InputTokens,
        EventField::OutputTokens,
        EventField::Images,
        EventField::Batch,
        EventField::RateLimit,
        EventField::Headers,
    ];

    /// Fields with one scalar value (all but `ratelimit` and `headers`).
    pub(crate) const SCALARS: usize = 18;

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
            EventField::Lease => "lease",
            EventField::InputTokens => "input_tokens",
            EventField::OutputTokens => "output_tokens",
            EventField::Images => "images",
            EventField::Batch => "batch",
            EventField::RateLimit => "ratelimit",
            EventField::Headers => "headers",
        }
    }

    /// The field named `name`.
    #[inline(always)]
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
            "lease" => EventField::Lease,
            "input_tokens" => EventField::InputTokens,
            "output_tokens" => EventField::OutputTokens,
            "images" => EventField::Images,
            "batch" => EventField::Batch,
            "ratelimit" => EventField::RateLimit,
            "headers" => EventField::Headers,
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
            detail: bounded(detail.into()),
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

/// A set of event fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FieldSet(u32);

impl FieldSet {
    /// Adds `f`.
    pub fn insert(&mut self, f: EventField) {
        self.0 |= 1 << f as u32;
    }

    /// Adds every field of `other`.
    pub fn extend(&mut self, other: FieldSet) {
        self.0 |= other.0;
    }

    /// True when `f` is in the set.
    pub fn contains(&self, f: EventField) -> bool {
        self.0 & (1 << f as u32) != 0
    }
}
