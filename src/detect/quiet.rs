//! Where judging a dimension's level alerts again would change nothing: the quiet band of
//! [`LevelAlert::quiet`] for the limit and rules it was worked out with. It is derived state,
//! never stored; it must only ever say "nothing changes" where the full judgement agrees
//! (property tests in `level` and `alerts` hold it to that).

use super::level::{LevelAlert, LevelRules, QUOTA_THRESHOLDS_BP};

/// The usages at which a dimension's alerts (its `UsageHigh`, and for the daily window
/// `DailyQuotaExhausted`) change nothing whenever judged, for the limit and rules they were
/// worked out with ([`LevelAlert::quiet`]). A busy org is judged at every event, nearly
/// always inside its band: this answers those judgements without the alerts' walk.
#[derive(Debug, Clone, Copy)]
pub(super) struct Quiet {
    lo: u64,
    hi: u64,
    limit: u64,
    rules: LevelRules,
}

impl Quiet {
    /// Not worked out yet: holds for no usage.
    pub(super) const UNKNOWN: Quiet = Quiet {
        lo: 1,
        hi: 0,
        limit: 0,
        rules: LevelRules {
            thresholds_bp: [0; 2],
            hysteresis_bp: 0,
            for_ms: 0,
        },
    };

    /// The band of `usage` (and, for the daily window, `quota`) after a judgement.
    pub(super) fn of(
        usage: &LevelAlert,
        quota: Option<&LevelAlert>,
        limit: u64,
        rules: &LevelRules,
    ) -> Quiet {
        let band = usage.quiet(limit, &rules.thresholds_bp, rules.hysteresis_bp);
        let band = match quota {
            None => band,
            Some(q) => band
                .zip(q.quiet(limit, &QUOTA_THRESHOLDS_BP, rules.hysteresis_bp))
                .map(|((lo, hi), (qlo, qhi))| (lo.max(qlo), hi.min(qhi))),
        };
        match band {
            Some((lo, hi)) => Quiet {
                lo,
                hi,
                limit,
                rules: *rules,
            },
            None => Quiet::UNKNOWN,
        }
    }

    /// Whether judging `usage` against `limit` under `rules` would change nothing.
    pub(super) fn holds(&self, usage: u64, limit: u64, rules: &LevelRules) -> bool {
        usage >= self.lo && usage < self.hi && limit == self.limit && *rules == self.rules
    }
}

impl Default for Quiet {
    fn default() -> Self {
        Quiet::UNKNOWN
    }
}
