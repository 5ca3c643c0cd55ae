//! What the limit sources hand the live state: their values, put in force, and their
//! `LimitSourceFailing` transitions (not the tracker's), routed to the channels and logged
//! like the tracker's own.

use crate::detect::Transition;
use crate::model::SourcedLimits;
use crate::tracker::Tracker;

use super::logged::log;
use super::{Inner, Live};

impl Live {
    /// Puts what a limit source polled in force (every good poll; a change is logged by the
    /// poller, which knows the values before); the alerts of a scope it no longer lists are
    /// resolved and delivered.
    pub fn set_sourced_limits(&self, sourced: &SourcedLimits) {
        let changed =
            self.delivering(|tracker, now, out| tracker.set_sourced_limits(sourced, now, out));
        if changed {
            tracing::debug!(source = %sourced.source, org = %sourced.org, "limits from the source in force");
        }
    }

    /// Delivers a transition the tracker did not make (`LimitSourceFailing`): kept with the
    /// org's alerts while firing, queued for every channel that wants it, logged.
    pub fn notify_external(&self, t: Transition) {
        self.delivering(|tracker, _, out| {
            tracker.note_source_alert(&t);
            out.push(t);
        });
    }

    /// Runs `change` on the tracker at the clock's now; the transitions it makes are queued
    /// for the channels in the same critical section, then the writer is woken and they are
    /// logged.
    fn delivering<T>(
        &self,
        change: impl FnOnce(&mut Tracker, i64, &mut Vec<Transition>) -> T,
    ) -> T {
        let now = self.now_ms();
        let mut out = Vec::new();
        let result = {
            let mut g = self.lock();
            let Inner { tracker, pending } = &mut *g;
            let result = change(tracker, now, &mut out);
            self.notify(pending, &out, now);
            result
        };
        if !out.is_empty() {
            self.wake_writer();
            log(&out);
        }
        result
    }
}
