//! Reading one field's value the way producers really write it (SPEC §4 rules).
//!
//! A [`Raw`] is a value as it arrived: a JSON string, number, `true`, `null`, an object, or a
//! log template's text. Each reader here turns one into what the event schema wants, or says
//! in one sentence why it cannot. Numbers sent as strings are the numbers they hold; `-` and
//! the empty string are absent; nginx's multi-valued upstream variables (`0.004, 0.255`,
//! `502 : 200`) sum their times and keep their last status; HTTP dates and RFC 3339 times are
//! read relative to the event's own time. Nothing here decides whether an event is kept.

use std::borrow::Cow;
use std::cell::Cell;

/// Why a field's value was not usable; the event goes on without it.
pub(crate) type Bad = Cow<'static, str>;

/// A field's value as written, before it is read as the type the schema wants.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Raw<'a> {
    /// A JSON string or a log template's text.
    Str(Cow<'a, str>),
    /// A non-negative JSON integer.
    UInt(u64),
    /// A negative JSON integer.
    Int(i64),
    /// A JSON number with a fraction or exponent.
    Float(f64),
    /// `true` or `false`.
    Bool(bool),
    /// `null`: the same as absent.
    Null,
    /// An object or array.
    Compound,
    /// A time a log template already read with its own format, in Unix ms.
    Millis(i64),
}

impl Raw<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Raw::Str(_) => "a string",
            Raw::UInt(_) | Raw::Int(_) | Raw::Float(_) | Raw::Millis(_) => "a number",
            Raw::Bool(_) => "a boolean",
            Raw::Null => "null",
            Raw::Compound => "an object or array",
        }
    }

    /// An owned copy (for values taken out of a parsed `serde_json::Value`).
    pub(crate) fn from_value(v: &serde_json::Value) -> Raw<'static> {
        use serde_json::Value;
        match v {
            Value::Null => Raw::Null,
            Value::Bool(b) => Raw::Bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => Raw::UInt(u),
                (_, Some(i), _) => Raw::Int(i),
                (_, _, Some(f)) => Raw::Float(f),
                _ => Raw::Compound,
            },
            Value::String(s) => Raw::Str(Cow::Owned(s.clone())),
            Value::Array(_) | Value::Object(_) => Raw::Compound,
        }
    }
}

/// `str::trim` (Unicode White_Space off both ends), answering text whose two end bytes are
/// printable ASCII, nearly all of it, without the walk by characters from each end (a
/// twentieth of validating a line with a text `ts`).
#[inline]
fn trim(s: &str) -> &str {
    // Any byte at or below the space may be ASCII whitespace, any byte from 0x80 may end or
    // begin a multi-byte whitespace character: both take the general rule.
    let plain = |b: u8| b > b' ' && b < 0x80;
    match s.as_bytes() {
        [first, .., last] if plain(*first) && plain(*last) => s,
        [only] if plain(*only) => s,
        _ => s.trim(),
    }
}

/// `-` and the empty string mean "no value" wherever text comes in.
// Asked of five strings a line, and left out of line by `#[inline]` alone.
#[inline(always)]
fn absent(s: &str) -> bool {
    match s.as_bytes() {
        [] | [b'-'] => true,
        // Only text with spaces at its ends needs the slower look.
        [first, .., last] if first.is_ascii_whitespace() || last.is_ascii_whitespace() => {
            let t = s.trim();
            t.is_empty() || t == "-"
        }
        [c] if c.is_ascii_whitespace() => true,
        _ => false,
    }
}

/// A string field (`app`, `user`, `model`, `job_id`, `error_code`, `request_id`). Integers
/// are taken as their decimal text (`"request_id": 12345`).
#[inline(always)]
pub(crate) fn text<'a>(raw: Raw<'a>) -> Result<Option<Cow<'a, str>>, Bad> {
    match raw {
        Raw::Str(s) if absent(&s) => Ok(None),
        Raw::Str(s) => Ok(Some(s)),
        Raw::UInt(n) => Ok(Some(Cow::Owned(n.to_string()))),
        Raw::Int(n) => Ok(Some(Cow::Owned(n.to_string()))),
        Raw::Null => Ok(None),
        other => Err(format!("must be a string, got {}", other.kind()).into()),
    }
}

