//! One tracked org: its windows, jobs, apps and counters, and how each event changes them.
//! It measures; its alerts are judged by [`crate::detect::alerts`], which it calls.

use std::collections::HashMap;
use std::sync::Arc;

use crate::detect::alerts::OrgAlerts;
use crate::detect::burst::{Burst, Edge, burst_threshold};
use crate::detect::{Cause, CauseInputs, RetryState, Transition, classify_429};
use crate::events::{Event, Outcome};
use crate::model::{DailyWindow, Dimension, Limits, ModelScope, OVERFLOW};

use super::concurrency::{EarlyEnds, HORIZON_MS, PeakConcurrency};
use super::jobs::{self, DurationHistogram, JobKey, JobOutcome, Jobs, Start};
use super::lazy::{AppCauses, Lazy};
use super::names::AppNames;
use super::report::{Overflow, Peaks};
use super::scope::{Extended, Scope};
use super::settings::*;
use super::upstream::{LegacyReports, Upstream};
use super::window::Window;

/// Token windows, allocated only for orgs that have token limits or send token counts.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct TokenWindows {
    pub(super) tpm: Window<u64>,
    pub(super) tpd: Window<u64>,
}

/// One tracked app within an org.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct App {
    pub(super) name: Arc<str>,
    pub(super) rpm: Window<u32>,
    pub(super) daily: Window<u32>,
    pub(super) in_flight: u64,
    pub(super) requests: [u64; Outcome::ALL.len()],
    /// 429s by [`Cause`] index, of the causes snapshots kept per app before format 8 (the
    /// others are in [`Extended::rate_limited`]); allocated at the app's first 429.
    pub(super) rate_limited: Lazy<AppCauses>,
    pub(super) retry_violations: u64,
    pub(super) retry: RetryState,
}

impl App {
    pub(super) fn new(name: Arc<str>) -> Self {
        App {
            name,
            rpm: Window::new(RPM_WIDTH, RPM_SLACK),
            daily: Window::new(DAILY_WIDTH, DAILY_SLACK),
            in_flight: 0,
            requests: [0; Outcome::ALL.len()],
            rate_limited: Lazy::default(),
            retry_violations: 0,
            retry: RetryState::default(),
        }
    }
}

/// Apps an org finds by comparing names; past this many, by a map.
const APP_SCAN: usize = 8;

/// One tracked org.
///
/// Serialized for snapshots without what the config decides (tier, limits, thresholds,
/// caps): [`crate::tracker::Tracker::restore`] takes those from the config in use, so a changed tier
/// applies to state recorded under the old one.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Org {
    pub(super) name: Arc<str>,
    #[serde(skip)]
    pub(super) tier: Arc<str>,
    #[serde(skip)]
    pub(super) limits: Limits,
    /// False for `__overflow__`: usage only, no limits, no alerts.
    #[serde(skip)]
    pub(super) alerting: bool,
    #[serde(skip)]
    pub(super) burst_threshold: Option<u64>,
    pub(super) rpm: Window<u32>,
    pub(super) daily: Window<u32>,
    pub(super) tokens: Option<Box<TokenWindows>>,
    pub(super) jobs: Lazy<Jobs>,
    pub(super) apps: Vec<App>,
    /// Apps by name, once the org has more than [`APP_SCAN`] (see [`Org::app_index`]).
    /// Boxed: 8 bytes an org rather than a map's 40, as most orgs never build one.
    #[serde(skip)]
    #[allow(clippy::box_collection)]
    pub(super) app_index: Option<Box<HashMap<Arc<str>, usize, foldhash::fast::RandomState>>>,
    pub(super) overflow_app: Option<usize>,
    pub(super) jobs_finished: [u64; JobOutcome::ALL.len()],
    pub(super) job_duration: DurationHistogram,
    /// Where snapshot formats up to 6 kept the upstream's requests and tokens reports;
    /// empty since (format 7 stores [`Org::upstream`] after the state).
    pub(super) legacy_upstream: LegacyReports,
    /// What the upstream reports of its limits, once it has.
    #[serde(skip)]
    pub(super) upstream: Option<Box<Upstream>>,
    pub(super) ever_stuck: u64,
    pub(super) peaks: Peaks,
    pub(super) burst: Burst,
    /// Its alerts (stored in place of the fields they replaced, in the same order).
    pub(super) alerts: OrgAlerts,
    /// The org's present: the newest event time or clock tick it has seen. Current-state
    /// alerts are judged at this time, so an event older than it (a late one) never dates a
    /// transition before one already made, and only changes what it changes now.
    pub(super) present_ms: i64,
    /// Jobs in flight at each job start, for the peak, whatever order job events arrive in.
    pub(super) concurrency: Lazy<PeakConcurrency>,
    /// Job ends that arrived before their starts.
    pub(super) early_ends: Lazy<EarlyEnds>,
    /// Dimensions past the first five and model scopes, when it has any (format 8 stores
    /// them after the state).
    #[serde(skip)]
    pub(super) extended: Option<Box<Extended>>,
}

