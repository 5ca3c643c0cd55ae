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
//! `max_jobs_per_org` jobs per org, then the oldest is dropped. Windows keep only the buckets
//! that counted something (an app with a request every 10 minutes: some 300 bytes a day),
//! and what most orgs never use is allocated at first need (`lazy`).
//!
//! Its parts: `org` (one org and how each event changes it), `report` (what is answered
//! about an org: load, snapshot, totals), `settings` (what it takes from the config),
//! `window`, `jobs` (with `job_index`, its id index), `concurrency`, `dedupe`, `names` (app
//! names held once), `ticking` (which orgs a tick looks at) and `snapshot` (its stored
//! form). It builds no alert: each org's alerts are
//! [`crate::detect::alerts::OrgAlerts`], which it feeds.

pub mod admit;
mod answer;
pub mod concurrency;
pub mod dedupe;
mod job_index;
pub mod jobs;
mod lazy;
mod names;
mod org;
mod reconcile;
mod report;
mod scope;
mod scoped;
mod settings;
pub mod snapshot;
mod sourced;
mod ticking;
mod upstream;
pub mod window;

use crate::model::{Limits, ModelScope, OVERFLOW};
use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Config;
use crate::detect::Transition;
use crate::detect::alerts::Reminders;
use crate::events::{Event, Kind};
pub use admit::{Ask, Reservations, Verdict, share_of};
use dedupe::{Dedupe, request_key};
pub use jobs::{DurationHistogram, JobOutcome};
use names::AppNames;
use org::TokenWindows;
pub use org::{App, Org};
pub use report::{
    AppSnapshot, HISTORY_MINUTES, OrgLoad, OrgReport, OrgSnapshot, Overflow, Peaks, ScopeSnapshot,
    StuckJob, View,
};
pub use settings::Settings;
pub use upstream::UpstreamSnapshot;

/// Where [`Tracker::route`] sends an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routed {
    /// The org's place in the order orgs were first tracked.
    pub org: usize,
    /// The org is `__overflow__`.
    pub overflow: bool,
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
    /// Admission grants not yet completed by their events.
    reservations: Reservations,
    /// Firing alerts and when they were last notified, for `repeat_interval`.
    reminders: Reminders,
    /// The daemon's clock as last noted ([`Tracker::note_clock`]); `i64::MIN` in replay,
    /// whose clock is the events'. No org's present is behind it, so events older than the
    /// clock (a backfill, a log read from its beginning) are late for every org, also for
    /// one seen for the first time.
    clock_ms: i64,
    /// The model scopes of configured orgs, as the config gives them.
    config_scopes: HashMap<Arc<str>, Vec<Arc<ModelScope>>, foldhash::fast::RandomState>,
    /// The model scopes of orgs a limit source gave limits for, its values laid over.
    sourced: HashMap<Arc<str>, Vec<Arc<ModelScope>>, foldhash::fast::RandomState>,
    /// The last good poll of each org's limit source (stored in snapshots).
    polled: std::collections::BTreeMap<Arc<str>, crate::model::SourcedLimits>,
    /// `LimitSourceFailing` alerts firing.
    source_alerts: Vec<Transition>,
    /// App names, each held once however many orgs have an app of that name.
    app_names: AppNames,
    /// The orgs a tick looks at: each changed since a tick last found it needed nothing.
    /// Whatever changes an org marks it here.
    ticking: ticking::Ticking,
}

impl Tracker {
    /// A tracker with the configured orgs registered (they are always tracked).
    pub fn new(config: &Config) -> Tracker {
        Tracker::with_configured(config, |_| true)
    }

    /// One of `of` shards of a replay applied on several threads ([`Tracker::route`]): it
    /// holds the orgs whose place in the order orgs are first tracked is `shard` modulo `of`,
    /// the configured ones among them registered now.
    pub fn shard(config: &Config, shard: usize, of: usize) -> Tracker {
        Tracker::with_configured(config, |i| i % of.max(1) == shard)
    }

