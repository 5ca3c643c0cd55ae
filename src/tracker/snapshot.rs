//! Tracker snapshots: everything events changed, as one versioned blob.
//!
//! A snapshot holds the dynamic state only (windows, jobs, counters, detector and alert
//! states, request ids). What the config decides (tiers, limits, caps) is taken from the
//! config in use when restoring, so a tier change applies to state recorded under the old one.

use crate::model::Limits;
use serde::Serialize;

use std::collections::BTreeMap;

use super::admit::{Held, Reservations};
use super::scope::Extended;
use super::upstream::Upstream;
use super::{Org, Overflow, Settings, Tracker, jobs, window};
use crate::config::Config;
use crate::detect::alerts::{AlertKey, Reminders};
use crate::model::JOB_DURATION_BUCKETS;
use crate::model::OVERFLOW;
use crate::tracker::dedupe::Dedupe;

/// Leading bytes of a snapshot: format name and version. Bump the digit when the encoded
/// structures change; an older binary then refuses a newer snapshot instead of misreading it.
/// This one reads format 7 (as 8 without the extensions), format 6 (as 7 without the upstream reports, which the orgs held
/// themselves for requests and tokens), format 5 (as 6 without admission grants), format 4
/// (job histograms of 13 fixed buckets, no bounds stored), format 3 (as 4 with dense window
/// rings) and format 2 (through [`v2`]), converting them.
const MAGIC: &[u8; 4] = b"RWT8";
/// Format 7: as 8 without the orgs' extensions (dimensions past the first five, model
/// scopes) after the upstream reports.
const MAGIC_V7: &[u8; 4] = b"RWT7";
/// Format 6: as 7 without the upstream reports after the grants.
const MAGIC_V6: &[u8; 4] = b"RWT6";
/// Format 5: as 6 without the admission grants after the state.
const MAGIC_V5: &[u8; 4] = b"RWT5";
/// Format 4: as 5 without the histogram bounds, each histogram the default 13 buckets.
const MAGIC_V4: &[u8; 4] = b"RWT4";
/// Format 3: as 4, but every window a dense ring of all its buckets.
const MAGIC_V3: &[u8; 4] = b"RWT3";

/// Why a snapshot could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Not a snapshot of a version this binary reads.
    #[error(
        "the stored state has format {found:?}, this ratewarden reads {:?} and older",
        String::from_utf8_lossy(MAGIC)
    )]
    Version {
        /// The leading bytes found.
        found: String,
    },
    /// The bytes do not decode.
    #[error("the stored state is corrupt: {0}")]
    Corrupt(#[from] postcard::Error),
}

/// The state after the histogram bounds (format 5), or alone (format 4).
#[derive(Serialize)]
struct StateRef<'a> {
    orgs: &'a [Org],
    overflow_org: Option<usize>,
    overflow: Overflow,
    dedupe: &'a Dedupe,
    repeats: &'a BTreeMap<AlertKey, i64>,
    clock_ms: i64,
}

/// The state as read back, for this format and the older ones alike.
mod owned {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use crate::detect::alerts::AlertKey;
    use crate::tracker::dedupe::Dedupe;
    use crate::tracker::{Org, Overflow};

    #[derive(Deserialize)]
    pub(super) struct SnapshotOwned {
        pub(super) orgs: Vec<Org>,
        pub(super) overflow_org: Option<usize>,
        pub(super) overflow: Overflow,
        pub(super) dedupe: Dedupe,
        pub(super) repeats: BTreeMap<AlertKey, i64>,
        pub(super) clock_ms: i64,
    }
}

use owned::SnapshotOwned;

/// Format 6 as read: histogram bounds, the state, the admission grants.
type Format6 = (Vec<f64>, SnapshotOwned, Vec<(Box<str>, Held)>);
/// Format 7 as read: format 6, then each org's upstream reports by its index in the state.
type Format7 = (
    Vec<f64>,
    SnapshotOwned,
    Vec<(Box<str>, Held)>,
    Vec<(u32, Upstream)>,
);
/// Format 8 as read: format 7, then each org's extension by its index in the state, then
/// the last good poll of each limit source.
type Format8 = (
    Vec<f64>,
    SnapshotOwned,
    Vec<(Box<str>, Held)>,
    Vec<(u32, Upstream)>,
    Vec<(u32, Extended)>,
    Vec<crate::model::SourcedLimits>,
);

