//! Live state shared by the daemon's tasks: the tracker, the clock, the journal of applied
//! events waiting for the store, and where alert transitions go.
//!
//! Every change made by events happens under one `std::sync::Mutex`, together with appending
//! the events to the pending journal batch and noting the file checkpoints they reached. The
//! store writer takes that batch (and, now and then, a snapshot) in the same critical
//! section, so what it commits is always a consistent cut: counts and offsets never drift
//! apart, whatever moment the process dies. Critical sections are short and CPU-only and never
//! await; large batches are applied from `spawn_blocking` or a source's own thread.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::clock::Clock;
use crate::detect::{Status, Transition};
use crate::events::Event;
use crate::store::{Checkpoint, Commit, StateStore};
use crate::tracker::Tracker;

/// A snapshot is taken once this many events were journaled since the last one...
const SNAPSHOT_EVENTS: u64 = 500_000;
/// ...or this long after the last one, if anything changed.
const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(300);
/// Past this much journal waiting for the store, intake pauses (HTTP answers 429).
pub const MAX_PENDING_BYTES: usize = 64 * 1024 * 1024;
/// The writer sleeps at most this long when idle (it is woken on new work).
const IDLE: Duration = Duration::from_millis(200);

/// Events applied since the last commit, waiting for the store.
#[derive(Debug, Default)]
struct Pending {
    /// Sequence number this batch will be committed as.
    seq: u64,
    journal: Vec<u8>,
    events: u64,
    checkpoints: BTreeMap<(String, String), Checkpoint>,
    forget: Vec<(String, String)>,
    started: Vec<String>,
}

impl Pending {
    fn new(seq: u64) -> Pending {
        Pending {
            seq,
            ..Pending::default()
        }
    }

    fn is_empty(&self) -> bool {
        self.events == 0
            && self.checkpoints.is_empty()
            && self.forget.is_empty()
            && self.started.is_empty()
    }

    /// `self` (older, failed to commit) followed by `newer`.
    fn then(mut self, newer: Pending) -> Pending {
        self.seq = newer.seq;
        self.journal.extend_from_slice(&newer.journal);
        self.events += newer.events;
        self.checkpoints.extend(newer.checkpoints);
        self.forget.extend(newer.forget);
        self.started.extend(newer.started);
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
}

/// The tracker and its clock, shared by HTTP handlers, sources, the ticker and `/metrics`.
#[derive(Clone)]
pub struct Live {
    inner: Arc<Mutex<Inner>>,
    clock: Arc<dyn Clock>,
    durable: Option<Arc<Durable>>,
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
}

/// Owns the store writer thread; [`Writer::shutdown`] flushes and joins it.
pub struct Writer {
    handle: Option<JoinHandle<()>>,
    durable: Arc<Durable>,
}

impl Live {
    /// State kept in memory only (replay, tests).
    pub fn in_memory(tracker: Tracker, clock: Arc<dyn Clock>) -> Live {
        Live {
            inner: Arc::new(Mutex::new(Inner {
                tracker,
                pending: Pending::new(1),
            })),
            clock,
            durable: None,
        }
    }

    /// State journaled to `store`, whose last commit was `last_seq` with
    /// `since_snapshot` events journaled after its snapshot. Starts the writer thread.
    pub fn durable(
        tracker: Tracker,
        clock: Arc<dyn Clock>,
        store: Box<dyn StateStore>,
        last_seq: u64,
        since_snapshot: u64,
    ) -> std::io::Result<(Live, Writer)> {
        let (committed, _) = watch::channel(last_seq);
        let durable = Arc::new(Durable {
            committed,
            writer: Mutex::new(None),
            stop: AtomicBool::new(false),
            healthy: AtomicBool::new(true),
        });
        let live = Live {
            inner: Arc::new(Mutex::new(Inner {
                tracker,
                pending: Pending::new(last_seq + 1),
            })),
            clock,
            durable: Some(durable.clone()),
        };
        let writer_live = live.clone();
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(writer_live, store, since_snapshot))?;
        *durable
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(handle.thread().clone());
        Ok((
            live,
            Writer {
                handle: Some(handle),
                durable,
            },
        ))
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

