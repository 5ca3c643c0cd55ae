//! Live state shared by the daemon's tasks: the tracker, the clock, the journal of what changed
//! it waiting for the store, and the notifications its transitions caused.
//!
//! Every change happens under one `std::sync::Mutex`, together with appending the change to
//! the pending journal batch (events and clock ticks, in the order applied), noting the file
//! checkpoints the events reached, and queueing a notification per channel for each
//! transition. The store writer takes that batch (and, now and then, a snapshot) in the same
//! critical section, so what it commits is always a consistent cut: counts and offsets never
//! drift apart, a notification is stored with the transition that caused it, and replaying
//! the journal after a crash reproduces the state exactly (so no transition is met twice).
//! Critical sections are short and CPU-only and never await; large batches are applied from
//! `spawn_blocking` or a source's own thread.
//!
//! A replica of a cluster (`[cluster]`) changes its tracker only in [`follow`]: what comes in
//! is journaled, and the journal goes to the shared log; every entry of the log, this
//! replica's own included, is applied in the log's order, so all replicas hold one state.

pub mod admit;
mod alerting;
pub mod batches;
pub mod follow;
mod journal;
mod logged;
pub mod mirror;
mod recover;

pub use journal::BadEntry;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::clock::Clock;
use crate::config::{ChannelConfig, Config};
use crate::detect::Transition;
use crate::events::Event;
use crate::store::{
    BatchRecord, Checkpoint, Commit, FileRef, ItemRecord, OutboxEntry, OutboxUpdate, StateStore,
};
use crate::tracker::{OrgSnapshot, Tracker, View};
use journal::{
    JOURNAL_FORMAT, JOURNAL_HEADER, RecordRef, seal_journal, seal_snapshot, snapshot_buffer,
};

/// A snapshot is taken once this many records were journaled since the last one...
const SNAPSHOT_EVENTS: u64 = 500_000;
/// ...or this long after the last one, if anything changed.
const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(300);
/// Largest snapshot stored: under SQLite's default limit on one value (1 000 000 000 bytes).
const MAX_SNAPSHOT_BYTES: usize = 900_000_000;
/// Past this much journal waiting for the store, intake pauses (HTTP answers 429).
pub const MAX_PENDING_BYTES: usize = 64 * 1024 * 1024;
/// Orgs snapshotted per hold of the lock by [`Live::each_org_snapshot`].
const SNAPSHOT_SLICE: usize = 256;
/// The writer sleeps at most this long when idle (it is woken on new work).
const IDLE: Duration = Duration::from_millis(200);
/// Kinds of record counted when they cannot be encoded (the `record` label of
/// `ratewarden_store_record_errors_total{op="encode"}`): journal records, snapshots and
/// notifications. Batch records are counted where they are made (`scheduler`).
pub const UNENCODABLE: [&str; 3] = ["journal", "snapshot", "notification"];
const JOURNAL: usize = 0;
const SNAPSHOT: usize = 1;
const NOTIFICATION: usize = 2;

/// Changes since the last commit, waiting for the store.
#[derive(Debug, Default)]
struct Pending {
    /// Sequence number this batch will be committed as.
    seq: u64,
    journal: Vec<u8>,
    records: u64,
    checkpoints: BTreeMap<(String, String), Checkpoint>,
    forget: Vec<FileRef>,
    started: Vec<String>,
    outbox_new: Vec<OutboxEntry>,
    outbox_updates: Vec<OutboxUpdate>,
    /// Journal records and notifications that could not be encoded (logged as they failed).
    unencodable: [u64; UNENCODABLE.len()],
    batches: Vec<BatchRecord>,
    batch_items: Vec<ItemRecord>,
    batches_dropped: Vec<String>,
}

impl Pending {
    fn new(seq: u64) -> Pending {
        Pending {
            seq,
            ..Pending::default()
        }
    }

    fn is_empty(&self) -> bool {
        self.records == 0
            && self.checkpoints.is_empty()
            && self.forget.is_empty()
            && self.started.is_empty()
            && self.outbox_new.is_empty()
            && self.outbox_updates.is_empty()
            && self.batches.is_empty()
            && self.batch_items.is_empty()
            && self.batches_dropped.is_empty()
    }

