//! Burst detection on exact request timestamps (SPEC §5).
//!
//! Bucket counts cannot answer "how many in `(ts − W, ts]`" exactly, so each org keeps the
//! timestamps of its recent requests, sorted. The buffer is trimmed by time (one window plus
//! five minutes of lateness) and by count (enough to decide against the threshold), so its size
//! is bounded by the org's limits, not by its traffic.

use std::collections::VecDeque;

/// How far behind the newest request a late request is still judged exactly: the lateness
/// horizon of the windows (5 minutes).
const LATENESS_MS: i64 = 300_000;

/// Steps the in-order count walks past the known-outside requests before it searches.
const WALK_STEPS: usize = 16;

/// The burst threshold for an org: `max(2, ceil(rpm × W/60 s × factor))`, or `None` when the
/// rpm limit is 0 (no burst detection).
pub fn burst_threshold(rpm: u64, window_ms: i64, factor: f64) -> Option<u64> {
    if rpm == 0 {
        return None;
    }
    let raw = rpm as f64 * window_ms as f64 / 60_000.0 * factor;
    // The epsilon keeps an exact product like 3.0000000000000004 from rounding up to 4.
    let t = (raw - 1e-9).ceil();
    Some(if t.is_finite() {
        (t as u64).max(2)
    } else {
        u64::MAX
    })
}

/// An edge of a burst episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// The count reached the threshold: an episode opened.
    Opened,
    /// The count fell below the threshold: the episode closed.
    Closed,
}

/// Burst state of one org.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Burst {
    /// Recent request timestamps, ascending.
    recent: VecDeque<i64>,
    /// An episode is open.
    open: bool,
    /// Episodes opened so far (`bursts_total`).
    pub episodes: u64,
    /// How many of `recent` are known to be out of the window of the newest request: the
    /// in-order count walks on from here instead of searching the whole buffer (a binary
    /// search over thousands of timestamps was a twentieth of replay's time). Any value
    /// up to the true one is correct, so a restored state starts from 0.
    #[serde(skip)]
    outside: usize,
}

impl Burst {
    /// Requests recorded so far with `ts` in `(at − window, at]`.
    pub fn count(&self, at: i64, window_ms: i64) -> u64 {
        let cut = at - window_ms;
        let Some(&newest) = self.recent.back() else {
            return 0;
        };
        if at >= newest {
            if newest <= cut {
                // The present, long after the last request (late ones only since): none.
                return 0;
            }
            // Walked on from the known-outside requests (outside any later window too): a
            // tick of an open episode a second on passes a few, where a search of the
            // whole buffer was a fiftieth of replay.
            return (self.recent.len() - self.walk_outside(cut)) as u64;
        }
        let lo = self.recent.partition_point(|&x| x <= cut);
        let hi = self.recent.partition_point(|&x| x <= at);
        (hi - lo) as u64
    }

    /// True while an episode is open.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Records a request at `ts` and judges it at its own time.
    pub fn record(&mut self, ts: i64, window_ms: i64, threshold: u64) -> Option<Edge> {
        let newest = self.recent.back().copied().unwrap_or(i64::MIN);
        let in_order = ts >= newest;
        if in_order {
            self.recent.push_back(ts);
        } else {
            self.insert(ts);
        }
        self.trim(newest.max(ts), window_ms, threshold);
        let count = if in_order {
            // The window's start only moves forward with in-order requests.
            let i = self.walk_outside(ts - window_ms);
            self.outside = i;
            (self.recent.len() - i) as u64
        } else {
            self.count(ts, window_ms)
        };
        if count >= threshold && !self.open {
            self.open = true;
            self.episodes += 1;
            Some(Edge::Opened)
        } else if count < threshold && self.open && in_order {
            self.open = false;
            Some(Edge::Closed)
        } else {
            None
        }
    }

    /// Records a request older than the org's present without judging it (the tracker
    /// decides what a late request means for episodes, see `Org::late_burst`); it is not
    /// always older than the newest request here, as the present also moves with ticks and
    /// job events. Returns the requests in `(ts − window, ts]` before it, as
    /// [`Burst::count`] would have: its place is where that window ends, so counting and
    /// inserting share a search.
    pub fn insert_late(&mut self, ts: i64, window_ms: i64, threshold: u64) -> u64 {
        let newest = self.recent.back().copied().unwrap_or(ts).max(ts);
        let pos = self.recent.partition_point(|&x| x <= ts);
        let start = self.recent.partition_point(|&x| x <= ts - window_ms);
        let before = (pos - start) as u64;
        self.insert_at(pos, ts);
        self.trim(newest, window_ms, threshold);
        before
    }