    /// Runs `f` with the tracker (reads for the API and `/metrics`).
    pub fn with_tracker<T>(&self, f: impl FnOnce(&Tracker) -> T) -> T {
        f(&self.lock().tracker)
    }

    /// True while the store accepts writes (always true in memory).
    pub fn healthy(&self) -> bool {
        self.durable
            .as_ref()
            .is_none_or(|d| d.healthy.load(Ordering::Acquire))
    }

    /// Bytes of journal waiting for the store.
    pub fn pending_bytes(&self) -> usize {
        self.lock().pending.journal.len()
    }

    /// Applies events (their missing `ts` set to `now`), journals them, and records where a
    /// file source got to, all in one critical section. Returns the sequence number to wait
    /// for with [`Live::durable_at`].
    pub fn apply(&self, events: &mut [Event<'_>], now: i64, checkpoint: Option<Checkpoint>) -> u64 {
        let mut out = Vec::new();
        let seq = {
            let mut g = self.lock();
            let Inner { tracker, pending } = &mut *g;
            for ev in events.iter_mut() {
                let ts = *ev.ts_ms.get_or_insert(now);
                if tracker.apply(ev, ts, &mut out) && self.durable.is_some() {
                    // Encoding into a Vec only fails on a serde bug; the event still counts.
                    match postcard::to_extend(&*ev, std::mem::take(&mut pending.journal)) {
                        Ok(j) => pending.journal = j,
                        Err(e) => tracing::error!(error = %e, "journal encoding failed"),
                    }
                    pending.events += 1;
                }
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
        publish(&out);
        seq
    }

    /// Records that a file is gone for good, or that a source ran for the first time.
    pub fn note_sources(&self, forget: Vec<(String, String)>, started: Vec<String>) -> u64 {
        let seq = {
            let mut g = self.lock();
            g.pending.forget.extend(forget);
            g.pending.started.extend(started);
            g.pending.seq
        };
        self.wake_writer();
        seq
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
        let mut rx = d.committed.subscribe();
        match tokio::time::timeout(limit, rx.wait_for(|&c| c >= seq)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(DurableError::Stopped),
            Err(_) => Err(DurableError::Timeout(limit)),
        }
    }

    /// Advances every org to the current time.
    pub fn tick(&self) {
        let now = self.now_ms();
        let mut out = Vec::new();
        self.lock().tracker.tick(now, &mut out);
        publish(&out);
    }
}

/// Why start-up recovery failed.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The snapshot could not be read.
    #[error(transparent)]
    Snapshot(#[from] crate::tracker::snapshot::RestoreError),
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
    /// Events replayed from the journal.
    pub replayed: u64,
    /// Whether a snapshot was loaded.
    pub from_snapshot: bool,
}

impl Live {
    /// Rebuilds the state in `store` (its snapshot, then its journal in order) and starts the
    /// writer. Transitions met while rebuilding were already reported before the restart, so
    /// they are dropped here; the first tick after start-up reports what changed meanwhile.
    pub fn recover(
        config: &crate::config::Config,
        mut store: Box<dyn StateStore>,
        clock: Arc<dyn Clock>,
    ) -> Result<(Live, Writer, Recovery), RecoverError> {
        let rec = store.recover()?;
        let (from, mut tracker) = match &rec.snapshot {
            Some((seq, bytes)) => (*seq, Tracker::restore(config, bytes)?),
            None => (0, Tracker::new(config)),
        };
        let mut replayed = 0u64;
        let mut corrupt = 0u64;
        let mut clock_ms = i64::MIN;
        let mut out = Vec::new();
        store.journal_after(from, &mut |seq, mut data| {
            while !data.is_empty() {
                match postcard::take_from_bytes::<Event<'_>>(data) {
                    Ok((ev, rest)) => {
                        data = rest;
                        let ts = ev.ts_ms.unwrap_or(clock_ms);
                        tracker.apply(&ev, ts, &mut out);
                        // Time moves with the events, as in replay: stuck jobs, releases and
                        // resolves between them happen as they did live.
                        if ts.div_euclid(1000) > clock_ms.div_euclid(1000) {
                            clock_ms = ts;
                            tracker.tick(ts, &mut out);
                        }
                        out.clear();
                        replayed += 1;
                    }
                    Err(e) => {
                        tracing::error!(seq, error = %e, "unreadable journal entry; skipping its rest");
                        corrupt += 1;
                        break;
                    }
                }
            }
        })?;
        if corrupt > 0 {
            tracing::warn!(corrupt, "some journal entries could not be read");
        }
        let since_snapshot = rec.journal_events;
        let (live, writer) = Live::durable(tracker, clock, store, rec.last_seq, since_snapshot)?;
        Ok((
            live,
            writer,
            Recovery {
                checkpoints: rec.checkpoints,
                started_sources: rec.started_sources,
                replayed,
                from_snapshot: rec.snapshot.is_some(),
            },
        ))
    }
}

impl Writer {
    /// Commits what is pending, writes a final snapshot, and stops the thread.
    pub fn shutdown(mut self) {
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
        if self.handle.is_some() {
            self.durable.stop.store(true, Ordering::Release);
            if let Some(h) = self.handle.take() {
                h.thread().unpark();
                let _ = h.join();
            }
        }
    }
}

fn writer_loop(live: Live, mut store: Box<dyn StateStore>, mut since_snapshot: u64) {
    let Some(durable) = live.durable.clone() else {
        return;
    };
    let mut last_snapshot = Instant::now();
    loop {
        let stopping = durable.stop.load(Ordering::Acquire);
        let snapshot_due = since_snapshot >= SNAPSHOT_EVENTS
            || (since_snapshot > 0 && last_snapshot.elapsed() >= SNAPSHOT_INTERVAL)
            || (stopping && since_snapshot > 0);
        let (batch, snapshot) = {
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
            let snapshot = if snapshot_due || since_snapshot + batch.events >= SNAPSHOT_EVENTS {
                match g.tracker.encode() {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::error!(error = %e, "snapshot encoding failed; keeping the journal");
                        None
                    }
                }
            } else {
                None
            };
            (batch, snapshot)
        };
        let checkpoints: Vec<Checkpoint> = batch.checkpoints.values().cloned().collect();
        let commit = Commit {
            seq: batch.seq,
            journal: &batch.journal,
            events: batch.events,
            snapshot: snapshot.as_deref(),
            checkpoints: &checkpoints,
            forget: &batch.forget,
            started_sources: &batch.started,
        };
        let started = Instant::now();
        match store.commit(&commit) {
            Ok(()) => {
                if !durable.healthy.swap(true, Ordering::AcqRel) {
                    tracing::info!("store writes succeed again");
                }
                durable.committed.send_replace(batch.seq);
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
                    since_snapshot += batch.events;
                }
            }
            Err(e) => {
                if durable.healthy.swap(false, Ordering::AcqRel) {
                    tracing::error!(error = %e, "store commit failed; retrying (ingest waits)");
                }
                let mut g = live.lock();
                let newer = std::mem::take(&mut g.pending);
                g.pending = batch.then(newer);
                drop(g);
                if stopping {
                    tracing::error!(
                        "giving up on the store at shutdown; uncommitted events are lost"
                    );
                    break;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// Where transitions go. Delivery by email and webhook arrives with the outbox; until then
/// every transition is logged, and `/v1/alerts` and `alerts_firing` show the current state.
fn publish(transitions: &[Transition]) {
    for t in transitions.iter().filter(|t| t.notify) {
        let summary = t.summary();
        let dimension = t.dimension.map_or("", |d| d.as_str());
        let app = t.app.as_deref().unwrap_or("");
        match t.status {
            Status::Firing => tracing::warn!(
                alert = %t.alert, org = %t.org, app, dimension, severity = t.severity.as_str(),
                "alert firing: {summary}"
            ),
            Status::Resolved => tracing::info!(
                alert = %t.alert, org = %t.org, app, dimension, severity = t.severity.as_str(),
                "alert resolved: {summary}"
            ),
        }
    }
}
