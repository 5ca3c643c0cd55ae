//! Admission (issue "Admission"): whether one more call of an org fits every limit at once,
//! and the reservations that grants leave.
//!
//! A grant is weighed against `[admission] share` × each limit of the org (rounded down, at
//! least 1): rpm and tpm over the last 60 s, daily and tpd over the last 24 h, each window
//! made longer by `[admission] margin` (a call may reach the upstream up to `margin` after
//! its grant, so every window that could hold the call counts the grant), and concurrency
//! when the call holds a job slot. Windows are the tracker's own buckets (SPEC §5), which
//! hold at most one bucket more than the window, so the check is conservative. A grant
//! counts at once as a request in the org's and the app's windows; the app's later event
//! carrying the grant's `request_id` or `lease` completes it (its status, tokens above those
//! reserved, its job) and is not counted again. A refusal says when the call would fit if
//! nothing else arrived: the first moment every dimension has room.
//!
//! It never reads a clock: time is an argument, like everywhere in the tracker.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use crate::detect::Transition;
use crate::model::Dimension;

use super::concurrency::HORIZON_MS;
use super::jobs::{JobKey, JobOutcome};
use super::org::{Org, TokenWindows};
use super::report::Overflow;
use super::settings::*;
use super::window::{Slot, Window};

/// What a caller asks to be admitted for (`POST /v1/admit`).
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// The org whose limits apply.
    pub org: &'a str,
    /// The app asking.
    pub app: &'a str,
    /// Requests the call makes (counted in rpm and daily).
    pub requests: u64,
    /// Tokens it expects to use (counted in tpm and tpd).
    pub tokens: u64,
    /// Whether it holds a concurrency slot until released.
    pub job: bool,
    /// The caller's id for the request; asking again with it answers the same grant.
    pub request_id: Option<&'a str>,
    /// A lower ceiling than `[admission] share` for this caller, in basis points (the batch
    /// dispatcher's `[scheduler] share`).
    pub share_bp: Option<u32>,
}

/// The answer to an [`Ask`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It fits and is reserved.
    Granted {
        /// The lease naming the reservation.
        lease: Box<str>,
        /// Unix ms: for a job, when its slot is given back unless released before; otherwise
        /// the latest time the call should reach the upstream (the grant plus the margin).
        expires_at_ms: i64,
        /// True when this answers a `request_id` granted before (nothing new reserved).
        repeated: bool,
    },
    /// It does not fit now.
    Refused {
        /// The dimension that frees up last.
        dimension: Dimension,
        /// When it would be granted if nothing else arrived, ms from now (at least 1).
        retry_after_ms: u64,
    },
    /// The org is not tracked (past `max_orgs` or `max_new_orgs_per_second`): its usage is
    /// `__overflow__`'s, which has no limits, so nothing can be weighed.
    Untracked,
    /// The `request_id` holds a grant of another ask.
    Reused,
    /// It can never fit: it asks more of `dimension` than its share of the limit.
    Never {
        /// The dimension.
        dimension: Dimension,
        /// `share` × the limit.
        cap: u64,
    },
}

/// `share` (basis points) of `limit`, rounded down, at least 1.
pub fn share_of(limit: u64, share_bp: u32) -> u64 {
    let cap = u128::from(limit) * u128::from(share_bp) / 10_000;
    u64::try_from(cap).unwrap_or(u64::MAX).max(1)
}

/// One grant not yet completed by its event.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Held {
    pub(super) org: Arc<str>,
    pub(super) app: Arc<str>,
    /// Dedupe keys it answers to: its lease, and its request id when it was given one.
    pub(super) keys: (u64, Option<u64>),
    /// Unix ms of the grant.
    pub(super) at: i64,
    pub(super) requests: u64,
    pub(super) tokens: u64,
    /// For a job: the id its slot is held under in the org's jobs (the lease until a job id
    /// is attached) and when the slot is given back (Unix ms).
    pub(super) job: Option<(Box<str>, i64)>,
    /// What was asked (app, requests, tokens, job), hashed: the same `request_id` asked again
    /// for something else is not the same grant.
    pub(super) asked: u64,
}

/// The hash [`Held::asked`] holds for `ask`.
pub(super) fn asked(ask: &Ask<'_>) -> u64 {
    crate::model::stable_hash(&[
        ask.app.as_bytes(),
        &ask.requests.to_le_bytes(),
        &ask.tokens.to_le_bytes(),
        &[u8::from(ask.job)],
    ])
}

