//! The scheduler: deferred batches of API requests, sent by ratewarden itself inside off-peak
//! windows (or at once), paced under the share of each limit that interactive traffic leaves
//! (SPEC §7).
//!
//! This module holds the batches and every decision about them, as plain functions of `now`:
//! which item goes next and when ([`Scheduler::next`]), what a response means for it
//! ([`Scheduler::settle`]), which jobs to poll. [`dispatch`] drives it with HTTP and timers.
//! Admission reads the org's live usage from the tracker (interactive and batch requests alike,
//! because the dispatcher feeds its own requests back as events) plus its own requests still
//! awaiting an answer. Every item change is stored; an item is stored as in flight, with its
//! idempotency key, before it is sent, so after a crash it is retried with the same key.
//! Upstream credentials live in the config only: never in items, logs or answers.

pub mod dispatch;

use crate::model::{stable_hash, valid_name};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::clock::rfc3339;
use crate::config::{Config, SchedulerConfig, UpstreamConfig};

use crate::live::Live;
use crate::metrics::Metrics;
use crate::offpeak::OffPeak;

/// Most bytes of an upstream's answer quoted in an item's `error`.
const ERROR_QUOTE_CHARS: usize = 500;
/// Longest `idempotency_key` accepted.
const MAX_KEY_LEN: usize = 255;

/// When a batch may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Only while an off-peak window is open.
    Offpeak,
    /// Now, paced like any batch.
    Asap,
}

/// State of one item (SPEC §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemState {
    /// Not sent yet.
    Pending,
    /// Sent and not answered, or its job not finished.
    InFlight,
    /// Failed for now, waiting to be sent again.
    Retrying,
    /// Done.
    Succeeded,
    /// Failed for good.
    Failed,
    /// Cancelled before it was sent.
    Cancelled,
}

impl ItemState {
    /// Every state, in label order.
    pub const ALL: [ItemState; 6] = [
        ItemState::Pending,
        ItemState::InFlight,
        ItemState::Retrying,
        ItemState::Succeeded,
        ItemState::Failed,
        ItemState::Cancelled,
    ];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemState::Pending => "pending",
            ItemState::InFlight => "in_flight",
            ItemState::Retrying => "retrying",
            ItemState::Succeeded => "succeeded",
            ItemState::Failed => "failed",
            ItemState::Cancelled => "cancelled",
        }
    }

    /// No further change will happen.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ItemState::Succeeded | ItemState::Failed | ItemState::Cancelled
        )
    }
}

/// A batch's identity and settings, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Header {
    id: String,
    upstream: String,
    org: String,
    mode: Mode,
    created_ms: i64,
    cancelled: bool,
    /// When its last item became final; the batch is forgotten `retention` later.
    finished_ms: Option<i64>,
    /// With an `Idempotency-Key`: a hash of the submission's body, so the key used again
    /// for another request is told apart from a retry.
    request_hash: Option<u64>,
}

/// [`Header`] as the first stores wrote it (before `finished_ms`).
#[derive(Deserialize)]
struct HeaderV1 {
    id: String,
    upstream: String,
    org: String,
    mode: Mode,
    created_ms: i64,
    cancelled: bool,
}

impl Header {
    /// Reads a stored header of either form. postcard is not self-describing: the older form
    /// ends before `finished_ms`, so reading it as the newer one fails and it is read as the
    /// older one.
    fn decode(bytes: &[u8]) -> Result<Header, postcard::Error> {
        postcard::from_bytes::<Header>(bytes).or_else(|e| {
            let v1 = postcard::from_bytes::<HeaderV1>(bytes).map_err(|_| e)?;
            Ok(Header {
                id: v1.id,
                upstream: v1.upstream,
                org: v1.org,
                mode: v1.mode,
                created_ms: v1.created_ms,
                cancelled: v1.cancelled,
                finished_ms: None,
                request_hash: None,
            })
        })
    }
}

