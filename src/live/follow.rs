//! A replica's side of the shared log (`[cluster]`): the entry it appends for the events it
//! takes in, and the loop that applies every entry of the log, in log order, to its own
//! tracker. A replica never applies its own events directly: the tracker's answers depend
//! on order (late events, bursts, which copy of a `request_id` counts), so every replica
//! applies the one order the log gives and all of them answer alike.
//!
//! An entry is a sealed journal entry (the SQLite journal's format 3): a clock note, then
//! the events. Its header's previous-commit field is 0: the log's ids order entries, and
//! the CRC still catches a damaged one. An entry may also carry the batch records its commit
//! changed (kept in this replica's copy, `batches`), or only those.

use super::journal::{BadEntry, each_record, open_journal, open_snapshot, seal_journal};
use super::recover::apply_record;
use super::*;
use crate::cluster::{ClusterError, EngineMark, EntryId, Leadership, LogReader, SharedLog};
use crate::store::BatchChanges;

/// Entries read from the log per request.
const READ_BATCH: usize = 512;
/// How long one read waits for a new entry before checking whether to stop.
const READ_WAIT: Duration = Duration::from_millis(500);
/// How often a replica notes in the shared engine how far it has applied the log.
const NOTE_EVERY: Duration = Duration::from_secs(1);
/// The leader snapshots its tracker into the shared engine after this many entries...
const SNAPSHOT_ENTRIES: u64 = 20_000;
/// The log is trimmed only behind replicas that noted their place this recently; one away
/// longer starts again from the snapshot when it is back.
const SEEN_WITHIN_MS: i64 = 10 * 60 * 1000;

/// A replica's chores beside applying the log: noting how far it got and, while it leads,
/// snapshotting its tracker into the shared engine and trimming the log behind the snapshot
/// and behind every replica seen lately, so the engine's memory follows the orgs' state, not
/// the number of events.
pub struct Upkeep {
    log: SharedLog,
    leadership: Leadership,
    config: Config,
    /// `[cluster] snapshot_interval`: a snapshot is due this long after the last one.
    every: Duration,
    noted: Option<Instant>,
    snapshotted: Instant,
    since: u64,
    /// The entry of the snapshot before the latest this replica stored: the log is trimmed
    /// no further, so a replica that has just restored the latest one (and not yet noted its
    /// place) finds every entry after it still there.
    previous: Option<EntryId>,
    /// The engine incarnation this replica's last snapshot (or its start) saw: another one
    /// means the engine lost its data, and the leader puts a snapshot back at once.
    incarnation: Option<u64>,
}

impl Upkeep {
    /// Chores for a replica on `log`, restoring snapshots with `config`'s settings.
    pub fn new(log: SharedLog, leadership: Leadership, config: &Config) -> Upkeep {
        Upkeep {
            log,
            leadership,
            config: config.clone(),
            every: Duration::from_millis(
                config
                    .cluster
                    .as_ref()
                    .map_or(60_000, |c| c.snapshot_interval_ms),
            ),
            noted: None,
            snapshotted: Instant::now(),
            since: 0,
            previous: None,
            incarnation: None,
        }
    }

    /// The shared log.
    pub fn log(&self) -> &SharedLog {
        &self.log
    }

    /// After entries up to `at` were applied (`n` of them): failures are logged, not
    /// returned (the next round tries again; applying goes on meanwhile).
    async fn after_apply(&mut self, live: &Live, at: EntryId, n: u64) {
        self.since += n;
        if self.noted.is_none_or(|t| t.elapsed() >= NOTE_EVERY) {
            if let Err(e) = self.log.note_applied(at, live.now_ms()).await {
                tracing::debug!(error = %e, "cannot note this replica's place in the shared log");
            }
            self.noted = Some(Instant::now());
        }
        let incarnation = live.engine().map_or(0, |m| m.incarnation);
        let lost = *self.incarnation.get_or_insert(incarnation) != incarnation;
        let due = lost
            || self.since >= SNAPSHOT_ENTRIES
            || (self.since > 0 && self.snapshotted.elapsed() >= self.every);
        if !due || !self.leadership.leads() {
            return;
        }
        let began = Instant::now();
        let Some(sealed) = live.sealed_snapshot() else {
            return;
        };
        let batches = live.batch_records().encode();
        if let Err(e) = self.log.store_snapshot(at, &sealed, &batches).await {
            tracing::warn!(error = %e, "cannot store a snapshot in the shared engine; trying again later");
            return;
        }
        self.since = 0;
        self.snapshotted = Instant::now();
        if lost {
            tracing::warn!(at = %at, incarnation, "the shared engine had lost its data: this leader's snapshot is in it again");
            self.incarnation = Some(incarnation);
        }
        let Some(previous) = self.previous.replace(at) else {
            return;
        };
        let now = live.now_ms();
        let behind = match self.log.positions().await {
            Ok(p) => p
                .into_iter()
                .filter(|(_, _, seen)| {
                    now - seen <= SEEN_WITHIN_MS && *seen <= now + SEEN_WITHIN_MS
                })
                .map(|(_, applied, _)| applied)
                .min()
                .map_or(previous, |m| m.min(previous)),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the replicas' places; not trimming");
                return;
            }
        };
        match self.log.trim(behind).await {
            Ok(trimmed) => tracing::debug!(
                at = %at,
                bytes = sealed.len(),
                trimmed,
                took_ms = began.elapsed().as_millis() as u64,
                "snapshot stored in the shared engine; log trimmed behind it"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot trim the shared log"),
        }
    }