/// The key a job lease is found by once its job ends: the org and the job's id.
fn job_key(org: &str, job_id: &str) -> u64 {
    crate::model::stable_hash(&[org.as_bytes(), job_id.as_bytes()])
}

/// Grants not yet completed, by lease; at most `max` (then the oldest are forgotten: an
/// event completing one of them is then deduplicated by its id, or counted again), none
/// older than 24 h.
#[derive(Debug, Default)]
pub struct Reservations {
    held: HashMap<Box<str>, Held, foldhash::fast::RandomState>,
    /// Lease by dedupe key.
    by_key: HashMap<u64, Box<str>, foldhash::fast::RandomState>,
    /// (grant time, lease) in grant order; entries of leases gone are skipped.
    order: VecDeque<(i64, Box<str>)>,
    /// (expiry, lease) of the job leases.
    expiries: BTreeSet<(i64, Box<str>)>,
    /// Lease of each job lease by [`job_key`] of the id its slot is held under.
    by_job: HashMap<u64, Box<str>, foldhash::fast::RandomState>,
}

/// How long a grant waits for its event.
const HORIZON: i64 = 24 * 3_600_000;

impl Reservations {
    /// Grants held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Whether a grant of `lease` is held.
    pub fn get_lease(&self, lease: &str) -> bool {
        self.held.contains_key(lease)
    }

    pub(super) fn get(&self, lease: &str) -> Option<&Held> {
        self.held.get(lease)
    }

    pub(super) fn lease_of(&self, key: u64) -> Option<&str> {
        self.by_key.get(&key).map(|l| &**l)
    }

    pub(super) fn insert(&mut self, lease: Box<str>, held: Held, max: usize) {
        self.by_key.insert(held.keys.0, lease.clone());
        if let Some(k) = held.keys.1 {
            self.by_key.insert(k, lease.clone());
        }
        if let Some((id, expires)) = &held.job {
            self.expiries.insert((*expires, lease.clone()));
            self.by_job.insert(job_key(&held.org, id), lease.clone());
        }
        self.order.push_back((held.at, lease.clone()));
        self.held.insert(lease, held);
        while self.held.len() > max.max(1) {
            let Some((_, old)) = self.order.pop_front() else {
                break;
            };
            self.take(&old);
        }
    }

    /// Removes the grant of `lease`.
    pub(super) fn take(&mut self, lease: &str) -> Option<Held> {
        let held = self.held.remove(lease)?;
        self.by_key.remove(&held.keys.0);
        if let Some(k) = held.keys.1 {
            self.by_key.remove(&k);
        }
        if let Some((id, expires)) = &held.job {
            self.expiries.remove(&(*expires, Box::from(lease)));
            self.by_job.remove(&job_key(&held.org, id));
        }
        // Taken ones stay in `order` until they reach its front; keep it near `held`.
        if self.order.len() > 2 * self.held.len() + 1_024 {
            let held = &self.held;
            self.order
                .retain(|(at, l)| held.get(l).is_some_and(|h| h.at == *at));
        }
        Some(held)
    }

    /// Forgets grants older than the horizon before `now`.
    pub(super) fn expire(&mut self, now: i64) {
        while let Some((at, lease)) = self.order.front()
            && *at < now.saturating_sub(HORIZON)
        {
            let lease = lease.clone();
            self.order.pop_front();
            if self.held.get(&lease).is_some_and(|h| h.job.is_none()) {
                self.take(&lease);
            }
        }
    }

