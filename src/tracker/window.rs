//! Rolling bucketed counters: the rpm (1 s buckets) and daily (1 min buckets) windows.
//!
//! A [`Window`] answers "how many in the window ending at bucket `q`" for any `q` from the
//! newest bucket back `slack` buckets, exactly at its resolution: the answer counts every
//! event of the buckets `q − width + 1 ..= q`, so it never holds fewer than the window and at
//! most one bucket more (SPEC §5). The slack lets late events be judged at their own time.
//! Memory is fixed per window (`width + slack` slots); nothing grows with the event count.

/// A bucket counter slot: `u32` for requests, `u64` for tokens.
pub trait Slot: Copy + Default + Send + Sync + 'static {
    /// The value as `u64`.
    fn get(self) -> u64;
    /// Adds `n`, saturating; returns what was actually added so totals stay exact.
    fn add_saturating(&mut self, n: u64) -> u64;
}

impl Slot for u32 {
    fn get(self) -> u64 {
        self as u64
    }
    fn add_saturating(&mut self, n: u64) -> u64 {
        let added = n.min((u32::MAX - *self) as u64);
        *self += added as u32;
        added
    }
}

impl Slot for u64 {
    fn get(self) -> u64 {
        self
    }
    fn add_saturating(&mut self, n: u64) -> u64 {
        let added = n.min(u64::MAX - *self);
        *self += added;
        added
    }
}

/// A ring of buckets with a running total.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Window<S: Slot> {
    /// Ring of `width + slack` buckets; bucket `b` lives at `b mod len`.
    slots: Box<[S]>,
    /// Newest bucket held; the ring covers `head − len + 1 ..= head`.
    head: i64,
    /// Sum of every slot. Sums are kept in 128 bits so that slots near their maximum never
    /// overflow them; answers are clamped to `i64::MAX`, the most a gauge or a signed 64-bit
    /// JSON reader holds (a token count that large means nothing more anyway).
    total: u128,
    /// Sum of the window ending at the head, so the common query (at the head) is O(1).
    head_sum: u128,
    /// Buckets in one window (61 for rpm: the current second and the 60 before).
    width: i64,
}

impl<S: Slot> Window<S> {
    /// A window of `width` buckets that can still be queried `slack` buckets behind its head.
    pub fn new(width: usize, slack: usize) -> Self {
        Window {
            slots: vec![S::default(); width + slack].into_boxed_slice(),
            head: i64::MIN,
            total: 0,
            head_sum: 0,
            width: width as i64,
        }
    }

    fn len(&self) -> i64 {
        self.slots.len() as i64
    }

    fn slot(&self, bucket: i64) -> S {
        self.slots[bucket.rem_euclid(self.len()) as usize]
    }

    /// Oldest bucket the ring still holds.
    fn ring_lo(&self) -> i64 {
        self.head.saturating_sub(self.len() - 1)
    }

    /// Newest bucket seen, if any.
    pub fn head(&self) -> Option<i64> {
        (self.head != i64::MIN).then_some(self.head)
    }

    /// Moves the head forward to `bucket`, clearing the buckets that fall out of the ring.
    fn advance(&mut self, bucket: i64) {
        // Buckets leaving the head window go first: with no slack a leaving bucket and an
        // entering one share a slot.
        if self.head == i64::MIN || bucket - self.head >= self.width {
            self.head_sum = 0;
        } else {
            for b in self.head - self.width + 1..=bucket - self.width {
                self.head_sum -= self.slot(b).get() as u128;
            }
        }
        if self.head == i64::MIN || bucket - self.head >= self.len() {
            self.slots.fill(S::default());
            self.total = 0;
        } else {
            for b in self.head + 1..=bucket {
                let i = b.rem_euclid(self.len()) as usize;
                self.total -= self.slots[i].get() as u128;
                self.slots[i] = S::default();
            }
        }
        self.head = bucket;
    }

    /// Counts `n` at `bucket`. Returns false when the bucket is older than the ring holds.
    pub fn add(&mut self, bucket: i64, n: u64) -> bool {
        if self.head == i64::MIN || bucket > self.head {
            self.advance(bucket);
        } else if bucket < self.ring_lo() {
            return false;
        }
        let i = bucket.rem_euclid(self.len()) as usize;
        let added = self.slots[i].add_saturating(n);
        self.total += added as u128;
        if bucket > self.head - self.width {
            self.head_sum += added as u128;
        }
        true
    }

    fn sum(&self, from: i64, to: i64) -> u128 {
        (from..=to).map(|b| self.slot(b).get() as u128).sum()
    }

    /// Events in the window ending at bucket `q` (buckets `q − width + 1 ..= q`), at most
    /// `i64::MAX`.
    pub fn count_at(&self, q: i64) -> u64 {
        clamp(self.count_exact(q))
    }