    fn with_configured(config: &Config, keep: impl Fn(usize) -> bool) -> Tracker {
        let mut t = Tracker {
            settings: Settings::from_config(config),
            orgs: Vec::new(),
            index: HashMap::default(),
            overflow_org: None,
            overflow: Overflow::default(),
            new_orgs: NewOrgs::default(),
            dedupe: Dedupe::new(config.limits.max_request_ids),
            reservations: Reservations::default(),
            reminders: Reminders::default(),
            clock_ms: i64::MIN,
            config_scopes: HashMap::default(),
            sourced: HashMap::default(),
            polled: Default::default(),
            source_alerts: Vec::new(),
            app_names: AppNames::default(),
            ticking: ticking::Ticking::default(),
        };
        for (_, o) in config.orgs.iter().enumerate().filter(|(i, _)| keep(*i)) {
            let mut org = Org::new(
                o.id.as_str().into(),
                o.tier.as_str().into(),
                o.limits,
                true,
                &t.settings,
            );
            let scopes = scopes_of(o);
            org.set_scopes(&scopes);
            t.config_scopes.insert(org.name.clone(), scopes);
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
            return self.create_org(name);
        }
        if room {
            self.new_orgs.refused += 1;
        } else {
            self.overflow.orgs += 1;
        }
        self.overflow_index()
    }

    /// Tracks a new org of default tier and limits (or of a limit source's scopes).
    fn create_org(&mut self, name: &str) -> usize {
        let mut org = Org::new(
            name.into(),
            self.settings.default_tier.clone(),
            self.settings.default_limits,
            true,
            &self.settings,
        );
        org.set_scopes(self.scopes_of_org(name));
        let i = self.orgs.len();
        self.index.insert(org.name.clone(), i);
        self.orgs.push(org);
        i
    }

    /// The index of `__overflow__`, created at first need.
    fn overflow_index(&mut self) -> usize {
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
        // A request that completes an admission grant was counted by the grant (and its id
        // noted then): what it adds is its outcome, tokens beyond those reserved, its job.
        let completes = match (&ev.request_id, ev.kind) {
            (Some(rid), Kind::Request) => self.reservations.complete(request_key(&ev.org, rid)),
            _ => None,
        };
        if completes.is_none()
            && let Some(rid) = &ev.request_id
            && !self
                .dedupe
                .first_seen(dedupe_key(&ev.org, ev.kind, rid), ts)
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
        self.apply_to(oi, completes, ev, ts, out);
        true
    }

    /// Where a replay applied on several threads sends `ev` ([`Tracker::shard`]): decides what
    /// [`Tracker::apply`] decides before it changes an org (a repeated `request_id`, the org
    /// or `__overflow__` under `max_orgs` and `max_new_orgs_per_second`), and changes nothing
    /// else. `None`: a repeated `request_id`, not applied. `Some(i)`: the org's place in the
    /// order orgs were first tracked, `__overflow__` included; [`Tracker::apply_routed`] on
    /// shard `i % shards` applies it there. For replay only: it has no clock and admits
    /// nothing ahead, so no event completes a grant.
    pub fn route(&mut self, ev: &Event<'_>, now: i64) -> Option<Routed> {
        debug_assert!(self.clock_ms == i64::MIN && self.reservations.is_empty());
        let ts = ev.ts_ms.unwrap_or(now);
        if let Some(rid) = &ev.request_id
            && !self
                .dedupe
                .first_seen(dedupe_key(&ev.org, ev.kind, rid), ts)
        {
            return None;
        }
        let i = self.org_index(&ev.org, ts);
        Some(Routed {
            org: i,
            overflow: self.overflow_org == Some(i),
        })
    }

    /// The place of `org` in the order orgs were first tracked (`__overflow__` by that name).
    pub fn org_position(&self, org: &str) -> Option<usize> {
        match self.index.get(org) {
            Some(&i) => Some(i),
            None if org == OVERFLOW => self.overflow_org,
            None => None,
        }
    }

    /// Applies `ev` as routed by the router's [`Tracker::route`] to this shard: the org is
    /// this shard's `local`th (a [`Routed::org`] divided by the shard count; `overflow`:
    /// [`Routed::overflow`]), created when it is the next one. Its admission and dedupe
    /// were decided by the router.
    pub fn apply_routed(
        &mut self,
        ev: &Event<'_>,
        now: i64,
        local: usize,
        overflow: bool,
        out: &mut Vec<Transition>,
    ) {
        let from = out.len();
        // Every org is routed here in the order it was first tracked, so an org is at its
        // place once it has one, and the next new one is the next index. Its name is not
        // compared in release builds: the org's name was a cache miss on every event (the
        // debug-built tests check it).
        let oi = match self.orgs.get(local) {
            Some(o) => {
                debug_assert!(overflow || *o.name == *ev.org, "an org routed astray");
                local
            }
            None if overflow => self.overflow_index(),
            None => match self.index.get(&*ev.org) {
                Some(&i) => i,
                None => self.create_org(&ev.org),
            },
        };
        debug_assert_eq!(oi, local, "an org routed out of order");
        self.apply_to(oi, None, ev, ev.ts_ms.unwrap_or(now), out);
        self.note_notified(&out[from..]);
    }

