//! Line formats of file sources: native JSON (optionally with fields at other paths), nginx
//! `log_format` lines and Envoy access-log lines, each compiled once from the config into a
//! [`LineFormat`] and then applied to every line without further setup.
//!
//! nginx and Envoy formats are templates: literal text with variables between (`$status`,
//! `%RESPONSE_CODE%`). A variable's value runs up to the next literal text, which is how both
//! servers write them (quotes inside values are escaped). `-` means absent. Every event built
//! here goes through the same validation as a JSON event.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::events::{
    Event, Fields, ParseContext, Reason, Rejection, TsField, event_from_fields, event_from_value,
    parse_event,
};

/// nginx's predefined `combined` format.
pub const NGINX_COMBINED: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent""#;

/// Envoy's default access-log format.
pub const ENVOY_DEFAULT: &str = r#"[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%""#;

/// An event field a log's value can be mapped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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
}

impl EventField {
    const ALL: [EventField; 13] = [
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
    ];

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
        }
    }

    /// The field named `name`.
    pub fn parse(name: &str) -> Option<EventField> {
        EventField::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The event field a `fields` key names, or the config error listing the known ones.
    fn of_key(key: &str) -> Result<EventField, String> {
        EventField::parse(key).ok_or_else(|| {
            format!(
                "fields.{key} is not an event field ({})",
                EventField::ALL.map(EventField::name).join(", ")
            )
        })
    }
}

/// Which server wrote the lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `$variable`.
    Nginx,
    /// `%OPERATOR%`.
    Envoy,
}

/// How a captured text becomes a field value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conversion {
    Text,
    Integer,
    /// A plain number (seconds for `retry_after`, ms for `latency_ms`).
    Number,
    /// Seconds to milliseconds (`$request_time`).
    SecondsToMs,
    /// `10/Oct/2000:13:55:36 -0700`.
    NginxLocalTime,
    /// RFC 3339, or epoch seconds/ms when numeric.
    Time,
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    Var(usize),
}

/// A compiled nginx or Envoy format.
#[derive(Debug, Clone)]
pub struct Template {
    segments: Vec<Segment>,
    vars: Vec<String>,
    bindings: Vec<(EventField, usize, Conversion)>,
}

fn normalize(dialect: Dialect, name: &str) -> String {
    match dialect {
        Dialect::Nginx => name
            .trim_start_matches('$')
            .trim_matches(['{', '}'])
            .to_ascii_lowercase(),
        Dialect::Envoy => {
            let inner = name.trim_matches('%');
            // `%REQ(USER-AGENT):20%` truncates; the operator is the same.
            let inner = match inner.rsplit_once(':') {
                Some((op, n)) if op.ends_with(')') && n.chars().all(|c| c.is_ascii_digit()) => op,
                _ => inner,
            };
            inner.to_ascii_uppercase()
        }
    }
}

