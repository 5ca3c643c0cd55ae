//! The domain's shared words: names every stage uses (dimensions, alert names, severities,
//! tier limits, the overflow series) and the few pure helpers on them (name validity, the
//! stable hash behind stored keys and fingerprints), and one cache hint the hot loops share.
//!
//! It sits at the bottom of the crate: every stage may import it, and it imports no stage.
//! Anything here must be plain data with no behaviour tied to one stage.

use std::fmt;

/// Name of the shared series past the cardinality limits.
pub const OVERFLOW: &str = "__overflow__";

/// Limits of one tier or org. `0` means unlimited in that dimension.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Requests per rolling 60 s.
    pub rpm: u64,
    /// Jobs in flight at once.
    pub concurrency: u64,
    /// Requests per rolling 24 h.
    pub daily: u64,
    /// Tokens per rolling 60 s.
    pub tpm: u64,
    /// Tokens per rolling 24 h.
    pub tpd: u64,
    /// Whether `daily` counts over a rolling 24 h or a calendar day.
    pub daily_window: DailyWindow,
    /// Images per rolling 60 s (OpenAI's `max_images_per_1_minute`).
    pub ipm: u64,
    /// Input tokens per rolling 60 s (Anthropic's input tokens per minute).
    pub itpm: u64,
    /// Output tokens per rolling 60 s (Anthropic's output tokens per minute).
    pub otpm: u64,
    /// Input tokens enqueued in batches not yet finished (OpenAI's batch queue limit,
    /// `batch_1_day_max_input_tokens`).
    pub batch_queue_tokens: u64,
}

impl Limits {
    /// True when any dimension beyond the org's first five (images, input or output tokens,
    /// the batch queue) is limited.
    pub fn has_extended(&self) -> bool {
        self.ipm > 0 || self.itpm > 0 || self.otpm > 0 || self.batch_queue_tokens > 0
    }
}

/// Limits of one model or model group within an org (`[[orgs.models]]`,
/// `[[tiers.NAME.models]]`): a request whose `model` matches counts against these as well as
/// against its org's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelScope {
    /// The `model` label: `name`, else the first id it matches.
    pub name: std::sync::Arc<str>,
    /// Model ids and aliases that belong to it; a trailing `*` matches any id with that
    /// prefix (dated snapshots such as `claude-sonnet-4-5-20250929`).
    pub models: Vec<Box<str>>,
    /// Its limits (`0` unlimited).
    pub limits: Limits,
    /// The limit source whose values replaced some of them (`openai-admin`), if any.
    pub source: Option<std::sync::Arc<str>>,
    /// The dimensions whose limit that source gave.
    pub sourced: Vec<Dimension>,
}

impl ModelScope {
    /// True when `model` belongs to this scope.
    pub fn matches(&self, model: &str) -> bool {
        self.match_rank(model).is_some()
    }

    /// How closely `model` belongs to this scope, when it does: its name (`usize::MAX`),
    /// another id of it (`usize::MAX - 1`), or a prefix (its length). Of the scopes a model
    /// matches, the closest is its scope: `gpt-4o-mini` is the `gpt-4o-mini` scope's, not
    /// `gpt-4o*`'s, whatever their order.
    pub fn match_rank(&self, model: &str) -> Option<usize> {
        if *self.name == *model && self.models.iter().any(|m| **m == *model) {
            return Some(usize::MAX);
        }
        self.models
            .iter()
            .filter_map(|m| match m.strip_suffix('*') {
                Some(prefix) => model.starts_with(prefix).then_some(prefix.len()),
                None => (**m == *model).then_some(usize::MAX - 1),
            })
            .max()
    }
}

/// The index of the scope of `scopes` that `model` belongs to most closely, and how closely
/// ([`ModelScope::match_rank`]; the first of equals). A `None` among them (a scope not bound
/// to the config yet) matches nothing but keeps its index.
pub fn scope_for<'a>(
    scopes: impl IntoIterator<Item = Option<&'a ModelScope>>,
    model: &str,
) -> Option<(usize, usize)> {
    let mut best: Option<(usize, usize)> = None;
    for (i, s) in scopes.into_iter().enumerate() {
        if let Some(r) = s.and_then(|s| s.match_rank(model))
            && best.is_none_or(|(_, b)| r > b)
        {
            best = Some((i, r));
        }
    }
    best
}

