//! Live state shared by the daemon's tasks: the tracker, the clock, and where alert
//! transitions go.
//!
//! The tracker sits behind a `std::sync::Mutex`: every critical section is short, CPU-only
//! and never awaits, and the metric collector (a sync callback) must lock it too. Callers
//! that apply large batches do so from `spawn_blocking`, never on the async workers.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::clock::Clock;
use crate::detect::{Status, Transition};
use crate::events::Event;
use crate::tracker::Tracker;

/// The tracker and its clock, shared by HTTP handlers, the ticker and `/metrics`.
#[derive(Clone)]
pub struct Live {
    tracker: Arc<Mutex<Tracker>>,
    clock: Arc<dyn Clock>,
}

impl Live {
    /// Wraps `tracker`, driven by `clock`.
    pub fn new(tracker: Tracker, clock: Arc<dyn Clock>) -> Live {
        Live {
            tracker: Arc::new(Mutex::new(tracker)),
            clock,
        }
    }

    /// The shared tracker (for the metric collector).
    pub fn tracker(&self) -> Arc<Mutex<Tracker>> {
        self.tracker.clone()
    }

    /// The clock.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// Current time.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Locks the tracker. A panic while it was held leaves counts that are still valid
    /// numbers, so a poisoned lock is used rather than taking the daemon down.
    pub fn lock(&self) -> MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies validated events at `now` and publishes the resulting transitions.
    pub fn apply(&self, events: &[Event<'_>], now: i64) {
        let mut out = Vec::new();
        {
            let mut t = self.lock();
            for ev in events {
                t.apply(ev, now, &mut out);
            }
        }
        publish(&out);
    }

    /// Advances every org to the current time.
    pub fn tick(&self) {
        let now = self.now_ms();
        let mut out = Vec::new();
        self.lock().tick(now, &mut out);
        publish(&out);
    }
}

/// Where transitions go. Delivery by email and webhook arrives with the outbox; until then
/// every transition is logged, and `/v1/alerts` and `alerts_firing` show the current state.
fn publish(transitions: &[Transition]) {
    for t in transitions.iter().filter(|t| t.notify) {
        let summary = t.summary();
        let dimension = t.dimension.map_or("", |d| d.as_str());
        let app = t.app.as_deref().unwrap_or("");
        match t.status {
            Status::Firing => tracing::warn!(
                alert = %t.alert, org = %t.org, app, dimension, severity = t.severity.as_str(),
                "alert firing: {summary}"
            ),
            Status::Resolved => tracing::info!(
                alert = %t.alert, org = %t.org, app, dimension, severity = t.severity.as_str(),
                "alert resolved: {summary}"
            ),
        }
    }
}
