//! OpenTelemetry in: OTLP/HTTP export requests (traces and logs, protobuf or JSON, per the
//! OTLP specification 1.x "OTLP/HTTP") turned into events, through the same validation as
//! every other format.
//!
//! A span or log record is a call to a generation API when it carries GenAI semantic
//! convention attributes (any `gen_ai.*` key, or a log event named `gen_ai.*`); anything
//! else in the export is skipped, not rejected. What is read (OpenTelemetry semantic
//! conventions, "Semantic conventions for generative client AI spans" and "HTTP spans"):
//!
//! | event field | from |
//! |---|---|
//! | `ts` | the span's start (a log record's time, else its observed time) |
//! | `org`, `app` | the first of [`OtlpMapping`]'s attribute keys present on the span or record, then on its resource |
//! | `status` | `http.response.status_code`; else a numeric `error.type`; else 429 for an `error.type` naming a rate limit (`RateLimitError`); else none for an error (outcome `unknown`); else 200 |
//! | `error_code` | a non-numeric `error.type` |
//! | `model` | `gen_ai.response.model`, else `gen_ai.request.model` |
//! | `input_tokens`, `output_tokens` (`tokens` their sum) | `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens` |
//! | `latency_ms` | the span's end less its start |
//! | `request_id` | the span id (hex): a span and its log events count once |
//!
//! Decoding uses the `opentelemetry-proto` crate's generated types (prost, and its serde for
//! OTLP/JSON's hex ids and string-encoded 64-bit integers); nothing here parses protobuf.

use std::borrow::Cow;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value};
use prost::Message;

use super::event::{EventField, ParseContext, Parsed, Rejection};
use super::values::Raw;
use super::wire::Wire;

/// Where spans and log records name their org and app (`[otlp]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpMapping {
    /// Attribute keys naming the org, tried in order on the span (or log record) and then
    /// on its resource.
    pub org_attributes: Vec<String>,
    /// Attribute keys naming the app, likewise.
    pub app_attributes: Vec<String>,
    /// The org of spans that name none.
    pub default_org: Option<String>,
}

impl Default for OtlpMapping {
    fn default() -> Self {
        OtlpMapping {
            org_attributes: vec!["ratewarden.org".into(), "service.namespace".into()],
            app_attributes: vec!["ratewarden.app".into(), "service.name".into()],
            default_org: None,
        }
    }
}

/// Which OTLP export a body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `POST /v1/traces`: `ExportTraceServiceRequest`.
    Traces,
    /// `POST /v1/logs`: `ExportLogsServiceRequest`.
    Logs,
}

/// How the body is encoded (`Content-Type: application/x-protobuf` or `application/json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Binary protobuf.
    Protobuf,
    /// OTLP/JSON.
    Json,
}

/// What an export held.
#[derive(Debug, Default)]
pub struct Decoded {
    /// One per GenAI span or log record, in the body's order: its event or why it was
    /// rejected.
    pub events: Vec<Result<Parsed<'static>, Rejection>>,
    /// Spans or log records that are not GenAI calls.
    pub skipped: u64,
}

/// Decodes an export body; an error (for a 400) when it is not a message of its kind.
pub fn decode(
    signal: Signal,
    encoding: Encoding,
    body: &[u8],
    map: &OtlpMapping,
    ctx: &ParseContext<'static>,
) -> Result<Decoded, String> {
    let mut out = Decoded::default();
    match signal {
        Signal::Traces => {
            let req: ExportTraceServiceRequest = parse(encoding, body)?;
            for rs in &req.resource_spans {
                let resource = rs.resource.as_ref().map_or(&[][..], |r| &r.attributes);
                for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
                    let error = span.status.as_ref().is_some_and(|s| s.code == 2);
                    let call = Call {
                        attributes: &span.attributes,
                        resource,
                        start_ns: span.start_time_unix_nano,
                        end_ns: Some(span.end_time_unix_nano),
                        span_id: &span.span_id,
                        error,
                        named_genai: false,
                    };
                    out.push(call, map, ctx);
                }
            }
        }
        Signal::Logs => {
            let req: ExportLogsServiceRequest = parse(encoding, body)?;
            for rl in &req.resource_logs {
                let resource = rl.resource.as_ref().map_or(&[][..], |r| &r.attributes);
                for log in rl.scope_logs.iter().flat_map(|s| &s.log_records) {
                    let time = if log.time_unix_nano > 0 {
                        log.time_unix_nano
                    } else {
                        log.observed_time_unix_nano
                    };
                    let call = Call {
                        attributes: &log.attributes,
                        resource,
                        start_ns: time,
                        end_ns: None,
                        span_id: &log.span_id,
                        // SeverityNumber ERROR and above (17-24).
                        error: log.severity_number >= 17,
                        named_genai: log.event_name.starts_with("gen_ai."),
                    };
                    out.push(call, map, ctx);
                }
            }
        }
    }
    Ok(out)
}

