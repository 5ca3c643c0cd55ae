//! Jobs in flight for one org: started, stuck, finished or released.
//!
//! Jobs are keyed by id (scoped per org) and ordered by start time, so "which jobs became
//! stuck or must be released by now" touches only those jobs. The count is capped: past
//! `max` jobs the oldest is dropped, because a flood of ids that never finish must not grow
//! memory (SPEC §10); far past any concurrency limit the count carries no information.

use std::collections::BTreeMap;
use std::hash::BuildHasher;

use hashbrown::HashTable;

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

/// A job in flight under its id.
#[derive(Debug)]
struct Entry {
    id: Box<str>,
    job: Job,
}

/// Jobs of one org.
///
/// The table is keyed by the id's hash, computed once per event; the orderings hold that
/// hash, and a job is found again by hash and `seq` (unique within the org), so dropping the
/// oldest job or moving it to stuck hashes and compares no string.
#[derive(Debug)]
pub struct Jobs {
    by_id: HashTable<Entry>,
    hasher: foldhash::fast::RandomState,
    /// Not yet stuck, by (start time, seq) → id hash: integer keys keep the ordering cheap.
    fresh: BTreeMap<(i64, u64), u64>,
    /// Stuck and not yet released, by (start time, seq) → id hash.
    stuck: BTreeMap<(i64, u64), u64>,
    max: usize,
    next_seq: u64,
}

impl Jobs {
    /// An empty set holding at most `max` jobs.
    pub fn new(max: usize) -> Self {
        Jobs {
            by_id: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
            fresh: BTreeMap::new(),
            stuck: BTreeMap::new(),
            max: max.max(1),
            next_seq: 0,
        }
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
        let later = |s: &BTreeMap<(i64, u64), u64>| {
            s.keys().rev().take_while(|(start, _)| *start > ts).count()
        };
        self.by_id.len() - later(&self.fresh) - later(&self.stuck)
    }

    fn hash(&self, id: &str) -> u64 {
        self.hasher.hash_one(id)
    }

    /// Starts job `id` at `ts`.
    pub fn start(&mut self, id: &str, app: u32, ts: i64) -> Start {
        let hash = self.hash(id);
        if self.by_id.find(hash, |e| &*e.id == id).is_some() {
            return Start::Duplicate;
        }
        let evicted = if self.by_id.len() >= self.max {
            self.evict_oldest()
        } else {
            None
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.fresh.insert((ts, seq), hash);
        let job = Job {
            started_ms: ts,
            app,
            stuck: false,
            seq,
        };
        self.insert(hash, Entry { id: id.into(), job });
        evicted.map_or(Start::Started, Start::Evicted)
    }

    /// Files `entry` under `hash` (its id's, not yet in the table).
    fn insert(&mut self, hash: u64, entry: Entry) {
        let hasher = &self.hasher;
        self.by_id
            .insert_unique(hash, entry, |e| hasher.hash_one(&*e.id));
    }

    /// Removes the job of `seq` filed under `hash`.
    fn take(&mut self, hash: u64, seq: u64) -> Option<Job> {
        let found = self.by_id.find_entry(hash, |e| e.job.seq == seq).ok()?;
        Some(found.remove().0.job)
    }

    fn evict_oldest(&mut self) -> Option<Job> {
        let from_stuck = match (self.fresh.first_key_value(), self.stuck.first_key_value()) {
            (Some(f), Some(s)) => s.0 <= f.0,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        let set = if from_stuck {
            &mut self.stuck
        } else {
            &mut self.fresh
        };
        let ((_, seq), hash) = set.pop_first()?;
        self.take(hash, seq)
    }

    /// Ends job `id`; `None` if it was not in flight.
    pub fn finish(&mut self, id: &str) -> Option<Job> {
        let hash = self.hash(id);
        let found = self.by_id.find_entry(hash, |e| &*e.id == id).ok()?;
        let job = found.remove().0.job;
        let set = if job.stuck {
            &mut self.stuck
        } else {
            &mut self.fresh
        };
        set.remove(&(job.started_ms, job.seq));
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
        while let Some((&(start, _), _)) = self.fresh.first_key_value()
            && start <= now - stuck_after
        {
            let Some((key, hash)) = self.fresh.pop_first() else {
                break;
            };
            if let Some(e) = self.by_id.find_mut(hash, |e| e.job.seq == key.1) {
                e.job.stuck = true;
                on_stuck(&e.job);
            }
            self.stuck.insert(key, hash);
        }
        while let Some((&(start, _), _)) = self.stuck.first_key_value()
            && start <= now - release_after
        {
            let Some(((_, seq), hash)) = self.stuck.pop_first() else {
                break;
            };
            if let Some(job) = self.take(hash, seq) {
                on_release(&job);
            }
        }
    }

    /// Stuck jobs, oldest first: (id, job).
    pub fn stuck_jobs(&self) -> impl Iterator<Item = (&str, &Job)> {
        self.stuck.iter().filter_map(|(&(_, seq), &hash)| {
            self.by_id
                .find(hash, |e| e.job.seq == seq)
                .map(|e| (&*e.id, &e.job))
        })
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
            jobs: self.by_id.iter().map(|e| (&*e.id, &e.job)).collect(),
        }
        .serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Jobs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let owned = JobsOwned::deserialize(d)?;
        let mut jobs = Jobs::new(usize::MAX);
        jobs.next_seq = owned.next_seq;
        for (id, job) in owned.jobs {
            let hash = jobs.hash(&id);
            let set = if job.stuck {
                &mut jobs.stuck
            } else {
                &mut jobs.fresh
            };
            set.insert((job.started_ms, job.seq), hash);
            jobs.insert(hash, Entry { id, job });
        }
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