impl Tracker {
    /// The whole dynamic state as bytes.
    pub fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        self.encode_after(Vec::new())
    }

    /// [`Tracker::encode`] appended to `prefix` (a header the caller fills in afterwards, so
    /// a large snapshot is written once, not copied behind its header). Format 7: the job
    /// histogram bounds the counts were taken over, the state, the admission grants not
    /// yet completed, then the upstream reports of the orgs that have any.
    pub fn encode_after(&self, mut prefix: Vec<u8>) -> Result<Vec<u8>, postcard::Error> {
        prefix.extend_from_slice(MAGIC);
        postcard::to_extend(
            &(
                &*self.settings.job_buckets,
                self.state_ref(),
                self.reservations.stored(),
                self.orgs
                    .iter()
                    .enumerate()
                    .filter_map(|(i, o)| Some((u32::try_from(i).ok()?, o.upstream.as_deref()?)))
                    .collect::<Vec<_>>(),
                self.orgs
                    .iter()
                    .enumerate()
                    .filter_map(|(i, o)| Some((u32::try_from(i).ok()?, o.extended.as_deref()?)))
                    .collect::<Vec<_>>(),
                self.polled(),
            ),
            prefix,
        )
    }

    fn state_ref(&self) -> StateRef<'_> {
        StateRef {
            orgs: &self.orgs,
            overflow_org: self.overflow_org,
            overflow: self.overflow,
            dedupe: &self.dedupe,
            repeats: self.reminders.as_map(),
            clock_ms: self.clock_ms,
        }
    }

    /// The state in format 4 (no histogram bounds, 13 fixed buckets): tests make old
    /// snapshots with it.
    #[cfg(test)]
    pub(super) fn encode_v4(&self) -> Vec<u8> {
        let body = jobs::reading_fixed_histograms(|| postcard::to_stdvec(&self.state_ref()));
        let mut out = MAGIC_V4.to_vec();
        out.extend(body.unwrap_or_default());
        out
    }

    /// A tracker for `config` holding the state of `bytes`.
    pub fn restore(config: &Config, bytes: &[u8]) -> Result<Tracker, RestoreError> {
        let fixed = |read: &dyn Fn() -> Result<SnapshotOwned, postcard::Error>| {
            jobs::reading_fixed_histograms(read).map(|state| (JOB_DURATION_BUCKETS.to_vec(), state))
        };
        let body = bytes.get(MAGIC.len()..).unwrap_or_default();
        let mut grants = Vec::new();
        let mut upstream = Vec::new();
        let mut extended = Vec::new();
        let mut polled = Vec::new();
        let (job_buckets, mut state): (Vec<f64>, SnapshotOwned) = match bytes.get(..MAGIC.len()) {
            Some(m) if m == MAGIC => {
                let (buckets, state, held, reports, ext, polls): Format8 =
                    postcard::from_bytes(body)?;
                (grants, upstream, extended, polled) = (held, reports, ext, polls);
                (buckets, state)
            }
            Some(m) if m == MAGIC_V7 => {
                let (buckets, state, held, reports): Format7 = postcard::from_bytes(body)?;
                (grants, upstream) = (held, reports);
                (buckets, state)
            }
            Some(m) if m == MAGIC_V6 => {
                let (buckets, state, held): Format6 = postcard::from_bytes(body)?;
                grants = held;
                (buckets, state)
            }
            Some(m) if m == MAGIC_V5 => postcard::from_bytes(body)?,
            Some(m) if m == MAGIC_V4 => fixed(&|| postcard::from_bytes(body))?,
            Some(m) if m == MAGIC_V3 => {
                fixed(&|| window::reading_dense(|| postcard::from_bytes(body)))?
            }
            Some(m) if m == v2::MAGIC => {
                fixed(&|| window::reading_dense(|| v2::read(body, &Settings::from_config(config))))?
            }
            _ => {
                return Err(RestoreError::Version {
                    found: String::from_utf8_lossy(&bytes[..bytes.len().min(4)]).into_owned(),
                });
            }
        };
        if *job_buckets != *config.metrics.job_duration_buckets {
            let counted = state
                .orgs
                .iter()
                .filter(|o| o.job_duration.count() > 0)
                .count();
            if counted > 0 {
                tracing::warn!(
                    orgs = counted,
                    "job_duration_buckets changed: the job duration histograms start over"
                );
            }
            for org in &mut state.orgs {
                org.job_duration = Default::default();
            }
        }
        let mut t = Tracker::new(config);
        t.restore_polled(polled);
        t.overflow = state.overflow;
        t.dedupe = state.dedupe;
        t.dedupe.rebind(t.settings.max_request_ids);
        t.reservations = Reservations::restored(grants, t.settings.max_request_ids);
        t.reminders = Reminders::from_map(state.repeats);
        t.clock_ms = state.clock_ms;
        for (i, u) in upstream {
            if let Some(org) = state.orgs.get_mut(i as usize) {
                org.upstream = Some(Box::new(u));
            }
        }
        for (i, x) in extended {
            if let Some(org) = state.orgs.get_mut(i as usize) {
                org.extended = Some(Box::new(x));
            }
        }
        for (i, mut org) in state.orgs.into_iter().enumerate() {
            for app in &mut org.apps {
                app.name = t.app_names.intern(&app.name);
            }
            if let Some(legacy) = org.legacy_upstream.take() {
                org.upstream = Some(Box::new(Upstream::from_legacy(&legacy, Limits::default())));
            }
            if Some(i) == state.overflow_org || &*org.name == OVERFLOW {
                org.rebind(OVERFLOW.into(), Limits::default(), &[], false, &t.settings);
                t.overflow_org = Some(t.orgs.len());
                t.orgs.push(org);
                continue;
            }
            let configured = config.orgs.iter().find(|o| *o.id == *org.name);
            let (tier, limits) = match configured {
                Some(o) => (o.tier.as_str().into(), o.limits),
                None => (t.settings.default_tier.clone(), t.settings.default_limits),
            };
            let scopes = t.scopes_of_org(&org.name);
            org.rebind(tier, limits, scopes, true, &t.settings);
            match t.index.get(&org.name) {
                Some(&at) => t.orgs[at] = org,
                None => {
                    t.index.insert(org.name.clone(), t.orgs.len());
                    t.orgs.push(org);
                }
            }
        }
        // Whatever the restored orgs hold, the first tick looks at each.
        t.ticking.mark_all(t.orgs.len());
        Ok(t)
    }
}

