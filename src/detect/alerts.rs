//! One org's alert state and every [`Transition`] built from it (SPEC §9): `UsageHigh` per
//! dimension, `DailyQuotaExhausted`, `BurstDetected`, `JobsStuck`, `RetryStorm`,
//! `LimitMismatch`, the list of alerts firing now, and the reminders of those still firing.
//!
//! The tracker measures (usage, stuck jobs, burst counts, runs of 429s) and hands each
//! measurement here with the time it is judged at; this is the only place an alert is
//! started, escalated, lowered, resolved or repeated. Changing how an alert fires means
//! changing this file (and its thresholds in the config), nothing else.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::burst::Edge;
pub use super::level::LevelRules;
use super::level::{Change, LevelAlert, QUOTA_THRESHOLDS_BP};
use super::quiet::Quiet;
use super::{Status, Storm, Transition};
use crate::config::Config;
use crate::model::{AlertName, Dimension, Severity};

/// The level rules of every org, from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRules {
    default: LevelRules,
    /// Orgs with thresholds of their own (`[[orgs]] thresholds`).
    own: std::collections::HashMap<String, LevelRules>,
}

impl AlertRules {
    /// `[alerts]` thresholds, hysteresis and `for`.
    pub fn from_config(config: &Config) -> AlertRules {
        let a = &config.alerts;
        let default = LevelRules {
            thresholds_bp: [a.warning_bp, a.critical_bp],
            hysteresis_bp: a.hysteresis_bp,
            for_ms: a.for_ms,
        };
        let own = config
            .orgs
            .iter()
            .filter_map(|o| {
                let thresholds_bp = o.thresholds_bp?;
                Some((
                    o.id.clone(),
                    LevelRules {
                        thresholds_bp,
                        ..default
                    },
                ))
            })
            .collect();
        AlertRules { default, own }
    }

    /// The rules `org`'s alerts follow: its own thresholds if it has them.
    pub fn for_org(&self, org: &str) -> &LevelRules {
        // Asked for every judged event: no hashing when no org has rules of its own.
        if self.own.is_empty() {
            return &self.default;
        }
        self.own.get(org).unwrap_or(&self.default)
    }
}

/// `UsageHigh` is a warning at the first threshold and critical at the second.
fn level_severity(level: u8) -> Severity {
    if level <= 1 {
        Severity::Warning
    } else {
        Severity::Critical
    }
}

/// What is known of an org's alerts. Stored in snapshots as these fields in this order (it
/// sits inside the tracker's org record, where they were before it had a name).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrgAlerts {
    /// When the open (or last) burst episode began.
    burst_since: i64,
    /// When the last burst episode closed (`i64::MIN` while none has; `i64::MAX` while open).
    burst_until: i64,
    /// Stored as the two fields it holds, where they always were.
    #[serde(with = "boxed_levels")]
    levels: Option<Box<OrgLevels>>,
    stuck_since: Option<i64>,
}

/// An org's `UsageHigh` alert per dimension and its `DailyQuotaExhausted`, boxed at the
/// first judgement that could change them: most orgs stay below every threshold, and the
/// alerts cost 192 bytes an org (1.9 MB at 10 000 orgs).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct OrgLevels {
    usage: [LevelAlert; Dimension::LEGACY],
    quota: LevelAlert,
    /// Per dimension, where judging it again would change nothing: worked out after each
    /// judgement, not stored (a restored org works it out at its next one).
    #[serde(skip)]
    quiet: [Quiet; Dimension::LEGACY],
}

/// The levels of an org whose alerts never did anything.
static IDLE_LEVELS: OrgLevels = OrgLevels {
    usage: [LevelAlert::IDLE; Dimension::LEGACY],
    quota: LevelAlert::IDLE,
    quiet: [Quiet::UNKNOWN; Dimension::LEGACY],
};

