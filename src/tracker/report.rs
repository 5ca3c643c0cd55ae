//! What the tracker answers about an org: its load for admission, a snapshot for `/v1/usage`
//! and `/metrics`, and replay's totals.

use std::sync::Arc;

use crate::detect::{Cause, Transition};
use crate::events::Outcome;
use crate::model::{Dimension, Limits};

use super::jobs::{DurationHistogram, JobOutcome};
use super::upstream::UpstreamSnapshot;

/// Usage and limits of one org, for admission control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrgLoad {
    /// Requests in the rolling minute.
    pub rpm: u64,
    /// Requests in the rolling 24 h.
    pub daily: u64,
    /// Jobs in flight.
    pub in_flight: u64,
    /// The org's limits.
    pub limits: Limits,
}

/// One app in a snapshot.
#[derive(Debug, Clone)]
pub struct AppSnapshot {
    /// App name.
    pub app: Arc<str>,
    /// Requests in the rolling minute.
    pub rpm: u64,
    /// Requests in the rolling 24 h.
    pub daily: u64,
    /// Jobs in flight.
    pub in_flight: u64,
    /// Requests by [`Outcome`] index.
    pub requests: [u64; Outcome::ALL.len()],
    /// 429s by [`Cause`] index.
    pub rate_limited: [u64; Cause::ALL.len()],
    /// Requests before a Retry-After elapsed.
    pub retry_violations: u64,
}

/// A stuck job in a snapshot.
#[derive(Debug, Clone)]
pub struct StuckJob {
    /// Job id.
    pub job_id: String,
    /// Its app.
    pub app: Arc<str>,
    /// Seconds in flight.
    pub age_seconds: u64,
}

/// One org at a point in time.
#[derive(Debug, Clone)]
pub struct OrgSnapshot {
    /// Org name.
    pub org: Arc<str>,
    /// Tier name.
    pub tier: Arc<str>,
    /// Usage of every tracked dimension, limited or not.
    pub usage: Vec<(Dimension, u64)>,
    /// Limits of limited dimensions.
    pub limits: Vec<(Dimension, u64)>,
    /// Seconds until one more request fits, per limited dimension (`None` = waits on a job).
    pub headroom_seconds: Vec<(Dimension, Option<u64>)>,
    /// Apps.
    pub apps: Vec<AppSnapshot>,
    /// Stuck jobs, oldest first (at most 100).
    pub stuck_jobs: Vec<StuckJob>,
    /// Jobs in flight.
    pub jobs_in_flight: u64,
    /// Jobs stuck now.
    pub jobs_stuck: u64,
    /// Jobs finished by [`JobOutcome`] index.
    pub jobs_finished: [u64; JobOutcome::ALL.len()],
    /// Durations of finished jobs.
    pub job_duration: DurationHistogram,
    /// Bursts so far.
    pub bursts: u64,
    /// What the upstream reports, per dimension it reported.
    pub upstream: Vec<UpstreamSnapshot>,
    /// Dimensions whose limit in `limits` is the one the upstream reported (`learn`).
    pub learned: Vec<Dimension>,
    /// Alerts firing now.
    pub alerts: Vec<Transition>,
    /// `UsageHigh` warning and critical thresholds, basis points of the limit.
    pub thresholds_bp: [u32; 2],
    /// Requests per minute over the last hour, oldest first, the current minute last
    /// ([`HISTORY_MINUTES`] entries; empty unless the view is [`View::Page`]).
    pub requests_per_minute: Vec<u64>,
    /// Its model scopes, in config order.
    pub models: Vec<ScopeSnapshot>,
}

/// One model scope of an org in a snapshot.
#[derive(Debug, Clone)]
pub struct ScopeSnapshot {
    /// The `model` label.
    pub model: Arc<str>,
    /// The model ids it matches.
    pub models: Vec<Box<str>>,
    /// Usage of its requests and tokens, and of every dimension it limits.
    pub usage: Vec<(Dimension, u64)>,
    /// Limits of its limited dimensions.
    pub limits: Vec<(Dimension, u64)>,
    /// Seconds until one more fits, per dimension (`None` = waits on a batch finishing).
    pub headroom_seconds: Vec<(Dimension, Option<u64>)>,
    /// 429s its full windows explained, per app, by [`Cause`] index.
    pub rate_limited: Vec<(Arc<str>, [u64; Cause::ALL.len()])>,
    /// The limit source of the limits in `sourced` (`openai-admin`); the others are the config's.
    pub source: Option<Arc<str>>,
    /// Dimensions whose limit the source gave.
    pub sourced: Vec<Dimension>,
}

/// Minutes of [`OrgSnapshot::requests_per_minute`].
pub const HISTORY_MINUTES: usize = 60;

impl OrgSnapshot {
    /// Usage of `dim`, if tracked.
    pub fn usage_of(&self, dim: Dimension) -> Option<u64> {
        self.usage.iter().find(|(d, _)| *d == dim).map(|(_, v)| *v)
    }

    /// Limit of `dim`, if limited.
    pub fn limit_of(&self, dim: Dimension) -> Option<u64> {
        self.limits.iter().find(|(d, _)| *d == dim).map(|(_, v)| *v)
    }
}

/// Replay totals of one org.
#[derive(Debug, Clone, PartialEq)]
pub struct OrgReport {
    /// Org name.
    pub org: Arc<str>,
    /// Requests of any status.
    pub requests: u64,
    /// Highest window values.
    pub peaks: Peaks,
    /// 429s by [`Cause`] index (those its model scopes explained included).
    pub rate_limited: [u64; Cause::ALL.len()],
    /// Per model scope, the 429s its full windows explained, by [`Cause`] index.
    pub models: Vec<(Arc<str>, [u64; Cause::ALL.len()])>,
    /// Burst episodes.
    pub bursts: u64,
    /// Jobs that were ever stuck.
    pub stuck_jobs: u64,
    /// Retry-After violations.
    pub retry_violations: u64,
}

/// Events routed to shared overflow series, by kind (`series_overflow_total{kind}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Overflow {
    /// Events of orgs past `max_orgs`.
    pub orgs: u64,
    /// Events of apps past `max_apps_per_org`.
    pub apps: u64,
    /// Jobs dropped past `max_jobs_per_org`.
    pub jobs: u64,
}

/// Highest window values seen at any event time (replay's `peak_*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Peaks {
    /// Highest rpm usage.
    pub rpm: u64,
    /// Highest 24 h usage.
    pub daily: u64,
    /// Most jobs in flight.
    pub concurrency: u64,
}

/// What a snapshot is for: its reader decides what is worth computing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Everything (`/v1/usage`, `status`).
    Full,
    /// What `/metrics` exports: no headroom, no stuck-job list and no per-app window counts
    /// (each walks windows or jobs, and no series carries them; they read as empty or 0), so
    /// a scrape of 10 000 orgs stays cheap.
    Metrics,
    /// [`View::Full`] and the last hour's requests per minute (the status page).
    Page,
}
