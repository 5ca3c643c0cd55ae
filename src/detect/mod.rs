//! Detectors: bursts, 429 causes, retry violations and storms, and the alert state machines
//! of SPEC §9, as pure logic over what the tracker measured.
//!
//! Detectors judge each event at its own time with values the tracker hands them; they
//! never read a clock, never count requests themselves and never deliver anything. Their
//! output is [`Transition`]s (firing, escalation, resolve) that the daemon logs, exports and,
//! with alert delivery, sends. [`alerts`] holds each org's alert state and is the one place
//! a transition is built; [`source`] does the same for `LimitSourceFailing`, whose state is a
//! limit source's rather than an org's.

pub mod alerts;
pub mod burst;
pub mod level;
mod quiet;
pub mod source;

use std::sync::Arc;

use crate::model::{AlertName, Dimension, OptMs, Severity};

/// Whether a transition starts or ends firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Status {
    /// Firing (new, escalated, or lowered).
    Firing,
    /// No longer firing.
    Resolved,
}

impl Status {
    /// Lower-case value for JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// One change of an alert's state (or, with `repeat`, a reminder that it still fires).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Transition {
    /// When it happened (event time, Unix ms).
    pub ts_ms: i64,
    /// Org.
    pub org: Arc<str>,
    /// App, for per-app alerts (`RetryStorm`).
    pub app: Option<Arc<str>>,
    /// Which alert.
    pub alert: AlertName,
    /// Dimension, for `UsageHigh` and `LimitMismatch`.
    pub dimension: Option<Dimension>,
    /// Severity after the change (for a resolve: the severity that was firing).
    pub severity: Severity,
    /// Firing or resolved.
    pub status: Status,
    /// False for a change that updates state without a notification (critical → warning).
    pub notify: bool,
    /// When the firing began.
    pub starts_at_ms: i64,
    /// Usage at the time, where the alert has one.
    pub usage: Option<u64>,
    /// Limit, where the alert has one.
    pub limit: Option<u64>,
    /// Threshold crossed, basis points.
    pub threshold_bp: Option<u32>,
    /// The severity before this change, when the severity changed (escalation, fall).
    pub previous_severity: Option<Severity>,
    /// Highest severity of this firing so far; a resolve reaches every channel that saw it.
    pub peak: Severity,
    /// A reminder sent every `repeat_interval` while firing, not a change.
    pub repeat: bool,
    /// The model scope, for `UsageHigh` of an org's `[[orgs.models]]` limits.
    pub model: Option<Arc<str>>,
}

impl Transition {
    /// `org`'s `alert` starting to fire at `ts` with nothing else known, to be completed with
    /// struct-update syntax.
    pub fn firing(org: &Arc<str>, ts: i64, alert: AlertName, severity: Severity) -> Transition {
        Transition {
            ts_ms: ts,
            org: org.clone(),
            app: None,
            alert,
            dimension: None,
            severity,
            status: Status::Firing,
            notify: true,
            starts_at_ms: ts,
            usage: None,
            limit: None,
            threshold_bp: None,
            previous_severity: None,
            peak: severity,
            repeat: false,
            model: None,
        }
    }

    /// Usage over limit, where both are known.
    pub fn value(&self) -> Option<f64> {
        match (self.usage, self.limit) {
            (Some(u), Some(l)) if l > 0 => Some(u as f64 / l as f64),
            _ => None,
        }
    }

    /// A stable id of the alert (not of this transition): the same alert on the same
    /// org/app/dimension always has the same fingerprint, across restarts and versions.
    pub fn fingerprint(&self) -> String {
        let mut parts = vec![
            self.alert.as_str().as_bytes(),
            self.org.as_bytes(),
            self.app.as_deref().unwrap_or("").as_bytes(),
            self.dimension.map_or("", |d| d.as_str()).as_bytes(),
        ];
        // Only scoped alerts hash the model: the others keep the fingerprints they had.
        if let Some(m) = &self.model {
            parts.push(m.as_bytes());
        }
        let h = crate::model::stable_hash(&parts);
        format!("{h:016x}")
    }