fn parse<M: Message + Default + serde::de::DeserializeOwned>(
    encoding: Encoding,
    body: &[u8],
) -> Result<M, String> {
    match encoding {
        Encoding::Protobuf => {
            M::decode(body).map_err(|e| format!("not an OTLP protobuf message: {e}"))
        }
        Encoding::Json => {
            serde_json::from_slice(body).map_err(|e| format!("not an OTLP/JSON message: {e}"))
        }
    }
}

/// One span or log record, as far as an event needs it.
struct Call<'c> {
    attributes: &'c [KeyValue],
    resource: &'c [KeyValue],
    start_ns: u64,
    end_ns: Option<u64>,
    span_id: &'c [u8],
    error: bool,
    named_genai: bool,
}

fn attr<'c>(attrs: &'c [KeyValue], key: &str) -> Option<&'c Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::StringValue(s) if !s.is_empty() => Some(s.clone()),
        Value::IntValue(n) => Some(n.to_string()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<u64> {
    match v {
        Value::IntValue(n) => u64::try_from(*n).ok(),
        Value::DoubleValue(f) if f.fract() == 0.0 && *f >= 0.0 => Some(*f as u64),
        Value::StringValue(s) => s.trim().parse().ok(),
        _ => None,
    }
}

impl Decoded {
    fn push(&mut self, c: Call<'_>, map: &OtlpMapping, ctx: &ParseContext<'static>) {
        let genai = c.named_genai || c.attributes.iter().any(|kv| kv.key.starts_with("gen_ai."));
        if !genai {
            self.skipped += 1;
            return;
        }
        let own = |keys: &[String]| {
            keys.iter().find_map(|k| {
                attr(c.attributes, k)
                    .or_else(|| attr(c.resource, k))
                    .and_then(text)
            })
        };
        let mut w = Wire::default();
        let set = |w: &mut Wire<'static>, f: EventField, s: Option<String>| {
            if let Some(s) = s {
                w.set(f, Raw::Str(Cow::Owned(s)));
            }
        };
        set(
            &mut w,
            EventField::Org,
            own(&map.org_attributes).or_else(|| map.default_org.clone()),
        );
        set(&mut w, EventField::App, own(&map.app_attributes));
        let model = ["gen_ai.response.model", "gen_ai.request.model"]
            .iter()
            .find_map(|k| attr(c.attributes, k).and_then(text));
        set(&mut w, EventField::Model, model);
        let error_type = attr(c.attributes, "error.type").and_then(text);
        let status = match attr(c.attributes, "http.response.status_code") {
            Some(v) => match int(v) {
                Some(code) => Raw::UInt(code),
                // Not a number: validation says so (a field error) and the outcome is unknown.
                None => Raw::Str(Cow::Owned(text(v).unwrap_or_else(|| format!("{v:?}")))),
            },
            None => {
                let t = error_type.as_deref().map(str::to_ascii_lowercase);
                match t.as_deref() {
                    Some(t) if t.parse::<u64>().is_ok() => Raw::Str(Cow::Owned(t.to_string())),
                    Some(t) if t.contains("ratelimit") || t.contains("rate_limit") => {
                        Raw::UInt(429)
                    }
                    Some(_) => Raw::Null,
                    None if c.error => Raw::Null,
                    None => Raw::UInt(200),
                }
            }
        };
        w.set(EventField::Status, status);
        set(
            &mut w,
            EventField::ErrorCode,
            error_type.filter(|t| t.parse::<u64>().is_err()),
        );
        for (key, field) in [
            ("gen_ai.usage.input_tokens", EventField::InputTokens),
            ("gen_ai.usage.output_tokens", EventField::OutputTokens),
        ] {
            if let Some(n) = attr(c.attributes, key).and_then(int) {
                w.set(field, Raw::UInt(n));
            }
        }
        if c.start_ns > 0 {
            let ms = i64::try_from(c.start_ns / 1_000_000).unwrap_or(i64::MAX);
            w.set(EventField::Ts, Raw::Millis(ms));
            if let Some(end) = c.end_ns.filter(|&e| e >= c.start_ns) {
                w.set(
                    EventField::LatencyMs,
                    Raw::Float((end - c.start_ns) as f64 / 1e6),
                );
            }
        }
        if c.span_id.iter().any(|&b| b != 0) {
            let hex: String = c.span_id.iter().map(|b| format!("{b:02x}")).collect();
            w.set(EventField::RequestId, Raw::Str(Cow::Owned(hex)));
        }
        self.events.push(w.validate(ctx));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Outcome;

    const SPANS: &str = r#"{"resourceSpans":[{"resource":{"attributes":[
        {"key":"service.name","value":{"stringValue":"render-bot"}},
        {"key":"ratewarden.org","value":{"stringValue":"acme"}}]},
      "scopeSpans":[{"scope":{"name":"openai"},"spans":[
        {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"chat gpt-4o",
         "kind":3,"startTimeUnixNano":"1795788000000000000","endTimeUnixNano":"1795788000250000000",
         "attributes":[{"key":"gen_ai.operation.name","value":{"stringValue":"chat"}},
           {"key":"gen_ai.request.model","value":{"stringValue":"gpt-4o"}},
           {"key":"gen_ai.usage.input_tokens","value":{"intValue":"100"}},
           {"key":"gen_ai.usage.output_tokens","value":{"intValue":"20"}}]},
        {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b175","name":"chat gpt-4o",
         "startTimeUnixNano":"1795788001000000000","endTimeUnixNano":"1795788001100000000",
         "status":{"code":2},
         "attributes":[{"key":"gen_ai.operation.name","value":{"stringValue":"chat"}},
           {"key":"error.type","value":{"stringValue":"RateLimitError"}},
           {"key":"ratewarden.app","value":{"stringValue":"batch"}}]},
        {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b176","name":"GET /",
         "startTimeUnixNano":"1795788001000000000","endTimeUnixNano":"1795788001100000000"}
      ]}]}]}"#;

    fn ctx() -> ParseContext<'static> {
        ParseContext::default()
    }

    #[test]
    fn genai_spans_in_json_become_events() {
        let d = decode(
            Signal::Traces,
            Encoding::Json,
            SPANS.as_bytes(),
            &OtlpMapping::default(),
            &ctx(),
        )
        .unwrap();
        assert_eq!(d.skipped, 1, "the HTTP server span is not a GenAI call");
        let evs: Vec<_> = d.events.into_iter().map(|r| r.unwrap().event).collect();
        assert_eq!(evs.len(), 2);
        let ok = &evs[0];
        assert_eq!((&*ok.org, ok.app_name()), ("acme", "render-bot"));
        assert_eq!(ok.ts_ms, Some(1_795_788_000_000));
        assert_eq!((ok.status, ok.tokens), (Some(200), Some(120)));
        assert_eq!(ok.latency_ms, Some(250.0));
        assert_eq!(ok.request_id.as_deref(), Some("eee19b7ec3c1b174"));
        let limited = &evs[1];
        assert_eq!(limited.outcome(), Outcome::RateLimited);
        assert_eq!(
            limited.app_name(),
            "batch",
            "a span attribute before the resource's"
        );
        assert_eq!(limited.error_code.as_deref(), Some("RateLimitError"));
    }

    #[test]
    fn protobuf_round_trip_and_garbage() {
        let req: ExportTraceServiceRequest = serde_json::from_str(SPANS).unwrap();
        let bytes = req.encode_to_vec();
        let d = decode(
            Signal::Traces,
            Encoding::Protobuf,
            &bytes,
            &OtlpMapping::default(),
            &ctx(),
        )
        .unwrap();
        assert_eq!(d.events.len(), 2);
        let err = decode(
            Signal::Traces,
            Encoding::Protobuf,
            b"\xff\xff not protobuf",
            &OtlpMapping::default(),
            &ctx(),
        )
        .unwrap_err();
        assert!(err.contains("not an OTLP protobuf message"), "{err}");
        assert!(
            decode(
                Signal::Logs,
                Encoding::Json,
                b"[1]",
                &OtlpMapping::default(),
                &ctx()
            )
            .is_err()
        );
    }

    #[test]
    fn genai_log_events_and_missing_orgs() {
        let logs = r#"{"resourceLogs":[{"resource":{"attributes":[]},"scopeLogs":[{"logRecords":[
            {"timeUnixNano":"1795788002000000000","eventName":"gen_ai.client.inference.operation.details",
             "spanId":"eee19b7ec3c1b174","attributes":[
               {"key":"http.response.status_code","value":{"intValue":"429"}},
               {"key":"ratewarden.org","value":{"stringValue":"globex"}}]},
            {"timeUnixNano":"1795788002000000000","eventName":"gen_ai.client.inference.operation.details"},
            {"timeUnixNano":"1795788002000000000","body":{"stringValue":"an app log line"}}
        ]}]}]}"#;
        let d = decode(
            Signal::Logs,
            Encoding::Json,
            logs.as_bytes(),
            &OtlpMapping::default(),
            &ctx(),
        )
        .unwrap();
        assert_eq!(d.skipped, 1);
        let first = d.events[0].as_ref().unwrap();
        assert_eq!(
            (&*first.event.org, first.event.status),
            ("globex", Some(429))
        );
        assert_eq!(first.event.request_id.as_deref(), Some("eee19b7ec3c1b174"));
        assert!(d.events[1].is_err(), "no org and no default: rejected");
        // A status that is not a number is a field error, and the outcome unknown.
        let odd = logs.replace(r#"{"intValue":"429"}"#, r#"{"stringValue":"abc"}"#);
        let d = decode(
            Signal::Logs,
            Encoding::Json,
            odd.as_bytes(),
            &OtlpMapping::default(),
            &ctx(),
        )
        .unwrap();
        let p = d.events[0].as_ref().unwrap();
        assert_eq!(p.event.outcome(), Outcome::Unknown);
        assert_eq!(p.field_errors[0].field, EventField::Status);
        let mapped = OtlpMapping {
            default_org: Some("shared".into()),
            ..OtlpMapping::default()
        };
        let d = decode(
            Signal::Logs,
            Encoding::Json,
            logs.as_bytes(),
            &mapped,
            &ctx(),
        )
        .unwrap();
        assert_eq!(&*d.events[1].as_ref().unwrap().event.org, "shared");
    }
}