/// A flag (`batch`): `true`/`false`, `1`/`0`, or their text.
pub(crate) fn boolean(raw: &Raw<'_>) -> Result<Option<bool>, Bad> {
    match raw {
        Raw::Bool(b) => Ok(Some(*b)),
        Raw::UInt(0) => Ok(Some(false)),
        Raw::UInt(1) => Ok(Some(true)),
        Raw::Null => Ok(None),
        Raw::Str(s) if absent(s) => Ok(None),
        Raw::Str(s) => match trim(s) {
            "true" | "1" => Ok(Some(true)),
            "false" | "0" => Ok(Some(false)),
            other => Err(format!("must be true or false, got {other:?}").into()),
        },
        other => Err(format!("must be true or false, got {}", other.kind()).into()),
    }
}

/// A non-negative finite number; numeric strings count.
pub(crate) fn number(raw: &Raw<'_>) -> Result<Option<f64>, Bad> {
    let n = match raw {
        Raw::Str(s) if absent(s) => return Ok(None),
        Raw::Str(s) => trim(s)
            .parse::<f64>()
            .map_err(|_| Bad::from(format!("{s:?} is not a number")))?,
        Raw::UInt(n) => *n as f64,
        Raw::Int(n) => *n as f64,
        Raw::Float(f) => *f,
        Raw::Null => return Ok(None),
        other => return Err(format!("must be a number, got {}", other.kind()).into()),
    };
    if n.is_finite() && n >= 0.0 {
        Ok(Some(n))
    } else {
        Err(format!("must be a number >= 0, got {n}").into())
    }
}

/// A non-negative integer up to 2^63 − 1 (`tokens`, `x-ratelimit-*` counts); `"12"` and
/// `12.0` count. Larger values are errors: no real count is that large, and a gauge showing
/// one would turn negative.
pub(crate) fn integer(raw: &Raw<'_>) -> Result<Option<u64>, Bad> {
    let checked = |n: u64| {
        if i64::try_from(n).is_ok() {
            Ok(Some(n))
        } else {
            Err(Bad::from(format!(
                "{n} is too large (at most {})",
                i64::MAX
            )))
        }
    };
    if let Raw::UInt(n) = raw {
        return checked(*n);
    }
    if let Raw::Str(s) = raw
        && let Ok(n) = trim(s).parse::<u64>()
    {
        return checked(n);
    }
    match number(raw)? {
        None => Ok(None),
        // 2^53: past it a float no longer holds every integer exactly.
        Some(n) if n.fract() == 0.0 && n < 9_007_199_254_740_992.0 => Ok(Some(n as u64)),
        Some(n) if n.fract() == 0.0 => Err(format!(
            "{n:e} is written as a floating-point number too large to be exact (2^53 or more): write it as an integer"
        )
        .into()),
        Some(n) => Err(format!("must be a whole number, got {n}").into()),
    }
}

/// The last value of an nginx multi-valued upstream variable: `$upstream_status` is
/// `502, 200` when a second upstream was tried and `502 : 200` across an internal redirect.
fn last_value(s: &str) -> &str {
    s.rsplit([',', ':']).next().unwrap_or(s).trim()
}

/// An HTTP status. `0` (Envoy, nginx 499-style resets: no response was received) and `-` are
/// a request whose outcome is unknown, not an error.
// Inlined with its common case; the rest is a call.
#[inline(always)]
pub(crate) fn status(raw: &Raw<'_>) -> Result<Option<u16>, Bad> {
    // Nearly every status, answered before the general reading.
    if let &Raw::UInt(n @ 100..=599) = raw {
        return Ok(Some(n as u16));
    }
    status_general(raw)
}

