//! Replay applied on several threads, with the answers of one tracker: the orgs are dealt out
//! to shards, each a [`Tracker`] that any of the replay's threads applies batches to (one
//! thread at a time, in the order sent: [`ShardWork`], the replay's [`Chores`]), and the
//! calling thread routes every event in input order and merges what the shards report back
//! into the order one tracker gives.
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
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::sync::{Arc, Mutex, MutexGuard};

use super::parallel::{Chores, Lease, Record};
use crate::config::Config;
use crate::detect::Transition;
use crate::detect::alerts::AlertKey;
use crate::tracker::{OrgReport, Routed, Tracker};

/// Batches queued to a shard before the routing thread applies them itself: enough that
/// the threads that take a shard's batches never run out while the router finishes a block,
/// few enough that the blocks they hold stay within the replay's byte budget.
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

/// The shards and the routed sequence being built.
pub(super) struct Shards {
    work: Arc<ShardWork>,
    done: Receiver<Done>,
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
    /// Sets up `n` shards (at least 2) with the orgs of `config` dealt out. No thread is
    /// started: the replay's threads apply the shards' batches between their other work
    /// ([`Shards::chores`]), so that there are no more of them than cores.
    pub(super) fn start(config: &Config, n: usize) -> Shards {
        let n = n.max(2);
        let (done_tx, done) = channel();
        let slots = (0..n)
            .map(|me| Slot {
                queue: Mutex::new(VecDeque::new()),
                queued: AtomicUsize::new(0),
                busy: AtomicBool::new(false),
                tracker: Mutex::new(Tracker::shard(config, me, n)),
            })
            .collect();
        Shards {
            work: Arc::new(ShardWork {
                slots,
                done: done_tx,
            }),
            done,
            block: None,
            ops: vec![Vec::new(); n],
            queued: 0,
            at: 0,
            sent: 0,
            merged: 0,
            pending: BTreeMap::new(),
        }
    }

    /// The shards' batches as work any thread of the replay may take.
    pub(super) fn chores(&self) -> Arc<ShardWork> {
        self.work.clone()
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
        self.pending.insert(self.sent, (0, Vec::new()));
        self.sent += 1;
        self.at = 0;
        for (me, slot) in self.work.slots.iter().enumerate() {
            let behind = slot.push(batch.clone())?;
            // A shard that fell behind is caught up here: the router waits for it, as it
            // waited on a full queue when shards had threads of their own.
            if behind > QUEUED {
                self.work.catch_up(me)?;
            }
        }
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
        let n = self.work.slots.len();
        if wait {
            // Every batch sent is applied before this returns: those no thread has taken,
            // here.
            for me in 0..n {
                self.work.catch_up(me)?;
            }
        }
        loop {
            if self.merged == self.sent {
                return Ok(());
            }
            let done = match self.done.try_recv() {
                Ok(d) => d,
                // Caught up, every batch has reported: one missing was lost with a thread
                // that failed while applying it.
                Err(TryRecvError::Empty) if wait => return Err(stopped()),
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => return Err(stopped()),
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
        let mut reports = Vec::new();
        for slot in &self.work.slots {
            reports.extend(slot.tracker()?.report());
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

/// The shards' trackers and the batches routed to them, for any thread to apply: each
/// shard's batches in the order sent, one thread at a time.
pub(super) struct ShardWork {
    slots: Vec<Slot>,
    done: Sender<Done>,
}

/// One shard: its tracker and the batches it has not applied.
struct Slot {
    queue: Mutex<VecDeque<Arc<Batch>>>,
    /// Batches in `queue`, read without its lock.
    queued: AtomicUsize,
    /// A thread holds `tracker` (set only by one that does, for [`Chores::ready`]).
    busy: AtomicBool,
    tracker: Mutex<Tracker>,
}

impl Slot {
    /// Queues `batch`; returns the batches now queued.
    fn push(&self, batch: Arc<Batch>) -> io::Result<usize> {
        let mut queue = self.queue.lock().map_err(|_| stopped())?;
        queue.push_back(batch);
        self.queued.store(queue.len(), AtomicOrdering::SeqCst);
        Ok(queue.len())
    }

    fn pop(&self) -> Option<Arc<Batch>> {
        let mut queue = self.queue.lock().ok()?;
        let batch = queue.pop_front();
        self.queued.store(queue.len(), AtomicOrdering::SeqCst);
        batch
    }

    fn tracker(&self) -> io::Result<MutexGuard<'_, Tracker>> {
        self.tracker.lock().map_err(|_| stopped())
    }

    /// Runs `f` marked busy: the caller holds the tracker.
    fn busy_while<R>(&self, f: impl FnOnce() -> R) -> R {
        self.busy.store(true, AtomicOrdering::SeqCst);
        let r = f();
        self.busy.store(false, AtomicOrdering::SeqCst);
        r
    }

    /// Whether a batch waits and no thread holds the tracker.
    fn ready(&self) -> bool {
        self.queued.load(AtomicOrdering::SeqCst) > 0 && !self.busy.load(AtomicOrdering::SeqCst)
    }
}

impl ShardWork {
    /// Applies shard `me`'s next batch with its tracker held (`tracker`); false when none
    /// was queued.
    fn apply_next(&self, me: usize, tracker: &mut Tracker) -> bool {
        let Some(slot) = self.slots.get(me) else {
            return false;
        };
        let Some(batch) = slot.pop() else {
            return false;
        };
        let notes = apply(tracker, me, &batch);
        let seq = batch.seq;
        // The last shard done with a block gives its buffers back before it reports.
        drop(batch);
        // The router only stops listening when the replay has failed.
        let _ = self.done.send(Done { seq, notes });
        true
    }

    /// Applies every batch queued to shard `me`, waiting for a thread applying it to finish.
    fn catch_up(&self, me: usize) -> io::Result<()> {
        let Some(slot) = self.slots.get(me) else {
            return Ok(());
        };
        let mut tracker = slot.tracker()?;
        slot.busy_while(|| while self.apply_next(me, &mut tracker) {});
        Ok(())
    }
}

impl Chores for ShardWork {
    fn ready(&self) -> bool {
        self.slots.iter().any(Slot::ready)
    }

    fn run_one(&self) -> bool {
        for (me, slot) in self.slots.iter().enumerate() {
            if !slot.ready() {
                continue;
            }
            let Ok(mut tracker) = slot.tracker.try_lock() else {
                continue;
            };
            if slot.busy_while(|| self.apply_next(me, &mut tracker)) {
                return true;
            }
        }
        false
    }
}

/// Applies shard `me`'s steps of `batch`, in order; returns the transitions to report, each
/// with its place in the batch.
fn apply(tracker: &mut Tracker, me: usize, batch: &Batch) -> Vec<(u32, Transition)> {
    let mut out = Vec::new();
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
    notes
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
