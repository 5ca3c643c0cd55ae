//! The upstream's rate-limit response headers, read into one [`QuotaReport`] per dimension.
//!
//! It owns the names and value formats of every family providers and gateways send, and
//! nothing of what a report means for usage (the tracker's). A header that does not parse
//! costs that header only: it becomes a problem and the others are read.
//!
//! | family | headers | source |
//! |---|---|---|
//! | OpenAI, Azure OpenAI, Groq | `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, resets as Go durations (`6m0s`) | OpenAI "Rate limits" guide; Groq "Rate Limits" (its requests limit is per **day**: read so when `x-groq-region` is among the headers) |
//! | Anthropic | `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`, resets RFC 3339 | Anthropic API "Rate limits", response headers |
//! | Anthropic subscriptions | `anthropic-ratelimit-unified-{5h,7d}-{utilization,reset}`: a used fraction, read as percent of 100 | Anthropic responses on subscription plans |
//! | IETF draft | `RateLimit-Policy: "p";q=100;w=60` and `RateLimit: "p";r=50;t=30` (structured fields, RFC 9651) | draft-ietf-httpapi-ratelimit-headers-09 and later |
//! | IETF older drafts, Envoy, Kong | `RateLimit-Limit/-Remaining/-Reset` (and Envoy's `x-ratelimit-limit/-remaining/-reset`), `RateLimit: limit=10, remaining=5, reset=30`, `RateLimit-Policy: 10;w=60` | drafts -03 to -08; Envoy `x_ratelimit_headers`; Kong rate-limiting plugin |
//! | Kong | `X-RateLimit-{Limit,Remaining}-{Minute,Day}` | Kong rate-limiting plugin |
//! | any | `retry-after-ms` (OpenAI SDKs, Azure), `retry-after` | RFC 9110 §10.2.3 |
//!
//! An IETF policy's window picks the dimension: 60 s is `rpm`, 86 400 s `daily`, a quota unit
//! of `concurrent-requests` is `concurrency`; other windows match no configured limit and are
//! skipped. A limit without a window says none, and is read as per minute.

use std::borrow::Cow;

use sfv::{BareItem, ListEntry, Parameters, Parser};

use super::event::QuotaReport;
use super::values::{self, Raw};
use crate::model::UpstreamDimension;

/// What the headers say.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Read {
    /// At most one report per dimension, in [`UpstreamDimension::ALL`] order.
    pub reports: Vec<QuotaReport>,
    /// `retry-after-ms`, else `retry-after`, in ms.
    pub retry_after_ms: Option<i64>,
    /// One line per header that did not parse (`name: why`).
    pub problems: Vec<String>,
}

/// Which value of a report a header gives.
#[derive(Clone, Copy)]
enum Part {
    Limit,
    Remaining,
    Reset,
}

/// Reports being filled in, one slot per dimension.
struct Reports<'r> {
    slots: [QuotaReport; UpstreamDimension::ALL.len()],
    reference: Option<i64>,
    problems: &'r mut Vec<String>,
}

/// The largest count read (2^53): past it a number no longer survives JSON (`/v1/usage`)
/// exactly, and no provider's limit is near it.
const MAX_COUNT: u64 = 1 << 53;
/// The furthest reset read, in ms: the longest window providers report (Anthropic's seven
/// days) and a day's margin.
const MAX_RESET_MS: i64 = 8 * 86_400_000;

/// A count read from a header, bounded by [`MAX_COUNT`].
fn count(raw: &Raw<'_>) -> Result<Option<u64>, values::Bad> {
    match values::integer(raw)? {
        Some(n) if n > MAX_COUNT => Err(format!("{n} is not a plausible limit").into()),
        n => Ok(n),
    }
}

/// A reset read from a header, at most [`MAX_RESET_MS`] away.
fn reset(raw: &Raw<'_>, reference: Option<i64>) -> Result<Option<i64>, values::Bad> {
    match values::reset_ms(raw, reference)? {
        Some(ms) if ms > MAX_RESET_MS => {
            Err(format!("a reset {} days away is not plausible", ms / 86_400_000).into())
        }
        ms => Ok(ms),
    }
}

