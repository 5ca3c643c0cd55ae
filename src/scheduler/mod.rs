//! The scheduler: deferred batches of API requests, sent by ratewarden itself inside off-peak
//! windows (or at once), paced under the share of each limit that interactive traffic leaves
//! (SPEC §7).
//!
//! [`Scheduler`] holds the batches and carries out the decisions about them: which item
//! goes next and when, what a response means for it, which jobs to poll. The decisions
//! themselves are pure (`machine`, `polls`): functions of the state and the `now` and usage
//! they are given, returning what changed; this file stores those changes (through `live`),
//! updates the metrics and wakes the lanes. [`dispatch`] drives it with HTTP and timers.
//! Admission reads the org's live usage from the tracker (interactive and batch requests alike,
//! because the dispatcher feeds its own requests back as events) plus its own requests still
//! awaiting an answer. Every item change is stored; an item is stored as in flight, with its
//! idempotency key, before it is sent, so after a crash it is retried with the same key.
//! Upstream credentials live in the config only: never in items, logs or answers. On a
//! replica of a cluster the batches are the shared log's ([`Scheduler::following`]): every
//! replica takes changes over HTTP and absorbs the others' through the log, and only the
//! leader's dispatcher acts ([`Scheduler::take_over`]).
//!
//! Its parts: `machine` and `polls` (the decisions), `batch` (the data and the shapes
//! exchanged with the dispatcher), `persist` (what a decision changed as stored records, and
//! batches rebuilt from them), `report` (its metrics and the events fed back to the
//! tracker), `views` (the API's JSON: batches, items, next dispatch, ETA), [`dispatch`] (the
//! driver: HTTP, timers, the clock).

mod batch;
pub mod dispatch;
mod machine;
mod persist;
mod polls;
mod report;
mod views;

use batch::State;
pub use batch::{
    Attempt, BatchError, BatchState, Dispatch, Item, ItemState, JobStatus, Mode, NewBatch,
    NewRequest, Next, Poll,
};
pub use machine::allowed;
use machine::{Effects, Rules};

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde_json::Value;

use crate::config::{Config, UpstreamConfig};
use crate::events::Event;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::offpeak::OffPeak;
use crate::store::{BatchRecord, ItemRecord};

/// The batches and the decisions about them, with what the decisions' effects go to: the
/// store (through the live state), the metrics and the dispatcher's wake-up.
pub struct Scheduler {
    rules: Rules,
    live: Live,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    /// Woken when something changes that may allow a dispatch.
    pub wake: tokio::sync::Notify,
}

