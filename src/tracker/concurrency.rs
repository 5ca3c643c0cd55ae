//! Jobs in flight over time, for one org: the peak concurrency and the job ends that came
//! before their starts, both independent of the order job events arrive in.
//!
//! Replay's `peak_concurrency` is the most jobs in flight at any job start. With events in
//! time order that is the count right after each start. Out of order (several shippers) a
//! start or an end can arrive after later starts were counted, and change what those starts
//! saw. So each start within the lateness horizon keeps its count, provisional, and a late
//! start or end corrects the counts of the starts it overlaps; a start's count becomes final
//! (settled into the peak) once the horizon has passed it. The counts are exact for job
//! events up to [`HORIZON_MS`] late, while the org's queues stay under their cap (twice its
//! job cap; past it the oldest starts are settled as they leave); older ones are counted as
//! they come.
//!
//! [`EarlyEnds`] holds job ends whose start has not arrived yet, so the start, when it comes,
//! is a job that already finished instead of one in flight forever.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::jobs::{JobKey, JobOutcome, id_hash};

/// How late a job event may be and still be counted exactly (the windows' slack).
pub const HORIZON_MS: i64 = 300_000;

/// Peak concurrency at job starts, settled once the horizon has passed them.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PeakConcurrency {
    /// The peak among settled starts.
    settled: u64,
    /// Starts not yet past the horizon, ascending, each with the jobs in flight at it.
    pending: VecDeque<(i64, u64)>,
    /// Jobs that ended, (start, end), ascending by end, kept while they can matter to a start
    /// within the horizon.
    ended: VecDeque<(i64, i64)>,
    /// Most entries kept in `pending` and `ended` each (the org's job cap, twice).
    #[serde(skip)]
    cap: usize,
    /// No entry leaves `pending` or `ended` before the horizon reaches this: a lower bound,
    /// lowered as entries come and made exact by each settle that looks. The queues' fronts
    /// are the horizon's oldest entries, long out of cache, and settling on every event
    /// read them: a cache miss or two per event (half of the samples `perf annotate` gave
    /// an event's apply in replay).
    #[serde(skip, default = "settle_now")]
    settle_from: i64,
    /// No start in `pending` is later than this, nor any end in `ended` later than
    /// `latest_end`: upper bounds, so that a start or end in time order (nearly all) knows
    /// it comes last without reading the queues' backs, which went out of cache while other
    /// orgs' events were counted.
    #[serde(skip, default = "unknown_latest")]
    latest_start: i64,
    #[serde(skip, default = "unknown_latest")]
    latest_end: i64,
}

/// Whether an entry at `t` comes at or after every entry of a queue whose entries are at most
/// `*latest` and whose newest is `back()`. The queue is read only when the bound cannot
/// answer, and the bound is then made exact (it is unknown after a restore).
fn comes_last(latest: &mut i64, t: i64, back: impl FnOnce() -> Option<i64>) -> bool {
    if *latest <= t {
        return true;
    }
    *latest = back().unwrap_or(i64::MIN);
    *latest <= t
}

/// Files `item` in `queue`, ascending by `key` (after entries of the same key): at the back
/// when it comes `last`, as nearly every item does.
fn file_in_order<T>(queue: &mut VecDeque<T>, item: T, last: bool, key: impl Fn(&T) -> i64) {
    if last {
        queue.push_back(item);
    } else {
        let k = key(&item);
        let at = queue.partition_point(|x| key(x) <= k);
        queue.insert(at, item);
    }
}

/// A `settle_from` that makes the next settle look.
fn settle_now() -> i64 {
    i64::MIN
}

/// A `latest_start` or `latest_end` that makes the next start or end look.
fn unknown_latest() -> i64 {
    i64::MAX
}

impl Default for PeakConcurrency {
    fn default() -> Self {
        PeakConcurrency {
            settled: 0,
            pending: VecDeque::new(),
            ended: VecDeque::new(),
            cap: 0,
            settle_from: settle_now(),
            // Nothing queued: nothing later than anything.
            latest_start: i64::MIN,
            latest_end: i64::MIN,
        }
    }
}