    /// One line for humans: "acme at 92% of its 50 rpm".
    pub fn summary(&self) -> String {
        let who = match (&self.app, &self.model) {
            (Some(app), _) => format!("{}/{}", self.org, app),
            (None, Some(model)) => format!("{}'s {}", self.org, model),
            (None, None) => self.org.to_string(),
        };
        let resolved = if self.status == Status::Resolved {
            "resolved: "
        } else {
            ""
        };
        match (self.alert, self.usage, self.limit, self.dimension) {
            (AlertName::UsageHigh, Some(u), Some(l), Some(d)) => format!(
                "{resolved}{who} at {}% of its {l} {}",
                (u as u128 * 100 / l.max(1) as u128),
                d.unit()
            ),
            (AlertName::DailyQuotaExhausted, Some(u), Some(l), _) => {
                format!("{resolved}{who} used {u} of its {l} daily requests")
            }
            (AlertName::BurstDetected, Some(u), Some(l), _) => {
                format!("{resolved}{who} sent {u} requests within the burst window (threshold {l})")
            }
            (AlertName::JobsStuck, Some(u), _, _) => format!("{resolved}{who} has {u} stuck jobs"),
            (AlertName::RetryStorm, Some(u), _, _) => {
                format!("{resolved}{who} got {u} consecutive 429s")
            }
            (AlertName::LimitMismatch, reported, Some(l), Some(d)) => {
                let reported = reported.map_or("no limit".to_string(), |r| r.to_string());
                if self.status == Status::Resolved {
                    format!(
                        "resolved: {who} is configured for {l} {}, and the upstream reports {reported}",
                        d.unit()
                    )
                } else {
                    format!(
                        "{who} is configured for {l} {} but the upstream reports {reported}",
                        d.unit()
                    )
                }
            }
            (AlertName::LimitSourceFailing, Some(quiet), Some(after), _) => format!(
                "{who}: no poll of the limit source succeeded for {quiet} s (failing after {after} s); the last good limits stay in force"
            ),
            (AlertName::LimitSourceFailing, _, _, _) if self.status == Status::Resolved => {
                format!("resolved: {who}: the limit source answers again")
            }
            _ => format!("{resolved}{who} {}", self.alert),
        }
    }
}

/// The most likely cause of a 429 (SPEC §5), the `cause` label of `rate_limited_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// `error_code` was `insufficient_quota`.
    Quota,
    /// Jobs in flight had reached the concurrency limit.
    Concurrency,
    /// The rolling minute had reached the rpm limit.
    Rpm,
    /// The rolling 24 h had reached the daily limit.
    Daily,
    /// The prior requests in the burst window reached the burst threshold.
    Burst,
    /// None of the above: upstream peak throttling or traffic ratewarden does not see.
    Unexplained,
    /// The rolling minute's tokens had reached the tpm limit.
    Tpm,
    /// The rolling 24 h's tokens had reached the tpd limit.
    Tpd,
    /// The rolling minute's images had reached the ipm limit.
    Ipm,
    /// The rolling minute's input tokens had reached the itpm limit.
    Itpm,
    /// The rolling minute's output tokens had reached the otpm limit.
    Otpm,
    /// A batch submitted while its input tokens' queue was full (`batch_queue_tokens`).
    BatchQueueTokens,
}

impl Cause {
    /// Every cause, in label order.
    pub const ALL: [Cause; 12] = [
        Cause::Quota,
        Cause::Concurrency,
        Cause::Rpm,
        Cause::Daily,
        Cause::Burst,
        Cause::Unexplained,
        Cause::Tpm,
        Cause::Tpd,
        Cause::Ipm,
        Cause::Itpm,
        Cause::Otpm,
        Cause::BatchQueueTokens,
    ];

    /// How many causes an app's stored counters hold (the first of [`Cause::ALL`]); the
    /// others are kept beside them since snapshot format 8.
    pub const LEGACY: usize = 6;

    /// Whether a count of this cause is listed (`/metrics`, replay's report): the causes every
    /// org can have always, once the app had a 429; those of token, image and batch limits
    /// once they happened.
    pub fn listed(self, count: u64) -> bool {
        self.index() < Cause::LEGACY || count > 0
    }

