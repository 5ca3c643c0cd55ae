//! Line formats: native JSON (optionally with fields at other paths), nginx `log_format`
//! lines and Envoy access-log lines, each compiled once from the config into a [`LineFormat`]
//! and then applied to every record without further setup.
//!
//! nginx and Envoy formats are templates: literal text with variables between (`$status`,
//! `%RESPONSE_CODE%`). A variable's value runs up to the next literal text, which is how both
//! servers write them (quotes inside values are escaped). `-` means absent. Envoy operators
//! are tokenised as Envoy does (`%NAME(argument):length%`, the argument running to the first
//! `)`, so `%START_TIME(%s)%` is one operator). Every format fills a `Wire` that goes
//! through the same validation as a native JSON event.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::Value;

use super::event::FieldSet;
use super::event::{EventField, ParseContext, Parsed, Reason, Rejection};
use super::keyed::Keyed;
use super::values::Raw;
use super::wire::Wire;

/// nginx's predefined `combined` format (`log_format combined`, ngx_http_log_module).
pub const NGINX_COMBINED: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent""#;

/// The `main` format of the nginx.conf that nginx.org's and most distributions' packages ship.
pub const NGINX_MAIN: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" "$http_x_forwarded_for""#;

/// Envoy's default access-log format (Envoy docs, "Default format string").
pub const ENVOY_DEFAULT: &str = r#"[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%""#;

/// Istio's default sidecar access-log format (Istio docs, "Envoy Access Logs", TEXT encoding).
pub const ISTIO_DEFAULT: &str = r#"[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%"#;

/// Which server wrote the lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `$variable`.
    Nginx,
    /// `%OPERATOR%`.
    Envoy,
}

impl Dialect {
    /// The built-in format a `log_format` name stands for, if it is one: nginx `combined`
    /// and `main`; Envoy `default` and `istio`.
    pub fn named(self, name: &str) -> Option<&'static str> {
        match (self, name) {
            (Dialect::Nginx, "combined") => Some(NGINX_COMBINED),
            (Dialect::Nginx, "main") => Some(NGINX_MAIN),
            (Dialect::Envoy, "default") => Some(ENVOY_DEFAULT),
            (Dialect::Envoy, "istio") => Some(ISTIO_DEFAULT),
            _ => None,
        }
    }

    /// A `log_format` value: a built-in name or a template.
    pub fn resolve(self, format: &str) -> &str {
        self.named(format.trim()).unwrap_or(format)
    }
}

/// How a captured text becomes a field value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Conversion {
    Text,
    /// Seconds to milliseconds (`$request_time`, `$upstream_response_time`).
    Seconds,
    /// `10/Oct/2000:13:55:36 -0700`.
    NginxLocalTime,
    /// RFC 3339, or epoch seconds/ms when numeric.
    Time,
    /// An Envoy `START_TIME(format)` strftime format.
    Strftime(String),
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    /// A variable, and how many times the literal after it occurs inside its own value (a
    /// time format with a space, before a space).
    Var(usize, usize),
}

/// One variable of a template: its normalised name (`status`, `REQ(X-ORG-ID)`) and, for an
/// Envoy operator, its argument as written when the name alone does not identify it.
#[derive(Debug, Clone, PartialEq)]
struct Var {
    name: String,
    /// `START_TIME`'s format.
    time_format: Option<String>,
}

/// A compiled nginx or Envoy format.
#[derive(Debug, Clone)]
pub struct Template {
    segments: Vec<Segment>,
    vars: Vec<Var>,
    bindings: Vec<(EventField, usize, Conversion)>,
    /// Response-header variables of the rate-limit families (`$upstream_http_*`,
    /// `$sent_http_*`, `%RESP(...)%`): header name, variable.
    headers: Vec<(String, usize)>,
}

/// Splits an Envoy operator (without its `%`s) into its normalised name and argument.
/// `REQ(user-agent):20` → (`REQ(USER-AGENT)`, None); `START_TIME(%s)` → (`START_TIME`, `%s`).
fn envoy_var(inner: &str) -> Var {
    // `%REQ(USER-AGENT):20%` truncates the value; the operator is the same.
    let inner = match inner.rsplit_once(':') {
        Some((op, n)) if op.ends_with(')') && n.chars().all(|c| c.is_ascii_digit()) => op,
        _ => inner,
    };
    match inner.split_once('(') {
        Some((op, arg)) if op.eq_ignore_ascii_case("START_TIME") => Var {
            name: "START_TIME".into(),
            time_format: Some(arg.trim_end_matches(')').to_string()).filter(|f| !f.is_empty()),
        },
        _ => Var {
            name: inner.to_ascii_uppercase(),
            time_format: None,
        },
    }
}

fn nginx_var(name: &str) -> Var {
    Var {
        name: name
            .trim_start_matches('$')
            .trim_matches(['{', '}'])
            .to_ascii_lowercase(),
        time_format: None,
    }
}

/// The variable a `fields` value names, normalised as in the template.
fn normalize(dialect: Dialect, name: &str) -> String {
    match dialect {
        Dialect::Nginx => nginx_var(name).name,
        Dialect::Envoy => envoy_var(name.trim().trim_matches('%')).name,
    }
}

