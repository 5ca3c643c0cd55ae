//! Replay applied on several threads, with the answers of one tracker: the orgs are dealt out
//! to shards, each a [`Tracker`] on its own thread, and the calling thread routes every event
//! in input order and merges what the shards report back into the order one tracker gives.
//!
//! With decoding spread over threads (`parallel`), applying events in order on one thread was
//! the bound of a threaded replay. An org's state changes only by its own events, so the
//! orgs can be applied apart. What spans orgs stays on the routing thread, in input order:
//! the replay clock and its ticks, `request_id` dedupe, and which orgs are tracked
//! (`max_orgs`, `max_new_orgs_per_second`) — all by [`Tracker::route`] on a tracker that
//! holds no usage. Org `i` in the order orgs are first tracked goes to shard `i % shards`,
//! so each shard creates its orgs in that same order.
//!
//! The order of the alert transitions is rebuilt exactly: each carries the place, in the
//! routed sequence, of the event or tick that made it; one event's all belong to one org;
//! a tick gives its orgs' transitions in the order the orgs were first tracked, then its
//! reminders in the order of their [`AlertKey`], as [`Tracker::tick`] does. The report is
//! the same whatever the thread count (a test holds it to that).
//!
//! Must never: let a shard decide anything that depends on another org, or write an alert
//! before every shard has reported the events before it.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::sync::mpsc::{
    Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError, channel, sync_channel,
};
use std::thread::JoinHandle;

use super::parallel::{Lease, Record};
use crate::config::Config;
use crate::detect::Transition;
use crate::detect::alerts::AlertKey;
use crate::tracker::{OrgReport, Routed, Tracker};

/// Batches queued to a shard before the routing thread waits for it: enough that a shard
/// never waits for the next block while the router finishes one, few enough that the blocks
/// they hold stay within the replay's byte budget.
const QUEUED: usize = 2;

/// Steps (ticks, per shard) routed before they are handed over, even in the middle of a
/// block: the steps, and the transitions they make (held until every shard has reported
/// them), stay bounded.
const BATCH_OPS: usize = 4 * 1024;

/// One step of the routed sequence for one shard.
#[derive(Debug, Clone, Copy)]
struct Op {
    /// Its place in the batch's routed sequence (ticks go to every shard at the same place).
    at: u32,
    /// The replay clock.
    now: i64,
    what: What,
}

#[derive(Debug, Clone, Copy)]
enum What {
    /// Apply the block's accepted record `record` to the shard's `local`th org (`overflow`:
    /// `__overflow__`), as [`Tracker::apply_routed`] takes it.
    Apply {
        record: u32,
        local: usize,
        overflow: bool,
    },
    Tick,
    /// `count` ticks a minute apart from `now`, at places `at`, `at + 1`, …: the clock
    /// jumped over a quiet stretch (one step, not one per minute and shard).
    Minutes {
        count: u32,
    },
}

/// Steps of each shard, with the block they refer to (`None`: ticks alone).
struct Batch {
    seq: u64,
    block: Option<Arc<Lease>>,
    ops: Vec<Vec<Op>>,
}

/// A shard's alert transitions of one batch, each with its place in the batch.
struct Done {
    seq: u64,
    notes: Vec<(u32, Transition)>,
}

/// The shard threads and the routed sequence being built.
pub(super) struct Shards {
    to: Vec<SyncSender<Arc<Batch>>>,
    done: Receiver<Done>,
    threads: Vec<JoinHandle<Tracker>>,
    /// The block being routed.
    block: Option<Arc<Lease>>,
    ops: Vec<Vec<Op>>,
    /// Steps in `ops`, all shards together.
    queued: usize,
    at: u32,
    /// Batches sent, and merged.
    sent: u64,
    merged: u64,
    /// Per batch not merged yet: shards that reported, and their transitions.
    pending: BTreeMap<u64, (usize, Vec<(u32, Transition)>)>,
}

