//! Threshold alerts with hysteresis and a `for` duration (SPEC §9 `UsageHigh`,
//! `DailyQuotaExhausted`).
//!
//! Comparisons are in integers: usage × 10 000 against threshold (basis points) × limit, so
//! `0.70 − 0.05` is exactly 6 500 and never `0.6499999999999999`.

use crate::model::OptMs;

/// The one threshold of `DailyQuotaExhausted`: the whole daily quota, in basis points.
pub const QUOTA_THRESHOLDS_BP: [u32; 1] = [10_000];

/// Thresholds of `UsageHigh` and the rules every level alert follows (`[alerts]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelRules {
    /// Warning and critical thresholds, basis points of the limit.
    pub thresholds_bp: [u32; 2],
    /// Resolve below `threshold − hysteresis`, basis points.
    pub hysteresis_bp: u32,
    /// How long a level must hold before it fires, ms.
    pub for_ms: i64,
}

/// What an evaluation changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Started firing at this level (1-based).
    Fired(u8),
    /// Rose to a higher level while firing.
    Escalated(u8),
    /// Fell to a lower, still firing level: a state change without a notification.
    Lowered(u8),
    /// Stopped firing.
    Resolved,
}

/// The state of one threshold alert.
///
/// Fields are stored in this order (serde): it is part of the snapshot format.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct LevelAlert {
    /// 0 = not firing, else 1-based index into the thresholds.
    level: u8,
    /// When the current firing began (event time, ms).
    started_ms: i64,
    /// Since when each level's condition has held (for `for`).
    pending: [OptMs; 2],
    /// Highest level of the current (or last) firing.
    peak: u8,
}

fn at_least(usage: u64, limit: u64, bp: u32) -> bool {
    usage as u128 * 10_000 >= bp as u128 * limit as u128
}

impl LevelAlert {
    /// A new alert: not firing, nothing pending, never fired.
    pub const IDLE: LevelAlert = LevelAlert {
        level: 0,
        started_ms: 0,
        pending: [OptMs::NONE; 2],
        peak: 0,
    };

    /// True for an alert that never did anything ([`LevelAlert::IDLE`]).
    pub fn is_untouched(&self) -> bool {
        self.level == 0 && self.started_ms == 0 && self.peak == 0 && !self.is_active()
    }

    /// True when [`LevelAlert::evaluate`] of an idle alert (not firing, nothing pending)
    /// would change nothing: no limit, or `usage` below every threshold.
    pub fn stays_idle(usage: u64, limit: u64, thresholds: &[u32]) -> bool {
        limit == 0
            || thresholds
                .iter()
                .take(2)
                .all(|&bp| !at_least(usage, limit, bp))
    }

    /// Current level: 0 when not firing.
    pub fn level(&self) -> u8 {
        self.level
    }

    /// When the current firing began.
    pub fn started_ms(&self) -> i64 {
        self.started_ms
    }

    /// Highest level of the current firing (of the last one, right after a resolve).
    pub fn peak(&self) -> u8 {
        self.peak
    }

    /// True when firing or waiting out `for` (the clock matters to this alert).
    pub fn is_active(&self) -> bool {
        self.level > 0 || self.pending.iter().any(|p| p.is_some())
    }

    /// Judges `usage` against `limit` at `ts`. `thresholds` are ascending basis points (at
    /// most two); a level fires at or above its threshold once held for `for_ms`, and a firing
    /// level holds until usage drops strictly below `threshold − hysteresis`.
    pub fn evaluate(
        &mut self,
        usage: u64,
        limit: u64,
        ts: i64,
        thresholds: &[u32],
        hysteresis_bp: u32,
        for_ms: i64,
    ) -> Option<Change> {
        if limit == 0 {
            return None;
        }
        // Nearly every judgement: idle, nothing pending and below every threshold, which
        // the walk below would leave exactly so.
        if !self.is_active() && LevelAlert::stays_idle(usage, limit, thresholds) {
            return None;
        }
        // The other common one: firing at the top level with usage still at or above every
        // threshold and each level held since before, which the walk would leave so too
        // (a busy org over its limit judged at every event).
        let top = thresholds.len().min(self.pending.len());
        if top > 0
            && usize::from(self.level) == top
            && self.pending[..top].iter().all(|p| p.is_some())
            && thresholds[..top]
                .iter()
                .all(|&bp| at_least(usage, limit, bp))
        {
            return None;
        }
        self.walk(usage, limit, ts, thresholds, hysteresis_bp, for_ms)
    }