impl Reports<'_> {
    fn set(&mut self, dim: UpstreamDimension, part: Part, name: &str, value: &str) {
        let raw = Raw::Str(Cow::Borrowed(value));
        let slot = &mut self.slots[dim.index()];
        let read = match part {
            Part::Limit => count(&raw).map(|v| slot.limit = v.or(slot.limit)),
            Part::Remaining => count(&raw).map(|v| slot.remaining = v.or(slot.remaining)),
            Part::Reset => reset(&raw, self.reference).map(|v| slot.reset_ms = v.or(slot.reset_ms)),
        };
        if let Err(why) = read {
            self.problems.push(format!("{name}: {why}"));
        }
    }

    fn set_number(&mut self, dim: UpstreamDimension, part: Part, n: i64) {
        let slot = &mut self.slots[dim.index()];
        match part {
            Part::Limit => slot.limit = u64::try_from(n).ok(),
            Part::Remaining => slot.remaining = u64::try_from(n).ok(),
            Part::Reset => {
                slot.reset_ms =
                    Some(n.saturating_mul(1000)).filter(|ms| (0..=MAX_RESET_MS).contains(ms));
            }
        }
    }

    fn problem(&mut self, name: &str, why: impl std::fmt::Display) {
        self.problems.push(format!("{name}: {why}"));
    }
}

/// Whether a header (lowercase name) is one [`read`] looks at.
pub(crate) fn is_rate_limit_header(name: &str) -> bool {
    [
        "x-ratelimit-",
        "ratelimit",
        "anthropic-ratelimit-",
        "retry-after",
    ]
    .iter()
    .any(|p| name.starts_with(p))
        || name == "x-groq-region"
}

/// Reads `headers` (names in any case; a name given twice is combined with `, ` as RFC 9110
/// §5.3 allows). Absolute resets (RFC 3339, epoch seconds) are taken relative to `reference`,
/// the event's time.
pub(crate) fn read(headers: &[(Cow<'_, str>, Cow<'_, str>)], reference: Option<i64>) -> Read {
    let mut fields: Vec<(String, String)> = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let name = name.trim().to_ascii_lowercase();
        match fields.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => {
                v.push_str(", ");
                v.push_str(value.trim());
            }
            None => fields.push((name, value.trim().to_owned())),
        }
    }
    let get = |n: &str| fields.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    let mut out = Read::default();
    let mut r = Reports {
        slots: UpstreamDimension::ALL.map(|dimension| QuotaReport {
            dimension,
            limit: None,
            remaining: None,
            reset_ms: None,
        }),
        reference,
        problems: &mut out.problems,
    };
    let groq = get("x-groq-region").is_some();
    for (name, value) in &fields {
        if let Some((dim, part)) = named(name, groq) {
            r.set(dim, part, name, value);
        } else if let Some(window) = name.strip_prefix("anthropic-ratelimit-unified-") {
            unified(&mut r, name, window, value);
        }
    }
    ietf(&mut r, &get);
    out.reports = r
        .slots
        .into_iter()
        .filter(|q| q.limit.is_some() || q.remaining.is_some())
        .collect();
    let mut retry = |name: &str, read: &dyn Fn(&Raw<'_>) -> Result<Option<i64>, values::Bad>| {
        get(name).and_then(|v| match read(&Raw::Str(Cow::Borrowed(v))) {
            Ok(ms) => ms,
            Err(why) => {
                out.problems.push(format!("{name}: {why}"));
                None
            }
        })
    };
    let ms = retry("retry-after-ms", &|raw| match values::number(raw)? {
        Some(ms) if ms > MAX_RESET_MS as f64 => {
            Err(format!("{ms} ms is not a plausible wait").into())
        }
        n => Ok(n.map(|ms| ms.round() as i64)),
    });
    out.retry_after_ms =
        ms.or_else(|| retry("retry-after", &|raw| values::retry_after_ms(raw, reference)));
    out
}

/// The dimension and part of a header named `name` (lowercase) of the OpenAI, Anthropic or
/// Kong families.
fn named(name: &str, groq: bool) -> Option<(UpstreamDimension, Part)> {
    use UpstreamDimension as D;
    let part = |p: &str| match p {
        "limit" => Some(Part::Limit),
        "remaining" => Some(Part::Remaining),
        "reset" => Some(Part::Reset),
        _ => None,
    };
    if let Some(rest) = name.strip_prefix("x-ratelimit-") {
        let (p, what) = rest.split_once('-')?;
        let dim = match what {
            "requests" if groq => D::Daily,
            "requests" | "minute" => D::Rpm,
            "tokens" => D::Tpm,
            "day" => D::Daily,
            _ => return None,
        };
        return Some((dim, part(p)?));
    }
    let rest = name.strip_prefix("anthropic-ratelimit-")?;
    let (what, p) = rest.rsplit_once('-')?;
    let dim = match what {
        "requests" => D::Rpm,
        "tokens" => D::Tpm,
        "input-tokens" => D::Itpm,
        "output-tokens" => D::Otpm,
        _ => return None,
    };
    Some((dim, part(p)?))
}