    /// Whether entries after `after` were trimmed away (this replica was gone too long): then
    /// the tracker is reloaded from the snapshot and `after` moves to it.
    async fn close_gap(&self, live: &Live, after: &mut EntryId) -> Result<(), ClusterError> {
        let first = self.log.first_id().await?;
        if first == EntryId::ZERO || *after >= first {
            return Ok(());
        }
        let Some(snap) = self.log.snapshot().await? else {
            return Ok(());
        };
        let at = snap.at;
        if at <= *after {
            return Ok(());
        }
        let batches = match &snap.batches {
            Some(b) => Some(BatchChanges::decode(b).map_err(|why| {
                ClusterError::Reply(format!("the shared snapshot's batches: {why}"))
            })?),
            None => None,
        };
        let restored = open_snapshot(&snap.state)
            .map_err(|why| ClusterError::Reply(format!("the shared snapshot: {why}")))
            .and_then(|bytes| {
                Tracker::restore(&self.config, bytes)
                    .map_err(|e| ClusterError::Reply(format!("the shared snapshot: {e}")))
            })?;
        tracing::warn!(from = %after, to = %at, "entries this replica had not applied were trimmed from the shared log; continuing from the shared snapshot");
        live.lock().tracker = restored;
        if let Some(all) = batches {
            live.replace_batches(all);
        }
        *after = at;
        Ok(())
    }
}

impl Live {
    /// Whether this is a replica of a cluster (`[cluster]`): what it takes in is acknowledged
    /// only once the shared log confirms it.
    pub fn is_replica(&self) -> bool {
        self.shared
    }

    /// A replica: whether the shared log answers (writes and reads); `None` without
    /// `[cluster]`.
    pub fn cluster_connected(&self) -> Option<bool> {
        self.shared.then(|| self.healthy())
    }

    /// A replica: how many other replicas seen lately run a config that shapes answers
    /// differently; `None` without `[cluster]`.
    pub fn cluster_config_differs(&self) -> Option<u32> {
        self.shared.then(|| {
            self.durable
                .as_ref()
                .map_or(0, |d| d.config_differs.load(Ordering::Acquire))
        })
    }

    /// Notes how many other replicas run a different config.
    pub fn note_config_differs(&self, n: u32) {
        if let Some(d) = &self.durable {
            d.config_differs.store(n, Ordering::Release);
        }
    }

    /// A replica: the shared engine's cluster id and incarnation as this replica knows them.
    pub fn engine(&self) -> Option<EngineMark> {
        let d = self.durable.as_ref().filter(|_| self.shared)?;
        Some(EngineMark {
            id: d.engine[0].load(Ordering::Acquire),
            incarnation: d.engine[1].load(Ordering::Acquire),
        })
    }

    /// Notes the shared engine's cluster id and incarnation; another incarnation tells the
    /// file sources and the leader to put back what they hold.
    pub fn note_engine(&self, mark: EngineMark) {
        if let Some(d) = &self.durable {
            d.engine[0].store(mark.id, Ordering::Release);
            d.engine[1].store(mark.incarnation, Ordering::Release);
        }
    }

    /// A replica's follower notes whether the shared log can be read.
    pub(crate) fn note_log_readable(&self, ok: bool) {
        if let Some(d) = &self.durable
            && d.log_readable.swap(ok, Ordering::AcqRel) != ok
        {
            if ok {
                tracing::info!("the shared log can be read again");
            } else {
                tracing::error!("the shared log cannot be read; not ready until it can");
            }
        }
    }