/// One request of a batch, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    /// Position in the batch.
    pub index: u32,
    method: String,
    path: String,
    /// JSON body, as text.
    body: Option<String>,
    /// Sent as `Idempotency-Key` on every attempt.
    pub key: String,
    /// Current state.
    pub state: ItemState,
    /// Attempts so far.
    pub attempts: u32,
    /// Not before this time (Unix ms).
    next_attempt_ms: i64,
    /// When the last attempt was sent.
    dispatched_ms: Option<i64>,
    /// Status of the last answer.
    pub last_status: Option<u16>,
    /// Job id from the creating answer (polled upstreams).
    pub job_id: Option<String>,
    /// The upstream's last answer (at most `max_result_bytes` of it).
    pub result: Option<String>,
    /// Why it is failing or failed.
    pub error: Option<String>,
    /// The whole answer's size when `result` holds only its start.
    pub result_bytes: Option<u64>,
}

/// [`Item`] as the first stores wrote it (before `result_bytes`).
#[derive(Deserialize)]
struct ItemV1 {
    index: u32,
    method: String,
    path: String,
    body: Option<String>,
    key: String,
    state: ItemState,
    attempts: u32,
    next_attempt_ms: i64,
    dispatched_ms: Option<i64>,
    last_status: Option<u16>,
    job_id: Option<String>,
    result: Option<String>,
    error: Option<String>,
}

impl Item {
    /// Reads a stored item of either form (see [`Header::decode`]).
    fn decode(bytes: &[u8]) -> Result<Item, postcard::Error> {
        postcard::from_bytes::<Item>(bytes).or_else(|e| {
            let v1 = postcard::from_bytes::<ItemV1>(bytes).map_err(|_| e)?;
            Ok(Item {
                index: v1.index,
                method: v1.method,
                path: v1.path,
                body: v1.body,
                key: v1.key,
                state: v1.state,
                attempts: v1.attempts,
                next_attempt_ms: v1.next_attempt_ms,
                dispatched_ms: v1.dispatched_ms,
                last_status: v1.last_status,
                job_id: v1.job_id,
                result: v1.result,
                error: v1.error,
                result_bytes: None,
            })
        })
    }

    /// Keeps the start of an upstream's answer, at most `max` bytes (at a character
    /// boundary), noting the whole size when it is cut.
    fn keep_result(&mut self, body: &str, max: usize) {
        if body.len() <= max {
            self.result = Some(body.to_string());
            self.result_bytes = None;
        } else {
            let mut end = max;
            while !body.is_char_boundary(end) {
                end -= 1;
            }
            self.result = Some(body[..end].to_string());
            self.result_bytes = Some(body.len() as u64);
        }
    }
}

struct Batch {
    header: Header,
    items: Vec<Item>,
}

/// A batch's overall state (SPEC §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchState {
    /// Nothing sent yet.
    Pending,
    /// Some items sent, not all final.
    Running,
    /// Every item succeeded or failed for good.
    Completed,
    /// Cancelled.
    Cancelled,
}

impl BatchState {
    fn as_str(self) -> &'static str {
        match self {
            BatchState::Pending => "pending",
            BatchState::Running => "running",
            BatchState::Completed => "completed",
            BatchState::Cancelled => "cancelled",
        }
    }
}

impl Batch {
    /// Marks the batch finished when its last item has become final; returns the header to
    /// store when it did.
    fn note_finished(&mut self, now: i64) -> Option<(String, Vec<u8>)> {
        if self.header.finished_ms.is_some() || !self.items.iter().all(|i| i.state.is_final()) {
            return None;
        }
        self.header.finished_ms = Some(now);
        let count = |s: ItemState| self.items.iter().filter(|i| i.state == s).count();
        let (ok, failed) = (count(ItemState::Succeeded), count(ItemState::Failed));
        let cancelled = count(ItemState::Cancelled);
        if failed > 0 {
            tracing::warn!(batch = %self.header.id, succeeded = ok, failed, cancelled, "batch finished with failed items (see GET /v1/batches/{{id}}/items)");
        } else {
            tracing::info!(batch = %self.header.id, succeeded = ok, cancelled, "batch finished");
        }
        Some((self.header.id.clone(), encode(&self.header)))
    }

