//! The store of a replica in a cluster: journal entries go to the shared log (every replica
//! applies them from there, its own included), and with each entry, in the same `MULTI`, the
//! file checkpoints its lines reached (per replica, in the shared engine: a replica killed at
//! any moment resumes its files where the log has their lines, no line lost or counted twice).
//! Batch records go into the same entry (its `k` field): every replica keeps the latest of
//! each, and the leader's snapshot holds them all. The outbox stays in the replica's
//! embedded store (every replica computes the same notifications from the log).
//!
//! The tracker comes from the shared engine: recovery hands over the leader's latest snapshot
//! there (none of this replica's own), and the replica follows the log from the entry that
//! snapshot was taken after ([`SharedStore::new`]'s `from`). Its own snapshots are not kept.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::runtime::Handle;

use super::lease::Leadership;
use super::log::SharedLog;
use super::log::{ClusterError, EntryId, FileMarks};
use crate::store::{
    BatchChanges, Checkpoint, Commit, OutboxUpdate, Recovered, Snapshot, StateStore, StoreError,
};

/// A [`StateStore`] whose journal is the shared log.
pub struct SharedStore {
    local: Box<dyn StateStore>,
    log: SharedLog,
    leadership: Leadership,
    runtime: Handle,
    from: Arc<Mutex<EntryId>>,
    /// The engine lost its data since this replica last started: the file checkpoints kept
    /// in the local store may stand in for those it lost.
    after_loss: bool,
    /// `run --recover`: a shared snapshot that cannot be read is moved aside, not refused.
    salvage: bool,
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
            after_loss: false,
            salvage: false,
        }
    }

    /// `run --recover`: a shared snapshot that cannot be read is moved aside (kept under
    /// another key) and recovery goes on without it.
    pub fn salvaging(mut self, salvage: bool) -> SharedStore {
        self.salvage = salvage;
        self
    }

    /// Notes that the engine lost its data since this replica last started (the cluster id's
    /// incarnation changed): recovery may take the file checkpoints from the local copy.
    pub fn after_engine_loss(mut self, lost: bool) -> SharedStore {
        self.after_loss = lost;
        self
    }

    /// After an engine loss: when the engine holds nothing of this replica's sources but the
    /// local store does, and the engine holds a snapshot again (the running replicas put the
    /// counts back), the local copy is what this replica's files had reached; it is put back
    /// into the engine and resumed from. Without a snapshot the counts are gone, and the
    /// sources read their files again to count them anew.
    fn checkpoints_after_loss(
        &self,
        r: &mut Recovered,
        local: (Vec<Checkpoint>, Vec<String>),
        snapshot_there: bool,
    ) -> Result<(), StoreError> {
        let (checkpoints, started) = local;
        let engine_has_none = r.checkpoints.is_empty() && r.started_sources.is_empty();
        if !self.after_loss || !engine_has_none || (checkpoints.is_empty() && started.is_empty()) {
            return Ok(());
        }
        if !snapshot_there {
            tracing::error!(
                files = checkpoints.len(),
                "the shared engine lost its data and holds no snapshot: the counts are gone, so this replica's file sources read their files again from read_from"
            );
            return Ok(());
        }
        tracing::warn!(files = checkpoints.len(), key = %self.log.checkpoints_key(), "the shared engine lost this replica's file checkpoints (it lost its data; the running replicas put the counts back): resuming from the copy in the local store, and putting it back");
        let marks = FileMarks {
            set: checkpoints
                .iter()
                .map(|cp| (field(&cp.source, &cp.file), record(cp)))
                .collect(),
            forget: Vec::new(),
            started: started.clone(),
        };
        self.runtime
            .block_on(self.log.mark_files(&marks))
            .map_err(|e| StoreError::Shared(e.to_string()))?;
        r.checkpoints = checkpoints;
        r.started_sources = started;
        Ok(())
    }
}