/// Length of an Envoy operator starting at `chars[0] == '%'`, `%` to `%` inclusive, by
/// Envoy's own grammar: `%[A-Z0-9_]+(\([^)]*\))?(:[0-9]+)?%`.
fn envoy_operator_len(chars: &[char]) -> Result<usize, String> {
    let bad = || {
        let shown: String = chars.iter().take(40).collect();
        format!("{shown:?} is not an Envoy operator (%NAME%, %NAME(arg)%, %NAME(arg):N%)")
    };
    let mut i = 1;
    while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
        i += 1;
    }
    if i == 1 {
        return Err(bad());
    }
    if chars.get(i) == Some(&'(') {
        let close = chars[i..]
            .iter()
            .position(|&c| c == ')')
            .ok_or_else(|| format!("unclosed ( in {}", bad()))?;
        i += close + 1;
    }
    if chars.get(i) == Some(&':') {
        let digits = chars[i + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if digits == 0 {
            return Err(bad());
        }
        i += 1 + digits;
    }
    if chars.get(i) != Some(&'%') {
        return Err(format!("unclosed % operator: {}", bad()));
    }
    Ok(i + 1)
}

impl Template {
    /// Compiles `format` (a template, or a built-in name: see [`Dialect::named`]) and binds
    /// event fields: `fields` (event field → variable) first, then the defaults of SPEC §3 for
    /// whatever is left.
    pub fn compile(
        dialect: Dialect,
        format: &str,
        fields: &BTreeMap<String, String>,
    ) -> Result<Template, String> {
        let format = dialect.resolve(format).trim_end_matches(['\n', '\r']);
        let mut segments = Vec::new();
        let mut vars: Vec<Var> = Vec::new();
        let mut literal = String::new();
        let mut push_var = |var: Var, literal: &mut String, segments: &mut Vec<Segment>| {
            if !literal.is_empty() {
                segments.push(Segment::Literal(std::mem::take(literal)));
            }
            if let Some(Segment::Var(i, _)) = segments.last() {
                return Err(format!(
                    "variables {} and {} are not separated by literal text, so their values cannot be told apart",
                    vars[*i].name, var.name
                ));
            }
            vars.push(var);
            segments.push(Segment::Var(vars.len() - 1, 0));
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
                    push_var(nginx_var(&name), &mut literal, &mut segments)?;
                    i = next;
                }
                (Dialect::Envoy, '%') => {
                    if chars.get(i + 1) == Some(&'%') {
                        literal.push('%');
                        i += 2;
                        continue;
                    }
                    let len = envoy_operator_len(&chars[i..])?;
                    let inner: String = chars[i + 1..i + len - 1].iter().collect();
                    push_var(envoy_var(&inner), &mut literal, &mut segments)?;
                    i += len;
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
            let other = match dialect {
                Dialect::Nginx => (Dialect::Envoy, "an Envoy", "envoy"),
                Dialect::Envoy => (Dialect::Nginx, "an nginx", "nginx"),
            };
            if other.0.named(format.trim()).is_some() {
                return Err(format!(
                    "{:?} is {} format: use format = \"{}\" (--format {})",
                    format.trim(),
                    other.1,
                    other.2,
                    other.2
                ));
            }
            return Err("the format has no variables".into());
        }
        for i in 0..segments.len() {
            if let (Segment::Var(v, _), Some(Segment::Literal(next))) =
                (&segments[i], segments.get(i + 1))
                && let Some(fmt) = &vars[*v].time_format
            {
                let inside = strftime_literals(fmt).matches(next.as_str()).count();
                segments[i] = Segment::Var(*v, inside);
            }
        }

        let find = |name: &str| vars.iter().position(|v| v.name == name);
        let mut bindings: Vec<(EventField, usize, Conversion)> = Vec::new();
        for (field, var) in fields {
            let f = EventField::of_key(field)?;
            if f == EventField::RateLimit {
                return Err("fields.ratelimit can only be mapped in JSON formats".into());
            }
            let name = normalize(dialect, var);
            let idx = find(&name).ok_or_else(|| {
                format!("fields.{field} refers to {var}, which the format does not contain")
            })?;
            bindings.push((f, idx, conversion(dialect, f, &vars[idx])?));
        }
        let defaults: &[(EventField, &[&str])] = match dialect {
            Dialect::Nginx => &[
                (EventField::Ts, &["time_iso8601", "time_local", "msec"]),
                (EventField::Status, &["status"]),
                (EventField::LatencyMs, &["request_time"]),
                (EventField::RequestId, &["request_id", "http_x_request_id"]),
                (
                    EventField::RetryAfter,
                    &["upstream_http_retry_after", "sent_http_retry_after"],
                ),
                (EventField::Org, &["http_openai_organization"]),
            ],
            Dialect::Envoy => &[
                (EventField::Ts, &["START_TIME"]),
                (EventField::Status, &["RESPONSE_CODE"]),
                (EventField::LatencyMs, &["DURATION"]),
                (EventField::RequestId, &["REQ(X-REQUEST-ID)"]),
                (EventField::RetryAfter, &["RESP(RETRY-AFTER)"]),
                (EventField::Org, &["REQ(OPENAI-ORGANIZATION)"]),
            ],
        };
        for (field, candidates) in defaults {
            if bindings.iter().any(|(f, _, _)| f == field) {
                continue;
            }
            if let Some(idx) = candidates.iter().find_map(|c| find(c)) {
                bindings.push((*field, idx, conversion(dialect, *field, &vars[idx])?));
            }
        }
        let headers = vars
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let name = match dialect {
                    Dialect::Nginx => v
                        .name
                        .strip_prefix("upstream_http_")
                        .or_else(|| v.name.strip_prefix("sent_http_"))?
                        .replace('_', "-"),
                    Dialect::Envoy => v
                        .name
                        .strip_prefix("RESP(")?
                        .strip_suffix(')')?
                        .to_ascii_lowercase(),
                };
                super::headers::is_rate_limit_header(&name).then_some((name, i))
            })
            .collect();
        Ok(Template {
            segments,
            vars,
            bindings,
            headers,
        })
    }

    /// Variables of the format, normalised.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.vars.iter().map(|v| v.name.as_str())
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
                Segment::Var(v, inside) => {
                    let end = match self.segments.get(i + 1) {
                        Some(Segment::Literal(next)) => {
                            match line[pos..].match_indices(next.as_str()).nth(*inside) {
                                Some((at, _)) => pos + at,
                                None => return false,
                            }
                        }
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
    pub fn parse<'l>(
        &self,
        line: &'l str,
        ctx: &ParseContext<'l>,
    ) -> Result<Parsed<'l>, Rejection> {
        let mut caps = Vec::with_capacity(self.vars.len());
        if !self.captures(line, &mut caps) {
            return Err(Rejection::new(
                Reason::InvalidField,
                "the line does not follow the configured format",
            ));
        }
        let mut wire = Wire::default();
        for (field, idx, conv) in &self.bindings {
            let Some(text) = caps[*idx] else { continue };
            let bad_time = |why: &str| {
                Rejection::new(
                    Reason::InvalidField,
                    format!("ts {text:?} is not valid: {why}"),
                )
            };
            let raw = match conv {
                Conversion::NginxLocalTime => Raw::Millis(
                    chrono::DateTime::parse_from_str(text, "%d/%b/%Y:%H:%M:%S %z")
                        .map_err(|e| bad_time(&e.to_string()))?
                        .timestamp_millis(),
                ),
                Conversion::Strftime(fmt) if fmt != "%s" => {
                    Raw::Millis(strftime_ms(text, fmt).map_err(|e| bad_time(&e))?)
                }
                Conversion::Seconds => {
                    wire.latency_in_seconds = true;
                    Raw::Str(text.into())
                }
                _ => Raw::Str(text.into()),
            };
            wire.set(*field, raw);
        }
        // A header the upstream did not send is logged as `-`: absent, and no name is copied.
        for (name, idx) in &self.headers {
            if let Some(text) = caps[*idx].filter(|t| !matches!(t.trim(), "" | "-")) {
                wire.add_header(Cow::Owned(name.clone()), Raw::Str(text.into()));
            }
        }
        wire.validate(ctx)
    }
}