    /// Applies `ev`, stamped `ts`, to org `oi` (`completes`: the admission grant it completes).
    fn apply_to(
        &mut self,
        oi: usize,
        completes: Option<(Box<str>, admit::Held)>,
        ev: &Event<'_>,
        ts: i64,
        out: &mut Vec<Transition>,
    ) {
        self.ticking.mark(oi);
        let s = &self.settings;
        let org = &mut self.orgs[oi];
        let job = ev
            .job_id
            .as_deref()
            .filter(|_| starts_job(ev))
            .map(|id| org.jobs.key(id));
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
        let ai = org.app_index(
            ev.app_name(),
            s.max_apps_per_org,
            &mut self.app_names,
            &mut self.overflow.apps,
        );
        match ev.kind {
            Kind::Request => {
                let reserved = completes.as_ref().map(|(_, h)| h.tokens);
                // The grant's slot becomes the job's (a 2xx with a job id), is given back when
                // the call failed, and stays the lease's otherwise (a job id may follow).
                let lease_job = completes
                    .as_ref()
                    .and_then(|(lease, h)| h.job.as_ref().map(|(id, _)| (lease, id)));
                let ok = matches!(ev.status, Some(200..=299));
                if let (Some((lease, held_as)), Some(id), true) = (lease_job, &ev.job_id, ok)
                    && org.jobs.get_mut().is_some_and(|j| j.rename(held_as, id))
                {
                    self.reservations.rename_job(lease, id);
                }
                org.request(ai, ts, ev, job, reserved, s, &mut self.overflow, out);
                if let Some((lease, held_as)) = lease_job
                    && ev.status.is_some()
                    && !ok
                {
                    org.end_lease(held_as, false, ts, s, out);
                    self.reservations.take(lease);
                }
            }
            Kind::JobStarted => {
                if let Some(key) = job {
                    org.start_job(ai, key, ts, s, &mut self.overflow, out);
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
                    self.reservations.job_ended(&ev.org, id);
                }
            }
        }
        // A provider's headers describe the limits of the model called (OpenAI's are per
        // model): those of a request in a model scope are that scope's, not the org's, and
        // are not held against the org's limits.
        let scoped = |org: &Org| {
            org.extended
                .as_ref()
                .is_some_and(|x| x.scope_of(ev.model.as_deref()).is_some())
        };
        if !ev.upstream.is_empty() && !scoped(org) {
            org.note_upstream(ts, &ev.upstream, s, out);
        }
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
        let mut active = self.expire_leases(now, out);
        debug_assert!(
            self.orgs
                .iter()
                .enumerate()
                .all(|(i, o)| !o.needs_tick() || self.ticking.is_marked(i)),
            "an org changed without being marked for the clock"
        );
        let (s, orgs) = (&self.settings, &mut self.orgs);
        self.ticking.visit(|i| {
            let Some(org) = orgs.get_mut(i) else {
                return false;
            };
            if !org.needs_tick() {
                return false;
            }
            active = true;
            org.tick(now, s, out);
            org.needs_tick()
        });
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

    /// Weighs `ask` against every limit of its org at `now` and, when it fits, reserves it
    /// under `lease` (a unique id the caller made): see [`admit`]. An `ask` whose
    /// `request_id` holds a grant already gets that grant again.
    pub fn admit(
        &mut self,
        ask: &Ask<'_>,
        lease: &str,
        now: i64,
        out: &mut Vec<Transition>,
    ) -> Verdict {
        self.expire_leases(now, out);
        if let Some(rid) = ask.request_id
            && let Some(held_as) = self.reservations.lease_of(request_key(ask.org, rid))
            && let Some(h) = self.reservations.get(held_as)
        {
            if h.asked != admit::asked(ask) {
                return Verdict::Reused;
            }
            return Verdict::Granted {
                lease: held_as.into(),
                expires_at_ms: self.expires_at(h.at, h.job.as_ref().map(|j| j.1)),
                repeated: true,
            };
        }
        let at = self.clock_ms.max(now);
        let oi = self.org_index(ask.org, at);
        if Some(oi) == self.overflow_org {
            return Verdict::Untracked;
        }
        self.ticking.mark(oi);
        let org = &mut self.orgs[oi];
        org.advance_to(at);
        org.release_due_judged(at, &self.settings, out);
        let first_expiry = self.reservations.first_expiry_of(&org.name);
        match org.weigh(ask, now, &self.settings, first_expiry) {
            Ok(()) => self.reserve(ask, lease, now, out),
            Err(refused) => refused,
        }
    }

    /// Reserves `ask` under `lease` at `now` without weighing it: a grant made before
    /// (recovery replays the journaled ones), or the one [`Tracker::admit`] just weighed.
    pub fn reserve(
        &mut self,
        ask: &Ask<'_>,
        lease: &str,
        now: i64,
        out: &mut Vec<Transition>,
    ) -> Verdict {
        let from = out.len();
        let at = self.clock_ms.max(now);
        let oi = self.org_index(ask.org, at);
        self.ticking.mark(oi);
        let s = &self.settings;
        let org = &mut self.orgs[oi];
        org.advance_to(at);
        let ai = org.app_index(
            ask.app,
            s.max_apps_per_org,
            &mut self.app_names,
            &mut self.overflow.apps,
        );
        org.reserve(ai, ask, lease, now, s, &mut self.overflow, out);
        let keys = (
            request_key(ask.org, lease),
            ask.request_id.map(|r| request_key(ask.org, r)),
        );
        self.dedupe.first_seen(keys.0, now);
        if let Some(k) = keys.1 {
            self.dedupe.first_seen(k, now);
        }
        let expires = ask
            .job
            .then(|| now.saturating_add(s.admission.lease_ttl_ms));
        let held = admit::Held {
            org: org.name().clone(),
            app: org.apps[ai].name.clone(),
            keys,
            at: now,
            requests: ask.requests,
            tokens: ask.tokens,
            job: expires.map(|e| (Box::from(lease), e)),
            asked: admit::asked(ask),
        };
        self.reservations
            .insert(lease.into(), held, self.settings.max_request_ids);
        self.note_notified(&out[from..]);
        Verdict::Granted {
            lease: lease.into(),
            expires_at_ms: self.expires_at(now, expires),
            repeated: false,
        }
    }

    fn expires_at(&self, granted: i64, job_expiry: Option<i64>) -> i64 {
        job_expiry.unwrap_or(granted.saturating_add(self.settings.admission.margin_ms))
    }

    /// Gives back a grant: a job lease's slot is free at once; a call's reservation stays
    /// counted (it was made). False when no grant of `lease` is held.
    pub fn release(&mut self, lease: &str, now: i64, out: &mut Vec<Transition>) -> bool {
        let Some(h) = self.reservations.take(lease) else {
            return false;
        };
        if let Some((id, _)) = &h.job
            && let Some(&oi) = self.index.get(&*h.org)
        {
            let from = out.len();
            self.ticking.mark(oi);
            self.orgs[oi].end_lease(id, false, now, &self.settings, out);
            self.note_notified(&out[from..]);
        }
        true
    }

    /// Attaches upstream job `job_id` to the job lease `lease`: the job's finishing event then
    /// gives the slot back. Errors say why not.
    pub fn attach(&mut self, lease: &str, job_id: &str) -> Result<(), AttachError> {
        let (oi, held_as) = self.attachable(lease, job_id)?;
        self.ticking.mark(oi);
        if *held_as != *job_id
            && !self.orgs[oi]
                .jobs
                .get_mut()
                .is_some_and(|j| j.rename(&held_as, job_id))
        {
            return Err(AttachError::JobInFlight);
        }
        self.reservations.rename_job(lease, job_id);
        Ok(())
    }

    /// What [`Tracker::attach`] would answer, changing nothing.
    pub fn can_attach(&self, lease: &str, job_id: &str) -> Result<(), AttachError> {
        self.attachable(lease, job_id).map(|_| ())
    }

    /// The org and the job id a lease's slot is held under, if `job_id` can take it over.
    fn attachable(&self, lease: &str, job_id: &str) -> Result<(usize, Box<str>), AttachError> {
        let Some(h) = self.reservations.get(lease) else {
            return Err(AttachError::NoLease);
        };
        let Some((held_as, _)) = &h.job else {
            return Err(AttachError::NotAJob);
        };
        let Some(&oi) = self.index.get(&*h.org) else {
            return Err(AttachError::NoLease);
        };
        if **held_as != *job_id && self.orgs[oi].jobs.holds(job_id) {
            return Err(AttachError::JobInFlight);
        }
        Ok((oi, held_as.clone()))
    }

    /// Ends job leases whose `lease_ttl` passed by `now` (each a job timed out) and forgets
    /// grants older than a day; true when a slot was given back.
    fn expire_leases(&mut self, now: i64, out: &mut Vec<Transition>) -> bool {
        self.reservations.expire(now);
        let due = self.reservations.due(now);
        let from = out.len();
        for h in &due {
            if let (Some((id, _)), Some(&oi)) = (&h.job, self.index.get(&*h.org)) {
                self.ticking.mark(oi);
                self.orgs[oi].end_lease(id, true, now, &self.settings, out);
            }
        }
        self.note_notified(&out[from..]);
        !due.is_empty()
    }

    /// The name `org`'s series go by: its own once tracked, else `__overflow__`.
    pub fn tracked_as(&self, org: &str) -> Arc<str> {
        match self.index.get(org) {
            Some(&i) => self.orgs[i].name().clone(),
            None => OVERFLOW.into(),
        }
    }

    /// Grants not yet completed.
    pub fn reservations(&self) -> &Reservations {
        &self.reservations
    }

    /// What `org` uses at `now` and may use: the dispatcher's admission control. An org not
    /// seen yet uses nothing and has the default tier's limits.
    pub fn load_of(&self, org: &str, now: i64) -> OrgLoad {
        match self.index.get(org) {
            Some(&i) => self.orgs[i].load(now),
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
        self.snapshot_of(now, 0, usize::MAX, View::Full)
    }

    /// [`Tracker::snapshot`] of at most `len` orgs from the `start`-th (in tracking order;
    /// orgs are only ever added at the end), with what `view` needs.
    pub fn snapshot_of(&self, now: i64, start: usize, len: usize, view: View) -> Vec<OrgSnapshot> {
        self.orgs
            .iter()
            .skip(start)
            .take(len)
            .map(|o| {
                let mut snap = o.snapshot(now, &self.settings, view);
                self.source_alerts_of(&o.name, now, &mut snap.alerts);
                snap
            })
            .collect()
    }

    /// Alerts firing at `now`, per org in tracking order.
    pub fn active_alerts(&self, now: i64) -> Vec<Transition> {
        let mut out = Vec::new();
        for org in &self.orgs {
            org.active_alerts(now, &self.settings, &mut out);
            self.source_alerts_of(&org.name, now, &mut out);
        }
        out
    }

    /// One org's load at `now` and its totals so far (replay's timeline; `None` for an org
    /// not tracked under that name).
    pub fn glance(&self, org: &str, now: i64) -> Option<(OrgLoad, OrgReport)> {
        let o = &self.orgs[*self.index.get(org)?];
        Some((o.load(now), o.report()))
    }

    /// Totals per org, for replay's report.
    pub fn report(&self) -> Vec<OrgReport> {
        self.orgs.iter().map(Org::report).collect()
    }
}

/// A configured org's model scopes, shared by the org's windows.
fn scopes_of(o: &crate::config::OrgConfig) -> Vec<Arc<crate::model::ModelScope>> {
    o.models.iter().cloned().map(Arc::new).collect()
}

/// The dedupe key of an event with a `request_id`. A request and its job's lifecycle events
/// may carry the same id (one trace); they are different events, so lifecycle events are keyed
/// with their kind. (Requests keep the plain key that earlier versions stored.)
fn dedupe_key(org: &str, kind: Kind, rid: &str) -> u64 {
    match kind {
        Kind::Request => request_key(org, rid),
        kind => {
            let kind: &[u8] = match kind {
                Kind::JobStarted => b"job_started",
                Kind::JobCompleted => b"job_completed",
                Kind::JobFailed => b"job_failed",
                _ => b"job_cancelled",
            };
            crate::model::stable_hash(&[org.as_bytes(), rid.as_bytes(), kind])
        }
    }
}

#[cfg(test)]
mod admit_tests;
#[cfg(test)]
mod scope_tests;
#[cfg(test)]
mod tests;

/// Why a job id could not be attached to a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    /// No grant of that lease is held (never made, released or expired).
    #[error("no lease of that id is held (never granted, released or expired)")]
    NoLease,
    /// The grant holds no job slot.
    #[error("the lease holds no job slot (it was granted without \"job\": true)")]
    NotAJob,
    /// The job id is in flight already, on its own.
    #[error("that job id is already in flight")]
    JobInFlight,
}

/// True when `ev` starts a job, as [`Org::request`] and [`Tracker::apply`] decide: a 2xx
/// request for a job (not a batch), or a job's start.
fn starts_job(ev: &Event<'_>) -> bool {
    match ev.kind {
        Kind::Request => matches!(ev.status, Some(200..=299)) && !ev.batch,
        Kind::JobStarted => true,
        _ => false,
    }
}