    fn record(&mut self, r: &RecordRef<'_, '_>) {
        if self.journal.is_empty() {
            // The rest of the header is filled in at commit (`seal_journal`).
            self.journal.push(JOURNAL_FORMAT);
            self.journal.extend_from_slice(&[0; JOURNAL_HEADER - 1]);
        }
        // Encoding into a Vec only fails on a serde bug; the change itself still applies. The
        // record's partial bytes are cut off, so a failure loses that record only (logged),
        // never the entry it would have joined.
        let before = self.journal.len();
        match postcard::to_io(r, &mut self.journal) {
            Ok(_) => self.records += 1,
            Err(e) => {
                self.journal.truncate(before);
                self.unencodable[JOURNAL] += 1;
                tracing::error!(error = %e, "a journal record cannot be encoded; it is not journaled")
            }
        }
    }

    /// What a replica took in at `now`: a note of its clock, then `events` (their missing
    /// `ts` set to `now`), for the shared log.
    fn record_taken_in(&mut self, events: &mut [Event<'_>], now: i64) {
        self.record(&RecordRef::Clock(now));
        for ev in events.iter_mut() {
            ev.ts_ms.get_or_insert(now);
            self.record(&RecordRef::Event(ev));
        }
    }

    /// `self` (older, failed to commit) followed by `newer`.
    fn then(mut self, newer: Pending) -> Pending {
        self.seq = newer.seq;
        match (self.journal.is_empty(), newer.journal.get(JOURNAL_HEADER..)) {
            (true, _) => self.journal = newer.journal,
            (false, Some(records)) => self.journal.extend_from_slice(records),
            (false, None) => {}
        }
        self.records += newer.records;
        self.checkpoints.extend(newer.checkpoints);
        self.forget.extend(newer.forget);
        self.started.extend(newer.started);
        self.outbox_new.extend(newer.outbox_new);
        self.outbox_updates.extend(newer.outbox_updates);
        // The older batch's were counted when it was taken for its commit.
        self.unencodable = newer.unencodable;
        self.batches.extend(newer.batches);
        self.batch_items.extend(newer.batch_items);
        self.batches_dropped.extend(newer.batches_dropped);
        self
    }
}

struct Inner {
    tracker: Tracker,
    pending: Pending,
}

/// State shared with the writer thread.
struct Durable {
    /// Highest sequence number committed.
    committed: watch::Sender<u64>,
    /// The writer, to wake it.
    writer: Mutex<Option<std::thread::Thread>>,
    stop: AtomicBool,
    /// False after a failed commit until one succeeds.
    healthy: AtomicBool,
    /// Commits that failed (each is retried).
    failures: std::sync::atomic::AtomicU64,
    /// Records that could not be encoded, by [`UNENCODABLE`] kind.
    unencodable: [std::sync::atomic::AtomicU64; UNENCODABLE.len()],
    /// A replica: false while the shared log cannot be read (set by [`Live::follow`]).
    log_readable: AtomicBool,
    /// A replica: other replicas seen lately whose config differs from this one's.
    config_differs: std::sync::atomic::AtomicU32,
    /// A replica: the shared engine's cluster id and incarnation ([`crate::cluster::EngineMark`]);
    /// a new incarnation means the engine lost its data and what each replica holds is put back.
    engine: [std::sync::atomic::AtomicU64; 2],
    /// A replica: its copy of the shared log's batch records.
    mirror: Mutex<mirror::Mirror>,
    /// A replica: commits whose events the shared log did not take, as `(after, through)`
    /// ranges of seqs (the newest few); their requests are answered "not stored".
    dropped: Mutex<std::collections::VecDeque<(u64, u64)>>,
    /// A replica: asks journaled by this replica and waiting for the shared log to decide
    /// them, by lease.
    decisions: Mutex<
        std::collections::HashMap<Box<str>, tokio::sync::oneshot::Sender<crate::tracker::Verdict>>,
    >,
    /// Notification channels, for routing transitions.
    channels: Vec<ChannelConfig>,
    /// Where committed notifications go for delivery.
    delivery: Option<mpsc::UnboundedSender<OutboxEntry>>,
}

/// The tracker and its clock, shared by HTTP handlers, sources, the ticker and `/metrics`.
#[derive(Clone)]
pub struct Live {
    inner: Arc<Mutex<Inner>>,
    clock: Arc<dyn Clock>,
    durable: Option<Arc<Durable>>,
    /// A replica of a cluster: what comes in is only journaled (to the shared log); the
    /// tracker changes when the log is applied ([`Live::follow`]), in the log's order.
    shared: bool,
    /// Admission asks of each org waiting in this process's queue (the batch dispatcher
    /// asks only while none wait: it comes behind them).
    asks_waiting: Arc<Mutex<std::collections::HashMap<Box<str>, usize>>>,
}

/// Why events were not made durable.
#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    /// The store did not commit in time.
    #[error("the store did not confirm the write within {0:?}")]
    Timeout(Duration),
    /// The writer has stopped.
    #[error("the store writer has stopped")]
    Stopped,
    /// A replica: the shared log did not confirm the events (they may yet be in it: an append
    /// that timed out, or one short of `min_replicas_ack`).
    #[error("the shared log did not confirm the events (is Redis reachable?)")]
    NotStored,
}

