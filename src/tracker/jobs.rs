//! Jobs in flight for one org: started, stuck, finished or released.
//!
//! Jobs are keyed by id (scoped per org) and ordered by start time, so "which jobs became
//! stuck or must be released by now" touches only those jobs. The count is capped: past
//! `max` jobs the oldest is dropped, because a flood of ids that never finish must not grow
//! memory (SPEC §10); far past any concurrency limit the count carries no information.

use std::collections::{BTreeMap, VecDeque};
use std::hash::BuildHasher;

use super::job_index::JobIndex;

/// How a job stopped holding its slot, the `outcome` label of `jobs_finished_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// `job_completed`.
    Completed,
    /// `job_failed`.
    Failed,
    /// `job_cancelled`.
    Cancelled,
    /// Released after `release_after`.
    TimedOut,
}

impl JobOutcome {
    /// Every outcome, in label order.
    pub const ALL: [JobOutcome; 4] = [
        JobOutcome::Completed,
        JobOutcome::Failed,
        JobOutcome::Cancelled,
        JobOutcome::TimedOut,
    ];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Completed => "completed",
            JobOutcome::Failed => "failed",
            JobOutcome::Cancelled => "cancelled",
            JobOutcome::TimedOut => "timed_out",
        }
    }
}

/// A plain histogram of job durations (per-bucket counts, not cumulative) over the bounds the
/// config gives ([`crate::model::JOB_DURATION_BUCKETS`] by default); empty until the first
/// observation, so an org without finished jobs holds no buckets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DurationHistogram {
    /// Observations per bucket; one more slot than bounds, the last `+Inf`.
    pub counts: Vec<u64>,
    /// Sum of observed seconds.
    pub sum: f64,
}

thread_local! {
    /// Set while reading a snapshot of format 4 or older, whose histograms are 13 fixed
    /// buckets of the default bounds.
    static FIXED_LAYOUT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `read` with histograms read (or, in tests making old snapshots, written) in the fixed
/// layout of snapshot formats up to 4; postcard is not self-describing, so the reader has to
/// be told.
pub(super) fn reading_fixed_histograms<T>(read: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            FIXED_LAYOUT.set(self.0);
        }
    }
    let _reset = Reset(FIXED_LAYOUT.replace(true));
    read()
}

impl serde::Serialize for DurationHistogram {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("DurationHistogram", 2)?;
        if FIXED_LAYOUT.get() {
            let mut fixed = [0u64; crate::model::JOB_DURATION_BUCKETS.len() + 1];
            for (slot, n) in fixed.iter_mut().zip(&self.counts) {
                *slot = *n;
            }
            st.serialize_field("counts", &fixed)?;
        } else {
            st.serialize_field("counts", &self.counts)?;
        }
        st.serialize_field("sum", &self.sum)?;
        st.end()
    }
}

impl<'de> serde::Deserialize<'de> for DurationHistogram {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        struct Now {
            counts: Vec<u64>,
            sum: f64,
        }
        #[derive(serde::Deserialize)]
        struct Fixed {
            counts: [u64; crate::model::JOB_DURATION_BUCKETS.len() + 1],
            sum: f64,
        }
        if FIXED_LAYOUT.get() {
            let f = Fixed::deserialize(d)?;
            let any = f.counts.iter().any(|&n| n > 0);
            Ok(DurationHistogram {
                counts: if any { f.counts.to_vec() } else { Vec::new() },
                sum: f.sum,
            })
        } else {
            let n = Now::deserialize(d)?;
            Ok(DurationHistogram {
                counts: n.counts,
                sum: n.sum,
            })
        }
    }
}

impl DurationHistogram {
    /// Counts one job of `secs` seconds in the buckets of `bounds`.
    pub(super) fn observe(&mut self, bounds: &[f64], secs: f64) {
        if self.counts.len() != bounds.len() + 1 {
            // Empty (no job yet), or counted over other bounds: those cannot be re-bucketed.
            *self = DurationHistogram {
                counts: vec![0; bounds.len() + 1],
                sum: 0.0,
            };
        }
        let i = bounds.partition_point(|&b| b < secs);
        self.counts[i] += 1;
        self.sum += secs;
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// A job in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Job {
    /// Event time it started, Unix ms.
    pub started_ms: i64,
    /// Index of its app within the org.
    pub app: u32,
    /// In flight longer than `stuck_after`.
    pub stuck: bool,
    /// Start order, to tell apart jobs that started in the same millisecond.
    seq: u64,
}

/// A job id with its hash ([`id_hash`]), made once for an event and used by every set that
/// looks the id up (the org's jobs and its early ends): hashing it for each was a percent
/// of replay.
#[derive(Debug, Clone, Copy)]
pub struct JobKey<'a> {
    id: &'a str,
    hash: u32,
}