/// How `daily` counts (`daily_window`): over the rolling last 24 h, or since the last reset
/// at a local time of day, as Gemini's requests per day reset at midnight Pacific.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DailyWindow {
    /// The last 24 h, minute by minute.
    #[default]
    Rolling,
    /// Since the last local `reset_minute` (minutes past midnight) in `tz`.
    Calendar {
        /// The zone whose clock the reset follows (DST included).
        tz: chrono_tz::Tz,
        /// Minutes past local midnight, below 1440.
        reset_minute: u16,
    },
}

impl DailyWindow {
    /// For a calendar window, the reset at or before `ts` and the next one after it, Unix ms
    /// (a day is 23 or 25 h across a DST change); `None` for a rolling one. A reset time that
    /// the clock skips (spring forward) happens at the first minute after the gap; one the
    /// clock repeats (fall back), at its first occurrence.
    #[inline]
    pub fn day_of(self, ts: i64) -> Option<(i64, i64)> {
        match self {
            // Every request of a rolling org asks: answered without a call.
            DailyWindow::Rolling => None,
            DailyWindow::Calendar { tz, reset_minute } => calendar_day(tz, reset_minute, ts),
        }
    }
}

/// [`DailyWindow::day_of`] of a calendar window.
fn calendar_day(tz: chrono_tz::Tz, reset_minute: u16, ts: i64) -> Option<(i64, i64)> {
    use chrono::{Duration, TimeZone};
    let reset = chrono::NaiveTime::from_hms_opt(
        u32::from(reset_minute / 60),
        u32::from(reset_minute % 60),
        0,
    )?;
    let at = |date: chrono::NaiveDate| -> Option<i64> {
        let local = date.and_time(reset);
        (0..=180).find_map(|m| {
            tz.from_local_datetime(&(local + Duration::minutes(m)))
                .earliest()
                .map(|t| t.timestamp_millis())
        })
    };
    let today = tz.timestamp_millis_opt(ts).single()?.date_naive();
    let mut start = at(today)?;
    let mut date = today;
    if start > ts {
        date = today.pred_opt()?;
        start = at(date)?;
    }
    Some((start, at(date.succ_opt()?)?))
}

/// A usage dimension, the `dimension` label.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Dimension {
    /// Requests per rolling minute.
    Rpm,
    /// Requests per rolling 24 h.
    Daily,
    /// Jobs in flight.
    Concurrency,
    /// Tokens per rolling minute.
    Tpm,
    /// Tokens per rolling 24 h.
    Tpd,
    /// Images per rolling minute.
    Ipm,
    /// Input tokens per rolling minute.
    Itpm,
    /// Output tokens per rolling minute.
    Otpm,
    /// Input tokens of batches enqueued and not yet finished.
    BatchQueueTokens,
}

impl Dimension {
    /// Every dimension, in label order.
    pub const ALL: [Dimension; 9] = [
        Dimension::Rpm,
        Dimension::Daily,
        Dimension::Concurrency,
        Dimension::Tpm,
        Dimension::Tpd,
        Dimension::Ipm,
        Dimension::Itpm,
        Dimension::Otpm,
        Dimension::BatchQueueTokens,
    ];

    /// How many dimensions snapshot formats up to 7 stored state for (the first ones of
    /// [`Dimension::ALL`]).
    pub const LEGACY: usize = 5;

