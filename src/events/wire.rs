//! An event as written, field by field ([`Wire`]), and its validation into an [`Event`].
//!
//! Every format ends here: native JSON deserializes straight into a [`Wire`] (strings borrowed
//! from the input), mapped JSON and log templates fill one in. [`Wire::validate`] is then the
//! single place where SPEC §4 decides: an event without an org, with a `ts` or `kind` that
//! does not parse, is rejected; any other field that does not parse becomes a
//! [`FieldError`] and the event goes on without it.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::event::{
    Event, EventField, FieldError, Kind, MAX_FUTURE_MS, ParseContext, Parsed, QuotaReport, Reason,
    Rejection,
};
use super::headers;
use super::values::{self, Bad, Raw};
use crate::model::{OVERFLOW, UpstreamDimension, valid_name};

/// The `ratelimit` object's keys: limit, remaining and reset of requests, then of tokens.
const RATELIMIT_KEYS: [&str; 6] = [
    "limit_requests",
    "remaining_requests",
    "reset_requests",
    "limit_tokens",
    "remaining_tokens",
    "reset_tokens",
];

/// The `ratelimit` value as written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RawRateLimit<'a> {
    /// An object; its known keys in [`RATELIMIT_KEYS`] order.
    Object(Box<[Option<Raw<'a>>; 6]>),
    /// Anything but an object.
    Not(&'static str),
}

/// The `headers` value as written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RawHeaders<'a> {
    /// An object (or a template's header variables): name, value.
    Object(Vec<(Cow<'a, str>, Raw<'a>)>),
    /// Anything but an object.
    Not(&'static str),
}

/// One event's fields as written, before validation.
#[derive(Debug, Default)]
pub(crate) struct Wire<'a> {
    /// Scalar fields by [`EventField`] index (everything but `ratelimit`).
    values: [Option<Raw<'a>>; EventField::SCALARS],
    ratelimit: Option<RawRateLimit<'a>>,
    headers: Option<RawHeaders<'a>>,
    /// Fields that appeared more than once (bit per [`EventField`]).
    duplicates: u32,
    /// `latency_ms` holds seconds (nginx's `$request_time` and the like).
    pub latency_in_seconds: bool,
}

impl<'a> Wire<'a> {
    /// Sets `field` (a later value replaces an earlier one).
    pub fn set(&mut self, field: EventField, raw: Raw<'a>) {
        // Scalars first: one comparison on the path every field of every line takes.
        if (field as usize) < EventField::SCALARS {
            self.values[field as usize] = Some(raw);
        } else if field == EventField::Headers {
            self.headers = Some(RawHeaders::Not(match raw {
                Raw::Compound => "an object whose keys cannot be read here",
                _ => "not an object",
            }));
        } else {
            self.ratelimit = Some(match raw {
                Raw::Compound => RawRateLimit::Not("an object whose keys cannot be read here"),
                _ => RawRateLimit::Not("not an object"),
            });
        }
    }

    /// The slot of scalar `field`, for the scanner to fill in place, after noting a
    /// duplicate when it already holds a value (as [`Wire::set`] would find it); `None` for
    /// a field that is no scalar (`ratelimit`, `headers`). Filled in place because a value
    /// handed over went through the stack, stored in halves and reloaded whole: a stalled
    /// store forward, a third of the scanner's time on one build.
    #[inline(always)]
    pub fn scalar_slot(&mut self, field: EventField) -> Option<&mut Option<Raw<'a>>> {
        let slot = self.values.get_mut(field as usize)?;
        if slot.is_some() {
            self.duplicates |= 1 << field as u32;
        }
        Some(slot)
    }

    /// Sets `field` from a parsed JSON value (mapped JSON formats).
    pub fn set_value(&mut self, field: EventField, v: &serde_json::Value) {
        if field == EventField::Headers {
            self.headers = Some(match v.as_object() {
                Some(obj) => RawHeaders::Object(
                    obj.iter()
                        .map(|(k, v)| (Cow::Owned(k.clone()), Raw::from_value(v)))
                        .collect(),
                ),
                None => RawHeaders::Not("not an object"),
            });
        } else if field == EventField::RateLimit {
            self.ratelimit = Some(match v.as_object() {
                Some(obj) => {
                    let mut keys: [Option<Raw<'a>>; 6] = Default::default();
                    for (slot, key) in keys.iter_mut().zip(RATELIMIT_KEYS) {
                        *slot = obj.get(key).map(Raw::from_value);
                    }
                    RawRateLimit::Object(Box::new(keys))
                }
                None => RawRateLimit::Not("not an object"),
            });
        } else {
            self.values[field as usize] = Some(Raw::from_value(v));
        }
    }

    /// Adds response header `name` (a log template's `$upstream_http_*` or `%RESP(...)%`).
    pub fn add_header(&mut self, name: Cow<'a, str>, value: Raw<'a>) {
        match &mut self.headers {
            Some(RawHeaders::Object(h)) => h.push((name, value)),
            _ => self.headers = Some(RawHeaders::Object(vec![(name, value)])),
        }
    }

    /// Lets go of a wire that owns no heap memory (every value borrowed, as the scanner
    /// fills it) without running its drop, which walks every slot.
    pub fn forget_borrowed(self) {
        debug_assert!(
            self.owns_nothing(),
            "a wire holding owned values was forgotten"
        );
        std::mem::forget(self);
    }

    /// True when no value of this wire is heap-allocated.
    fn owns_nothing(&self) -> bool {
        self.ratelimit.is_none()
            && self.headers.is_none()
            && self
                .values
                .iter()
                .all(|v| !matches!(v, Some(Raw::Str(Cow::Owned(_)))))
    }

    /// Notes that `field` was given more than once (validation decides what that costs).
    pub fn mark_duplicate(&mut self, field: EventField) {
        self.duplicates |= 1 << field as u32;
    }

    /// True when `field` has a value.
    pub fn has(&self, field: EventField) -> bool {
        if field == EventField::RateLimit {
            self.ratelimit.is_some()
        } else if field == EventField::Headers {
            self.headers.is_some()
        } else {
            self.values[field as usize].is_some()
        }
    }

    /// A wire from a parsed JSON object's native schema keys.
    pub fn from_object(obj: &serde_json::Map<String, serde_json::Value>) -> Wire<'a> {
        let mut w = Wire::default();
        for (k, v) in obj {
            if let Some(f) = EventField::parse(k) {
                w.set_value(f, v);
            }
        }
        w
    }

    fn take(&mut self, field: EventField) -> Option<Raw<'a>> {
        self.values[field as usize].take()
    }

    /// `input_tokens`, `output_tokens` and `images`, which most events leave out (checked
    /// at once, so those pay three loads).
    fn counts(&mut self, errors: &mut Vec<FieldError>) -> (Option<u64>, Option<u64>, Option<u64>) {
        let fields = [
            EventField::InputTokens,
            EventField::OutputTokens,
            EventField::Images,
        ];
        if fields.iter().all(|&f| self.values[f as usize].is_none()) {
            return (None, None, None);
        }
        let [i, o, n] = fields.map(|f| {
            self.take(f)
                .and_then(|raw| keep(errors, f, values::integer(&raw)))
        });
        (i, o, n)
    }

    /// Validates into an event (SPEC §4), or the one reason it is rejected. Takes the
    /// fields out, leaving the wire spent (read in place: a wire is half a kilobyte).
    pub fn validate(&mut self, ctx: &ParseContext<'a>) -> Result<Parsed<'a>, Rejection> {
        let mut errors: Vec<FieldError> = Vec::new();
        let dup = |f: EventField| self.duplicates & (1 << f as u32) != 0;
        // The fields that decide whether and where an event counts may not be ambiguous.
        for f in [EventField::Org, EventField::Ts, EventField::Kind] {
            if dup(f) {
                return Err(invalid(format!(
                    "{f} appears more than once, so what to count is unclear"
                )));
            }
        }
        for f in EventField::ALL {
            if self.duplicates != 0 && dup(f) {
                errors.push(FieldError::new(f, "appears more than once; ignored"));
                if f == EventField::RateLimit {
                    self.ratelimit = None;
                } else if f == EventField::Headers {
                    self.headers = None;
                } else {
                    self.values[f as usize] = None;
                }
            }
        }

        let org = match self.take(EventField::Org).map(values::text) {
            None | Some(Ok(None)) => match ctx.default_org {
                Some(org) => Cow::Borrowed(org),
                None => {
                    return Err(Rejection::new(
                        Reason::MissingOrg,
                        "event has no org and its source supplies none",
                    ));
                }
            },
            Some(Ok(Some(org))) if org == OVERFLOW => {
                return Err(invalid(format!(
                    "org {OVERFLOW} is reserved for overflow series"
                )));
            }
            Some(Ok(Some(org))) if valid_name(&org) => org,
            Some(Ok(Some(_))) => return Err(invalid("org must be 1-128 printable characters")),
            Some(Err(e)) => return Err(invalid(format!("org {e}"))),
        };
        let ts_ms = match self.take(EventField::Ts).map(|raw| values::time(&raw)) {
            None | Some(Ok(None)) => None,
            Some(Ok(Some(ms))) => Some(ms),
            Some(Err(e)) => return Err(invalid(e)),
        };
        if let (Some(ts), Some(now)) = (ts_ms, ctx.now_ms)
            && ts > now + MAX_FUTURE_MS
        {
            return Err(Rejection::new(
                Reason::FutureTimestamp,
                "ts is more than 5 minutes ahead of the clock",
            ));
        }
        let kind = match self.take(EventField::Kind).map(values::text) {
            None | Some(Ok(None)) => Kind::Request,
            Some(Ok(Some(k))) => match &*k {
                "request" => Kind::Request,
                "job_started" => Kind::JobStarted,
                "job_completed" => Kind::JobCompleted,
                "job_failed" => Kind::JobFailed,
                "job_cancelled" => Kind::JobCancelled,
                _ => {
                    return Err(invalid(
                        "unknown kind (request, job_started, job_completed, job_failed, job_cancelled)",
                    ));
                }
            },
            Some(Err(e)) => return Err(invalid(format!("kind {e}"))),
        };
        // Absolute times (an HTTP-date Retry-After, an RFC 3339 reset) are read against the
        // event's own time, or the clock for events without one.
        let reference = ts_ms.or(ctx.now_ms);

        let app = name_field(&mut errors, EventField::App, self.take(EventField::App));
        let user = name_field(&mut errors, EventField::User, self.take(EventField::User));
        let model = name_field(&mut errors, EventField::Model, self.take(EventField::Model));
        let job_id = name_field(&mut errors, EventField::JobId, self.take(EventField::JobId));
        let error_code = name_field(
            &mut errors,
            EventField::ErrorCode,
            self.take(EventField::ErrorCode),
        );
        let request_id = name_field(
            &mut errors,
            EventField::RequestId,
            self.take(EventField::RequestId),
        );
        // A lease names the grant whose reservation this request completes: it is the id the
        // request is counted (and deduplicated) under.
        let lease = name_field(&mut errors, EventField::Lease, self.take(EventField::Lease));
        let request_id = lease.or(request_id);
        // Attribution only: validated, not kept.
        let _ = user;
        if kind != Kind::Request && job_id.is_none() {
            return Err(invalid("job lifecycle events need a job_id"));
        }
        let status = self
            .take(EventField::Status)
            .and_then(|raw| keep(&mut errors, EventField::Status, values::status(&raw)));
        let retry_after_ms = self.take(EventField::RetryAfter).and_then(|raw| {
            keep(
                &mut errors,
                EventField::RetryAfter,
                values::retry_after_ms(&raw, reference),
            )
        });
        let tokens = self
            .take(EventField::Tokens)
            .and_then(|raw| keep(&mut errors, EventField::Tokens, values::integer(&raw)));
        let (input_tokens, output_tokens, images) = self.counts(&mut errors);
        let batch = match self.values[EventField::Batch as usize].take() {
            None => false,
            Some(raw) => {
                keep(&mut errors, EventField::Batch, values::boolean(&raw)).unwrap_or(false)
            }
        };
        // The batch queue holds a batch by its id until that job's finishing event.
        let batch = if batch && job_id.is_none() {
            errors.push(FieldError::new(
                EventField::Batch,
                "a batch needs its id as job_id; counted as a request",
            ));
            false
        } else {
            batch
        };
        // Providers report input and output apart (Anthropic, OpenAI's usage): their sum is
        // the tokens a tokens-per-minute limit counts.
        let tokens = tokens.or(match (input_tokens, output_tokens) {
            (None, None) => None,
            (i, o) => Some(i.unwrap_or(0).saturating_add(o.unwrap_or(0))),
        });
        let seconds = self.latency_in_seconds;
        let latency_ms = self.take(EventField::LatencyMs).and_then(|raw| {
            keep(
                &mut errors,
                EventField::LatencyMs,
                values::latency_ms(&raw, seconds),
            )
        });
        let ratelimit = match self.ratelimit.take() {
            None => None,
            Some(RawRateLimit::Not(what)) => keep(
                &mut errors,
                EventField::RateLimit,
                Err(format!("must be an object of x-ratelimit-* values, got {what}").into()),
            ),
            Some(RawRateLimit::Object(keys)) => {
                let mut problems = Vec::new();
                let mut get =
                    |i: usize, read: &dyn Fn(&Raw<'a>) -> Result<Option<i64>, Bad>| match keys[i]
                        .as_ref()
                        .map(read)
                        .transpose()
                    {
                        Ok(v) => v.flatten(),
                        Err(e) => {
                            problems.push(format!("{} {e}", RATELIMIT_KEYS[i]));
                            None
                        }
                    };
                let count = |raw: &Raw<'a>| {
                    values::integer(raw).map(|v| v.map(|n| i64::try_from(n).unwrap_or(i64::MAX)))
                };
                let reset = |raw: &Raw<'a>| values::reset_ms(raw, reference);
                let mut report = |dimension, at: usize| QuotaReport {
                    dimension,
                    limit: get(at, &count).map(|n| n as u64),
                    remaining: get(at + 1, &count).map(|n| n as u64),
                    reset_ms: get(at + 2, &reset),
                };
                let reports = [
                    report(UpstreamDimension::Rpm, 0),
                    report(UpstreamDimension::Tpm, 3),
                ];
                if !problems.is_empty() {
                    errors.push(FieldError::new(EventField::RateLimit, problems.join("; ")));
                }
                Some(reports)
            }
        };
        let mut upstream: Vec<QuotaReport> = match ratelimit {
            None => Vec::new(),
            Some(reports) => reports
                .into_iter()
                .filter(|q| q.limit.is_some() || q.remaining.is_some())
                .collect(),
        };
        let mut retry_after_ms = retry_after_ms;
        match self.headers.take() {
            None => {}
            Some(RawHeaders::Not(what)) => errors.push(FieldError::new(
                EventField::Headers,
                format!("must be an object of header names and values, got {what}"),
            )),
            Some(RawHeaders::Object(pairs)) => {
                let mut problems = Vec::new();
                let mut text = Vec::with_capacity(pairs.len());
                for (name, raw) in pairs {
                    // A shipper may write a header's number as JSON (`59.0`): its text.
                    let raw = match raw {
                        Raw::Float(f) if f.is_finite() => Raw::Str(Cow::Owned(f.to_string())),
                        raw => raw,
                    };
                    match values::text(raw) {
                        Ok(Some(v)) => text.push((name, v)),
                        Ok(None) => {}
                        Err(e) => problems.push(format!("{name} {e}")),
                    }
                }
                let read = headers::read(&text, reference);
                problems.extend(read.problems);
                if !problems.is_empty() {
                    errors.push(FieldError::new(EventField::Headers, problems.join("; ")));
                }
                // The `ratelimit` object, written by the producer itself, wins over headers
                // for a dimension both give.
                for q in read.reports {
                    if !upstream.iter().any(|u| u.dimension == q.dimension) {
                        upstream.push(q);
                    }
                }
                upstream.sort_by_key(|q| q.dimension);
                retry_after_ms = retry_after_ms.or(read.retry_after_ms);
            }
        }
        Ok(Parsed {
            event: Event {
                ts_ms,
                org,
                app: app.or(ctx.default_app.map(Cow::Borrowed)),
                kind,
                status,
                job_id,
                retry_after_ms,
                error_code,
                tokens,
                input_tokens,
                output_tokens,
                images,
                latency_ms,
                request_id,
                upstream,
                model,
                batch,
            },
            field_errors: errors,
        })
    }
}

/// The value of a field that parsed; for one that did not, the error is noted and the
/// field is absent.
fn keep<T>(errors: &mut Vec<FieldError>, f: EventField, r: Result<Option<T>, Bad>) -> Option<T> {
    match r {
        Ok(v) => v,
        Err(e) => {
            errors.push(FieldError::new(f, e));
            None
        }
    }
}

/// A name-like text field (`app`, `user`, `model`, ids), or the error it is noted with.
/// Inlined at each of its seven calls: as a call, moving the values in and out cost as much
/// as the checks.
#[inline(always)]
fn name_field<'a>(
    e: &mut Vec<FieldError>,
    f: EventField,
    raw: Option<Raw<'a>>,
) -> Option<Cow<'a, str>> {
    let v = keep(e, f, raw.map(values::text).transpose().map(Option::flatten));
    match v {
        Some(s) if f == EventField::App && (!valid_name(&s) || s == OVERFLOW) => {
            keep(e, f, Err("must be 1-128 printable characters".into()))
        }
        Some(s) if s.len() > 256 => keep(e, f, Err("is longer than 256 bytes".into())),
        v => v,
    }
}