    /// The cause of a 429 met with `dim` full.
    pub fn of_dimension(dim: Dimension) -> Cause {
        match dim {
            Dimension::Rpm => Cause::Rpm,
            Dimension::Daily => Cause::Daily,
            Dimension::Concurrency => Cause::Concurrency,
            Dimension::Tpm => Cause::Tpm,
            Dimension::Tpd => Cause::Tpd,
            Dimension::Ipm => Cause::Ipm,
            Dimension::Itpm => Cause::Itpm,
            Dimension::Otpm => Cause::Otpm,
            Dimension::BatchQueueTokens => Cause::BatchQueueTokens,
        }
    }

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Quota => "quota",
            Cause::Concurrency => "concurrency",
            Cause::Rpm => "rpm",
            Cause::Daily => "daily",
            Cause::Burst => "burst",
            Cause::Unexplained => "unexplained",
            Cause::Tpm => "tpm",
            Cause::Tpd => "tpd",
            Cause::Ipm => "ipm",
            Cause::Itpm => "itpm",
            Cause::Otpm => "otpm",
            Cause::BatchQueueTokens => "batch_queue_tokens",
        }
    }

    /// Position in [`Cause::ALL`], for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What the tracker knew just before a 429, counting prior requests only.
#[derive(Debug, Clone, Copy, Default)]
pub struct CauseInputs<'a> {
    /// The 429's `error_code`.
    pub error_code: Option<&'a str>,
    /// Jobs in flight at the 429's time, and the concurrency limit (0 = none).
    pub in_flight: u64,
    /// Concurrency limit.
    pub concurrency_limit: u64,
    /// Requests in the rolling minute before the 429.
    pub rpm: u64,
    /// rpm limit.
    pub rpm_limit: u64,
    /// Requests in the rolling 24 h before the 429.
    pub daily: u64,
    /// Daily limit.
    pub daily_limit: u64,
    /// Prior requests in `(ts − W, ts]`.
    pub burst_count: u64,
    /// Burst threshold, `None` when burst detection is off for the org.
    pub burst_threshold: Option<u64>,
    /// Further windows, judged after the daily one and before bursts, in order: the org's
    /// token and image windows, then those of the request's model scope. Each gives its
    /// cause, usage, limit (0 = none) and whether it is the scope's.
    pub others: &'a [Other],
}

/// One more window for [`classify_429`]: (cause, usage, limit, of the model scope).
pub type Other = (Cause, u64, u64, bool);

/// A 429's cause, and whether the request's model scope was what was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Explained {
    /// The cause.
    pub cause: Cause,
    /// True when the window found full is the model scope's.
    pub scoped: bool,
}

/// Classifies a 429: the first cause that holds, in SPEC §5 order.
pub fn classify_429(i: &CauseInputs<'_>) -> Explained {
    let reached = |usage: u64, limit: u64| limit > 0 && usage >= limit;
    let org = |cause| Explained {
        cause,
        scoped: false,
    };
    if i.error_code == Some("insufficient_quota") {
        org(Cause::Quota)
    } else if reached(i.in_flight, i.concurrency_limit) {
        org(Cause::Concurrency)
    } else if reached(i.rpm, i.rpm_limit) {
        org(Cause::Rpm)
    } else if reached(i.daily, i.daily_limit) {
        org(Cause::Daily)
    } else if let Some(&(cause, _, _, scoped)) = i
        .others
        .iter()
        .find(|(_, usage, limit, _)| reached(*usage, *limit))
    {
        Explained { cause, scoped }
    } else if i.burst_threshold.is_some_and(|t| i.burst_count >= t) {
        org(Cause::Burst)
    } else {
        org(Cause::Unexplained)
    }
}

/// Retry behaviour of one org/app: Retry-After compliance and consecutive 429s.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct RetryState {
    /// Time of the last 429 seen.
    last_429_ms: OptMs,
    /// Requests before this time (and after the 429) violate its Retry-After.
    retry_until_ms: i64,
    /// 429s in a row.
    consecutive_429: u32,
    /// Storm firing since.
    storm_since: OptMs,
    /// Time of the newest response seen; an older one arrives late and does not change
    /// the run of 429s (it was not part of it when it happened).
    last_response_ms: OptMs,
}

/// A change of the retry-storm alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storm {
    /// `retry_storm_after` consecutive 429s reached: fires, with the count.
    Fired(u32),
    /// A non-429 response ended it.
    Resolved {
        /// When the storm started firing.
        since: i64,
    },
}

