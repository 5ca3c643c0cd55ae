//! The scheduler's decisions, as a state machine over the batches: which item goes next and
//! when ([`Rules::next`]), what an answer means for it ([`Rules::settle`]), what a new or
//! cancelled batch changes, which finished batches are forgotten. Every decision is a
//! function of the state, the `now` it is given and (for admission) the org's usage it is
//! given; it changes only the state and returns what changed ([`Effects`]) for its caller
//! to store, count and announce. Nothing here reads a clock, touches the store or metrics,
//! or does I/O; randomness (ids, backoff jitter) comes from the state's own generator.

use std::collections::BTreeMap;

use super::batch::{
    Attempt, Batch, BatchError, Dispatch, ERROR_QUOTE_CHARS, Header, Item, ItemState, MAX_KEY_LEN,
    Mode, NewBatch, Next, State,
};
use super::report;
use crate::config::{Config, SchedulerConfig, UpstreamConfig};
use crate::events::Event;
use crate::model::{stable_hash, valid_name};
use crate::offpeak::OffPeak;
use crate::tracker::OrgLoad;

/// `share × limit` rounded down, at least 1; `None` for an unlimited dimension.
pub fn allowed(share: f64, limit: u64) -> Option<u64> {
    (limit > 0).then(|| ((share * limit as f64 + 1e-9).floor() as u64).max(1))
}

/// What a decision changed, for its caller to apply while it still holds the state: the
/// positions are valid until the state changes again.
#[derive(Debug, Default)]
pub(super) struct Effects {
    /// Batches (by position) whose header is to be stored.
    pub(super) headers: Vec<usize>,
    /// Items (batch position, item position) to be stored.
    pub(super) items: Vec<(usize, usize)>,
    /// Batches forgotten, to drop from the store with their items.
    pub(super) forgotten: Vec<String>,
    /// Orgs whose item counts changed (their gauges).
    pub(super) orgs: Vec<String>,
    /// An attempt's outcome, for `batch_requests_total{org,outcome}`.
    pub(super) outcome: Option<(String, &'static str)>,
    /// Something may be dispatched sooner than the lanes think.
    pub(super) wake: bool,
}

/// What the decisions follow: the config's scheduler settings, upstreams and windows.
pub(super) struct Rules {
    pub(super) cfg: SchedulerConfig,
    pub(super) upstreams: BTreeMap<String, UpstreamConfig>,
    pub(super) offpeak: OffPeak,
    pub(super) release_after_ms: i64,
}

/// The id of the batch submitted with `Idempotency-Key` `key` to `upstream` for `org`: the
/// same submission again finds the first batch.
pub(super) fn keyed_id(upstream: &str, org: &str, key: &str) -> String {
    format!(
        "bk{:016x}",
        stable_hash(&[upstream.as_bytes(), org.as_bytes(), key.as_bytes()])
    )
}

impl Rules {
    pub(super) fn new(config: &Config) -> Rules {
        Rules {
            cfg: config.scheduler.clone(),
            upstreams: config
                .upstreams
                .iter()
                .map(|u| (u.name.clone(), u.clone()))
                .collect(),
            offpeak: config.offpeak.clone(),
            release_after_ms: config.detect.release_after_ms,
        }
    }

    /// The state as restored from the store at `now`: items that were in flight without a job
    /// id may have been sent, so they are due again (with the same key); batches finished
    /// under a version that did not note when are kept a full retention from now.
    pub(super) fn restored(&self, st: &mut State, now: i64) -> Effects {
        let mut fx = Effects::default();
        for (bi, b) in st.batches.iter_mut().enumerate() {
            for (ii, item) in b.items.iter_mut().enumerate() {
                if item.state == ItemState::InFlight && item.job_id.is_none() {
                    item.state = ItemState::Retrying;
                    item.next_attempt_ms = now;
                    fx.items.push((bi, ii));
                }
            }
            if b.note_finished(now) {
                fx.headers.push(bi);
            }
            fx.orgs.push(b.header.org.clone());
        }
        if !fx.items.is_empty() {
            tracing::info!(
                items = fx.items.len(),
                "items in flight at the last stop will be sent again with their keys"
            );
        }
        fx
    }

