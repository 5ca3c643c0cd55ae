//! The tracker: per-org and per-org/app usage in rolling windows, jobs in flight, and the
//! counters every export reads, in event time.
//!
//! It owns the series (one [`Org`] per tracked organization, one [`App`] per tracked app)
//! and is the only place events change state. For each event it asks the detectors to judge
//! it at its own `ts` with the usage just before and just after it, and collects their
//! [`Transition`]s. Time is always an argument: the daemon passes the wall clock, replay the
//! newest event time, tests whatever they like. It never reads a clock, does I/O or locks.
//!
//! Memory is bounded by series: `max_orgs` orgs (configured ones included), then the shared
//! org `__overflow__`; `max_apps_per_org` apps per org, then `__overflow__`;
//! `max_jobs_per_org` jobs per org, then the oldest is dropped. Each tracked org or app costs
//! about 7 KB of window buckets, allocated when it is first seen.

pub mod concurrency;
pub mod dedupe;
pub mod jobs;
pub mod snapshot;
pub mod window;

use crate::model::{Dimension, Limits, OVERFLOW};
use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{AlertsConfig, Config, DetectConfig};
use crate::detect::alerts::{AlertRules, OrgAlerts, Reminders};
use crate::detect::burst::{Burst, Edge, burst_threshold};
use crate::detect::{Cause, CauseInputs, RetryState, Transition, classify_429};
use crate::events::{Event, Kind, Outcome, RateLimitInfo};
use concurrency::{EarlyEnds, HORIZON_MS, PeakConcurrency};
use dedupe::{Dedupe, request_key};
pub use jobs::{DurationHistogram, JOB_DURATION_BUCKETS, JobOutcome};
use jobs::{Jobs, Start};
use window::Window;

/// Seconds in an rpm window: the current one and the 60 before (never fewer than 60 s).
const RPM_WIDTH: usize = 61;
/// Seconds behind the newest request that the rpm window still answers exactly; covers the
/// 5 minutes live events may run ahead of the wall clock.
const RPM_SLACK: usize = 300;
/// Minutes in a daily window: the current one and the 1 440 before.
const DAILY_WIDTH: usize = 1441;
/// Minutes behind the newest request that the daily window still answers exactly.
const DAILY_SLACK: usize = 5;

/// Most job ends kept per org waiting for their starts (about 170 bytes each).
const EARLY_ENDS_PER_ORG: usize = 256;

/// Most stuck jobs listed per org in `/v1/usage`.
const STUCK_LISTED: usize = 100;

fn sec(ts: i64) -> i64 {
    ts.div_euclid(1_000)
}

fn minute(ts: i64) -> i64 {
    ts.div_euclid(60_000)
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

/// Orgs created in one second, against `max_new_orgs_per_second`.
#[derive(Debug, Clone, Copy, Default)]
struct NewOrgs {
    /// The second (Unix seconds) counted.
    second: i64,
    /// Orgs created in it.
    created: usize,
    /// Events of new orgs routed to `__overflow__` because the second's allowance was spent,
    /// since this process started (`series_overflow_total{kind="org_rate"}`; not in
    /// snapshots, like any counter it starts again at a restart).
    refused: u64,
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

/// Token windows, allocated only for orgs that have token limits or send token counts.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct TokenWindows {
    tpm: Window<u64>,
    tpd: Window<u64>,
}

/// One tracked app within an org.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct App {
    name: Arc<str>,
    rpm: Window<u32>,
    daily: Window<u32>,
    in_flight: u64,
    requests: [u64; Outcome::ALL.len()],
    rate_limited: [u64; Cause::ALL.len()],
    retry_violations: u64,
    retry: RetryState,
}

impl App {
    fn new(name: Arc<str>) -> Self {
        App {
            name,
            rpm: Window::new(RPM_WIDTH, RPM_SLACK),
            daily: Window::new(DAILY_WIDTH, DAILY_SLACK),
            in_flight: 0,
            requests: [0; Outcome::ALL.len()],
            rate_limited: [0; Cause::ALL.len()],
            retry_violations: 0,
            retry: RetryState::default(),
        }
    }
}