    /// The usages, `lo..hi`, at which [`LevelAlert::evaluate`] against `limit` and these
    /// rules changes nothing and answers `None` whatever the time: each level pending exactly
    /// while usage reaches its threshold, no level above the firing one pending (it fires
    /// once `for` has passed), and the firing level held (usage at or above its threshold
    /// less the hysteresis). `None` when no usage is like that. Thresholds are read as
    /// [`LevelAlert::evaluate`] reads them, in any order.
    pub fn quiet(&self, limit: u64, thresholds: &[u32], hysteresis_bp: u32) -> Option<(u64, u64)> {
        if limit == 0 {
            return Some((0, u64::MAX));
        }
        // The least usage that is at least `bp` of the limit: `at_least` is `usage >=` it.
        let least = |bp: u32| (u128::from(bp) * u128::from(limit)).div_ceil(10_000);
        let (mut lo, mut hi) = (0u128, u128::from(u64::MAX));
        let levels = thresholds.len().min(self.pending.len());
        for (i, &bp) in thresholds[..levels].iter().enumerate() {
            if self.pending[i].is_some() {
                if i >= usize::from(self.level) {
                    return None;
                }
                lo = lo.max(least(bp));
            } else {
                hi = hi.min(least(bp));
            }
        }
        if self.level > 0 {
            let bp = thresholds.get(usize::from(self.level) - 1)?;
            lo = lo.max(least(bp.saturating_sub(hysteresis_bp)));
        }
        // Both within u64 here: `lo < hi <= u64::MAX`.
        (lo < hi).then_some((lo as u64, hi as u64))
    }

