//! `LimitSourceFailing`: a limit source (`[[limit_sources]]`) whose polls have not succeeded
//! for `failing_after`. The poller reports each success and asks for a judgement at the time
//! it gives; this state machine is the one place the alert's transitions are built. It reads
//! no clock and knows nothing of HTTP.

use std::sync::Arc;

use super::{Status, Transition};
use crate::model::{AlertName, Severity};

/// One limit source's health, as the poller feeds it.
///
/// The transitions carry the source's name (`openai-admin`) as their `app`, so that two
/// sources of one org are two alerts (fingerprints differ) and every channel shows which.
#[derive(Debug, Clone)]
pub struct SourceHealth {
    org: Arc<str>,
    source: Arc<str>,
    /// The last successful poll, or when watching began (a source that never answered is
    /// failing `failing_after` after the start).
    good_since: i64,
    /// When the alert began firing, while it fires.
    firing_since: Option<i64>,
}

impl SourceHealth {
    /// A source of `org` named `source` (`openai-admin`), watched from `now_ms`.
    pub fn new(org: &str, source: &str, now_ms: i64) -> SourceHealth {
        SourceHealth {
            org: org.into(),
            source: source.into(),
            good_since: now_ms,
            firing_since: None,
        }
    }

    /// Whether the alert fires now.
    pub fn firing(&self) -> bool {
        self.firing_since.is_some()
    }

    /// The time [`SourceHealth::judge`] would fire at, if no success comes first (`None`
    /// while firing).
    pub fn fires_at(&self, failing_after_ms: i64) -> Option<i64> {
        match self.firing_since {
            Some(_) => None,
            None => Some(self.good_since.saturating_add(failing_after_ms)),
        }
    }

    /// A poll succeeded at `now_ms`: the resolve, if the alert was firing.
    pub fn success(&mut self, now_ms: i64) -> Option<Transition> {
        self.good_since = self.good_since.max(now_ms);
        let since = self.firing_since.take()?;
        Some(Transition {
            status: Status::Resolved,
            usage: Some(0),
            ..self.transition(since, now_ms, None)
        })
    }

    /// Judges at `now_ms`: the firing transition once no poll succeeded for
    /// `failing_after_ms` (once per failing spell; a success resolves it).
    pub fn judge(&mut self, now_ms: i64, failing_after_ms: i64) -> Option<Transition> {
        if self.firing_since.is_some() {
            return None;
        }
        let quiet = now_ms.saturating_sub(self.good_since);
        if quiet < failing_after_ms {
            return None;
        }
        self.firing_since = Some(now_ms);
        Some(self.transition(now_ms, now_ms, Some((quiet, failing_after_ms))))
    }

    /// `usage` is the seconds without a good poll, `limit` the seconds allowed.
    fn transition(&self, since: i64, now_ms: i64, quiet: Option<(i64, i64)>) -> Transition {
        let secs = |ms: i64| u64::try_from(ms / 1000).unwrap_or(0);
        Transition {
            app: Some(self.source.clone()),
            starts_at_ms: since,
            usage: quiet.map(|(q, _)| secs(q)),
            limit: quiet.map(|(_, f)| secs(f)),
            ..Transition::firing(
                &self.org,
                now_ms,
                AlertName::LimitSourceFailing,
                Severity::Warning,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    #[test]
    fn fires_once_after_failing_after_and_resolves_on_success() {
        let mut h = SourceHealth::new("acme", "openai-admin", 0);
        assert_eq!(h.fires_at(3 * HOUR), Some(3 * HOUR));
        assert!(h.judge(3 * HOUR - 1, 3 * HOUR).is_none());
        let fired = h.judge(3 * HOUR, 3 * HOUR).expect("fires at the boundary");
        assert_eq!(fired.alert, AlertName::LimitSourceFailing);
        assert_eq!(fired.status, Status::Firing);
        assert_eq!(fired.severity, Severity::Warning);
        assert_eq!(fired.app.as_deref(), Some("openai-admin"));
        assert_eq!((fired.usage, fired.limit), (Some(10_800), Some(10_800)));
        assert!(h.firing());
        assert!(h.judge(4 * HOUR, 3 * HOUR).is_none(), "fires once");
        let resolved = h.success(5 * HOUR).expect("a success resolves it");
        assert_eq!(resolved.status, Status::Resolved);
        assert_eq!(resolved.starts_at_ms, 3 * HOUR);
        assert_eq!(resolved.fingerprint(), fired.fingerprint());
        assert!(h.success(6 * HOUR).is_none(), "nothing to resolve");
        assert!(
            h.judge(8 * HOUR, 3 * HOUR).is_none(),
            "counted from the last success"
        );
        assert!(h.judge(9 * HOUR, 3 * HOUR).is_some());
    }

    #[test]
    fn each_source_of_an_org_is_its_own_alert() {
        let mut a = SourceHealth::new("acme", "openai-admin", 0);
        let mut b = SourceHealth::new("acme", "anthropic-admin", 0);
        let (a, b) = (a.judge(HOUR, 1).unwrap(), b.judge(HOUR, 1).unwrap());
        assert_ne!(a.fingerprint(), b.fingerprint());
    }
}
