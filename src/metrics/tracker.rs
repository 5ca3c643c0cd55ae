//! The tracker's families (SPEC §8), read at scrape time from the org snapshots a
//! [`ScrapeSource`] hands over one at a time and the [`super::Scraped`] values it ends with,
//! and written with [`super::text`]: usage, limits, requests, 429 causes, jobs, bursts,
//! alerts, overflow.
//!
//! Series appear once they have something to say: a request outcome once it happened, the
//! 429 causes and retry violations of an app once it had a 429 (all at once, so `rate()`
//! sees each from zero), job series and the concurrency dimension once the org had a job,
//! the duration histogram once a job finished. Labels are borrowed, never built per series.
//! It never reaches into the live state: it reads only what the [`ScrapeSource`] hands over.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::source::ScrapeSource;
use super::text::{Family, Format, Type, le_values};
use crate::config::MetricsConfig;
use crate::detect::Cause;
use crate::events::Outcome;
use crate::model::Dimension;
use crate::tracker::{JobOutcome, OrgSnapshot};

/// Reads the tracker at scrape time.
pub(super) struct TrackerFamilies {
    /// Empty while start-up recovery runs; nothing is exported from the tracker until then.
    pub source: Arc<dyn ScrapeSource>,
    /// Which optional series to export.
    pub series: MetricsConfig,
}

/// org, alert, dimension and severity of `alerts_firing`.
type FiringLabels = (Arc<str>, &'static str, &'static str, &'static str);

/// A count as a gauge value: never negative, however large (a saturated window is u64::MAX).
fn as_gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// An app's counters as exported: one app's, or the sum of an org's apps under no app label.
struct AppCounts<'a> {
    app: Option<&'a str>,
    requests: [u64; Outcome::ALL.len()],
    rate_limited: [u64; Cause::ALL.len()],
    retry_violations: u64,
}

impl AppCounts<'_> {
    fn had_429(&self) -> bool {
        self.rate_limited.iter().any(|&n| n > 0)
    }
}

/// `o`'s apps' counters, each app's or (not `per_app`) their sum.
fn app_counts(o: &OrgSnapshot, per_app: bool) -> Vec<AppCounts<'_>> {
    if per_app {
        return o
            .apps
            .iter()
            .map(|a| AppCounts {
                app: Some(&*a.app),
                requests: a.requests,
                rate_limited: a.rate_limited,
                retry_violations: a.retry_violations,
            })
            .collect();
    }
    let mut sum = AppCounts {
        app: None,
        requests: [0; Outcome::ALL.len()],
        rate_limited: [0; Cause::ALL.len()],
        retry_violations: 0,
    };
    for a in &o.apps {
        for (s, n) in sum.requests.iter_mut().zip(a.requests) {
            *s += n;
        }
        for (s, n) in sum.rate_limited.iter_mut().zip(a.rate_limited) {
            *s += n;
        }
        sum.retry_violations += a.retry_violations;
    }
    vec![sum]
}

/// The labels of an app's series: its org, its app (per app) and `extra`.
fn app_l<'a>(
    org: &'a str,
    a: &AppCounts<'a>,
    extra: Option<(&'static str, &'a str)>,
    buf: &mut Vec<(&'static str, &'a str)>,
) {
    buf.clear();
    buf.push(("org", org));
    buf.extend(a.app.map(|app| ("app", app)));
    buf.extend(extra);
}

/// Whether `o` has ever had a job (in flight, stuck or finished): its job series and its
/// concurrency dimension have something to say only then.
fn had_jobs(o: &OrgSnapshot) -> bool {
    o.jobs_in_flight > 0 || o.jobs_stuck > 0 || o.jobs_finished.iter().any(|&n| n > 0)
}

/// Whether dimension `d` of `o` is exported: every dimension but concurrency, which only
/// for an org that has had jobs (before that its usage is 0 and says nothing).
fn shows(o: &OrgSnapshot, d: Dimension) -> bool {
    d != Dimension::Concurrency || had_jobs(o)
}