    /// Job leases whose slot is due back by `now`, taken out.
    pub(super) fn due(&mut self, now: i64) -> Vec<Held> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.expiries.first()
            && *at <= now
        {
            let Some((_, lease)) = self.expiries.pop_first() else {
                break;
            };
            if let Some(h) = self.take(&lease) {
                due.push(h);
            }
        }
        due
    }

    /// When the first job lease of `org` gives its slot back, if it holds any.
    pub(super) fn first_expiry_of(&self, org: &str) -> Option<i64> {
        self.expiries
            .iter()
            .find(|(_, l)| self.held.get(l).is_some_and(|h| &*h.org == org))
            .map(|(at, _)| *at)
    }

    /// Files the slot of `lease` under `job_id`.
    pub(super) fn rename_job(&mut self, lease: &str, job_id: &str) {
        if let Some(h) = self.held.get_mut(lease)
            && let Some((id, _)) = &mut h.job
        {
            self.by_job.remove(&job_key(&h.org, id));
            *id = job_id.into();
            self.by_job.insert(job_key(&h.org, job_id), lease.into());
        }
    }

    /// The grant an event with dedupe `key` completes: it no longer answers to its keys
    /// (the event's id is in the dedupe from the grant on, so a copy of the event is a
    /// duplicate); a call's grant is done, a job's stays held for its slot (until released,
    /// its job ends or its lease expires).
    pub(super) fn complete(&mut self, key: u64) -> Option<(Box<str>, Held)> {
        let lease = self.by_key.remove(&key)?;
        let held = self.held.get(&lease)?.clone();
        self.by_key.remove(&held.keys.0);
        if let Some(k) = held.keys.1 {
            self.by_key.remove(&k);
        }
        if held.job.is_none() {
            self.take(&lease);
        }
        Some((lease, held))
    }

    /// The job `job_id` of `org` ended: a job lease holding its slot is done.
    pub(super) fn job_ended(&mut self, org: &str, job_id: &str) {
        if let Some(lease) = self.by_job.get(&job_key(org, job_id)).cloned() {
            self.take(&lease);
        }
    }

    /// Per org: grants not yet completed and job leases held.
    pub fn per_org(&self) -> HashMap<Arc<str>, (u64, u64)> {
        let mut out: HashMap<Arc<str>, (u64, u64)> = HashMap::new();
        for h in self.held.values() {
            let e = out.entry(h.org.clone()).or_default();
            e.0 += 1;
            e.1 += u64::from(h.job.is_some());
        }
        out
    }

    /// The stored form: every grant in grant order.
    pub(super) fn stored(&self) -> Vec<(&str, &Held)> {
        let mut out: Vec<(&str, &Held)> =
            self.held.iter().map(|(l, h)| (&**l, h)).collect::<Vec<_>>();
        out.sort_by(|a, b| (a.1.at, a.0).cmp(&(b.1.at, b.0)));
        out
    }

    /// Back from the stored form.
    pub(super) fn restored(stored: Vec<(Box<str>, Held)>, max: usize) -> Reservations {
        let mut r = Reservations::default();
        for (lease, held) in stored {
            r.insert(lease, held, max);
        }
        r
    }
}