impl Shards {
    /// Starts `n` shard threads (at least 2) with the orgs of `config` dealt out.
    pub(super) fn start(config: &Config, n: usize) -> io::Result<Shards> {
        let n = n.max(2);
        let (done_tx, done) = channel();
        let mut to = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for me in 0..n {
            let (tx, rx) = sync_channel(QUEUED);
            let tracker = Tracker::shard(config, me, n);
            let done_tx = done_tx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("replay-apply-{me}"))
                    .spawn(move || apply(tracker, me, rx, done_tx))?,
            );
            to.push(tx);
        }
        Ok(Shards {
            to,
            done,
            threads,
            block: None,
            ops: vec![Vec::new(); n],
            queued: 0,
            at: 0,
            sent: 0,
            merged: 0,
            pending: BTreeMap::new(),
        })
    }

    /// Routes the block's accepted record `record` (index into its records) to its org's
    /// shard, to be applied at `now`.
    pub(super) fn apply(&mut self, record: usize, now: i64, to: Routed) {
        let n = self.ops.len().max(1);
        // The shard and the place in it, of one division here: the shard's own division of
        // the org by the shard count was a tenth of its `apply_routed`.
        let (shard, local) = (to.org % n, to.org / n);
        if let (Some(ops), Ok(record)) = (self.ops.get_mut(shard), u32::try_from(record)) {
            ops.push(Op {
                at: self.at,
                now,
                what: What::Apply {
                    record,
                    local,
                    overflow: to.overflow,
                },
            });
            self.queued += 1;
        }
        self.at += 1;
    }

    /// Every shard ticks at `now` at this place of the sequence.
    pub(super) fn tick(&mut self, now: i64) {
        self.every_shard(now, What::Tick, 1);
    }

    /// Every shard ticks `count` times a minute apart from `now`, at these places.
    pub(super) fn minutes(&mut self, now: i64, count: u32) {
        self.every_shard(now, What::Minutes { count }, count);
    }

    fn every_shard(&mut self, now: i64, what: What, places: u32) {
        for ops in &mut self.ops {
            ops.push(Op {
                at: self.at,
                now,
                what,
            });
        }
        // A stretch of minutes counts as its ticks: their transitions wait for the merge too.
        self.queued += self.ops.len() * places as usize;
        self.at += places;
    }

    /// The records of `block` are routed next ([`Shards::apply`] refers to them).
    pub(super) fn start_block(&mut self, block: Arc<Lease>) {
        self.block = Some(block);
    }

    /// Whether enough steps wait that they are to be sent now, mid-block.
    pub(super) fn full(&self) -> bool {
        self.queued >= BATCH_OPS
    }

    /// Hands the steps routed so far, with the block they refer to, to the shards; `end`:
    /// that block is done.
    pub(super) fn send(&mut self, end: bool) -> io::Result<()> {
        // Sized as the last batch was: grown from empty, each batch's lists were copied a
        // dozen times over as they doubled (half a percent of a threaded replay's work).
        let next = self
            .ops
            .iter()
            .map(|o| Vec::with_capacity(o.len()))
            .collect();
        let ops = std::mem::replace(&mut self.ops, next);
        let block = if end {
            self.block.take()
        } else {
            self.block.clone()
        };
        self.queued = 0;
        let batch = Arc::new(Batch {
            seq: self.sent,
            block,
            ops,
        });
        for tx in &self.to {
            tx.send(batch.clone()).map_err(|_| stopped())?;
        }
        self.pending.insert(self.sent, (0, Vec::new()));
        self.sent += 1;
        self.at = 0;
        Ok(())
    }

    /// Writes, in order, the transitions of every batch all shards have reported; with
    /// `wait`, of every batch sent.
    pub(super) fn merge(
        &mut self,
        router: &Tracker,
        wait: bool,
        mut write: impl FnMut(&Transition) -> io::Result<()>,
    ) -> io::Result<()> {
        let n = self.to.len();
        loop {
            let done = if wait && self.merged < self.sent {
                match self
                    .done
                    .recv_timeout(std::time::Duration::from_millis(100))
                {
                    Ok(d) => d,
                    // A shard that ended before it was told to would leave this waiting on
                    // the others, which wait for more work: the replay fails instead.
                    Err(RecvTimeoutError::Timeout)
                        if self.threads.iter().any(|t| t.is_finished()) =>
                    {
                        return Err(stopped());
                    }
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return Err(stopped()),
                }
            } else {
                match self.done.try_recv() {
                    Ok(d) => d,
                    Err(TryRecvError::Empty) => return Ok(()),
                    Err(TryRecvError::Disconnected) => return Err(stopped()),
                }
            };
            if let Some((reported, notes)) = self.pending.get_mut(&done.seq) {
                *reported += 1;
                notes.extend(done.notes);
            }
            // Shards apply batches in order, so batches complete in order.
            while let Some(entry) = self.pending.first_entry()
                && entry.get().0 == n
            {
                let (_, mut notes) = entry.remove();
                notes.sort_by(|a, b| order(router, a, b));
                for (_, t) in &notes {
                    write(t)?;
                }
                self.merged += 1;
            }
            if wait && self.merged == self.sent {
                return Ok(());
            }
        }
    }

    /// Ticks every shard at `now` (the replay clock when it ends, if any), writes what is
    /// left, and returns every org's report.
    pub(super) fn finish(
        mut self,
        router: &Tracker,
        now: Option<i64>,
        mut write: impl FnMut(&Transition) -> io::Result<()>,
    ) -> io::Result<Vec<OrgReport>> {
        if let Some(now) = now {
            self.tick(now);
        }
        self.send(true)?;
        self.merge(router, true, &mut write)?;
        self.to.clear();
        let mut reports = Vec::new();
        for t in self.threads.drain(..) {
            let tracker = t.join().map_err(|_| stopped())?;
            reports.extend(tracker.report());
        }
        Ok(reports)
    }
}