/// The previous snapshot format (`RWT2`, before late events and upstream resets), read and
/// brought forward: what it did not record starts as a fresh org would.
mod v2 {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use serde::Deserialize;

    use super::super::jobs::Jobs;
    use super::super::window::Window;
    use super::super::{
        App, DurationHistogram, JobOutcome, Org, Overflow, Peaks, Settings, TokenWindows,
    };
    use super::owned::SnapshotOwned;
    use crate::detect::alerts::{AlertKey, OrgAlerts};
    use crate::detect::burst::Burst;
    use crate::detect::level::LevelAlert;
    use crate::detect::{Cause, RetryState};
    use crate::events::Outcome;
    use crate::model::Dimension;
    use crate::tracker::dedupe::Dedupe;
    use crate::tracker::upstream::LegacyReport;

    pub(super) const MAGIC: &[u8; 4] = b"RWT2";

    #[derive(Deserialize)]
    struct Snapshot {
        orgs: Vec<OrgV2>,
        overflow_org: Option<usize>,
        overflow: Overflow,
        dedupe: Dedupe,
        repeats: BTreeMap<AlertKey, i64>,
    }

    #[derive(Deserialize)]
    struct RetryV2 {
        last_429_ms: Option<i64>,
        retry_until_ms: i64,
        consecutive_429: u32,
        storm_since: Option<i64>,
    }

    #[derive(Deserialize)]
    struct AppV2 {
        name: Arc<str>,
        rpm: Window<u32>,
        daily: Window<u32>,
        in_flight: u64,
        requests: [u64; Outcome::ALL.len()],
        rate_limited: [u64; Cause::LEGACY],
        retry_violations: u64,
        retry: RetryV2,
    }

