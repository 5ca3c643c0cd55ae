//! A replica's copy of the batch records in the shared log (`[cluster]`): the latest record
//! of every batch and item, as the log's entries carry them, and who is told of changes.
//! Records are opaque here: the scheduler reads them. [`super::batches`] keeps it in step
//! with the log.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::store::{BatchChanges, BatchRecord, ItemRecord};

/// What works with the batches on a replica (the scheduler): told of the changes other
/// replicas made, in log order.
pub trait BatchMirror: Send + Sync {
    /// Takes batch changes another replica made: each record replaces the one it had.
    fn absorb(&self, changes: &BatchChanges);
}

/// The records, and who is told of changes.
#[derive(Default)]
pub struct Mirror {
    /// Batch ids, oldest first.
    order: Vec<String>,
    batches: HashMap<String, BatchRecord>,
    items: BTreeMap<(String, u32), ItemRecord>,
    pub(super) hook: Option<Arc<dyn BatchMirror>>,
}

impl Mirror {
    pub(super) fn take(&mut self, changes: &BatchChanges) {
        for b in &changes.batches {
            if self.batches.insert(b.id.clone(), b.clone()).is_none() {
                self.order.push(b.id.clone());
            }
        }
        for i in &changes.items {
            self.items.insert((i.batch.clone(), i.index), i.clone());
        }
        if !changes.dropped.is_empty() {
            // One pass over the copy however many batches a prune forgets at once.
            for id in &changes.dropped {
                self.batches.remove(id);
            }
            self.order.retain(|o| !changes.dropped.contains(o));
            self.items.retain(|(b, _), _| !changes.dropped.contains(b));
        }
    }

    /// Batch ids, oldest first.
    pub(super) fn ids(&self) -> &[String] {
        &self.order
    }

    pub(super) fn all(&self) -> BatchChanges {
        BatchChanges {
            batches: self
                .order
                .iter()
                .filter_map(|id| self.batches.get(id).cloned())
                .collect(),
            items: self.items.values().cloned().collect(),
            dropped: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(id: &str, v: u8) -> BatchRecord {
        BatchRecord {
            id: id.into(),
            record: vec![v],
        }
    }

    fn item(b: &str, index: u32, v: u8) -> ItemRecord {
        ItemRecord {
            batch: b.into(),
            index,
            record: vec![v],
        }
    }

    #[test]
    fn the_latest_record_wins_and_dropped_batches_go_with_their_items() {
        let mut m = Mirror::default();
        m.take(&BatchChanges {
            batches: vec![batch("b2", 1), batch("b1", 1)],
            items: vec![item("b2", 1, 1), item("b2", 0, 1), item("b1", 0, 1)],
            dropped: vec![],
        });
        m.take(&BatchChanges {
            batches: vec![batch("b2", 2)],
            items: vec![item("b2", 0, 2)],
            dropped: vec![],
        });
        let all = m.all();
        assert_eq!(
            all.batches,
            vec![batch("b2", 2), batch("b1", 1)],
            "creation order"
        );
        assert_eq!(
            all.items,
            vec![item("b1", 0, 1), item("b2", 0, 2), item("b2", 1, 1)]
        );
        m.take(&BatchChanges {
            dropped: vec!["b2".into()],
            ..BatchChanges::default()
        });
        let all = m.all();
        assert_eq!(all.batches, vec![batch("b1", 1)]);
        assert_eq!(all.items, vec![item("b1", 0, 1)]);
    }
}