impl PeakConcurrency {
    /// Settled from an older snapshot's peak.
    pub fn from_peak(peak: u64) -> PeakConcurrency {
        PeakConcurrency {
            settled: peak,
            ..PeakConcurrency::default()
        }
    }

    /// True when it holds nothing: no peak, no start or end waiting for the horizon.
    pub fn is_empty(&self) -> bool {
        self.settled == 0 && self.pending.is_empty() && self.ended.is_empty()
    }

    /// Bounds the memory: at most `cap` pending starts and `cap` ended jobs (the oldest
    /// settled first: a late event no longer corrects those).
    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap.max(16);
    }

    /// The most jobs in flight at any job start so far.
    pub fn peak(&self) -> u64 {
        self.pending
            .iter()
            .map(|&(_, n)| n)
            .max()
            .unwrap_or(0)
            .max(self.settled)
    }

    /// A job started at `start`, ending at `end` if its end is already known (it arrived
    /// first). `others` is how many other jobs in flight had started by `start`.
    pub fn start(&mut self, start: i64, end: Option<i64>, others: u64, floor: i64) {
        let ended_over = if self.latest_end <= start {
            0
        } else {
            self.ended
                .iter()
                .rev()
                .take_while(|&&(_, e)| e > start)
                .filter(|&&(s, _)| s <= start)
                .count() as u64
        };
        // A job whose end is not after its start (clocks apart) was never in flight.
        let itself = u64::from(end.is_none_or(|e| e > start));
        let count = others + ended_over + itself;
        // In time order (the common case) no start counted so far comes after this one.
        let in_order = comes_last(&mut self.latest_start, start, || {
            self.pending.back().map(|&(t, _)| t)
        });
        if !in_order {
            // Starts counted before this one that it overlaps saw one job fewer than they had.
            let until = end.unwrap_or(i64::MAX);
            let from = self.pending.partition_point(|&(t, _)| t <= start);
            for (t, n) in self.pending.iter_mut().skip(from) {
                if *t >= until {
                    break;
                }
                *n += 1;
            }
        }
        if start < floor {
            self.settled = self.settled.max(count);
        } else {
            self.settle_from = self.settle_from.min(start.saturating_add(1));
            self.latest_start = self.latest_start.max(start);
            file_in_order(&mut self.pending, (start, count), in_order, |&(t, _)| t);
        }
        if let Some(e) = end {
            self.note_end(start, e, floor);
        }
        self.bound();
    }

    /// A job in flight since `start` ended (finished, timed out, dropped) at `end`.
    pub fn end(&mut self, start: i64, end: i64, floor: i64) {
        // Starts at or after its end were counted with it in flight (a job that ends at t is
        // not in flight at t, whichever of the two events came first). In time order there
        // are none.
        // A job whose end is not after its start (clocks apart) was not in flight at its own
        // start either.
        let from_t = end.max(start);
        if self.latest_start >= from_t && self.pending.back().is_some_and(|&(t, _)| t >= from_t) {
            let from = self.pending.partition_point(|&(t, _)| t < from_t);
            for (_, n) in self.pending.iter_mut().skip(from) {
                *n = n.saturating_sub(1);
            }
        }
        self.note_end(start, end, floor);
        self.bound();
    }

    fn note_end(&mut self, start: i64, end: i64, floor: i64) {
        if end <= floor {
            return;
        }
        self.settle_from = self.settle_from.min(end);
        let last = comes_last(&mut self.latest_end, end, || {
            self.ended.back().map(|&(_, e)| e)
        });
        self.latest_end = self.latest_end.max(end);
        file_in_order(&mut self.ended, (start, end), last, |&(_, e)| e);
    }

    /// The horizon moved to `floor`: starts before it are final.
    pub fn settle(&mut self, floor: i64) {
        if floor < self.settle_from {
            return;
        }
        while let Some(&(t, n)) = self.pending.front()
            && t < floor
        {
            self.settled = self.settled.max(n);
            self.pending.pop_front();
        }
        while self.ended.front().is_some_and(|&(_, e)| e <= floor) {
            self.ended.pop_front();
        }
        // A start leaves once the floor is past it, an end once the floor reaches it.
        let start = self.pending.front().map(|&(t, _)| t.saturating_add(1));
        let end = self.ended.front().map(|&(_, e)| e);
        self.settle_from = start.into_iter().chain(end).min().unwrap_or(i64::MAX);
        // An emptied queue has nothing later than anything (its bound may be unknown).
        if self.pending.is_empty() {
            self.latest_start = i64::MIN;
        }
        if self.ended.is_empty() {
            self.latest_end = i64::MIN;
        }
    }

    /// Holds each queue to `cap` entries, the oldest settled first. One at a time: leaving
    /// in batches (fewer cache misses) settled starts that a late event within the horizon
    /// would still have corrected.
    fn bound(&mut self) {
        let cap = if self.cap == 0 { 2048 } else { self.cap };
        while self.pending.len() > cap {
            if let Some((_, n)) = self.pending.pop_front() {
                self.settled = self.settled.max(n);
            }
        }
        while self.ended.len() > cap {
            self.ended.pop_front();
        }
    }
}