/// [`status`] of any value.
#[inline(never)]
fn status_general(raw: &Raw<'_>) -> Result<Option<u16>, Bad> {
    let n: i64 = match raw {
        Raw::Str(s) => {
            let last = last_value(s);
            if absent(last) {
                return Ok(None);
            }
            last.parse()
                .map_err(|_| Bad::from(format!("{s:?} is not an HTTP status")))?
        }
        Raw::UInt(n) => i64::try_from(*n).unwrap_or(i64::MAX),
        Raw::Int(n) => *n,
        Raw::Float(f) if f.fract() == 0.0 && f.abs() < 1e6 => *f as i64,
        Raw::Null => return Ok(None),
        other => {
            return Err(format!("must be an HTTP status, got {}", other.kind()).into());
        }
    };
    match n {
        0 => Ok(None),
        100..=599 => Ok(Some(n as u16)),
        _ => Err(format!("{n} is not an HTTP status (100-599, or 0 for none)").into()),
    }
}

/// A duration in ms from a number of ms, or of seconds when `seconds` (nginx's
/// `$request_time`). Several comma- or colon-separated values (one per upstream tried) are
/// summed; `-` parts are skipped.
// Inlined with its common case; the rest is a call.
#[inline(always)]
pub(crate) fn latency_ms(raw: &Raw<'_>, seconds: bool) -> Result<Option<f64>, Bad> {
    let scale = if seconds { 1000.0 } else { 1.0 };
    // The common one, answered as `number` would (any u64 is finite and not negative)
    // without its call.
    if let Raw::UInt(n) = raw {
        return Ok(Some(*n as f64 * scale));
    }
    latency_general(raw, scale)
}

/// [`latency_ms`] of any value, in ms times `scale`.
#[inline(never)]
fn latency_general(raw: &Raw<'_>, scale: f64) -> Result<Option<f64>, Bad> {
    let Raw::Str(s) = raw else {
        return Ok(number(raw)?.map(|n| n * scale));
    };
    let mut total: Option<f64> = None;
    for part in s.split([',', ':']) {
        if let Some(n) = number(&Raw::Str(Cow::Borrowed(part)))? {
            total = Some(total.unwrap_or(0.0) + n);
        }
    }
    Ok(total.map(|n| n * scale))
}

/// Earliest accepted event time: 1970-01-01T00:00:00Z.
const MIN_TS_MS: i64 = 0;
/// Latest accepted event time: 2100-01-01T00:00:00Z. Anything later is a broken clock.
const MAX_TS_MS: i64 = 4_102_444_800_000;

fn in_range(ms: i64) -> Result<i64, Bad> {
    if (MIN_TS_MS..MAX_TS_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err("ts is outside 1970..2100".into())
    }
}

/// Epoch numbers above this are milliseconds, the rest seconds (SPEC §4).
const MS_ABOVE: i64 = 1_000_000_000_000;

/// Epoch seconds, or milliseconds when above [`MS_ABOVE`] (SPEC §4).
fn epoch_ms(n: f64) -> Result<i64, Bad> {
    let ms = if n > MS_ABOVE as f64 { n } else { n * 1000.0 };
    if !ms.is_finite() || ms < MIN_TS_MS as f64 || ms >= MAX_TS_MS as f64 {
        return Err("ts is outside 1970..2100".into());
    }
    Ok(ms.round() as i64)
}

/// An event time: RFC 3339, or epoch seconds/ms as a number or a numeric string.
// Inlined with its common case; the rest is a call.
#[inline(always)]
pub(crate) fn time(raw: &Raw<'_>) -> Result<Option<i64>, Bad> {
    // The common shape, answered as below: it starts with a digit and ends where the shape
    // does, so trimming would change nothing.
    if let Raw::Str(s) = raw
        && let Some(ms) = fast_rfc3339(s.as_bytes())
    {
        return in_range(ms).map(Some);
    }
    time_general(raw)
}

