//! Which orgs the clock may have work for: a bit per org, set whenever the org changes and
//! cleared once a tick finds it has nothing the clock acts on ([`super::org::Org`]'s
//! `needs_tick`), so a tick visits those orgs, in order, rather than every org.
//!
//! Whether an org needs the clock (jobs in flight, an open burst, an alert active or arming,
//! an upstream report to judge again) depends on its state alone, never on the time, and the
//! state changes only where the tracker changes the org, which sets its bit. So an org whose
//! bit is clear does not need the clock, and skipping it changes nothing. Replay ticks every
//! second of event time: walking 10 000 orgs on every tick was 83 % of a day of the scale
//! scenario's traffic, most of it reading orgs that needed nothing.
//!
//! Must never: clear the bit of an org that still needs the clock.

/// A bit per org index.
#[derive(Debug, Default, Clone)]
pub(super) struct Ticking {
    words: Vec<u64>,
}

impl Ticking {
    /// Org `i` changed: the next tick looks at it.
    #[inline]
    pub(super) fn mark(&mut self, i: usize) {
        let w = i / 64;
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        self.words[w] |= 1 << (i % 64);
    }

    /// Every org below `n` changed (a restore).
    pub(super) fn mark_all(&mut self, n: usize) {
        for i in 0..n {
            self.mark(i);
        }
    }

    /// Whether org `i` is looked at by the next tick.
    pub(super) fn is_marked(&self, i: usize) -> bool {
        self.words
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Calls `visit` for each marked org, in ascending order, and clears the mark of each
    /// for which it returns false (the org has nothing left for the clock).
    pub(super) fn visit(&mut self, mut visit: impl FnMut(usize) -> bool) {
        for (w, word) in self.words.iter_mut().enumerate() {
            let mut bits = *word;
            while bits != 0 {
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if !visit(w * 64 + b) {
                    *word &= !(1 << b);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        /// Against a sorted set: marks, visits in order, and clears exactly what a visit
        /// let go.
        #[test]
        fn ticking_is_a_sorted_set(ops in prop::collection::vec((0usize..300, any::<bool>()), 1..200)) {
            let mut t = Ticking::default();
            let mut model = BTreeSet::new();
            for (i, visit) in ops {
                if visit {
                    let mut seen = Vec::new();
                    // Let go of every org whose index is a multiple of `i % 7 + 2`.
                    let keep = |o: usize| !o.is_multiple_of(i % 7 + 2);
                    t.visit(|o| {
                        seen.push(o);
                        keep(o)
                    });
                    prop_assert_eq!(&seen, &model.iter().copied().collect::<Vec<_>>());
                    model.retain(|&o| keep(o));
                } else {
                    t.mark(i);
                    model.insert(i);
                }
                for o in 0..300 {
                    prop_assert_eq!(t.is_marked(o), model.contains(&o));
                }
            }
        }
    }
}