    #[derive(Deserialize)]
    struct OrgV2 {
        name: Arc<str>,
        rpm: Window<u32>,
        daily: Window<u32>,
        tokens: Option<Box<TokenWindows>>,
        jobs: Jobs,
        apps: Vec<AppV2>,
        overflow_app: Option<usize>,
        jobs_finished: [u64; JobOutcome::ALL.len()],
        job_duration: DurationHistogram,
        upstream_remaining: [Option<(i64, u64)>; 2],
        ever_stuck: u64,
        peaks: Peaks,
        burst: Burst,
        burst_since: i64,
        usage_alerts: [LevelAlert; Dimension::LEGACY],
        quota_alert: LevelAlert,
        stuck_since: Option<i64>,
    }

    pub(super) fn read(
        bytes: &[u8],
        settings: &Settings,
    ) -> Result<SnapshotOwned, postcard::Error> {
        let old: Snapshot = postcard::from_bytes(bytes)?;
        let orgs = old
            .orgs
            .into_iter()
            .map(|o| {
                // Tier and limits are set from the config by `restore`, as for any snapshot.
                let mut org = Org::new(o.name, "".into(), Default::default(), true, settings);
                // The newest event the windows hold is the best present there is; the first
                // clock tick after the restart moves it to the wall clock anyway.
                org.present_ms = o.rpm.head().map_or(i64::MIN, |s| s * 1_000);
                org.rpm = o.rpm;
                org.daily = o.daily;
                org.tokens = o.tokens;
                org.jobs = crate::tracker::lazy::Lazy::new(o.jobs);
                org.apps = o
                    .apps
                    .into_iter()
                    .map(|a| App {
                        name: a.name,
                        rpm: a.rpm,
                        daily: a.daily,
                        in_flight: a.in_flight,
                        requests: a.requests,
                        rate_limited: crate::tracker::lazy::Lazy::new(
                            crate::tracker::lazy::AppCauses(a.rate_limited),
                        ),
                        retry_violations: a.retry_violations,
                        retry: RetryState::restored(
                            a.retry.last_429_ms,
                            a.retry.retry_until_ms,
                            a.retry.consecutive_429,
                            a.retry.storm_since,
                        ),
                    })
                    .collect();
                org.overflow_app = o.overflow_app;
                org.jobs_finished = o.jobs_finished;
                org.job_duration = o.job_duration;
                // Without a reported limit or reset, the remaining count stands as reported.
                org.legacy_upstream = o
                    .upstream_remaining
                    .map(|r| r.map(|(ts_ms, remaining)| LegacyReport::from_v2(ts_ms, remaining)))
                    .into();
                org.ever_stuck = o.ever_stuck;
                org.peaks = o.peaks;
                let burst_until = if o.burst.is_open() {
                    i64::MAX
                } else {
                    i64::MIN
                };
                org.alerts = OrgAlerts::from_parts(
                    o.burst_since,
                    burst_until,
                    o.usage_alerts,
                    o.quota_alert,
                    o.stuck_since,
                );
                org.burst = o.burst;
                org
            })
            .collect();
        Ok(SnapshotOwned {
            orgs,
            overflow_org: old.overflow_org,
            overflow: old.overflow,
            dedupe: old.dedupe,
            repeats: old.repeats,
            clock_ms: i64::MIN,
        })
    }
}

impl Org {
    /// Sets what the config decides after a restore: tier, alerting and limits (under
    /// `learn`, those the upstream reported in place of the configured ones).
    fn rebind(
        &mut self,
        tier: std::sync::Arc<str>,
        limits: Limits,
        scopes: &[std::sync::Arc<crate::model::ModelScope>],
        alerting: bool,
        s: &Settings,
    ) {
        self.tier = tier;
        self.alerting = alerting;
        let limits = match &mut self.upstream {
            Some(u) => {
                u.configured = limits;
                u.rejudge = true;
                if s.learn { u.learned(limits) } else { limits }
            }
            None => limits,
        };
        self.set_limits(limits, s);
        self.set_scopes(scopes);
        self.index_apps();
    }
}