    /// Validates a new batch and adds it; returns its position, whether it is new and what
    /// to store. `key` (the submission's `Idempotency-Key`, with a hash of its body) makes the
    /// batch's id a function of the key, upstream and org, so the same submission again finds
    /// the first batch: it is answered as it stands, `false` in the second place, and nothing
    /// is created. The key with a different body is [`BatchError::KeyReused`] (the IETF
    /// Idempotency-Key draft's 422).
    pub(super) fn create(
        &self,
        st: &mut State,
        req: NewBatch,
        key: Option<(&str, u64)>,
        now: i64,
    ) -> Result<(usize, bool, Effects), BatchError> {
        let upstream = self.upstreams.get(&req.upstream).ok_or_else(|| {
            BatchError::NotFound(format!(
                "no upstream named {:?} (known: {})",
                req.upstream,
                self.upstreams
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
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
            Some((k, _)) => keyed_id(&upstream.name, &org, k),
            None => format!("b{:x}{:08x}", now, st.rng.u32(..)),
        };
        let request_hash = key.map(|(_, h)| h);
        let again = |st: &State, at: usize| {
            let first = st.batches[at].header.request_hash;
            if first.is_some() && first != request_hash {
                return Err(BatchError::key_reused(&id));
            }
            Ok((at, false, Effects::default()))
        };
        if let Some(&at) = st.index.get(&id) {
            return again(st, at);
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
        let at = st.batches.len();
        let fx = Effects {
            headers: vec![at],
            items: (0..items.len()).map(|i| (at, i)).collect(),
            orgs: vec![org.clone()],
            wake: true,
            ..Effects::default()
        };
        st.index.insert(id.clone(), at);
        st.batches.push(Batch {
            header,
            items,
            unreadable: 0,
        });
        tracing::info!(batch = %id, upstream = %upstream.name, org = %org, items = n, "batch accepted");
        Ok((at, true, fx))
    }

    /// Forgets the batches that finished `retention` or longer before `now`, here and in the
    /// store (the effects name them).
    pub(super) fn prune(&self, st: &mut State, now: i64) -> Effects {
        let cutoff = now.saturating_sub(self.cfg.retention_ms);
        let expired =
            |b: &Batch| b.unreadable == 0 && b.header.finished_ms.is_some_and(|f| f <= cutoff);
        let gone: Vec<(String, String)> = st
            .batches
            .iter()
            .filter(|b| expired(b))
            .map(|b| (b.header.id.clone(), b.header.org.clone()))
            .collect();
        if gone.is_empty() {
            return Effects::default();
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
        tracing::info!(
            batches = gone.len(),
            retention_ms = self.cfg.retention_ms,
            "finished batches past their retention forgotten"
        );
        let (forgotten, orgs) = gone.into_iter().unzip();
        Effects {
            forgotten,
            orgs,
            ..Effects::default()
        }
    }

    /// Cancels the items not sent yet.
    pub(super) fn cancel(
        &self,
        st: &mut State,
        id: &str,
        now: i64,
    ) -> Result<(usize, Effects), BatchError> {
        let &i = st
            .index
            .get(id)
            .ok_or_else(|| BatchError::NotFound(format!("no batch {id:?}")))?;
        let b = &mut st.batches[i];
        b.header.cancelled = true;
        let mut fx = Effects {
            headers: vec![i],
            orgs: vec![b.header.org.clone()],
            ..Effects::default()
        };
        for (ii, it) in b.items.iter_mut().enumerate() {
            if matches!(it.state, ItemState::Pending | ItemState::Retrying) {
                it.state = ItemState::Cancelled;
                fx.items.push((i, ii));
            }
        }
        // The header is stored either way (it now says cancelled); finished too if nothing
        // is left in flight.
        b.note_finished(now);
        tracing::info!(batch = %id, "batch cancelled");
        Ok((i, fx))
    }

    /// Milliseconds between two dispatches at the share of the org's rpm limit (0 when it
    /// has none).
    pub(super) fn spacing_ms(&self, load: &OrgLoad) -> i64 {
        allowed(self.cfg.share, load.limits.rpm)
            .map_or(0, |rpm| (60_000 + rpm as i64 - 1) / rpm as i64)
    }

    /// Whether a batch may send at `now`.
    pub(super) fn may_send(&self, b: &Batch, now: i64) -> bool {
        !b.header.cancelled && (b.header.mode == Mode::Asap || self.offpeak.is_open(now))
    }

    /// The next thing to do for `upstream` at `now`, `load` being its org's usage. A `Send`
    /// is in flight from here on; its effects store it so (wait for that commit before
    /// sending).
    pub(super) fn next(
        &self,
        st: &mut State,
        upstream: &str,
        load: &OrgLoad,
        now: i64,
    ) -> (Next, Effects) {
        if !self.upstreams.contains_key(upstream) {
            return (Next::Idle, Effects::default());
        }
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
            return (wake_at.map_or(Next::Idle, Next::Wait), Effects::default());
        };
        let spacing = self.spacing_ms(load);
        let lane = st.lanes.entry(upstream.to_string()).or_default();
        // Circuit: open until the cooldown ends, then one probe at a time.
        if let Some(until) = lane.circuit.open_until {
            if now < until {
                return (Next::Wait(until), Effects::default());
            }
            if lane.circuit.probing {
                return (Next::Wait(now + 200), Effects::default());
            }
        }
        if let Some(last) = lane.last_dispatch_ms
            && now < last + spacing
        {
            return (Next::Wait(last + spacing), Effects::default());
        }
        let share = self.cfg.share;
        let over = |usage: u64, limit: u64| allowed(share, limit).is_some_and(|a| usage + 1 > a);
        if over(load.rpm + lane.awaiting, load.limits.rpm)
            || over(load.in_flight + lane.awaiting, load.limits.concurrency)
            || over(load.daily + lane.awaiting, load.limits.daily)
        {
            // Interactive traffic (or our own jobs) use the share: look again shortly.
            return (Next::Wait(now + 250), Effects::default());
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
            lease: None,
        };
        let fx = Effects {
            items: vec![(bi, ii)],
            orgs: vec![b.header.org.clone()],
            ..Effects::default()
        };
        (Next::Send(dispatch), fx)
    }

    /// Records that a dispatched request of `upstream` leaves now. Spacing counts from here,
    /// not from when it was chosen: between the two lies the store's confirmation, whose
    /// latency varies, and the upstream sees when requests arrive.
    pub(super) fn sent(&self, st: &mut State, upstream: &str, now: i64) {
        if let Some(lane) = st.lanes.get_mut(upstream) {
            lane.last_dispatch_ms = Some(lane.last_dispatch_ms.map_or(now, |l| l.max(now)));
        }
    }

    /// Puts back an item chosen by [`Rules::next`] that was not sent (the arbiter had no
    /// room for it): as it was before, due again at `until`, its attempt not counted.
    pub(super) fn defer(&self, st: &mut State, d: &Dispatch, until: i64) -> Option<Effects> {
        let &bi = st.index.get(&d.batch)?;
        let upstream = st.batches[bi].header.upstream.clone();
        if let Some(lane) = st.lanes.get_mut(&upstream) {
            lane.awaiting = lane.awaiting.saturating_sub(1);
            lane.circuit.probing = false;
        }
        let b = &mut st.batches[bi];
        let ii = b.items.iter().position(|i| i.index == d.index)?;
        let it = &mut b.items[ii];
        if it.state != ItemState::InFlight || it.job_id.is_some() {
            return None;
        }
        it.attempts = it.attempts.saturating_sub(1);
        it.state = if it.attempts == 0 {
            ItemState::Pending
        } else {
            ItemState::Retrying
        };
        it.dispatched_ms = None;
        it.next_attempt_ms = until;
        Some(Effects {
            items: vec![(bi, ii)],
            orgs: vec![b.header.org.clone()],
            wake: true,
            ..Effects::default()
        })
    }

    /// Records how an attempt ended. Returns the request event to feed to the tracker (what
    /// the upstream counted), if it answered; `None` for an attempt of a batch or item no
    /// longer held.
    pub(super) fn settle(
        &self,
        st: &mut State,
        d: &Dispatch,
        attempt: Attempt,
        now: i64,
    ) -> Option<(Option<Event<'static>>, Effects)> {
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
        let State {
            batches,
            lanes,
            rng,
            ..
        } = st;
        let lane = lanes.entry(upstream.clone()).or_default();
        lane.awaiting = lane.awaiting.saturating_sub(1);
        lane.circuit.probing = false;
        let mut event = None;
        let mut fx = Effects::default();
        let outcome;
        {
            let circuit = &mut lane.circuit;
            let b = &mut batches[bi];
            let ii = b.items.iter().position(|i| i.index == d.index)?;
            let it = &mut b.items[ii];
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
                    if let (Some(ev), Some(lease)) = (&mut event, &d.lease) {
                        ev.request_id = Some(lease.clone().into());
                    }
                    if status == 429 {
                        circuit.consecutive_429 += 1;
                        if circuit.consecutive_429 >= circuit_after {
                            if circuit.open_until.is_none_or(|u| u <= now) {
                                tracing::warn!(upstream = %upstream, consecutive = circuit.consecutive_429, cooldown_ms = cooldown, "circuit open");
                            }
                            circuit.open_until = Some(now + cooldown);
                        }
                        let wait = crate::outbound::backoff_ms(rng, base, cap, it.attempts)
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
                            let wait = crate::outbound::backoff_ms(rng, base, cap, it.attempts)
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
                    let wait = crate::outbound::backoff_ms(rng, base, cap, it.attempts);
                    retry(it, wait, why);
                    outcome = "error";
                }
            }
            tracing::debug!(batch = %d.batch, index = d.index, state = it.state.as_str(), outcome, "item attempt settled");
            b.note_failure(d.index);
            fx.items.push((bi, ii));
            if b.note_finished(now) {
                fx.headers.push(bi);
            }
        }
        fx.orgs.push(org.clone());
        fx.outcome = Some((org, outcome));
        fx.wake = true;
        Some((event, fx))
    }
}
