//! Events: the unit of ingestion (SPEC §4), and the one intake path that makes them from bytes.
//!
//! Every source (HTTP bodies, the file tailer, `replay`) hands raw bytes to [`intake`], which
//! normalises them (a UTF-8 BOM, CRLF line ends), frames them into records (lines, JSON arrays,
//! objects back to back), and decodes each record with a [`format::LineFormat`] into a
//! `Wire` of fields as written (the private `scan` module reads the common flat native object
//! in one pass; serde_json reads everything else). The private `wire` module validates that
//! into an [`Event`] borrowing from those bytes, with a [`FieldError`] for each field that did
//! not parse, or exactly one [`Rejection`] reason. This module never counts, stores or judges events;
//! it only says what an event is. The per-event path allocates only for strings with JSON
//! escapes and for field errors.

mod event;
pub mod format;
mod headers;
pub mod intake;
mod keyed;
pub mod otlp;
mod scan;
mod values;
mod wire;

pub use event::{
    DEFAULT_MAX_EVENT_BYTES, Event, EventField, FieldError, Kind, MAX_DETAIL_BYTES, MAX_FUTURE_MS,
    Outcome, ParseContext, Parsed, QuotaReport, Reason, Rejection,
};
pub use values::{http_date_ms, parse_go_duration_ms, parse_rfc3339_ms, retry_after_header_ms};

/// Parses and validates one native JSON event. `bytes` is one JSON object (an NDJSON line or
/// array element); trailing objects (Fluent Bit's `json_stream`) are the business of
/// [`intake`], which every source goes through.
pub fn parse_event<'a>(bytes: &'a [u8], ctx: &ParseContext<'a>) -> Result<Parsed<'a>, Rejection> {
    let mut out = None;
    format::LineFormat::Json { fields: Vec::new() }.decode(
        bytes,
        ctx,
        &mut event::FieldSet::default(),
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
    use std::borrow::Cow;

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
        let rl = e.upstream[0];
        assert_eq!(rl.dimension, crate::model::UpstreamDimension::Rpm);
        assert_eq!(rl.remaining, Some(0));
        assert_eq!(rl.reset_ms, Some(360_000));
    }

    #[test]
    fn a_huge_bad_value_is_quoted_only_in_part() {
        let big = "é".repeat(20_000);
        let line = format!(r#"{{"org":"a","status":"{big}"}}"#);
        let p = parsed(&line);
        let detail = &p.field_errors[0].detail;
        assert!(
            detail.len() <= MAX_DETAIL_BYTES + "…".len(),
            "{}",
            detail.len()
        );
        assert!(detail.ends_with('…'));
    }

    #[test]
    fn input_and_output_tokens_sum_to_tokens_unless_tokens_is_given() {
        let e = ok(r#"{"org":"a","input_tokens":100,"output_tokens":"20","images":2}"#);
        assert_eq!(
            (e.tokens, e.input_tokens, e.output_tokens, e.images),
            (Some(120), Some(100), Some(20), Some(2))
        );
        assert_eq!(ok(r#"{"org":"a","output_tokens":7}"#).tokens, Some(7));
        let given = ok(r#"{"org":"a","tokens":5,"input_tokens":100,"output_tokens":20}"#);
        assert_eq!(given.tokens, Some(5), "tokens as the producer counted them");
        assert!(lost(r#"{"org":"a","images":-1}"#).contains(&EventField::Images));
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
        let rl = e.upstream[0];
        assert_eq!(
            (rl.limit, rl.remaining, rl.reset_ms),
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
