//! `ratewarden alerts test`: a test notification sent to every configured channel directly
//! (not through the outbox, so it needs no daemon and no store), each channel's outcome
//! reported on its own line.

use crate::alerts::Sender;
use crate::config::AlertsConfig;
use crate::detect::Transition;
use crate::model::{AlertName, Severity};
use crate::outbox::delivery_id;

/// Sends the test notification (a critical `Test` alert for org `ratewarden`) to each
/// channel, in config order; returns each channel's name and outcome.
pub async fn send_test(alerts: &AlertsConfig, now_ms: i64) -> Vec<(String, Result<(), String>)> {
    let mut out = Vec::new();
    for c in &alerts.channels {
        let t = Transition::firing(
            &"ratewarden".into(),
            now_ms,
            AlertName::Test,
            Severity::Critical,
        );
        let result = match Sender::new(c, alerts) {
            Err(e) => Err(e),
            Ok(sender) => {
                let id = delivery_id(&c.name, &t);
                sender
                    .send(&t, &id, now_ms)
                    .await
                    .map_err(|e| e.message().to_string())
            }
        };
        out.push((c.name.clone(), result));
    }
    out
}

/// The report: `NAME: sent` or `NAME: FAILED: why`, a line per channel; true when every
/// channel took it.
pub fn report(results: &[(String, Result<(), String>)]) -> (String, bool) {
    let mut text = String::new();
    let mut all_sent = true;
    for (channel, result) in results {
        match result {
            Ok(()) => text.push_str(&format!("{channel}: sent\n")),
            Err(e) => {
                all_sent = false;
                text.push_str(&format!("{channel}: FAILED: {e}\n"));
            }
        }
    }
    (text, all_sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_channel_is_named_and_fails_the_command() {
        let (text, ok) = report(&[
            ("ops".into(), Ok(())),
            ("pager".into(), Err("HTTP 500".into())),
        ]);
        assert_eq!(text, "ops: sent\npager: FAILED: HTTP 500\n");
        assert!(!ok);
        assert!(report(&[("ops".into(), Ok(()))]).1);
    }
}