impl OrgLevels {
    /// These levels boxed, or none if they never did anything.
    fn boxed(self) -> Option<Box<OrgLevels>> {
        let untouched =
            self.quota.is_untouched() && self.usage.iter().all(LevelAlert::is_untouched);
        (!untouched).then(|| Box::new(self))
    }
}

/// [`OrgLevels`] boxed or not, stored as the levels themselves (untouched ones when none are
/// held), so snapshots are the bytes they were.
mod boxed_levels {
    use super::{IDLE_LEVELS, OrgLevels};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Box<OrgLevels>>, s: S) -> Result<S::Ok, S::Error> {
        v.as_deref().unwrap_or(&IDLE_LEVELS).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Box<OrgLevels>>, D::Error> {
        OrgLevels::deserialize(d).map(OrgLevels::boxed)
    }
}

impl Default for OrgAlerts {
    fn default() -> Self {
        OrgAlerts {
            burst_since: 0,
            burst_until: i64::MIN,
            levels: None,
            stuck_since: None,
        }
    }
}

/// What [`OrgAlerts::active`] needs to know of the org now.
pub struct Now<'a> {
    /// Usage of a dimension at the time asked.
    pub usage: &'a dyn Fn(Dimension) -> u64,
    /// Limit of a dimension (0 = unlimited).
    pub limit: &'a dyn Fn(Dimension) -> u64,
    /// Requests in the burst window now, and the burst threshold, while a burst is open.
    pub burst: Option<(u64, Option<u64>)>,
    /// Jobs stuck now.
    pub stuck: u64,
    /// Apps in a retry storm: name, since, consecutive 429s.
    pub storms: Vec<(Arc<str>, i64, u64)>,
}

impl OrgAlerts {
    /// The state as an older snapshot layout held it.
    pub fn from_parts(
        burst_since: i64,
        burst_until: i64,
        usage: [LevelAlert; Dimension::LEGACY],
        quota: LevelAlert,
        stuck_since: Option<i64>,
    ) -> OrgAlerts {
        OrgAlerts {
            burst_since,
            burst_until,
            levels: OrgLevels {
                usage,
                quota,
                quiet: IDLE_LEVELS.quiet,
            }
            .boxed(),
            stuck_since,
        }
    }

    fn levels(&self) -> &OrgLevels {
        self.levels.as_deref().unwrap_or(&IDLE_LEVELS)
    }

    /// True while any alert is active or arming (the clock must keep judging the org).
    pub fn any_active(&self) -> bool {
        let levels = self.levels();
        self.stuck_since.is_some()
            || levels.quota.is_active()
            || levels.usage.iter().any(LevelAlert::is_active)
    }

    /// Whether a late request at `ts` belongs to the last burst episode known (one that
    /// began up to a window later, or had not ended by then).
    pub fn in_known_burst(&self, ts: i64, window_ms: i64) -> bool {
        ts >= self.burst_since.saturating_sub(window_ms) && ts <= self.burst_until
    }

    /// A burst found late that was over before the present: remembered as the last episode
    /// (no alert) unless one is open or a later one is known.
    pub fn note_past_burst(&mut self, ts: i64, window_ms: i64, open: bool) {
        if !open && ts > self.burst_until {
            self.burst_since = ts;
            self.burst_until = ts.saturating_add(window_ms);
        }
    }

    /// A burst opened or closed at `ts` with `count` requests in the window.
    pub fn burst(
        &mut self,
        org: &Arc<str>,
        edge: Edge,
        ts: i64,
        count: u64,
        threshold: u64,
        out: &mut Vec<Transition>,
    ) {
        let status = match edge {
            Edge::Opened => {
                self.burst_since = ts;
                self.burst_until = i64::MAX;
                Status::Firing
            }
            Edge::Closed => {
                self.burst_until = ts;
                Status::Resolved
            }
        };
        out.push(Transition {
            status,
            starts_at_ms: self.burst_since,
            usage: Some(count),
            limit: Some(threshold),
            ..Transition::firing(org, ts, AlertName::BurstDetected, Severity::Warning)
        });
    }

