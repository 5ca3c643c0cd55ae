//! The store of a replica in a cluster: journal entries go to the shared log (every replica
//! applies them from there, its own included), everything else (outbox, batches, sources)
//! stays in the replica's embedded store for now.
//!
//! Snapshots are not kept: a replica rebuilds its tracker from the shared log. Recovery
//! therefore hands the tracker nothing (no snapshot, no journal) and the replica follows the
//! log from its start.

use tokio::runtime::Handle;

use super::lease::Leadership;
use super::log::SharedLog;
use crate::store::{Commit, OutboxUpdate, Recovered, StateStore, StoreError};

/// A [`StateStore`] whose journal is the shared log.
pub struct SharedStore {
    local: Box<dyn StateStore>,
    log: SharedLog,
    leadership: Leadership,
    runtime: Handle,
}

impl SharedStore {
    /// `local` for what stays on this replica; `log` for the journal; `leadership` to mark
    /// what this replica delivered while it leads; `runtime` runs the log's requests for the
    /// (synchronous) store writer.
    pub fn new(
        local: Box<dyn StateStore>,
        log: SharedLog,
        leadership: Leadership,
        runtime: Handle,
    ) -> SharedStore {
        SharedStore {
            local,
            log,
            leadership,
            runtime,
        }
    }
}

impl StateStore for SharedStore {
    fn recover(&mut self) -> Result<Recovered, StoreError> {
        let mut r = self.local.recover()?;
        // The tracker comes from the shared log, not from this replica's past.
        r.snapshot = None;
        r.journal_events = 0;
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
        let done: Vec<String> = c
            .outbox_updates
            .iter()
            .filter_map(|u| match u {
                OutboxUpdate::Done(id) => Some(id.clone()),
                OutboxUpdate::Retry { .. } => None,
            })
            .collect();
        if let Some(token) = self.leadership.token()
            && !done.is_empty()
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
