//! Start-up: the state rebuilt from the store's snapshot and the journal after it, every
//! kind of damage found and named, and (with `--recover`) what can be read carried over.

use std::sync::Arc;

use super::journal::{Record, each_record, newer_format, open_journal, open_snapshot};
use super::*;
use crate::tracker::Verdict;

impl Live {
    /// Rebuilds the state in `store` (its snapshot, then its journal in order) and starts the
    /// writer. Transitions met while rebuilding were handled before the restart (their
    /// notifications are in the outbox), so they are dropped here. Committed notifications
    /// are sent to `delivery`.
    ///
    /// A snapshot or journal entry that cannot be decoded is [`StoreError::Damaged`] (nothing
    /// is started, nothing changed) unless `salvage` (`run --recover`): then a copy of the
    /// store is kept beside it, what cannot be read is dropped and logged as lost, and a
    /// snapshot of what could be read is written at once, so the damage is gone for good.
    pub fn recover(
        config: &Config,
        mut store: Box<dyn StateStore>,
        clock: Arc<dyn Clock>,
        delivery: Option<mpsc::UnboundedSender<OutboxEntry>>,
        salvage: bool,
    ) -> Result<(Live, Writer, Recovery), RecoverError> {
        let rec = store.recover()?;
        let mut damage: Vec<String> = Vec::new();
        let (from, mut tracker) = match &rec.snapshot {
            Some(crate::store::Snapshot { seq, state: sealed }) => {
                let restored =
                    open_snapshot(sealed).map(|bytes| (bytes, Tracker::restore(config, bytes)));
                match restored {
                    Ok((_, Ok(t))) => (*seq, t),
                    Ok((
                        bytes,
                        Err(e @ crate::tracker::snapshot::RestoreError::Version { .. }),
                    )) if bytes.starts_with(b"RWT") => {
                        return Err(RecoverError::Snapshot(e));
                    }
                    Ok((_, Err(e))) => {
                        damage.push(format!(
                            "the snapshot (the state up to commit {seq}, {} bytes) cannot be read ({e}): every count before it is lost",
                            sealed.len()
                        ));
                        (*seq, Tracker::new(config))
                    }
                    Err(why) => {
                        damage.push(format!(
                            "the snapshot (the state up to commit {seq}, {} bytes) cannot be read ({why}): every count before it is lost",
                            sealed.len()
                        ));
                        (*seq, Tracker::new(config))
                    }
                }
            }
            None => (0, Tracker::new(config)),
        };
        let mut replayed = 0u64;
        let mut corrupt: Vec<(u64, usize)> = Vec::new();
        let mut out = Vec::new();
        // The commit of the last entry read; each format 3 entry names the one before it.
        let mut last_entry: Option<u64> = None;
        let mut gaps: Vec<(u64, u64)> = Vec::new();
        let mut repeats: Vec<(u64, u64)> = Vec::new();
        let mut newer: Option<(u64, String)> = None;
        store.journal_after(from, &mut |seq, data| {
            if newer.is_some() {
                return;
            }
            let expected = last_entry.unwrap_or(from);
            let data = match open_journal(data) {
                Err(why) if data.first().is_some_and(|&f| newer_format(f)) => {
                    newer = Some((seq, why));
                    return;
                }
                // An entry that follows a commit already followed repeats history (a copied
                // row): its events are in the state already, and would count twice.
                Ok((_, Some(prev))) if prev < expected => {
                    repeats.push((seq, prev));
                    return;
                }
                Ok((records, prev)) => {
                    if prev.is_some_and(|p| p != expected) {
                        gaps.push((expected, seq));
                    }
                    last_entry = Some(seq);
                    records
                }
                Err(_) => {
                    last_entry = Some(seq);
                    corrupt.push((seq, data.len()));
                    return;
                }
            };
            let (read, unreadable) = each_record(data, |record| {
                apply_record(&mut tracker, &record, &mut out);
                out.clear();
            });
            replayed += read;
            if let Some(left) = unreadable {
                corrupt.push((seq, left));
            }
        })?;
        if let Some((seq, why)) = newer {
            return Err(RecoverError::Journal { seq, why });
        }
        if let (Some(first), Some(last)) = (corrupt.first(), corrupt.last()) {
            let bytes: usize = corrupt.iter().map(|(_, b)| b).sum();
            damage.push(format!(
                "{} journal entries (commits {}..={}) cannot be read: {bytes} bytes of events from them are lost",
                corrupt.len(),
                first.0,
                last.0
            ));
        }
        for (seq, prev) in &repeats {
            damage.push(format!(
                "journal entry {seq} follows commit {prev}, which a previous entry already followed: it repeats events already counted and is skipped"
            ));
        }
        for (after, at) in &gaps {
            damage.push(format!(
                "journal entries between commits {after} and {at} are missing: the events they held are lost"
            ));
        }
        let last_journal = last_entry.unwrap_or(from);
        let mut since_snapshot = rec.journal_events;
        if !damage.is_empty() {
            if !salvage {
                return Err(store.damaged(damage.join("; ")).into());
            }
            let copy = store.keep_copy()?;
            for d in &damage {
                tracing::error!(store = %store.location(), "run --recover: {d}");
            }
            tracing::warn!(copy = %copy, replayed, "run --recover: started from what could be read; the store as it was is kept at the copy");
            // The next commit writes a snapshot, which replaces the unreadable entries.
            since_snapshot = SNAPSHOT_EVENTS;
        }
        let (committed, _) = watch::channel(rec.last_seq);
        let durable = Arc::new(Durable {
            committed,
            writer: Mutex::new(None),
            stop: AtomicBool::new(false),
            healthy: AtomicBool::new(true),
            failures: std::sync::atomic::AtomicU64::new(0),
            unencodable: Default::default(),
            log_readable: AtomicBool::new(true),
            config_differs: std::sync::atomic::AtomicU32::new(0),
            engine: Default::default(),
            mirror: Mutex::new(Default::default()),
            dropped: Mutex::new(Default::default()),
            decisions: Mutex::new(Default::default()),
            channels: config.alerts.channels.clone(),
            delivery,
        });
        let live = Live {
            inner: Arc::new(Mutex::new(Inner {
                tracker,
                pending: Pending::new(rec.last_seq + 1),
            })),
            clock,
            durable: Some(durable.clone()),
            shared: config.cluster.is_some(),
            asks_waiting: Arc::default(),
        };
        let writer_live = live.clone();
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(writer_live, store, since_snapshot, last_journal))?;
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
            Recovery {
                checkpoints: rec.checkpoints,
                started_sources: rec.started_sources,
                outbox: rec.outbox,
                batches: rec.batches,
                batch_items: rec.batch_items,
                replayed,
                from_snapshot: rec.snapshot.is_some(),
            },
        ))
    }
}