/// The literal text of a strftime format: what every time it renders contains besides its
/// fields (`%Y/%m/%d %H:%M` → `// :`).
fn strftime_literals(format: &str) -> String {
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        // A specifier: flags and widths (`%3f`, `%-d`, `%:z`), then its letter.
        for d in chars.by_ref() {
            if !(d.is_ascii_digit() || "-_0^#:.".contains(d)) {
                if d == '%' {
                    out.push('%');
                }
                break;
            }
        }
    }
    out
}

/// A time written with a strftime `format` (Envoy's `%START_TIME(format)%`), in Unix ms. A
/// format without a zone is UTC, as Envoy writes it.
fn strftime_ms(text: &str, format: &str) -> Result<i64, String> {
    let has_zone = format.contains("%z") || format.contains("%:z") || format.contains("%#z");
    if has_zone {
        chrono::DateTime::parse_from_str(text, format)
            .map(|t| t.timestamp_millis())
            .map_err(|e| e.to_string())
    } else {
        chrono::NaiveDateTime::parse_from_str(text, format)
            .map(|t| t.and_utc().timestamp_millis())
            .map_err(|e| e.to_string())
    }
}

fn conversion(dialect: Dialect, field: EventField, var: &Var) -> Result<Conversion, String> {
    let name = var.name.as_str();
    Ok(match field {
        EventField::Ts if dialect == Dialect::Nginx && name == "time_local" => {
            Conversion::NginxLocalTime
        }
        EventField::Ts => match &var.time_format {
            Some(f) => {
                use chrono::format::{Item, StrftimeItems};
                if StrftimeItems::new(f).any(|i| matches!(i, Item::Error)) {
                    return Err(format!("%START_TIME({f})% has an invalid time format"));
                }
                // A format without a full date and time (`%H:%M`) renders times that cannot
                // be read back: refuse it here rather than reject every line later.
                let sample = 1_796_032_802_120i64;
                let rendered = chrono::DateTime::from_timestamp_millis(sample)
                    .map(|t| t.format(f).to_string())
                    .unwrap_or_default();
                if strftime_ms(&rendered, f).map(|ms| ms / 1000) != Ok(sample / 1000) {
                    return Err(format!(
                        "%START_TIME({f})% does not hold a full date and time, so its times cannot be read back"
                    ));
                }
                Conversion::Strftime(f.clone())
            }
            None => Conversion::Time,
        },
        EventField::LatencyMs if dialect == Dialect::Nginx && nginx_seconds(name) => {
            Conversion::Seconds
        }
        _ => Conversion::Text,
    })
}