    /// Logs the first item of the batch that failed for good, as it happens (the rest are
    /// counted when the batch finishes): a batch sent to a wrong path says so at once, in one
    /// line rather than one per item.
    fn note_failure(&self, index: u32) {
        let mut failed = self.items.iter().filter(|i| i.state == ItemState::Failed);
        if let (Some(first), None) = (failed.next(), failed.next())
            && first.index == index
        {
            tracing::warn!(batch = %self.header.id, index, error = first.error.as_deref().unwrap_or(""), "batch item failed for good");
        }
    }

    fn state(&self) -> BatchState {
        if self.header.cancelled {
            return BatchState::Cancelled;
        }
        if self.items.iter().all(|i| i.state.is_final()) {
            BatchState::Completed
        } else if self.items.iter().all(|i| i.attempts == 0) {
            BatchState::Pending
        } else {
            BatchState::Running
        }
    }
}

/// A `POST /v1/batches` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBatch {
    /// Upstream name.
    pub upstream: String,
    /// Org (must be the upstream's; defaults to it).
    #[serde(default)]
    pub org: Option<String>,
    /// `offpeak` (default) or `asap`.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// The requests.
    pub requests: Vec<NewRequest>,
}

/// One request of a new batch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRequest {
    /// HTTP method (default POST).
    #[serde(default)]
    pub method: Option<String>,
    /// Path below the upstream's base URL.
    pub path: String,
    /// JSON body.
    #[serde(default)]
    pub body: Option<Value>,
    /// Caller's idempotency key (else one is made).
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// Why a batch request was refused.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// No such batch or upstream.
    #[error("{0}")]
    NotFound(String),
    /// Over `max_batch_items`.
    #[error("{0}")]
    TooLarge(String),
    /// Over `max_pending_items`: retry when the queue has drained.
    #[error("{0}")]
    Full(String),
    /// An `Idempotency-Key` used again with a different request.
    #[error("{0}")]
    KeyReused(String),
}

/// Something to send now.
#[derive(Debug, Clone)]
pub struct Dispatch {
    /// Batch id.
    pub batch: String,
    /// Item index.
    pub index: u32,
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// JSON body.
    pub body: Option<String>,
    /// Idempotency key.
    pub key: String,
    /// Commit that holds the item's in-flight state; wait for it before sending.
    pub seq: u64,
}

/// What the dispatcher should do for an upstream.
#[derive(Debug, Clone)]
pub enum Next {
    /// Send this now.
    Send(Dispatch),
    /// Nothing can be sent before this time (Unix ms), or earlier if something changes.
    Wait(i64),
    /// Nothing to send.
    Idle,
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum Attempt {
    /// The upstream answered.
    Answer {
        /// HTTP status.
        status: u16,
        /// Body (as received).
        body: String,
        /// Its `Retry-After`.
        retry_after: Option<Duration>,
        /// Job id found in the body (polled upstreams).
        job_id: Option<String>,
    },
    /// No answer: connection refused or dropped, timeout.
    Failed(String),
}

/// A job to poll.
#[derive(Debug, Clone)]
pub struct Poll {
    /// Batch id.
    pub batch: String,
    /// Item index.
    pub index: u32,
    /// Job id.
    pub job_id: String,
}

/// What a poll found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStatus {
    /// Finished successfully.
    Done(String),
    /// Finished with a failure.
    Failed(String),
    /// Not finished.
    Running,
    /// The poll itself failed (no answer, an error status, not JSON): still running as far
    /// as is known, until `detect.release_after` says otherwise.
    Unknown(String),
    /// The job id the upstream handed out cannot be polled (`.`, `..`, empty): the item fails.
    Unpollable(String),
}

#[derive(Debug, Default)]
struct Circuit {
    consecutive_429: u32,
    open_until: Option<i64>,
    /// A single request is allowed through after the cooldown (half-open).
    probing: bool,
}

#[derive(Debug, Default)]
struct Lane {
    /// When the last request was chosen, then (see [`Scheduler::sent`]) when it left.
    last_dispatch_ms: Option<i64>,
    /// Requests sent and not answered (not in the tracker yet).
    awaiting: u64,
    circuit: Circuit,
    /// Last poll per (batch, index).
    polled: HashMap<(String, u32), i64>,
}

