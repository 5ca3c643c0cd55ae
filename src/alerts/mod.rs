//! Alert delivery: every notifying transition to every channel that wants it, at least once.
//!
//! [`crate::outbox`] decides which channels a transition goes to; the resulting notifications
//! are written to the store's outbox in the same commit as the transition's cause (see
//! [`crate::live`]). Only committed notifications reach [`Delivery`], which runs one worker per
//! channel: a FIFO queue (a resolve never overtakes its firing), full-jitter exponential
//! backoff between `retry_base` and `retry_cap`, the receiver's `Retry-After` honoured, and a
//! notification given up after `max_age`. Outcomes go back to the store through `live`, so a
//! restart resumes where delivery stood. A crash between sending and recording can repeat a
//! notification; its delivery id is stable so receivers can tell.

pub mod email;
mod error;
pub mod render;
pub mod webhook;

pub use error::DeliveryError;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::clock::rfc3339;
use crate::config::{AlertsConfig, ChannelConfig, ChannelKind};
use crate::detect::Transition;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::model::stable_hash;
use crate::store::{OutboxEntry, OutboxUpdate, record};

/// How long Alertmanager should hold a firing alert without hearing from us again.
fn firing_for_ms(a: &AlertsConfig) -> i64 {
    if a.repeat_interval_ms > 0 {
        (2 * a.repeat_interval_ms).max(3_600_000)
    } else {
        7 * 24 * 3_600_000
    }
}

/// One channel's way out.
pub enum Sender {
    /// SMTP.
    Email(email::EmailSender),
    /// HTTP.
    Webhook(webhook::WebhookSender),
}

impl Sender {
    /// A sender for `c`, reading its secret now.
    pub fn new(c: &ChannelConfig, alerts: &AlertsConfig) -> Result<Sender, String> {
        let secret = |s: Option<&crate::config::SecretRef>| s.map(|s| s.read()).transpose();
        match &c.kind {
            ChannelKind::Email(e) => Ok(Sender::Email(email::EmailSender::new(
                e,
                secret(e.password.as_ref())?,
            )?)),
            ChannelKind::Webhook(w) => Ok(Sender::Webhook(webhook::WebhookSender::new(
                w,
                secret(w.secret.as_ref())?,
                c.min_severity,
                firing_for_ms(alerts),
            )?)),
        }
    }

    /// Delivers `t` once.
    pub async fn send(
        &self,
        t: &Transition,
        delivery_id: &str,
        now_ms: i64,
    ) -> Result<(), DeliveryError> {
        match self {
            Sender::Email(e) => e.send(t, delivery_id).await,
            Sender::Webhook(w) => w.send(t, delivery_id, now_ms).await,
        }
    }

    /// Delivers a group of notifications once, as one message or request.
    pub async fn send_group(
        &self,
        g: &render::Group<'_>,
        now_ms: i64,
    ) -> Result<(), DeliveryError> {
        match self {
            Sender::Email(e) => e.send_group(g).await,
            Sender::Webhook(w) => w.send_group(g, now_ms).await,
        }
    }
}

/// A channel's delivery state, shown by `GET /v1/alerts`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChannelState {
    /// Channel name.
    pub name: String,
    /// `email`, `webhook`, `slack` or `alertmanager`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Notifications waiting.
    pub pending: usize,
    /// Delivered since start.
    pub delivered: u64,
    /// Given up since start.
    pub failed: u64,
    /// Last successful delivery (RFC 3339).
    pub last_success: Option<String>,
    /// Last failed attempt: when and the receiver's answer.
    pub last_error: Option<LastError>,
}

/// A failed attempt.
#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    /// When (RFC 3339).
    pub at: String,
    /// What went wrong, with the receiver's answer.
    pub message: String,
}

/// Channel states, shared with the API.
pub type ChannelStates = Arc<Mutex<BTreeMap<String, ChannelState>>>;

/// Retry policy.
#[derive(Debug, Clone, Copy)]
struct Policy {
    base_ms: i64,
    cap_ms: i64,
    max_age_ms: i64,
}

