//! Which channels a transition goes to, and the outbox entry each gets: the stable delivery
//! id that survives retries and restarts, and the transition as stored. `live` writes the
//! entries in the commit that caused them; `alerts` delivers them. This module sends nothing
//! and stores nothing itself.

use crate::config::{ChannelConfig, ChannelKind, WebhookFormat};
use crate::detect::{Status, Transition};
use crate::model::{AlertName, stable_hash};
use crate::store::OutboxEntry;
use crate::store::record;

/// Whether `c` posts to Alertmanager (which holds alert state rather than notifying).
pub fn is_alertmanager(c: &ChannelConfig) -> bool {
    matches!(&c.kind, ChannelKind::Webhook(w) if w.format == WebhookFormat::Alertmanager)
}

/// Whether channel `c` gets transition `t`.
///
/// People get notifying transitions at or above the channel's severity (a resolve counts with
/// the highest severity its firing reached, so it follows any notification sent). Alertmanager
/// holds alert state rather than notifying, so it also gets silent severity changes.
pub fn wants(c: &ChannelConfig, t: &Transition) -> bool {
    if t.alert == AlertName::Test {
        return false;
    }
    if is_alertmanager(c) {
        let top = [Some(t.severity), t.previous_severity, Some(t.peak)]
            .into_iter()
            .flatten()
            .max();
        return top.is_some_and(|s| s >= c.min_severity);
    }
    if !t.notify {
        return false;
    }
    let severity = match t.status {
        Status::Resolved => t.peak.max(t.severity),
        Status::Firing => t.severity,
    };
    severity >= c.min_severity
}

/// The delivery id of `t` on `channel`: the same for every retry, and for the same transition
/// met again after a crash.
pub fn delivery_id(channel: &str, t: &Transition) -> String {
    let fingerprint = t.fingerprint();
    let parts: [&[u8]; 6] = [
        channel.as_bytes(),
        fingerprint.as_bytes(),
        &t.ts_ms.to_le_bytes(),
        t.status.as_str().as_bytes(),
        t.severity.as_str().as_bytes(),
        &[u8::from(t.repeat)],
    ];
    let a = stable_hash(&parts);
    let b = stable_hash(&[&a.to_le_bytes(), b"ratewarden-delivery"]);
    format!("{a:016x}{b:016x}")
}

/// Outbox entries for `t`, one per channel that wants it. A notification that cannot be
/// encoded is logged and counted in `unencodable` (it cannot be stored, so it is lost).
pub fn route(
    channels: &[ChannelConfig],
    t: &Transition,
    now_ms: i64,
    unencodable: &mut u64,
) -> Vec<OutboxEntry> {
    channels
        .iter()
        .filter(|c| wants(c, t))
        .filter_map(|c| {
            let payload = match postcard::to_stdvec(t) {
                Ok(p) => record::seal(record::Kind::Notification, &p),
                Err(e) => {
                    // Never silently: the notification cannot be stored, so it is lost.
                    tracing::error!(channel = %c.name, alert = %t.alert, org = %t.org, error = %e,
                        "a notification cannot be encoded for the outbox; it is not sent");
                    *unencodable += 1;
                    return None;
                }
            };
            Some(OutboxEntry {
                id: delivery_id(&c.name, t),
                channel: c.name.clone(),
                created_ms: now_ms,
                attempts: 0,
                next_attempt_ms: now_ms,
                last_error: None,
                payload,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::model::{Dimension, Severity};

    fn channels() -> Vec<ChannelConfig> {
        Config::parse(
            "[[alerts.webhook]]\nname = \"all\"\nurl = \"http://h/x\"\n\
             [[alerts.webhook]]\nname = \"crit\"\nurl = \"http://h/y\"\nmin_severity = \"critical\"\n\
             [[alerts.webhook]]\nname = \"am\"\nurl = \"http://h/z\"\nformat = \"alertmanager\"\nmin_severity = \"critical\"\n",
            "t",
        )
        .unwrap()
        .alerts
        .channels
    }

    fn t(severity: Severity, status: Status, notify: bool) -> Transition {
        Transition {
            ts_ms: 1,
            dimension: Some(Dimension::Rpm),
            status,
            notify,
            ..Transition::firing(&"acme".into(), 0, AlertName::UsageHigh, severity)
        }
    }

    fn to(tr: &Transition) -> Vec<String> {
        route(&channels(), tr, 5, &mut 0)
            .into_iter()
            .map(|e| e.channel)
            .collect()
    }

    #[test]
    fn routing_by_severity() {
        assert_eq!(to(&t(Severity::Warning, Status::Firing, true)), vec!["all"]);
        assert_eq!(
            to(&t(Severity::Critical, Status::Firing, true)),
            vec!["all", "crit", "am"]
        );
        // A resolve reaches the channels its firing reached.
        let resolved = Transition {
            peak: Severity::Critical,
            ..t(Severity::Warning, Status::Resolved, true)
        };
        assert_eq!(to(&resolved), vec!["all", "crit", "am"]);
        // A silent fall from critical to warning only updates Alertmanager.
        let lowered = Transition {
            previous_severity: Some(Severity::Critical),
            ..t(Severity::Warning, Status::Firing, false)
        };
        assert_eq!(to(&lowered), vec!["am"]);
    }

    #[test]
    fn delivery_ids_are_stable_and_distinct() {
        let a = t(Severity::Warning, Status::Firing, true);
        assert_eq!(delivery_id("x", &a), delivery_id("x", &a));
        assert_eq!(delivery_id("x", &a).len(), 32);
        assert_ne!(delivery_id("x", &a), delivery_id("y", &a));
        assert_ne!(
            delivery_id("x", &a),
            delivery_id(
                "x",
                &Transition {
                    repeat: true,
                    ..a.clone()
                }
            )
        );
        assert_ne!(
            delivery_id("x", &a),
            delivery_id(
                "x",
                &Transition {
                    status: Status::Resolved,
                    ..a
                }
            )
        );
    }
}