#[derive(Default)]
struct State {
    batches: Vec<Batch>,
    index: HashMap<String, usize>,
    lanes: HashMap<String, Lane>,
}

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

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_stdvec(v).unwrap_or_default()
}

/// One item as a SPEC §7 NDJSON row. An answer kept only in part is a string (it is no
/// longer JSON) with `result_truncated` and the whole size in `result_bytes`.
fn item_row(it: &Item) -> Value {
    let mut row = json!({
        "index": it.index,
        "state": it.state.as_str(),
        "attempts": it.attempts,
        "last_status": it.last_status,
        "job_id": it.job_id,
        "idempotency_key": it.key,
        "result": it.result.as_deref().map(|r| match it.result_bytes {
            Some(_) => Value::String(r.to_string()),
            None => serde_json::from_str::<Value>(r).unwrap_or_else(|_| Value::String(r.to_string())),
        }),
        "error": it.error,
    });
    if let Some(total) = it.result_bytes {
        row["result_truncated"] = json!(true);
        row["result_bytes"] = json!(total);
    }
    row
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
        batches: Vec<(String, Vec<u8>)>,
        items: Vec<(String, u32, Vec<u8>)>,
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
        let now = s.live.now_ms();
        let mut requeued = Vec::new();
        let mut finished = Vec::new();
        {
            let mut st = s.lock();
            for (id, payload) in batches {
                match Header::decode(&payload) {
                    Ok(header) => {
                        let at = st.batches.len();
                        st.index.insert(id, at);
                        st.batches.push(Batch {
                            header,
                            items: Vec::new(),
                        });
                    }
                    Err(e) => {
                        tracing::error!(batch = %id, error = %e, "unreadable stored batch; skipped")
                    }
                }
            }
            for (id, index, payload) in items {
                let Some(&b) = st.index.get(&id) else {
                    continue;
                };
                match Item::decode(&payload) {
                    Ok(mut item) => {
                        if item.state == ItemState::InFlight && item.job_id.is_none() {
                            // It may have been sent; send it again with the same key.
                            item.state = ItemState::Retrying;
                            item.next_attempt_ms = now;
                            requeued.push((id.clone(), index, encode(&item)));
                        }
                        st.batches[b].items.push(item);
                    }
                    Err(e) => {
                        tracing::error!(batch = %id, index, error = %e, "unreadable stored item; skipped")
                    }
                }
            }
            // Batches finished under a version that did not note when are kept a full
            // retention from now.
            for b in &mut st.batches {
                if let Some(h) = b.note_finished(now) {
                    finished.push(h);
                }
            }
            let orgs: Vec<String> = st.batches.iter().map(|b| b.header.org.clone()).collect();
            for org in orgs {
                s.update_gauges(&st, &org);
            }
        }
        if !requeued.is_empty() {
            tracing::info!(
                items = requeued.len(),
                "items in flight at the last stop will be sent again with their keys"
            );
        }
        if !requeued.is_empty() || !finished.is_empty() {
            s.live.record_batches(finished, requeued);
        }
        s
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

    fn update_gauges(&self, st: &State, org: &str) {
        let mut counts: HashMap<ItemState, i64> = HashMap::new();
        for b in st.batches.iter().filter(|b| b.header.org == org) {
            for i in &b.items {
                *counts.entry(i.state).or_default() += 1;
            }
        }
        for s in ItemState::ALL {
            self.metrics
                .batch_items(org, s.as_str(), counts.get(&s).copied().unwrap_or(0));
        }
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
        let now = self.live.now_ms();
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
        let seq = self.live.record_batches(
            vec![(id.clone(), encode(&header))],
            items
                .iter()
                .map(|i| (id.clone(), i.index, encode(i)))
                .collect(),
        );
        let at = st.batches.len();
        st.index.insert(id.clone(), at);
        st.batches.push(Batch { header, items });
        self.update_gauges(&st, &org);
        let summary = self.summary(&st, st.batches.len() - 1, now);
        drop(st);
        tracing::info!(batch = %id, upstream = %upstream.name, org = %org, items = n, "batch accepted");
        self.wake.notify_waiters();
        Ok((summary, seq, true))
    }

    /// Summaries of every batch, newest first.
    pub fn list(&self) -> Vec<Value> {
        let now = self.live.now_ms();
        let st = self.lock();
        (0..st.batches.len())
            .rev()
            .map(|i| self.summary(&st, i, now))
            .collect()
    }

    /// One batch's summary.
    pub fn get(&self, id: &str) -> Result<Value, BatchError> {
        let now = self.live.now_ms();
        let st = self.lock();
        let &i = st
            .index
            .get(id)
            .ok_or_else(|| BatchError::NotFound(format!("no batch {id:?}")))?;
        Ok(self.summary(&st, i, now))
    }

    /// Rows (SPEC §7 NDJSON) of one batch's items whose index is above `after` (all with
    /// `None`), at most `limit` of them, and whether more follow.
    pub fn items_page(
        &self,
        id: &str,
        after: Option<u32>,
        limit: usize,
    ) -> Result<(Vec<Value>, bool), BatchError> {
        let st = self.lock();
        let &i = st
            .index
            .get(id)
            .ok_or_else(|| BatchError::NotFound(format!("no batch {id:?}")))?;
        let items = &st.batches[i].items;
        // Items are held in index order.
        let start = after.map_or(0, |a| items.partition_point(|it| it.index <= a));
        let end = start.saturating_add(limit).min(items.len());
        let rows = items[start..end].iter().map(item_row).collect();
        Ok((rows, end < items.len()))
    }

    /// Where a page of [`Scheduler::items_page`] would end: the index of its last row when
    /// more rows follow it, else `None`.
    pub fn page_end(
        &self,
        id: &str,
        after: Option<u32>,
        limit: usize,
    ) -> Result<Option<u32>, BatchError> {
        let st = self.lock();
        let &i = st
            .index
            .get(id)
            .ok_or_else(|| BatchError::NotFound(format!("no batch {id:?}")))?;
        let items = &st.batches[i].items;
        let start = after.map_or(0, |a| items.partition_point(|it| it.index <= a));
        let end = start.saturating_add(limit).min(items.len());
        Ok((end < items.len() && end > start).then(|| items[end - 1].index))
    }

    /// Forgets the batches that finished `retention` or longer before `now`, here and in the
    /// store; returns how many.
    pub fn prune(&self, now: i64) -> usize {
        let cutoff = now.saturating_sub(self.cfg.retention_ms);
        let mut st = self.lock();
        let expired = |b: &Batch| b.header.finished_ms.is_some_and(|f| f <= cutoff);
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
    pub fn cancel(&self, id: &str) -> Result<(Value, u64), BatchError> {
        let now = self.live.now_ms();
        let mut st = self.lock();
        let &i = st
            .index
            .get(id)
            .ok_or_else(|| BatchError::NotFound(format!("no batch {id:?}")))?;
        let b = &mut st.batches[i];
        b.header.cancelled = true;
        let mut changed = Vec::new();
        for it in &mut b.items {
            if matches!(it.state, ItemState::Pending | ItemState::Retrying) {
                it.state = ItemState::Cancelled;
                changed.push((id.to_string(), it.index, encode(it)));
            }
        }
        // The header is stored either way (it now says cancelled); finished too if nothing
        // is left in flight.
        let _ = b.note_finished(now);
        let seq = self
            .live
            .record_batches(vec![(id.to_string(), encode(&b.header))], changed);
        let org = b.header.org.clone();
        self.update_gauges(&st, &org);
        tracing::info!(batch = %id, "batch cancelled");
        Ok((self.summary(&st, i, now), seq))
    }

    fn spacing_ms(&self, upstream: &UpstreamConfig) -> i64 {
        let load = self.live.load_of(&upstream.org);
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
        let spacing = self.spacing_ms(up);
        let load = self.live.load_of(&up.org);
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
        let record = (b.header.id.clone(), it.index, encode(it));
        let org = b.header.org.clone();
        let seq = self.live.record_batches(Vec::new(), vec![record]);
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
    pub fn settle(&self, d: &Dispatch, attempt: Attempt) -> Option<crate::events::Event<'static>> {
        let now = self.live.now_ms();
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
                    event = Some(crate::events::Event {
                        ts_ms: Some(sent_at),
                        org: org.clone().into(),
                        app: Some("batch".into()),
                        kind: crate::events::Kind::Request,
                        status: Some(status),
                        job_id: None,
                        retry_after_ms: retry_after.map(|r| r.as_millis() as i64),
                        error_code: None,
                        tokens: None,
                        latency_ms: Some((now - sent_at).max(0) as f64),
                        request_id: None,
                        ratelimit: None,
                    });
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
            let record = (d.batch.clone(), it.index, encode(it));
            b.note_failure(d.index);
            let header = b.note_finished(now);
            self.live
                .record_batches(header.into_iter().collect(), vec![record]);
        }
        self.metrics.batch_request(&org, outcome);
        self.update_gauges(&st, &org);
        drop(st);
        self.wake.notify_waiters();
        event
    }

    /// Jobs of `upstream` due for a poll at `now`.
    pub fn polls_due(&self, upstream: &str, now: i64) -> Vec<Poll> {
        let Some(interval) = self
            .upstreams
            .get(upstream)
            .and_then(|u| u.poll.as_ref())
            .map(|p| p.interval_ms)
        else {
            return Vec::new();
        };
        let mut st = self.lock();
        let mut due = Vec::new();
        for b in st.batches.iter().filter(|b| b.header.upstream == upstream) {
            for it in &b.items {
                if let (ItemState::InFlight, Some(job)) = (it.state, &it.job_id) {
                    due.push((b.header.id.clone(), it.index, job.clone()));
                }
            }
        }
        let lane = st.lanes.entry(upstream.to_string()).or_default();
        let mut out = Vec::new();
        for (batch, index, job_id) in due {
            let last = lane
                .polled
                .get(&(batch.clone(), index))
                .copied()
                .unwrap_or(i64::MIN);
            if now.saturating_sub(last) >= interval {
                lane.polled.insert((batch.clone(), index), now);
                out.push(Poll {
                    batch,
                    index,
                    job_id,
                });
            }
        }
        out
    }

    /// Records a poll's finding. Returns the lifecycle event to feed to the tracker.
    pub fn polled(&self, p: &Poll, status: JobStatus) -> Option<crate::events::Event<'static>> {
        let now = self.live.now_ms();
        let mut st = self.lock();
        let &bi = st.index.get(&p.batch)?;
        let org = st.batches[bi].header.org.clone();
        let upstream = st.batches[bi].header.upstream.clone();
        let it = st.batches[bi]
            .items
            .iter_mut()
            .find(|i| i.index == p.index)?;
        if it.state != ItemState::InFlight {
            return None;
        }
        let (kind, done) = match status {
            JobStatus::Running | JobStatus::Unknown(_) => {
                if it
                    .dispatched_ms
                    .is_some_and(|t| now - t >= self.release_after_ms)
                {
                    it.state = ItemState::Failed;
                    it.error = Some(match status {
                        JobStatus::Unknown(why) => format!(
                            "the job did not finish within detect.release_after (last poll: {why})"
                        ),
                        _ => "the job did not finish within detect.release_after".into(),
                    });
                    (None, true)
                } else {
                    return None;
                }
            }
            JobStatus::Unpollable(why) => {
                it.state = ItemState::Failed;
                it.error = Some(why);
                (Some(crate::events::Kind::JobFailed), true)
            }
            JobStatus::Done(body) => {
                it.state = ItemState::Succeeded;
                it.keep_result(&body, self.cfg.max_result_bytes);
                it.error = None;
                (Some(crate::events::Kind::JobCompleted), true)
            }
            JobStatus::Failed(body) => {
                it.state = ItemState::Failed;
                it.keep_result(&body, self.cfg.max_result_bytes);
                it.error = Some("the upstream reports the job failed".into());
                (Some(crate::events::Kind::JobFailed), true)
            }
        };
        let record = (p.batch.clone(), it.index, encode(it));
        st.batches[bi].note_failure(p.index);
        let header = st.batches[bi].note_finished(now);
        self.live
            .record_batches(header.into_iter().collect(), vec![record]);
        if done && let Some(lane) = st.lanes.get_mut(&upstream) {
            lane.polled.remove(&(p.batch.clone(), p.index));
        }
        self.update_gauges(&st, &org);
        drop(st);
        self.wake.notify_waiters();
        kind.map(|kind| crate::events::Event {
            ts_ms: Some(now),
            org: org.into(),
            app: Some("batch".into()),
            kind,
            status: None,
            job_id: Some(p.job_id.clone().into()),
            retry_after_ms: None,
            error_code: None,
            tokens: None,
            latency_ms: None,
            request_id: None,
            ratelimit: None,
        })
    }

    /// Requests per minute a batch of `upstream` can go at (the pacing rate).
    fn rate_per_min(&self, up: &UpstreamConfig) -> f64 {
        let load = self.live.load_of(&up.org);
        let rpm = allowed(self.cfg.share, load.limits.rpm).map_or(600.0, |a| a as f64);
        match (&up.poll, allowed(self.cfg.share, load.limits.concurrency)) {
            // Each job holds a slot for at least one poll interval.
            (Some(p), Some(c)) => rpm.min(c as f64 * 60_000.0 / p.interval_ms.max(1) as f64),
            _ => rpm,
        }
    }

    /// When the batch at `bi` is likely done, from the pacing rate and the windows.
    fn eta(&self, st: &State, bi: usize, now: i64) -> Option<i64> {
        let b = &st.batches[bi];
        let remaining = b.items.iter().filter(|i| !i.state.is_final()).count();
        if remaining == 0 || b.header.cancelled {
            return None;
        }
        let up = self.upstreams.get(&b.header.upstream)?;
        // Batches of the same upstream go first-in, first-out.
        let ahead: usize = st.batches[..bi]
            .iter()
            .filter(|o| o.header.upstream == b.header.upstream && !o.header.cancelled)
            .map(|o| o.items.iter().filter(|i| !i.state.is_final()).count())
            .sum();
        let per_ms = self.rate_per_min(up) / 60_000.0;
        let mut work = (ahead + remaining) as f64 / per_ms;
        if b.header.mode == Mode::Asap {
            return Some(now + work.ceil() as i64);
        }
        for (open, close) in self.offpeak.upcoming(now, 64) {
            let span = (close - open.max(now)) as f64;
            if work <= span {
                return Some(open.max(now) + work.ceil() as i64);
            }
            work -= span;
        }
        None
    }

    fn summary(&self, st: &State, bi: usize, now: i64) -> Value {
        let b = &st.batches[bi];
        let mut counts = serde_json::Map::new();
        for s in ItemState::ALL {
            counts.insert(
                s.as_str().into(),
                json!(b.items.iter().filter(|i| i.state == s).count()),
            );
        }
        let next_dispatch = if b
            .items
            .iter()
            .any(|i| matches!(i.state, ItemState::Pending | ItemState::Retrying))
            && !b.header.cancelled
        {
            let due = b
                .items
                .iter()
                .filter(|i| matches!(i.state, ItemState::Pending | ItemState::Retrying))
                .map(|i| i.next_attempt_ms)
                .min()
                .unwrap_or(now)
                .max(now);
            if self.may_send(b, now) {
                Some(due)
            } else {
                self.offpeak.status(now).next_open.map(|o| o.max(due))
            }
        } else {
            None
        };
        json!({
            "id": b.header.id,
            "upstream": b.header.upstream,
            "org": b.header.org,
            "mode": b.header.mode,
            "state": b.state().as_str(),
            "created_at": rfc3339(b.header.created_ms),
            "items": b.items.len(),
            "counts": counts,
            "next_dispatch": next_dispatch.map(rfc3339),
            "eta": self.eta(st, bi, now).map(rfc3339),
        })
    }
}

#[cfg(test)]
mod tests;