impl Policy {
    /// Full-jitter exponential backoff: a random wait between `base` and
    /// `min(cap, base × 2^attempts)`.
    fn backoff(&self, attempts: u32) -> Duration {
        Duration::from_millis(
            crate::outbound::backoff_ms(
                &mut fastrand::Rng::new(),
                self.base_ms,
                self.cap_ms,
                attempts,
            )
            .max(0) as u64,
        )
    }
}

/// Delivery, built and not started: a worker per channel (its sender ready), the stored
/// backlog and the queue of what is committed from now on. [`Delivery::start`] starts it.
pub struct Delivery {
    states: ChannelStates,
    live: Live,
    workers: Vec<(Worker, mpsc::UnboundedReceiver<OutboxEntry>)>,
    queues: HashMap<String, mpsc::UnboundedSender<OutboxEntry>>,
    backlog: Vec<OutboxEntry>,
    incoming: mpsc::UnboundedReceiver<OutboxEntry>,
    gate: Option<Gate>,
}

/// A replica of a cluster delivers only while it leads; what the leader delivered is marked
/// in the shared engine and dropped from every other replica's outbox (see `cluster`).
pub struct Gate {
    /// Where the marks and the lease are.
    pub log: crate::cluster::SharedLog,
    /// This replica's standing.
    pub leadership: crate::cluster::Leadership,
}

/// How often a replica that does not lead looks for what the leader delivered.
const GATE_CHECK: Duration = Duration::from_secs(1);

/// The running delivery workers, stopped by [`Delivering::stop`].
pub struct Delivering {
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

struct Pending {
    entry: OutboxEntry,
    transition: Transition,
}

impl Delivery {
    /// A worker per channel. `backlog` (from the store, oldest first) is to be delivered before
    /// what arrives on `incoming` (notifications committed from now on). Fails, starting
    /// nothing, when a channel's sender cannot be built (its TLS, its address).
    pub fn new(
        alerts: &AlertsConfig,
        live: Live,
        metrics: Arc<Metrics>,
        backlog: Vec<OutboxEntry>,
        incoming: mpsc::UnboundedReceiver<OutboxEntry>,
    ) -> Result<Delivery, String> {
        let states: ChannelStates = Arc::default();
        let policy = Policy {
            base_ms: alerts.retry_base_ms,
            cap_ms: alerts.retry_cap_ms,
            max_age_ms: alerts.max_age_ms,
        };
        let mut queues: HashMap<String, mpsc::UnboundedSender<OutboxEntry>> = HashMap::new();
        let mut workers = Vec::new();
        for c in &alerts.channels {
            let sender = Sender::new(c, alerts).map_err(|e| format!("channel {}: {e}", c.name))?;
            let (tx, rx) = mpsc::unbounded_channel();
            queues.insert(c.name.clone(), tx);
            states
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(
                    c.name.clone(),
                    ChannelState {
                        name: c.name.clone(),
                        kind: c.kind_name().into(),
                        ..ChannelState::default()
                    },
                );
            metrics.declare_channel(&c.name);
            let worker = Worker {
                name: c.name.clone(),
                sender,
                live: live.clone(),
                metrics: metrics.clone(),
                states: states.clone(),
                policy,
                queue: VecDeque::new(),
                max_per_minute: c.max_per_minute,
                attempts: VecDeque::new(),
                group: None,
            };
            workers.push((worker, rx));
        }
        Ok(Delivery {
            gate: None,
            states,
            live,
            workers,
            queues,
            backlog,
            incoming,
        })
    }

    /// Channel states for the API.
    pub fn states(&self) -> ChannelStates {
        self.states.clone()
    }

    /// Delivers only while `gate`'s replica leads (a replica of a cluster).
    pub fn gated(mut self, gate: Gate) -> Delivery {
        self.gate = Some(gate);
        self
    }