impl Org {
    pub(super) fn new(
        name: Arc<str>,
        tier: Arc<str>,
        limits: Limits,
        alerting: bool,
        s: &Settings,
    ) -> Org {
        let mut org = Org {
            name,
            tier,
            limits,
            alerting,
            burst_threshold: None,
            rpm: Window::new(RPM_WIDTH, RPM_SLACK),
            daily: Window::new(DAILY_WIDTH, DAILY_SLACK),
            tokens: None,
            jobs: Lazy::default(),
            apps: Vec::new(),
            app_index: None,
            overflow_app: None,
            jobs_finished: [0; JobOutcome::ALL.len()],
            job_duration: DurationHistogram::default(),
            legacy_upstream: LegacyReports::default(),
            upstream: None,
            ever_stuck: 0,
            peaks: Peaks::default(),
            burst: Burst::default(),
            alerts: OrgAlerts::default(),
            present_ms: i64::MIN,
            concurrency: Lazy::default(),
            early_ends: Lazy::default(),
            extended: None,
        };
        // What follows from the limits (burst threshold, caps, windows) is set in one place.
        org.set_limits(limits, s);
        org
    }

    /// Puts `limits` in force with what follows from them: the burst threshold, the job
    /// cap and (for token limits) the token windows.
    pub(super) fn set_limits(&mut self, limits: Limits, s: &Settings) {
        self.limits = limits;
        self.burst_threshold = if self.alerting {
            burst_threshold(limits.rpm, s.detect.burst_window_ms, s.detect.burst_factor)
        } else {
            None
        };
        if let Some(jobs) = self.jobs.get_mut() {
            jobs.set_max(job_cap(s, &limits));
        }
        if let Some(c) = self.concurrency.get_mut() {
            c.set_cap(job_cap(s, &limits).saturating_mul(2));
        }
        if self.tokens.is_none() && (limits.tpm > 0 || limits.tpd > 0) {
            self.tokens = Some(TokenWindows::boxed());
        }
        if limits.has_extended() {
            self.extended.get_or_insert_default();
        }
        self.hold_calendar_day();
    }

    /// A calendar day is up to 25 hours (the day clocks fall back): the org's daily window
    /// and its model scopes' (which follow the tier's day) hold that long.
    fn hold_calendar_day(&mut self) {
        if self.limits.daily_window != DailyWindow::Rolling {
            self.daily.hold_at_least(CALENDAR_SPAN);
            if let Some(x) = &mut self.extended {
                x.hold_daily(CALENDAR_SPAN);
            }
        }
    }

    /// Puts the config's model scopes in force (counts of a scope kept by name stay); returns
    /// the scopes dropped.
    pub(super) fn set_scopes(&mut self, scopes: &[Arc<ModelScope>]) -> Vec<Scope> {
        let dropped = match &mut self.extended {
            Some(x) => x.set_scopes(scopes),
            None if scopes.is_empty() => Vec::new(),
            None => self.extended.get_or_insert_default().set_scopes(scopes),
        };
        self.hold_calendar_day();
        dropped
    }

    /// The org's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The index of app `name`, made while fewer than `max_apps` are tracked (else the
    /// overflow app's, counted in `overflow`).
    ///
    /// Up to [`APP_SCAN`] apps are found by comparing names: as fast as a hash and its probe
    /// for so few, and without a map per org (some 170 bytes, 1.7 MB at 10 000 orgs).
    pub(super) fn app_index(
        &mut self,
        name: &str,
        max_apps: usize,
        names: &mut AppNames,
        overflow: &mut u64,
    ) -> usize {
        let found = match &self.app_index {
            Some(map) => map.get(name).copied(),
            None => self
                .apps
                .iter()
                .enumerate()
                // The last of a name, as the map built from them finds (a snapshot could
                // hold two).
                .rfind(|&(i, a)| *a.name == *name && Some(i) != self.overflow_app)
                .map(|(i, _)| i),
        };
        if let Some(i) = found {
            return i;
        }
        // Most orgs have a few apps: room for one more at a time up to 8 (an `App` is about
        // 400 bytes, and doubling would leave a spare one in most orgs), then as usual.
        if self.apps.len() < 8 {
            self.apps.reserve_exact(1);
        }
        let tracked = self.apps.len() - usize::from(self.overflow_app.is_some());
        if tracked < max_apps {
            let app = App::new(names.intern(name));
            let i = self.apps.len();
            match &mut self.app_index {
                Some(map) => {
                    map.insert(app.name.clone(), i);
                    self.apps.push(app);
                }
                None => {
                    self.apps.push(app);
                    self.index_apps();
                }
            }
            return i;
        }
        *overflow += 1;
        *self.overflow_app.get_or_insert_with(|| {
            self.apps.push(App::new(OVERFLOW.into()));
            self.apps.len() - 1
        })
    }