impl Template {
    /// Compiles `format` and binds event fields: `fields` (event field → variable) first, then
    /// the defaults of SPEC §3 for whatever is left.
    pub fn compile(
        dialect: Dialect,
        format: &str,
        fields: &BTreeMap<String, String>,
    ) -> Result<Template, String> {
        let format = format.trim_end_matches(['\n', '\r']);
        let mut segments = Vec::new();
        let mut vars: Vec<String> = Vec::new();
        let mut literal = String::new();
        let mut push_var = |name: String, literal: &mut String, segments: &mut Vec<Segment>| {
            if !literal.is_empty() {
                segments.push(Segment::Literal(std::mem::take(literal)));
            }
            if matches!(segments.last(), Some(Segment::Var(_))) {
                return Err(format!(
                    "variables {} and {name} are not separated by literal text, so their values cannot be told apart",
                    match segments.last() {
                        Some(Segment::Var(i)) => vars[*i].clone(),
                        _ => String::new(),
                    }
                ));
            }
            vars.push(name);
            segments.push(Segment::Var(vars.len() - 1));
            Ok(())
        };
        let chars: Vec<char> = format.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            match (dialect, c) {
                (Dialect::Nginx, '$') => {
                    let (name, next) = if chars.get(i + 1) == Some(&'{') {
                        let end = chars[i + 2..]
                            .iter()
                            .position(|&c| c == '}')
                            .ok_or("unclosed ${ in log_format")?;
                        (
                            chars[i + 2..i + 2 + end].iter().collect::<String>(),
                            i + 3 + end,
                        )
                    } else {
                        let len = chars[i + 1..]
                            .iter()
                            .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
                            .count();
                        (
                            chars[i + 1..i + 1 + len].iter().collect::<String>(),
                            i + 1 + len,
                        )
                    };
                    if name.is_empty() {
                        literal.push('$');
                        i += 1;
                        continue;
                    }
                    push_var(normalize(dialect, &name), &mut literal, &mut segments)?;
                    i = next;
                }
                (Dialect::Envoy, '%') => {
                    if chars.get(i + 1) == Some(&'%') {
                        literal.push('%');
                        i += 2;
                        continue;
                    }
                    let end = chars[i + 1..]
                        .iter()
                        .position(|&c| c == '%')
                        .ok_or("unclosed % operator in the format")?;
                    let name: String = chars[i + 1..i + 1 + end].iter().collect();
                    push_var(normalize(dialect, &name), &mut literal, &mut segments)?;
                    i += end + 2;
                }
                _ => {
                    literal.push(c);
                    i += 1;
                }
            }
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        if vars.is_empty() {
            return Err("the format has no variables".into());
        }

        let find = |name: &str| vars.iter().position(|v| v == name);
        let mut bindings: Vec<(EventField, usize, Conversion)> = Vec::new();
        for (field, var) in fields {
            let f = EventField::of_key(field)?;
            let name = normalize(dialect, var);
            let idx = find(&name).ok_or_else(|| {
                format!("fields.{field} refers to {var}, which the format does not contain")
            })?;
            bindings.push((f, idx, conversion(dialect, f, &name)));
        }
        let defaults: &[(EventField, &[&str])] = match dialect {
            Dialect::Nginx => &[
                (EventField::Ts, &["time_iso8601", "time_local", "msec"]),
                (EventField::Status, &["status"]),
                (EventField::LatencyMs, &["request_time"]),
                (EventField::RequestId, &["request_id"]),
            ],
            Dialect::Envoy => &[
                (EventField::Ts, &["START_TIME"]),
                (EventField::Status, &["RESPONSE_CODE"]),
                (EventField::LatencyMs, &["DURATION"]),
                (EventField::RequestId, &["REQ(X-REQUEST-ID)"]),
            ],
        };
        for (field, candidates) in defaults {
            if bindings.iter().any(|(f, _, _)| f == field) {
                continue;
            }
            if let Some((idx, name)) = candidates.iter().find_map(|c| find(c).map(|i| (i, *c))) {
                bindings.push((*field, idx, conversion(dialect, *field, name)));
            }
        }
        Ok(Template {
            segments,
            vars,
            bindings,
        })
    }

    /// Variables of the format, normalized.
    pub fn variables(&self) -> &[String] {
        &self.vars
    }