    /// One dimension's usage at `ts` against its limit: `UsageHigh`, and for the daily
    /// window `DailyQuotaExhausted`. The dimensions past [`Dimension::LEGACY`] are judged by
    /// the org's [`UsageAlerts`].
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn usage(
        &mut self,
        org: &Arc<str>,
        dim: Dimension,
        usage: u64,
        limit: u64,
        ts: i64,
        rules: &LevelRules,
        out: &mut Vec<Transition>,
    ) {
        // Inside the quiet band, answered where it is asked (inlined): nearly every judgement
        // of a busy org, which cost two calls more to find out.
        if let Some(levels) = &self.levels
            && levels
                .quiet
                .get(dim.index())
                .is_some_and(|q| q.holds(usage, limit, rules))
        {
            return;
        }
        let at = Judged {
            org,
            model: None,
            dim,
            usage,
            limit,
            ts,
        };
        self.judge_usage(&at, rules, out);
    }

    /// [`OrgAlerts::usage`] outside the quiet band: judged, and the band worked out again.
    fn judge_usage(&mut self, at: &Judged<'_>, rules: &LevelRules, out: &mut Vec<Transition>) {
        let Judged {
            dim, usage, limit, ..
        } = *at;
        let levels = match &mut self.levels {
            Some(levels) => levels,
            // Untouched alerts below every threshold stay untouched: nothing to box.
            None if LevelAlert::stays_idle(usage, limit, &rules.thresholds_bp)
                && (dim != Dimension::Daily
                    || LevelAlert::stays_idle(usage, limit, &QUOTA_THRESHOLDS_BP)) =>
            {
                return;
            }
            None => self.levels.insert(Box::new(IDLE_LEVELS)),
        };
        judge_level(&mut levels.usage, &mut levels.quota, at, rules, out);
        let d = dim.index();
        if let (Some(q), Some(alert)) = (levels.quiet.get_mut(d), levels.usage.get(d)) {
            let quota = (dim == Dimension::Daily).then_some(&levels.quota);
            *q = Quiet::of(alert, quota, limit, rules);
        }
    }

    /// `stuck` jobs in flight longer than `stuck_after` at `ts`: `JobsStuck`.
    pub fn stuck(&mut self, org: &Arc<str>, stuck: u64, ts: i64, out: &mut Vec<Transition>) {
        let status = match (stuck > 0, self.stuck_since) {
            (true, None) => {
                self.stuck_since = Some(ts);
                Status::Firing
            }
            (false, Some(_)) => Status::Resolved,
            _ => return,
        };
        let since = self.stuck_since.unwrap_or(ts);
        if status == Status::Resolved {
            self.stuck_since = None;
        }
        out.push(Transition {
            status,
            starts_at_ms: since,
            usage: Some(stuck),
            ..Transition::firing(org, ts, AlertName::JobsStuck, Severity::Warning)
        });
    }

    /// A retry storm of `app` started or ended at `ts`: `RetryStorm`.
    pub fn storm(
        org: &Arc<str>,
        app: &Arc<str>,
        change: Storm,
        ts: i64,
        out: &mut Vec<Transition>,
    ) {
        let t = Transition::firing(org, ts, AlertName::RetryStorm, Severity::Critical);
        out.push(match change {
            Storm::Fired(n) => Transition {
                app: Some(app.clone()),
                usage: Some(n as u64),
                ..t
            },
            Storm::Resolved { since } => Transition {
                app: Some(app.clone()),
                status: Status::Resolved,
                starts_at_ms: since,
                usage: Some(0),
                ..t
            },
        });
    }