    /// Starts the workers and the router that hands each entry to its channel's worker: the
    /// backlog first. Starting cannot fail.
    pub fn start(self) -> Delivering {
        let (stop, stop_rx) = watch::channel(false);
        let Delivery {
            live,
            workers,
            queues,
            backlog,
            mut incoming,
            gate,
            ..
        } = self;
        let mut tasks = Vec::new();
        for (worker, rx) in workers {
            tasks.push(tokio::spawn(worker.run(rx, stop_rx.clone())));
        }
        let route = move |entry: OutboxEntry, live: &Live| match queues.get(&entry.channel) {
            Some(q) => {
                let _ = q.send(entry);
            }
            None => {
                // The channel left the config: nothing will deliver this.
                tracing::warn!(channel = %entry.channel, id = %entry.id, "notification for a channel no longer configured; dropped");
                live.outbox_update(OutboxUpdate::Done(entry.id));
            }
        };
        let mut stop_router = stop_rx.clone();
        if let Some(gate) = gate {
            tasks.push(tokio::spawn(async move {
                let mut held = backlog;
                let mut check = tokio::time::interval(GATE_CHECK);
                loop {
                    tokio::select! {
                        msg = incoming.recv() => match msg {
                            Some(entry) => held.push(entry),
                            None => break,
                        },
                        _ = check.tick() => {}
                        _ = stop_router.changed() => break,
                    }
                    held = gate.pass(held, &live, &route).await;
                }
            }));
            return Delivering { tasks, stop };
        }
        for entry in backlog {
            route(entry, &live);
        }
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    msg = incoming.recv() => match msg {
                        Some(entry) => route(entry, &live),
                        None => break,
                    },
                    _ = stop_router.changed() => break,
                }
            }
        }));
        Delivering { tasks, stop }
    }
}

impl Gate {
    /// Drops from `held` what the leader marked delivered; routes the rest if this replica
    /// leads, else keeps it (for the day it does). With the engine away nothing moves.
    async fn pass(
        &self,
        held: Vec<OutboxEntry>,
        live: &Live,
        route: &impl Fn(OutboxEntry, &Live),
    ) -> Vec<OutboxEntry> {
        if held.is_empty() {
            return held;
        }
        let ids: Vec<String> = held.iter().map(|e| e.id.clone()).collect();
        let marks = match self.log.delivered(&ids).await {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "cannot ask the shared engine what was delivered; holding notifications");
                return held;
            }
        };
        let mut keep = Vec::new();
        for (entry, delivered) in held.into_iter().zip(marks) {
            if delivered {
                live.outbox_update(OutboxUpdate::Done(entry.id));
            } else if self.leadership.leads() {
                route(entry, live);
            } else {
                keep.push(entry);
            }
        }
        keep
    }
}

impl Delivering {
    /// Stops the workers; an attempt in progress is abandoned (it is retried after restart).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

fn update_state(states: &ChannelStates, name: &str, f: impl FnOnce(&mut ChannelState)) {
    let mut states = states.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(s) = states.get_mut(name) {
        f(s);
    }
}

struct Worker {
    name: String,
    sender: Sender,
    live: Live,
    metrics: Arc<Metrics>,
    states: ChannelStates,
    policy: Policy,
    queue: VecDeque<Pending>,
    /// `max_per_minute` (0: no limit).
    max_per_minute: u32,
    /// When each attempt of the last minute was made (for `max_per_minute`).
    attempts: VecDeque<i64>,
    /// Notifications being sent together, ahead of `queue`.
    group: Option<Group>,
}

/// Notifications that came faster than the channel's `max_per_minute`, sent as one delivery
/// (retried as one, given up as one).
struct Group {
    members: Vec<Pending>,
    /// Stable for the same members, so a receiver can tell a retry.
    id: String,
    attempts: u32,
    next_attempt_ms: i64,
    /// The oldest member's creation: the group is given up `max_age` after it.
    created_ms: i64,
}

/// Most notifications in one group.
const MAX_GROUP: usize = 1_000;
/// The window of `max_per_minute`.
const MINUTE_MS: i64 = 60_000;

impl Group {
    fn of(members: Vec<Pending>, now: i64) -> Group {
        let ids: Vec<&[u8]> = members.iter().map(|m| m.entry.id.as_bytes()).collect();
        let a = stable_hash(&ids);
        let b = stable_hash(&[&a.to_le_bytes(), b"ratewarden-group"]);
        Group {
            id: format!("{a:016x}{b:016x}"),
            created_ms: members
                .iter()
                .map(|m| m.entry.created_ms)
                .min()
                .unwrap_or(now),
            members,
            attempts: 0,
            next_attempt_ms: now,
        }
    }
}

impl Worker {
    fn state(&self, f: impl FnOnce(&mut ChannelState)) {
        update_state(&self.states, &self.name, f);
    }