impl<'a> JobKey<'a> {
    /// `id` and its hash.
    pub fn new(id: &'a str) -> Self {
        JobKey {
            id,
            hash: id_hash(id),
        }
    }

    /// The id.
    pub fn id(&self) -> &'a str {
        self.id
    }

    /// Its [`id_hash`].
    pub fn hash(&self) -> u32 {
        self.hash
    }
}

/// The 32 bits of a job id's hash that sets of ids file it under: foldhash's high half, of
/// one seed per process (drawn at random, as ids come from outside), so that any set's hash
/// of an id is every set's.
pub fn id_hash(id: &str) -> u32 {
    static HASHER: std::sync::OnceLock<foldhash::fast::RandomState> = std::sync::OnceLock::new();
    (HASHER.get_or_init(Default::default).hash_one(id) >> 32) as u32
}

/// What [`Jobs::start`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// A new job is in flight.
    Started,
    /// The id was already in flight; nothing changed.
    Duplicate,
    /// A new job is in flight and the oldest one was dropped to stay under the cap.
    Evicted(Job),
}

/// A slot of [`Jobs`]: a job in flight under its id, or free (`job.seq` is [`FREE`]).
#[derive(Debug)]
struct Entry {
    id: JobId,
    /// The id's hash (32 bits), so the index is rebuilt without hashing ids again.
    hash: u32,
    /// The index cell naming this slot, so the job is dropped from the index without a probe.
    cell: u32,
    job: Job,
}

/// The seq of a free slot; real seqs count up from 0 and never reach it.
const FREE: u64 = u64::MAX;

/// Slots are compacted once at most a quarter of at least this many are in use (few in
/// tests, so the model test reaches it often).
const COMPACT_FROM: usize = if cfg!(test) { 4 } else { 32 };

/// Bytes of an id held inline.
const INLINE_ID: usize = 30;

/// A job id, inline when it fits (provider ids such as OpenAI's `vid_…` and `batch_…` or
/// Anthropic's `msgbatch_…` do), so starting and dropping a job allocates nothing and
/// comparing ids reads no other cache line.
#[derive(Debug)]
enum JobId {
    Inline { len: u8, bytes: [u8; INLINE_ID] },
    Boxed(Box<str>),
}

impl JobId {
    const EMPTY: JobId = JobId::Inline {
        len: 0,
        bytes: [0; INLINE_ID],
    };

    fn new(id: &str) -> Self {
        match u8::try_from(id.len()) {
            Ok(len) if id.len() <= INLINE_ID => {
                let mut bytes = [0; INLINE_ID];
                bytes[..id.len()].copy_from_slice(id.as_bytes());
                JobId::Inline { len, bytes }
            }
            _ => JobId::Boxed(id.into()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            JobId::Inline { len, bytes } => &bytes[..usize::from(*len)],
            JobId::Boxed(b) => b.as_bytes(),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Built from a `&str` and cut at its length, so always UTF-8.
            JobId::Inline { .. } => std::str::from_utf8(self.as_bytes()).unwrap_or_default(),
            JobId::Boxed(b) => b,
        }
    }

    fn is(&self, id: &str) -> bool {
        self.as_bytes() == id.as_bytes()
    }
}

/// Whether `slot` still holds the job of `seq`.
fn holds(slots: &[Entry], slot: u32, seq: u64) -> bool {
    slots.get(slot as usize).is_some_and(|e| e.job.seq == seq)
}

/// Entries of `set` (keyed by start time, then seq) that started after `ts`.
fn started_after(set: &BTreeMap<(i64, u64), u32>, ts: i64) -> usize {
    set.keys()
        .rev()
        .take_while(|(start, _)| *start > ts)
        .count()
}

/// Jobs not yet stuck, oldest start (then seq) first, as (start, seq, slot).
///
/// Starts come mostly in time order, so they are appended to a queue; a start older than the
/// queue's newest goes to `late`, a tree. A job that finishes leaves its queue slot behind:
/// the slot is found dead (its seq no longer filed) when it reaches the front, and dead slots
/// are swept once they outnumber the live ones. So the common start, finish and eviction
/// touch no tree (a tree insert and pop per job were a fifth of replay's per-event work).
#[derive(Debug)]
struct Fresh {
    queue: VecDeque<(i64, u64, u32)>,
    late: BTreeMap<(i64, u64), u32>,
    /// No live job here started before this (`i64::MIN`: not known). Jobs that finish can
    /// only move the oldest start later, so it stays true until [`Jobs::advance`] sets it
    /// again; a start older than it lowers it.
    floor: i64,
}

impl Default for Fresh {
    fn default() -> Fresh {
        Fresh {
            queue: VecDeque::new(),
            late: BTreeMap::new(),
            floor: i64::MIN,
        }
    }
}

impl Fresh {
    fn push(&mut self, start: i64, seq: u64, slot: u32) {
        self.floor = self.floor.min(start);
        match self.queue.back() {
            Some(&(newest, _, _)) if start < newest => {
                self.late.insert((start, seq), slot);
            }
            _ => self.queue.push_back((start, seq, slot)),
        }
    }