/// nginx variables that hold seconds with a millisecond fraction (`$request_time`,
/// `$upstream_response_time`, `$upstream_connect_time`, `$upstream_header_time`). A JSON
/// `fields.latency_ms` path ending in one of these names is read as seconds too.
fn nginx_seconds(name: &str) -> bool {
    name == "request_time" || name.starts_with("upstream_") && name.ends_with("_time")
}

/// Where a mapped JSON field lives: a flat key with dots (`"http.response.status_code"`, as
/// ECS loggers write it) or the same path through nested objects.
#[derive(Debug, Clone)]
pub struct JsonPath {
    dotted: String,
    segments: Vec<String>,
}

impl JsonPath {
    /// The path as configured.
    pub fn as_str(&self) -> &str {
        &self.dotted
    }

    /// The value at this path: a flat key with dots first, then nested objects.
    fn find<'v>(&self, obj: &'v serde_json::Map<String, Value>) -> Option<&'v Value> {
        if let Some(v) = obj.get(&self.dotted) {
            return Some(v);
        }
        if self.segments.len() < 2 {
            return None;
        }
        let (first, rest) = self.segments.split_first()?;
        rest.iter()
            .try_fold(obj.get(first)?, |cur, seg| cur.get(seg.as_str()))
    }
}

/// A compiled line format.
#[derive(Debug, Clone)]
pub enum LineFormat {
    /// The native event schema; `fields` moves values found at other (dotted) paths to where
    /// the schema expects them.
    Json {
        /// (event field, where it is).
        fields: Vec<(EventField, JsonPath)>,
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
            let segments: Vec<String> = path.split('.').map(str::to_string).collect();
            if segments.iter().any(String::is_empty) {
                return Err(format!(
                    "fields.{field} = {path:?} is not a dotted path like \"organization.id\""
                ));
            }
            out.push((
                f,
                JsonPath {
                    dotted: path.clone(),
                    segments,
                },
            ));
        }
        Ok(LineFormat::Json { fields: out })
    }

    /// The JSON `fields` mappings (empty for templates).
    pub fn mappings(&self) -> &[(EventField, JsonPath)] {
        match self {
            LineFormat::Json { fields } => fields,
            LineFormat::Template(_) => &[],
        }
    }

    /// Decodes one record (a line without its newline, or a body's element) into events,
    /// calling `emit` once per event or rejection. JSON records may hold several objects
    /// back to back (Fluent Bit's `json_stream`); each is its own event, and once one does
    /// not parse the rest of the record is rejected with it. Mapped fields found are added to
    /// `found`.
    pub fn decode<'l>(
        &self,
        record: &'l [u8],
        ctx: &ParseContext<'l>,
        found: &mut FieldSet,
        mut emit: impl FnMut(Result<Parsed<'l>, Rejection>),
    ) {
        match self {
            LineFormat::Template(t) => emit(match simdutf8::basic::from_utf8(record) {
                Ok(text) => t.parse(text, ctx),
                Err(_) => Err(Rejection::new(
                    Reason::InvalidField,
                    "the line is not valid UTF-8",
                )),
            }),
            // One UTF-8 check of the whole record is cheaper than serde_json's check of
            // every string; simdutf8's (SIMD) took a third of the standard library's
            // instructions on records of a hundred bytes, half on two hundred.
            LineFormat::Json { .. } => match simdutf8::basic::from_utf8(record) {
                Ok(text) => self.decode_text(text, ctx, found, emit),
                Err(_) => emit(Err(Rejection::new(
                    Reason::InvalidJson,
                    "event is not valid UTF-8",
                ))),
            },
        }
    }

    /// [`LineFormat::decode`] of a record already known to be UTF-8 (replay checks a whole
    /// block at once).
    pub fn decode_text<'l>(
        &self,
        text: &'l str,
        ctx: &ParseContext<'l>,
        found: &mut FieldSet,
        mut emit: impl FnMut(Result<Parsed<'l>, Rejection>),
    ) {
        match self {
            LineFormat::Template(t) => emit(t.parse(text, ctx)),
            LineFormat::Json { fields } => {
                if fields.is_empty() {
                    // A line within the event limit is at most one event of that size.
                    if text.len() <= ctx.max_event_bytes {
                        let mut w = Wire::default();
                        if super::scan::flat_event(text, &mut w) {
                            // Validated straight into `emit`'s argument: held in a local
                            // first, the 300-byte result was copied once more a line.
                            emit(w.validate(ctx));
                            // The scanner only borrows (no escapes, no objects): the spent
                            // wire owns nothing, and its drop walked every slot to find so.
                            w.forget_borrowed();
                            return;
                        }
                    }
                    objects::<Wire<'l>>(text, ctx.max_event_bytes, |w| {
                        emit(w.and_then(|mut w| w.validate(ctx)))
                    });
                } else {
                    objects::<Keyed>(text, ctx.max_event_bytes, |v| {
                        emit(v.and_then(|v| mapped(&v, fields, ctx, found)))
                    });
                }
            }
        }
    }
}