impl Durable {
    /// Runs `f` on the asks waiting for a decision (a short, CPU-only section).
    fn decisions_waiting<T>(
        &self,
        f: impl FnOnce(
            &mut std::collections::HashMap<
                Box<str>,
                tokio::sync::oneshot::Sender<crate::tracker::Verdict>,
            >,
        ) -> T,
    ) -> T {
        f(&mut self
            .decisions
            .lock()
            .unwrap_or_else(PoisonError::into_inner))
    }
}

/// Owns the store writer thread; [`Writer::shutdown`] flushes and joins it.
pub struct Writer {
    handle: Option<JoinHandle<()>>,
    durable: Arc<Durable>,
}

/// Why start-up recovery failed.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The snapshot was written by a newer ratewarden (never dropped, even by `--recover`).
    #[error("{0}; run the ratewarden that wrote it, or a newer one")]
    Snapshot(crate::tracker::snapshot::RestoreError),
    /// Journal entries were written by a newer ratewarden (never dropped, even by
    /// `--recover`).
    #[error("journal entry {seq}: {why}; run the ratewarden that wrote it, or a newer one")]
    Journal {
        /// The first such entry's commit.
        seq: u64,
        /// What its format says.
        why: String,
    },
    /// The writer thread could not start.
    #[error("cannot start the store writer: {0}")]
    Thread(#[from] std::io::Error),
}

/// What recovery found besides the tracker state.
#[derive(Debug, Default)]
pub struct Recovery {
    /// File checkpoints, for the sources.
    pub checkpoints: Vec<Checkpoint>,
    /// Sources that have run before.
    pub started_sources: Vec<String>,
    /// Notifications not yet delivered, oldest first.
    pub outbox: Vec<OutboxEntry>,
    /// Stored batches, for the scheduler.
    pub batches: Vec<BatchRecord>,
    /// Stored batch items.
    pub batch_items: Vec<ItemRecord>,
    /// Journal records replayed.
    pub replayed: u64,
    /// Whether a snapshot was loaded.
    pub from_snapshot: bool,
}

impl Live {
    /// State kept in memory only (replay, tests): nothing is journaled or delivered.
    pub fn in_memory(tracker: Tracker, clock: Arc<dyn Clock>) -> Live {
        Live {
            inner: Arc::new(Mutex::new(Inner {
                tracker,
                pending: Pending::new(1),
            })),
            clock,
            durable: None,
            shared: false,
            asks_waiting: Arc::default(),
        }
    }

    /// The clock.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// Current time.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while the lock was held leaves counts that are still valid numbers, so a
        // poisoned lock is used rather than taking the daemon down.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Usage and limits of `org` at `now`.
    pub fn load_of(&self, org: &str, now: i64) -> crate::tracker::OrgLoad {
        self.lock().tracker.load_of(org, now)
    }

    /// Runs `f` with the tracker (reads for the API and `/metrics`).
    pub fn with_tracker<T>(&self, f: impl FnOnce(&Tracker) -> T) -> T {
        f(&self.lock().tracker)
    }

    /// Each org's snapshot at `now` in turn, taken `SNAPSHOT_SLICE` (256) orgs per hold of
    /// the lock, so that a reader of many orgs (`/v1/usage`, `/metrics`) never holds ingest up
    /// for long; an answer that writes them one by one never holds them all (10 000 orgs'
    /// JSON trees peaked at 246 MiB).
    pub fn each_org_snapshot(&self, now: i64, view: View, mut f: impl FnMut(OrgSnapshot)) {
        let mut from = 0;
        loop {
            let part = self.with_tracker(|t| t.snapshot_of(now, from, SNAPSHOT_SLICE, view));
            let done = part.len() < SNAPSHOT_SLICE;
            from += part.len();
            part.into_iter().for_each(&mut f);
            if done {
                return;
            }
        }
    }