/// Steps ahead whose records a shard asks the cache for, and (half as far ahead) the line
/// bytes they borrow: a decoder on another core wrote both, and the shards bound a threaded
/// replay.
const PREFETCH_AHEAD: usize = 8;

/// Asks the cache for the record of step `i + PREFETCH_AHEAD` and the line of step
/// `i + PREFETCH_AHEAD / 2` (whose record was asked for before): hints, never answers.
fn prefetch_ahead(ops: &[Op], i: usize, records: &[Record]) {
    let record = |k: usize| match ops.get(k).map(|op| op.what) {
        Some(What::Apply { record, .. }) => records.get(record as usize),
        _ => None,
    };
    if let Some(r) = record(i + PREFETCH_AHEAD) {
        crate::model::prefetch(r);
    }
    if let Some(Ok((ev, _))) = record(i + PREFETCH_AHEAD / 2).map(Record::get) {
        crate::model::prefetch(ev.org.as_bytes());
    }
}

/// A shard thread: applies its steps of each batch, in order, and reports its transitions.
fn apply(
    mut tracker: Tracker,
    me: usize,
    batches: Receiver<Arc<Batch>>,
    done: Sender<Done>,
) -> Tracker {
    let mut out = Vec::new();
    for batch in batches {
        let mut notes = Vec::new();
        let ops = batch.ops.get(me).map_or(&[][..], Vec::as_slice);
        let records = batch.block.as_deref().map_or(&[][..], |b| b.records());
        for (i, op) in ops.iter().enumerate() {
            prefetch_ahead(ops, i, records);
            match op.what {
                What::Apply {
                    record,
                    local,
                    overflow,
                } => {
                    if let Some(Ok((ev, _))) = records.get(record as usize).map(Record::get) {
                        tracker.apply_routed(ev, op.now, local, overflow, &mut out);
                    }
                }
                What::Tick => {
                    tracker.tick(op.now, &mut out);
                }
                What::Minutes { count } => {
                    for k in 0..count {
                        tracker.tick(op.now + i64::from(k) * 60_000, &mut out);
                        let at = op.at + k;
                        notes.extend(out.drain(..).filter(|t| t.notify).map(|t| (at, t)));
                    }
                }
            }
            // Most steps change no alert: nothing to drain.
            if !out.is_empty() {
                notes.extend(out.drain(..).filter(|t| t.notify).map(|t| (op.at, t)));
            }
        }
        let seq = batch.seq;
        // The last shard done with a block gives its buffers back before it reports.
        drop(batch);
        if done.send(Done { seq, notes }).is_err() {
            break;
        }
    }
    tracker
}

/// The order one tracker gives transitions made at the same place: an event's all belong to
/// one org (kept in the order made); a tick's come org by org in the order orgs were first
/// tracked, then its reminders by [`AlertKey`].
fn order(router: &Tracker, a: &(u32, Transition), b: &(u32, Transition)) -> Ordering {
    a.0.cmp(&b.0).then_with(|| match (a.1.repeat, b.1.repeat) {
        (false, false) => router
            .org_position(&a.1.org)
            .cmp(&router.org_position(&b.1.org)),
        (true, true) => AlertKey::of(&a.1).cmp(&AlertKey::of(&b.1)),
        (x, y) => x.cmp(&y),
    })
}

fn stopped() -> io::Error {
    io::Error::other("a replay thread stopped")
}