/// One tracked org.
///
/// Serialized for snapshots without what the config decides (tier, limits, thresholds,
/// caps): [`Tracker::restore`] takes those from the config in use, so a changed tier
/// applies to state recorded under the old one.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Org {
    name: Arc<str>,
    #[serde(skip)]
    tier: Arc<str>,
    #[serde(skip)]
    limits: Limits,
    /// False for `__overflow__`: usage only, no limits, no alerts.
    #[serde(skip)]
    alerting: bool,
    #[serde(skip)]
    burst_threshold: Option<u64>,
    rpm: Window<u32>,
    daily: Window<u32>,
    tokens: Option<Box<TokenWindows>>,
    jobs: Jobs,
    apps: Vec<App>,
    #[serde(skip)]
    app_index: HashMap<Arc<str>, usize, foldhash::fast::RandomState>,
    overflow_app: Option<usize>,
    jobs_finished: [u64; JobOutcome::ALL.len()],
    job_duration: DurationHistogram,
    /// Newest upstream rate-limit report (requests, tokens).
    upstream: [Option<UpstreamReport>; 2],
    ever_stuck: u64,
    peaks: Peaks,
    burst: Burst,
    /// Its alerts (stored in place of the fields they replaced, in the same order).
    alerts: OrgAlerts,
    /// The org's present: the newest event time or clock tick it has seen. Current-state
    /// alerts are judged at this time, so an event older than it (a late one) never dates a
    /// transition before one already made, and only changes what it changes now.
    present_ms: i64,
    /// Jobs in flight at each job start, for the peak, whatever order job events arrive in.
    concurrency: PeakConcurrency,
    /// Job ends that arrived before their starts.
    early_ends: EarlyEnds,
}

/// How long an upstream report without a reset time is believed: the limits reported this
/// way are per minute (OpenAI's `x-ratelimit-*-requests`, `-tokens`).
pub const UPSTREAM_UNTIMED_MS: i64 = 60_000;

/// What the upstream last said about one limit (`x-ratelimit-*`), with when it said it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UpstreamReport {
    /// Event time of the report.
    pub ts_ms: i64,
    /// `remaining`.
    pub remaining: u64,
    /// `limit`, when reported.
    pub limit: Option<u64>,
    /// When `remaining` is back to `limit`, when a reset was reported.
    pub reset_at_ms: Option<i64>,
}

impl UpstreamReport {
    /// What is left at `now`: the report's `remaining` until its reset time, then the limit
    /// again, or nothing when the limit is unknown (never a stale 0). A report without a reset
    /// time holds for [`UPSTREAM_UNTIMED_MS`].
    pub fn remaining_at(&self, now: i64) -> Option<u64> {
        let reset = self
            .reset_at_ms
            .unwrap_or(self.ts_ms.saturating_add(UPSTREAM_UNTIMED_MS));
        if reset <= now {
            // Without a reset time nothing says the limit is back either: no value.
            self.limit.filter(|_| self.reset_at_ms.is_some())
        } else {
            Some(self.remaining)
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
            max_orgs: config.limits.max_orgs,
            max_apps_per_org: config.limits.max_apps_per_org,
            max_jobs_per_org: config.limits.max_jobs_per_org,
            max_request_ids: config.limits.max_request_ids,
            max_new_orgs_per_second: config.limits.max_new_orgs_per_second,
        }
    }
}

/// All tracked state.
#[derive(Debug)]
pub struct Tracker {
    settings: Settings,
    orgs: Vec<Org>,
    index: HashMap<Arc<str>, usize, foldhash::fast::RandomState>,
    /// Index of `__overflow__` in `orgs`, once used.
    overflow_org: Option<usize>,
    overflow: Overflow,
    new_orgs: NewOrgs,
    dedupe: Dedupe,
    /// Firing alerts and when they were last notified, for `repeat_interval`.
    reminders: Reminders,
    /// The daemon's clock as last noted ([`Tracker::note_clock`]); `i64::MIN` in replay,
    /// whose clock is the events'. No org's present is behind it, so events older than the
    /// clock (a backfill, a log read from its beginning) are late for every org, also for
    /// one seen for the first time.
    clock_ms: i64,
}

impl Tracker {
    /// A tracker with the configured orgs registered (they are always tracked).
    pub fn new(config: &Config) -> Tracker {
        let mut t = Tracker {
            settings: Settings::from_config(config),
            orgs: Vec::new(),
            index: HashMap::default(),
            overflow_org: None,
            overflow: Overflow::default(),
            new_orgs: NewOrgs::default(),
            dedupe: Dedupe::new(config.limits.max_request_ids),
            reminders: Reminders::default(),
            clock_ms: i64::MIN,
        };
        for o in &config.orgs {
            let org = Org::new(
                o.id.as_str().into(),
                o.tier.as_str().into(),
                o.limits,
                true,
                &t.settings,
            );
            t.index.insert(org.name.clone(), t.orgs.len());
            t.orgs.push(org);
        }
        t
    }

    /// The settings in use.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Events routed to overflow series so far.
    pub fn overflow(&self) -> Overflow {
        self.overflow
    }

    /// Events of new orgs routed to `__overflow__` by `max_new_orgs_per_second` since start.
    pub fn new_orgs_refused(&self) -> u64 {
        self.new_orgs.refused
    }