    /// Records that could not be encoded so far, by kind ([`UNENCODABLE`]); each was logged.
    pub fn unencodable(&self) -> Vec<(&'static str, u64)> {
        let Some(d) = &self.durable else {
            return Vec::new();
        };
        UNENCODABLE
            .iter()
            .zip(&d.unencodable)
            .map(|(kind, n)| (*kind, n.load(Ordering::Relaxed)))
            .collect()
    }

    /// Store commits that failed so far.
    pub fn store_failures(&self) -> u64 {
        self.durable
            .as_ref()
            .map_or(0, |d| d.failures.load(Ordering::Relaxed))
    }

    /// True unless the last store commit failed (a full disk, a read-only file system).
    pub fn healthy(&self) -> bool {
        self.durable.as_ref().is_none_or(|d| {
            d.healthy.load(Ordering::Acquire) && d.log_readable.load(Ordering::Acquire)
        })
    }

    /// Bytes of journal waiting for the store.
    pub fn pending_bytes(&self) -> usize {
        self.lock().pending.journal.len()
    }

    /// Queues a notification per channel for each transition (durable mode only).
    fn notify(&self, pending: &mut Pending, transitions: &[Transition], now: i64) {
        if let Some(d) = &self.durable {
            for t in transitions {
                let routed = crate::outbox::route(
                    &d.channels,
                    t,
                    now,
                    &mut pending.unencodable[NOTIFICATION],
                );
                pending.outbox_new.extend(routed);
            }
        }
    }