    /// Position in [`Dimension::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Rpm => "rpm",
            Dimension::Daily => "daily",
            Dimension::Concurrency => "concurrency",
            Dimension::Tpm => "tpm",
            Dimension::Tpd => "tpd",
            Dimension::Ipm => "ipm",
            Dimension::Itpm => "itpm",
            Dimension::Otpm => "otpm",
            Dimension::BatchQueueTokens => "batch_queue_tokens",
        }
    }

    /// Unit for summaries ("50 rpm", "5 concurrent jobs").
    pub fn unit(self) -> &'static str {
        match self {
            Dimension::Rpm => "rpm",
            Dimension::Daily => "daily requests",
            Dimension::Concurrency => "concurrent jobs",
            Dimension::Tpm => "tokens per minute",
            Dimension::Tpd => "tokens per day",
            Dimension::Ipm => "images per minute",
            Dimension::Itpm => "input tokens per minute",
            Dimension::Otpm => "output tokens per minute",
            Dimension::BatchQueueTokens => "batch queue tokens",
        }
    }

    /// Sets the limit of this dimension in `l`.
    pub fn set_limit(self, l: &mut Limits, v: u64) {
        *match self {
            Dimension::Rpm => &mut l.rpm,
            Dimension::Daily => &mut l.daily,
            Dimension::Concurrency => &mut l.concurrency,
            Dimension::Tpm => &mut l.tpm,
            Dimension::Tpd => &mut l.tpd,
            Dimension::Ipm => &mut l.ipm,
            Dimension::Itpm => &mut l.itpm,
            Dimension::Otpm => &mut l.otpm,
            Dimension::BatchQueueTokens => &mut l.batch_queue_tokens,
        } = v;
    }

    /// The limit of this dimension in `l`.
    pub fn limit(self, l: &Limits) -> u64 {
        match self {
            Dimension::Rpm => l.rpm,
            Dimension::Daily => l.daily,
            Dimension::Concurrency => l.concurrency,
            Dimension::Tpm => l.tpm,
            Dimension::Tpd => l.tpd,
            Dimension::Ipm => l.ipm,
            Dimension::Itpm => l.itpm,
            Dimension::Otpm => l.otpm,
            Dimension::BatchQueueTokens => l.batch_queue_tokens,
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A limit as upstreams report it in their rate-limit headers: the `dimension` label of
/// `upstream_limit`, `upstream_remaining` and `usage_drift`. Where one matches a configured
/// [`Dimension`] it carries that dimension's name, so the two series join on `dimension`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum UpstreamDimension {
    /// Requests per minute (`x-ratelimit-*-requests`, `anthropic-ratelimit-requests-*`, an
    /// IETF policy with a 60 s window).
    Rpm,
    /// Tokens per minute (`x-ratelimit-*-tokens`, `anthropic-ratelimit-tokens-*`).
    Tpm,
    /// Input tokens per minute (`anthropic-ratelimit-input-tokens-*`).
    Itpm,
    /// Output tokens per minute (`anthropic-ratelimit-output-tokens-*`).
    Otpm,
    /// Requests per day (Groq's `x-ratelimit-*-requests`, an IETF policy with a 86 400 s
    /// window, Kong's `X-RateLimit-*-Day`).
    Daily,
    /// Requests in flight at once (an IETF policy of `qu="concurrent-requests"`).
    Concurrency,
    /// Percent of Anthropic's five-hour subscription window used
    /// (`anthropic-ratelimit-unified-5h-*`): limit 100.
    Unified5h,
    /// Percent of Anthropic's seven-day subscription window used
    /// (`anthropic-ratelimit-unified-7d-*`): limit 100.
    Unified7d,
}

impl UpstreamDimension {
    /// Every upstream dimension, in label order.
    pub const ALL: [UpstreamDimension; 8] = [
        UpstreamDimension::Rpm,
        UpstreamDimension::Tpm,
        UpstreamDimension::Itpm,
        UpstreamDimension::Otpm,
        UpstreamDimension::Daily,
        UpstreamDimension::Concurrency,
        UpstreamDimension::Unified5h,
        UpstreamDimension::Unified7d,
    ];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamDimension::Rpm => "rpm",
            UpstreamDimension::Tpm => "tpm",
            UpstreamDimension::Itpm => "itpm",
            UpstreamDimension::Otpm => "otpm",
            UpstreamDimension::Daily => "daily",
            UpstreamDimension::Concurrency => "concurrency",
            UpstreamDimension::Unified5h => "unified_5h",
            UpstreamDimension::Unified7d => "unified_7d",
        }
    }

    /// The configured dimension this one is compared with (drift, `LimitMismatch`, learning).
    pub fn configured(self) -> Option<Dimension> {
        match self {
            UpstreamDimension::Rpm => Some(Dimension::Rpm),
            UpstreamDimension::Tpm => Some(Dimension::Tpm),
            UpstreamDimension::Daily => Some(Dimension::Daily),
            UpstreamDimension::Concurrency => Some(Dimension::Concurrency),
            UpstreamDimension::Itpm => Some(Dimension::Itpm),
            UpstreamDimension::Otpm => Some(Dimension::Otpm),
            _ => None,
        }
    }

    /// Position in [`UpstreamDimension::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for UpstreamDimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Alert names (SPEC §9).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum AlertName {
    /// Usage at or above a threshold, per org × dimension.
    UsageHigh,
    /// A burst episode is open.
    BurstDetected,
    /// Jobs in flight longer than `stuck_after`.
    JobsStuck,
    /// Consecutive 429s for one org/app.
    RetryStorm,
    /// The rolling 24 h quota is used up.
    DailyQuotaExhausted,
    /// Not an alert: `ratewarden alerts test` checking a channel's wiring.
    Test,
    /// The configured limit differs from the one the upstream reports, per org × dimension.
    LimitMismatch,
    /// No poll of an org's limit source (`[[limit_sources]]`, a provider's admin API)
    /// succeeded for `failing_after`. (Last: the variant's position is stored.)
    LimitSourceFailing,
}