/// [`time`] of any value.
#[inline(never)]
fn time_general(raw: &Raw<'_>) -> Result<Option<i64>, Bad> {
    match raw {
        Raw::Millis(ms) => in_range(*ms).map(Some),
        Raw::Null => Ok(None),
        Raw::Str(s) => {
            let s = trim(s);
            if let Some(ms) = parse_rfc3339_ms(s) {
                return in_range(ms).map(Some);
            }
            if let Ok(n) = s.parse::<f64>() {
                return epoch_ms(n).map(Some);
            }
            // nginx's `$time_local` (`30/Nov/2026:10:00:01 +0000`), as JSON access logs write it.
            match chrono::DateTime::parse_from_str(s, "%d/%b/%Y:%H:%M:%S %z") {
                Ok(t) => in_range(t.timestamp_millis()).map(Some),
                Err(_) => Err(format!(
                    "{s:?} is not an RFC 3339 time, epoch seconds or nginx's $time_local"
                )
                .into()),
            }
        }
        // Exact in integers: every in-range ms (< 2^53) and every seconds value whose ms are
        // in range is exact as f64 too, so this answers as the float rule does, without its
        // rounding call (a third of reading a numeric `ts`).
        Raw::UInt(n) => {
            let n = i64::try_from(*n).unwrap_or(i64::MAX);
            in_range(if n > MS_ABOVE { n } else { n * 1000 }).map(Some)
        }
        Raw::Int(_) | Raw::Float(_) => match number(raw) {
            Ok(Some(n)) => epoch_ms(n).map(Some),
            _ => Err("ts is outside 1970..2100".into()),
        },
        other => Err(format!("ts must be a time, got {}", other.kind()).into()),
    }
}

/// Milliseconds from `reference` until the instant `at_ms`, never negative.
fn until(at_ms: i64, reference: Option<i64>, what: &str) -> Result<i64, Bad> {
    match reference {
        Some(r) => Ok((at_ms - r).max(0)),
        None => Err(format!("{what} is a point in time but the event has no ts").into()),
    }
}

/// Most seconds a wait may be (about 31 years): anything longer is a mistake, not a wait.
const MAX_WAIT_S: f64 = 1e9;

/// `Retry-After` (RFC 9110 §10.2.3): delay-seconds, or an HTTP-date read relative to
/// `reference` (the event's `ts`). In ms.
pub(crate) fn retry_after_ms(raw: &Raw<'_>, reference: Option<i64>) -> Result<Option<i64>, Bad> {
    if let Raw::Str(s) = raw
        && !absent(s)
        && trim(s).parse::<f64>().is_err()
    {
        return match http_date_ms(s) {
            Some(at) => until(at, reference, "retry_after").map(Some),
            None => Err(format!("{s:?} is neither seconds nor an HTTP date").into()),
        };
    }
    match number(raw)? {
        None => Ok(None),
        Some(n) if n <= MAX_WAIT_S => Ok(Some((n * 1000.0).round() as i64)),
        Some(n) => Err(format!("{n} seconds is not a plausible wait").into()),
    }
}

/// An `x-ratelimit-reset-*` value, in ms from `reference`: a Go duration (`6m0s`, as OpenAI
/// sends), bare seconds (`1.5`), epoch seconds (a number above 1e9, as GitHub sends), epoch
/// milliseconds (above 1e12), or an RFC 3339 time.
pub(crate) fn reset_ms(raw: &Raw<'_>, reference: Option<i64>) -> Result<Option<i64>, Bad> {
    let n = match raw {
        Raw::Str(s) if absent(s) => return Ok(None),
        Raw::Str(s) => {
            let s = trim(s);
            if let Ok(n) = s.parse::<f64>() {
                n
            } else if let Some(ms) = parse_go_duration_ms(s) {
                return Ok(Some(ms));
            } else if let Some(at) = parse_rfc3339_ms(s) {
                return until(at, reference, "the reset").map(Some);
            } else {
                return Err(format!(
                    "{s:?} is not a duration (\"6m0s\"), seconds or an RFC 3339 time"
                )
                .into());
            }
        }
        _ => match number(raw)? {
            Some(n) => n,
            None => return Ok(None),
        },
    };
    if !(n.is_finite() && n >= 0.0) {
        return Err(format!("{n} is not a reset time").into());
    }
    if n > MS_ABOVE as f64 {
        until(n.round() as i64, reference, "the reset").map(Some)
    } else if n > MAX_WAIT_S {
        until((n * 1000.0).round() as i64, reference, "the reset").map(Some)
    } else {
        Ok(Some((n * 1000.0).round() as i64))
    }
}