    /// Every alert of the org firing at `now`, as transitions dated `now`.
    pub fn active(
        &self,
        org: &Arc<str>,
        at: &Now<'_>,
        now: i64,
        rules: &LevelRules,
        out: &mut Vec<Transition>,
    ) {
        let held = self.levels();
        let levels = Levels {
            usage: &held.usage,
            quota: &held.quota,
        };
        levels.active(org, None, at, now, rules, out);
        if let Some((count, threshold)) = at.burst {
            out.push(Transition {
                starts_at_ms: self.burst_since,
                usage: Some(count),
                limit: threshold,
                ..Transition::firing(org, now, AlertName::BurstDetected, Severity::Warning)
            });
        }
        if let Some(since) = self.stuck_since {
            out.push(Transition {
                starts_at_ms: since,
                usage: Some(at.stuck),
                ..Transition::firing(org, now, AlertName::JobsStuck, Severity::Warning)
            });
        }
        for (app, since, consecutive) in &at.storms {
            out.push(Transition {
                app: Some(app.clone()),
                starts_at_ms: *since,
                usage: Some(*consecutive),
                ..Transition::firing(org, now, AlertName::RetryStorm, Severity::Critical)
            });
        }
    }
}

/// What one usage judgement is about.
struct Judged<'a> {
    org: &'a Arc<str>,
    model: Option<&'a Arc<str>>,
    dim: Dimension,
    usage: u64,
    limit: u64,
    ts: i64,
}

/// `UsageHigh` of `at.dim` by its alert in `alerts` (one per dimension in [`Dimension::ALL`]
/// order, as far as they go), and for the daily window `DailyQuotaExhausted` by `quota`.
fn judge_level(
    alerts: &mut [LevelAlert],
    quota: &mut LevelAlert,
    at: &Judged<'_>,
    rules: &LevelRules,
    out: &mut Vec<Transition>,
) {
    let Judged {
        org,
        model,
        dim,
        usage,
        limit,
        ts,
    } = *at;
    let Some(alert) = alerts.get_mut(dim.index()) else {
        return;
    };
    let quota = (dim == Dimension::Daily).then_some(quota);
    if limit == 0 {
        return;
    }
    let thresholds = rules.thresholds_bp;
    let before = alert.level();
    if let Some(change) = alert.evaluate(
        usage,
        limit,
        ts,
        &thresholds,
        rules.hysteresis_bp,
        rules.for_ms,
    ) {
        let started = alert.started_ms();
        let peak = level_severity(alert.peak());
        let (status, level, notify) = match change {
            Change::Fired(l) | Change::Escalated(l) => (Status::Firing, l, true),
            Change::Lowered(l) => (Status::Firing, l, false),
            Change::Resolved => (Status::Resolved, before, true),
        };
        let previous = matches!(change, Change::Escalated(_) | Change::Lowered(_))
            .then(|| level_severity(before));
        out.push(Transition {
            dimension: Some(dim),
            status,
            notify,
            starts_at_ms: started,
            usage: Some(usage),
            limit: Some(limit),
            threshold_bp: Some(thresholds[level as usize - 1]),
            previous_severity: previous,
            peak,
            model: model.cloned(),
            ..Transition::firing(org, ts, AlertName::UsageHigh, level_severity(level))
        });
    }
    if let Some(q) = quota
        && let Some(change) = q.evaluate(
            usage,
            limit,
            ts,
            &QUOTA_THRESHOLDS_BP,
            rules.hysteresis_bp,
            rules.for_ms,
        )
    {
        let status = match change {
            Change::Resolved => Status::Resolved,
            _ => Status::Firing,
        };
        out.push(Transition {
            status,
            starts_at_ms: q.started_ms(),
            usage: Some(usage),
            limit: Some(limit),
            threshold_bp: Some(10_000),
            model: model.cloned(),
            ..Transition::firing(org, ts, AlertName::DailyQuotaExhausted, Severity::Critical)
        });
    }
}

/// The usage level alerts of one scope (dimensions in [`Dimension::ALL`] order) and its
/// daily quota alert, for listing those firing.
struct Levels<'a> {
    usage: &'a [LevelAlert],
    quota: &'a LevelAlert,
}