impl StateStore for SharedStore {
    fn recover(&mut self) -> Result<Recovered, StoreError> {
        let mut r = self.local.recover()?;
        // The tracker and the files' checkpoints come from the shared engine, not from this
        // replica's past.
        r.journal_events = 0;
        let shared = |e: ClusterError| StoreError::Shared(e.to_string());
        let local = (
            std::mem::take(&mut r.checkpoints),
            std::mem::take(&mut r.started_sources),
        );
        r.checkpoints = self
            .runtime
            .block_on(stored_checkpoints(&self.log))
            .map_err(shared)?;
        r.started_sources = self
            .runtime
            .block_on(self.log.started_sources())
            .map_err(shared)?;
        // So are the batches: those of the snapshot, then the log's changes after it.
        r.batches = Vec::new();
        r.batch_items = Vec::new();
        let read = match self.runtime.block_on(self.log.snapshot()) {
            Err(e) if e.is_unreachable() => return Err(StoreError::Shared(e.to_string())),
            read => read.map_err(|e| e.to_string()).and_then(|snap| match snap {
                Some(snap) => {
                    let all = match &snap.batches {
                        Some(bytes) => Some(
                            BatchChanges::decode(bytes)
                                .map_err(|why| format!("its batches do not read: {why}"))?,
                        ),
                        None => None,
                    };
                    Ok(Some((snap, all)))
                }
                None => Ok(None),
            }),
        };
        r.snapshot = match read {
            Ok(Some((snap, all))) => {
                *self.from.lock().unwrap_or_else(PoisonError::into_inner) = snap.at;
                if let Some(all) = all {
                    r.batches = all.batches;
                    r.batch_items = all.items;
                }
                Some(Snapshot {
                    seq: 0,
                    state: snap.state,
                })
            }
            Ok(None) => None,
            Err(why) if self.salvage => {
                let copy = self
                    .runtime
                    .block_on(self.log.set_snapshot_aside())
                    .map_err(|e| StoreError::Shared(e.to_string()))?;
                tracing::error!(key = %self.log.snapshot_key(), %copy, "run --recover: the shared snapshot cannot be read ({why}); moved aside, starting from the log after it: every count before it is lost until the leader's next snapshot");
                None
            }
            Err(why) => return Err(self.damaged(why)),
        };
        let snapshot_there = r.snapshot.is_some();
        self.checkpoints_after_loss(&mut r, local, snapshot_there)?;
        for source in &r.started_sources {
            if !r.checkpoints.iter().any(|c| &c.source == source) {
                tracing::warn!(source, key = %self.log.checkpoints_key(), "this file source ran before, but the shared engine holds no checkpoint of any of its files: if it had files then (and the key was deleted), they are read again from the start and their lines count again");
            }
        }
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
        let shared = |e: ClusterError| StoreError::Shared(e.to_string());
        let marks = FileMarks {
            set: c
                .checkpoints
                .iter()
                .map(|cp| (field(&cp.source, &cp.file), record(cp)))
                .collect(),
            forget: c.forget.iter().map(|f| field(&f.source, &f.file)).collect(),
            started: c.started_sources.to_vec(),
        };
        let batches = BatchChanges {
            batches: c.batches.to_vec(),
            items: c.batch_items.to_vec(),
            dropped: c.batches_dropped.to_vec(),
        };
        let has_events = c.events > 0 && !c.journal.is_empty();
        if has_events || !batches.is_empty() {
            let journal = if has_events { c.journal } else { &[] };
            let k = (!batches.is_empty()).then(|| batches.encode());
            self.runtime
                .block_on(self.log.append_with(journal, k.as_deref(), &marks))
                .map_err(shared)?;
        } else {
            self.runtime
                .block_on(self.log.mark_files(&marks))
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
        // The local store keeps a copy of the checkpoints the engine now holds: what a
        // replica resumes from should the engine lose its data while it is down.
        self.local.commit(&Commit {
            journal: &[],
            events: 0,
            snapshot: None,
            batches: &[],
            batch_items: &[],
            batches_dropped: &[],
            ..*c
        })
    }

    fn location(&self) -> String {
        format!(
            "the shared engine (Redis key {}) and {}",
            self.log.snapshot_key(),
            self.local.location()
        )
    }

    /// Only the snapshot is read from the engine at recovery, so only it can be damaged.
    fn damaged(&self, why: String) -> StoreError {
        StoreError::SharedDamaged {
            key: self.log.snapshot_key(),
            why,
        }
    }

    fn keep_copy(&mut self) -> Result<String, StoreError> {
        self.runtime
            .block_on(self.log.keep_snapshot_copy())
            .map_err(|e| StoreError::Shared(e.to_string()))
    }
}

/// The field a file's checkpoint is stored under: `source` and file identity as a JSON pair
/// (source names may hold any character).
fn field(source: &str, file: &str) -> String {
    serde_json::json!([source, file]).to_string()
}

/// A checkpoint as stored: JSON, readable with `redis-cli HGETALL`.
fn record(cp: &Checkpoint) -> Vec<u8> {
    // A struct of strings and integers always serializes.
    serde_json::to_vec(cp).unwrap_or_default()
}

/// This replica's checkpoints, as the shared engine holds them. A record that does not read
/// is left out, with a warning (its file is then read as a new one).
pub async fn stored_checkpoints(log: &SharedLog) -> Result<Vec<Checkpoint>, ClusterError> {
    Ok(log
        .checkpoints()
        .await?
        .into_iter()
        .filter_map(|(file, bytes)| match serde_json::from_slice(&bytes) {
            Ok(cp) => Some(cp),
            Err(e) => {
                tracing::warn!(file, error = %e, "a stored file checkpoint does not read; ignoring it");
                None
            }
        })
        .collect())
}
