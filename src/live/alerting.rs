//! Transitions leaving the live state: each is logged, and those the tracker does not make
//! (a limit source's `LimitSourceFailing`, from [`crate::sources::limits`]) are routed to the
//! channels like its own. Also where a limit source's values are put in force.

use crate::detect::{Status, Transition};
use crate::model::SourcedLimits;

use super::{Inner, Live};

impl Live {
    /// Puts what a limit source polled in force (every good poll; a change is logged by the
    /// poller, which knows the values before).
    pub fn set_sourced_limits(&self, sourced: &SourcedLimits) {
        let changed = self.lock().tracker.set_sourced_limits(sourced);
        if changed {
            tracing::debug!(source = %sourced.source, org = %sourced.org, "limits from the source in force");
        }
    }

    /// Delivers a transition the tracker did not make (`LimitSourceFailing`): kept with the
    /// org's alerts while firing, queued for every channel that wants it, logged.
    pub fn notify_external(&self, t: Transition) {
        let now = self.now_ms();
        {
            let mut g = self.lock();
            let Inner { tracker, pending } = &mut *g;
            tracker.note_source_alert(&t);
            self.notify(pending, std::slice::from_ref(&t), now);
        }
        self.wake_writer();
        log(std::slice::from_ref(&t));
    }
}

/// Every transition is logged; delivery goes through the outbox.
pub(super) fn log(transitions: &[Transition]) {
    for t in transitions.iter().filter(|t| t.notify && !t.repeat) {
        let (summary, dimension) = (t.summary(), t.dimension.map_or("", |d| d.as_str()));
        let (app, model) = (t.app.as_deref(), t.model.as_deref());
        let (app, model) = (app.unwrap_or(""), model.unwrap_or(""));
        match t.status {
            Status::Firing => tracing::warn!(
                alert = %t.alert, org = %t.org, app, model, dimension, severity = t.severity.as_str(),
                "alert firing: {summary}"
            ),
            Status::Resolved => tracing::info!(
                alert = %t.alert, org = %t.org, app, model, dimension, severity = t.severity.as_str(),
                "alert resolved: {summary}"
            ),
        }
    }
}
