//! What the tracker takes from the config, and what every part of it shares: window widths
//! and slack, caps per org, and the arithmetic of the daily window (rolling or calendar) for
//! an org and its model scopes alike.

use std::sync::Arc;

use crate::config::{AlertsConfig, Config, DetectConfig};
use crate::detect::alerts::AlertRules;
use crate::model::{DailyWindow, Dimension, Limits};

use super::window::Window;

/// Seconds in an rpm window: the current one and the 60 before (never fewer than 60 s).
pub(super) const RPM_WIDTH: usize = 61;
/// Seconds behind the newest request that the rpm window still answers exactly; covers the
/// 5 minutes live events may run ahead of the wall clock.
pub(super) const RPM_SLACK: usize = 300;
/// Minutes in a daily window: the current one and the 1 440 before.
pub(super) const DAILY_WIDTH: usize = 1441;
/// Minutes behind the newest request that the daily window still answers exactly.
pub(super) const DAILY_SLACK: usize = 5;
/// Minute buckets a calendar day's window holds: the longest day (25 h, when the clock falls
/// back) and its current minute, and the usual slack.
pub(super) const CALENDAR_SPAN: usize = 25 * 60 + 1 + DAILY_SLACK;

/// Most job ends kept per org waiting for their starts (about 170 bytes each).
pub(super) const EARLY_ENDS_PER_ORG: usize = 256;

/// Most stuck jobs listed per org in `/v1/usage`.
pub(super) const STUCK_LISTED: usize = 100;

pub(super) fn sec(ts: i64) -> i64 {
    ts.div_euclid(1_000)
}

pub(super) fn minute(ts: i64) -> i64 {
    ts.div_euclid(60_000)
}

/// Requests of `daily` (minute buckets) in the daily window at `ts`: the rolling 24 h, or
/// the calendar day so far (`daily_window`).
pub(super) fn daily_count(daily: &Window<u32>, window: DailyWindow, ts: i64) -> u64 {
    match window.day_of(ts) {
        None => daily.count_at(minute(ts)),
        Some((start, _)) => daily.count_between(minute(start), minute(ts)),
    }
}

/// When one more request fits `limit` in the daily window at `now`, Unix ms: as the rolling
/// 24 h frees up, or at the end of a full calendar day.
pub(super) fn daily_frees_at(
    daily: &Window<u32>,
    window: DailyWindow,
    limit: u64,
    now: i64,
) -> i64 {
    match window.day_of(now) {
        Some((_, end)) if daily_count(daily, window, now) >= limit => end,
        Some(_) => now,
        None => daily.frees_at(minute(now), limit) * 60_000,
    }
}

/// Whether a request at `ts` is in `dim`'s window at `present` (a late one may have left
/// it): the rolling minute, the rolling 24 h, or for `daily` its calendar day (`window`);
/// what the batch queue and concurrency hold does not pass with time.
pub(super) fn in_window(dim: Dimension, ts: i64, present: i64, window: DailyWindow) -> bool {
    match dim {
        Dimension::Daily => match window.day_of(present) {
            Some((start, _)) => ts >= start,
            None => minute(ts) > minute(present) - DAILY_WIDTH as i64,
        },
        Dimension::Tpd => minute(ts) > minute(present) - DAILY_WIDTH as i64,
        Dimension::Concurrency | Dimension::BatchQueueTokens => true,
        Dimension::Rpm | Dimension::Tpm | Dimension::Ipm | Dimension::Itpm | Dimension::Otpm => {
            sec(ts) > sec(present) - RPM_WIDTH as i64
        }
    }
}

/// What the tracker needs from the config, copied once.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `[detect]`.
    pub detect: DetectConfig,
    /// `[alerts]` thresholds.
    pub alerts: AlertsConfig,
    /// The level rules each org's alerts follow.
    pub rules: AlertRules,
    /// Tier name of unconfigured orgs.
    pub default_tier: Arc<str>,
    /// Limits of unconfigured orgs.
    pub default_limits: Limits,
    /// Model scopes of unconfigured orgs (their tier's).
    pub default_models: Vec<Arc<crate::model::ModelScope>>,
    /// `max_orgs`.
    pub max_orgs: usize,
    /// `max_apps_per_org`.
    pub max_apps_per_org: usize,
    /// `max_jobs_per_org`.
    pub max_jobs_per_org: usize,
    /// `max_request_ids`.
    pub max_request_ids: usize,
    /// `max_new_orgs_per_second`.
    pub max_new_orgs_per_second: usize,
    /// `[limits] learn`.
    pub learn: bool,
    /// `[metrics] job_duration_buckets`: the bounds job durations are counted in.
    pub job_buckets: Arc<[f64]>,
    /// `[admission]`.
    pub admission: crate::config::AdmissionConfig,
}

impl Settings {
    /// Takes what the tracker needs from `config`.
    pub fn from_config(config: &Config) -> Settings {
        Settings {
            detect: config.detect.clone(),
            alerts: config.alerts.clone(),
            rules: AlertRules::from_config(config),
            default_tier: config.limits.default_tier.as_str().into(),
            default_limits: config.default_limits(),
            default_models: config.default_models().into_iter().map(Arc::new).collect(),
            max_orgs: config.limits.max_orgs,
            max_apps_per_org: config.limits.max_apps_per_org,
            max_jobs_per_org: config.limits.max_jobs_per_org,
            max_request_ids: config.limits.max_request_ids,
            max_new_orgs_per_second: config.limits.max_new_orgs_per_second,
            learn: config.limits.learn,
            job_buckets: config.metrics.job_duration_buckets.clone(),
            admission: config.admission.clone(),
        }
    }
}

/// Jobs an org may have in flight: an org allowed more concurrent jobs than
/// `max_jobs_per_org` must still be able to reach its thresholds.
pub(super) fn job_cap(s: &Settings, limits: &Limits) -> usize {
    s.max_jobs_per_org
        .max(usize::try_from(limits.concurrency.saturating_mul(2)).unwrap_or(usize::MAX))
}
