//! What the limit sources hand the live state: their values, put in force, and their
//! `LimitSourceFailing` transitions (not the tracker's), routed to the channels and logged
//! like the tracker's own.

use crate::detect::Transition;
use crate::model::SourcedLimits;

use super::logged::log;
use super::{Inner, Live};

impl Live {
    /// Puts what a limit source polled in force (every good poll; a change is logged by the
    /// poller, which knows the values before); the alerts of a scope it no longer lists are
    /// resolved and delivered.
    pub fn set_sourced_limits(&self, sourced: &SourcedLimits) {
        let now = self.now_ms();
        let mut out = Vec::new();
        let changed = {
            let mut g = self.lock();
            let Inner { tracker, pending } = &mut *g;
            let changed = tracker.set_sourced_limits(sourced, now, &mut out);
            self.notify(pending, &out, now);
            changed
        };
        if changed {
            tracing::debug!(source = %sourced.source, org = %sourced.org, "limits from the source in force");
        }
        if !out.is_empty() {
            self.wake_writer();
            log(&out);
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