impl AlertName {
    /// The name as users see it.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertName::UsageHigh => "UsageHigh",
            AlertName::BurstDetected => "BurstDetected",
            AlertName::JobsStuck => "JobsStuck",
            AlertName::RetryStorm => "RetryStorm",
            AlertName::DailyQuotaExhausted => "DailyQuotaExhausted",
            AlertName::Test => "RatewardenTest",
            AlertName::LimitMismatch => "LimitMismatch",
            AlertName::LimitSourceFailing => "LimitSourceFailing",
        }
    }
}

impl fmt::Display for AlertName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Alert severity.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Attention soon.
    Warning,
    /// Attention now.
    Critical,
}

impl Severity {
    /// Lower-case label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// A 64-bit FNV-1a hash of `parts`, each followed by a separator so ("ab","c") and
/// ("a","bc") differ. Stable across processes and versions: it is used for stored keys and
/// alert fingerprints. Not a defence against chosen collisions.
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.iter().chain(&[0x1f]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Default upper bounds (seconds) of `job_duration_seconds`: video jobs take seconds to many
/// minutes. `[metrics] job_duration_buckets` sets others.
pub const JOB_DURATION_BUCKETS: [f64; 12] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
];

/// Limits one provider scope (a model or a model group) has, as a limit source gave them.
/// `None`: the source gave no value for that dimension. Values are as the provider states
/// them (the provider's `0` is passed on as it is).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScopeLimits {
    /// The models (and aliases) the limits apply to; one for a per-model source (OpenAI).
    pub models: Vec<String>,
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens (input and output together) per minute.
    pub tpm: Option<u64>,
    /// Input tokens per minute.
    pub itpm: Option<u64>,
    /// Output tokens per minute.
    pub otpm: Option<u64>,
    /// Images per minute.
    pub ipm: Option<u64>,
    /// Requests per day.
    pub daily: Option<u64>,
    /// Batch input tokens that may be queued per day.
    pub batch_queue_tokens: Option<u64>,
}

impl ScopeLimits {
    /// Every dimension by its short name, with its value (for comparing and logging changes).
    pub fn values(&self) -> [(&'static str, Option<u64>); 7] {
        [
            ("rpm", self.rpm),
            ("tpm", self.tpm),
            ("itpm", self.itpm),
            ("otpm", self.otpm),
            ("ipm", self.ipm),
            ("daily", self.daily),
            ("batch_queue_tokens", self.batch_queue_tokens),
        ]
    }
}

/// What one successful poll of a limit source found: the limits of every scope it lists, for
/// the org the source maps to. They replace the configured limits of those scopes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourcedLimits {
    /// Where they come from, as `/v1/usage` shows it: `openai-admin` or `anthropic-admin`.
    pub source: String,
    /// The ratewarden org they apply to.
    pub org: String,
    /// Each scope's limits, in the provider's order.
    pub scopes: Vec<ScopeLimits>,
}