    /// The tracker as a sealed snapshot, as the store writer makes them.
    fn sealed_snapshot(&self) -> Option<Vec<u8>> {
        match self.lock().tracker.encode_after(snapshot_buffer(0)) {
            Ok(s) => Some(seal_snapshot(s)),
            Err(e) => {
                tracing::error!(error = %e, "snapshot encoding failed");
                None
            }
        }
    }

    /// The log entry for `events` taken in at `now` (their missing `ts` set to `now`), led by
    /// a note of this replica's clock. Events that cannot be encoded are left out and counted
    /// as unencodable journal records, as in the SQLite journal.
    pub fn log_entry(&self, events: &mut [Event<'_>], now: i64) -> Vec<u8> {
        let mut pending = Pending::new(0);
        pending.record_taken_in(events, now);
        if let Some(d) = &self.durable {
            d.unencodable[JOURNAL].fetch_add(pending.unencodable[JOURNAL], Ordering::Relaxed);
        }
        let mut entry = pending.journal;
        seal_journal(&mut entry, 0);
        entry
    }

    /// Applies one log entry to the tracker, routing the notifications its transitions cause
    /// as [`Live::apply`] does; returns the records applied. A damaged entry is applied up to
    /// the first record that cannot be read, and is an error naming what was lost.
    pub fn apply_entry(&self, id: EntryId, entry: &[u8]) -> Result<u64, BadEntry> {
        let bad = |why: String| BadEntry { id, why };
        let (records, _) = open_journal(entry).map_err(bad)?;
        let mut out = Vec::new();
        let mut decisions = Vec::new();
        let (read, unreadable) = {
            let mut g = self.lock();
            let Inner { tracker, pending } = &mut *g;
            each_record(records, |record| {
                let from = out.len();
                if let Some(decided) = apply_record(tracker, &record, &mut out) {
                    decisions.push(decided);
                }
                let now = tracker.clock_ms();
                self.notify(pending, &out[from..], now);
            })
        };
        // Asks of this replica learn their verdicts (other replicas' asks wait nowhere here).
        if let (false, Some(d)) = (decisions.is_empty(), &self.durable) {
            d.decisions_waiting(|waiting| {
                for (lease, verdict) in decisions {
                    if let Some(tx) = waiting.remove(&lease) {
                        let _ = tx.send(verdict);
                    }
                }
            });
        }
        self.wake_writer();
        super::logged::log(&out);
        match unreadable {
            None => Ok(read),
            Some(left) => Err(bad(format!(
                "{read} records applied, the last {left} bytes cannot be decoded"
            ))),
        }
    }

    /// Applies the log after `after` as it grows, publishing the id of the last entry
    /// applied on `applied`, until `stop` turns true (checked at least every half second).
    /// A damaged entry is logged and skipped (every replica skips it alike); an engine that
    /// fails is the error returned, the caller reconnects and calls again from the last id.
    pub async fn follow(
        &self,
        reader: &mut LogReader,
        applied: &watch::Sender<EntryId>,
        stop: &watch::Receiver<bool>,
        upkeep: &mut Upkeep,
    ) -> Result<(), ClusterError> {
        let mut after = *applied.borrow();
        if let Err(e) = upkeep.close_gap(self, &mut after).await {
            self.note_log_readable(false);
            return Err(e);
        }
        applied.send_replace(after);
        while !*stop.borrow() {
            let entries = match reader.read_after(after, READ_BATCH, READ_WAIT).await {
                Ok(e) => e,
                Err(e) => {
                    self.note_log_readable(false);
                    return Err(e);
                }
            };
            self.note_log_readable(true);
            for e in &entries {
                if !e.bytes.is_empty()
                    && let Err(bad) = self.apply_entry(e.id, &e.bytes)
                {
                    tracing::error!(error = %bad, replica = %e.replica, "a shared log entry is damaged; what could not be read is lost");
                }
                if let Some(k) = &e.batches {
                    match BatchChanges::decode(k) {
                        Ok(changes) => {
                            self.apply_batch_changes(&changes, e.replica == upkeep.log.replica_id())
                        }
                        Err(why) => {
                            tracing::error!(id = %e.id, replica = %e.replica, error = %why, "a shared log entry's batch records cannot be read; they are lost")
                        }
                    }
                }
                after = e.id;
            }
            if !entries.is_empty() {
                applied.send_replace(after);
            }
            upkeep.after_apply(self, after, entries.len() as u64).await;
        }
        Ok(())
    }
}
