//! The scheduler: deferred batches of API requests, sent by ratewarden itself inside off-peak
//! windows (or at once), paced under the share of each limit that interactive traffic leaves
//! (SPEC §7).
//!
//! This module holds the batches and every decision about them, as plain functions of `now`
//! (passed in by the caller: nothing here reads a clock):
//! which item goes next and when ([`Scheduler::next`]), what a response means for it
//! ([`Scheduler::settle`]), which jobs to poll. [`dispatch`] drives it with HTTP and timers.
//! Admission reads the org's live usage from the tracker (interactive and batch requests alike,
//! because the dispatcher feeds its own requests back as events) plus its own requests still
//! awaiting an answer. Every item change is stored; an item is stored as in flight, with its
//! idempotency key, before it is sent, so after a crash it is retried with the same key.
//! Upstream credentials live in the config only: never in items, logs or answers.
//!
//! Its parts: this file and `polls` keep the decisions (the state machine); `batch` is the
//! data (batches and items as held, the shapes exchanged with the dispatcher); `persist` turns
//! what a decision changed into stored records and rebuilds batches from them; `report` is
//! what the scheduler tells the rest (metrics, the events fed back to the tracker); `views`
//! is the API's JSON (batches, items, next dispatch, ETA); [`dispatch`] is the driver (HTTP,
//! timers, the clock).

mod batch;
pub mod dispatch;
mod persist;
mod polls;
mod report;
mod views;

pub use batch::{
    Attempt, BatchError, BatchState, Dispatch, Item, ItemState, JobStatus, Mode, NewBatch,
    NewRequest, Next, Poll,
};
use batch::{Batch, ERROR_QUOTE_CHARS, Header, MAX_KEY_LEN, State};
use persist::Changes;

use crate::model::{stable_hash, valid_name};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde_json::Value;

use crate::config::{Config, SchedulerConfig, UpstreamConfig};

use crate::live::Live;
use crate::metrics::Metrics;
use crate::offpeak::OffPeak;
use crate::store::{BatchRecord, ItemRecord};

/// The batches and the decisions about them.
pub struct Scheduler {
    cfg: SchedulerConfig,
    upstreams: BTreeMap<String, UpstreamConfig>,
    offpeak: OffPeak,
    release_after_ms: i64,
    live: Live,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    /// Woken when something changes that may allow a dispatch.
    pub wake: tokio::sync::Notify,
}