/// An optional time (Unix ms) in 8 bytes where `Option<i64>` takes 16: state held per org and
/// per app, 10 000 orgs at a time, keeps many of them. `i64::MIN` stands for none; no event
/// or clock time is that old. Stored (serde) exactly as the `Option<i64>` it replaced, so
/// snapshots do not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptMs(i64);

impl OptMs {
    /// No time.
    pub const NONE: OptMs = OptMs(i64::MIN);

    /// `t` as held; `Some(i64::MIN)` reads back as `None`.
    pub fn new(t: Option<i64>) -> OptMs {
        OptMs(t.unwrap_or(i64::MIN))
    }

    /// The time, if any.
    pub fn get(self) -> Option<i64> {
        (self.0 != i64::MIN).then_some(self.0)
    }

    /// Whether a time is held.
    pub fn is_some(self) -> bool {
        self.0 != i64::MIN
    }
}

impl Default for OptMs {
    fn default() -> Self {
        OptMs::NONE
    }
}

impl serde::Serialize for OptMs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.get().serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for OptMs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::<i64>::deserialize(d).map(OptMs::new)
    }
}

/// Asks the CPU to fetch the cache lines of `r` (a value or a slice, all its bytes) ahead of
/// their use (`prefetcht0`; nothing on other targets). A hint: it reads nothing into the
/// program and never faults.
#[inline]
pub fn prefetch<T: ?Sized>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        let at = std::ptr::from_ref(r).cast::<u8>();
        for off in (0..size_of_val(r)).step_by(64) {
            // SAFETY: a prefetch cannot fault, whatever the address, and these are the bytes
            // of a live reference; SSE is part of every x86_64 target.
            unsafe {
                use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
                _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(off).cast());
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

/// True for a name a producer or a config may give an org or app: a [`valid_name`] other than
/// [`OVERFLOW`], which only the tracker gives (to the series past its bounds).
pub fn valid_given_name(s: &str) -> bool {
    valid_name(s) && s != OVERFLOW
}

/// True for a valid org/app name: 1–128 printable characters.
#[inline]
pub fn valid_name(s: &str) -> bool {
    // The common case in one pass: 1-128 bytes of printable ASCII (the controls are 0x00-0x1f
    // and 0x7f). Anything else, valid or not, takes the general rule.
    let b = s.as_bytes();
    if (1..=128).contains(&b.len()) && printable_ascii(b) {
        return true;
    }
    !s.is_empty() && s.chars().count() <= 128 && !s.chars().any(char::is_control)
}

/// Every byte of `b` (1 to 128 of them) is printable ASCII (0x20-0x7e), eight bytes a
/// word (SWAR): with the high bits clear, `(w - 0x20·0x01…) & !w & 0x80…` flags a byte
/// below 0x20, and a zero byte of `w ^ 0x7f·0x01…` one that is 0x7f. No byte is copied:
/// names of 4 to 7 bytes are read as two overlapping halves, longer ones end with an
/// overlapping word, and the shortest as their first, middle and last bytes. Byte by byte
/// this was a tenth of validating a line.
#[inline]
fn printable_ascii(b: &[u8]) -> bool {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = ONES * 0x80;
    let bad = |w: u64| {
        let del = w ^ (ONES * 0x7f);
        (w & HIGH)
            | (w.wrapping_sub(ONES * 0x20) & !w & HIGH)
            | (del.wrapping_sub(ONES) & !del & HIGH)
    };
    let word = |c: &[u8; 8]| u64::from_le_bytes(*c);
    let half = |c: &[u8; 4]| u64::from(u32::from_le_bytes(*c));
    let any = match b.len() {
        0 => 0,
        // The first, middle and last bytes cover them all; the rest of the word is spaces.
        n @ 1..=3 => {
            let pick = |i: usize| u64::from(b.get(i).copied().unwrap_or(b' '));
            bad(pick(0) | pick(n / 2) << 8 | pick(n - 1) << 16 | (ONES * u64::from(b' ')) << 24)
        }
        4..=7 => match (b.first_chunk::<4>(), b.last_chunk::<4>()) {
            (Some(first), Some(last)) => bad(half(first) | half(last) << 32),
            _ => HIGH,
        },
        _ => {
            let (words, _) = b.as_chunks::<8>();
            let tail = b.last_chunk::<8>().map_or(HIGH, word);
            words.iter().fold(bad(tail), |any, w| any | bad(word(w)))
        }
    };
    any == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ascii_path_of_valid_name_agrees_with_the_general_one() {
        let general =
            |s: &str| !s.is_empty() && s.chars().count() <= 128 && !s.chars().any(char::is_control);
        let mut cases: Vec<String> = (0u8..=127).map(|b| format!("a{}", b as char)).collect();
        cases.extend(["".into(), "x".repeat(128), "x".repeat(129), "é".repeat(128)]);
        cases.extend(["é".repeat(129), "a\u{85}".into(), "\u{7f}".into()]);
        // Each character below U+0100 at each place of names across one and two words.
        for len in 1..=20 {
            for at in 0..len {
                for c in (0u8..=255).map(char::from) {
                    let mut s: Vec<char> = vec!['a'; len];
                    s[at] = c;
                    cases.push(s.into_iter().collect());
                }
            }
        }
        for s in cases {
            assert_eq!(valid_name(&s), general(&s), "{s:?}");
        }
    }

    fn ms(rfc3339: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn calendar_days_follow_the_local_clock_across_dst() {
        let la = DailyWindow::Calendar {
            tz: chrono_tz::America::Los_Angeles,
            reset_minute: 0,
        };
        // An ordinary day: midnight PST is 08:00Z.
        assert_eq!(
            la.day_of(ms("2026-01-15T12:00:00Z")),
            Some((ms("2026-01-15T08:00:00Z"), ms("2026-01-16T08:00:00Z")))
        );
        // Just before local midnight it is still the day before.
        assert_eq!(
            la.day_of(ms("2026-01-16T07:59:59.999Z")).map(|d| d.0),
            Some(ms("2026-01-15T08:00:00Z"))
        );
        // 2026-03-08 springs forward: a 23 h day.
        let (start, end) = la.day_of(ms("2026-03-08T12:00:00Z")).unwrap();
        assert_eq!(
            (start, end),
            (ms("2026-03-08T08:00:00Z"), ms("2026-03-09T07:00:00Z"))
        );
        assert_eq!(end - start, 23 * 3_600_000);
        // 2026-11-01 falls back: a 25 h day.
        let (start, end) = la.day_of(ms("2026-11-01T12:00:00Z")).unwrap();
        assert_eq!(
            (start, end),
            (ms("2026-11-01T07:00:00Z"), ms("2026-11-02T08:00:00Z"))
        );
        assert_eq!(end - start, 25 * 3_600_000);
        // A reset at 02:30 is skipped on the spring day: it happens at 03:00 PDT.
        let late = DailyWindow::Calendar {
            tz: chrono_tz::America::Los_Angeles,
            reset_minute: 150,
        };
        assert_eq!(
            late.day_of(ms("2026-03-08T12:00:00Z")).map(|d| d.0),
            Some(ms("2026-03-08T10:00:00Z")),
            "02:30 does not exist on 2026-03-08: the day starts at 03:00 PDT"
        );
        let repeated = DailyWindow::Calendar {
            tz: chrono_tz::America::Los_Angeles,
            reset_minute: 90,
        };
        assert_eq!(
            repeated.day_of(ms("2026-11-01T12:00:00Z")).map(|d| d.0),
            Some(ms("2026-11-01T08:30:00Z")),
            "01:30 happens twice on 2026-11-01: the first (PDT) is the reset"
        );
        assert_eq!(DailyWindow::Rolling.day_of(0), None);
    }
}
