//! A replica's copy of the batch records in the shared log (`[cluster]`, [`super::mirror`]),
//! kept beside the tracker and updated by the same follower at the same place in the log
//! (the entries' `k` field), so a snapshot of both is of one moment. The scheduler is built
//! from it, and is handed the changes other replicas make (its own it already holds).

use std::sync::{Arc, PoisonError};

use super::Live;
use super::mirror::{BatchMirror, Mirror};
use crate::store::{BatchChanges, BatchRecord, ItemRecord};

impl Live {
    fn mirror(&self) -> Option<std::sync::MutexGuard<'_, Mirror>> {
        self.durable
            .as_ref()
            .map(|d| d.mirror.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Starts the copy from recovered records (the shared snapshot's).
    pub fn seed_batches(&self, batches: Vec<BatchRecord>, items: Vec<ItemRecord>) {
        if let Some(mut m) = self.mirror() {
            m.take(&BatchChanges {
                batches,
                items,
                dropped: Vec::new(),
            });
        }
    }

    /// Keeps an entry's batch changes; hands them on unless this replica made them (`own`).
    pub(super) fn apply_batch_changes(&self, changes: &BatchChanges, own: bool) {
        if let Some(mut m) = self.mirror() {
            m.take(changes);
            if !own && let Some(hook) = &m.hook {
                hook.absorb(changes);
            }
        }
    }

    /// Replaces the whole copy with `all` (a snapshot's), telling the mirror of the
    /// difference (batches it had that `all` has not are dropped).
    pub(super) fn replace_batches(&self, mut all: BatchChanges) {
        if let Some(mut m) = self.mirror() {
            all.dropped = m
                .ids()
                .iter()
                .filter(|id| !all.batches.iter().any(|b| &&b.id == id))
                .cloned()
                .collect();
            let hook = m.hook.take();
            *m = Mirror::default();
            m.take(&all);
            if let Some(hook) = &hook {
                hook.absorb(&all);
            }
            m.hook = hook;
        }
    }

    /// Every batch record as of the last entry applied.
    pub(super) fn batch_records(&self) -> BatchChanges {
        self.mirror().map(|m| m.all()).unwrap_or_default()
    }

    /// Hands every batch record to `build` and tells what it builds of every later change
    /// another replica makes; nothing is applied in between.
    pub fn attach_batches<T: BatchMirror + 'static>(
        &self,
        build: impl FnOnce(Vec<BatchRecord>, Vec<ItemRecord>) -> Arc<T>,
    ) -> Arc<T> {
        match self.mirror() {
            Some(mut m) => {
                let all = m.all();
                let built = build(all.batches, all.items);
                m.hook = Some(built.clone());
                built
            }
            None => build(Vec::new(), Vec::new()),
        }
    }
}