impl RetryState {
    /// State read from an older snapshot that did not record the newest response.
    pub fn restored(
        last_429_ms: Option<i64>,
        retry_until_ms: i64,
        consecutive_429: u32,
        storm_since: Option<i64>,
    ) -> RetryState {
        RetryState {
            last_429_ms: OptMs::new(last_429_ms),
            retry_until_ms,
            consecutive_429,
            storm_since: OptMs::new(storm_since),
            last_response_ms: OptMs::NONE,
        }
    }

    /// True if a request at `ts` came before the Retry-After of the last 429 elapsed.
    pub fn is_violation(&self, ts: i64) -> bool {
        self.last_429_ms
            .get()
            .is_some_and(|t| ts > t && ts < self.retry_until_ms)
    }

    /// True while a storm is firing.
    pub fn storming(&self) -> Option<i64> {
        self.storm_since.get()
    }

    /// Consecutive 429s so far.
    pub fn consecutive(&self) -> u32 {
        self.consecutive_429
    }

    /// Records the Retry-After of a 429 at `ts` (the newest 429 decides the window).
    pub fn note_retry_after(&mut self, ts: i64, status: Option<u16>, retry_after_ms: Option<i64>) {
        if status == Some(429) && self.last_429_ms.get().is_none_or(|t| ts >= t) {
            self.last_429_ms = OptMs::new(Some(ts));
            self.retry_until_ms = ts + retry_after_ms.unwrap_or(0);
        }
    }