    /// Tracked orgs (including `__overflow__` once used).
    pub fn orgs(&self) -> &[Org] {
        &self.orgs
    }

    /// The org's index; a new org is created while fewer than `max_orgs` are tracked and
    /// fewer than `max_new_orgs_per_second` were created in the second of `at` (so one body
    /// or one second of random org names cannot create thousands of orgs, and their alerts,
    /// at once); otherwise its events share `__overflow__`.
    fn org_index(&mut self, name: &str, at: i64) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let tracked = self.orgs.len() - usize::from(self.overflow_org.is_some());
        let second = at.div_euclid(1000);
        if self.new_orgs.second != second {
            self.new_orgs.second = second;
            self.new_orgs.created = 0;
        }
        let room = tracked < self.settings.max_orgs;
        let allowed = self.new_orgs.created < self.settings.max_new_orgs_per_second;
        if room && allowed {
            self.new_orgs.created += 1;
            let org = Org::new(
                name.into(),
                self.settings.default_tier.clone(),
                self.settings.default_limits,
                true,
                &self.settings,
            );
            let i = self.orgs.len();
            self.index.insert(org.name.clone(), i);
            self.orgs.push(org);
            return i;
        }
        if room {
            self.new_orgs.refused += 1;
        } else {
            self.overflow.orgs += 1;
        }
        match self.overflow_org {
            Some(i) => i,
            None => {
                let org = Org::new(
                    OVERFLOW.into(),
                    OVERFLOW.into(),
                    Limits::default(),
                    false,
                    &self.settings,
                );
                let i = self.orgs.len();
                self.orgs.push(org);
                self.overflow_org = Some(i);
                i
            }
        }
    }

    /// Applies one validated event. `now` is the clock (wall or replay); the event is judged
    /// at its own `ts`, or at `now` when it has none. Returns false for a `request_id` seen
    /// before, which changes nothing.
    pub fn apply(&mut self, ev: &Event<'_>, now: i64, out: &mut Vec<Transition>) -> bool {
        let from = out.len();
        let counted = self.apply_event(ev, now, out);
        self.note_notified(&out[from..]);
        counted
    }

    fn apply_event(&mut self, ev: &Event<'_>, now: i64, out: &mut Vec<Transition>) -> bool {
        let ts = ev.ts_ms.unwrap_or(now);
        if let Some(rid) = &ev.request_id
            && !self.dedupe.first_seen(dedupe_key(ev, rid), ts)
        {
            return false;
        }
        // The daemon's clock decides the second (journaled, so recovery decides alike);
        // replay has no clock and uses event time.
        let at = if self.clock_ms == i64::MIN {
            ts
        } else {
            self.clock_ms
        };
        let oi = self.org_index(&ev.org, at);
        let s = &self.settings;
        let org = &mut self.orgs[oi];
        // The org's present moves with event times, but in the daemon never past its clock: an
        // event stamped ahead of the clock (a shipper's fast clock, accepted up to 5 minutes)
        // is counted at its time, and judged as if it came now, so it cannot leave the real
        // traffic of its org "late" and unjudged.
        let order_ts = if self.clock_ms == i64::MIN {
            ts
        } else {
            ts.min(self.clock_ms)
        };
        org.advance_to(self.clock_ms.max(order_ts));
        let ai = org.app_index(ev.app_name(), s.max_apps_per_org, &mut self.overflow.apps);
        match ev.kind {
            Kind::Request => org.request(ai, ts, ev, s, &mut self.overflow, out),
            Kind::JobStarted => {
                if let Some(id) = &ev.job_id {
                    org.start_job(ai, id, ts, s, &mut self.overflow, out);
                }
            }
            Kind::JobCompleted | Kind::JobFailed | Kind::JobCancelled => {
                let outcome = match ev.kind {
                    Kind::JobCompleted => JobOutcome::Completed,
                    Kind::JobFailed => JobOutcome::Failed,
                    _ => JobOutcome::Cancelled,
                };
                if let Some(id) = &ev.job_id {
                    org.finish_job(id, outcome, ts, s, out);
                }
            }
        }
        if let Some(rl) = &ev.ratelimit {
            org.note_ratelimit(ts, rl);
        }
        true
    }

    /// Notes the daemon's clock: from now on no org's present is behind `now`, nor judged ahead
    /// of it. The live state
    /// calls this (and journals it) as wall-clock seconds pass; replay never does.
    pub fn note_clock(&mut self, now: i64) {
        self.clock_ms = self.clock_ms.max(now);
    }

    /// The clock last noted ([`Tracker::note_clock`]).
    pub fn clock_ms(&self) -> i64 {
        self.clock_ms
    }

    /// The clock moved to `now`: stuck jobs, releases, burst ends and threshold changes, and
    /// reminders for alerts still firing after `repeat_interval`. Returns false when nothing
    /// could have changed (no org had anything the clock acts on), so it need not be recorded.
    pub fn tick(&mut self, now: i64, out: &mut Vec<Transition>) -> bool {
        let from = out.len();
        let s = &self.settings;
        let mut active = false;
        for org in &mut self.orgs {
            if org.needs_tick() {
                active = true;
                org.tick(now, s, out);
            }
        }
        self.note_notified(&out[from..]);
        self.remind(now, out) || active
    }

    /// Keeps the reminders in step with what was notified.
    fn note_notified(&mut self, transitions: &[Transition]) {
        self.reminders.note_notified(transitions);
    }

    /// Emits reminders that are due; true if any alert was due.
    fn remind(&mut self, now: i64, out: &mut Vec<Transition>) -> bool {
        let every = self.settings.alerts.repeat_interval_ms;
        let (orgs, index, settings) = (&self.orgs, &self.index, &self.settings);
        self.reminders.remind(
            now,
            every,
            |key| {
                let mut active = Vec::new();
                if let Some(&i) = index.get(&**key.org()) {
                    orgs[i].active_alerts(now, settings, &mut active);
                }
                active
            },
            out,
        )
    }

    /// What `org` uses at `now` and may use: the dispatcher's admission control. An org not
    /// seen yet uses nothing and has the default tier's limits.
    pub fn load_of(&self, org: &str, now: i64) -> OrgLoad {
        match self.index.get(org) {
            Some(&i) => {
                let o = &self.orgs[i];
                OrgLoad {
                    rpm: o.usage_at(Dimension::Rpm, now),
                    daily: o.usage_at(Dimension::Daily, now),
                    in_flight: o.jobs.in_flight() as u64,
                    limits: o.limits,
                }
            }
            None => OrgLoad {
                rpm: 0,
                daily: 0,
                in_flight: 0,
                limits: self.settings.default_limits,
            },
        }
    }

    /// Point-in-time view of every org at `now`, for the API and `/metrics`.
    pub fn snapshot(&self, now: i64) -> Vec<OrgSnapshot> {
        self.snapshot_of(now, 0, usize::MAX)
    }

    /// [`Tracker::snapshot`] of at most `len` orgs from the `start`-th (in tracking order;
    /// orgs are only ever added at the end).
    pub fn snapshot_of(&self, now: i64, start: usize, len: usize) -> Vec<OrgSnapshot> {
        self.orgs
            .iter()
            .skip(start)
            .take(len)
            .map(|o| o.snapshot(now, &self.settings))
            .collect()
    }

    /// Alerts firing at `now`, per org in tracking order.
    pub fn active_alerts(&self, now: i64) -> Vec<Transition> {
        let mut out = Vec::new();
        for org in &self.orgs {
            org.active_alerts(now, &self.settings, &mut out);
        }
        out
    }

    /// Totals per org, for replay's report.
    pub fn report(&self) -> Vec<OrgReport> {
        self.orgs.iter().map(Org::report).collect()
    }
}