    /// Applies events (their missing `ts` set to `now`), journals them, records where a file
    /// source got to and queues the notifications they cause, all in one critical section.
    /// Returns the sequence number to wait for with [`Live::durable_at`].
    pub fn apply(&self, events: &mut [Event<'_>], now: i64, checkpoint: Option<Checkpoint>) -> u64 {
        if self.shared && self.durable.is_some() {
            return self.journal_only(events, now, checkpoint);
        }
        let mut out = Vec::new();
        let seq = {
            let mut g = self.lock();
            let Inner { tracker, pending } = &mut *g;
            self.note_clock(tracker, pending, now);
            for ev in events.iter_mut() {
                let ts = *ev.ts_ms.get_or_insert(now);
                let from = out.len();
                if tracker.apply(ev, ts, &mut out) && self.durable.is_some() {
                    pending.record(&RecordRef::Event(ev));
                }
                self.notify(pending, &out[from..], now);
            }
            if let Some(cp) = checkpoint
                && self.durable.is_some()
            {
                pending
                    .checkpoints
                    .insert((cp.source.clone(), cp.file.clone()), cp);
            }
            // With nothing queued (e.g. only duplicates) the newest commit already holds
            // everything these events depend on; waiting for `pending.seq` would wait for a
            // commit that never comes.
            if pending.is_empty() {
                pending.seq - 1
            } else {
                pending.seq
            }
        };
        self.wake_writer();
        logged::log(&out);
        seq
    }

    /// Notes the wall clock once a second and journals it with it, so that recovery judges
    /// the events that follow as late or not exactly as this run does.
    fn note_clock(&self, tracker: &mut Tracker, pending: &mut Pending, now: i64) {
        if now.div_euclid(1000) > tracker.clock_ms().div_euclid(1000) {
            tracker.note_clock(now);
            if self.durable.is_some() {
                pending.record(&RecordRef::Clock(now));
            }
        }
    }

    /// [`Live::apply`] of a replica: the clock note, the events and the checkpoint go to the
    /// journal (the shared log) only; every replica applies them from the log.
    fn journal_only(
        &self,
        events: &mut [Event<'_>],
        now: i64,
        checkpoint: Option<Checkpoint>,
    ) -> u64 {
        let seq = {
            let mut g = self.lock();
            let pending = &mut g.pending;
            pending.record_taken_in(events, now);
            if let Some(cp) = checkpoint {
                pending
                    .checkpoints
                    .insert((cp.source.clone(), cp.file.clone()), cp);
            }
            pending.seq
        };
        self.wake_writer();
        seq
    }

    /// Advances every org to the current time; journaled so recovery meets the same changes.
    /// A replica only journals the tick: the log brings it back, in order, to every replica.
    pub fn tick(&self) {
        let now = self.now_ms();
        if self.shared && self.durable.is_some() {
            self.lock().pending.record(&RecordRef::Tick(now));
            self.wake_writer();
            return;
        }
        let mut out = Vec::new();
        {
            let mut g = self.lock();
            let Inner { tracker, pending } = &mut *g;
            if tracker.tick(now, &mut out) && self.durable.is_some() {
                pending.record(&RecordRef::Tick(now));
            }
            self.notify(pending, &out, now);
        }
        if !out.is_empty() {
            self.wake_writer();
        }
        logged::log(&out);
    }

    /// Records that a file is gone for good, or that a source ran for the first time.
    pub fn note_sources(&self, forget: Vec<FileRef>, started: Vec<String>) -> u64 {
        let seq = {
            let mut g = self.lock();
            g.pending.forget.extend(forget);
            g.pending.started.extend(started);
            g.pending.seq
        };
        self.wake_writer();
        seq
    }

    /// Records batch and item changes, and batches (with their items) gone for good; returns
    /// the commit to wait for before acting on them.
    pub fn record_batches(
        &self,
        batches: Vec<BatchRecord>,
        items: Vec<ItemRecord>,
        dropped: Vec<String>,
    ) -> u64 {
        if self.durable.is_none() {
            return 0;
        }
        let seq = {
            let mut g = self.lock();
            g.pending.batches.extend(batches);
            g.pending.batch_items.extend(items);
            g.pending.batches_dropped.extend(dropped);
            g.pending.seq
        };
        self.wake_writer();
        seq
    }

    /// Records a delivery outcome.
    pub fn outbox_update(&self, update: OutboxUpdate) {
        if self.durable.is_none() {
            return;
        }
        self.lock().pending.outbox_updates.push(update);
        self.wake_writer();
    }

    fn wake_writer(&self) {
        if let Some(d) = &self.durable
            && let Some(t) = d
                .writer
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
        {
            t.unpark();
        }
    }

    /// Waits until commit `seq` is durable (immediately in memory).
    pub async fn durable_at(&self, seq: u64, limit: Duration) -> Result<(), DurableError> {
        let Some(d) = &self.durable else {
            return Ok(());
        };
        let dropped = || {
            d.dropped
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .any(|&(after, through)| after < seq && seq <= through)
        };
        let mut rx = d.committed.subscribe();
        match tokio::time::timeout(limit, rx.wait_for(|&c| c >= seq || dropped())).await {
            Ok(Ok(_)) if dropped() => Err(DurableError::NotStored),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(DurableError::Stopped),
            Err(_) => Err(DurableError::Timeout(limit)),
        }
    }
}

impl Writer {
    /// Commits what is pending, writes a final snapshot, and stops the thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.durable.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            if h.join().is_err() {
                tracing::error!("store writer panicked");
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Commits what is pending, again and again. `last_journal` is the commit of the newest journal
/// entry (or snapshot) in the store, which the next entry names in its header.
fn writer_loop(
    live: Live,
    mut store: Box<dyn StateStore>,
    mut since_snapshot: u64,
    mut last_journal: u64,
) {
    let Some(durable) = live.durable.clone() else {
        return;
    };
    let mut last_snapshot = Instant::now();
    // Sizes the next snapshot's buffer, so it does not grow by doubling (and copying) to it.
    let mut last_snapshot_len = 0;
    loop {
        let stopping = durable.stop.load(Ordering::Acquire);
        // A replica's tracker is rebuilt from the shared log, not from snapshots of its own.
        let snapshot_due = !live.shared
            && (since_snapshot >= SNAPSHOT_EVENTS
                || (since_snapshot > 0 && last_snapshot.elapsed() >= SNAPSHOT_INTERVAL)
                || (stopping && since_snapshot > 0));
        let (mut batch, snapshot) = {
            let mut g = live.lock();
            if g.pending.is_empty() && !snapshot_due {
                drop(g);
                if stopping {
                    break;
                }
                std::thread::park_timeout(IDLE);
                continue;
            }
            let next = g.pending.seq + 1;
            let batch = std::mem::replace(&mut g.pending, Pending::new(next));
            for (total, n) in durable.unencodable.iter().zip(batch.unencodable) {
                total.fetch_add(n, Ordering::Relaxed);
            }
            let snapshot = if snapshot_due
                || (!live.shared && since_snapshot + batch.records >= SNAPSHOT_EVENTS)
            {
                match g.tracker.encode_after(snapshot_buffer(last_snapshot_len)) {
                    Ok(s) if s.len() > MAX_SNAPSHOT_BYTES => {
                        // SQLite stores no blob this large: writing it would fail every
                        // retry and hold the journal back with it.
                        tracing::error!(
                            bytes = s.len(),
                            max = MAX_SNAPSHOT_BYTES,
                            "the snapshot is too large to store; keeping the journal (lower [limits] max_orgs or max_apps_per_org)"
                        );
                        durable.unencodable[SNAPSHOT].fetch_add(1, Ordering::Relaxed);
                        // Not again at once: at the next interval or batch of events.
                        since_snapshot = 0;
                        last_snapshot = Instant::now();
                        None
                    }
                    Ok(s) => {
                        last_snapshot_len = s.len();
                        Some(seal_snapshot(s))
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "snapshot encoding failed; keeping the journal");
                        durable.unencodable[SNAPSHOT].fetch_add(1, Ordering::Relaxed);
                        None
                    }
                }
            } else {
                None
            };
            (batch, snapshot)
        };
        seal_journal(&mut batch.journal, last_journal);
        let checkpoints: Vec<Checkpoint> = batch.checkpoints.values().cloned().collect();
        let commit = Commit {
            seq: batch.seq,
            journal: &batch.journal,
            events: batch.records,
            snapshot: snapshot.as_deref(),
            checkpoints: &checkpoints,
            forget: &batch.forget,
            started_sources: &batch.started,
            outbox_new: &batch.outbox_new,
            outbox_updates: &batch.outbox_updates,
            batches: &batch.batches,
            batch_items: &batch.batch_items,
            batches_dropped: &batch.batches_dropped,
        };
        let started = Instant::now();
        match store.commit(&commit) {
            Ok(()) => {
                if !durable.healthy.swap(true, Ordering::AcqRel) {
                    tracing::info!("store writes succeed again");
                }
                durable.committed.send_replace(batch.seq);
                if let Some(tx) = &durable.delivery {
                    for entry in batch.outbox_new {
                        let _ = tx.send(entry);
                    }
                }
                if snapshot.is_some() || batch.records > 0 {
                    last_journal = batch.seq;
                }
                if let Some(s) = &snapshot {
                    tracing::debug!(
                        seq = batch.seq,
                        bytes = s.len(),
                        took_ms = started.elapsed().as_millis() as u64,
                        "snapshot written"
                    );
                    since_snapshot = 0;
                    last_snapshot = Instant::now();
                } else {
                    since_snapshot += batch.records;
                }
            }
            Err(e) => {
                durable.failures.fetch_add(1, Ordering::Relaxed);
                if durable.healthy.swap(false, Ordering::AcqRel) {
                    tracing::error!(error = %e, "store commit failed; retrying (ingest waits)");
                }
                if live.shared && batch.records > 0 {
                    // A replica's events are acknowledged only once the shared log confirms
                    // them: these were not, so their requests are told so (the client sends
                    // them again; with request_id they count once) and they are not appended
                    // again behind the client's back (an append that timed out, or fell short
                    // of its Redis replicas, may be in the log already). The rest (outbox,
                    // batches) is kept and retried.
                    let after = *durable.committed.borrow();
                    {
                        let mut dropped = durable
                            .dropped
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner);
                        if dropped.len() >= 64 {
                            dropped.pop_front();
                        }
                        dropped.push_back((after, batch.seq));
                    }
                    tracing::warn!(
                        records = batch.records,
                        "the shared log did not take a commit's events; their requests are answered 503"
                    );
                    batch.journal.clear();
                    batch.records = 0;
                    batch.checkpoints.clear();
                    durable.committed.send_modify(|_| {});
                }
                let mut g = live.lock();
                let newer = std::mem::take(&mut g.pending);
                g.pending = batch.then(newer);
                drop(g);
                if stopping {
                    tracing::error!(
                        "giving up on the store at shutdown; uncommitted changes are lost"
                    );
                    break;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// Scrape-time values for `/metrics`.
impl crate::metrics::ScrapeSource for Live {
    fn now_ms(&self) -> Option<i64> {
        Some(Live::now_ms(self))
    }

    fn scrape(&self, each: &mut dyn FnMut(OrgSnapshot)) -> Option<crate::metrics::Scraped> {
        let live = self;
        live.each_org_snapshot(live.now_ms(), View::Metrics, each);
        let (overflow, new_orgs_refused) =
            live.with_tracker(|t| (t.overflow(), t.new_orgs_refused()));
        Some(crate::metrics::Scraped {
            store_writable: live.healthy(),
            store_commit_failures: live.store_failures(),
            cluster_connected: live.cluster_connected(),
            cluster_config_differs: live.cluster_config_differs(),
            overflow,
            new_orgs_refused,
        })
    }

    fn unencodable(&self) -> Vec<(&'static str, u64)> {
        Live::unencodable(self)
    }
}