    fn count_exact(&self, q: i64) -> u128 {
        if self.head == i64::MIN {
            return 0;
        }
        if q == self.head {
            return self.head_sum;
        }
        let ring_lo = self.ring_lo();
        let a = (q - self.width + 1).max(ring_lo);
        let b = q.min(self.head);
        if a > b {
            return 0;
        }
        let direct = b - a + 1;
        let complement = (a - ring_lo) + (self.head - b);
        if complement < direct {
            self.total - self.sum(ring_lo, a - 1) - self.sum(b + 1, self.head)
        } else {
            self.sum(a, b)
        }
    }

    /// The highest count of a window ending at any bucket from `from` to `to` (at most the
    /// head), each as [`Window::count_at`] answers it: the peak that a late event, counted at
    /// `from`, may have raised. O(`to − from`) after one `count_at`.
    pub fn max_count(&self, from: i64, to: i64) -> u64 {
        if self.head == i64::MIN {
            return 0;
        }
        let to = to.min(self.head);
        if from > to {
            return 0;
        }
        let lo = self.ring_lo();
        // Buckets the ring no longer holds count as empty, as in `count_at`.
        let held = |b: i64| {
            if b < lo || b > self.head {
                0
            } else {
                self.slot(b).get()
            }
        };
        let mut count = self.count_exact(from);
        let mut best = count;
        for q in from + 1..=to {
            count = (count + held(q) as u128).saturating_sub(held(q - self.width) as u128);
            best = best.max(count);
        }
        clamp(best)
    }

    /// The first bucket at which the window holds fewer than `limit` events, counting only
    /// what is already in it: `q` itself when it already does.
    pub fn frees_at(&self, q: i64, limit: u64) -> i64 {
        let count = self.count_at(q);
        if count < limit || self.head == i64::MIN {
            return q;
        }
        let excess = (count - limit + 1) as u128;
        let mut cum: u128 = 0;
        let a = (q - self.width + 1).max(self.ring_lo());
        for b in a..=q.min(self.head) {
            cum += self.slot(b).get() as u128;
            if cum >= excess {
                return b + self.width;
            }
        }
        q.min(self.head) + self.width
    }
}

