//! The log line of each transition that notifies: delivery itself goes through the outbox.

use crate::detect::{Status, Transition};

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