/// `anthropic-ratelimit-unified-{5h,7d}-{utilization,reset}`; other unified headers (status,
/// representative claim, overage) carry no count and are skipped.
fn unified(r: &mut Reports<'_>, name: &str, rest: &str, value: &str) {
    let (dim, part) = match rest.split_once('-') {
        Some(("5h", p)) => (UpstreamDimension::Unified5h, p),
        Some(("7d", p)) => (UpstreamDimension::Unified7d, p),
        _ => return,
    };
    match part {
        "reset" => r.set(dim, Part::Reset, name, value),
        "utilization" => match value.trim().parse::<f64>() {
            Ok(u) if (0.0..=1.0).contains(&u) => {
                r.set_number(dim, Part::Limit, 100);
                r.set_number(dim, Part::Remaining, 100 - (u * 100.0).round() as i64);
            }
            _ => r.problem(
                name,
                format_args!("{value:?} is not a fraction from 0 to 1"),
            ),
        },
        _ => {}
    }
}

/// A policy of the IETF draft: its quota and the dimension its window and unit name.
struct Policy {
    name: Option<String>,
    quota: Option<i64>,
    dim: Option<UpstreamDimension>,
}

fn param(params: &Parameters, key: &str) -> Option<i64> {
    params
        .iter()
        .find(|(k, _)| k.as_str() == key)
        .and_then(|(_, v)| v.as_integer())
        .map(i64::from)
}

/// The dimension of a policy's window (`w`, seconds) and quota unit (`qu`); a policy with
/// neither is read as per minute.
fn policy_dim(params: &Parameters) -> Option<UpstreamDimension> {
    let unit = params
        .iter()
        .find(|(k, _)| k.as_str() == "qu")
        .and_then(|(_, v)| v.as_string().map(|s| s.as_str().to_owned()));
    match (unit.as_deref(), param(params, "w")) {
        (Some("concurrent-requests"), _) => Some(UpstreamDimension::Concurrency),
        (Some(u), _) if u != "requests" => None,
        (_, None | Some(60)) => Some(UpstreamDimension::Rpm),
        (_, Some(86_400)) => Some(UpstreamDimension::Daily),
        _ => None,
    }
}

fn items(entries: Vec<ListEntry>) -> impl Iterator<Item = sfv::Item> {
    entries.into_iter().filter_map(|e| match e {
        ListEntry::Item(i) => Some(i),
        ListEntry::InnerList(_) => None,
    })
}

/// A policy's name: the draft-09 string or token before the parameters.
fn policy_name(item: &BareItem) -> Option<String> {
    item.as_string()
        .map(|s| s.as_str().to_owned())
        .or_else(|| item.as_token().map(|t| t.as_str().to_owned()))
}