    /// Builds the apps' map once there are more than [`APP_SCAN`] (the overflow app is never
    /// found by name).
    pub(super) fn index_apps(&mut self) {
        self.app_index = (self.apps.len() > APP_SCAN).then(|| {
            Box::new(
                self.apps
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| Some(*i) != self.overflow_app)
                    .map(|(i, a)| (a.name.clone(), i))
                    .collect(),
            )
        });
    }

    #[inline]
    pub(super) fn needs_tick(&self) -> bool {
        self.jobs.in_flight() > 0
            || self.burst.is_open()
            || self.alerts.any_active()
            || self
                .upstream
                .as_ref()
                .is_some_and(|u| u.rejudge || u.mismatch.any())
            || self.extended.as_ref().is_some_and(|x| x.needs_tick())
    }

    pub(super) fn usage_at(&self, dim: Dimension, ts: i64) -> u64 {
        match dim {
            Dimension::Rpm => self.rpm.count_at(sec(ts)),
            Dimension::Daily => self.daily_count(ts),
            Dimension::Concurrency => self.jobs.in_flight() as u64,
            Dimension::Tpm => self.tokens.as_ref().map_or(0, |t| t.tpm.count_at(sec(ts))),
            Dimension::Tpd => self
                .tokens
                .as_ref()
                .map_or(0, |t| t.tpd.count_at(minute(ts))),
            _ => self
                .extended
                .as_ref()
                .map_or(0, |x| x.own.usage_at(dim, ts, self.limits.daily_window)),
        }
    }

    /// Requests in the daily window at `ts`: the rolling 24 h, or the calendar day so far
    /// (`daily_window`).
    pub(super) fn daily_count(&self, ts: i64) -> u64 {
        daily_count(&self.daily, self.limits.daily_window, ts)
    }

    /// The highest daily count from `ts` to `present` (a late request raised each window
    /// holding it): the rolling windows ending after it, or the rest of its calendar day.
    fn daily_peak_since(&self, ts: i64, present: i64) -> u64 {
        match self.limits.daily_window.day_of(ts) {
            None => self
                .daily
                .max_count(minute(ts), minute(ts) + DAILY_WIDTH as i64 - 1),
            Some((start, end)) => self
                .daily
                .count_between(minute(start), minute(present.min(end - 1))),
        }
    }

    /// Moves the org's present to `ts` if that is newer; returns the present. What is older
    /// than the lateness horizon behind it is settled.
    pub(super) fn advance_to(&mut self, ts: i64) -> i64 {
        if ts > self.present_ms {
            self.present_ms = ts;
            let floor = ts.saturating_sub(HORIZON_MS);
            if let Some(c) = self.concurrency.get_mut() {
                c.settle(floor);
            }
            if let Some(e) = self.early_ends.get_mut() {
                e.expire(floor);
            }
        }
        self.present_ms
    }

    /// Counts request `ev` of app `ai` at `ts`. `reserved` is `Some(tokens)` when it completes
    /// an admission grant, which already counted it (and that many tokens) in the windows.
    /// `job` is the job it starts (a 2xx for a job id, not a batch: `starts_job`), keyed by
    /// this org's jobs ([`Jobs::key`]); `None` when it starts none.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn request(
        &mut self,
        ai: usize,
        ts: i64,
        ev: &Event<'_>,
        job: Option<JobKey<'_>>,
        reserved: Option<u64>,
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
        let scope = self
            .extended
            .as_ref()
            .and_then(|x| x.scope_of(ev.model.as_deref()));
        if ev.status == Some(429) {
            let others = self.other_windows(ts, scope, ev.batch);
            let explained = classify_429(&CauseInputs {
                error_code: ev.error_code.as_deref(),
                in_flight: self.jobs.in_flight_at(ts) as u64,
                concurrency_limit: self.limits.concurrency,
                rpm: self.rpm.count_at(sec(ts)),
                rpm_limit: self.limits.rpm,
                daily: self.daily_count(ts),
                daily_limit: self.limits.daily,
                burst_count: self.burst.count(ts, window),
                burst_threshold: self.burst_threshold,
                others: &others,
            });
            let cause = explained.cause;
            match (cause.index() < Cause::LEGACY, explained.scoped) {
                (true, false) => {
                    self.apps[ai]
                        .rate_limited
                        .get_or_insert_with(AppCauses::default)
                        .0[cause.index()] += 1;
                }
                _ => self.extended.get_or_insert_default().note_429(
                    ai,
                    scope.filter(|_| explained.scoped),
                    cause,
                ),
            }
        }
        if let Some(x) = &mut self.extended {
            x.count(ts, ev, scope);
        }

        if reserved.is_none() {
            self.rpm.add(sec(ts), 1);
            self.daily.add(minute(ts), 1);
            let app = &mut self.apps[ai];
            app.rpm.add(sec(ts), 1);
            app.daily.add(minute(ts), 1);
        }
        self.apps[ai].requests[ev.outcome().index()] += 1;
        // Tokens beyond those a grant reserved are counted when they are known; fewer leave
        // the reservation counted as it was (never less than was used). A batch's tokens are
        // the batch queue's, not the minute's.
        if let Some(n) = ev.tokens.map(|n| n.saturating_sub(reserved.unwrap_or(0)))
            && (n > 0 || reserved.is_none())
            && !ev.batch
        {
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
                self.daily_peak_since(ts, present),
            )
        } else {
            (self.rpm.count_at(sec(ts)), self.daily_count(ts))
        };
        self.peaks.rpm = self.peaks.rpm.max(rpm_peak);
        self.peaks.daily = self.peaks.daily.max(daily_peak);

        // Only a 2xx for a job id starts one; a batch enqueued is held in the batch queue.
        if let Some(key) = job {
            self.start_job(ai, key, ts, s, overflow, out);
        }

        if self.alerting {
            // Current-state alerts follow the present. A late event is judged there only for
            // the dimensions whose present value it changed (it fell inside their window).
            let tokens = ev.tokens.is_some();
            let window = self.limits.daily_window;
            let judged = [
                (Dimension::Rpm, true),
                (Dimension::Tpm, tokens),
                (Dimension::Daily, true),
                (Dimension::Tpd, tokens),
            ];
            // An event at the present (every event in order in replay) read the present's
            // usage for its peaks above: not counted again. In the daemon the present is the
            // clock, and an event stamped ahead of it is counted at its time but judged now.
            let at_present = (ts == present).then_some((rpm_peak, daily_peak));
            for (dim, counted) in judged {
                if counted && in_window(dim, ts, present, window) {
                    let usage = match (dim, at_present) {
                        (Dimension::Rpm, Some((rpm, _))) => rpm,
                        (Dimension::Daily, Some((_, daily))) => daily,
                        _ => self.usage_at(dim, present),
                    };
                    debug_assert_eq!(usage, self.usage_at(dim, present));
                    self.judge(dim, usage, present, s, out);
                }
            }
            if self.extended.is_some() {
                self.judge_extended(Some((ts, scope)), present, s, out);
            }
        }
    }

    /// A request older than the org's present, for burst detection, judged at its own time
    /// and at the present. A burst it makes that is still on at the present opens now (the
    /// alert is dated now, never before a transition already made); one that was over before
    /// the present counts as an episode without an alert. Either counts only if it is not
    /// the last episode known (a request up to one window before an episode began belongs
    /// to the same run of requests).
    pub(super) fn late_burst(
        &mut self,
        ts: i64,
        present: i64,
        window: i64,
        threshold: u64,
        s: &Settings,
        out: &mut Vec<Transition>,
    ) {
        let before = self.burst.insert_late(ts, window, threshold);
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

    pub(super) fn burst_edge(
        &mut self,
        edge: Option<Edge>,
        ts: i64,
        s: &Settings,
        out: &mut Vec<Transition>,
    ) {
        let (Some(edge), Some(threshold)) = (edge, self.burst_threshold) else {
            return;
        };
        let count = self.burst.count(ts, s.detect.burst_window_ms);
        self.alerts
            .burst(&self.name, edge, ts, count, threshold, out);
    }

    /// Feeds one dimension's usage at `ts` to its alert state machines.
    #[inline]
    pub(super) fn judge(
        &mut self,
        dim: Dimension,
        usage: u64,
        ts: i64,
        s: &Settings,
        out: &mut Vec<Transition>,
    ) {
        let limit = dim.limit(&self.limits);
        let rules = s.rules.for_org(&self.name);
        if dim.index() >= Dimension::LEGACY {
            if let Some(x) = &mut self.extended {
                x.own_alerts
                    .usage(&self.name, None, dim, usage, limit, ts, rules, out);
            }
            return;
        }
        self.alerts
            .usage(&self.name, dim, usage, limit, ts, rules, out);
    }

    pub(super) fn start_job(
        &mut self,
        ai: usize,
        key: JobKey<'_>,
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
        let early = self.early_ends.get_mut().and_then(|e| e.take(key));
        let finished = match early {
            Some((end, outcome)) => Some((end.max(ts), outcome)),
            None if ts.saturating_add(d.release_after_ms) <= present => {
                Some((ts + d.release_after_ms, JobOutcome::TimedOut))
            }
            None => None,
        };
        if let Some((end, outcome)) = finished {
            self.jobs_finished[outcome as usize] += 1;
            if outcome != JobOutcome::TimedOut {
                self.job_duration
                    .observe(&s.job_buckets, (end - ts) as f64 / 1000.0);
            }
            if end - ts > d.stuck_after_ms {
                self.ever_stuck += 1;
            }
            let others = self.jobs.in_flight_at(ts) as u64;
            self.concurrency_mut(s).start(ts, Some(end), others, floor);
            return;
        }
        match self.jobs_mut(s).start_keyed(key, ai as u32, ts) {
            Start::Duplicate => return,
            Start::Started => {}
            Start::Evicted(old) => {
                overflow.jobs += 1;
                self.release_slot(&old);
                self.concurrency_mut(s).end(old.started_ms, ts, floor);
            }
        }
        self.apps[ai].in_flight += 1;
        let in_flight = self.jobs.in_flight() as u64;
        let others = (self.jobs.in_flight_at(ts) as u64).saturating_sub(1);
        self.concurrency_mut(s).start(ts, None, others, floor);
        if self.alerting {
            self.judge(Dimension::Concurrency, in_flight, present, s, out);
        }
    }

    /// The org's jobs, made (with the cap its limits give) at its first job.
    pub(super) fn jobs_mut(&mut self, s: &Settings) -> &mut Jobs {
        let cap = job_cap(s, &self.limits);
        self.jobs.get_or_insert_with(|| Jobs::new(cap))
    }

    /// The org's peak concurrency, made (with its bound) at its first job.
    pub(super) fn concurrency_mut(&mut self, s: &Settings) -> &mut PeakConcurrency {
        let cap = job_cap(s, &self.limits).saturating_mul(2);
        self.concurrency.get_or_insert_with(|| {
            let mut c = PeakConcurrency::default();
            c.set_cap(cap);
            c
        })
    }

    /// Frees the app's slot of a job that left `jobs`.
    pub(super) fn release_slot(&mut self, job: &jobs::Job) {
        if let Some(app) = self.apps.get_mut(job.app as usize) {
            app.in_flight = app.in_flight.saturating_sub(1);
        }
    }

    pub(super) fn finish_job(
        &mut self,
        id: &str,
        outcome: JobOutcome,
        ts: i64,
        s: &Settings,
        out: &mut Vec<Transition>,
    ) {
        let present = self.present_ms;
        let floor = present.saturating_sub(HORIZON_MS);
        // A batch leaves the queue; a job started under its id (a `job_started` sent for it
        // too) is finished below as well.
        let batch = self.extended.as_mut().is_some_and(|x| x.finish_batch(id));
        if batch && self.alerting {
            self.judge_extended(None, present, s, out);
        }
        let Some(job) = self.jobs.get_mut().and_then(|j| j.finish(id)) else {
            if batch {
                return;
            }
            // Its start may still come (another shipper, a later file): remembered for the
            // horizon so that start is a finished job, not one in flight forever.
            if ts >= floor {
                self.early_ends.get_or_insert_with(EarlyEnds::default).note(
                    id,
                    ts,
                    outcome,
                    EARLY_ENDS_PER_ORG,
                );
            }
            tracing::debug!(org = %self.name, job_id = id, "finishing event for a job not in flight");
            return;
        };
        self.release_slot(&job);
        self.jobs_finished[outcome as usize] += 1;
        self.job_duration
            .observe(&s.job_buckets, (ts - job.started_ms).max(0) as f64 / 1000.0);
        self.concurrency_mut(s).end(job.started_ms, ts, floor);
        if self.alerting {
            let in_flight = self.jobs.in_flight() as u64;
            self.judge(Dimension::Concurrency, in_flight, present, s, out);
            if job.stuck {
                self.judge_stuck(present, out);
            }
        }
    }

    pub(super) fn judge_stuck(&mut self, ts: i64, out: &mut Vec<Transition>) {
        let stuck = self.jobs.stuck_count() as u64;
        self.alerts.stuck(&self.name, stuck, ts, out);
    }

    /// [`Org::release_due`] between ticks (an admission): jobs it finds both stuck and
    /// released are judged stuck, then the count after, as [`Org::tick`] judges them, so
    /// the next tick does not find them gone unseen.
    pub(super) fn release_due_judged(&mut self, now: i64, s: &Settings, out: &mut Vec<Transition>) {
        if let Some(stuck) = self.release_due(now, s)
            && self.alerting
        {
            self.alerts.stuck(&self.name, stuck, now, out);
            self.judge_stuck(now, out);
        }
    }

    /// Jobs past `stuck_after` become stuck and those past `release_after` stop holding a
    /// slot (timed out), as of `now`. Returns how many were stuck between the two steps when
    /// releasing lowered that count: jobs whose two deadlines both fell since the org's last
    /// tick (a replay's minute ticks over a quiet stretch with `release_after` less than a
    /// minute after `stuck_after`, or a late start reaching an org quiet since before both).
    pub(super) fn release_due(&mut self, now: i64, s: &Settings) -> Option<u64> {
        let d = &s.detect;
        let mut between = None;
        if let Some(jobs) = self.jobs.get_mut()
            && jobs.in_flight() > 0
        {
            let stuck_before = jobs.stuck_count();
            let mut newly_stuck = 0;
            let mut released = Vec::new();
            jobs.advance(
                now,
                d.stuck_after_ms,
                d.release_after_ms,
                |_| newly_stuck += 1,
                |j| released.push(*j),
            );
            let peak = stuck_before + newly_stuck as usize;
            if newly_stuck > 0 && peak > jobs.stuck_count() {
                between = Some(peak as u64);
            }
            self.ever_stuck += newly_stuck;
            let floor = now.saturating_sub(HORIZON_MS);
            for job in &released {
                self.release_slot(job);
                self.jobs_finished[JobOutcome::TimedOut as usize] += 1;
                // It stopped holding a slot when it became due, whenever the clock noticed.
                let due = job.started_ms.saturating_add(d.release_after_ms);
                self.concurrency_mut(s)
                    .end(job.started_ms, due.min(now), floor);
            }
        }
        between
    }

    pub(super) fn tick(&mut self, now: i64, s: &Settings, out: &mut Vec<Transition>) {
        // Events may run a little ahead of the clock (live, up to 5 minutes): the clock
        // never takes the org back behind what it has seen.
        let now = self.advance_to(now);
        let stuck_between = self.release_due(now, s);
        if !self.alerting {
            return;
        }
        let d = &s.detect;
        if let Some(threshold) = self.burst_threshold {
            let edge = self.burst.tick(now, d.burst_window_ms, threshold);
            self.burst_edge(edge, now, s, out);
        }
        if let Some(stuck) = stuck_between {
            // Stuck, then released, both since the last tick: judged stuck first, as a
            // tick between the two would have, so the alert says so (firing and resolved
            // at this tick) rather than nothing.
            self.alerts.stuck(&self.name, stuck, now, out);
        }
        self.judge_stuck(now, out);
        for dim in Dimension::ALL.into_iter().take(Dimension::LEGACY) {
            if dim.limit(&self.limits) > 0 {
                let usage = self.usage_at(dim, now);
                self.judge(dim, usage, now, s, out);
            }
        }
        if let Some(x) = &mut self.extended {
            x.expire(now);
            self.judge_extended(None, now, s, out);
        }
        self.judge_mismatch(s, out);
    }
}

impl TokenWindows {
    pub(super) fn boxed() -> Box<TokenWindows> {
        Box::new(TokenWindows {
            tpm: Window::new(RPM_WIDTH, RPM_SLACK),
            tpd: Window::new(DAILY_WIDTH, DAILY_SLACK),
        })
    }
}
