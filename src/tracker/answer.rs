//! What an org answers about itself: its snapshot for `/v1/usage`, `/metrics` and the status
//! page, its alerts firing now, its load for admission and its totals for replay. It reads
//! the org's state; it changes nothing.

use std::sync::Arc;

use super::Org;
use super::report::{
    AppSnapshot, HISTORY_MINUTES, OrgLoad, OrgReport, OrgSnapshot, Peaks, StuckJob, View,
};
use super::settings::*;
use crate::detect::Transition;
use crate::model::Dimension;

impl Org {
    /// Seconds until one more request fits in `dim` at `now`: `None` for an unlimited
    /// dimension, `Some(None)` when it waits on a job finishing.
    pub(super) fn headroom_seconds(&self, dim: Dimension, now: i64) -> Option<Option<u64>> {
        let limit = dim.limit(&self.limits);
        if limit == 0 {
            return None;
        }
        let tokens = self.tokens.as_deref();
        let frees_at_ms = match dim {
            Dimension::Concurrency => {
                return Some(((self.jobs.in_flight() as u64) < limit).then_some(0));
            }
            Dimension::Rpm => self.rpm.frees_at(sec(now), limit) * 1_000,
            Dimension::Daily => daily_frees_at(&self.daily, self.limits.daily_window, limit, now),
            Dimension::Tpm => tokens.map_or(now, |t| t.tpm.frees_at(sec(now), limit) * 1_000),
            Dimension::Tpd => tokens.map_or(now, |t| t.tpd.frees_at(minute(now), limit) * 60_000),
            _ => {
                return match &self.extended {
                    Some(x) => x.own.headroom_seconds(dim, &self.limits, now),
                    None => Some(Some(0)),
                };
            }
        };
        Some(Some(((frees_at_ms - now).max(0) as u64).div_ceil(1_000)))
    }

    pub(super) fn snapshot(&self, now: i64, s: &Settings, view: View) -> OrgSnapshot {
        let full = view != View::Metrics;
        let dims: Vec<Dimension> = Dimension::ALL
            .into_iter()
            .filter(|d| match d {
                Dimension::Tpm | Dimension::Tpd => self.tokens.is_some(),
                Dimension::Rpm | Dimension::Daily | Dimension::Concurrency => true,
                _ => d.limit(&self.limits) > 0,
            })
            .collect();
        let usage = dims.iter().map(|&d| (d, self.usage_at(d, now))).collect();
        let limits = dims
            .iter()
            .filter_map(|&d| Some((d, d.limit(&self.limits))).filter(|(_, l)| *l > 0))
            .collect();
        let headroom = if full {
            dims.iter()
                .filter_map(|&d| self.headroom_seconds(d, now).map(|h| (d, h)))
                .collect()
        } else {
            Vec::new()
        };
        let apps = self
            .apps
            .iter()
            .enumerate()
            .map(|(i, a)| AppSnapshot {
                app: a.name.clone(),
                // No series carries an app's window counts: a scrape skips them.
                rpm: if full { a.rpm.count_at(sec(now)) } else { 0 },
                daily: if full {
                    a.daily.count_at(minute(now))
                } else {
                    0
                },
                in_flight: a.in_flight,
                requests: a.requests,
                rate_limited: self.app_causes(i),
                retry_violations: a.retry_violations,
            })
            .collect();
        let stuck_jobs = self
            .jobs
            .stuck_jobs()
            .take(if full { STUCK_LISTED } else { 0 })
            .map(|(id, j)| StuckJob {
                job_id: id.to_string(),
                app: self
                    .apps
                    .get(j.app as usize)
                    .map_or_else(|| Arc::from("default"), |a| a.name.clone()),
                age_seconds: ((now - j.started_ms).max(0) / 1000) as u64,
            })
            .collect();
        let mut alerts = Vec::new();
        self.active_alerts(now, s, &mut alerts);
        OrgSnapshot {
            org: self.name.clone(),
            tier: self.tier.clone(),
            usage,
            limits,
            headroom_seconds: headroom,
            apps,
            stuck_jobs,
            jobs_in_flight: self.jobs.in_flight() as u64,
            thresholds_bp: s.rules.for_org(&self.name).thresholds_bp,
            requests_per_minute: if view == View::Page {
                let to = minute(now);
                self.daily.per_bucket(to - HISTORY_MINUTES as i64 + 1, to)
            } else {
                Vec::new()
            },
            jobs_stuck: self.jobs.stuck_count() as u64,
            jobs_finished: self.jobs_finished,
            job_duration: self.job_duration.clone(),
            bursts: self.burst.episodes,
            upstream: self
                .upstream
                .as_ref()
                .map_or_else(Vec::new, |u| u.snapshot(now)),
            learned: match &self.upstream {
                Some(u) if s.learn => Dimension::ALL
                    .into_iter()
                    .filter(|&d| u.limit(d).is_some_and(|l| l > 0))
                    .collect(),
                _ => Vec::new(),
            },
            alerts,
            models: self.scope_snapshots(now, full),
        }
    }

    pub(super) fn active_alerts(&self, now: i64, s: &Settings, out: &mut Vec<Transition>) {
        if !self.alerting {
            return;
        }
        let usage = |dim: Dimension| self.usage_at(dim, now);
        let limit = |dim: Dimension| dim.limit(&self.limits);
        let at = crate::detect::alerts::Now {
            usage: &usage,
            limit: &limit,
            burst: self.burst.is_open().then(|| {
                (
                    self.burst.count(now, s.detect.burst_window_ms),
                    self.burst_threshold,
                )
            }),
            stuck: self.jobs.stuck_count() as u64,
            storms: self
                .apps
                .iter()
                .filter_map(|app| {
                    let since = app.retry.storming()?;
                    Some((app.name.clone(), since, app.retry.consecutive() as u64))
                })
                .collect(),
        };
        self.alerts
            .active(&self.name, &at, now, s.rules.for_org(&self.name), out);
        self.extended_alerts(now, s, out);
        if let Some(u) = &self.upstream {
            let configured = |d: Dimension| d.limit(&u.configured);
            let reported = |d: Dimension| u.limit(d);
            u.mismatch
                .active(&self.name, now, &configured, &reported, out);
        }
    }

    /// What it uses at `now` and may use ([`super::Tracker::load_of`]).
    pub(super) fn load(&self, now: i64) -> OrgLoad {
        OrgLoad {
            rpm: self.usage_at(Dimension::Rpm, now),
            daily: self.usage_at(Dimension::Daily, now),
            in_flight: self.jobs.in_flight() as u64,
            limits: self.limits,
        }
    }

    pub(super) fn report(&self) -> OrgReport {
        let rate_limited = self.all_causes();
        let mut requests = 0;
        let mut retry_violations = 0;
        for app in &self.apps {
            requests += app.requests.iter().sum::<u64>();
            retry_violations += app.retry_violations;
        }
        OrgReport {
            org: self.name.clone(),
            requests,
            peaks: Peaks {
                concurrency: self.peaks.concurrency.max(self.concurrency.peak()),
                ..self.peaks
            },
            rate_limited,
            models: self.scope_causes(),
            bursts: self.burst.episodes,
            stuck_jobs: self.ever_stuck,
            retry_violations,
        }
    }
}
