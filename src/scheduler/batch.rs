//! A batch and its items as the scheduler holds them: states, the API's request shapes, and what
//! the dispatcher is handed (a [`Dispatch`], a [`Poll`]) and hands back (an [`Attempt`], a
//! [`JobStatus`]). Plain data; the decisions are in `scheduler`.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use serde_json::Value;

/// Most bytes of an upstream's answer quoted in an item's `error`.
pub(super) const ERROR_QUOTE_CHARS: usize = 500;
/// Longest `idempotency_key` accepted.
pub(super) const MAX_KEY_LEN: usize = 255;

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
pub(super) struct Header {
    pub(super) id: String,
    pub(super) upstream: String,
    pub(super) org: String,
    pub(super) mode: Mode,
    pub(super) created_ms: i64,
    pub(super) cancelled: bool,
    /// When its last item became final; the batch is forgotten `retention` later.
    pub(super) finished_ms: Option<i64>,
    /// With an `Idempotency-Key`: a hash of the submission's body, so the key used again
    /// for another request is told apart from a retry.
    pub(super) request_hash: Option<u64>,
}

/// One request of a batch, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    /// Position in the batch.
    pub index: u32,
    pub(super) method: String,
    pub(super) path: String,
    /// JSON body, as text.
    pub(super) body: Option<String>,
    /// Sent as `Idempotency-Key` on every attempt.
    pub key: String,
    /// Current state.
    pub state: ItemState,
    /// Attempts so far.
    pub attempts: u32,
    /// Not before this time (Unix ms).
    pub(super) next_attempt_ms: i64,
    /// When the last attempt was sent.
    pub(super) dispatched_ms: Option<i64>,
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

impl Item {
    /// Keeps the start of an upstream's answer, at most `max` bytes (at a character
    /// boundary), noting the whole size when it is cut.
    pub(super) fn keep_result(&mut self, body: &str, max: usize) {
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

pub(super) struct Batch {
    pub(super) header: Header,
    pub(super) items: Vec<Item>,
    /// Stored items this binary could not read (a newer format): the batch is then never
    /// finished or forgotten here, so those rows stay for the binary that wrote them.
    pub(super) unreadable: usize,
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
    pub(super) fn as_str(self) -> &'static str {
        match self {
            BatchState::Pending => "pending",
            BatchState::Running => "running",
            BatchState::Completed => "completed",
            BatchState::Cancelled => "cancelled",
        }
    }
}

impl Batch {
    /// Marks the batch finished when its last item has become final; true when it did (its
    /// header is then to be stored).
    pub(super) fn note_finished(&mut self, now: i64) -> bool {
        if self.header.finished_ms.is_some()
            || self.unreadable > 0
            || !self.items.iter().all(|i| i.state.is_final())
        {
            return false;
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
        true
    }

    /// Logs the first item of the batch that failed for good, as it happens (the rest are
    /// counted when the batch finishes): a batch sent to a wrong path says so at once, in one
    /// line rather than one per item.
    pub(super) fn note_failure(&self, index: u32) {
        let mut failed = self.items.iter().filter(|i| i.state == ItemState::Failed);
        if let (Some(first), None) = (failed.next(), failed.next())
            && first.index == index
        {
            tracing::warn!(batch = %self.header.id, index, error = first.error.as_deref().unwrap_or(""), "batch item failed for good");
        }
    }

    pub(super) fn state(&self) -> BatchState {
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

impl BatchError {
    /// The `Idempotency-Key` of batch `id` sent again with another body.
    pub fn key_reused(id: &str) -> BatchError {
        BatchError::KeyReused(format!(
            "this Idempotency-Key was used for another request (batch {id}); use a new key for a new batch"
        ))
    }
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
    /// The admission lease the arbiter granted this attempt (its answer's event completes
    /// the reservation).
    pub lease: Option<String>,
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
pub(super) struct Circuit {
    pub(super) consecutive_429: u32,
    pub(super) open_until: Option<i64>,
    /// A single request is allowed through after the cooldown (half-open).
    pub(super) probing: bool,
}

#[derive(Debug, Default)]
pub(super) struct Lane {
    /// When the last request was chosen, then (see [`Scheduler::sent`]) when it left.
    pub(super) last_dispatch_ms: Option<i64>,
    /// Requests sent and not answered (not in the tracker yet).
    pub(super) awaiting: u64,
    pub(super) circuit: Circuit,
    /// Last poll per (batch, index).
    pub(super) polled: HashMap<(String, u32), i64>,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) batches: Vec<Batch>,
    pub(super) index: HashMap<String, usize>,
    pub(super) lanes: HashMap<String, Lane>,
    /// For batch ids and backoff jitter (seeded from the system's entropy).
    pub(super) rng: fastrand::Rng,
    /// A replica of a cluster: the lead term it last took over in (0: none).
    pub(super) term: u64,
}