/// The filter's word and bit for an id of [`id_hash`] `hash`: twelve of its bits, from
/// another seed than the map's, so an id the filter lets through shares no more with a
/// held one than a random id would.
fn filter_bit(hash: u32) -> (usize, u64) {
    ((hash >> 6) as usize % FILTER_WORDS, 1 << (hash & 63))
}

/// Bits of [`EarlyEnds::maybe`], a one-hash Bloom filter of the ids held.
const FILTER_WORDS: usize = 64;

/// Job ends whose start has not arrived (yet), by job id, for the horizon.
///
/// Every start asks whether its id ended early, and nearly none did: the map's answer was a
/// probe of a random bucket, a cache miss. A filter of 4 096 bits (half a kilobyte, which
/// stays in cache) answers most of them "no" first; it cannot forget, so it is rebuilt from
/// the map once more ids have left than remain (and 64 more, so a small map is not rebuilt
/// at every other take).
#[derive(Debug, Clone)]
pub struct EarlyEnds {
    by_id: HashMap<Arc<str>, (i64, JobOutcome), foldhash::fast::RandomState>,
    /// (end, id) in arrival order, to forget them once past the horizon.
    order: VecDeque<(i64, Arc<str>)>,
    /// A bit set for every id held (and for some that left, until the next rebuild).
    maybe: [u64; FILTER_WORDS],
    /// Ids that left since the filter was built.
    left: usize,
}

impl Default for EarlyEnds {
    fn default() -> Self {
        EarlyEnds {
            by_id: HashMap::default(),
            order: VecDeque::new(),
            maybe: [0; FILTER_WORDS],
            left: 0,
        }
    }
}

impl EarlyEnds {
    /// Notes that job `id` ended at `ts` with `outcome` before its start was seen. At most
    /// `cap` are kept (the oldest are forgotten first).
    pub fn note(&mut self, id: &str, ts: i64, outcome: JobOutcome, cap: usize) {
        let (word, bit) = filter_bit(id_hash(id));
        self.maybe[word] |= bit;
        let id: Arc<str> = Arc::from(id);
        // An id noted again at another time is queued at that time too: its older place in
        // the queue no longer matches the map, so it would never be forgotten otherwise.
        match self.by_id.insert(id.clone(), (ts, outcome)) {
            Some((was, _)) if was == ts => {}
            _ => self.order.push_back((ts, id)),
        }
        // At most `cap` ids, and at most twice as many places in the queue (those of ids
        // noted again, or taken, are left behind until they reach its front).
        let cap = cap.max(1);
        while self.by_id.len() > cap || self.order.len() > cap.saturating_mul(2) {
            self.forget_oldest();
        }
    }

    /// The end of the job `key` names that came before its start. It may be stamped a
    /// little before the start (two shippers' clocks): it is that job's end all the same.
    pub fn take(&mut self, key: JobKey<'_>) -> Option<(i64, JobOutcome)> {
        if self.by_id.is_empty() {
            return None;
        }
        let (word, bit) = filter_bit(key.hash());
        if self.maybe[word] & bit == 0 {
            return None;
        }
        let taken = self.by_id.remove(key.id());
        if taken.is_some() {
            self.note_left();
        }
        taken
    }