/// The dedupe key of an event with a `request_id`. A request and its job's lifecycle events
/// may carry the same id (one trace); they are different events, so lifecycle events are keyed
/// with their kind. (Requests keep the plain key that earlier versions stored.)
fn dedupe_key(ev: &Event<'_>, rid: &str) -> u64 {
    match ev.kind {
        Kind::Request => request_key(&ev.org, rid),
        kind => {
            let kind: &[u8] = match kind {
                Kind::JobStarted => b"job_started",
                Kind::JobCompleted => b"job_completed",
                Kind::JobFailed => b"job_failed",
                _ => b"job_cancelled",
            };
            crate::model::stable_hash(&[ev.org.as_bytes(), rid.as_bytes(), kind])
        }
    }
}

/// Jobs an org may have in flight: an org allowed more concurrent jobs than
/// `max_jobs_per_org` must still be able to reach its thresholds.
fn job_cap(s: &Settings, limits: &Limits) -> usize {
    s.max_jobs_per_org
        .max(usize::try_from(limits.concurrency.saturating_mul(2)).unwrap_or(usize::MAX))
}

impl Org {
    fn new(name: Arc<str>, tier: Arc<str>, limits: Limits, alerting: bool, s: &Settings) -> Org {
        let tokens = (limits.tpm > 0 || limits.tpd > 0).then(TokenWindows::boxed);
        Org {
            name,
            tier,
            limits,
            alerting,
            burst_threshold: if alerting {
                burst_threshold(limits.rpm, s.detect.burst_window_ms, s.detect.burst_factor)
            } else {
                None
            },
            rpm: Window::new(RPM_WIDTH, RPM_SLACK),
            daily: Window::new(DAILY_WIDTH, DAILY_SLACK),
            tokens,
            jobs: Jobs::new(job_cap(s, &limits)),
            apps: Vec::new(),
            app_index: HashMap::default(),
            overflow_app: None,
            jobs_finished: [0; JobOutcome::ALL.len()],
            job_duration: DurationHistogram::default(),
            upstream: [None; 2],
            ever_stuck: 0,
            peaks: Peaks::default(),
            burst: Burst::default(),
            alerts: OrgAlerts::default(),
            present_ms: i64::MIN,
            concurrency: {
                let mut c = PeakConcurrency::default();
                c.set_cap(job_cap(s, &limits).saturating_mul(2));
                c
            },
            early_ends: EarlyEnds::default(),
        }
    }