    /// Forgets a job that finished: at once if it is in `late`, lazily if in the queue.
    fn forget(&mut self, start: i64, seq: u64) {
        self.late.remove(&(start, seq));
    }

    /// Drops the queue's dead slots once they outnumber the `live` jobs (plus some slack).
    fn sweep(&mut self, live: usize, slots: &[Entry]) {
        if self.queue.len() > 2 * live + 64 {
            self.queue.retain(|&(_, seq, slot)| holds(slots, slot, seq));
        }
    }

    /// The oldest live job, dropping dead slots off the queue's front on the way.
    fn first(&mut self, slots: &[Entry]) -> Option<(i64, u64, u32)> {
        while let Some(&(_, seq, slot)) = self.queue.front() {
            if holds(slots, slot, seq) {
                break;
            }
            self.queue.pop_front();
        }
        let queued = self.queue.front().copied();
        let late = self.late.first_key_value().map(|(&(s, q), &h)| (s, q, h));
        match (queued, late) {
            (Some(a), Some(b)) => Some(if (b.0, b.1) < (a.0, a.1) { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    /// Removes `first`, as [`Fresh::first`] returned it.
    fn pop(&mut self, first: (i64, u64, u32)) {
        if self.queue.front().is_some_and(|f| f.1 == first.1) {
            self.queue.pop_front();
        } else {
            self.late.remove(&(first.0, first.1));
        }
    }

    /// Live jobs that started after `ts`.
    fn later_than(&self, ts: i64, slots: &[Entry]) -> usize {
        let late = started_after(&self.late, ts);
        let queued = self
            .queue
            .iter()
            .rev()
            .take_while(|(start, _, _)| *start > ts)
            .filter(|&&(_, seq, slot)| holds(slots, slot, seq))
            .count();
        late + queued
    }
}

/// Jobs of one org.
///
/// Jobs live in slots; the [`JobIndex`] maps an id (by its hash, computed once per event) to
/// its slot, and the orderings hold slots. Dropping the oldest job or moving it to stuck reads
/// that job's own slot, a freed slot is the next one taken, and the job knows its index cell,
/// so the common eviction at the cap walks the slots in order and stores one tombstone rather
/// than probing a random bucket of a table per job (those cache misses were a tenth of
/// replay's time, then an eighth of the threaded applier's).
#[derive(Debug)]
pub struct Jobs {
    slots: Vec<Entry>,
    /// Free slots, the latest freed last.
    free: Vec<u32>,
    by_id: JobIndex,
    /// Not yet stuck, oldest start first.
    fresh: Fresh,
    /// Stuck and not yet released, by (start time, seq) → slot.
    stuck: BTreeMap<(i64, u64), u32>,
    max: usize,
    next_seq: u64,
    /// The latest start ever filed (`i64::MIN` before the first): no job in flight started
    /// after it, so the concurrency an event at or after it saw is every job in flight.
    newest_start: i64,
}

impl Jobs {
    /// An empty set holding at most `max` jobs.
    pub fn new(max: usize) -> Self {
        Jobs {
            slots: Vec::new(),
            free: Vec::new(),
            by_id: JobIndex::default(),
            fresh: Fresh::default(),
            stuck: BTreeMap::new(),
            max: max.max(1),
            next_seq: 0,
            newest_start: i64::MIN,
        }
    }

    /// True when it holds nothing a new set would not: no job, no sequence number given out.
    pub fn is_unused(&self) -> bool {
        self.by_id.is_empty() && self.next_seq == 0
    }

    /// Jobs in flight (holding a concurrency slot).
    pub fn in_flight(&self) -> usize {
        self.by_id.len()
    }

    /// Jobs currently stuck.
    pub fn stuck_count(&self) -> usize {
        self.stuck.len()
    }

    /// Jobs in flight that had started by `ts`: the concurrency a late event saw.
    pub fn in_flight_at(&self, ts: i64) -> usize {
        if ts >= self.newest_start {
            // In time order (the common case): no walk down the orderings' newest ends.
            return self.by_id.len();
        }
        let later_stuck = started_after(&self.stuck, ts);
        let later_fresh = self.fresh.later_than(ts, &self.slots);
        self.by_id.len() - later_fresh - later_stuck
    }

    /// `id`'s key, hashed once for the event. The index cell a start in this set reads first
    /// is fetched into the cache now: at scale (a thousand jobs per org) the index outgrows
    /// the caches and that read was a miss, about a tenth of one-thread replay's time; asked
    /// for before the event's windows are counted, the cell arrives while they are.
    pub fn key<'a>(&self, id: &'a str) -> JobKey<'a> {
        let key = JobKey::new(id);
        if !self.by_id.is_unsized() {
            self.by_id.prefetch_probe(key.hash);
        }
        key
    }

    /// Starts job `id` at `ts`.
    pub fn start(&mut self, id: &str, app: u32, ts: i64) -> Start {
        self.start_keyed(JobKey::new(id), app, ts)
    }

    /// Starts the job of `key` at `ts`.
    pub fn start_keyed(&mut self, key: JobKey<'_>, app: u32, ts: i64) -> Start {
        let (id, hash) = (key.id, key.hash);
        let slots = &self.slots;
        if self
            .by_id
            .find(hash, |s| slots[s as usize].id.is(id))
            .is_some()
        {
            return Start::Duplicate;
        }
        let evicted = if self.by_id.len() >= self.max {
            self.evict_oldest()
        } else {
            None
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let job = Job {
            started_ms: ts,
            app,
            stuck: false,
            seq,
        };
        let slot = self.file(JobId::new(id), hash, job);
        self.fresh.push(ts, seq, slot);
        if evicted.is_some() {
            self.prefetch_evictions();
        }
        evicted.map_or(Start::Started, Start::Evicted)
    }

    /// At the cap each start evicts the oldest job, whose queue entry, slot and index cell
    /// were long untouched: cache misses at this org's next starts, most of an eviction's
    /// cost. Fetching them now overlaps those misses with the work between. When victims
    /// come off the queue's front (no late or stuck job older, no finished one between), the
    /// next victim's slot was fetched one start ago, so its cell can be read now; the one
    /// after it gets its slot fetched, and the queue a few entries on. Otherwise these are
    /// wasted hints, never wrong answers.
    fn prefetch_evictions(&self) {
        let queue = &self.fresh.queue;
        if let Some(&(_, _, next)) = queue.front()
            && let Some(e) = self.slots.get(next as usize)
        {
            self.by_id.prefetch(e.cell);
        }
        if let Some(&(_, _, after)) = queue.get(1)
            && let Some(e) = self.slots.get(after as usize)
        {
            crate::model::prefetch(e);
        }
        if let Some(ahead) = queue.get(4) {
            crate::model::prefetch(ahead);
        }
    }

    /// Puts `job` in a slot and files it under `hash` (its id's, not yet in the table).
    fn file(&mut self, id: JobId, hash: u32, job: Job) -> u32 {
        self.newest_start = self.newest_start.max(job.started_ms);
        let entry = Entry {
            id,
            hash,
            cell: 0,
            job,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = entry;
                slot
            }
            None => {
                self.slots.push(entry);
                // At most `max` slots are in use; a cap past u32 would be memory long gone.
                u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.index(slot);
        slot
    }

    /// Files the job in `slot` in the index (rebuilding it first when it is full, which files
    /// every job in flight, this one included).
    fn index(&mut self, slot: u32) {
        if self.by_id.needs_rebuild() {
            let mut by_id = JobIndex::for_jobs(self.by_id.len() + 1);
            for (i, e) in self.slots.iter_mut().enumerate() {
                if e.job.seq != FREE {
                    e.cell = by_id.insert(e.hash, i as u32);
                }
            }
            self.by_id = by_id;
        } else if let Some(e) = self.slots.get_mut(slot as usize) {
            e.cell = self.by_id.insert(e.hash, slot);
        }
    }

    /// Takes the job of `seq` out of `slot` and the table, freeing the slot.
    fn take(&mut self, slot: u32, seq: u64) -> Option<Job> {
        if !holds(&self.slots, slot, seq) {
            return None;
        }
        let e = &mut self.slots[slot as usize];
        self.by_id.remove(e.cell);
        let job = e.job;
        e.job.seq = FREE;
        e.id = JobId::EMPTY;
        self.free.push(slot);
        Some(job)
    }

    /// Rebuilds the slots from the jobs in flight once most slots are free, so an org's
    /// memory follows its jobs after a flood has passed.
    fn compact(&mut self) {
        let live = self.by_id.len();
        if self.slots.len() < COMPACT_FROM || live * 4 > self.slots.len() {
            return;
        }
        let mut jobs = Jobs::new(self.max);
        jobs.next_seq = self.next_seq;
        let held = std::mem::take(&mut self.slots)
            .into_iter()
            .filter(|e| e.job.seq != FREE)
            .map(|e| (e.id, e.job));
        jobs.refile(held);
        *self = jobs;
    }

    /// Files `jobs` into this empty set, rebuilding the orderings.
    fn refile(&mut self, jobs: impl Iterator<Item = (JobId, Job)>) {
        let mut fresh = Vec::new();
        for (id, job) in jobs {
            let hash = id_hash(id.as_str());
            let slot = self.file(id, hash, job);
            if job.stuck {
                self.stuck.insert((job.started_ms, job.seq), slot);
            } else {
                fresh.push((job.started_ms, job.seq, slot));
            }
        }
        fresh.sort_unstable();
        for (start, seq, slot) in fresh {
            self.fresh.push(start, seq, slot);
        }
    }

    fn evict_oldest(&mut self) -> Option<Job> {
        let fresh_first = self.fresh.first(&self.slots);
        let from_stuck = match (fresh_first, self.stuck.first_key_value()) {
            (Some(f), Some(s)) => *s.0 <= (f.0, f.1),
            (None, Some(_)) => true,
            (_, None) => false,
        };
        let (seq, slot) = if from_stuck {
            let ((_, seq), slot) = self.stuck.pop_first()?;
            (seq, slot)
        } else {
            let f = fresh_first?;
            self.fresh.pop(f);
            (f.1, f.2)
        };
        self.take(slot, seq)
    }

    /// Files job `from` under the id `to` (an admission lease that learnt its job's id),
    /// keeping its start and place in the orderings. False when `from` is not in flight or
    /// `to` already is.
    pub fn rename(&mut self, from: &str, to: &str) -> bool {
        let (old, new) = (id_hash(from), id_hash(to));
        let slots = &self.slots;
        if self
            .by_id
            .find(new, |s| slots[s as usize].id.is(to))
            .is_some()
        {
            return false;
        }
        let Some((cell, slot)) = self.by_id.find(old, |s| slots[s as usize].id.is(from)) else {
            return false;
        };
        self.by_id.remove(cell);
        let e = &mut self.slots[slot as usize];
        e.id = JobId::new(to);
        e.hash = new;
        self.index(slot);
        true
    }

    /// Whether job `id` is in flight.
    pub fn holds(&self, id: &str) -> bool {
        let slots = &self.slots;
        self.by_id
            .find(id_hash(id), |s| slots[s as usize].id.is(id))
            .is_some()
    }

    /// When the oldest job in flight started: the first to be released by `release_after`.
    pub fn oldest_start(&mut self) -> Option<i64> {
        let fresh = self.fresh.first(&self.slots).map(|f| f.0);
        let stuck = self.stuck.first_key_value().map(|(k, _)| k.0);
        match (fresh, stuck) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Ends job `id`; `None` if it was not in flight.
    pub fn finish(&mut self, id: &str) -> Option<Job> {
        let hash = id_hash(id);
        let slots = &self.slots;
        let (_, slot) = self.by_id.find(hash, |s| slots[s as usize].id.is(id))?;
        let seq = slots[slot as usize].job.seq;
        let job = self.take(slot, seq)?;
        if job.stuck {
            self.stuck.remove(&(job.started_ms, job.seq));
        } else {
            self.fresh.forget(job.started_ms, job.seq);
            let live = self.by_id.len() - self.stuck.len();
            self.fresh.sweep(live, &self.slots);
        }
        self.compact();
        Some(job)
    }

    /// Moves jobs older than `stuck_after` to stuck (calling `on_stuck`) and releases those
    /// older than `release_after` (calling `on_release`), as of `now`.
    pub fn advance(
        &mut self,
        now: i64,
        stuck_after: i64,
        release_after: i64,
        mut on_stuck: impl FnMut(&Job),
        mut on_release: impl FnMut(&Job),
    ) {
        // Every second ticks every org with a job in flight: when no job can be due, the
        // answer is known without looking for the oldest (a cache miss or two per org, a
        // ninth of a replay of 5 000 orgs).
        if self.fresh.floor > now - stuck_after
            && self
                .stuck
                .first_key_value()
                .is_none_or(|(&(start, _), _)| start > now - release_after)
        {
            return;
        }
        self.fresh.floor = i64::MAX;
        while let Some(first) = self.fresh.first(&self.slots) {
            let (start, seq, slot) = first;
            if start > now - stuck_after {
                self.fresh.floor = start;
                break;
            }
            self.fresh.pop(first);
            if let Some(e) = self.slots.get_mut(slot as usize) {
                e.job.stuck = true;
                on_stuck(&e.job);
            }
            self.stuck.insert((start, seq), slot);
        }
        let mut released = false;
        while let Some((&(start, _), _)) = self.stuck.first_key_value()
            && start <= now - release_after
        {
            let Some(((_, seq), slot)) = self.stuck.pop_first() else {
                break;
            };
            if let Some(job) = self.take(slot, seq) {
                on_release(&job);
                released = true;
            }
        }
        if released {
            self.compact();
        }
    }

    /// Stuck jobs, oldest first: (id, job).
    pub fn stuck_jobs(&self) -> impl Iterator<Item = (&str, &Job)> {
        self.stuck.iter().filter_map(|(&(_, seq), &slot)| {
            self.slots
                .get(slot as usize)
                .filter(|e| e.job.seq == seq)
                .map(|e| (e.id.as_str(), &e.job))
        })
    }

    /// Jobs in flight, in slot order.
    fn held(&self) -> impl Iterator<Item = &Entry> {
        self.slots.iter().filter(|e| e.job.seq != FREE)
    }
}

/// Jobs as stored in a snapshot: the jobs and the sequence counter; the orderings are rebuilt.
#[derive(serde::Serialize)]
struct JobsRef<'a> {
    next_seq: u64,
    jobs: Vec<(&'a str, &'a Job)>,
}

#[derive(serde::Deserialize)]
struct JobsOwned {
    next_seq: u64,
    jobs: Vec<(Box<str>, Job)>,
}

impl serde::Serialize for Jobs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        JobsRef {
            next_seq: self.next_seq,
            jobs: self.held().map(|e| (e.id.as_str(), &e.job)).collect(),
        }
        .serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Jobs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let owned = JobsOwned::deserialize(d)?;
        let mut jobs = Jobs::new(usize::MAX);
        jobs.next_seq = owned.next_seq;
        jobs.refile(
            owned
                .jobs
                .into_iter()
                .map(|(id, job)| (JobId::new(&id), job)),
        );
        Ok(jobs)
    }
}

impl Jobs {
    /// Most jobs held in flight.
    pub fn cap(&self) -> usize {
        self.max
    }

    /// Sets the cap after a restore (it comes from the config, not the snapshot).
    pub fn set_max(&mut self, max: usize) {
        self.max = max.max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The obvious model: every job in one list, searched from end to end.
    #[derive(Default)]
    struct Model {
        jobs: Vec<(String, Job)>,
        next_seq: u64,
    }

    impl Model {
        fn oldest(&self, stuck: Option<bool>) -> Option<usize> {
            (0..self.jobs.len())
                .filter(|&i| stuck.is_none_or(|s| self.jobs[i].1.stuck == s))
                .min_by_key(|&i| (self.jobs[i].1.started_ms, self.jobs[i].1.seq))
        }
        fn start(&mut self, id: &str, app: u32, ts: i64, max: usize) -> Start {
            if self.jobs.iter().any(|(j, _)| j == id) {
                return Start::Duplicate;
            }
            let evicted = if self.jobs.len() >= max {
                self.oldest(None).map(|i| self.jobs.remove(i).1)
            } else {
                None
            };
            let job = Job {
                started_ms: ts,
                app,
                stuck: false,
                seq: self.next_seq,
            };
            self.next_seq += 1;
            self.jobs.push((id.to_owned(), job));
            evicted.map_or(Start::Started, Start::Evicted)
        }
        fn finish(&mut self, id: &str) -> Option<Job> {
            let i = self.jobs.iter().position(|(j, _)| j == id)?;
            Some(self.jobs.remove(i).1)
        }
        fn rename(&mut self, from: &str, to: &str) -> bool {
            if self.jobs.iter().any(|(j, _)| j == to) {
                return false;
            }
            match self.jobs.iter_mut().find(|(j, _)| j == from) {
                Some((j, _)) => {
                    *j = to.to_owned();
                    true
                }
                None => false,
            }
        }
        fn advance(&mut self, now: i64, stuck_after: i64, release_after: i64) -> Vec<(bool, Job)> {
            let mut seen = Vec::new();
            while let Some(i) = self.oldest(Some(false))
                && self.jobs[i].1.started_ms <= now - stuck_after
            {
                self.jobs[i].1.stuck = true;
                seen.push((true, self.jobs[i].1));
            }
            while let Some(i) = self.oldest(Some(true))
                && self.jobs[i].1.started_ms <= now - release_after
            {
                seen.push((false, self.jobs.remove(i).1));
            }
            seen
        }
        fn stuck_jobs(&self) -> Vec<(String, Job)> {
            let mut v: Vec<_> = self.jobs.iter().filter(|(_, j)| j.stuck).cloned().collect();
            v.sort_by_key(|(_, j)| (j.started_ms, j.seq));
            v
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Start(u8, i64),
        Finish(u8),
        Rename(u8, u8),
        Advance(i64),
        InFlightAt(i64),
        Restore,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (0u8..64, -50i64..60).prop_map(|(id, dt)| Op::Start(id, dt)),
            3 => (0u8..64).prop_map(Op::Finish),
            1 => (0u8..64, 0u8..64).prop_map(|(from, to)| Op::Rename(from, to)),
            2 => (0i64..40).prop_map(Op::Advance),
            1 => (-60i64..60).prop_map(Op::InFlightAt),
            1 => Just(Op::Restore),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        /// Starts (in order, late or duplicate), finishes, renames, eviction at the cap, stuck
        /// and release, counts as of a past moment and a snapshot restore all answer as the
        /// model.
        #[test]
        fn jobs_answer_as_the_obvious_model(max in prop_oneof![1usize..8, 8usize..40], ops in prop::collection::vec(op(), 1..200)) {
            let (stuck_after, release_after) = (30, 70);
            let mut j = Jobs::new(max);
            let mut m = Model::default();
            let mut now = 0i64;
            for op in ops {
                match op {
                    Op::Start(id, dt) => {
                        let id = format!("job-{id}");
                        let ts = now + dt;
                        prop_assert_eq!(j.start(&id, u32::from(id.len() as u8), ts), m.start(&id, u32::from(id.len() as u8), ts, max));
                    }
                    Op::Finish(id) => {
                        let id = format!("job-{id}");
                        prop_assert_eq!(j.finish(&id), m.finish(&id));
                    }
                    Op::Rename(from, to) => {
                        let (from, to) = (format!("job-{from}"), format!("job-{to}"));
                        prop_assert_eq!(j.rename(&from, &to), m.rename(&from, &to));
                    }
                    Op::Advance(dt) => {
                        now += dt;
                        let mut seen = Vec::new();
                        let seen_cell = std::cell::RefCell::new(&mut seen);
                        j.advance(
                            now,
                            stuck_after,
                            release_after,
                            |x| seen_cell.borrow_mut().push((true, *x)),
                            |x| seen_cell.borrow_mut().push((false, *x)),
                        );
                        prop_assert_eq!(seen, m.advance(now, stuck_after, release_after));
                    }
                    Op::InFlightAt(dt) => {
                        let ts = now + dt;
                        let want = m.jobs.iter().filter(|(_, x)| x.started_ms <= ts).count();
                        prop_assert_eq!(j.in_flight_at(ts), want);
                    }
                    Op::Restore => {
                        let bytes = postcard::to_allocvec(&j).expect("encode");
                        j = postcard::from_bytes(&bytes).expect("decode");
                        j.set_max(max);
                    }
                }
                prop_assert_eq!(j.in_flight(), m.jobs.len());
                prop_assert_eq!(j.stuck_count(), m.stuck_jobs().len());
                let stuck: Vec<(String, Job)> =
                    j.stuck_jobs().map(|(id, x)| (id.to_owned(), *x)).collect();
                prop_assert_eq!(stuck, m.stuck_jobs());
            }
        }
    }

    #[test]
    fn slots_shrink_once_a_flood_of_jobs_has_passed() {
        let mut j = Jobs::new(1_000);
        for i in 0..200 {
            assert_eq!(j.start(&format!("j{i}"), 0, i), Start::Started);
        }
        assert_eq!(j.slots.len(), 200);
        for i in 0..190 {
            assert!(j.finish(&format!("j{i}")).is_some());
        }
        assert!(
            j.slots.len() <= 4 * 10,
            "{} slots for 10 jobs",
            j.slots.len()
        );
        let mut released = Vec::new();
        j.advance(1_000, 10, 500, |_| {}, |job| released.push(job.started_ms));
        assert_eq!(released, (190..200).collect::<Vec<_>>());
        assert_eq!(j.in_flight(), 0);
        assert!(j.slots.len() < COMPACT_FROM, "a few free slots are kept");
        assert_eq!(j.start("j0", 0, 1_000), Start::Started, "an id taken again");
    }

    #[test]
    fn ids_inline_or_boxed_are_the_same_ids() {
        let ids = [
            String::new(),
            "a".repeat(INLINE_ID - 1),
            "b".repeat(INLINE_ID),
            "c".repeat(INLINE_ID + 1),
            "é".repeat(INLINE_ID / 2),
            "vid_5d916bfe1561191a3281fc75".to_owned(),
            "x".repeat(300),
        ];
        let mut j = Jobs::new(100);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(j.start(id, 0, i as i64), Start::Started, "{id}");
            assert_eq!(JobId::new(id).as_str(), id);
        }
        for id in &ids {
            assert_eq!(j.start(id, 0, 99), Start::Duplicate, "{id}");
        }
        // A prefix of a held id is another id.
        assert_eq!(j.finish(&"c".repeat(INLINE_ID)), None);
        for id in &ids {
            assert!(j.finish(id).is_some(), "{id}");
        }
        assert_eq!(j.in_flight(), 0);
    }

    #[test]
    fn start_finish_and_duplicates() {
        let mut j = Jobs::new(10);
        assert_eq!(j.start("a", 0, 100), Start::Started);
        assert_eq!(j.start("a", 0, 200), Start::Duplicate);
        assert_eq!(j.in_flight(), 1);
        assert_eq!(j.finish("a").map(|x| x.started_ms), Some(100));
        assert_eq!(j.finish("a"), None);
        assert_eq!(j.in_flight(), 0);
    }

    #[test]
    fn stuck_then_released() {
        let mut j = Jobs::new(10);
        j.start("a", 1, 0);
        j.start("b", 2, 5_000);
        let (mut stuck, mut released) = (vec![], vec![]);
        j.advance(
            9_999,
            10_000,
            30_000,
            |x| stuck.push(x.app),
            |x| released.push(x.app),
        );
        assert!(stuck.is_empty(), "one ms short of stuck_after");
        j.advance(
            10_000,
            10_000,
            30_000,
            |x| stuck.push(x.app),
            |x| released.push(x.app),
        );
        assert_eq!(stuck, vec![1]);
        assert_eq!(j.stuck_count(), 1);
        assert_eq!(
            j.stuck_jobs().map(|(id, _)| id).collect::<Vec<_>>(),
            vec!["a"]
        );
        j.advance(
            30_000,
            10_000,
            30_000,
            |x| stuck.push(x.app),
            |x| released.push(x.app),
        );
        assert_eq!(stuck, vec![1, 2]);
        assert_eq!(released, vec![1]);
        assert_eq!(j.in_flight(), 1);
        assert_eq!(j.stuck_count(), 1);
        // A stuck job can still finish normally.
        assert!(j.finish("b").is_some_and(|x| x.stuck));
        assert_eq!(j.stuck_count(), 0);
    }

    #[test]
    fn cap_evicts_the_oldest() {
        let mut j = Jobs::new(2);
        j.start("new", 0, 300);
        j.start("old", 0, 100);
        assert!(matches!(
            j.start("x", 0, 400),
            Start::Evicted(Job {
                started_ms: 100,
                ..
            })
        ));
        assert_eq!(j.in_flight(), 2);
        assert!(j.finish("old").is_none());
    }

    #[test]
    fn snapshot_round_trip_keeps_order_and_stuck_state() {
        let mut j = Jobs::new(10);
        j.start("a", 1, 100);
        j.start("b", 2, 200);
        j.advance(150, 50, 1_000, |_| {}, |_| {});
        let bytes = postcard::to_stdvec(&j).unwrap();
        let mut back: Jobs = postcard::from_bytes(&bytes).unwrap();
        back.set_max(10);
        assert_eq!(back.in_flight(), 2);
        assert_eq!(back.stuck_count(), 1);
        assert_eq!(
            back.stuck_jobs().map(|(id, _)| id).collect::<Vec<_>>(),
            vec!["a"]
        );
        assert_eq!(back.start("c", 0, 300), Start::Started);
        assert_eq!(back.finish("b").map(|x| x.app), Some(2));
    }

    #[test]
    fn concurrency_as_of_a_late_time() {
        let mut j = Jobs::new(10);
        j.start("a", 0, 100);
        j.start("b", 0, 200);
        j.start("c", 0, 300);
        assert_eq!(j.in_flight_at(250), 2);
        assert_eq!(j.in_flight_at(300), 3);
        assert_eq!(j.in_flight_at(50), 0);
    }
}