    /// How many of `recent` are at or before `cut`, walked on from the known-outside ones
    /// (`cut` at least the cut they were found outside of).
    /// A few steps at most: further behind (late requests came since, or a restored state)
    /// it searches instead, so no count costs more than a search.
    fn walk_outside(&self, cut: i64) -> usize {
        let mut i = self.outside.min(self.recent.len());
        for _ in 0..WALK_STEPS {
            match self.recent.get(i) {
                Some(&x) if x <= cut => i += 1,
                _ => return i,
            }
        }
        self.recent.partition_point(|&x| x <= cut)
    }

    /// Puts `ts` in its place.
    fn insert(&mut self, ts: i64) {
        let pos = self.recent.partition_point(|&x| x <= ts);
        self.insert_at(pos, ts);
    }

    /// Puts `ts` at `pos`, its place; one before the known-outside ones is outside too.
    fn insert_at(&mut self, pos: usize, ts: i64) {
        self.recent.insert(pos, ts);
        if pos < self.outside {
            self.outside += 1;
        }
    }

    fn trim(&mut self, newest: i64, window_ms: i64, threshold: u64) {
        let keep_after = newest - window_ms - LATENESS_MS;
        let cap = threshold.saturating_mul(2).saturating_add(1024) as usize;
        while let Some(&front) = self.recent.front()
            && (front <= keep_after || self.recent.len() > cap)
        {
            self.recent.pop_front();
            self.outside = self.outside.saturating_sub(1);
        }
    }

    /// Opens an episode now (already counted by the caller): a late request completed a burst
    /// that is still on at the present.
    pub fn open_now(&mut self) -> Option<Edge> {
        (!self.open).then(|| {
            self.open = true;
            Edge::Opened
        })
    }

