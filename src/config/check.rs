//! Small checks every part of the configuration shares: a message placed at a span of the
//! file, its line and column, and the value rules (limits, ratios, timeouts, backoff pairs).

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::duration::HumanDuration;

/// A validation failure before it is placed in a file.
pub(super) struct Spanned2 {
    pub(super) span: Range<usize>,
    pub(super) message: String,
}

pub(super) fn at(span: Range<usize>, message: impl Into<String>) -> Spanned2 {
    Spanned2 {
        span,
        message: message.into(),
    }
}

/// A request timeout (`timeout` of a channel or an upstream), in ms: at least 100 ms, since
/// nothing answers sooner and `"0s"` would fail every attempt at once.
pub(super) fn request_timeout(v: &Spanned<HumanDuration>) -> Result<i64, Spanned2> {
    let ms = v.get_ref().as_millis_i64();
    if ms < 100 {
        return Err(at(v.span(), "timeout must be at least 100ms"));
    }
    Ok(ms)
}

/// A backoff's `base` and `cap` (named `names` in messages), in ms: the base at least 1 ms,
/// the cap not below it.
pub(super) fn backoff_ms(
    base: &Spanned<HumanDuration>,
    cap: &Spanned<HumanDuration>,
    names: (&str, &str),
) -> Result<(i64, i64), Spanned2> {
    let (base_ms, cap_ms) = (
        base.get_ref().as_millis_i64(),
        cap.get_ref().as_millis_i64(),
    );
    if base_ms < 1 {
        return Err(at(base.span(), format!("{} must be at least 1ms", names.0)));
    }
    if cap_ms < base_ms {
        return Err(at(
            cap.span(),
            format!("{} must not be below {}", names.1, names.0),
        ));
    }
    Ok((base_ms, cap_ms))
}

/// 1-based line and character column of byte `offset` in `text`.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = text[line_start..offset].chars().count() + 1;
    (line, col)
}

/// A limit value: 0 (unlimited) up to 2^63 − 1, the most a gauge (and Prometheus' integer
/// view of it) shows without turning negative.
pub(super) fn limit<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = u64::deserialize(d)?;
    if i64::try_from(v).is_err() {
        return Err(serde::de::Error::custom(format!(
            "{v} is too large: a limit is at most {}",
            i64::MAX
        )));
    }
    Ok(Some(v))
}

/// A ratio like `0.70` as integer basis points, refusing more precision than that.
pub(super) fn basis_points(span: &Range<usize>, what: &str, v: f64) -> Result<u32, Spanned2> {
    if !v.is_finite() || !(0.0..=1.0).contains(&v) {
        return Err(at(
            span.clone(),
            format!("{what} must be between 0 and 1, got {v}"),
        ));
    }
    let bp = (v * 10_000.0).round();
    if (v * 10_000.0 - bp).abs() > 1e-6 {
        return Err(at(
            span.clone(),
            format!("{what} {v} has more than 4 decimal places"),
        ));
    }
    Ok(bp as u32)
}