/// An ask older than this (by the log's clock) when the log is applied is not weighed: its
/// replica stopped waiting for it (after 5 s).
const ASK_STALE_MS: i64 = 4_000;

/// Applies one journal record to `tracker`, its transitions to `out`: how recovery and a
/// replica following the shared log both rebuild state.
/// Returns the verdict of a replica's ask (`Record::Ask`) with its lease.
pub(super) fn apply_record(
    tracker: &mut Tracker,
    record: &Record<'_>,
    out: &mut Vec<Transition>,
) -> Option<(Box<str>, Verdict)> {
    match record {
        Record::Event(ev) => {
            let ts = ev.ts_ms.unwrap_or(0);
            tracker.apply(ev, ts, out);
        }
        Record::Tick(now) => {
            tracker.tick(*now, out);
        }
        Record::Clock(now) => tracker.note_clock(*now),
        Record::Grant(a) => {
            tracker.reserve(&a.ask(), &a.lease, a.now, out);
        }
        Record::Release(lease, now) => {
            tracker.release(lease, *now, out);
        }
        Record::Attach(lease, job_id) => {
            // What could not be attached then cannot be now: the same answer.
            let _ = tracker.attach(lease, job_id);
        }
        Record::Ask(a) => {
            // An ask the log took too late to answer was answered "not decided" by its
            // replica: it reserves nothing (decided by the log's own clock, alike everywhere).
            let verdict = if tracker.clock_ms() > a.now.saturating_add(ASK_STALE_MS) {
                Verdict::Refused {
                    dimension: crate::model::Dimension::Rpm,
                    retry_after_ms: 1,
                }
            } else {
                tracker.admit(&a.ask(), &a.lease, a.now, out)
            };
            return Some((a.lease.as_ref().into(), verdict));
        }
    }
    None
}