    /// The org's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn app_index(&mut self, name: &str, max_apps: usize, overflow: &mut u64) -> usize {
        if let Some(&i) = self.app_index.get(name) {
            return i;
        }
        let tracked = self.apps.len() - usize::from(self.overflow_app.is_some());
        if tracked < max_apps {
            let app = App::new(name.into());
            let i = self.apps.len();
            self.app_index.insert(app.name.clone(), i);
            self.apps.push(app);
            return i;
        }
        *overflow += 1;
        *self.overflow_app.get_or_insert_with(|| {
            self.apps.push(App::new(OVERFLOW.into()));
            self.apps.len() - 1
        })
    }

    fn needs_tick(&self) -> bool {
        self.jobs.in_flight() > 0 || self.burst.is_open() || self.alerts.any_active()
    }

    fn usage_at(&self, dim: Dimension, ts: i64) -> u64 {
        match dim {
            Dimension::Rpm => self.rpm.count_at(sec(ts)),
            Dimension::Daily => self.daily.count_at(minute(ts)),
            Dimension::Concurrency => self.jobs.in_flight() as u64,
            Dimension::Tpm => self.tokens.as_ref().map_or(0, |t| t.tpm.count_at(sec(ts))),
            Dimension::Tpd => self
                .tokens
                .as_ref()
                .map_or(0, |t| t.tpd.count_at(minute(ts))),
        }
    }

    /// Moves the org's present to `ts` if that is newer; returns the present. What is older
    /// than the lateness horizon behind it is settled.
    fn advance_to(&mut self, ts: i64) -> i64 {
        if ts > self.present_ms {
            self.present_ms = ts;
            let floor = ts.saturating_sub(HORIZON_MS);
            self.concurrency.settle(floor);
            self.early_ends.expire(floor);
        }
        self.present_ms
    }

    fn request(
        &mut self,
        ai: usize,
        ts: i64,
        ev: &Event<'_>,
        s: &Settings,
        overflow: &mut Overflow,
        out: &mut Vec<Transition>,
    ) {
        let window = s.detect.burst_window_ms;
        let present = self.present_ms;
        let late = ts < present;
        let app = &mut self.apps[ai];
        if app.retry.is_violation(ts) {
            app.retry_violations += 1;
        }
        if ev.status == Some(429) {
            let cause = classify_429(&CauseInputs {
                error_code: ev.error_code.as_deref(),
                in_flight: self.jobs.in_flight_at(ts) as u64,
                concurrency_limit: self.limits.concurrency,
                rpm: self.rpm.count_at(sec(ts)),
                rpm_limit: self.limits.rpm,
                daily: self.daily.count_at(minute(ts)),
                daily_limit: self.limits.daily,
                burst_count: self.burst.count(ts, window),
                burst_threshold: self.burst_threshold,
            });
            self.apps[ai].rate_limited[cause.index()] += 1;
        }

        self.rpm.add(sec(ts), 1);
        self.daily.add(minute(ts), 1);
        let app = &mut self.apps[ai];
        app.rpm.add(sec(ts), 1);
        app.daily.add(minute(ts), 1);
        app.requests[ev.outcome().index()] += 1;
        if let Some(n) = ev.tokens {
            let t = self.tokens.get_or_insert_with(TokenWindows::boxed);
            t.tpm.add(sec(ts), n);
            t.tpd.add(minute(ts), n);
        }

        let retry = &mut self.apps[ai].retry;
        retry.note_retry_after(ts, ev.status, ev.retry_after_ms);
        // A run of 429s long gone (a backfill) is not a storm now; within the horizon the
        // run is read in arrival order, stamped no later than the present.
        let storm = if ts < present.saturating_sub(HORIZON_MS) {
            None
        } else {
            retry.on_response(ts.min(present), ev.status, s.detect.retry_storm_after)
        };
        if let (Some(change), true) = (storm, self.alerting) {
            OrgAlerts::storm(
                &self.name,
                &self.apps[ai].name,
                change,
                ts.min(present),
                out,
            );
        }

        if let Some(threshold) = self.burst_threshold {
            if late {
                self.late_burst(ts, present, window, threshold, s, out);
            } else {
                let edge = self.burst.record(ts, window, threshold);
                self.burst_edge(edge, present, s, out);
            }
        }

        // Peaks are the highest window values at any event time. An event in order is the
        // newest: its window is the one at the head. A late one also raises every window
        // that ends after it and holds it, up to the present.
        let (rpm_peak, daily_peak) = if late {
            (
                self.rpm.max_count(sec(ts), sec(ts) + RPM_WIDTH as i64 - 1),
                self.daily
                    .max_count(minute(ts), minute(ts) + DAILY_WIDTH as i64 - 1),
            )
        } else {
            (self.rpm.count_at(sec(ts)), self.daily.count_at(minute(ts)))
        };
        self.peaks.rpm = self.peaks.rpm.max(rpm_peak);
        self.peaks.daily = self.peaks.daily.max(daily_peak);

        if matches!(ev.status, Some(200..=299))
            && let Some(id) = &ev.job_id
        {
            self.start_job(ai, id, ts, s, overflow, out);
        }

        if self.alerting {
            // Current-state alerts follow the present. A late event is judged there only for
            // the dimensions whose present value it changed (it fell inside their window).
            let now_holds =
                |width: usize, bucket: fn(i64) -> i64| bucket(ts) > bucket(present) - width as i64;
            let tokens = ev.tokens.is_some();
            let judged = [
                (Dimension::Rpm, now_holds(RPM_WIDTH, sec)),
                (Dimension::Tpm, tokens && now_holds(RPM_WIDTH, sec)),
                (Dimension::Daily, now_holds(DAILY_WIDTH, minute)),
                (Dimension::Tpd, tokens && now_holds(DAILY_WIDTH, minute)),
            ];
            for (dim, changed) in judged {
                if changed {
                    let usage = self.usage_at(dim, present);
                    self.judge(dim, usage, present, s, out);
                }
            }
        }
    }

    /// A request older than the org's present, for burst detection, judged at its own time
    /// and at the present. A burst it makes that is still on at the present opens now (the
    /// alert is dated now, never before a transition already made); one that was over before
    /// the present counts as an episode without an alert. Either counts only if it is not
    /// the last episode known (a request up to one window before an episode began belongs
    /// to the same run of requests).
    fn late_burst(
        &mut self,
        ts: i64,
        present: i64,
        window: i64,
        threshold: u64,
        s: &Settings,
        out: &mut Vec<Transition>,
    ) {
        let before = self.burst.count(ts, window);
        self.burst.insert_late(ts, window, threshold);
        let known = self.alerts.in_known_burst(ts, window);
        let completes = before < threshold && before + 1 >= threshold;
        if !self.burst.is_open() && self.burst.count(present, window) >= threshold {
            if !known {
                self.burst.episodes += 1;
            }
            let edge = self.burst.open_now();
            self.burst_edge(edge, present, s, out);
        } else if completes && !known {
            // A burst back then, over before the present (or before the open one began).
            self.burst.episodes += 1;
            self.alerts
                .note_past_burst(ts, window, self.burst.is_open());
        }
    }

    fn burst_edge(&mut self, edge: Option<Edge>, ts: i64, s: &Settings, out: &mut Vec<Transition>) {
        let (Some(edge), Some(threshold)) = (edge, self.burst_threshold) else {
            return;
        };
        let count = self.burst.count(ts, s.detect.burst_window_ms);
        self.alerts
            .burst(&self.name, edge, ts, count, threshold, out);
    }

    /// Feeds one dimension's usage at `ts` to its alert state machines.
    fn judge(
        &mut self,
        dim: Dimension,
        usage: u64,
        ts: i64,
        s: &Settings,
        out: &mut Vec<Transition>,
    ) {
        let limit = dim.limit(&self.limits);
        let rules = s.rules.for_org(&self.name);
        self.alerts
            .usage(&self.name, dim, usage, limit, ts, rules, out);
    }

    fn start_job(
        &mut self,
        ai: usize,
        id: &str,
        ts: i64,
        s: &Settings,
        overflow: &mut Overflow,
        out: &mut Vec<Transition>,
    ) {
        let present = self.present_ms;
        let floor = present.saturating_sub(HORIZON_MS);
        let d = &s.detect;
        // A job that ended before its start arrived, or started so long ago that it would
        // have been released by now: counted as what it was, never holding a slot now.
        let finished = match self.early_ends.take(id) {
            Some((end, outcome)) => Some((end.max(ts), outcome)),
            None if ts.saturating_add(d.release_after_ms) <= present => {
                Some((ts + d.release_after_ms, JobOutcome::TimedOut))
            }
            None => None,
        };
        if let Some((end, outcome)) = finished {
            self.jobs_finished[outcome as usize] += 1;
            if outcome != JobOutcome::TimedOut {
                self.job_duration.observe((end - ts) as f64 / 1000.0);
            }
            if end - ts > d.stuck_after_ms {
                self.ever_stuck += 1;
            }
            let others = self.jobs.in_flight_at(ts) as u64;
            self.concurrency.start(ts, Some(end), others, floor);
            return;
        }
        match self.jobs.start(id, ai as u32, ts) {
            Start::Duplicate => return,
            Start::Started => {}
            Start::Evicted(old) => {
                overflow.jobs += 1;
                self.release_slot(&old);
                self.concurrency.end(old.started_ms, ts, floor);
            }
        }
        self.apps[ai].in_flight += 1;
        let in_flight = self.jobs.in_flight() as u64;
        let others = (self.jobs.in_flight_at(ts) as u64).saturating_sub(1);
        self.concurrency.start(ts, None, others, floor);
        if self.alerting {
            self.judge(Dimension::Concurrency, in_flight, present, s, out);
        }
    }

    /// Frees the app's slot of a job that left `jobs`.
    fn release_slot(&mut self, job: &jobs::Job) {
        if let Some(app) = self.apps.get_mut(job.app as usize) {
            app.in_flight = app.in_flight.saturating_sub(1);
        }
    }

    fn finish_job(
        &mut self,
        id: &str,
        outcome: JobOutcome,
        ts: i64,
        s: &Settings,
        out: &mut Vec<Transition>,
    ) {
        let present = self.present_ms;
        let floor = present.saturating_sub(HORIZON_MS);
        let Some(job) = self.jobs.finish(id) else {
            // Its start may still come (another shipper, a later file): remembered for the
            // horizon so that start is a finished job, not one in flight forever.
            if ts >= floor {
                self.early_ends.note(id, ts, outcome, EARLY_ENDS_PER_ORG);
            }
            tracing::debug!(org = %self.name, job_id = id, "finishing event for a job not in flight");
            return;
        };
        self.release_slot(&job);
        self.jobs_finished[outcome as usize] += 1;
        self.job_duration
            .observe((ts - job.started_ms).max(0) as f64 / 1000.0);
        self.concurrency.end(job.started_ms, ts, floor);
        if self.alerting {
            let in_flight = self.jobs.in_flight() as u64;
            self.judge(Dimension::Concurrency, in_flight, present, s, out);
            if job.stuck {
                self.judge_stuck(present, out);
            }
        }
    }

    fn judge_stuck(&mut self, ts: i64, out: &mut Vec<Transition>) {
        let stuck = self.jobs.stuck_count() as u64;
        self.alerts.stuck(&self.name, stuck, ts, out);
    }

    fn tick(&mut self, now: i64, s: &Settings, out: &mut Vec<Transition>) {
        // Events may run a little ahead of the clock (live, up to 5 minutes): the clock
        // never takes the org back behind what it has seen.
        let now = self.advance_to(now);
        let d = &s.detect;
        if self.jobs.in_flight() > 0 {
            let mut newly_stuck = 0;
            let mut released = Vec::new();
            self.jobs.advance(
                now,
                d.stuck_after_ms,
                d.release_after_ms,
                |_| newly_stuck += 1,
                |j| released.push(*j),
            );
            self.ever_stuck += newly_stuck;
            let floor = now.saturating_sub(HORIZON_MS);
            for job in &released {
                self.release_slot(job);
                self.jobs_finished[JobOutcome::TimedOut as usize] += 1;
                // It stopped holding a slot when it became due, whenever the clock noticed.
                let due = job.started_ms.saturating_add(d.release_after_ms);
                self.concurrency.end(job.started_ms, due.min(now), floor);
            }
        }
        if !self.alerting {
            return;
        }
        if let Some(threshold) = self.burst_threshold {
            let edge = self.burst.tick(now, d.burst_window_ms, threshold);
            self.burst_edge(edge, now, s, out);
        }
        self.judge_stuck(now, out);
        for dim in Dimension::ALL {
            if dim.limit(&self.limits) > 0 {
                let usage = self.usage_at(dim, now);
                self.judge(dim, usage, now, s, out);
            }
        }
    }

    fn note_ratelimit(&mut self, ts: i64, rl: &RateLimitInfo) {
        let reports = [
            (
                rl.remaining_requests,
                rl.limit_requests,
                rl.reset_requests_ms,
            ),
            (rl.remaining_tokens, rl.limit_tokens, rl.reset_tokens_ms),
        ];
        for (slot, (remaining, limit, reset)) in self.upstream.iter_mut().zip(reports) {
            if let Some(remaining) = remaining
                && slot.is_none_or(|r| ts >= r.ts_ms)
            {
                *slot = Some(UpstreamReport {
                    ts_ms: ts,
                    remaining,
                    limit,
                    reset_at_ms: reset.map(|ms| ts.saturating_add(ms)),
                });
            }
        }
    }

    /// Seconds until one more request fits in `dim` at `now`: `None` for an unlimited
    /// dimension, `Some(None)` when it waits on a job finishing.
    fn headroom_seconds(&self, dim: Dimension, now: i64) -> Option<Option<u64>> {
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
            Dimension::Daily => self.daily.frees_at(minute(now), limit) * 60_000,
            Dimension::Tpm => tokens.map_or(now, |t| t.tpm.frees_at(sec(now), limit) * 1_000),
            Dimension::Tpd => tokens.map_or(now, |t| t.tpd.frees_at(minute(now), limit) * 60_000),
        };
        Some(Some(((frees_at_ms - now).max(0) as u64).div_ceil(1_000)))
    }

    fn snapshot(&self, now: i64, s: &Settings) -> OrgSnapshot {
        let dims: Vec<Dimension> = Dimension::ALL
            .into_iter()
            .filter(|d| match d {
                Dimension::Tpm | Dimension::Tpd => self.tokens.is_some(),
                _ => true,
            })
            .collect();
        let usage = dims.iter().map(|&d| (d, self.usage_at(d, now))).collect();
        let limits = dims
            .iter()
            .filter_map(|&d| Some((d, d.limit(&self.limits))).filter(|(_, l)| *l > 0))
            .collect();
        let headroom = dims
            .iter()
            .filter_map(|&d| self.headroom_seconds(d, now).map(|h| (d, h)))
            .collect();
        let apps = self
            .apps
            .iter()
            .map(|a| AppSnapshot {
                app: a.name.clone(),
                rpm: a.rpm.count_at(sec(now)),
                daily: a.daily.count_at(minute(now)),
                in_flight: a.in_flight,
                requests: a.requests,
                rate_limited: a.rate_limited,
                retry_violations: a.retry_violations,
            })
            .collect();
        let stuck_jobs = self
            .jobs
            .stuck_jobs()
            .take(STUCK_LISTED)
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
            jobs_stuck: self.jobs.stuck_count() as u64,
            jobs_finished: self.jobs_finished,
            job_duration: self.job_duration.clone(),
            bursts: self.burst.episodes,
            upstream_remaining: self.upstream.map(|r| r.and_then(|r| r.remaining_at(now))),
            alerts,
        }
    }

    fn active_alerts(&self, now: i64, s: &Settings, out: &mut Vec<Transition>) {
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
    }

    fn report(&self) -> OrgReport {
        let mut rate_limited = [0u64; Cause::ALL.len()];
        let mut requests = 0;
        let mut retry_violations = 0;
        for app in &self.apps {
            requests += app.requests.iter().sum::<u64>();
            retry_violations += app.retry_violations;
            for (total, n) in rate_limited.iter_mut().zip(app.rate_limited) {
                *total += n;
            }
        }
        OrgReport {
            org: self.name.clone(),
            requests,
            peaks: Peaks {
                concurrency: self.peaks.concurrency.max(self.concurrency.peak()),
                ..self.peaks
            },
            rate_limited,
            bursts: self.burst.episodes,
            stuck_jobs: self.ever_stuck,
            retry_violations,
        }
    }
}

impl TokenWindows {
    fn boxed() -> Box<TokenWindows> {
        Box::new(TokenWindows {
            tpm: Window::new(RPM_WIDTH, RPM_SLACK),
            tpd: Window::new(DAILY_WIDTH, DAILY_SLACK),
        })
    }
}

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
    /// Upstream's remaining requests and tokens at the snapshot's time, when reported: the
    /// limit again once the reported reset has passed (absent if the limit is unknown).
    pub upstream_remaining: [Option<u64>; 2],
    /// Alerts firing now.
    pub alerts: Vec<Transition>,
}

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
    /// 429s by [`Cause`] index.
    pub rate_limited: [u64; Cause::ALL.len()],
    /// Burst episodes.
    pub bursts: u64,
    /// Jobs that were ever stuck.
    pub stuck_jobs: u64,
    /// Retry-After violations.
    pub retry_violations: u64,
}

#[cfg(test)]
mod tests;