    /// Counts an id that left, rebuilding the filter from those held once more have left
    /// than remain, plus 64 (so stale bits never outnumber live ones for long).
    fn note_left(&mut self) {
        self.left += 1;
        if self.left > self.by_id.len() + 64 {
            self.maybe = self.filter_of_held();
            self.left = 0;
        }
    }

    /// The filter of exactly the ids held, as a rebuild makes it.
    fn filter_of_held(&self) -> [u64; FILTER_WORDS] {
        let mut maybe = [0; FILTER_WORDS];
        for id in self.by_id.keys() {
            let (word, bit) = filter_bit(id_hash(id));
            maybe[word] |= bit;
        }
        maybe
    }

    /// Forgets ends older than `floor`: their starts will not come within the horizon.
    pub fn expire(&mut self, floor: i64) {
        while self.order.front().is_some_and(|(ts, _)| *ts < floor) {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((ts, id)) = self.order.pop_front()
            && self.by_id.get(&id).is_some_and(|(t, _)| *t == ts)
        {
            self.by_id.remove(&id);
            self.note_left();
        }
    }

    /// True when none are held.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

impl serde::Serialize for EarlyEnds {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Each id held once, at its place in the queue for the end it holds (an id noted
        // again has older places left behind).
        let mut written = std::collections::HashSet::new();
        let v: Vec<(&Arc<str>, i64, u8)> = self
            .order
            .iter()
            .filter_map(|(at, id)| match self.by_id.get(id) {
                Some(&(t, o)) if t == *at && written.insert(&**id) => Some((id, t, o as u8)),
                _ => None,
            })
            .collect();
        v.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for EarlyEnds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v: Vec<(Arc<str>, i64, u8)> = serde::Deserialize::deserialize(d)?;
        let mut e = EarlyEnds::default();
        for (id, ts, o) in v {
            let outcome = JobOutcome::ALL
                .get(o as usize)
                .copied()
                .unwrap_or(JobOutcome::Completed);
            e.note(&id, ts, outcome, usize::MAX);
        }
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// (start, end) intervals → the most overlapping at any start, by brute force.
    fn brute(jobs: &[(i64, i64)]) -> u64 {
        jobs.iter()
            .map(|&(s, _)| jobs.iter().filter(|&&(a, b)| a <= s && s < b).count() as u64)
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn late_ends_and_starts_correct_the_counts_they_overlap() {
        // A [10, 20), B [15, 25), C [22, 30): at most 2 at once.
        let jobs = [(10, 20), (15, 25), (22, 30)];
        assert_eq!(brute(&jobs), 2);
        // In order: A, B start; A ends; C starts; B, C end.
        let mut p = PeakConcurrency::default();
        p.start(10, None, 0, 0);
        p.start(15, None, 1, 0);
        p.end(10, 20, 0);
        p.start(22, None, 1, 0);
        assert_eq!(p.peak(), 2);
        // A's end arrives after C started: C was counted with A in flight, then corrected.
        let mut q = PeakConcurrency::default();
        q.start(10, None, 0, 0);
        q.start(15, None, 1, 0);
        q.start(22, None, 2, 0);
        assert_eq!(q.peak(), 3, "provisional");
        q.end(10, 20, 0);
        assert_eq!(q.peak(), 2);
        // B's start arrives last, already ended (its end came first).
        let mut r = PeakConcurrency::default();
        r.start(10, None, 0, 0);
        r.end(10, 20, 0);
        r.start(22, None, 0, 0);
        r.start(15, Some(25), 0, 0);
        assert_eq!(r.peak(), 2);
    }

    #[test]
    fn settling_keeps_the_peak_and_bounds_memory() {
        let mut p = PeakConcurrency::default();
        p.set_cap(16);
        for i in 0..100 {
            p.start(i * 10, None, i as u64, 0);
        }
        assert!(p.pending.len() <= 16);
        assert_eq!(p.peak(), 100);
        p.settle(10_000);
        assert!(p.pending.is_empty());
        assert_eq!(p.peak(), 100);
    }

    #[test]
    fn early_ends_wait_for_their_start_within_the_horizon() {
        let mut e = EarlyEnds::default();
        e.note("j1", 100, JobOutcome::Completed, 10);
        assert_eq!(
            e.take(JobKey::new("j1")),
            Some((100, JobOutcome::Completed))
        );
        assert_eq!(e.take(JobKey::new("j1")), None, "used once");
        e.note("j3", 100, JobOutcome::Failed, 10);
        e.expire(101);
        assert!(e.is_empty());
        for i in 0..20 {
            e.note(&format!("k{i}"), i, JobOutcome::Completed, 5);
        }
        assert_eq!(e.by_id.len(), 5);
    }

    impl EarlyEnds {
        /// What the filter must hold whatever happened: a bit for every id held (its
        /// rebuild's bits), no more stale ones than the rebuild rule allows.
        fn filter_is_sound(&self) -> bool {
            let needed = self.filter_of_held();
            let covers = needed.iter().zip(&self.maybe).all(|(n, m)| n & !m == 0);
            let fresh = self.left > 0 || self.maybe == needed;
            covers && fresh && self.left <= self.by_id.len() + 64
        }
    }

    #[test]
    fn an_id_noted_again_later_is_forgotten_at_its_later_time() {
        let mut e = EarlyEnds::default();
        e.note("j", 100, JobOutcome::Completed, 10);
        e.note("j", 500, JobOutcome::Failed, 10);
        e.expire(200);
        assert_eq!(e.by_id.len(), 1, "its end at 500 is within the horizon");
        e.expire(501);
        assert!(e.is_empty(), "and leaves once past it");
    }

    #[test]
    fn an_id_noted_again_is_stored_once() {
        let mut e = EarlyEnds::default();
        e.note("j", 100, JobOutcome::Completed, 10);
        e.note("k", 150, JobOutcome::Completed, 10);
        e.note("j", 200, JobOutcome::Failed, 10);
        // Taken and noted again at the same time: two places in the queue match.
        e.take(JobKey::new("k"));
        e.note("k", 150, JobOutcome::Completed, 10);
        let bytes = postcard::to_stdvec(&e).unwrap();
        let stored: Vec<(String, i64, u8)> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(
            stored,
            [
                ("k".to_string(), 150, JobOutcome::Completed as u8),
                ("j".to_string(), 200, JobOutcome::Failed as u8)
            ]
        );
        let back: EarlyEnds = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(postcard::to_stdvec(&back).unwrap(), bytes, "stored as read");
        // Places left behind do not take an id's room under the cap.
        let mut full = EarlyEnds::default();
        for ts in 0..5 {
            full.note("again", ts, JobOutcome::Completed, 3);
        }
        full.note("a", 10, JobOutcome::Completed, 3);
        full.note("b", 11, JobOutcome::Completed, 3);
        assert_eq!(full.by_id.len(), 3);
        assert!(full.order.len() <= 6);
    }

    #[test]
    fn taking_most_ids_rebuilds_the_filter_and_clones_keep_it() {
        let mut e = EarlyEnds::default();
        for i in 0..200 {
            e.note(&format!("j{i}"), i, JobOutcome::Completed, 1_000);
        }
        let full = e.maybe.iter().map(|w| w.count_ones()).sum::<u32>();
        for i in 0..190 {
            assert!(e.take(JobKey::new(&format!("j{i}"))).is_some());
        }
        let after = e.maybe.iter().map(|w| w.count_ones()).sum::<u32>();
        assert!(after < full, "rebuilt: {after} bits set of {full}");
        assert!(e.filter_is_sound());
        let copy = e.clone();
        let back: EarlyEnds = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        for mut x in [e, copy, back] {
            assert!(x.filter_is_sound());
            for i in 190..200 {
                assert_eq!(
                    x.take(JobKey::new(&format!("j{i}"))),
                    Some((i, JobOutcome::Completed))
                );
            }
            assert_eq!(x.take(JobKey::new("j0")), None);
        }
    }

    #[derive(Debug, Clone)]
    enum EndOp {
        Note(u16, i64),
        Take(u16),
        Expire(i64),
    }

    proptest! {
        /// With its filter in front (rebuilt as ids leave), early ends answer exactly as the
        /// map alone: every id noted and not yet taken or forgotten is found, no other.
        #[test]
        fn the_filter_never_hides_an_early_end(ops in prop::collection::vec(prop_oneof![
            3 => (0u16..600, 0i64..1_000).prop_map(|(id, ts)| EndOp::Note(id, ts)),
            3 => (0u16..600).prop_map(EndOp::Take),
            1 => (0i64..1_000).prop_map(EndOp::Expire),
        ], 0..600), cap in 1usize..400) {
            let mut e = EarlyEnds::default();
            // The map alone: the same ends without the filter.
            let mut plain: EarlyEnds = EarlyEnds::default();
            for op in ops {
                match op {
                    EndOp::Note(id, ts) => {
                        e.note(&format!("j{id}"), ts, JobOutcome::Completed, cap);
                        plain.note(&format!("j{id}"), ts, JobOutcome::Completed, cap);
                    }
                    EndOp::Take(id) => {
                        let id = format!("j{id}");
                        prop_assert_eq!(e.take(JobKey::new(&id)), plain.by_id.remove(id.as_str()));
                    }
                    EndOp::Expire(floor) => {
                        e.expire(floor);
                        plain.expire(floor);
                    }
                }
                prop_assert_eq!(e.by_id.len(), plain.by_id.len());
                prop_assert!(e.filter_is_sound());
            }
        }

        /// Settling only once the horizon reaches `settle_from`, and taking a start or end
        /// as the latest by the bounds `latest_start` and `latest_end`, leave exactly the
        /// state of reading the queues every time, whatever order starts, ends and horizons
        /// come in, across a snapshot too.
        #[test]
        fn the_queue_bounds_answer_as_the_queues_do(ops in prop::collection::vec(prop_oneof![
            3 => (0i64..2_000, prop::option::of(0i64..2_000), 0u64..5)
                .prop_map(|(t, end, others)| PeakOp::Start(t, end, others)),
            2 => (0i64..2_000, 0i64..2_000).prop_map(|(s, e)| PeakOp::End(s, e)),
            2 => (-500i64..2_000).prop_map(PeakOp::Settle),
            1 => Just(PeakOp::Restore),
        ], 0..300), cap in 16usize..64) {
            let mut p = PeakConcurrency::default();
            p.set_cap(cap);
            let mut always = p.clone();
            let mut floor = i64::MIN;
            for op in ops {
                // The queues read at every step, as if no bound were known.
                always.settle_from = settle_now();
                always.latest_start = unknown_latest();
                always.latest_end = unknown_latest();
                match op {
                    PeakOp::Start(t, end, others) => {
                        p.start(t, end, others, floor);
                        always.start(t, end, others, floor);
                    }
                    PeakOp::End(s, e) => {
                        p.end(s, e, floor);
                        always.end(s, e, floor);
                    }
                    PeakOp::Settle(f) => {
                        floor = floor.max(f);
                        p.settle(floor);
                        always.settle(floor);
                    }
                    PeakOp::Restore => {
                        p = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
                        p.set_cap(cap);
                    }
                }
                prop_assert_eq!(p.settled, always.settled);
                prop_assert_eq!(&p.pending, &always.pending);
                prop_assert_eq!(&p.ended, &always.ended);
                prop_assert_eq!(p.peak(), always.peak());
            }
        }
    }

    #[test]
    fn the_queue_bounds_are_known_again_after_a_restore() {
        let mut p = PeakConcurrency::default();
        p.start(10, None, 0, 0);
        p.end(10, 20, 0);
        let mut back: PeakConcurrency =
            serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!((back.latest_start, back.latest_end), (i64::MAX, i64::MAX));
        // The first start and end in order read the backs, and know them from then on.
        back.start(30, None, 0, 0);
        back.end(30, 40, 0);
        assert_eq!((back.latest_start, back.latest_end), (30, 40));
        // Emptied queues know it too.
        back.settle(1_000);
        assert_eq!((back.latest_start, back.latest_end), (i64::MIN, i64::MIN));
        assert_eq!(back.peak(), 1);
    }

    #[derive(Debug, Clone)]
    enum PeakOp {
        Start(i64, Option<i64>, u64),
        End(i64, i64),
        Settle(i64),
        Restore,
    }
}