/// The IETF draft's fields in their successive forms (see the module table).
fn ietf<'v>(r: &mut Reports<'_>, get: &dyn Fn(&str) -> Option<&'v str>) {
    let mut policies: Vec<Policy> = Vec::new();
    if let Some(v) = get("ratelimit-policy") {
        match Parser::new(v).parse::<sfv::List>() {
            Ok(list) => policies.extend(items(list).map(|i| Policy {
                name: policy_name(&i.bare_item),
                quota: param(&i.params, "q").or_else(|| i.bare_item.as_integer().map(i64::from)),
                dim: policy_dim(&i.params),
            })),
            Err(e) => r.problem("ratelimit-policy", e),
        }
    }
    // A policy states its limit even without a `RateLimit` field saying what remains.
    for p in &policies {
        if let (Some(d), Some(q)) = (p.dim, p.quota) {
            r.set_number(d, Part::Limit, q);
        }
    }
    if let Some(v) = get("ratelimit") {
        ietf_ratelimit(r, v, &policies);
    }
    for prefix in ["ratelimit-", "x-ratelimit-"] {
        let field = |part: &str| get(&format!("{prefix}{part}"));
        let (limit, remaining, reset) = (field("limit"), field("remaining"), field("reset"));
        if limit.is_none() && remaining.is_none() {
            continue;
        }
        // Draft 03 (and Envoy): `10, 10;w=1, 50;w=60`, the first number the limit in effect
        // and the others its policies; a bare number has its window in RateLimit-Policy.
        let mut dim = policies.first().and_then(|p| p.dim);
        if let Some(v) = limit {
            match Parser::new(v).parse::<sfv::List>() {
                Ok(list) => {
                    let list: Vec<sfv::Item> = items(list).collect();
                    let quota = list.first().and_then(|i| i.bare_item.as_integer());
                    let own = list.iter().skip(1).find(|i| {
                        i.bare_item.as_integer() == quota && param(&i.params, "w").is_some()
                    });
                    if let Some(p) = own {
                        dim = policy_dim(&p.params);
                    }
                    match quota {
                        Some(q) => {
                            let d = dim.unwrap_or(UpstreamDimension::Rpm);
                            r.set_number(d, Part::Limit, i64::from(q));
                        }
                        None => r.problem(&format!("{prefix}limit"), "is not a number"),
                    }
                }
                Err(e) => r.problem(&format!("{prefix}limit"), e),
            }
        }
        let d = dim.unwrap_or(UpstreamDimension::Rpm);
        if let Some(v) = remaining {
            r.set(d, Part::Remaining, &format!("{prefix}remaining"), v);
        }
        if let Some(v) = reset {
            r.set(d, Part::Reset, &format!("{prefix}reset"), v);
        }
    }
}