    fn push(&mut self, entry: OutboxEntry) {
        let kind = record::Kind::Notification;
        let decoded = decode_notification(&entry.payload);
        match decoded {
            Ok(transition) => self.queue.push_back(Pending { entry, transition }),
            // Kept in the outbox for the version that wrote it; not sent by this one.
            Err(e @ record::RecordError::Newer { .. }) => {
                tracing::error!(channel = %self.name, id = %entry.id, error = %e, "notification not sent");
                self.metrics.store_record_error(kind.as_str(), "decode");
            }
            Err(e) => {
                tracing::error!(channel = %self.name, id = %entry.id, error = %e, "unreadable notification; dropped");
                self.metrics.store_record_error(kind.as_str(), "decode");
                self.live.outbox_update(OutboxUpdate::Done(entry.id));
            }
        }
    }

    /// Notifications waiting, grouped ones included.
    fn waiting(&self) -> usize {
        self.queue.len() + self.group.as_ref().map_or(0, |g| g.members.len())
    }

    /// When the next attempt may be made as far as `max_per_minute` is concerned.
    fn slot_at(&mut self, now: i64) -> i64 {
        while self.attempts.front().is_some_and(|&t| t <= now - MINUTE_MS) {
            self.attempts.pop_front();
        }
        match self.attempts.front() {
            Some(&oldest)
                if self.max_per_minute > 0
                    && self.attempts.len() >= self.max_per_minute as usize =>
            {
                oldest + MINUTE_MS
            }
            _ => now,
        }
    }

    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<OutboxEntry>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            // Everything committed so far is in the queue before a grouping decision.
            while let Ok(e) = rx.try_recv() {
                self.push(e);
            }
            let pending = self.waiting();
            self.state(|s| s.pending = pending);
            self.metrics.channel_pending(&self.name, pending as i64);
            let due = match (&self.group, self.queue.front()) {
                (Some(g), _) => g.next_attempt_ms,
                (None, Some(head)) => head.entry.next_attempt_ms,
                (None, None) => {
                    tokio::select! {
                        msg = rx.recv() => match msg {
                            Some(e) => self.push(e),
                            None => return,
                        },
                        _ = stop.changed() => return,
                    }
                    continue;
                }
            };
            let now = self.live.now_ms();
            let at = due.max(self.slot_at(now));
            if at > now {
                let wait = Duration::from_millis((at - now) as u64);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    msg = rx.recv() => if let Some(e) = msg { self.push(e) },
                    _ = stop.changed() => return,
                }
                continue;
            }
            // The last attempt the minute allows carries everything waiting, if more than
            // one notification waits.
            if self.group.is_none()
                && self.max_per_minute > 0
                && self.queue.len() > 1
                && self.attempts.len() + 1 >= self.max_per_minute as usize
            {
                let n = self.queue.len().min(MAX_GROUP);
                let members: Vec<Pending> = self.queue.drain(..n).collect();
                let group = Group::of(members, now);
                tracing::warn!(channel = %self.name, notifications = group.members.len(), max_per_minute = self.max_per_minute, id = %group.id, "notifications arrive faster than max_per_minute; sending them grouped in one");
                self.group = Some(group);
            }
            self.attempts.push_back(now);
            let result = match &self.group {
                Some(g) => {
                    let transitions: Vec<Transition> =
                        g.members.iter().map(|m| m.transition.clone()).collect();
                    let view = render::Group {
                        channel: &self.name,
                        max_per_minute: self.max_per_minute,
                        transitions: &transitions,
                        delivery_id: &g.id,
                    };
                    tokio::select! {
                        r = self.sender.send_group(&view, now) => r,
                        _ = stop.changed() => return,
                    }
                }
                None => {
                    let Some(head) = self.queue.front() else {
                        continue;
                    };
                    tokio::select! {
                        r = self.sender.send(&head.transition, &head.entry.id, now) => r,
                        _ = stop.changed() => return,
                    }
                }
            };
            if self.group.is_some() {
                self.settle_group(result);
            } else {
                self.settle(result);
            }
        }
    }

    /// Records a failed attempt in the channel's state; returns its message.
    fn note_error(&self, err: &DeliveryError, now: i64) -> String {
        let message = err.message().to_string();
        update_state(&self.states, &self.name, |s| {
            s.last_error = Some(LastError {
                at: rfc3339(now),
                message: message.clone(),
            })
        });
        message
    }

    /// Records the outcome of the attempt on the group.
    fn settle_group(&mut self, result: Result<(), DeliveryError>) {
        let now = self.live.now_ms();
        let Some(g) = self.group.as_mut() else {
            return;
        };
        let n = g.members.len();
        let outcome = match result {
            Ok(()) => {
                tracing::info!(channel = %self.name, id = %g.id, notifications = n, "grouped notifications delivered");
                "grouped"
            }
            Err(err) => {
                let message = self.note_error(&err, now);
                let Some(g) = self.group.as_mut() else {
                    return;
                };
                let expired = now - g.created_ms >= self.policy.max_age_ms;
                match err {
                    DeliveryError::Retry { retry_after, .. } if !expired => {
                        g.attempts += 1;
                        let wait = self
                            .policy
                            .backoff(g.attempts)
                            .max(retry_after.unwrap_or_default());
                        g.next_attempt_ms = now + wait.as_millis() as i64;
                        tracing::warn!(channel = %self.name, id = %g.id, notifications = n, attempts = g.attempts, retry_in_ms = wait.as_millis() as u64, "grouped delivery failed, will retry: {message}");
                        self.metrics.notification(&self.name, "retried");
                        return;
                    }
                    _ => {
                        tracing::error!(channel = %self.name, id = %g.id, notifications = n, "grouped notifications not delivered: {message}");
                        "failed"
                    }
                }
            }
        };
        let Some(g) = self.group.take() else {
            return;
        };
        for m in g.members {
            self.metrics.notification(&self.name, outcome);
            self.live.outbox_update(OutboxUpdate::Done(m.entry.id));
        }
        self.state(|s| {
            if outcome == "grouped" {
                s.delivered += n as u64;
                s.last_success = Some(rfc3339(now));
            } else {
                s.failed += n as u64;
            }
        });
    }

    /// Records the outcome of the attempt on the queue's head.
    fn settle(&mut self, result: Result<(), DeliveryError>) {
        let now = self.live.now_ms();
        let message = result
            .as_ref()
            .err()
            .map(|e| self.note_error(e, now))
            .unwrap_or_default();
        let Some(head) = self.queue.front_mut() else {
            return;
        };
        let id = head.entry.id.clone();
        let t = &head.transition;
        match result {
            Ok(()) => {
                tracing::info!(channel = %self.name, id = %id, alert = %t.alert, org = %t.org, status = t.status.as_str(), "notification delivered");
                self.metrics.notification(&self.name, "sent");
                self.live.outbox_update(OutboxUpdate::Done(id));
                self.state(|s| {
                    s.delivered += 1;
                    s.last_success = Some(rfc3339(now));
                });
                self.queue.pop_front();
            }
            Err(err) => {
                let expired = now - head.entry.created_ms >= self.policy.max_age_ms;
                match err {
                    DeliveryError::Retry { retry_after, .. } if !expired => {
                        head.entry.attempts += 1;
                        let wait = self
                            .policy
                            .backoff(head.entry.attempts)
                            .max(retry_after.unwrap_or_default());
                        head.entry.next_attempt_ms = now + wait.as_millis() as i64;
                        tracing::warn!(channel = %self.name, id = %id, attempts = head.entry.attempts, retry_in_ms = wait.as_millis() as u64, "delivery failed, will retry: {message}");
                        self.metrics.notification(&self.name, "retried");
                        self.live.outbox_update(OutboxUpdate::Retry {
                            id,
                            attempts: head.entry.attempts,
                            next_attempt_ms: head.entry.next_attempt_ms,
                            last_error: message,
                        });
                    }
                    _ => {
                        let why = if expired {
                            "gave up after max_age"
                        } else {
                            "permanent failure"
                        };
                        tracing::error!(channel = %self.name, id = %id, alert = %t.alert, org = %t.org, "notification not delivered ({why}): {message}");
                        self.metrics.notification(&self.name, "failed");
                        self.live.outbox_update(OutboxUpdate::Done(id));
                        self.state(|s| s.failed += 1);
                        self.queue.pop_front();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_of_every_record_version_are_read() {
        use crate::model::{AlertName, Dimension, Severity};
        let scoped = Transition {
            dimension: Some(Dimension::Rpm),
            usage: Some(5),
            limit: Some(5),
            model: Some("gpt-image-1".into()),
            ..Transition::firing(&"acme".into(), 7, AlertName::UsageHigh, Severity::Critical)
        };
        let body = postcard::to_stdvec(&scoped).unwrap();
        let current = record::seal(record::Kind::Notification, &body);
        assert_eq!(decode_notification(&current).unwrap(), scoped);
        // Version 1 had no model: its layout is the current one without the last field.
        let unscoped = Transition {
            model: None,
            ..scoped.clone()
        };
        let mut old = postcard::to_stdvec(&unscoped).unwrap();
        assert_eq!(
            old.pop(),
            Some(0),
            "a None model is one zero byte at the end"
        );
        let mut v1 = current[..4].to_vec();
        v1.push(1);
        v1.extend(&old);
        assert_eq!(decode_notification(&v1).unwrap(), unscoped);
        // And before the envelope existed: the bare version 1 bytes.
        assert_eq!(decode_notification(&old).unwrap(), unscoped);
    }

    #[test]
    fn backoff_stays_between_base_and_cap() {
        let p = Policy {
            base_ms: 1_000,
            cap_ms: 8_000,
            max_age_ms: 0,
        };
        for attempts in 0..40 {
            for _ in 0..50 {
                let d = p.backoff(attempts).as_millis() as i64;
                assert!((1_000..=8_000).contains(&d), "{attempts}: {d}");
                assert!(d <= 1_000 * (1i64 << attempts.min(30)), "{attempts}: {d}");
            }
        }
        // Full jitter: waits spread out rather than all being the ceiling.
        let waits: std::collections::HashSet<_> =
            (0..50).map(|_| p.backoff(5).as_millis()).collect();
        assert!(waits.len() > 10);
    }
}

/// The transition an outbox entry's payload holds, in any record version this binary reads.
fn decode_notification(payload: &[u8]) -> Result<Transition, record::RecordError> {
    let kind = record::Kind::Notification;
    let undecodable = |e: postcard::Error| record::RecordError::Undecodable {
        kind: kind.as_str(),
        why: e.to_string(),
    };
    match record::open(kind, payload)? {
        record::Opened::Current(body) => {
            postcard::from_bytes::<Transition>(body).map_err(undecodable)
        }
        // Version 1 (and the bytes before the envelope) had no model scope.
        record::Opened::Older(_, body) | record::Opened::Legacy(body) => {
            postcard::from_bytes::<v1::Transition>(body)
                .map(Transition::from)
                .map_err(undecodable)
        }
    }
}

/// Notifications stored before version 2 of their record, whose transitions had no model.
mod v1 {
    use std::sync::Arc;

    use serde::Deserialize;

    use crate::detect::Status;
    use crate::model::{AlertName, Dimension, Severity};

    /// A transition of record version 1, field for field.
    #[derive(Deserialize)]
    pub(super) struct Transition {
        ts_ms: i64,
        org: Arc<str>,
        app: Option<Arc<str>>,
        alert: AlertName,
        dimension: Option<Dimension>,
        severity: Severity,
        status: Status,
        notify: bool,
        starts_at_ms: i64,
        usage: Option<u64>,
        limit: Option<u64>,
        threshold_bp: Option<u32>,
        previous_severity: Option<Severity>,
        peak: Severity,
        repeat: bool,
    }

    impl From<Transition> for crate::detect::Transition {
        fn from(t: Transition) -> Self {
            crate::detect::Transition {
                ts_ms: t.ts_ms,
                org: t.org,
                app: t.app,
                alert: t.alert,
                dimension: t.dimension,
                severity: t.severity,
                status: t.status,
                notify: t.notify,
                starts_at_ms: t.starts_at_ms,
                usage: t.usage,
                limit: t.limit,
                threshold_bp: t.threshold_bp,
                previous_severity: t.previous_severity,
                peak: t.peak,
                repeat: t.repeat,
                model: None,
            }
        }
    }
}