/// A mapped JSON object: the native keys, then each mapping's value where it is found.
fn mapped<'l>(
    v: &Keyed,
    fields: &[(EventField, JsonPath)],
    ctx: &ParseContext<'l>,
    found: &mut FieldSet,
) -> Result<Parsed<'l>, Rejection> {
    let Some(obj) = v.value.as_object() else {
        return Err(not_an_object());
    };
    let mut wire = Wire::from_object(obj);
    // A key given twice anywhere on a field's path makes that field ambiguous, as a native
    // field given twice is.
    let twice = |path: &str| {
        v.duplicates.iter().any(|d| {
            path == d
                || path
                    .strip_prefix(d.as_str())
                    .is_some_and(|r| r.starts_with('.'))
        })
    };
    for (k, _) in obj {
        if let Some(f) = EventField::parse(k)
            && twice(k)
        {
            wire.mark_duplicate(f);
        }
    }
    for (field, path) in fields {
        if let Some(value) = path.find(obj) {
            found.insert(*field);
            if twice(path.as_str()) {
                wire.mark_duplicate(*field);
            }
            wire.set_value(*field, value);
            if *field == EventField::LatencyMs
                && nginx_seconds(path.segments.last().map_or("", String::as_str))
            {
                wire.latency_in_seconds = true;
            }
        }
    }
    wire.validate(ctx)
}

fn not_an_object() -> Rejection {
    Rejection::new(Reason::InvalidJson, "an event must be a JSON object")
}