/// `RateLimit`: draft 09's list (`"p";r=50;t=30`, matched to its policy by name) or drafts
/// 07–08's dictionary (`limit=10, remaining=5, reset=30`).
fn ietf_ratelimit(r: &mut Reports<'_>, v: &str, policies: &[Policy]) {
    if let Ok(dict) = Parser::new(v).parse::<sfv::Dictionary>() {
        let member = |k: &str| match dict.iter().find(|(key, _)| key.as_str() == k) {
            Some((_, ListEntry::Item(i))) => i.bare_item.as_integer().map(i64::from),
            _ => None,
        };
        if let (Some(limit), remaining, reset) =
            (member("limit"), member("remaining"), member("reset"))
        {
            let d = policies
                .first()
                .and_then(|p| p.dim)
                .unwrap_or(UpstreamDimension::Rpm);
            r.set_number(d, Part::Limit, limit);
            if let Some(n) = remaining {
                r.set_number(d, Part::Remaining, n);
            }
            if let Some(n) = reset {
                r.set_number(d, Part::Reset, n);
            }
            return;
        }
    }
    let list = match Parser::new(v).parse::<sfv::List>() {
        Ok(list) => list,
        Err(e) => return r.problem("ratelimit", e),
    };
    for item in items(list) {
        let name = policy_name(&item.bare_item);
        let policy = policies.iter().find(|p| p.name.is_some() && p.name == name);
        let Some(d) = policy.map_or(Some(UpstreamDimension::Rpm), |p| p.dim) else {
            continue;
        };
        match param(&item.params, "r") {
            Some(n) => r.set_number(d, Part::Remaining, n),
            None => r.problem("ratelimit", "a policy without r (remaining)"),
        }
        if let Some(q) = policy.and_then(|p| p.quota) {
            r.set_number(d, Part::Limit, q);
        }
        if let Some(t) = param(&item.params, "t") {
            r.set_number(d, Part::Reset, t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::UpstreamDimension as D;

    const AT: i64 = 1_795_788_000_000; // 2026-11-27T14:00:00Z

    fn read_all(h: &[(&str, &str)]) -> Read {
        let h: Vec<(Cow<str>, Cow<str>)> = h
            .iter()
            .map(|(n, v)| (Cow::Borrowed(*n), Cow::Borrowed(*v)))
            .collect();
        read(&h, Some(AT))
    }

    fn report(r: &Read, d: D) -> (Option<u64>, Option<u64>, Option<i64>) {
        let q = r.reports.iter().find(|q| q.dimension == d);
        q.map_or((None, None, None), |q| (q.limit, q.remaining, q.reset_ms))
    }

    #[test]
    fn openai() {
        let r = read_all(&[
            ("x-ratelimit-limit-requests", "60"),
            ("X-RateLimit-Limit-Tokens", "150000"),
            ("x-ratelimit-remaining-requests", "59"),
            ("x-ratelimit-remaining-tokens", "149984"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-reset-tokens", "6m0s"),
            ("retry-after-ms", "1500"),
            ("openai-processing-ms", "812"),
        ]);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(report(&r, D::Rpm), (Some(60), Some(59), Some(1_000)));
        assert_eq!(
            report(&r, D::Tpm),
            (Some(150_000), Some(149_984), Some(360_000))
        );
        assert_eq!(r.reports.len(), 2);
        assert_eq!(r.retry_after_ms, Some(1_500));
    }

    #[test]
    fn azure_sends_remaining_only() {
        let r = read_all(&[
            ("x-ratelimit-remaining-requests", "119"),
            ("x-ratelimit-remaining-tokens", "119000"),
            ("retry-after", "4"),
        ]);
        assert_eq!(report(&r, D::Rpm), (None, Some(119), None));
        assert_eq!(report(&r, D::Tpm), (None, Some(119_000), None));
        assert_eq!(r.retry_after_ms, Some(4_000));
    }

    #[test]
    fn groq_requests_are_per_day() {
        let r = read_all(&[
            ("x-groq-region", "us-east-1"),
            ("x-ratelimit-limit-requests", "14400"),
            ("x-ratelimit-limit-tokens", "18000"),
            ("x-ratelimit-remaining-requests", "14370"),
            ("x-ratelimit-remaining-tokens", "17997"),
            ("x-ratelimit-reset-requests", "2m59.56s"),
            ("x-ratelimit-reset-tokens", "7.66s"),
        ]);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(
            report(&r, D::Daily),
            (Some(14_400), Some(14_370), Some(179_560))
        );
        assert_eq!(
            report(&r, D::Tpm),
            (Some(18_000), Some(17_997), Some(7_660))
        );
        assert_eq!(report(&r, D::Rpm), (None, None, None));
    }

    #[test]
    fn anthropic() {
        let r = read_all(&[
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "49"),
            ("anthropic-ratelimit-requests-reset", "2026-11-27T14:00:01Z"),
            ("anthropic-ratelimit-tokens-limit", "50000"),
            ("anthropic-ratelimit-tokens-remaining", "49000"),
            ("anthropic-ratelimit-tokens-reset", "2026-11-27T14:00:06Z"),
            ("anthropic-ratelimit-input-tokens-limit", "40000"),
            ("anthropic-ratelimit-input-tokens-remaining", "39500"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2026-11-27T14:00:06Z",
            ),
            ("anthropic-ratelimit-output-tokens-limit", "8000"),
            ("anthropic-ratelimit-output-tokens-remaining", "7500"),
            (
                "anthropic-ratelimit-output-tokens-reset",
                "2026-11-27T14:00:03.5Z",
            ),
            ("request-id", "req_018EeWyXxfu5pfWkrYcMdjWG"),
        ]);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(report(&r, D::Rpm), (Some(50), Some(49), Some(1_000)));
        assert_eq!(
            report(&r, D::Tpm),
            (Some(50_000), Some(49_000), Some(6_000))
        );
        assert_eq!(
            report(&r, D::Itpm),
            (Some(40_000), Some(39_500), Some(6_000))
        );
        assert_eq!(report(&r, D::Otpm), (Some(8_000), Some(7_500), Some(3_500)));
    }

    #[test]
    fn anthropic_unified_windows_are_percent() {
        let r = read_all(&[
            ("anthropic-ratelimit-unified-status", "allowed"),
            ("anthropic-ratelimit-unified-5h-utilization", "0.42"),
            ("anthropic-ratelimit-unified-5h-reset", "1795791600"),
            ("anthropic-ratelimit-unified-7d-utilization", "0.3"),
            (
                "anthropic-ratelimit-unified-7d-reset",
                "2026-12-01T14:00:00Z",
            ),
            (
                "anthropic-ratelimit-unified-representative-claim",
                "five_hour",
            ),
        ]);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(
            report(&r, D::Unified5h),
            (Some(100), Some(58), Some(3_600_000))
        );
        assert_eq!(
            report(&r, D::Unified7d),
            (Some(100), Some(70), Some(4 * 86_400_000))
        );
    }

    #[test]
    fn ietf_draft_09_policies_and_ratelimit() {
        let r = read_all(&[
            (
                "RateLimit-Policy",
                r#""burst";q=100;w=60, "daily";q=1000;w=86400, "jobs";q=5;qu="concurrent-requests", "hourly";q=500;w=3600"#,
            ),
            (
                "RateLimit",
                r#""burst";r=40;t=30, "daily";r=900;t=3600, "jobs";r=2, "hourly";r=1"#,
            ),
        ]);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(report(&r, D::Rpm), (Some(100), Some(40), Some(30_000)));
        assert_eq!(
            report(&r, D::Daily),
            (Some(1_000), Some(900), Some(3_600_000))
        );
        assert_eq!(report(&r, D::Concurrency), (Some(5), Some(2), None));
        assert_eq!(r.reports.len(), 3, "the hourly policy matches no dimension");
    }

    #[test]
    fn ietf_older_drafts_envoy_and_kong() {
        // Draft 03 / Envoy: the limit in effect, then its policies.
        let envoy = read_all(&[
            ("x-ratelimit-limit", "100, 100;w=86400, 10;w=60"),
            ("x-ratelimit-remaining", "7"),
            ("x-ratelimit-reset", "120"),
        ]);
        assert!(envoy.problems.is_empty(), "{:?}", envoy.problems);
        assert_eq!(
            report(&envoy, D::Daily),
            (Some(100), Some(7), Some(120_000))
        );
        // Kong: RateLimit-* for the window closest to its limit, plus per-window headers.
        let kong = read_all(&[
            ("RateLimit-Limit", "6"),
            ("RateLimit-Remaining", "4"),
            ("RateLimit-Reset", "47"),
            ("X-RateLimit-Limit-Day", "1000"),
            ("X-RateLimit-Remaining-Day", "996"),
        ]);
        assert_eq!(report(&kong, D::Rpm), (Some(6), Some(4), Some(47_000)));
        assert_eq!(report(&kong, D::Daily), (Some(1_000), Some(996), None));
        // Drafts 07-08: one dictionary.
        let dict = read_all(&[
            ("RateLimit", "limit=10, remaining=5, reset=30"),
            ("RateLimit-Policy", "10;w=86400"),
        ]);
        assert_eq!(report(&dict, D::Daily), (Some(10), Some(5), Some(30_000)));
    }

    #[test]
    fn a_bad_header_costs_that_header_only() {
        let r = read_all(&[
            ("x-ratelimit-limit-requests", "sixty"),
            ("x-ratelimit-remaining-requests", "59"),
            ("x-ratelimit-reset-tokens", "soon"),
            ("x-ratelimit-limit-tokens", "1000"),
            ("anthropic-ratelimit-unified-5h-utilization", "42%"),
            ("RateLimit-Policy", "\"p\";q=10;w=60,,"),
            ("retry-after", "never"),
        ]);
        assert_eq!(report(&r, D::Rpm), (None, Some(59), None));
        assert_eq!(report(&r, D::Tpm), (Some(1_000), None, None));
        assert_eq!(r.retry_after_ms, None);
        let names: Vec<&str> = r
            .problems
            .iter()
            .map(|p| p.split(':').next().unwrap_or(""))
            .collect();
        assert_eq!(
            names,
            [
                "x-ratelimit-limit-requests",
                "x-ratelimit-reset-tokens",
                "anthropic-ratelimit-unified-5h-utilization",
                "ratelimit-policy",
                "retry-after",
            ],
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn implausible_values_are_problems_and_a_policy_alone_gives_its_limit() {
        let r = read_all(&[
            ("x-ratelimit-limit-requests", "9223372036854775807"),
            ("x-ratelimit-reset-requests", "1e30"),
            ("x-ratelimit-reset-tokens", "2099-01-01T00:00:00Z"),
            ("x-ratelimit-remaining-tokens", "5"),
            ("retry-after-ms", "99999999999999999999"),
            ("RateLimit-Policy", r#""day";q=1000;w=86400"#),
        ]);
        assert_eq!(r.problems.len(), 4, "{:?}", r.problems);
        assert_eq!(report(&r, D::Rpm), (None, None, None));
        assert_eq!(report(&r, D::Tpm), (None, Some(5), None));
        assert_eq!(report(&r, D::Daily), (Some(1_000), None, None));
        assert_eq!(r.retry_after_ms, None);
    }

    #[test]
    fn names_given_twice_are_combined() {
        let r = read_all(&[
            ("RateLimit-Policy", r#""a";q=10;w=60"#),
            ("ratelimit-policy", r#""b";q=100;w=86400"#),
            ("ratelimit", r#""a";r=1, "b";r=50"#),
        ]);
        assert_eq!(report(&r, D::Rpm), (Some(10), Some(1), None));
        assert_eq!(report(&r, D::Daily), (Some(100), Some(50), None));
    }
}