    /// Splits `line` into variable values; `None` when it does not follow the format.
    fn captures<'l>(&self, line: &'l str, out: &mut Vec<Option<&'l str>>) -> bool {
        out.clear();
        out.resize(self.vars.len(), None);
        let mut pos = 0;
        for (i, seg) in self.segments.iter().enumerate() {
            match seg {
                Segment::Literal(l) => {
                    if !line[pos..].starts_with(l.as_str()) {
                        return false;
                    }
                    pos += l.len();
                }
                Segment::Var(v) => {
                    let end = match self.segments.get(i + 1) {
                        Some(Segment::Literal(next)) => match line[pos..].find(next.as_str()) {
                            Some(at) => pos + at,
                            None => return false,
                        },
                        _ => line.len(),
                    };
                    let value = &line[pos..end];
                    out[*v] = (value != "-" && !value.is_empty()).then_some(value);
                    pos = end;
                }
            }
        }
        pos == line.len()
    }

    /// Parses one line into an event.
    pub fn parse<'l>(&self, line: &'l str, ctx: &ParseContext<'l>) -> Result<Event<'l>, Rejection> {
        let mut caps = Vec::with_capacity(self.vars.len());
        if !self.captures(line, &mut caps) {
            return Err(Rejection {
                reason: Reason::InvalidField,
                detail: "the line does not follow the configured format".into(),
            });
        }
        let mut f = Fields::default();
        for &(field, idx, conv) in &self.bindings {
            let Some(text) = caps[idx] else { continue };
            let bad = || Rejection {
                reason: Reason::InvalidField,
                detail: format!("{} is not valid: {text:?}", field.name()).into(),
            };
            let number = || {
                text.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite())
                    .ok_or_else(bad)
            };
            match field {
                EventField::Ts => {
                    f.ts = Some(match conv {
                        Conversion::NginxLocalTime => TsField::Millis(
                            chrono::DateTime::parse_from_str(text, "%d/%b/%Y:%H:%M:%S %z")
                                .map_err(|_| bad())?
                                .timestamp_millis(),
                        ),
                        _ => match text.parse::<f64>() {
                            Ok(n) => TsField::Seconds(n),
                            Err(_) => TsField::Rfc3339(text),
                        },
                    })
                }
                EventField::Status => f.status = Some(text.trim().parse().map_err(|_| bad())?),
                EventField::Tokens => f.tokens = Some(text.trim().parse().map_err(|_| bad())?),
                EventField::RetryAfter => f.retry_after = Some(number()?),
                EventField::LatencyMs => {
                    let n = number()?;
                    f.latency_ms = Some(if conv == Conversion::SecondsToMs {
                        n * 1000.0
                    } else {
                        n
                    });
                }
                EventField::Org => f.org = Some(text),
                EventField::App => f.app = Some(text),
                EventField::User => f.user = Some(text),
                EventField::Model => f.model = Some(text),
                EventField::Kind => f.kind = Some(text),
                EventField::JobId => f.job_id = Some(text),
                EventField::ErrorCode => f.error_code = Some(text),
                EventField::RequestId => f.request_id = Some(text),
            }
        }
        event_from_fields(f, ctx)
    }
}

fn conversion(dialect: Dialect, field: EventField, var: &str) -> Conversion {
    match field {
        EventField::Ts if dialect == Dialect::Nginx && var == "time_local" => {
            Conversion::NginxLocalTime
        }
        EventField::Ts => Conversion::Time,
        EventField::Status | EventField::Tokens => Conversion::Integer,
        EventField::LatencyMs
            if dialect == Dialect::Nginx
                && (var == "request_time"
                    || var.starts_with("upstream_") && var.ends_with("_time")) =>
        {
            Conversion::SecondsToMs
        }
        EventField::LatencyMs | EventField::RetryAfter => Conversion::Number,
        _ => Conversion::Text,
    }
}

/// A compiled line format.
#[derive(Debug, Clone)]
pub enum LineFormat {
    /// The native event schema; `fields` moves values found at other (dotted) paths to where
    /// the schema expects them.
    Json {
        /// (event field, path segments).
        fields: Vec<(EventField, Vec<String>)>,
    },
    /// nginx or Envoy.
    Template(Template),
}

impl LineFormat {
    /// JSON with `fields` (event field → dotted path).
    pub fn json(fields: &BTreeMap<String, String>) -> Result<LineFormat, String> {
        let mut out = Vec::new();
        for (field, path) in fields {
            let f = EventField::of_key(field)?;
            let segs: Vec<String> = path.split('.').map(str::to_string).collect();
            if segs.iter().any(String::is_empty) {
                return Err(format!(
                    "fields.{field} = {path:?} is not a dotted path like \"organization.id\""
                ));
            }
            out.push((f, segs));
        }
        Ok(LineFormat::Json { fields: out })
    }

