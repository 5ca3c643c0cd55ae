//! The store of a replica in a cluster: journal entries go to the shared log (every replica
//! applies them from there, its own included), everything else (outbox, batches, sources)
//! stays in the replica's embedded store for now.
//!
//! The tracker comes from the shared engine: recovery hands over the leader's latest snapshot
//! there (none of this replica's own), and the replica follows the log from the entry that
//! snapshot was taken after ([`SharedStore::new`]'s `from`). Its own snapshots are not kept.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::runtime::Handle;

use super::lease::Leadership;
use super::log::EntryId;
use super::log::SharedLog;
use crate::store::{Commit, OutboxUpdate, Recovered, Snapshot, StateStore, StoreError};

/// A [`StateStore`] whose journal is the shared log.
pub struct SharedStore {
    local: Box<dyn StateStore>,
    log: SharedLog,
    leadership: Leadership,
    runtime: Handle,
    from: Arc<Mutex<EntryId>>,
}

impl SharedStore {
    /// `local` for what stays on this replica; `log` for the journal; `leadership` to mark
    /// what this replica delivered while it leads; `runtime` runs the log's requests for the
    /// (synchronous) store writer; `from` is set, at recovery, to the entry the snapshot
    /// handed over was taken after (the one to follow the log from).
    pub fn new(
        local: Box<dyn StateStore>,
        log: SharedLog,
        leadership: Leadership,
        runtime: Handle,
        from: Arc<Mutex<EntryId>>,
    ) -> SharedStore {
        SharedStore {
            local,
            log,
            leadership,
            runtime,
            from,
        }
    }
}

impl StateStore for SharedStore {
    fn recover(&mut self) -> Result<Recovered, StoreError> {
        let mut r = self.local.recover()?;
        // The tracker comes from the shared engine, not from this replica's past.
        r.journal_events = 0;
        r.snapshot = match self.runtime.block_on(self.log.snapshot()) {
            Ok(Some((at, state))) => {
                *self.from.lock().unwrap_or_else(PoisonError::into_inner) = at;
                Some(Snapshot { seq: 0, state })
            }
            Ok(None) => None,
            Err(e) => return Err(StoreError::Shared(e.to_string())),
        };
        Ok(r)
    }

    fn journal_after(
        &mut self,
        _seq: u64,
        _f: &mut dyn FnMut(u64, &[u8]),
    ) -> Result<(), StoreError> {
        Ok(())
    }

    fn commit(&mut self, c: &Commit<'_>) -> Result<(), StoreError> {
        let shared = |e: super::log::ClusterError| StoreError::Shared(e.to_string());
        if c.events > 0 && !c.journal.is_empty() {
            self.runtime
                .block_on(self.log.append(c.journal, None))
                .map_err(shared)?;
        }
        // What leaves the leader's outbox is marked first, so the others drop it from theirs
        // and no successor sends it again.
        if let Some(token) = self.leadership.token() {
            let done: Vec<String> = c
                .outbox_updates
                .iter()
                .filter_map(|u| match u {
                    OutboxUpdate::Done(id) => Some(id.clone()),
                    OutboxUpdate::Retry { .. } => None,
                })
                .collect();
            if !done.is_empty()
                && !self
                    .runtime
                    .block_on(self.log.mark_delivered(token, &done))
                    .map_err(shared)?
            {
                tracing::warn!(
                    notifications = done.len(),
                    "this replica lost the lead while delivering; its last deliveries may be sent again by the new leader"
                );
            }
        }
        self.local.commit(&Commit {
            journal: &[],
            events: 0,
            snapshot: None,
            ..*c
        })
    }

    fn location(&self) -> String {
        format!("{:?} and {}", self.log, self.local.location())
    }

    fn keep_copy(&mut self) -> Result<String, StoreError> {
        self.local.keep_copy()
    }
}