fn invalid(detail: impl Into<Cow<'static, str>>) -> Rejection {
    Rejection::new(Reason::InvalidField, detail)
}

/// A JSON value kept as written (strings borrowed unless escaped).
impl<'de: 'a, 'a> Deserialize<'de> for Raw<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Raw<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Raw<'a>, E> {
                Ok(Raw::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw<'a>, E> {
                Ok(Raw::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw<'a>, E> {
                Ok(Raw::UInt(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw<'a>, E> {
                Ok(if v >= 0 {
                    Raw::UInt(v as u64)
                } else {
                    Raw::Int(v)
                })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw<'a>, E> {
                Ok(Raw::Float(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw<'a>, E> {
                Ok(Raw::Bool(v))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Raw<'a>, E> {
                Ok(Raw::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Raw<'a>, E> {
                Ok(Raw::Null)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw<'a>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Raw::Compound)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Raw<'a>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Raw::Compound)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// An object key, borrowed unless escaped.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// A field whose value must be an object (`ratelimit`, `headers`): read from its keys, or
/// noted as what it is instead (a field error, not a rejected event).
trait ObjectField<'a>: Sized {
    /// Anything but an object, named (`"an array"`).
    fn not(what: &'static str) -> Self;
    /// The object's entries.
    fn object<'de: 'a, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
}

/// Deserializes an [`ObjectField`].
struct ObjectVisitor<T>(std::marker::PhantomData<T>);

impl<'de: 'a, 'a, T: ObjectField<'a>> Visitor<'de> for ObjectVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::object(map)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(T::not("an array"))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<T, E> {
        Ok(T::not("a string"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<T, E> {
        Ok(T::not("a number"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<T, E> {
        Ok(T::not("a number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<T, E> {
        Ok(T::not("a number"))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<T, E> {
        Ok(T::not("a boolean"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        Ok(T::not("null"))
    }
}

impl<'a> ObjectField<'a> for RawRateLimit<'a> {
    fn not(what: &'static str) -> Self {
        RawRateLimit::Not(what)
    }
    fn object<'de: 'a, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut keys: [Option<Raw<'a>>; 6] = Default::default();
        while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
            match RATELIMIT_KEYS.iter().position(|n| *n == k) {
                Some(i) => keys[i] = Some(map.next_value()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(RawRateLimit::Object(Box::new(keys)))
    }
}

impl<'a> ObjectField<'a> for RawHeaders<'a> {
    fn not(what: &'static str) -> Self {
        RawHeaders::Not(what)
    }
    fn object<'de: 'a, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut pairs = Vec::new();
        while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
            pairs.push((k, map.next_value()?));
        }
        Ok(RawHeaders::Object(pairs))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawRateLimit<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ObjectVisitor(std::marker::PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawHeaders<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ObjectVisitor(std::marker::PhantomData))
    }
}

/// The native event schema: known keys read leniently, unknown keys skipped, a key given
/// twice remembered (so `validate` can refuse an ambiguous org).
impl<'de: 'a, 'a> Deserialize<'de> for Wire<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Wire<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an event object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Wire<'a>, A::Error> {
                let mut w = Wire::default();
                while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                    let Some(f) = EventField::parse(&k) else {
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    };
                    if w.has(f) {
                        w.duplicates |= 1 << f as u32;
                    }
                    if f == EventField::RateLimit {
                        w.ratelimit = Some(map.next_value()?);
                    } else if f == EventField::Headers {
                        w.headers = Some(map.next_value()?);
                    } else {
                        w.values[f as usize] = Some(map.next_value()?);
                    }
                }
                Ok(w)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}