/// An HTTP-date (IMF-fixdate, RFC 850 or asctime, RFC 9110 §5.6.7) in Unix ms.
pub fn http_date_ms(s: &str) -> Option<i64> {
    let t = httpdate::parse_http_date(s.trim()).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_millis()).ok()
}

/// A `Retry-After` header value (delay-seconds or an HTTP-date) as a wait in ms from
/// `now_ms`, never negative; `None` when it is neither.
pub fn retry_after_header_ms(value: &str, now_ms: i64) -> Option<i64> {
    retry_after_ms(&Raw::Str(Cow::Borrowed(value)), Some(now_ms))
        .ok()
        .flatten()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
#[inline]
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

thread_local! {
    /// The last minute (`YYYY-MM-DDTHH:MM`, the first 16 bytes of an RFC 3339 time) this
    /// thread read, and its Unix ms. Events come in time order, so consecutive timestamps
    /// nearly always share their minute: its ten digits, range checks and calendar arithmetic
    /// were most of a timestamp's cost. The initial key is sixteen 0xFF bytes, which UTF-8
    /// text never holds, so no input matches it (sixteen NULs would have: a `\u0000`
    /// escape writes one).
    static LAST_MINUTE: Cell<([u8; 16], i64)> = const { Cell::new(([0xff; 16], 0)) };
}

/// Decimal digits of `b` as a number; `None` for anything but digits.
fn digits(b: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as u32;
    }
    Some(v)
}

/// `YYYY-MM-DDTHH:MM` to the Unix ms of that minute in UTC; `None` unless well formed and
/// in range.
fn minute_ms(b: &[u8; 16]) -> Option<i64> {
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' {
        return None;
    }
    let (y, mo, d) = (
        digits(&b[0..4])? as i64,
        digits(&b[5..7])?,
        digits(&b[8..10])?,
    );
    let (h, mi) = (digits(&b[11..13])?, digits(&b[14..16])?);
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) || h > 23 || mi > 59 {
        return None;
    }
    Some((days_from_civil(y, mo, d) * 86_400 + (h * 3600 + mi * 60) as i64) * 1000)
}