/// The window a dimension is counted in (an org without token windows has used none).
enum Counted<'w> {
    Requests(&'w Window<u32>),
    Tokens(Option<&'w Window<u64>>),
}

/// Where a window dimension frees up: `Ok` when `need` more fit, else the Unix ms at which
/// they would. The window counts from `margin` before the usual window's start.
fn weigh_window<S: Slot>(
    w: Option<&Window<S>>,
    (width, step): (i64, i64),
    now: i64,
    margin_ms: i64,
    need: u64,
    cap: u64,
) -> Result<(), i64> {
    let Some(w) = w else {
        return Ok(());
    };
    let span = width + (margin_ms.max(0) as u64).div_ceil(step as u64) as i64;
    let from = now.div_euclid(step) - span + 1;
    let room = cap - need;
    if w.count_from(from) <= room {
        return Ok(());
    }
    // The window ending at bucket `q` starts at `q − span + 1`.
    let q = w.frees_from(from, room) + span - 1;
    Err(q.saturating_mul(step))
}

impl Org {
    /// Whether `ask` fits every limit at `now`, or the refusal. `first_lease_expiry` is when
    /// the org's first job lease gives its slot back.
    pub(super) fn weigh(
        &mut self,
        ask: &Ask<'_>,
        now: i64,
        s: &Settings,
        first_lease_expiry: Option<i64>,
    ) -> Result<(), Verdict> {
        let a = &s.admission;
        let share_bp = ask.share_bp.map_or(a.share_bp, |c| c.min(a.share_bp));
        let tokens = self.tokens.as_deref();
        let rpm = (RPM_WIDTH as i64, 1_000);
        let daily = (DAILY_WIDTH as i64, 60_000);
        let dims = [
            (
                Dimension::Rpm,
                ask.requests,
                Counted::Requests(&self.rpm),
                rpm,
            ),
            (
                Dimension::Daily,
                ask.requests,
                Counted::Requests(&self.daily),
                daily,
            ),
            (
                Dimension::Tpm,
                ask.tokens,
                Counted::Tokens(tokens.map(|t| &t.tpm)),
                rpm,
            ),
            (
                Dimension::Tpd,
                ask.tokens,
                Counted::Tokens(tokens.map(|t| &t.tpd)),
                daily,
            ),
        ];
        let mut worst: Option<(Dimension, i64)> = None;
        for (dim, need, counted, shape) in dims {
            let limit = dim.limit(&self.limits);
            if limit == 0 || need == 0 {
                continue;
            }
            let cap = share_of(limit, share_bp);
            if need > cap {
                return Err(Verdict::Never {
                    dimension: dim,
                    cap,
                });
            }
            let weighed = match (dim, self.limits.daily_window.day_of(now)) {
                // A calendar day: its requests so far, those granted up to `margin` before it
                // began included (they may have reached the upstream after its reset); full
                // until the next reset.
                (Dimension::Daily, Some((start, end))) => {
                    let from = minute(start.saturating_sub(a.margin_ms.max(0)));
                    if self.daily.count_from(from) <= cap - need {
                        Ok(())
                    } else {
                        Err(end)
                    }
                }
                _ => match counted {
                    Counted::Requests(w) => {
                        weigh_window(Some(w), shape, now, a.margin_ms, need, cap)
                    }
                    Counted::Tokens(w) => weigh_window(w, shape, now, a.margin_ms, need, cap),
                },
            };
            if let Err(at) = weighed
                && worst.is_none_or(|(_, w)| at > w)
            {
                worst = Some((dim, at));
            }
        }
        if ask.job && self.limits.concurrency > 0 {
            let cap = share_of(self.limits.concurrency, share_bp);
            if self.jobs.in_flight() as u64 >= cap {
                let released = self
                    .jobs
                    .get_mut()
                    .and_then(|j| j.oldest_start())
                    .map(|t| t.saturating_add(s.detect.release_after_ms));
                let at = match (released, first_lease_expiry) {
                    (Some(a), Some(b)) => a.min(b),
                    (a, b) => a.or(b).unwrap_or(now + 1),
                };
                if worst.is_none_or(|(_, w)| at > w) {
                    worst = Some((Dimension::Concurrency, at));
                }
            }
        }
        match worst {
            None => Ok(()),
            Some((dimension, at)) => Err(Verdict::Refused {
                dimension,
                retry_after_ms: u64::try_from(at.saturating_sub(now)).unwrap_or(0).max(1),
            }),
        }
    }

    /// Counts a grant of `ask` for app `ai` at `now` as requests (and tokens) in the org's
    /// and the app's windows, and a job's slot under `lease`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn reserve(
        &mut self,
        ai: usize,
        ask: &Ask<'_>,
        lease: &str,
        now: i64,
        s: &Settings,
        overflow: &mut Overflow,
        out: &mut Vec<Transition>,
    ) {
        if ask.requests > 0 {
            self.rpm.add(sec(now), ask.requests);
            self.daily.add(minute(now), ask.requests);
            let app = &mut self.apps[ai];
            app.rpm.add(sec(now), ask.requests);
            app.daily.add(minute(now), ask.requests);
            self.peaks.rpm = self.peaks.rpm.max(self.rpm.count_at(sec(now)));
            self.peaks.daily = self.peaks.daily.max(self.daily_count(now));
        }
        if ask.tokens > 0 {
            let t = self.tokens.get_or_insert_with(TokenWindows::boxed);
            t.tpm.add(sec(now), ask.tokens);
            t.tpd.add(minute(now), ask.tokens);
        }
        if ask.job {
            self.start_job(ai, JobKey::new(lease), now, s, overflow, out);
        }
        if self.alerting {
            let present = self.present_ms;
            let tokens = ask.tokens > 0;
            let requests = ask.requests > 0;
            for (dim, changed) in [
                (Dimension::Rpm, requests),
                (Dimension::Daily, requests),
                (Dimension::Tpm, tokens),
                (Dimension::Tpd, tokens),
            ] {
                if changed {
                    let usage = self.usage_at(dim, present);
                    self.judge(dim, usage, present, s, out);
                }
            }
        }
    }

    /// Gives back the slot of job `id` (a lease released, expired, or whose call failed);
    /// an expiry counts as a job timed out.
    pub(super) fn end_lease(
        &mut self,
        id: &str,
        expired: bool,
        now: i64,
        s: &Settings,
        out: &mut Vec<Transition>,
    ) {
        let Some(job) = self.jobs.get_mut().and_then(|j| j.finish(id)) else {
            return;
        };
        self.release_slot(&job);
        if expired {
            self.jobs_finished[JobOutcome::TimedOut as usize] += 1;
        }
        let floor = self.present_ms.saturating_sub(HORIZON_MS);
        self.concurrency_mut(s)
            .end(job.started_ms, now.max(job.started_ms), floor);
        if self.alerting {
            let in_flight = self.jobs.in_flight() as u64;
            let present = self.present_ms;
            self.judge(Dimension::Concurrency, in_flight, present, s, out);
            if job.stuck {
                self.judge_stuck(present, out);
            }
        }
    }
}