impl Levels<'_> {
    /// Those firing at `now`, as transitions dated `now`, of `model`'s scope (or the org's).
    fn active(
        &self,
        org: &Arc<str>,
        model: Option<&Arc<str>>,
        at: &Now<'_>,
        now: i64,
        rules: &LevelRules,
        out: &mut Vec<Transition>,
    ) {
        for (dim, alert) in Dimension::ALL.into_iter().zip(self.usage) {
            let level = alert.level();
            if level > 0 {
                out.push(Transition {
                    dimension: Some(dim),
                    starts_at_ms: alert.started_ms(),
                    usage: Some((at.usage)(dim)),
                    limit: Some((at.limit)(dim)),
                    threshold_bp: Some(rules.thresholds_bp[level as usize - 1]),
                    peak: level_severity(alert.peak()),
                    model: model.cloned(),
                    ..Transition::firing(org, now, AlertName::UsageHigh, level_severity(level))
                });
            }
        }
        if self.quota.level() > 0 {
            out.push(Transition {
                starts_at_ms: self.quota.started_ms(),
                usage: Some((at.usage)(Dimension::Daily)),
                limit: Some((at.limit)(Dimension::Daily)),
                threshold_bp: Some(10_000),
                model: model.cloned(),
                ..Transition::firing(org, now, AlertName::DailyQuotaExhausted, Severity::Critical)
            });
        }
    }
}

/// Usage alerts of a model scope, or of an org's dimensions past [`Dimension::LEGACY`]
/// (`UsageHigh` per dimension, `DailyQuotaExhausted`): stored in the snapshot's trailer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UsageAlerts {
    usage: [LevelAlert; Dimension::ALL.len()],
    quota: LevelAlert,
}

impl UsageAlerts {
    /// True while any is active or arming.
    pub fn any_active(&self) -> bool {
        self.quota.is_active() || self.usage.iter().any(LevelAlert::is_active)
    }

    /// `dim`'s usage at `ts` against its limit, for the scope `model` (`None`: the org's
    /// own dimensions past [`Dimension::LEGACY`]).
    #[allow(clippy::too_many_arguments)]
    pub fn usage(
        &mut self,
        org: &Arc<str>,
        model: Option<&Arc<str>>,
        dim: Dimension,
        usage: u64,
        limit: u64,
        ts: i64,
        rules: &LevelRules,
        out: &mut Vec<Transition>,
    ) {
        let at = Judged {
            org,
            model,
            dim,
            usage,
            limit,
            ts,
        };
        judge_level(&mut self.usage, &mut self.quota, &at, rules, out);
    }

    /// Resolves whatever is active at `ts` because its scope is gone (a limit source no
    /// longer lists it): each is judged at usage 0 against `limit` (the scope's last limits).
    pub fn resolve_all(
        &mut self,
        org: &Arc<str>,
        model: Option<&Arc<str>>,
        limit: &dyn Fn(Dimension) -> u64,
        ts: i64,
        rules: &LevelRules,
        out: &mut Vec<Transition>,
    ) {
        for dim in Dimension::ALL {
            let quota = dim == Dimension::Daily && self.quota.is_active();
            if self.usage[dim.index()].is_active() || quota {
                self.usage(org, model, dim, 0, limit(dim).max(1), ts, rules, out);
            }
        }
    }

    /// Those firing at `now`, as transitions dated `now`.
    pub fn active(
        &self,
        org: &Arc<str>,
        model: Option<&Arc<str>>,
        at: &Now<'_>,
        now: i64,
        rules: &LevelRules,
        out: &mut Vec<Transition>,
    ) {
        let levels = Levels {
            usage: &self.usage,
            quota: &self.quota,
        };
        levels.active(org, model, at, now, rules, out);
    }
}

/// How long no report may have differed before `LimitMismatch` resolves: reports that
/// alternate (two keys of one org on different tiers) keep one alert open instead of a
/// notification per response.
pub const MISMATCH_CLEAR_MS: i64 = 5 * 60_000;