fn fast_rfc3339(b: &[u8]) -> Option<i64> {
    if b.len() < 20 || b[16] != b':' {
        return None;
    }
    let key: [u8; 16] = b[..16].try_into().ok()?;
    let (last, last_ms) = LAST_MINUTE.get();
    let minute = if last == key {
        last_ms
    } else {
        let ms = minute_ms(&key)?;
        LAST_MINUTE.set((key, ms));
        ms
    };
    let s = digits(&b[17..19])?;
    // Leap seconds and other oddities go to chrono.
    if s > 59 {
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
            let oh = digits(&b[i + 1..i + 3])? as i64;
            let om = digits(&b[i + 4..i + 6])? as i64;
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 60 + om;
            if *sign == b'-' { -off } else { off }
        }
        _ => return None,
    };
    Some(minute + (s as i64 - offset_min * 60) * 1000 + frac_ms)
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The fast path trims exactly as `str::trim` does, Unicode spaces included.
        #[test]
        fn trim_is_str_trim(s in "[ \t\n\u{b}\u{c}\r\u{1c}\u{85}\u{a0}\u{2003}\u{3000}a-z0-9:.é\u{7f}-]{0,8}") {
            prop_assert_eq!(trim(&s), s.trim());
        }
    }

    fn by_chrono(s: &str) -> Option<i64> {
        chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_millis())
    }

    #[test]
    fn no_input_matches_the_empty_cache() {
        // A fresh thread: nothing cached yet.
        let nul = format!("{}:00Z", "\0".repeat(16));
        let got = std::thread::spawn(move || parse_rfc3339_ms(&nul)).join();
        assert_eq!(got.ok(), Some(None), "sixteen NULs are not a minute");
    }

    #[test]
    fn a_cached_minute_reads_as_a_fresh_one() {
        for t in [
            "2026-11-27T14:00:00Z",
            "2026-11-27T14:00:01.5Z",
            "2026-11-27T14:00:59.999+01:30",
            "2026-11-27T14:01:00Z",
            "2026-11-27T14:00:02-00:15",
            "2026-13-27T14:00:02Z",
            "2026-11-27T14:00:60Z",
            "2026-11-27T14:00:03Z",
            "2028-02-29t00:00:00.1z",
        ] {
            assert_eq!(parse_rfc3339_ms(t), by_chrono(t), "{t}");
        }
    }

    proptest! {
        /// Times from few parts, so that runs of them share a minute (the cache) and
        /// others do not, some out of range: the fast path answers as chrono does.
        #[test]
        fn rfc3339_times_read_as_chrono_reads_them(times in prop::collection::vec((
            prop::sample::select(vec![1970u32, 2024, 2026, 2028, 2099, 2100]),
            prop::sample::select(vec![0u32, 1, 2, 4, 12, 13]),
            prop::sample::select(vec![0u32, 1, 28, 29, 30, 31, 32]),
            prop::sample::select(vec![0u32, 9, 23, 24]),
            prop::sample::select(vec![0u32, 1, 59, 60]),
            prop::sample::select(vec![0u32, 30, 59, 60]),
            prop::sample::select(vec!["", ".5", ".123", ".1239", ".", ".x"]),
            prop::sample::select(vec!["Z", "z", "+01:00", "-05:30", "+24:00", "+1:00", "", "Zz"]),
            prop::sample::select(vec!['T', 't', ' ']),
        ), 1..24)) {
            for (y, mo, d, h, mi, s, frac, zone, sep) in times {
                // Each minute twice in a row: read fresh, then from the cache.
                for s in [s, (s + 1) % 61] {
                    let t = format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}{frac}{zone}");
                    prop_assert_eq!(parse_rfc3339_ms(&t), by_chrono(&t), "{}", t);
                }
            }
        }
    }

    proptest! {
        /// An integer `ts` answers as the float rule (SPEC §4: seconds, ms above 1e12) does,
        /// near each edge of the range and of the seconds/ms cut.
        #[test]
        fn integer_times_read_as_the_float_rule_reads_them(
            base in prop::sample::select(vec![
                0u64, 1_000_000_000_000, MAX_TS_MS as u64 / 1000, MAX_TS_MS as u64,
                1_795_788_000, 1_795_788_000_000, 1 << 53, u64::MAX - 2000,
            ]),
            delta in prop_oneof![-2i64..=2, -1000i64..1000],
        ) {
            let n = base.saturating_add_signed(delta);
            let by_float = epoch_ms(n as f64).map(Some);
            prop_assert_eq!(time(&Raw::UInt(n)), by_float, "{}", n);
        }
    }

    fn s(v: &str) -> Raw<'_> {
        Raw::Str(Cow::Borrowed(v))
    }

    #[test]
    fn numbers_sent_as_strings_are_numbers() {
        assert_eq!(status(&s("429")), Ok(Some(429)));
        assert_eq!(status(&s(" 200 ")), Ok(Some(200)));
        assert_eq!(number(&s("0.004")), Ok(Some(0.004)));
        assert_eq!(integer(&s("12")), Ok(Some(12)));
        assert_eq!(integer(&Raw::Float(12.0)), Ok(Some(12)));
        assert!(integer(&Raw::Float(12.5)).is_err());
        let big = integer(&Raw::Float(1e18)).unwrap_err();
        assert!(format!("{big:?}").contains("1e18"), "{big:?}");
        assert!(integer(&Raw::Int(-1)).is_err());
        assert_eq!(
            integer(&Raw::UInt(i64::MAX as u64)),
            Ok(Some(i64::MAX as u64))
        );
        assert!(integer(&Raw::UInt(1 << 63)).is_err());
        assert!(integer(&s("18446744073709551615")).is_err());
        assert!(integer(&s("99999999999999999999999")).is_err());
        assert_eq!(retry_after_ms(&s("7"), None), Ok(Some(7_000)));
        assert_eq!(time(&s("1795788000")), Ok(Some(1_795_788_000_000)));
        assert_eq!(time(&s("1795788000123")), Ok(Some(1_795_788_000_123)));
        assert_eq!(
            time(&s("30/Nov/2026:11:00:01 +0100")),
            Ok(Some(1_796_032_801_000)),
            "nginx $time_local in a JSON log"
        );
    }

    #[test]
    fn no_response_is_an_unknown_outcome_not_an_error() {
        for v in ["0", "-", "", "-, -"] {
            assert_eq!(status(&s(v)), Ok(None), "{v:?}");
        }
        assert_eq!(status(&Raw::UInt(0)), Ok(None));
        assert!(status(&Raw::UInt(700)).is_err());
        assert!(status(&s("2xx")).is_err());
        assert!(status(&Raw::Float(200.5)).is_err());
        assert!(status(&Raw::Bool(true)).is_err());
    }

    #[test]
    fn nginx_multi_valued_upstream_variables() {
        assert_eq!(status(&s("502, 200")), Ok(Some(200)));
        assert_eq!(status(&s("502 : 429")), Ok(Some(429)));
        assert_eq!(
            status(&s("504, 0")),
            Ok(None),
            "the last upstream sent nothing"
        );
        let sum = |v: &str| latency_ms(&s(v), true).unwrap().unwrap();
        assert!((sum("0.004, 0.255") - 259.0).abs() < 1e-9);
        assert!((sum("0.012 : 0.001") - 13.0).abs() < 1e-9);
        assert!((sum("-, 0.010") - 10.0).abs() < 1e-9);
        assert_eq!(latency_ms(&s("-"), true), Ok(None));
        assert_eq!(latency_ms(&Raw::UInt(41), false), Ok(Some(41.0)));
        assert!(latency_ms(&s("fast"), false).is_err());
    }

    #[test]
    fn retry_after_as_an_http_date_is_relative_to_the_event() {
        let ts = parse_rfc3339_ms("2026-11-30T10:00:00Z");
        let at = |v: &str| retry_after_ms(&s(v), ts);
        assert_eq!(at("Mon, 30 Nov 2026 10:00:07 GMT"), Ok(Some(7_000)));
        assert_eq!(
            at("Monday, 30-Nov-26 10:00:30 GMT"),
            Ok(Some(30_000)),
            "RFC 850"
        );
        assert_eq!(at("Mon Nov 30 10:01:00 2026"), Ok(Some(60_000)), "asctime");
        assert_eq!(
            at("Mon, 30 Nov 2026 09:00:00 GMT"),
            Ok(Some(0)),
            "in the past"
        );
        assert!(at("soon").is_err());
        assert!(retry_after_ms(&s("Mon, 30 Nov 2026 10:00:07 GMT"), None).is_err());
        assert!(retry_after_ms(&Raw::Int(-1), ts).is_err());
        assert_eq!(
            retry_after_header_ms("Mon, 30 Nov 2026 10:00:07 GMT", ts.unwrap()),
            Some(7_000)
        );
    }

    #[test]
    fn reset_values_in_every_form() {
        let ts = parse_rfc3339_ms("2026-11-30T10:00:00Z");
        let r = |raw: Raw<'_>| reset_ms(&raw, ts);
        assert_eq!(r(s("6m0s")), Ok(Some(360_000)));
        assert_eq!(r(s("1.5")), Ok(Some(1_500)), "bare seconds");
        assert_eq!(r(Raw::UInt(20)), Ok(Some(20_000)));
        assert_eq!(r(s("2026-11-30T10:01:00Z")), Ok(Some(60_000)), "RFC 3339");
        assert_eq!(
            r(Raw::UInt(1_796_032_830)),
            Ok(Some(30_000)),
            "epoch seconds"
        );
        assert_eq!(
            r(s("1796032830000")),
            Ok(Some(30_000)),
            "epoch milliseconds"
        );
        assert!(r(s("soon")).is_err());
    }

    #[test]
    fn text_fields() {
        assert_eq!(text(s("-")), Ok(None));
        assert_eq!(text(Raw::UInt(42)), Ok(Some(Cow::Owned("42".into()))));
        assert!(text(Raw::Compound).is_err());
        assert_eq!(text(Raw::Null), Ok(None));
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
}