/// Deserializes the JSON objects of `text`, one after another, calling `each` with each one
/// (or with why it is not an event: too large, not an object, not JSON). The first that does
/// not parse ends the record: without a separator there is no telling where the next begins.
fn objects<'l, T: serde::Deserialize<'l>>(
    text: &'l str,
    max: usize,
    mut each: impl FnMut(Result<T, Rejection>),
) {
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<T>();
    loop {
        let start = stream.byte_offset();
        match text[start..].trim_start().as_bytes().first() {
            None => return,
            Some(b'{') => {}
            Some(_) => return each(Err(not_an_object())),
        }
        match stream.next() {
            None => return,
            Some(Ok(v)) => {
                let len = stream.byte_offset() - start;
                each(if len > max {
                    Err(Rejection::too_large(len, max))
                } else {
                    Ok(v)
                });
            }
            Some(Err(e)) => {
                use serde_json::error::Category;
                let reason = match e.classify() {
                    Category::Data => Reason::InvalidField,
                    _ => Reason::InvalidJson,
                };
                return each(Err(Rejection::new(reason, e.to_string())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Event;

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

    fn ev<'l>(t: &Template, line: &'l str) -> Event<'l> {
        t.parse(line, &ctx())
            .unwrap_or_else(|r| panic!("{line}: {r:?}"))
            .event
    }

    /// Every event and rejection of one record.
    fn all(f: &LineFormat, line: &str) -> Vec<Result<Parsed<'static>, Reason>> {
        let line: &'static str = Box::leak(line.to_string().into_boxed_str());
        let mut out = Vec::new();
        f.decode(line.as_bytes(), &ctx(), &mut FieldSet::default(), |r| {
            out.push(r.map_err(|r| r.reason))
        });
        out
    }

    #[test]
    fn nginx_combined_with_defaults() {
        let t = Template::compile(Dialect::Nginx, NGINX_COMBINED, &BTreeMap::new()).unwrap();
        let line = r#"203.0.113.7 - - [27/Nov/2026:14:00:00 +0100] "POST /v1/videos HTTP/1.1" 429 112 "-" "python-requests/2.31.0 \x22quoted\x22""#;
        let ev = ev(&t, line);
        assert_eq!(ev.ts_ms, Some(1_795_784_400_000), "14:00 +01:00 is 13:00Z");
        assert_eq!(ev.status, Some(429));
        assert_eq!(ev.org, "acme");
        assert_eq!(ev.app_name(), "default");
    }

    #[test]
    fn nginx_main_by_name() {
        let t = Template::compile(Dialect::Nginx, "main", &BTreeMap::new()).unwrap();
        assert!(t.variables().any(|v| v == "http_x_forwarded_for"));
        let line = r#"198.51.100.7 - - [30/Nov/2026:10:00:01 +0000] "POST /v1/videos HTTP/1.1" 429 97 "-" "openai-python/1.51.0" "203.0.113.9, 10.0.0.2""#;
        let e = ev(&t, line);
        assert_eq!(
            (e.status, e.ts_ms),
            (Some(429), parse_ts("2026-11-30T10:00:01Z"))
        );
    }

    fn parse_ts(s: &str) -> Option<i64> {
        crate::events::parse_rfc3339_ms(s)
    }

    #[test]
    fn nginx_custom_format_with_org_and_retry_after() {
        let fmt = r#"$time_iso8601 $status $request_time "$http_x_org" "$http_x_app" ra=$upstream_http_retry_after rid=$request_id"#;
        let fields = map(&[("org", "$http_x_org"), ("app", "$http_x_app")]);
        let t = Template::compile(Dialect::Nginx, fmt, &fields).unwrap();
        let e = ev(
            &t,
            r#"2026-11-27T14:00:00+00:00 429 0.250 "beta" "render-bot" ra=20 rid=abc123"#,
        );
        assert_eq!(e.org, "beta");
        assert_eq!(e.app_name(), "render-bot");
        assert_eq!(e.retry_after_ms, Some(20_000), "bound by default");
        assert_eq!(e.latency_ms, Some(250.0));
        assert_eq!(e.request_id.as_deref(), Some("abc123"));
        // "-" means absent: the source's default org applies.
        let e = ev(
            &t,
            r#"2026-11-27T14:00:01+00:00 200 0.010 "-" "-" ra=- rid=-"#,
        );
        assert_eq!(
            (e.org.as_ref(), e.retry_after_ms, e.request_id),
            ("acme", None, None)
        );
    }

    #[test]
    fn response_header_variables_carry_the_upstream_limits() {
        use crate::model::UpstreamDimension as U;
        let nginx = Template::compile(
            Dialect::Nginx,
            r#"$time_iso8601 $status "$http_x_org" $upstream_http_x_ratelimit_limit_requests $upstream_http_x_ratelimit_remaining_requests $upstream_http_x_ratelimit_reset_requests $upstream_http_content_type"#,
            &map(&[("org", "$http_x_org")]),
        )
        .unwrap();
        let e = ev(
            &nginx,
            r#"2026-11-27T14:00:00+00:00 200 "beta" 60 12 6m0s application/json"#,
        );
        let q = e.upstream.iter().find(|q| q.dimension == U::Rpm).unwrap();
        assert_eq!(
            (q.limit, q.remaining, q.reset_ms),
            (Some(60), Some(12), Some(360_000))
        );
        let envoy = Template::compile(
            Dialect::Envoy,
            "[%START_TIME%] %RESPONSE_CODE% %RESP(ANTHROPIC-RATELIMIT-TOKENS-LIMIT)% %RESP(anthropic-ratelimit-tokens-remaining)%",
            &BTreeMap::new(),
        )
        .unwrap();
        let e = ev(&envoy, "[2026-11-27T14:00:00.000Z] 200 80000 79000");
        let q = e.upstream.iter().find(|q| q.dimension == U::Tpm).unwrap();
        assert_eq!((q.limit, q.remaining), (Some(80_000), Some(79_000)));
        // A header that is absent ("-") or malformed costs only itself.
        let p = nginx
            .parse(
                r#"2026-11-27T14:00:00+00:00 200 "beta" sixty - - text/html"#,
                &ctx(),
            )
            .unwrap();
        assert!(p.event.upstream.is_empty());
        assert_eq!(p.field_errors.len(), 1);
        assert_eq!(p.field_errors[0].field, EventField::Headers);
    }

    #[test]
    fn nginx_multi_valued_upstream_variables() {
        let t = Template::compile(
            Dialect::Nginx,
            "$msec us=$upstream_status ut=$upstream_response_time",
            &map(&[
                ("status", "$upstream_status"),
                ("latency_ms", "$upstream_response_time"),
            ]),
        )
        .unwrap();
        let e = ev(&t, "1795788000.123 us=502, 200 ut=0.004, 0.255");
        assert_eq!(e.status, Some(200));
        assert!((e.latency_ms.unwrap() - 259.0).abs() < 1e-9);
        let e = ev(&t, "1795788000.123 us=502 : 429 ut=0.012 : 0.001");
        assert_eq!(e.status, Some(429));
        assert!((e.latency_ms.unwrap() - 13.0).abs() < 1e-9);
    }

    #[test]
    fn nginx_msec_and_malformed_lines() {
        let t = Template::compile(Dialect::Nginx, "$msec $status", &BTreeMap::new()).unwrap();
        assert_eq!(ev(&t, "1795788000.123 200").ts_ms, Some(1_795_788_000_123));
        let reason = |l: &str| t.parse(l, &ctx()).unwrap_err().reason;
        assert_eq!(
            reason("1795788000.123"),
            Reason::InvalidField,
            "truncated line"
        );
        // A status that does not parse costs the status, not the request.
        let p = t.parse("1795788000.123 OK", &ctx()).unwrap();
        assert_eq!(p.event.status, None);
        assert_eq!(p.field_errors[0].field, EventField::Status);
        assert_eq!(ev(&t, "1795788000.123 -").status, None, "no response");
        assert_eq!(ev(&t, "1795788000.123 0").status, None, "no response");
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
            "bad month: the ts does not parse"
        );
    }

    #[test]
    fn envoy_default_format() {
        let t = Template::compile(Dialect::Envoy, ENVOY_DEFAULT, &BTreeMap::new()).unwrap();
        let line = r#"[2026-11-27T14:00:00.310Z] "POST /v1/videos HTTP/1.1" 429 - 148 73 41 40 "10.0.0.5" "curl/8.5.0" "7f1c2d3e-0000-4a6b-9c1d-2e3f4a5b6c7d" "api.example.com" "10.1.2.3:443""#;
        let e = ev(&t, line);
        assert_eq!(e.ts_ms, Some(1_795_788_000_310));
        assert_eq!(e.status, Some(429));
        assert_eq!(e.latency_ms, Some(41.0));
        assert_eq!(
            e.request_id.as_deref(),
            Some("7f1c2d3e-0000-4a6b-9c1d-2e3f4a5b6c7d")
        );
        // Envoy writes "-" for an unset response code, and 0 when the client went away.
        assert_eq!(ev(&t, &line.replace(" 429 ", " - ")).status, None);
        let reset = r#"[2026-11-30T10:00:02.120Z] "POST /v1/videos HTTP/1.1" 0 DC 0 0 5001 - "-" "curl/8.5.0" "id-2" "api.example.com" "-""#;
        let e = ev(&t, reset);
        assert_eq!((e.status, e.latency_ms), (None, Some(5001.0)));
        assert_eq!(e.request_id.as_deref(), Some("id-2"));
    }

    #[test]
    fn istio_default_format() {
        let t = Template::compile(Dialect::Envoy, "istio", &BTreeMap::new()).unwrap();
        let line = r#"[2026-11-30T10:00:03.409Z] "POST /v1/videos HTTP/1.1" 429 - via_upstream - "-" 0 135 4 4 "-" "curl/8.5.0" "84961386-6d84-929d-98bd-c5aee93b5c88" "api.example.com:443" "10.44.1.27:443" outbound|443||api.example.com 10.44.1.23:37652 10.0.45.184:443 10.44.1.23:46520 - default"#;
        let e = ev(&t, line);
        assert_eq!(e.status, Some(429));
        assert_eq!(e.ts_ms, parse_ts("2026-11-30T10:00:03.409Z"));
        assert_eq!(e.latency_ms, Some(4.0));
    }

    #[test]
    fn envoy_operators_with_arguments_that_contain_percent() {
        let fields = map(&[("org", "%REQ(X-ORG-ID)%")]);
        let t = Template::compile(
            Dialect::Envoy,
            "%START_TIME(%s)% %RESPONSE_CODE% %REQ(X-ORG-ID)% ra=%RESP(RETRY-AFTER)%",
            &fields,
        )
        .unwrap();
        let e = ev(
            &t,
            "1796032802 429 acme-eu ra=Mon, 30 Nov 2026 10:00:09 GMT",
        );
        assert_eq!(e.ts_ms, parse_ts("2026-11-30T10:00:02Z"));
        assert_eq!(e.org, "acme-eu");
        assert_eq!(
            e.retry_after_ms,
            Some(7_000),
            "an HTTP date from the event's ts"
        );

        let t = Template::compile(
            Dialect::Envoy,
            "[%START_TIME(%Y-%m-%dT%H:%M:%S.%3f%z)%] %RESPONSE_CODE% 100%% %DURATION%",
            &BTreeMap::new(),
        )
        .unwrap();
        let e = ev(&t, "[2026-11-30T11:00:02.120+0100] 200 100% 12");
        assert_eq!(e.ts_ms, parse_ts("2026-11-30T10:00:02.120Z"));
        assert_eq!(e.latency_ms, Some(12.0));
        let t = Template::compile(
            Dialect::Envoy,
            "%START_TIME(%Y/%m/%d %H:%M:%S)% %RESPONSE_CODE%",
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(
            ev(&t, "2026/11/30 10:00:02 200").ts_ms,
            parse_ts("2026-11-30T10:00:02Z"),
            "no zone in the format: UTC"
        );
        assert!(t.parse("30.11.2026 10:00:02 200", &ctx()).is_err());
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
        let e = ev(&t, "2026-11-27T14:00:00Z 200 gamma bot");
        assert_eq!((e.org.as_ref(), e.app_name()), ("gamma", "bot"));
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
        assert!(e.contains("not an Envoy operator"), "{e}");
        let e = Template::compile(Dialect::Envoy, "%REQ(X-ORG% x", &BTreeMap::new()).unwrap_err();
        assert!(e.contains("unclosed ("), "{e}");
        let e = Template::compile(
            Dialect::Envoy,
            "%START_TIME(%Q)% %RESPONSE_CODE%",
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(e.contains("invalid time format"), "{e}");
        for partial in ["%H:%M", "%Y-%m-%d"] {
            let e = Template::compile(
                Dialect::Envoy,
                &format!("%START_TIME({partial})% %RESPONSE_CODE%"),
                &BTreeMap::new(),
            )
            .unwrap_err();
            assert!(e.contains("full date and time"), "{e}");
        }
        let e = Template::compile(Dialect::Envoy, "combined", &BTreeMap::new()).unwrap_err();
        assert!(e.contains("use format = \"nginx\""), "{e}");
        assert!(LineFormat::json(&map(&[("org", "a..b")])).is_err());
    }

    #[test]
    fn json_dotted_paths_flat_keys_first() {
        let f = LineFormat::json(&map(&[
            ("org", "organization.id"),
            ("status", "http.response.status_code"),
            ("ts", "time"),
        ]))
        .unwrap();
        let nested = r#"{"time":"2026-11-27T14:00:00Z","organization":{"id":"delta"},"http":{"response":{"status_code":503}},"app":"x"}"#;
        let p = all(&f, nested).remove(0).unwrap();
        assert_eq!(p.event.org, "delta");
        assert_eq!(p.event.status, Some(503));
        assert_eq!(p.event.ts_ms, Some(1_795_788_000_000));
        assert_eq!(p.event.app_name(), "x", "unmapped fields keep working");
        // ECS loggers write dotted keys flat.
        let flat = r#"{"time":"2026-11-27T14:00:00Z","organization.id":"eps","http.response.status_code":"429"}"#;
        let p = all(&f, flat).remove(0).unwrap();
        assert_eq!((p.event.org.as_ref(), p.event.status), ("eps", Some(429)));
        // A missing path falls back to the source default.
        let p = all(&f, r#"{"http":{"response":{"status_code":200}}}"#)
            .remove(0)
            .unwrap();
        assert_eq!(p.event.org, "acme");
        assert_eq!(
            all(&f, "{nope")[0].as_ref().unwrap_err(),
            &Reason::InvalidJson
        );
        let p = all(&f, r#"{"http":{"response":{"status_code":"x"}}}"#)
            .remove(0)
            .unwrap();
        assert_eq!(p.field_errors[0].field, EventField::Status);
        // A key given twice on a mapped path: org, ts and kind reject, others cost the field.
        for dup in [
            r#"{"organization":{"id":"m1","id":"m2"}}"#,
            r#"{"organization":{"id":"m1"},"organization":{"id":"m2"}}"#,
            r#"{"organization":{"id":"m1"},"time":"2026-11-27T14:00:00Z","time":"2026-11-26T14:00:00Z"}"#,
        ] {
            assert_eq!(
                all(&f, dup)[0].as_ref().unwrap_err(),
                &Reason::InvalidField,
                "{dup}"
            );
        }
        let p = all(
            &f,
            r#"{"http":{"response":{"status_code":200,"status_code":429}}}"#,
        )
        .remove(0)
        .unwrap();
        assert_eq!(
            (p.event.status, p.field_errors[0].field),
            (None, EventField::Status)
        );
        let mut found = FieldSet::default();
        f.decode(nested.as_bytes(), &ctx(), &mut found, |_| {});
        assert!(found.contains(EventField::Org) && found.contains(EventField::Status));
    }

    #[test]
    fn json_fields_of_the_nginx_json_log_example() {
        let f = LineFormat::json(&map(&[("ts", "time"), ("latency_ms", "request_time")])).unwrap();
        let line = r#"{"time":"2026-11-30T10:00:01+00:00","org":"acme","status":"429","request_time":"0.004","retry_after":"7"}"#;
        let p = all(&f, line).remove(0).unwrap();
        assert!(p.field_errors.is_empty(), "{:?}", p.field_errors);
        let e = p.event;
        assert_eq!(e.outcome(), crate::events::Outcome::RateLimited);
        assert_eq!(e.retry_after_ms, Some(7_000));
        assert_eq!(e.latency_ms, Some(4.0), "request_time is seconds");
    }

    #[test]
    fn objects_back_to_back_are_separate_events() {
        let f = LineFormat::json(&BTreeMap::new()).unwrap();
        let got = all(&f, r#"{"org":"a","status":200}{"org":"b"} {"org":"c"}"#);
        let orgs: Vec<_> = got
            .iter()
            .map(|r| r.as_ref().unwrap().event.org.to_string())
            .collect();
        assert_eq!(orgs, ["a", "b", "c"]);
        // A broken object ends the record; those before it count.
        let got = all(&f, r#"{"org":"a"}{"org":"b"{"org":"c"}"#);
        assert_eq!(got.len(), 2);
        assert!(got[0].is_ok());
        assert_eq!(got[1].as_ref().unwrap_err(), &Reason::InvalidJson);
        let got = all(&f, r#"{"org":"a"} 42"#);
        assert_eq!(got[1].as_ref().unwrap_err(), &Reason::InvalidJson);
        let templ = LineFormat::Template(
            Template::compile(Dialect::Nginx, "$status", &BTreeMap::new()).unwrap(),
        );
        assert_eq!(all(&templ, "\u{fffd}").len(), 1);
    }
}