impl TrackerFamilies {
    /// Appends the tracker's families to `out` in `format`; nothing while state recovers.
    pub fn write(&self, out: &mut String, format: Format) {
        let fam = |name, help, ty| Family::new(format, name, help, ty);
        let mut requests = fam(
            "requests",
            "Requests seen, of any status, by outcome",
            Type::Counter,
        );
        let mut rate_limited = fam(
            "rate_limited",
            "429 responses by most likely cause",
            Type::Counter,
        );
        let mut usage = fam(
            "usage",
            "Current usage per dimension: requests in the rolling minute and 24 h, jobs in flight",
            Type::Gauge,
        );
        let mut limit = fam(
            "limit",
            "Limit per dimension (absent when unlimited)",
            Type::Gauge,
        );
        let mut utilization = fam(
            "utilization_ratio",
            "Usage divided by limit per dimension",
            Type::Gauge,
        );
        let mut in_flight = fam(
            "jobs_in_flight",
            "Jobs started and not finished or released",
            Type::Gauge,
        );
        let mut stuck = fam(
            "jobs_stuck",
            "Jobs in flight longer than stuck_after",
            Type::Gauge,
        );
        let mut finished = fam(
            "jobs_finished",
            "Jobs that stopped holding a slot, by outcome",
            Type::Counter,
        );
        let mut durations = self.series.job_histogram.then(|| {
            fam(
                "job_duration_seconds",
                "Duration of finished jobs",
                Type::Histogram,
            )
        });
        // The snapshot restore clears histograms of other bounds, so the counts are those of
        // these bounds (and +Inf).
        let le = match durations {
            Some(_) => le_values(format, &self.series.job_duration_buckets),
            None => Vec::new(),
        };
        let mut bursts = fam("bursts", "Burst episodes", Type::Counter);
        let mut violations = fam(
            "retry_violations",
            "Requests sent before the Retry-After of the last 429 elapsed",
            Type::Counter,
        );
        let mut remaining = fam(
            "upstream_remaining",
            "What is left of each limit as the upstream last reported it in its rate-limit headers, back to the limit once its reset has passed (unified_5h, unified_7d: percent)",
            Type::Gauge,
        );
        let mut upstream_limit = fam(
            "upstream_limit",
            "Each limit as the upstream last reported it in its rate-limit headers",
            Type::Gauge,
        );
        let mut drift = fam(
            "usage_drift",
            "Upstream's use of a limit (limit - remaining) less ratewarden's own count in the same window, at the last report: traffic ratewarden does not see when positive",
            Type::Gauge,
        );

        // Several apps of one org can storm at once; the label set has no app, so they are
        // summed. A model scope's alert has its `model` label (as its scope's series do).
        let mut firing: BTreeMap<(FiringLabels, Option<Arc<str>>), i64> = BTreeMap::new();
        // One walk over the orgs fills every per-org family while each org's snapshot is
        // in cache (a family-by-family walk read them all a dozen times), and an org's
        // snapshot is dropped once written: the scrape never holds them all.
        let scraped = self.source.scrape(&mut |o| {
            let o = &o;
            let mut l = Vec::with_capacity(4);
            let org = &*o.org;
            for a in &app_counts(o, self.series.per_app) {
                for out in Outcome::ALL {
                    let n = a.requests[out.index()];
                    if n > 0 {
                        app_l(org, a, Some(("outcome", out.as_str())), &mut l);
                        requests.int(&l, n);
                    }
                }
                if a.had_429() {
                    for c in Cause::ALL {
                        let n = a.rate_limited[c.index()];
                        if c.listed(n) {
                            app_l(org, a, Some(("cause", c.as_str())), &mut l);
                            rate_limited.int(&l, n);
                        }
                    }
                }
                if a.retry_violations > 0 || a.had_429() {
                    app_l(org, a, None, &mut l);
                    violations.int(&l, a.retry_violations);
                }
            }
            for &(d, v) in o.usage.iter().filter(|(d, _)| shows(o, *d)) {
                usage.int(&[("org", org), ("dimension", d.as_str())], as_gauge(v));
            }
            for &(d, lim) in o.limits.iter().filter(|(d, _)| shows(o, *d)) {
                let labels = [("org", org), ("dimension", d.as_str())];
                limit.int(&labels, as_gauge(lim));
                let u = o.usage_of(d).unwrap_or(0);
                utilization.float(&labels, u as f64 / lim as f64);
            }
            // Model scopes: the same series with a `model` label, only where configured.
            for m in &o.models {
                let model = &*m.model;
                for &(d, v) in &m.usage {
                    let labels = [("org", org), ("model", model), ("dimension", d.as_str())];
                    usage.int(&labels, as_gauge(v));
                }
                for &(d, lim) in &m.limits {
                    let labels = [("org", org), ("model", model), ("dimension", d.as_str())];
                    limit.int(&labels, as_gauge(lim));
                    let u = m.usage.iter().find(|(x, _)| *x == d).map_or(0, |(_, v)| *v);
                    utilization.float(&labels, u as f64 / lim as f64);
                }
                for (app, counts) in &m.rate_limited {
                    for c in Cause::ALL {
                        let n = counts[c.index()];
                        if n > 0 {
                            let labels = [
                                ("org", org),
                                ("app", &**app),
                                ("cause", c.as_str()),
                                ("model", model),
                            ];
                            rate_limited.int(&labels, n);
                        }
                    }
                }
            }
            if had_jobs(o) {
                in_flight.int(&[("org", org)], as_gauge(o.jobs_in_flight));
                stuck.int(&[("org", org)], as_gauge(o.jobs_stuck));
                for j in JobOutcome::ALL {
                    let labels = [("org", org), ("outcome", j.as_str())];
                    finished.int(&labels, o.jobs_finished[j as usize]);
                }
            }
            if let Some(f) = &mut durations
                && o.job_duration.count() > 0
            {
                let h = &o.job_duration;
                f.histogram(&[("org", org)], h.sum, h.count(), &le, &h.counts);
            }
            if o.bursts > 0 || o.limit_of(Dimension::Rpm).is_some() {
                bursts.int(&[("org", org)], o.bursts);
            }
            for u in &o.upstream {
                let labels = [("org", org), ("dimension", u.dimension.as_str())];
                if let Some(v) = u.remaining {
                    remaining.int(&labels, as_gauge(v));
                }
                if let Some(v) = u.limit {
                    upstream_limit.int(&labels, as_gauge(v));
                }
                if let Some(v) = u.drift {
                    drift.int(&labels, v);
                }
            }
            for a in &o.alerts {
                let key = (
                    (
                        a.org.clone(),
                        a.alert.as_str(),
                        a.dimension.map_or("", |d| d.as_str()),
                        a.severity.as_str(),
                    ),
                    a.model.clone(),
                );
                *firing.entry(key).or_default() += 1;
            }
        });
        let Some(s) = scraped else {
            return;
        };
        // A family of one unlabelled value.
        let single = |name, help, ty, v: u64| {
            let mut f = fam(name, help, ty);
            f.int(&[], v);
            f
        };
        let store_writable = single(
            "store_writable",
            "1 while the store commits, 0 after a failed commit (a full disk) until one succeeds",
            Type::Gauge,
            u64::from(s.store_writable),
        );
        let store_failures = single(
            "store_commit_failures",
            "Store commits that failed; each is retried until the store writes again",
            Type::Counter,
            s.store_commit_failures,
        );
        let cluster_connected = s.cluster_connected.map(|up| {
            single(
                "cluster_connected",
                "1 while this replica's shared log (Redis, Valkey) takes and gives entries, 0 while it does not (ingest then answers 503); absent without [cluster]",
                Type::Gauge,
                u64::from(up),
            )
        });
        let cluster_config_differs = s.cluster_config_differs.map(|n| {
            single(
                "cluster_config_differs",
                "Other replicas, seen in the last minute, whose limits, tiers, orgs, detection or alerts config differs from this one's (their answers differ); absent without [cluster]",
                Type::Gauge,
                u64::from(n),
            )
        });
        let mut alerts = fam("alerts_firing", "Alerts firing now", Type::Gauge);
        for (((org, alert, dimension, severity), model), n) in &firing {
            let [org, alert, dimension, severity] = [
                ("org", &**org),
                ("alert", *alert),
                ("dimension", *dimension),
                ("severity", *severity),
            ];
            match model {
                None => alerts.int(&[org, alert, dimension, severity], *n),
                Some(m) => alerts.int(&[org, ("model", m), alert, dimension, severity], *n),
            }
        }
        let mut overflow = fam(
            "series_overflow",
            "Events routed to __overflow__ series (org: past max_orgs; org_rate: a new org past max_new_orgs_per_second; app) and jobs dropped past max_jobs_per_org (job)",
            Type::Counter,
        );
        for (k, v) in [
            ("org", s.overflow.orgs),
            ("org_rate", s.new_orgs_refused),
            ("app", s.overflow.apps),
            ("job", s.overflow.jobs),
        ] {
            overflow.int(&[("kind", k)], v);
        }

        let families = [
            Some(&store_writable),
            Some(&store_failures),
            cluster_connected.as_ref(),
            cluster_config_differs.as_ref(),
            Some(&requests),
            Some(&rate_limited),
            Some(&usage),
            Some(&limit),
            Some(&utilization),
            Some(&in_flight),
            Some(&stuck),
            Some(&finished),
            durations.as_ref(),
            Some(&bursts),
            Some(&violations),
            Some(&remaining),
            Some(&upstream_limit),
            Some(&drift),
            Some(&alerts),
            Some(&overflow),
        ];
        for f in families.into_iter().flatten() {
            f.write(out);
        }
    }
}