/// `LimitMismatch` per configured dimension (SPEC §9): while the configured limit differs
/// from the one the upstream reports in its rate-limit headers. It fires at the first report
/// that differs and resolves once none has for [`MISMATCH_CLEAR_MS`] and they agree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mismatch {
    /// Per dimension while firing: since when, and when a report last differed (the
    /// dimensions stored before format 8; others have no configured counterpart upstream
    /// reports compare with).
    firing: [Option<(i64, i64)>; Dimension::LEGACY],
}

impl Mismatch {
    /// True while any dimension fires (the clock must judge it again to resolve it).
    pub fn any(&self) -> bool {
        self.firing.iter().any(Option::is_some)
    }

    /// `configured` (0 = none) against `reported` for `dim` at `ts`. Only a configured limit
    /// can be wrong: an unlimited dimension the upstream limits is not a mismatch.
    pub fn judge(
        &mut self,
        org: &Arc<str>,
        dim: Dimension,
        configured: u64,
        reported: Option<u64>,
        ts: i64,
        out: &mut Vec<Transition>,
    ) {
        let differs = configured > 0 && reported.is_some_and(|r| r != configured);
        let Some(slot) = self.firing.get_mut(dim.index()) else {
            return;
        };
        let (status, since) = match (*slot, differs) {
            (None, true) => {
                *slot = Some((ts, ts));
                (Status::Firing, ts)
            }
            (Some((since, last)), true) => {
                *slot = Some((since, ts.max(last)));
                return;
            }
            (Some((since, last)), false) if ts.saturating_sub(last) >= MISMATCH_CLEAR_MS => {
                *slot = None;
                (Status::Resolved, since)
            }
            _ => return,
        };
        out.push(Transition {
            dimension: Some(dim),
            status,
            starts_at_ms: since,
            usage: reported,
            limit: Some(configured),
            ..Transition::firing(org, ts, AlertName::LimitMismatch, Severity::Warning)
        });
    }

    /// The mismatches firing at `now`: `reported` gives the upstream's limit of a dimension,
    /// `configured` the config's.
    pub fn active(
        &self,
        org: &Arc<str>,
        now: i64,
        configured: &dyn Fn(Dimension) -> u64,
        reported: &dyn Fn(Dimension) -> Option<u64>,
        out: &mut Vec<Transition>,
    ) {
        for (dim, firing) in Dimension::ALL.into_iter().zip(self.firing) {
            if let Some((since, _)) = firing {
                out.push(Transition {
                    dimension: Some(dim),
                    starts_at_ms: since,
                    usage: reported(dim),
                    limit: Some(configured(dim)),
                    ..Transition::firing(org, now, AlertName::LimitMismatch, Severity::Warning)
                });
            }
        }
    }
}

/// Which alert a transition belongs to (the same as its fingerprint's inputs).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AlertKey {
    org: Arc<str>,
    alert: AlertName,
    /// The app, or for an alert of a model scope (which has no app) the model: stored in
    /// snapshots in this layout since before scopes existed.
    app: Option<Arc<str>>,
    dimension: Option<Dimension>,
}

impl AlertKey {
    /// The alert `t` belongs to.
    pub fn of(t: &Transition) -> AlertKey {
        AlertKey {
            org: t.org.clone(),
            alert: t.alert,
            app: t.app.clone().or_else(|| t.model.clone()),
            dimension: t.dimension,
        }
    }

    /// The org of the alert.
    pub fn org(&self) -> &Arc<str> {
        &self.org
    }
}

/// Reminders of alerts still firing (`repeat_interval`): when each was last notified.
#[derive(Debug, Clone, Default)]
pub struct Reminders {
    last: BTreeMap<AlertKey, i64>,
}

impl Reminders {
    /// As stored in a snapshot.
    pub fn from_map(last: BTreeMap<AlertKey, i64>) -> Reminders {
        Reminders { last }
    }