/// `share × limit` rounded down, at least 1; `None` for an unlimited dimension.
pub fn allowed(share: f64, limit: u64) -> Option<u64> {
    (limit > 0).then(|| ((share * limit as f64 + 1e-9).floor() as u64).max(1))
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
        let s = Scheduler {
            cfg: config.scheduler.clone(),
            upstreams: config
                .upstreams
                .iter()
                .map(|u| (u.name.clone(), u.clone()))
                .collect(),
            offpeak: config.offpeak.clone(),
            release_after_ms: config.detect.release_after_ms,
            live,
            metrics,
            state: Mutex::new(State::default()),
            wake: tokio::sync::Notify::new(),
        };
        let mut st = persist::restore(batches, items, &s.metrics);
        let mut changes = Changes::new(&s.metrics);
        for b in &mut st.batches {
            for item in &mut b.items {
                if item.state == ItemState::InFlight && item.job_id.is_none() {
                    // It may have been sent; send it again with the same key.
                    item.state = ItemState::Retrying;
                    item.next_attempt_ms = now;
                    changes.item(&b.header.id, item);
                }
            }
            // Batches finished under a version that did not note when are kept a full
            // retention from now.
            if b.note_finished(now) {
                changes.batch(&b.header);
            }
        }
        if changes.items() > 0 {
            tracing::info!(
                items = changes.items(),
                "items in flight at the last stop will be sent again with their keys"
            );
        }
        changes.store(&s.live);
        let mut orgs: Vec<&str> = st.batches.iter().map(|b| b.header.org.as_str()).collect();
        orgs.sort_unstable();
        orgs.dedup();
        for org in orgs {
            s.update_gauges(&st, org);
        }
        *s.lock() = st;
        s
    }

    fn update_gauges(&self, st: &State, org: &str) {
        report::gauges(&self.metrics, st, org);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The configured upstreams' names.
    pub fn upstream_names(&self) -> Vec<String> {
        self.upstreams.keys().cloned().collect()
    }

    /// An upstream's config.
    pub fn upstream(&self, name: &str) -> Option<&UpstreamConfig> {
        self.upstreams.get(name)
    }

    /// The off-peak windows.
    pub fn offpeak(&self) -> &OffPeak {
        &self.offpeak
    }

    /// Validates and stores a new batch; returns its summary and the commit to wait for.
    /// `key` (the submission's `Idempotency-Key`, with a hash of its body) makes the batch's id
    /// a function of the key, upstream and org, so the same submission again finds the first
    /// batch: it is answered as it stands, `false` in the third place, and nothing is created.
    /// The key with a different body is [`BatchError::KeyReused`] (the IETF Idempotency-Key
    /// draft's 422).
    pub fn create(
        &self,
        req: NewBatch,
        key: Option<(&str, u64)>,
        now: i64,
    ) -> Result<(Value, u64, bool), BatchError> {
        let upstream = self.upstreams.get(&req.upstream).ok_or_else(|| {
            BatchError::NotFound(format!(
                "no upstream named {:?} (known: {})",
                req.upstream,
                self.upstream_names().join(", ")
            ))
        })?;
        let org = match req.org {
            Some(o) if o != upstream.org => {
                return Err(BatchError::Invalid(format!(
                    "upstream {:?} draws on org {:?}, not {o:?}",
                    upstream.name, upstream.org
                )));
            }
            Some(o) => o,
            None => upstream.org.clone(),
        };
        if !valid_name(&org) {
            return Err(BatchError::Invalid(
                "org must be 1-128 printable characters".into(),
            ));
        }
        let n = req.requests.len();
        if n == 0 {
            return Err(BatchError::Invalid(
                "a batch needs at least one request".into(),
            ));
        }
        if n > self.cfg.max_batch_items {
            return Err(BatchError::TooLarge(format!(
                "{n} requests; a batch holds at most {} (scheduler.max_batch_items)",
                self.cfg.max_batch_items
            )));
        }
        let id = match key {
            Some((k, _)) => format!(
                "bk{:016x}",
                stable_hash(&[upstream.name.as_bytes(), org.as_bytes(), k.as_bytes()])
            ),
            None => format!("b{:x}{:08x}", now, fastrand::u32(..)),
        };
        let request_hash = key.map(|(_, h)| h);
        let again = |st: &State, at: usize| {
            let first = st.batches[at].header.request_hash;
            if first.is_some() && first != request_hash {
                return Err(BatchError::KeyReused(format!(
                    "this Idempotency-Key was used for another request (batch {id}); use a new key for a new batch"
                )));
            }
            Ok((self.summary(st, at, now), 0, false))
        };
        {
            let st = self.lock();
            if let Some(&at) = st.index.get(&id) {
                return again(&st, at);
            }
        }
        let mut items = Vec::with_capacity(n);
        for (i, r) in req.requests.into_iter().enumerate() {
            let method = r
                .method
                .unwrap_or_else(|| "POST".into())
                .to_ascii_uppercase();
            if !matches!(method.as_str(), "GET" | "POST" | "PUT" | "PATCH" | "DELETE") {
                return Err(BatchError::Invalid(format!(
                    "requests[{i}]: method {method:?} is not GET, POST, PUT, PATCH or DELETE"
                )));
            }
            if !r.path.starts_with('/') || r.path.contains("://") {
                return Err(BatchError::Invalid(format!(
                    "requests[{i}]: path must start with / (it is appended to the upstream's base_url)"
                )));
            }
            let key = match r.idempotency_key {
                Some(k)
                    if k.is_empty() || k.len() > MAX_KEY_LEN || k.chars().any(char::is_control) =>
                {
                    return Err(BatchError::Invalid(format!(
                        "requests[{i}]: idempotency_key must be 1-{MAX_KEY_LEN} printable characters"
                    )));
                }
                Some(k) => k,
                None => format!(
                    "rw-{id}-{i}-{:08x}",
                    stable_hash(&[id.as_bytes(), &(i as u64).to_le_bytes()]) as u32
                ),
            };
            items.push(Item {
                index: i as u32,
                method,
                path: r.path,
                body: r.body.map(|b| b.to_string()),
                key,
                state: ItemState::Pending,
                attempts: 0,
                next_attempt_ms: now,
                dispatched_ms: None,
                last_status: None,
                job_id: None,
                result: None,
                error: None,
                result_bytes: None,
            });
        }
        let header = Header {
            id: id.clone(),
            upstream: upstream.name.clone(),
            org: org.clone(),
            mode: req.mode.unwrap_or(Mode::Offpeak),
            created_ms: now,
            cancelled: false,
            finished_ms: None,
            request_hash,
        };
        let mut st = self.lock();
        if let Some(&at) = st.index.get(&id) {
            // The same submission created it meanwhile.
            return again(&st, at);
        }
        let pending: usize = st
            .batches
            .iter()
            .flat_map(|b| &b.items)
            .filter(|i| !i.state.is_final())
            .count();
        if pending + n > self.cfg.max_pending_items {
            return Err(BatchError::Full(format!(
                "{pending} items are waiting; at most {} may (scheduler.max_pending_items); retry later",
                self.cfg.max_pending_items
            )));
        }
        let mut changes = Changes::new(&self.metrics);
        changes.batch(&header);
        for i in &items {
            changes.item(&id, i);
        }
        let seq = changes.store(&self.live);
        let at = st.batches.len();
        st.index.insert(id.clone(), at);
        st.batches.push(Batch {
            header,
            items,
            unreadable: 0,
        });
        self.update_gauges(&st, &org);
        let summary = self.summary(&st, st.batches.len() - 1, now);
        drop(st);
        tracing::info!(batch = %id, upstream = %upstream.name, org = %org, items = n, "batch accepted");
        self.wake.notify_waiters();
        Ok((summary, seq, true))
    }

    /// Forgets the batches that finished `retention` or longer before `now`, here and in the
    /// store; returns how many.
    pub fn prune(&self, now: i64) -> usize {
        let cutoff = now.saturating_sub(self.cfg.retention_ms);
        let mut st = self.lock();
        let expired =
            |b: &Batch| b.unreadable == 0 && b.header.finished_ms.is_some_and(|f| f <= cutoff);
        let gone: Vec<(String, String)> = st
            .batches
            .iter()
            .filter(|b| expired(b))
            .map(|b| (b.header.id.clone(), b.header.org.clone()))
            .collect();
        if gone.is_empty() {
            return 0;
        }
        st.batches.retain(|b| !expired(b));
        let index = st
            .batches
            .iter()
            .enumerate()
            .map(|(i, b)| (b.header.id.clone(), i))
            .collect();
        st.index = index;
        for lane in st.lanes.values_mut() {
            lane.polled
                .retain(|(batch, _), _| !gone.iter().any(|(id, _)| id == batch));
        }
        let mut orgs: Vec<&String> = gone.iter().map(|(_, org)| org).collect();
        orgs.sort();
        orgs.dedup();
        for org in orgs {
            self.update_gauges(&st, org);
        }
        drop(st);
        tracing::info!(
            batches = gone.len(),
            retention_ms = self.cfg.retention_ms,
            "finished batches past their retention forgotten"
        );
        let n = gone.len();
        self.live
            .forget_batches(gone.into_iter().map(|(id, _)| id).collect());
        n
    }

    /// Cancels the items not sent yet.
    pub fn cancel(&self, id: &str, now: i64) -> Result<(Value, u64), BatchError> {
        let mut st = self.lock();
        let &i = st
            .index
            .get(id)
            .ok_or_else(|| BatchError::NotFound(format!("no batch {id:?}")))?;
        let b = &mut st.batches[i];
        b.header.cancelled = true;
        let mut changes = Changes::new(&self.metrics);
        for it in &mut b.items {
            if matches!(it.state, ItemState::Pending | ItemState::Retrying) {
                it.state = ItemState::Cancelled;
                changes.item(id, it);
            }
        }
        // The header is stored either way (it now says cancelled); finished too if nothing
        // is left in flight.
        b.note_finished(now);
        changes.batch(&b.header);
        let seq = changes.store(&self.live);
        let org = b.header.org.clone();
        self.update_gauges(&st, &org);
        tracing::info!(batch = %id, "batch cancelled");
        Ok((self.summary(&st, i, now), seq))
    }

    fn spacing_ms(&self, upstream: &UpstreamConfig, now: i64) -> i64 {
        let load = self.live.load_of(&upstream.org, now);
        allowed(self.cfg.share, load.limits.rpm)
            .map_or(0, |rpm| (60_000 + rpm as i64 - 1) / rpm as i64)
    }

    /// Whether a batch may send at `now`.
    fn may_send(&self, b: &Batch, now: i64) -> bool {
        !b.header.cancelled && (b.header.mode == Mode::Asap || self.offpeak.is_open(now))
    }

    /// The next thing to do for `upstream` at `now`. A `Send` has already been recorded as in
    /// flight (wait for its commit before sending).
    pub fn next(&self, upstream: &str, now: i64) -> Next {
        let Some(up) = self.upstreams.get(upstream) else {
            return Next::Idle;
        };
        let mut st = self.lock();
        // The oldest due item of a batch allowed to send; else the earliest time one could be.
        let mut candidate: Option<(usize, usize)> = None;
        let mut wake_at: Option<i64> = None;
        let mut waiting_for_window = false;
        'batches: for (bi, b) in st.batches.iter().enumerate() {
            if b.header.upstream != upstream || b.header.cancelled {
                continue;
            }
            let open = self.may_send(b, now);
            for (ii, it) in b.items.iter().enumerate() {
                if !matches!(it.state, ItemState::Pending | ItemState::Retrying) {
                    continue;
                }
                if !open {
                    waiting_for_window = true;
                    continue 'batches;
                }
                if it.next_attempt_ms <= now {
                    candidate = Some((bi, ii));
                    break 'batches;
                }
                wake_at =
                    Some(wake_at.map_or(it.next_attempt_ms, |w: i64| w.min(it.next_attempt_ms)));
            }
        }
        let Some((bi, ii)) = candidate else {
            if waiting_for_window && let Some(open) = self.offpeak.status(now).next_open {
                wake_at = Some(wake_at.map_or(open, |w| w.min(open)));
            }
            return wake_at.map_or(Next::Idle, Next::Wait);
        };
        let spacing = self.spacing_ms(up, now);
        let load = self.live.load_of(&up.org, now);
        let lane = st.lanes.entry(upstream.to_string()).or_default();
        // Circuit: open until the cooldown ends, then one probe at a time.
        if let Some(until) = lane.circuit.open_until {
            if now < until {
                return Next::Wait(until);
            }
            if lane.circuit.probing {
                return Next::Wait(now + 200);
            }
        }
        if let Some(last) = lane.last_dispatch_ms
            && now < last + spacing
        {
            return Next::Wait(last + spacing);
        }
        let share = self.cfg.share;
        let over = |usage: u64, limit: u64| allowed(share, limit).is_some_and(|a| usage + 1 > a);
        if over(load.rpm + lane.awaiting, load.limits.rpm)
            || over(load.in_flight + lane.awaiting, load.limits.concurrency)
            || over(load.daily + lane.awaiting, load.limits.daily)
        {
            // Interactive traffic (or our own jobs) use the share: look again shortly.
            return Next::Wait(now + 250);
        }
        if lane.circuit.open_until.is_some() {
            lane.circuit.probing = true;
        }
        lane.last_dispatch_ms = Some(now);
        lane.awaiting += 1;
        let b = &mut st.batches[bi];
        let it = &mut b.items[ii];
        it.state = ItemState::InFlight;
        it.attempts += 1;
        it.dispatched_ms = Some(now);
        let dispatch = Dispatch {
            batch: b.header.id.clone(),
            index: it.index,
            method: it.method.clone(),
            path: it.path.clone(),
            body: it.body.clone(),
            key: it.key.clone(),
            seq: 0,
        };
        let mut changes = Changes::new(&self.metrics);
        changes.item(&b.header.id, it);
        let org = b.header.org.clone();
        let seq = changes.store(&self.live);
        self.update_gauges(&st, &org);
        Next::Send(Dispatch { seq, ..dispatch })
    }

    /// Records that a dispatched request of `upstream` leaves now. Spacing counts from here,
    /// not from when it was chosen: between the two lies the store's confirmation, whose
    /// latency varies, and the upstream sees when requests arrive.
    pub fn sent(&self, upstream: &str, now: i64) {
        if let Some(lane) = self.lock().lanes.get_mut(upstream) {
            lane.last_dispatch_ms = Some(lane.last_dispatch_ms.map_or(now, |l| l.max(now)));
        }
    }

    /// Records how an attempt ended. Returns the request event to feed to the tracker (what
    /// the upstream counted), if it answered.
    pub fn settle(
        &self,
        d: &Dispatch,
        attempt: Attempt,
        now: i64,
    ) -> Option<crate::events::Event<'static>> {
        let mut st = self.lock();
        let &bi = st.index.get(&d.batch)?;
        let upstream = st.batches[bi].header.upstream.clone();
        let org = st.batches[bi].header.org.clone();
        let poll = self.upstreams.get(&upstream).and_then(|u| u.poll.clone());
        let (max_retries, base, cap) = (
            self.cfg.max_retries,
            self.cfg.backoff_base_ms,
            self.cfg.backoff_cap_ms,
        );
        let (circuit_after, cooldown) = (self.cfg.circuit_after, self.cfg.circuit_cooldown_ms);
        let max_result = self.cfg.max_result_bytes;
        let State { batches, lanes, .. } = &mut *st;
        let lane = lanes.entry(upstream.clone()).or_default();
        lane.awaiting = lane.awaiting.saturating_sub(1);
        lane.circuit.probing = false;
        let mut event = None;
        let outcome;
        {
            let circuit = &mut lane.circuit;
            let b = &mut batches[bi];
            let it = b.items.iter_mut().find(|i| i.index == d.index)?;
            let sent_at = it.dispatched_ms.unwrap_or(now);
            let retry = |it: &mut Item, wait: i64, why: String| {
                if it.attempts > max_retries {
                    it.state = ItemState::Failed;
                    it.error = Some(format!("{why}; gave up after {} attempts", it.attempts));
                } else {
                    it.state = ItemState::Retrying;
                    it.next_attempt_ms = now + wait;
                    it.error = Some(why);
                }
            };
            match attempt {
                Attempt::Answer {
                    status,
                    body,
                    retry_after,
                    job_id,
                } => {
                    it.last_status = Some(status);
                    it.keep_result(&body, max_result);
                    event = Some(report::answered(&org, sent_at, status, retry_after, now));
                    if status == 429 {
                        circuit.consecutive_429 += 1;
                        if circuit.consecutive_429 >= circuit_after {
                            if circuit.open_until.is_none_or(|u| u <= now) {
                                tracing::warn!(upstream = %upstream, consecutive = circuit.consecutive_429, cooldown_ms = cooldown, "circuit open");
                            }
                            circuit.open_until = Some(now + cooldown);
                        }
                        let wait = crate::outbound::backoff_ms(base, cap, it.attempts)
                            .max(retry_after.map_or(0, |r| r.as_millis() as i64));
                        retry(
                            it,
                            wait,
                            format!(
                                "HTTP 429 rate limited{}",
                                retry_after.map_or(String::new(), |r| format!(
                                    ", Retry-After {}s",
                                    r.as_secs()
                                ))
                            ),
                        );
                        outcome = "rate_limited";
                    } else {
                        if circuit.open_until.is_some() {
                            tracing::info!(upstream = %upstream, "circuit closed");
                        }
                        circuit.consecutive_429 = 0;
                        circuit.open_until = None;
                        if (200..300).contains(&status) {
                            match (&poll, job_id) {
                                (Some(_), Some(id)) => {
                                    it.state = ItemState::InFlight;
                                    it.job_id = Some(id.clone());
                                    if let Some(ev) = &mut event {
                                        ev.job_id = Some(id.into());
                                    }
                                }
                                _ => {
                                    it.state = ItemState::Succeeded;
                                    it.error = None;
                                }
                            }
                            outcome = "success";
                        } else if status == 408 || status >= 500 {
                            let wait = crate::outbound::backoff_ms(base, cap, it.attempts)
                                .max(retry_after.map_or(0, |r| r.as_millis() as i64));
                            retry(it, wait, format!("HTTP {status}"));
                            outcome = "server_error";
                        } else if (300..400).contains(&status) {
                            it.state = ItemState::Failed;
                            it.error = Some(format!(
                                "HTTP {status}: redirects are not followed (the request would leave base_url); use the final path"
                            ));
                            outcome = "client_error";
                        } else {
                            it.state = ItemState::Failed;
                            it.error = Some(format!(
                                "HTTP {status}: {}",
                                body.chars().take(ERROR_QUOTE_CHARS).collect::<String>()
                            ));
                            outcome = "client_error";
                        }
                    }
                }
                Attempt::Failed(why) => {
                    let wait = crate::outbound::backoff_ms(base, cap, it.attempts);
                    retry(it, wait, why);
                    outcome = "error";
                }
            }
            tracing::debug!(batch = %d.batch, index = d.index, state = it.state.as_str(), outcome, "item attempt settled");
            let mut changes = Changes::new(&self.metrics);
            changes.item(&d.batch, it);
            b.note_failure(d.index);
            if b.note_finished(now) {
                changes.batch(&b.header);
            }
            changes.store(&self.live);
        }
        self.metrics.batch_request(&org, outcome);
        self.update_gauges(&st, &org);
        drop(st);
        self.wake.notify_waiters();
        event
    }
}

#[cfg(test)]
mod tests;