/// The value at a dotted path, as text.
pub fn field(v: &Value, path: &str) -> Option<String> {
    let found = path.split('.').try_fold(v, |cur, seg| cur.get(seg))?;
    match found {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Scheduler {
    /// A scheduler for `config`, holding the stored batches (in-flight items that were not
    /// answered before a restart become due again, with their key).
    pub fn new(
        config: &Config,
        live: Live,
        metrics: Arc<Metrics>,
        batches: Vec<BatchRecord>,
        items: Vec<ItemRecord>,
        now: i64,
    ) -> Scheduler {
        let rules = Rules::new(config);
        let mut st = persist::restore(batches, items, &metrics);
        let fx = rules.restored(&mut st, now);
        let s = Scheduler {
            rules,
            live,
            metrics,
            state: Mutex::new(st),
            wake: tokio::sync::Notify::new(),
        };
        let st = s.lock();
        s.apply(&st, fx);
        drop(st);
        s
    }

    /// A replica's scheduler (`[cluster]`), holding the batches of the shared log: nothing
    /// is changed or stored at start (the leader may be sending what is in flight); items
    /// in flight become due again only when this replica takes the lead
    /// ([`Scheduler::take_over`]).
    pub fn following(
        config: &Config,
        live: Live,
        metrics: Arc<Metrics>,
        batches: Vec<BatchRecord>,
        items: Vec<ItemRecord>,
    ) -> Scheduler {
        let st = persist::restore(batches, items, &metrics);
        let mut orgs: Vec<&str> = st.batches.iter().map(|b| b.header.org.as_str()).collect();
        orgs.sort_unstable();
        orgs.dedup();
        for org in orgs {
            report::gauges(&metrics, &st, org);
        }
        Scheduler {
            rules: Rules::new(config),
            live,
            metrics,
            state: Mutex::new(st),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// A replica that leads under `term` (its fencing token) starts dispatching: once per
    /// term, items left in flight (by the previous leader, or by this one in an earlier term)
    /// become due again, with their keys, as after a restart.
    pub fn take_over(&self, term: u64, now: i64) {
        let mut st = self.lock();
        if st.term == term {
            return;
        }
        st.term = term;
        let fx = self.rules.restored(&mut st, now);
        self.apply(&st, fx);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Carries out what a decision changed, while its state is still held: stores the
    /// records, updates the gauges, counts the outcome, wakes the lanes. Returns the commit
    /// to wait for before acting on the decision.
    fn apply(&self, st: &State, mut fx: Effects) -> u64 {
        let seq = persist::store(st, &mut fx, &self.metrics, &self.live);
        fx.orgs.sort_unstable();
        fx.orgs.dedup();
        for org in &fx.orgs {
            report::gauges(&self.metrics, st, org);
        }
        if let Some((org, outcome)) = &fx.outcome {
            self.metrics.batch_request(org, outcome);
        }
        if fx.wake {
            self.wake.notify_waiters();
        }
        seq
    }

    /// The configured upstreams' names.
    pub fn upstream_names(&self) -> Vec<String> {
        self.rules.upstreams.keys().cloned().collect()
    }

    /// An upstream's config.
    pub fn upstream(&self, name: &str) -> Option<&UpstreamConfig> {
        self.rules.upstreams.get(name)
    }

    /// The off-peak windows.
    pub fn offpeak(&self) -> &OffPeak {
        &self.rules.offpeak
    }

    /// Validates and stores a new batch; returns its summary, the commit to wait for, and
    /// whether it was created (`false`: the same `Idempotency-Key` and body found the first
    /// batch, answered as it stands); the key with another body is [`BatchError::KeyReused`].
    pub fn create(
        &self,
        req: NewBatch,
        key: Option<(&str, u64)>,
        now: i64,
    ) -> Result<(Value, u64, bool), BatchError> {
        let mut st = self.lock();
        let (at, created, fx) = self.rules.create(&mut st, req, key, now)?;
        let seq = if created { self.apply(&st, fx) } else { 0 };
        Ok((self.summary(&st, at, now), seq, created))
    }

    /// The id a batch submitted to `upstream` (for `org`, default the upstream's) with
    /// `Idempotency-Key` `key` gets; `None` for an unknown upstream or another org (the
    /// submission is refused anyway).
    pub fn keyed_batch_id(&self, upstream: &str, org: Option<&str>, key: &str) -> Option<String> {
        let u = self.rules.upstreams.get(upstream)?;
        let org = org.unwrap_or(&u.org);
        (org == u.org).then(|| machine::keyed_id(&u.name, org, key))
    }

    /// Whether this scheduler holds batch `id`.
    pub fn holds(&self, id: &str) -> bool {
        self.lock().index.contains_key(id)
    }

    /// Forgets the batches that finished `retention` or longer before `now`, here and in the
    /// store; returns how many.
    pub fn prune(&self, now: i64) -> usize {
        let mut st = self.lock();
        let fx = self.rules.prune(&mut st, now);
        let n = fx.forgotten.len();
        if n > 0 {
            self.apply(&st, fx);
        }
        n
    }

    /// Cancels the items not sent yet; returns the batch's summary and the commit to wait for.
    pub fn cancel(&self, id: &str, now: i64) -> Result<(Value, u64), BatchError> {
        let mut st = self.lock();
        let (i, fx) = self.rules.cancel(&mut st, id, now)?;
        let seq = self.apply(&st, fx);
        Ok((self.summary(&st, i, now), seq))
    }

    /// The next thing to do for `upstream` at `now`. A `Send` has already been recorded as in
    /// flight (wait for its commit, `seq`, before sending).
    pub fn next(&self, upstream: &str, now: i64) -> Next {
        let Some(up) = self.rules.upstreams.get(upstream) else {
            return Next::Idle;
        };
        let load = self.live.load_of(&up.org, now);
        let mut st = self.lock();
        match self.rules.next(&mut st, upstream, &load, now) {
            (Next::Send(d), fx) => {
                let seq = self.apply(&st, fx);
                Next::Send(Dispatch { seq, ..d })
            }
            (other, _) => other,
        }
    }

    /// The org whose limits `upstream` draws on.
    pub fn org_of(&self, upstream: &str) -> Option<&str> {
        self.rules.upstreams.get(upstream).map(|u| u.org.as_str())
    }

    /// Whether `upstream`'s jobs are polled (each dispatched one then holds a job slot).
    pub fn polls(&self, upstream: &str) -> bool {
        self.rules
            .upstreams
            .get(upstream)
            .is_some_and(|u| u.poll.is_some())
    }

    /// `[scheduler] share`: the dispatcher's ceiling on each limit, in basis points.
    pub fn share_bp(&self) -> u32 {
        (self.rules.cfg.share * 10_000.0)
            .round()
            .clamp(1.0, 10_000.0) as u32
    }

    /// Puts back a chosen item that was not sent (the arbiter had no room): due again at
    /// `until`, its attempt not counted. Returns the commit that stores it.
    pub fn defer(&self, d: &Dispatch, until: i64) -> Option<u64> {
        let mut st = self.lock();
        let fx = self.rules.defer(&mut st, d, until)?;
        Some(self.apply(&st, fx))
    }

    /// Records that a dispatched request of `upstream` leaves now. Spacing counts from here,
    /// not from when it was chosen: between the two lies the store's confirmation, whose
    /// latency varies, and the upstream sees when requests arrive.
    pub fn sent(&self, upstream: &str, now: i64) {
        self.rules.sent(&mut self.lock(), upstream, now);
    }

    /// Records how an attempt ended. Returns the request event to feed to the tracker (what
    /// the upstream counted), if it answered.
    pub fn settle(&self, d: &Dispatch, attempt: Attempt, now: i64) -> Option<Event<'static>> {
        let mut st = self.lock();
        let (event, fx) = self.rules.settle(&mut st, d, attempt, now)?;
        self.apply(&st, fx);
        event
    }

    /// Jobs of `upstream` due for a status poll at `now`.
    pub fn polls_due(&self, upstream: &str, now: i64) -> Vec<Poll> {
        self.rules.polls_due(&mut self.lock(), upstream, now)
    }

    /// Records a poll's finding. Returns the lifecycle event to feed to the tracker.
    pub fn polled(&self, p: &Poll, status: JobStatus, now: i64) -> Option<Event<'static>> {
        let mut st = self.lock();
        let (event, fx) = self.rules.polled(&mut st, p, status, now)?;
        self.apply(&st, fx);
        event
    }
}

#[cfg(test)]
mod tests;

/// Batch changes other replicas made, from the shared log: each record replaces this
/// replica's (they come from the leader, that sends, or from a replica that took a new batch
/// or a cancellation over HTTP).
impl crate::live::mirror::BatchMirror for Scheduler {
    fn absorb(&self, changes: &crate::store::BatchChanges) {
        let mut st = self.lock();
        let orgs = persist::absorb(&mut st, changes, &self.metrics);
        for org in &orgs {
            report::gauges(&self.metrics, &st, org);
        }
        drop(st);
        self.wake.notify_waiters();
    }
}