    /// As stored in a snapshot.
    pub fn as_map(&self) -> &BTreeMap<AlertKey, i64> {
        &self.last
    }

    /// Keeps the reminders in step with what was notified.
    pub fn note_notified(&mut self, transitions: &[Transition]) {
        for t in transitions.iter().filter(|t| t.notify) {
            match t.status {
                Status::Firing => {
                    self.last.insert(AlertKey::of(t), t.ts_ms);
                }
                Status::Resolved => {
                    self.last.remove(&AlertKey::of(t));
                }
            }
        }
    }

    /// Reminders due at `now` every `every_ms`: each due alert still firing (as `firing_now`
    /// finds it among its org's active alerts) is repeated; one no longer firing is
    /// forgotten. True if any alert was due.
    pub fn remind(
        &mut self,
        now: i64,
        every_ms: i64,
        firing_now: impl Fn(&AlertKey) -> Vec<Transition>,
        out: &mut Vec<Transition>,
    ) -> bool {
        if every_ms <= 0 {
            return false;
        }
        let due: Vec<AlertKey> = self
            .last
            .iter()
            .filter(|(_, last)| now - **last >= every_ms)
            .map(|(k, _)| k.clone())
            .collect();
        let any = !due.is_empty();
        for key in due {
            let current = firing_now(&key)
                .into_iter()
                .find(|t| AlertKey::of(t) == key);
            match current {
                Some(t) => {
                    self.last.insert(key, now);
                    out.push(Transition { repeat: true, ..t });
                }
                None => {
                    self.last.remove(&key);
                }
            }
        }
        any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text, "test.toml").unwrap_or_else(|e| panic!("{e}"))
    }

    /// The fields as they were before the levels were boxed: the snapshot layout.
    #[derive(Serialize)]
    struct Unboxed {
        burst_since: i64,
        burst_until: i64,
        usage: [LevelAlert; Dimension::LEGACY],
        quota: LevelAlert,
        stuck_since: Option<i64>,
    }

    #[test]
    fn levels_are_boxed_only_once_they_could_change_and_stored_as_before() {
        let name: Arc<str> = "acme".into();
        let rules = AlertRules::from_config(&config("")).default;
        let mut alerts = OrgAlerts::default();
        let mut out = Vec::new();
        // Below every threshold (69 % of the minute, 99 % of the day... of no daily limit).
        alerts.usage(&name, Dimension::Rpm, 69, 100, 1_000, &rules, &mut out);
        alerts.usage(&name, Dimension::Daily, 99, 0, 1_000, &rules, &mut out);
        assert!(alerts.levels.is_none() && out.is_empty());
        let idle = Unboxed {
            burst_since: 0,
            burst_until: i64::MIN,
            usage: [LevelAlert::default(); Dimension::LEGACY],
            quota: LevelAlert::default(),
            stuck_since: None,
        };
        let bytes = postcard::to_stdvec(&alerts).unwrap();
        assert_eq!(bytes, postcard::to_stdvec(&idle).unwrap());
        let back: OrgAlerts = postcard::from_bytes(&bytes).unwrap();
        assert!(back.levels.is_none(), "read back unboxed");
        // At a threshold: boxed, fired, and stored as the unboxed fields would be.
        alerts.usage(&name, Dimension::Rpm, 70, 100, 2_000, &rules, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        let levels = *alerts.levels.as_deref().unwrap();
        let fired = Unboxed {
            usage: levels.usage,
            quota: levels.quota,
            ..idle
        };
        let bytes = postcard::to_stdvec(&alerts).unwrap();
        assert_eq!(bytes, postcard::to_stdvec(&fired).unwrap());
        let back: OrgAlerts = postcard::from_bytes(&bytes).unwrap();
        assert!(back.any_active());
        // The daily quota alone (at 100 %) boxes them too.
        let mut quota = OrgAlerts::default();
        quota.usage(&name, Dimension::Daily, 10, 10, 1_000, &rules, &mut out);
        assert!(quota.levels.is_some() && quota.any_active());
    }

    #[test]
    fn an_org_with_its_own_thresholds_fires_at_them() {
        let c = config(
            "[tiers.t]\nrpm = 100\n[[orgs]]\nid = \"early\"\ntier = \"t\"\nthresholds = [0.6, 0.85]\n\
             [[orgs]]\nid = \"usual\"\ntier = \"t\"\n",
        );
        let rules = AlertRules::from_config(&c);
        assert_eq!(rules.for_org("early").thresholds_bp, [6_000, 8_500]);
        assert_eq!(rules.for_org("usual").thresholds_bp, [7_000, 9_000]);
        assert_eq!(rules.for_org("unknown").thresholds_bp, [7_000, 9_000]);
        let mut fired = Vec::new();
        for org in ["early", "usual"] {
            let name: Arc<str> = org.into();
            let mut alerts = OrgAlerts::default();
            let mut out = Vec::new();
            alerts.usage(
                &name,
                Dimension::Rpm,
                60,
                100,
                1_000,
                rules.for_org(org),
                &mut out,
            );
            fired.extend(out);
        }
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert_eq!(&*fired[0].org, "early");
        assert_eq!(fired[0].severity, Severity::Warning);
        assert_eq!(fired[0].threshold_bp, Some(6_000));
    }

    #[test]
    fn own_thresholds_are_checked_like_the_global_ones() {
        for (bad, says) in [
            ("[0.9, 0.5]", "0 < warning < critical"),
            ("[0.6]", "two ratios"),
            ("[0.04, 0.5]", "above [alerts] hysteresis"),
        ] {
            let text = format!(
                "[tiers.t]\nrpm = 100\n[[orgs]]\nid = \"a\"\ntier = \"t\"\nthresholds = {bad}\n"
            );
            let e = Config::parse(&text, "test.toml").unwrap_err().to_string();
            assert!(
                e.contains(says) && e.starts_with("test.toml:6:"),
                "{bad}: {e}"
            );
        }
    }
    proptest::proptest! {
        /// Judging through the quiet bands gives the transitions, and leaves the alerts, of
        /// the full judgement, for any path of usage, limits, rules and times (late ones
        /// too) over every dimension.
        #[test]
        fn quiet_bands_answer_as_the_full_judgement(
            steps in proptest::collection::vec(
                (0..Dimension::LEGACY, 0u64..130, 0usize..3, 0usize..2, 0i64..300),
                0..300,
            ),
            for_ms in proptest::sample::select(vec![0i64, 1_000]),
        ) {
            let name: Arc<str> = "acme".into();
            let limits = [0u64, 10, 100];
            let rules = [
                LevelRules { thresholds_bp: [7000, 9000], hysteresis_bp: 500, for_ms },
                LevelRules { thresholds_bp: [9500, 8000], hysteresis_bp: 0, for_ms: 2 * for_ms },
            ];
            let mut fast = OrgAlerts::default();
            let (mut usage, mut quota) = ([LevelAlert::IDLE; Dimension::LEGACY], LevelAlert::IDLE);
            let mut ts = 0;
            for (d, u, l, r, dt) in steps {
                ts += dt * 10 - 500;
                let dim = Dimension::ALL[d];
                let (mut a, mut b) = (Vec::new(), Vec::new());
                fast.usage(&name, dim, u, limits[l], ts, &rules[r], &mut a);
                let at = Judged { org: &name, model: None, dim, usage: u, limit: limits[l], ts };
                judge_level(&mut usage, &mut quota, &at, &rules[r], &mut b);
                proptest::prop_assert_eq!(a, b);
                let held = fast.levels();
                proptest::prop_assert_eq!(
                    format!("{:?} {:?}", held.usage, held.quota),
                    format!("{usage:?} {quota:?}")
                );
            }
        }
    }
}