/// A window sum as answered: at most `i64::MAX`.
fn clamp(v: u128) -> u64 {
    v.min(i64::MAX as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rpm_window_holds_61_one_second_buckets() {
        let mut w: Window<u32> = Window::new(61, 0);
        w.add(100, 1);
        assert_eq!(w.count_at(100), 1);
        assert_eq!(w.count_at(160), 1, "t-60 s still inside: conservative");
        assert_eq!(w.count_at(161), 0);
        w.add(161, 2);
        assert_eq!(w.count_at(161), 2);
        assert!(!w.add(100, 1), "older than the ring");
    }

    #[test]
    fn slack_allows_exact_late_queries() {
        let mut w: Window<u32> = Window::new(61, 300);
        for b in 0..400 {
            w.add(b, 1);
        }
        assert_eq!(w.count_at(399), 61);
        assert_eq!(w.count_at(200), 61, "300 buckets back is still exact");
        assert_eq!(w.count_at(420), 40);
        assert_eq!(w.count_at(1000), 0);
        w.add(150, 5);
        assert_eq!(w.count_at(150), 66);
        assert_eq!(w.count_at(399), 61);
    }

    #[test]
    fn max_count_is_the_highest_window_over_a_range() {
        let mut w: Window<u32> = Window::new(61, 300);
        for b in [100, 130, 150, 200, 205] {
            w.add(b, 1);
        }
        let by_hand = |from: i64, to: i64| (from..=to).map(|q| w.count_at(q)).max().unwrap();
        for (from, to) in [(100, 205), (150, 160), (161, 205), (200, 400), (90, 99)] {
            assert_eq!(
                w.max_count(from, to),
                by_hand(from, to.min(205)),
                "{from}..{to}"
            );
        }
        assert_eq!(
            w.max_count(100, 205),
            3,
            "130, 150 and the one at 100..=160"
        );
        assert_eq!(w.max_count(300, 200), 0);
    }

    #[test]
    fn frees_at_finds_when_the_oldest_leave() {
        let mut w: Window<u32> = Window::new(61, 0);
        w.add(10, 3);
        w.add(20, 2);
        assert_eq!(w.frees_at(30, 6), 30, "room now");
        assert_eq!(
            w.frees_at(30, 5),
            71,
            "the three at 10 leave the window at 71"
        );
        assert_eq!(w.frees_at(30, 2), 81);
        assert_eq!(w.frees_at(30, 1), 81);
    }

    #[test]
    fn saturating_slots_keep_totals_consistent() {
        let mut w: Window<u32> = Window::new(2, 0);
        w.add(1, u64::MAX);
        assert_eq!(w.count_at(1), u32::MAX as u64);
        w.add(3, 1);
        assert_eq!(w.count_at(3), 1);
        // Token windows: however many huge counts arrive, answers stay within i64 and a
        // single count is kept whole.
        let mut t: Window<u64> = Window::new(61, 300);
        t.add(0, i64::MAX as u64);
        assert_eq!(t.count_at(0), i64::MAX as u64);
        for s in 0..70 {
            for _ in 0..3 {
                t.add(s, i64::MAX as u64);
            }
            assert_eq!(t.count_at(s), i64::MAX as u64, "at {s}");
            assert_eq!(t.max_count(s.saturating_sub(5), s), i64::MAX as u64);
        }
        assert_eq!(t.count_at(69 + 61 + 1), 0, "all of it leaves the window");
    }

    const SEC: i64 = 1000;

    proptest! {
        /// The rpm window against a model that keeps every timestamp, on random out-of-order
        /// streams: never fewer than the exact count of `(t − 60 s, t]`, never more than the
        /// conservative bound (the 61 whole seconds `floor(t) − 60 ..= floor(t)`).
        #[test]
        fn rpm_window_is_conservative(
            start in 1_700_000_000_000i64..1_800_000_000_000,
            deltas in prop::collection::vec((-200_000i64..=5_000, 1u64..4), 1..400),
            probes in prop::collection::vec(-300_000i64..=120_000, 1..20),
        ) {
            let slack = 300;
            let mut w: Window<u32> = Window::new(61, slack);
            let mut newest = start;
            let mut all: Vec<(i64, u64)> = Vec::new();
            for (d, n) in deltas {
                // Mostly forward, sometimes far behind: late events up to 200 s old.
                let ts = (newest + d).max(0);
                newest = newest.max(ts);
                let held = w.add(ts.div_euclid(SEC), n);
                // The ring may only drop events that no supported query can need.
                prop_assert!(held || ts.div_euclid(SEC) <= newest.div_euclid(SEC) - (61 + slack as i64));
                all.push((ts, n));
                // The O(1) answer at the head agrees with the model after every step.
                let q = newest.div_euclid(SEC);
                let at_head = w.count_at(q);
                let bound: u64 = all.iter().filter(|(t, _)| t.div_euclid(SEC) >= q - 60 && t.div_euclid(SEC) <= q).map(|e| e.1).sum();
                prop_assert_eq!(at_head, bound, "at the head the window holds exactly its 61 buckets");
            }
            for p in probes {
                let t = newest + p;
                // Queries are supported from `slack` seconds behind the head onwards.
                prop_assume!(t.div_euclid(SEC) >= newest.div_euclid(SEC) - slack as i64);
                let got = w.count_at(t.div_euclid(SEC));
                let exact: u64 = all.iter().filter(|(ts, _)| *ts > t - 60 * SEC && *ts <= t).map(|e| e.1).sum();
                let lo = (t.div_euclid(SEC) - 60) * SEC;
                let hi = (t.div_euclid(SEC) + 1) * SEC;
                let bound: u64 = all.iter().filter(|(ts, _)| *ts >= lo && *ts < hi).map(|e| e.1).sum();
                prop_assert!(got >= exact, "undercount at {t}: got {got} < exact {exact}");
                prop_assert!(got <= bound, "overcount at {t}: got {got} > bound {bound}");
            }
        }

        /// The daily window (1 min buckets, 1441 of them) under the same model.
        #[test]
        fn daily_window_is_conservative(
            start in 1_700_000_000_000i64..1_800_000_000_000,
            deltas in prop::collection::vec((-240_000i64..=3_600_000, 1u64..4), 1..300),
            probes in prop::collection::vec(-240_000i64..=7_200_000, 1..20),
        ) {
            const MIN: i64 = 60_000;
            let mut w: Window<u32> = Window::new(1441, 5);
            let mut newest = start;
            let mut all: Vec<(i64, u64)> = Vec::new();
            for (d, n) in deltas {
                let ts = newest + d;
                newest = newest.max(ts);
                w.add(ts.div_euclid(MIN), n);
                all.push((ts, n));
            }
            for p in probes {
                let t = newest + p;
                prop_assume!(t.div_euclid(MIN) >= newest.div_euclid(MIN) - 5);
                let got = w.count_at(t.div_euclid(MIN));
                let exact: u64 = all.iter().filter(|(ts, _)| *ts > t - 1440 * MIN && *ts <= t).map(|e| e.1).sum();
                let lo = (t.div_euclid(MIN) - 1440) * MIN;
                let hi = (t.div_euclid(MIN) + 1) * MIN;
                let bound: u64 = all.iter().filter(|(ts, _)| *ts >= lo && *ts < hi).map(|e| e.1).sum();
                prop_assert!(got >= exact, "undercount at {t}: got {got} < exact {exact}");
                prop_assert!(got <= bound, "overcount at {t}: got {got} > bound {bound}");
            }
        }
    }
}
