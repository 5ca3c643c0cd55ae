//! The dense window: a ring of `width + slack` slots, one per bucket. It was the window until
//! memory had to follow activity; it stays as the layout older snapshots hold (read and
//! converted by `Window::from_dense`) and, in tests, as the straightforward model the
//! compact window is checked against.

use super::slot::Slot;

/// A ring of buckets with a running total (the stored layout of snapshot formats up to 3).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Dense<S: Slot> {
    /// Ring of `width + slack` buckets; bucket `b` lives at `b mod len`.
    pub(super) slots: Box<[S]>,
    /// Newest bucket held; the ring covers `head − len + 1 ..= head`.
    pub(super) head: i64,
    /// Sum of every slot. Sums are kept in 128 bits so that slots near their maximum never
    /// overflow them; answers are clamped to `i64::MAX`, the most a gauge or a signed 64-bit
    /// JSON reader holds (a token count that large means nothing more anyway).
    pub(super) total: u128,
    /// Sum of the window ending at the head, so the common query (at the head) is O(1).
    pub(super) head_sum: u128,
    /// Buckets in one window (61 for rpm: the current second and the 60 before).
    pub(super) width: i64,
}

// The queries are the model the compact window is tested against; outside tests only the
// conversion is used.
#[cfg_attr(not(test), allow(dead_code))]
impl<S: Slot> Dense<S> {
    /// A window of `width` buckets that can still be queried `slack` buckets behind its head.
    pub fn new(width: usize, slack: usize) -> Self {
        Dense {
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

    /// Keeps at least `span` buckets from now on (the model of `Window::hold_at_least`):
    /// what the ring holds stays, the buckets it gains are empty.
    pub fn hold_at_least(&mut self, span: usize) {
        if span as i64 <= self.len() {
            return;
        }
        let mut slots = vec![S::default(); span].into_boxed_slice();
        if self.head != i64::MIN {
            for b in self.ring_lo()..=self.head {
                slots[b.rem_euclid(span as i64) as usize] = self.slot(b);
            }
        }
        self.slots = slots;
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
    /// head), each as [`Dense::count_at`] answers it: the peak that a late event, counted at
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