    /// Records a response for the run of 429s. Requests without a status do not change the
    /// storm state, nor do responses older than the newest one seen (a late 429 does not
    /// extend a run of 429s it was not part of, a late 200 does not end a storm that began
    /// after it).
    pub fn on_response(&mut self, ts: i64, status: Option<u16>, storm_after: u32) -> Option<Storm> {
        if status.is_none() || self.last_response_ms.get().is_some_and(|t| ts < t) {
            return None;
        }
        self.last_response_ms = OptMs::new(Some(ts));
        match status {
            Some(429) => {
                self.consecutive_429 = self.consecutive_429.saturating_add(1);
                if self.consecutive_429 >= storm_after && !self.storm_since.is_some() {
                    self.storm_since = OptMs::new(Some(ts));
                    return Some(Storm::Fired(self.consecutive_429));
                }
                None
            }
            Some(_) => {
                self.consecutive_429 = 0;
                let since = std::mem::take(&mut self.storm_since).get();
                since.map(|since| Storm::Resolved { since })
            }
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response as the tracker records it: its Retry-After, then the run of 429s.
    fn respond(
        r: &mut RetryState,
        ts: i64,
        status: Option<u16>,
        retry_after_ms: Option<i64>,
        storm_after: u32,
    ) -> Option<Storm> {
        r.note_retry_after(ts, status, retry_after_ms);
        r.on_response(ts, status, storm_after)
    }

    fn base() -> CauseInputs<'static> {
        CauseInputs {
            concurrency_limit: 2,
            rpm_limit: 10,
            daily_limit: 100,
            burst_threshold: Some(5),
            ..CauseInputs::default()
        }
    }

    #[test]
    fn every_429_cause_in_order() {
        let quota = CauseInputs {
            error_code: Some("insufficient_quota"),
            in_flight: 2,
            rpm: 10,
            ..base()
        };
        assert_eq!(
            classify_429(&quota).cause,
            Cause::Quota,
            "quota wins over everything"
        );
        let conc = CauseInputs {
            in_flight: 2,
            rpm: 10,
            ..base()
        };
        assert_eq!(classify_429(&conc).cause, Cause::Concurrency);
        let rpm = CauseInputs {
            in_flight: 1,
            rpm: 10,
            daily: 100,
            ..base()
        };
        assert_eq!(classify_429(&rpm).cause, Cause::Rpm);
        let daily = CauseInputs {
            rpm: 9,
            daily: 100,
            burst_count: 5,
            ..base()
        };
        assert_eq!(classify_429(&daily).cause, Cause::Daily);
        let burst = CauseInputs {
            rpm: 9,
            burst_count: 5,
            ..base()
        };
        assert_eq!(classify_429(&burst).cause, Cause::Burst);
        let none = CauseInputs {
            rpm: 9,
            daily: 99,
            in_flight: 1,
            burst_count: 4,
            error_code: Some("rate_limit_exceeded"),
            ..base()
        };
        assert_eq!(classify_429(&none).cause, Cause::Unexplained);
        let unlimited = CauseInputs {
            rpm: 1_000,
            in_flight: 1_000,
            ..CauseInputs::default()
        };
        assert_eq!(classify_429(&unlimited).cause, Cause::Unexplained);
        // A model scope's full window explains what the org's do not, before a burst.
        let others = [(Cause::Tpm, 10, 100, false), (Cause::Rpm, 5, 5, true)];
        let scoped = CauseInputs {
            rpm: 9,
            burst_count: 5,
            others: &others,
            ..base()
        };
        assert_eq!(
            classify_429(&scoped),
            Explained {
                cause: Cause::Rpm,
                scoped: true
            }
        );
        let org_tokens = [(Cause::Tpm, 100, 100, false), (Cause::Rpm, 5, 5, true)];
        let tokens = CauseInputs {
            others: &org_tokens,
            ..base()
        };
        assert_eq!(
            classify_429(&tokens),
            Explained {
                cause: Cause::Tpm,
                scoped: false
            }
        );
    }

    #[test]
    fn retry_violation_window() {
        let mut r = RetryState::default();
        assert!(!r.is_violation(0));
        respond(&mut r, 1_000, Some(429), Some(30_000), 5);
        assert!(!r.is_violation(1_000), "the 429 itself");
        assert!(!r.is_violation(500), "before the 429");
        assert!(r.is_violation(1_001));
        assert!(r.is_violation(30_999));
        assert!(!r.is_violation(31_000), "Retry-After elapsed");
        // A late, older 429 does not move the window back.
        respond(&mut r, 200, Some(429), Some(1_000), 5);
        assert!(r.is_violation(20_000));
    }

    #[test]
    fn storm_fires_at_n_and_resolves_on_a_non_429() {
        let mut r = RetryState::default();
        for i in 0..4 {
            assert_eq!(respond(&mut r, i, Some(429), None, 5), None);
        }
        assert_eq!(
            respond(&mut r, 4, Some(429), None, 5),
            Some(Storm::Fired(5))
        );
        assert_eq!(respond(&mut r, 5, Some(429), None, 5), None, "fires once");
        assert_eq!(
            respond(&mut r, 6, None, None, 5),
            None,
            "no status: no response"
        );
        assert_eq!(
            respond(&mut r, 7, Some(200), None, 5),
            Some(Storm::Resolved { since: 4 })
        );
        assert_eq!(r.consecutive(), 0);
        // A 500 also breaks the run of 429s.
        for i in 0..4 {
            respond(&mut r, 10 + i, Some(429), None, 5);
        }
        respond(&mut r, 20, Some(500), None, 5);
        assert_eq!(respond(&mut r, 21, Some(429), None, 5), None);
    }

    #[test]
    fn late_responses_do_not_change_the_run() {
        let mut r = RetryState::default();
        for i in 10..15 {
            respond(&mut r, i, Some(429), None, 5);
        }
        assert!(r.storming().is_some());
        assert_eq!(
            respond(&mut r, 5, Some(200), None, 5),
            None,
            "a 200 from before"
        );
        assert!(r.storming().is_some());
        assert_eq!(
            respond(&mut r, 20, Some(200), None, 5),
            Some(Storm::Resolved { since: 14 })
        );
        for i in 0..10 {
            respond(&mut r, i, Some(429), None, 5);
        }
        assert_eq!(r.consecutive(), 0, "late 429s are not a new run");
    }

    #[test]
    fn summaries_read_well() {
        let t = Transition {
            dimension: Some(Dimension::Rpm),
            usage: Some(46),
            limit: Some(50),
            threshold_bp: Some(9000),
            ..Transition::firing(&"acme".into(), 0, AlertName::UsageHigh, Severity::Critical)
        };
        assert_eq!(t.summary(), "acme at 92% of its 50 rpm");
        assert_eq!(t.value(), Some(0.92));
        assert_eq!(t.fingerprint().len(), 16);
        let resolved = Transition {
            status: Status::Resolved,
            severity: Severity::Warning,
            ..t.clone()
        };
        assert_eq!(
            resolved.fingerprint(),
            t.fingerprint(),
            "stable across states"
        );
        let other = Transition {
            dimension: Some(Dimension::Daily),
            ..t.clone()
        };
        assert_ne!(other.fingerprint(), t.fingerprint());
    }
}