    /// [`LevelAlert::evaluate`] without its shortcuts: every level's condition checked.
    fn walk(
        &mut self,
        usage: u64,
        limit: u64,
        ts: i64,
        thresholds: &[u32],
        hysteresis_bp: u32,
        for_ms: i64,
    ) -> Option<Change> {
        let mut target = 0u8;
        for (i, &bp) in thresholds.iter().enumerate().take(self.pending.len()) {
            if at_least(usage, limit, bp) {
                let since = self.pending[i].get().unwrap_or(ts);
                self.pending[i] = OptMs::new(Some(since));
                if ts - since >= for_ms {
                    target = i as u8 + 1;
                }
            } else {
                self.pending[i] = OptMs::NONE;
            }
        }
        if target > self.level {
            let change = if self.level == 0 {
                self.started_ms = ts;
                self.peak = target;
                Change::Fired(target)
            } else {
                self.peak = self.peak.max(target);
                Change::Escalated(target)
            };
            self.level = target;
            return Some(change);
        }
        if self.level == 0 {
            return None;
        }
        let holds = |lvl: u8| {
            let bp = thresholds[lvl as usize - 1];
            at_least(usage, limit, bp.saturating_sub(hysteresis_bp))
        };
        if holds(self.level) {
            return None;
        }
        let lower = (1..self.level).rev().find(|&l| holds(l));
        match lower {
            Some(l) => {
                self.level = l;
                Some(Change::Lowered(l))
            }
            None => {
                self.level = 0;
                Some(Change::Resolved)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: [u32; 2] = [7000, 9000];
    const H: u32 = 500;

    fn eval(a: &mut LevelAlert, usage: u64, ts: i64) -> Option<Change> {
        a.evaluate(usage, 100, ts, &T, H, 0)
    }

    #[test]
    fn fires_at_exactly_the_threshold() {
        let mut a = LevelAlert::default();
        assert_eq!(eval(&mut a, 69, 0), None, "one below");
        assert_eq!(eval(&mut a, 70, 1), Some(Change::Fired(1)));
        assert_eq!(a.started_ms(), 1);
        assert_eq!(eval(&mut a, 90, 2), Some(Change::Escalated(2)));
        assert_eq!(eval(&mut a, 95, 3), None);
    }

    #[test]
    fn integer_comparison_at_awkward_limits() {
        // 7 of 10 is exactly 70 %; 0.7 × 10 in floats is 7.000000000000001.
        let mut a = LevelAlert::default();
        assert_eq!(a.evaluate(7, 10, 0, &T, H, 0), Some(Change::Fired(1)));
        // Resolve strictly below 65 %: 13 of 20 is exactly 65 % and holds.
        let mut b = LevelAlert::default();
        b.evaluate(14, 20, 0, &T, H, 0);
        assert_eq!(b.evaluate(13, 20, 1, &T, H, 0), None);
        assert_eq!(b.evaluate(12, 20, 2, &T, H, 0), Some(Change::Resolved));
    }

    #[test]
    fn hysteresis_prevents_flapping() {
        let mut a = LevelAlert::default();
        assert_eq!(eval(&mut a, 70, 0), Some(Change::Fired(1)));
        // Oscillating between 65 % and 72 %: inside the band, nothing changes.
        for (i, u) in [66, 71, 65, 72, 69, 65].into_iter().enumerate() {
            assert_eq!(eval(&mut a, u, i as i64 + 1), None, "usage {u}");
        }
        assert_eq!(eval(&mut a, 64, 10), Some(Change::Resolved));
        assert_eq!(
            eval(&mut a, 69, 11),
            None,
            "below the threshold again: no re-fire"
        );
        assert_eq!(eval(&mut a, 70, 12), Some(Change::Fired(1)));
    }

    #[test]
    fn critical_falls_to_warning_silently_then_resolves() {
        let mut a = LevelAlert::default();
        assert_eq!(
            eval(&mut a, 95, 0),
            Some(Change::Fired(2)),
            "straight to critical"
        );
        assert_eq!(eval(&mut a, 85, 1), None, "85 % holds critical (90 − 5)");
        assert_eq!(eval(&mut a, 84, 2), Some(Change::Lowered(1)));
        assert_eq!(a.level(), 1);
        assert_eq!(a.peak(), 2, "the firing reached critical");
        assert_eq!(eval(&mut a, 89, 3), None, "warning holds below 90");
        assert_eq!(eval(&mut a, 90, 4), Some(Change::Escalated(2)));
        assert_eq!(
            eval(&mut a, 10, 5),
            Some(Change::Resolved),
            "straight down resolves"
        );
    }

    #[test]
    fn for_duration_delays_firing() {
        let mut a = LevelAlert::default();
        let f = |a: &mut LevelAlert, u, ts| a.evaluate(u, 100, ts, &T, H, 1_000);
        assert_eq!(f(&mut a, 80, 0), None);
        assert!(a.is_active(), "pending");
        assert_eq!(f(&mut a, 80, 999), None);
        assert_eq!(f(&mut a, 80, 1_000), Some(Change::Fired(1)));
        // A dip resets the pending clock.
        let mut b = LevelAlert::default();
        f(&mut b, 80, 0);
        f(&mut b, 10, 500);
        assert_eq!(f(&mut b, 80, 1_000), None);
        assert_eq!(f(&mut b, 80, 2_000), Some(Change::Fired(1)));
    }

    #[test]
    fn single_threshold_for_quota() {
        let mut a = LevelAlert::default();
        let q = |a: &mut LevelAlert, u, ts| a.evaluate(u, 100, ts, &[10_000], H, 0);
        assert_eq!(q(&mut a, 99, 0), None);
        assert_eq!(q(&mut a, 100, 1), Some(Change::Fired(1)));
        assert_eq!(q(&mut a, 96, 2), None);
        assert_eq!(q(&mut a, 94, 3), Some(Change::Resolved));
    }

    #[test]
    fn unlimited_never_fires() {
        let mut a = LevelAlert::default();
        assert_eq!(a.evaluate(1_000_000, 0, 0, &T, H, 0), None);
    }

    proptest::proptest! {
        /// The shortcuts of `evaluate` answer as the full walk does, and leave the same
        /// state, for any usage path, thresholds and `for`.
        #[test]
        fn shortcuts_answer_as_the_walk(
            steps in proptest::collection::vec((0u64..150, 0i64..400), 0..200),
            thresholds in proptest::sample::select(vec![vec![7000u32, 9000], vec![10_000], vec![9000, 7000], vec![]]),
            for_ms in proptest::sample::select(vec![0i64, 1_000, 5_000]),
        ) {
            let (mut fast, mut walked) = (LevelAlert::default(), LevelAlert::default());
            let mut ts = 0;
            for (usage, dt) in steps {
                ts += dt * 10;
                let a = fast.evaluate(usage, 100, ts, &thresholds, H, for_ms);
                let b = walked.walk(usage, 100, ts, &thresholds, H, for_ms);
                proptest::prop_assert_eq!(a, b);
                proptest::prop_assert_eq!(format!("{fast:?}"), format!("{walked:?}"));
            }
        }

        /// The quiet band is exactly the usages at which an alert judged at any time changes
        /// nothing: inside it nothing changes, and at every usage outside it something does
        /// (judged then, a second later or long after, `for` passed).
        #[test]
        fn the_quiet_band_is_where_nothing_changes(
            steps in proptest::collection::vec((0u64..150, 0i64..400), 0..60),
            thresholds in proptest::sample::select(vec![vec![7000u32, 9000], vec![10_000], vec![9000, 7000], vec![], vec![7000, 12_000]]),
            for_ms in proptest::sample::select(vec![0i64, 1_000, 5_000]),
            limit in proptest::sample::select(vec![0u64, 1, 7, 100, 1_000]),
        ) {
            let mut a = LevelAlert::default();
            let mut ts = 0;
            for (usage, dt) in steps {
                ts += dt * 10;
                a.evaluate(usage * limit.max(1) / 100, limit, ts, &thresholds, H, for_ms);
            }
            let band = a.quiet(limit, &thresholds, H);
            let changes = |usage: u64| {
                [ts, ts + 1_000, ts + 1_000_000].iter().any(|&at| {
                    let mut b = a;
                    b.evaluate(usage, limit, at, &thresholds, H, for_ms).is_some()
                        || format!("{b:?}") != format!("{a:?}")
                })
            };
            // Every usage up to past the highest threshold (120 % of the limit).
            for usage in 0..=2 * limit + 2 {
                let inside = band.is_some_and(|(lo, hi)| (lo..hi).contains(&usage));
                proptest::prop_assert_eq!(
                    inside,
                    !changes(usage),
                    "usage {} band {:?} alert {:?}",
                    usage,
                    band,
                    a
                );
            }
        }
    }
}
