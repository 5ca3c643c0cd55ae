//! What the upstream says of one org's limits (its rate-limit headers, SPEC §4): the newest
//! report per dimension, the drift between what it counts and what ratewarden counted, and
//! the limits learnt from it (`[limits] learn`). It keeps reports; it judges nothing (the
//! `LimitMismatch` state it holds is [`Mismatch`]'s, built in `detect`).

use serde::{Deserialize, Serialize};

use crate::detect::alerts::Mismatch;
use crate::events::QuotaReport;
use crate::model::{Dimension, Limits, UpstreamDimension};

const N: usize = UpstreamDimension::ALL.len();

/// How long a report of `dim` without a reset time holds: its window's length (a minute for
/// the per-minute limits, OpenAI's `x-ratelimit-*-requests` and `-tokens`).
fn untimed_ms(dim: UpstreamDimension) -> i64 {
    match dim {
        UpstreamDimension::Daily => 86_400_000,
        UpstreamDimension::Unified5h => 5 * 3_600_000,
        UpstreamDimension::Unified7d => 7 * 86_400_000,
        _ => 60_000,
    }
}

/// What the upstream last said about one limit, with when it said it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct UpstreamReport {
    /// Event time of the report.
    pub ts_ms: i64,
    /// `remaining`, when reported.
    pub remaining: Option<u64>,
    /// `limit`, when reported (now or before).
    pub limit: Option<u64>,
    /// When `remaining` is back to `limit`, when a reset was reported.
    pub reset_at_ms: Option<i64>,
}

impl UpstreamReport {
    /// What is left at `now`: the report's `remaining` until its reset time, then the limit
    /// again, or nothing when the limit is unknown (never a stale 0). A report without a reset
    /// time holds for `untimed_ms` (its window's length, [`untimed_ms`]).
    pub(super) fn remaining_at(&self, now: i64, untimed_ms: i64) -> Option<u64> {
        let reset = self
            .reset_at_ms
            .unwrap_or(self.ts_ms.saturating_add(untimed_ms));
        if reset <= now {
            // Without a reset time nothing says the limit is back either: no value.
            self.limit.filter(|_| self.reset_at_ms.is_some())
        } else {
            self.remaining
        }
    }
}

/// One org's upstream reports. Allocated at its first report, so orgs whose events carry no
/// rate-limit headers cost nothing.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Upstream {
    reports: [Option<UpstreamReport>; N],
    /// Upstream's use (limit − remaining) less ratewarden's own count in the same window, as
    /// measured at each dimension's last report.
    drift: [Option<i64>; N],
    pub(super) mismatch: Mismatch,
    /// The limits the config gives the org (learning overrides them, the alert compares with
    /// them); set from the config, never stored.
    #[serde(skip)]
    pub(super) configured: Limits,
    /// Set when the config was (re)applied: `LimitMismatch` is judged again at the next tick
    /// (a corrected config resolves it, `learn` turned off raises it) without waiting for a
    /// report.
    #[serde(skip)]
    pub(super) rejudge: bool,
}

/// The state of one upstream dimension at a time, for `/v1/usage` and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamSnapshot {
    /// Which limit.
    pub dimension: UpstreamDimension,
    /// The limit last reported.
    pub limit: Option<u64>,
    /// What is left now: as reported until the reported reset, then the limit again.
    pub remaining: Option<u64>,
    /// Upstream's use less ratewarden's at the last report, while that report holds (0
    /// after: nothing is known to be untracked).
    pub drift: Option<i64>,
    /// When the reported window resets, Unix ms.
    pub reset_at_ms: Option<i64>,
}

impl Upstream {
    /// State for an org configured with `configured`.
    pub(super) fn new(configured: Limits) -> Self {
        Upstream {
            configured,
            ..Default::default()
        }
    }

    /// Notes `q`, reported with an event at `ts`: `None` when an older report than the one
    /// kept (ignored), else whether the reported limit changed.
    pub(super) fn note(&mut self, ts: i64, q: &QuotaReport) -> Option<bool> {
        let slot = &mut self.reports[q.dimension.index()];
        if slot.is_some_and(|r| ts < r.ts_ms) {
            return None;
        }
        let before = slot.and_then(|r| r.limit);
        let limit = q.limit.or(before);
        *slot = Some(UpstreamReport {
            ts_ms: ts,
            remaining: q.remaining,
            limit,
            reset_at_ms: q.reset_ms.map(|ms| ts.saturating_add(ms)),
        });
        Some(limit != before)
    }

