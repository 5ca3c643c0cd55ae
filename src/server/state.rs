//! What the handlers share: the finished parts the daemon hands over (live state, metrics,
//! sources' health, channels, scheduler) and the server's own bounds.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::auth::Tokens;
use super::body;
use super::waiters::Admission;
use crate::alerts::ChannelStates;
use crate::cluster::SharedLog;
use crate::config::Config;
use crate::events::otlp::OtlpMapping;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::offpeak::OffPeak;
use crate::scheduler::Scheduler;
use crate::sources::Health;

/// How long a request waits for the store to confirm what it changed.
pub const DURABLE_WAIT: Duration = Duration::from_secs(30);
/// Ingest requests processed at once; past this the daemon answers 429 rather than queue
/// without bound.
pub const INGEST_CONCURRENCY: usize = 64;
/// Large answers (`/metrics`, `/v1/usage`: tens of MB at tens of thousands of series) built
/// and held at once; each is held until its client has taken it (at most `write_timeout`), so
/// slow readers cannot multiply the daemon's memory.
pub const LARGE_ANSWERS: usize = 4;

/// Everything the handlers share: finished parts, handed over by the daemon once they are
/// built. The HTTP layer owns none of them.
#[derive(Clone)]
pub struct ApiState {
    /// Tracker, clock and journal.
    pub live: Live,
    /// Metric registry.
    pub metrics: Arc<Metrics>,
    /// Bearer tokens per route group.
    pub tokens: Arc<Tokens>,
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// A body must arrive within this long (408 otherwise).
    pub body_read_timeout: Duration,
    /// How long a change waits for the store's confirmation ([`DURABLE_WAIT`]).
    pub durable_wait: Duration,
    /// Readiness: every part started.
    pub ready: Arc<AtomicBool>,
    /// Health of the file sources.
    pub sources: Arc<[Arc<Health>]>,
    /// Delivery state of the notification channels (`None` without delivery: tests).
    pub channels: Option<ChannelStates>,
    /// The batch scheduler (`None` without one: tests).
    pub scheduler: Option<Arc<Scheduler>>,
    /// A replica's shared engine (`[cluster]`; `None` otherwise).
    pub cluster: Option<SharedLog>,
    /// Off-peak windows.
    pub offpeak: OffPeak,
    /// Ingest admission.
    pub ingest_slots: Arc<Semaphore>,
    /// Request bodies in memory, across requests (`max_inflight_bytes`).
    pub bodies: body::Budget,
    /// Turns for large answers ([`LARGE_ANSWERS`]).
    pub large_answers: Arc<Semaphore>,
    /// Admission asks waiting for room.
    pub admission: Arc<Admission>,
    /// Where OTLP spans name their org and app (`[otlp]`).
    pub otlp: Arc<OtlpMapping>,
}

/// The parts the daemon built, for [`ApiState::with_parts`].
pub struct Parts {
    /// The live state.
    pub live: Live,
    /// The registry, reading `live` at scrape time.
    pub metrics: Arc<Metrics>,
    /// File sources' health.
    pub sources: Vec<Arc<Health>>,
    /// Notification channels' delivery state.
    pub channels: Option<ChannelStates>,
    /// The batch scheduler.
    pub scheduler: Option<Arc<Scheduler>>,
    /// A replica's shared engine (`[cluster]`), for what must be decided once across
    /// replicas (a batch's `Idempotency-Key`).
    pub cluster: Option<SharedLog>,
}

impl ApiState {
    /// State over the parts the daemon built.
    pub fn with_parts(config: &Config, tokens: Tokens, parts: Parts) -> ApiState {
        let bodies = body::Budget::new(config.server.max_inflight_bytes)
            .exported(parts.metrics.body_bytes_held());
        ApiState {
            live: parts.live,
            metrics: parts.metrics,
            tokens: Arc::new(tokens),
            max_body_bytes: config.server.max_body_bytes,
            body_read_timeout: config.server.body_read_timeout,
            durable_wait: DURABLE_WAIT,
            ready: Arc::new(AtomicBool::new(false)),
            sources: parts.sources.into(),
            channels: parts.channels,
            scheduler: parts.scheduler,
            cluster: parts.cluster,
            offpeak: config.offpeak.clone(),
            ingest_slots: Arc::new(Semaphore::new(INGEST_CONCURRENCY)),
            bodies,
            large_answers: Arc::new(Semaphore::new(LARGE_ANSWERS)),
            admission: Arc::new(Admission::new(Duration::from_millis(
                u64::try_from(config.admission.max_wait_ms).unwrap_or(0),
            ))),
            otlp: Arc::new(config.otlp.clone()),
        }
    }
}