    /// Parses one line (without its newline).
    pub fn parse<'l>(
        &self,
        line: &'l [u8],
        ctx: &ParseContext<'l>,
    ) -> Result<Event<'l>, Rejection> {
        match self {
            LineFormat::Json { fields } if fields.is_empty() => parse_event(line, ctx),
            LineFormat::Json { fields } => {
                let mut v: Value = serde_json::from_slice(line).map_err(|e| Rejection {
                    reason: Reason::InvalidJson,
                    detail: e.to_string().into(),
                })?;
                for (field, path) in fields {
                    let found = path
                        .iter()
                        .try_fold(&v, |cur, seg| cur.get(seg.as_str()))
                        .cloned();
                    if let (Some(found), Some(obj)) = (found, v.as_object_mut()) {
                        obj.insert(field.name().to_string(), found);
                    }
                }
                event_from_value(v, ctx)
            }
            LineFormat::Template(t) => {
                let text = std::str::from_utf8(line).map_err(|_| Rejection {
                    reason: Reason::InvalidField,
                    detail: "the line is not valid UTF-8".into(),
                })?;
                t.parse(text, ctx)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ctx() -> ParseContext<'static> {
        ParseContext {
            default_org: Some("acme"),
            ..ParseContext::default()
        }
    }

    #[test]
    fn nginx_combined_with_defaults() {
        let t = Template::compile(Dialect::Nginx, NGINX_COMBINED, &BTreeMap::new()).unwrap();
        let line = r#"203.0.113.7 - - [27/Nov/2026:14:00:00 +0100] "POST /v1/videos HTTP/1.1" 429 112 "-" "python-requests/2.31.0 \x22quoted\x22""#;
        let ev = t.parse(line, &ctx()).unwrap();
        assert_eq!(ev.ts_ms, Some(1_795_784_400_000), "14:00 +01:00 is 13:00Z");
        assert_eq!(ev.status, Some(429));
        assert_eq!(ev.org, "acme");
        assert_eq!(ev.app_name(), "default");
    }

    #[test]
    fn nginx_custom_format_with_org_and_retry_after() {
        let fmt = r#"$time_iso8601 $status $request_time "$http_x_org" "$http_x_app" ra=$upstream_http_retry_after rid=$request_id"#;
        let fields = map(&[
            ("org", "$http_x_org"),
            ("app", "$http_x_app"),
            ("retry_after", "$upstream_http_retry_after"),
        ]);
        let t = Template::compile(Dialect::Nginx, fmt, &fields).unwrap();
        let ev = t
            .parse(
                r#"2026-11-27T14:00:00+00:00 429 0.250 "beta" "render-bot" ra=20 rid=abc123"#,
                &ctx(),
            )
            .unwrap();
        assert_eq!(ev.org, "beta");
        assert_eq!(ev.app_name(), "render-bot");
        assert_eq!(ev.retry_after_ms, Some(20_000));
        assert_eq!(ev.latency_ms, Some(250.0));
        assert_eq!(ev.request_id.as_deref(), Some("abc123"));
        // "-" means absent: the source's default org applies.
        let ev = t
            .parse(
                r#"2026-11-27T14:00:01+00:00 200 0.010 "-" "-" ra=- rid=-"#,
                &ctx(),
            )
            .unwrap();
        assert_eq!(
            (ev.org.as_ref(), ev.retry_after_ms, ev.request_id),
            ("acme", None, None)
        );
    }

    #[test]
    fn nginx_msec_and_malformed_lines() {
        let t = Template::compile(Dialect::Nginx, "$msec $status", &BTreeMap::new()).unwrap();
        assert_eq!(
            t.parse("1795788000.123 200", &ctx()).unwrap().ts_ms,
            Some(1_795_788_000_123)
        );
        let reason = |l: &str| t.parse(l, &ctx()).unwrap_err().reason;
        assert_eq!(
            reason("1795788000.123"),
            Reason::InvalidField,
            "truncated line"
        );
        assert_eq!(
            reason("1795788000.123 OK"),
            Reason::InvalidField,
            "status not a number"
        );
        assert_eq!(
            reason("1795788000.123 700"),
            Reason::InvalidField,
            "status out of range"
        );
        let nt = Template::compile(Dialect::Nginx, NGINX_COMBINED, &BTreeMap::new()).unwrap();
        assert_eq!(
            nt.parse("garbage", &ctx()).unwrap_err().reason,
            Reason::InvalidField
        );
        assert_eq!(
            nt.parse(
                r#"1.2.3.4 - - [31/Foo/2026:14:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "-""#,
                &ctx()
            )
            .unwrap_err()
            .reason,
            Reason::InvalidField,
            "bad month"
        );
    }

    #[test]
    fn envoy_default_format() {
        let t = Template::compile(Dialect::Envoy, ENVOY_DEFAULT, &BTreeMap::new()).unwrap();
        let line = r#"[2026-11-27T14:00:00.310Z] "POST /v1/videos HTTP/1.1" 429 - 148 73 41 40 "10.0.0.5" "curl/8.5.0" "7f1c2d3e-0000-4a6b-9c1d-2e3f4a5b6c7d" "api.example.com" "10.1.2.3:443""#;
        let ev = t.parse(line, &ctx()).unwrap();
        assert_eq!(ev.ts_ms, Some(1_795_788_000_310));
        assert_eq!(ev.status, Some(429));
        assert_eq!(ev.latency_ms, Some(41.0));
        assert_eq!(
            ev.request_id.as_deref(),
            Some("7f1c2d3e-0000-4a6b-9c1d-2e3f4a5b6c7d")
        );
        // Envoy writes "-" for an unset response code.
        let no_code = line.replace(" 429 ", " - ");
        let ev = t.parse(&no_code, &ctx()).unwrap();
        assert_eq!(ev.status, None);
    }

    #[test]
    fn envoy_custom_mapping_is_case_insensitive() {
        let fmt = "%START_TIME% %RESPONSE_CODE% %REQ(x-org)% %REQ(X-APP):10%\n";
        let t = Template::compile(
            Dialect::Envoy,
            fmt,
            &map(&[("org", "%REQ(X-ORG)%"), ("app", "%REQ(X-APP)%")]),
        )
        .unwrap();
        let ev = t
            .parse("2026-11-27T14:00:00Z 200 gamma bot", &ctx())
            .unwrap();
        assert_eq!((ev.org.as_ref(), ev.app_name()), ("gamma", "bot"));
    }

    #[test]
    fn compile_errors_say_what_is_wrong() {
        let e = Template::compile(Dialect::Nginx, "$status$body_bytes_sent", &BTreeMap::new())
            .unwrap_err();
        assert!(e.contains("not separated"), "{e}");
        let e = Template::compile(Dialect::Nginx, "$status", &map(&[("org", "$http_x_org")]))
            .unwrap_err();
        assert!(e.contains("does not contain"), "{e}");
        let e = Template::compile(
            Dialect::Nginx,
            "$status",
            &map(&[("organisation", "$status")]),
        )
        .unwrap_err();
        assert!(e.contains("not an event field"), "{e}");
        let e = Template::compile(Dialect::Envoy, "%START_TIME", &BTreeMap::new()).unwrap_err();
        assert!(e.contains("unclosed"), "{e}");
        assert!(LineFormat::json(&map(&[("org", "a..b")])).is_err());
    }

    #[test]
    fn json_dotted_paths() {
        let f = LineFormat::json(&map(&[
            ("org", "organization.id"),
            ("status", "response.code"),
            ("ts", "time"),
        ]))
        .unwrap();
        let line = br#"{"time":"2026-11-27T14:00:00Z","organization":{"id":"delta"},"response":{"code":503},"app":"x"}"#;
        let ev = f.parse(line, &ctx()).unwrap();
        assert_eq!(ev.org, "delta");
        assert_eq!(ev.status, Some(503));
        assert_eq!(ev.ts_ms, Some(1_795_788_000_000));
        assert_eq!(ev.app_name(), "x", "unmapped fields keep working");
        // A missing path falls back to the source default.
        let ev = f.parse(br#"{"response":{"code":200}}"#, &ctx()).unwrap();
        assert_eq!(ev.org, "acme");
        assert_eq!(
            f.parse(b"{nope", &ctx()).unwrap_err().reason,
            Reason::InvalidJson
        );
        assert_eq!(
            f.parse(br#"{"response":{"code":"x"}}"#, &ctx())
                .unwrap_err()
                .reason,
            Reason::InvalidField
        );
        assert_eq!(
            LineFormat::Template(
                Template::compile(Dialect::Nginx, "$status", &BTreeMap::new()).unwrap()
            )
            .parse(b"\xff\xfe", &ctx())
            .unwrap_err()
            .reason,
            Reason::InvalidField
        );
    }
}