    /// The clock moved to `now`: closes an open episode whose count fell below the threshold.
    pub fn tick(&mut self, now: i64, window_ms: i64, threshold: u64) -> Option<Edge> {
        if self.open && self.count(now, window_ms) < threshold {
            self.open = false;
            return Some(Edge::Closed);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: i64 = 10_000;

    #[test]
    fn threshold_formula() {
        assert_eq!(burst_threshold(5, W, 3.0), Some(3), "ceil(2.5)");
        assert_eq!(burst_threshold(6, W, 3.0), Some(3), "exactly 3.0 stays 3");
        assert_eq!(burst_threshold(50, W, 3.0), Some(25));
        assert_eq!(burst_threshold(1, W, 3.0), Some(2), "never below 2");
        assert_eq!(burst_threshold(0, W, 3.0), None, "no rpm limit, no bursts");
    }

    /// A burst state holding requests at `times`, in order, far below any threshold.
    fn holding(times: &[i64]) -> Burst {
        let mut b = Burst::default();
        for &ts in times {
            b.record(ts, W, 100);
        }
        b
    }

    #[test]
    fn a_late_request_newer_than_every_one_held_counts_the_window_before_it() {
        let mut b = holding(&[0, 1_000, 2_000]);
        // Late to the org's present, not to the requests here: it goes last.
        assert_eq!(
            b.insert_late(10_500, W, 100),
            2,
            "1 000 and 2 000 are in (500, 10 500]"
        );
        assert_eq!(
            b.insert_late(10_500, W, 100),
            3,
            "and the one just put there"
        );
        assert_eq!(b.count(10_500, W), 4);
        assert_eq!(b.recent.back(), Some(&10_500));
    }

    #[test]
    fn a_late_request_does_not_count_one_held_at_its_window_start() {
        let mut b = holding(&[0, 5_000, 12_000]);
        assert_eq!(
            b.insert_late(W, W, 100),
            1,
            "(0, 10 000] holds 5 000, not 0: the first held is at the cut"
        );
        assert_eq!(
            b.insert_late(W + 1, W, 100),
            2,
            "(1, 10 001] holds 5 000 and 10 000, none of them the first"
        );
    }

    #[test]
    fn opens_at_the_threshold_not_one_below() {
        let mut b = Burst::default();
        assert_eq!(b.record(0, W, 3), None);
        assert_eq!(
            b.record(1_000, W, 3),
            None,
            "2 of 3: one below the threshold"
        );
        assert_eq!(b.record(2_000, W, 3), Some(Edge::Opened), "3 of 3");
        assert_eq!(b.episodes, 1);
        assert_eq!(b.record(3_000, W, 3), None, "still open, not a new episode");
        assert_eq!(b.episodes, 1);
    }

    #[test]
    fn window_is_half_open() {
        let mut b = Burst::default();
        b.record(0, W, 3);
        b.record(5_000, W, 3);
        // (10 000 − W, 10 000] excludes the request at 0.
        assert_eq!(b.record(10_000, W, 3), None);
        assert_eq!(b.count(9_999, W), 2);
    }

    #[test]
    fn closes_when_the_clock_moves_on() {
        let mut b = Burst::default();
        for t in [0, 100, 200] {
            b.record(t, W, 3);
        }
        assert!(b.is_open());
        assert_eq!(
            b.tick(9_999, W, 3),
            None,
            "(−1, 9 999] still holds all three"
        );
        assert_eq!(
            b.tick(10_000, W, 3),
            Some(Edge::Closed),
            "the request at 0 left"
        );
        assert!(!b.is_open());
        // A new episode later counts again.
        for t in [20_000, 20_001, 20_002] {
            b.record(t, W, 3);
        }
        assert_eq!(b.episodes, 2);
    }

    #[test]
    fn late_requests_are_judged_at_their_own_time() {
        let mut b = Burst::default();
        b.record(50_000, W, 3);
        b.record(1_000, W, 3);
        b.record(2_000, W, 3);
        assert_eq!(b.count(2_000, W), 2);
        assert_eq!(
            b.record(3_000, W, 3),
            Some(Edge::Opened),
            "three within 10 s, 47 s ago"
        );
        // A late request below the threshold does not close an episode opened later.
        let mut c = Burst::default();
        for t in [100_000, 100_001, 100_002] {
            c.record(t, W, 3);
        }
        assert_eq!(c.record(80_000, W, 3), None);
        assert!(c.is_open());
    }

    #[test]
    fn memory_is_bounded_by_the_threshold() {
        let mut b = Burst::default();
        for t in 0..100_000 {
            b.record(t, W, 3);
        }
        assert!(b.recent.len() <= 2 * 3 + 1024);
    }

    proptest::proptest! {
        /// The in-order count (walked on from where the window started) is the count of the
        /// requests kept in the window, whatever late requests came between.
        #[test]
        fn the_walked_count_is_the_searched_count(
            steps in proptest::collection::vec((0i64..3_000, 0u8..4), 1..400),
            threshold in 2u64..40,
        ) {
            let mut b = Burst::default();
            let mut newest = 0i64;
            for (dt, kind) in steps {
                if kind == 0 {
                    // A late request, up to a window and a half back: what it returns is
                    // the count at its time before it.
                    let ts = newest - dt * 5;
                    let brute = b.recent.iter().filter(|&&x| x > ts - W && x <= ts).count();
                    proptest::prop_assert_eq!(b.insert_late(ts, W, threshold), brute as u64);
                    continue;
                }
                newest += dt;
                let searched = {
                    let mut copy = Burst { outside: 0, ..b.clone_state() };
                    copy.recent.push_back(newest);
                    copy.trim(newest, W, threshold);
                    copy.count(newest, W)
                };
                b.record(newest, W, threshold);
                proptest::prop_assert_eq!(b.count(newest, W), searched);
                let walked = (b.recent.len() - b.outside) as u64;
                proptest::prop_assert_eq!(walked, searched);
                // Asked at any time from a window back to one ahead (the clock's ticks).
                for at in [newest - W, newest - 1, newest, newest + dt, newest + W] {
                    let brute = b.recent.iter().filter(|&&x| x > at - W && x <= at).count();
                    proptest::prop_assert_eq!(b.count(at, W), brute as u64);
                }
            }
        }
    }

    impl Burst {
        fn clone_state(&self) -> Burst {
            Burst {
                recent: self.recent.clone(),
                open: self.open,
                episodes: self.episodes,
                outside: self.outside,
            }
        }
    }
}