    /// Records the drift of `dim` measured at its last report (`None`: not measurable).
    pub(super) fn set_drift(&mut self, dim: UpstreamDimension, drift: Option<i64>) {
        self.drift[dim.index()] = drift;
    }

    /// The limit last reported for the upstream dimension matching `dim`.
    pub(super) fn limit(&self, dim: Dimension) -> Option<u64> {
        UpstreamDimension::ALL
            .iter()
            .find(|u| u.configured() == Some(dim))
            .and_then(|u| self.reports[u.index()])
            .and_then(|r| r.limit)
    }

    /// `configured` with every limit the upstream reported in its place. A reported limit of
    /// 0 (nothing allowed, or a header left empty) is not adopted: 0 here means unlimited.
    pub(super) fn learned(&self, mut configured: Limits) -> Limits {
        for dim in Dimension::ALL {
            if let Some(l) = self.limit(dim).filter(|&l| l > 0) {
                dim.set_limit(&mut configured, l);
            }
        }
        configured
    }

    /// Every reported dimension at `now`.
    pub(super) fn snapshot(&self, now: i64) -> Vec<UpstreamSnapshot> {
        UpstreamDimension::ALL
            .iter()
            .filter_map(|&dimension| {
                let r = self.reports[dimension.index()]?;
                let holds = r.reset_at_ms.unwrap_or(r.ts_ms + untimed_ms(dimension)) > now;
                Some(UpstreamSnapshot {
                    dimension,
                    limit: r.limit,
                    remaining: r.remaining_at(now, untimed_ms(dimension)),
                    drift: self.drift[dimension.index()].map(|d| if holds { d } else { 0 }),
                    reset_at_ms: r.reset_at_ms,
                })
            })
            .collect()
    }

    /// The reports of snapshot formats up to 6 (requests and tokens, from `ratelimit`).
    pub(super) fn from_legacy(legacy: &[Option<LegacyReport>; 2], configured: Limits) -> Self {
        let mut u = Upstream::new(configured);
        for (r, dim) in legacy
            .iter()
            .zip([UpstreamDimension::Rpm, UpstreamDimension::Tpm])
        {
            if let Some(r) = r {
                u.reports[dim.index()] = Some(UpstreamReport {
                    ts_ms: r.ts_ms,
                    remaining: Some(r.remaining),
                    limit: r.limit,
                    reset_at_ms: r.reset_at_ms,
                });
            }
        }
        u
    }
}

/// A report as snapshot formats up to 6 stored it inside the org.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyReport {
    ts_ms: i64,
    remaining: u64,
    limit: Option<u64>,
    reset_at_ms: Option<i64>,
}

/// The requests and tokens reports where snapshot formats up to 6 kept them, boxed: only
/// such a snapshot fills them, and only until it is converted, so an org pays 8 bytes for
/// them rather than 96. Stored as the `[Option<LegacyReport>; 2]` of those formats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LegacyReports(Option<Box<[Option<LegacyReport>; 2]>>);

impl LegacyReports {
    /// Takes what an older snapshot held, leaving nothing.
    pub(super) fn take(&mut self) -> Option<[Option<LegacyReport>; 2]> {
        self.0.take().map(|b| *b)
    }
}

impl From<[Option<LegacyReport>; 2]> for LegacyReports {
    fn from(r: [Option<LegacyReport>; 2]) -> Self {
        LegacyReports(r.iter().any(Option::is_some).then(|| Box::new(r)))
    }
}

impl Serialize for LegacyReports {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.as_deref().copied().unwrap_or([None; 2]).serialize(s)
    }
}

impl<'de> Deserialize<'de> for LegacyReports {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <[Option<LegacyReport>; 2]>::deserialize(d).map(LegacyReports::from)
    }
}

impl LegacyReport {
    /// A report of snapshot format 2: remaining only.
    pub(super) fn from_v2(ts_ms: i64, remaining: u64) -> Self {
        LegacyReport {
            ts_ms,
            remaining,
            limit: None,
            reset_at_ms: None,
        }
    }
}
