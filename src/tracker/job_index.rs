//! The index from a job id's hash to its slot in [`super::jobs::Jobs`]: open addressing with
//! linear probing, whose cells never move while they are filed.
//!
//! A job knows its cell, so dropping it (the eviction of the oldest job at the cap, a finish,
//! a release) is one store of a tombstone: no probe, no load of the cell, which was long
//! untouched and so a cache miss (with hashbrown's table that miss was an eighth of the
//! applying thread's time in threaded replay). Tombstones are reused by later inserts on
//! their probe and swept by a rebuild, which [`JobIndex::needs_rebuild`] asks for once live
//! cells and tombstones fill three quarters of the table. It never compares ids: `matches`
//! does, from the slot a cell names.

/// A cell: empty, a tombstone, or a job's 32-bit hash (high half) and slot + 2 (low half).
const EMPTY: u64 = 0;
const TOMB: u64 = 1;

/// Cells of a new table (a power of two).
const MIN_CELLS: usize = 16;

/// Open-addressed cells naming job slots.
#[derive(Debug, Default)]
pub(super) struct JobIndex {
    cells: Vec<u64>,
    live: usize,
    tombs: usize,
}

impl JobIndex {
    /// An empty index sized for `jobs` jobs (no memory for none).
    pub(super) fn for_jobs(jobs: usize) -> Self {
        let cells = if jobs == 0 {
            Vec::new()
        } else {
            vec![EMPTY; (jobs * 4).next_power_of_two().max(MIN_CELLS)]
        };
        JobIndex {
            cells,
            live: 0,
            tombs: 0,
        }
    }

    /// Jobs filed.
    pub(super) fn len(&self) -> usize {
        self.live
    }

    /// True when nothing is filed.
    pub(super) fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// True when live cells and tombstones, with one more insert, would fill over three
    /// quarters of the cells (or there are none): the caller rebuilds, filing its jobs into
    /// [`JobIndex::for_jobs`]. So at least a quarter of the cells stay empty, and every probe
    /// ends.
    pub(super) fn needs_rebuild(&self) -> bool {
        (self.live + self.tombs + 1) * 4 > self.cells.len() * 3
    }

    fn mask(&self) -> usize {
        self.cells.len() - 1
    }

    /// The cell and slot of the job hashed `hash` for which `matches(slot)`.
    #[inline]
    pub(super) fn find(
        &self,
        hash: u32,
        mut matches: impl FnMut(u32) -> bool,
    ) -> Option<(u32, u32)> {
        if self.cells.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut at = hash as usize & mask;
        loop {
            let c = self.cells[at];
            if c == EMPTY {
                return None;
            }
            if c != TOMB && (c >> 32) as u32 == hash {
                let slot = (c as u32).wrapping_sub(2);
                if matches(slot) {
                    return Some((at as u32, slot));
                }
            }
            at = (at + 1) & mask;
        }
    }

    /// Files `slot` under `hash` (not filed yet; the caller rebuilt when
    /// [`JobIndex::needs_rebuild`] said so) and returns its cell.
    #[inline]
    pub(super) fn insert(&mut self, hash: u32, slot: u32) -> u32 {
        debug_assert!(
            self.live + self.tombs < self.cells.len(),
            "no free cell: rebuild first"
        );
        let mask = self.mask();
        let mut at = hash as usize & mask;
        loop {
            let c = self.cells[at];
            if c == EMPTY || c == TOMB {
                if c == TOMB {
                    self.tombs -= 1;
                }
                self.cells[at] = u64::from(hash) << 32 | u64::from(slot + 2);
                self.live += 1;
                return at as u32;
            }
            at = (at + 1) & mask;
        }
    }

    /// Drops the job filed in `cell` (as [`JobIndex::insert`] or [`JobIndex::find`] gave it,
    /// since the last rebuild). One store, the cell not read: a read would wait for the miss
    /// this index exists to avoid.
    #[inline]
    pub(super) fn remove(&mut self, cell: u32) {
        debug_assert!(
            (cell as usize) < self.cells.len(),
            "cell {cell} out of range"
        );
        if let Some(c) = self.cells.get_mut(cell as usize) {
            debug_assert!(*c > TOMB, "cell {cell} holds no job");
            *c = TOMB;
            self.live -= 1;
            self.tombs += 1;
        }
    }

    /// Fetches the first cell a [`JobIndex::find`] or [`JobIndex::insert`] of `hash` reads.
    #[inline]
    pub(super) fn prefetch_probe(&self, hash: u32) {
        // No cells: the mask is 0 and `prefetch` finds no cell 0.
        self.prefetch(hash & self.cells.len().saturating_sub(1) as u32);
    }

    /// True before the first job is filed (no cells yet).
    pub(super) fn is_unsized(&self) -> bool {
        self.cells.is_empty()
    }

    /// Fetches `cell` into the cache ahead of its [`JobIndex::remove`].
    #[inline]
    pub(super) fn prefetch(&self, cell: u32) {
        if let Some(c) = self.cells.get(cell as usize) {
            crate::model::prefetch(c);
        }
    }

    /// Cells held.
    #[cfg(test)]
    pub(super) fn cells(&self) -> usize {
        self.cells.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u32, u8),
        Remove(u8),
    }

    proptest! {
        /// Any sequence of inserts and removals (with rebuilds when asked, as jobs does)
        /// finds exactly what a map holds, colliding hashes included.
        #[test]
        fn the_index_finds_what_a_map_holds(ops in prop::collection::vec(prop_oneof![
            3 => (0u32..8, any::<u8>()).prop_map(|(h, k)| Op::Insert(h, k)),
            2 => any::<u8>().prop_map(Op::Remove),
        ], 0..300)) {
            // key → (hash, slot); slots are keys here, cells looked up by find.
            let mut model: HashMap<u8, u32> = HashMap::new();
            let mut ix = JobIndex::for_jobs(0);
            for op in ops {
                match op {
                    Op::Insert(h, k) => {
                        if model.contains_key(&k) {
                            continue;
                        }
                        if ix.needs_rebuild() {
                            let mut fresh = JobIndex::for_jobs(model.len() + 1);
                            for (&key, &hash) in &model {
                                fresh.insert(hash, u32::from(key));
                            }
                            ix = fresh;
                        }
                        ix.insert(h, u32::from(k));
                        model.insert(k, h);
                    }
                    Op::Remove(k) => {
                        if let Some(h) = model.remove(&k)
                            && let Some((cell, slot)) = ix.find(h, |s| s == u32::from(k))
                        {
                            prop_assert_eq!(slot, u32::from(k));
                            ix.remove(cell);
                        }
                    }
                }
                prop_assert_eq!(ix.len(), model.len());
                prop_assert!(ix.live + ix.tombs < ix.cells().max(1));
                for k in 0..=255u8 {
                    let want = model.get(&k).copied();
                    let got = want.map_or_else(
                        || (0..8).find_map(|h| ix.find(h, |s| s == u32::from(k))),
                        |h| ix.find(h, |s| s == u32::from(k)),
                    );
                    prop_assert_eq!(got.map(|(_, s)| s), want.map(|_| u32::from(k)), "key {}", k);
                }
            }
        }
    }
}
