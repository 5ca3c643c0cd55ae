//! How an org judges and reports what [`super::scope`] counts: the dimensions past its
//! first five and its model scopes (their usage alerts, the windows a 429 is explained by,
//! and their part of a snapshot).

use super::Org;
use super::report::ScopeSnapshot;

use super::scope::Meter;
use super::settings::{Settings, in_window};
use crate::detect::alerts::{Now, UsageAlerts};
use crate::detect::{Cause, Other, Transition};
use crate::model::{Dimension, Limits};

/// The dimensions a model scope counts: all but concurrency, which is the org's.
fn scope_dims() -> impl Iterator<Item = Dimension> + Clone {
    Dimension::ALL
        .into_iter()
        .filter(|&d| d != Dimension::Concurrency)
}

impl Org {
    /// Windows a 429 at `ts` may be explained by beyond the org's requests, daily and
    /// concurrency: its token and image windows (for a `batch` submission, its batch queue
    /// instead), then those of model scope `scope`.
    pub(super) fn other_windows(&self, ts: i64, scope: Option<usize>, batch: bool) -> Vec<Other> {
        let mut out = Vec::new();
        let own: &[Dimension] = if batch {
            &[Dimension::BatchQueueTokens]
        } else {
            &[
                Dimension::Tpm,
                Dimension::Tpd,
                Dimension::Ipm,
                Dimension::Itpm,
                Dimension::Otpm,
            ]
        };
        for &dim in own {
            let limit = dim.limit(&self.limits);
            if limit > 0 {
                out.push((
                    Cause::of_dimension(dim),
                    self.usage_at(dim, ts),
                    limit,
                    false,
                ));
            }
        }
        if let Some(s) = scope.and_then(|i| self.extended.as_ref()?.scopes.get(i)) {
            let limits = s.limits();
            for dim in scope_dims() {
                let limit = dim.limit(&limits);
                // A batch is refused for its queue, a call for its windows.
                let asked = (dim == Dimension::BatchQueueTokens) == batch
                    || matches!(dim, Dimension::Rpm | Dimension::Daily);
                if asked && limit > 0 {
                    let usage = s.meter.usage_at(dim, ts, limits.daily_window);
                    out.push((Cause::of_dimension(dim), usage, limit, true));
                }
            }
        }
        out
    }

    /// Judges the org's dimensions past the first five and its scopes' at `present`: after
    /// a request at `ts` in scope `scope` (`Some`), only the windows it fell in; on the
    /// clock (`None`), every limited one.
    pub(super) fn judge_extended(
        &mut self,
        after: Option<(i64, Option<usize>)>,
        present: i64,
        s: &Settings,
        out: &mut Vec<Transition>,
    ) {
        let Some(x) = self.extended.as_deref_mut() else {
            return;
        };
        let rules = s.rules.for_org(&self.name);
        let window = self.limits.daily_window;
        let holds = |dim| after.is_none_or(|(ts, _)| in_window(dim, ts, present, window));
        for dim in &Dimension::ALL[Dimension::LEGACY..] {
            let limit = dim.limit(&self.limits);
            if limit > 0 && holds(*dim) {
                let usage = x.own.usage_at(*dim, present, window);
                x.own_alerts
                    .usage(&self.name, None, *dim, usage, limit, present, rules, out);
            }
        }
        let only = after.map(|(_, scope)| scope);
        for (i, scope) in x.scopes.iter_mut().enumerate() {
            if only.is_some_and(|o| o != Some(i)) {
                continue;
            }
            let limits = scope.limits();
            for dim in scope_dims() {
                let limit = dim.limit(&limits);
                let counted =
                    after.is_none_or(|(ts, _)| in_window(dim, ts, present, limits.daily_window));
                if limit > 0 && counted {
                    let usage = scope.meter.usage_at(dim, present, limits.daily_window);
                    scope.alerts.usage(
                        &self.name,
                        Some(&scope.name),
                        dim,
                        usage,
                        limit,
                        present,
                        rules,
                        out,
                    );
                }
            }
        }
    }

    /// The alerts of the extension firing at `now`.
    pub(super) fn extended_alerts(&self, now: i64, s: &Settings, out: &mut Vec<Transition>) {
        let Some(x) = self.extended.as_deref() else {
            return;
        };
        let rules = s.rules.for_org(&self.name);
        let firing = |meter: &Meter, alerts: &UsageAlerts, model, limits: &Limits, out: &mut _| {
            let usage = |dim: Dimension| meter.usage_at(dim, now, limits.daily_window);
            let limit = |dim: Dimension| dim.limit(limits);
            let at = Now {
                usage: &usage,
                limit: &limit,
                burst: None,
                stuck: 0,
                storms: Vec::new(),
            };
            alerts.active(&self.name, model, &at, now, rules, out);
        };
        firing(&x.own, &x.own_alerts, None, &self.limits, out);
        for scope in &x.scopes {
            firing(
                &scope.meter,
                &scope.alerts,
                Some(&scope.name),
                &scope.limits(),
                out,
            );
        }
    }

    /// Each model scope's usage, limits, headroom and 429s at `now` (`full`: with headroom,
    /// and the scopes a limit source set that never counted a request, which `/metrics`
    /// leaves out: a source lists every model a project may call).
    pub(super) fn scope_snapshots(&self, now: i64, full: bool) -> Vec<ScopeSnapshot> {
        let Some(x) = self.extended.as_deref() else {
            return Vec::new();
        };
        x.scopes
            .iter()
            .enumerate()
            .filter(|(_, scope)| {
                full || !scope.meter.is_empty()
                    || scope.config.as_ref().is_none_or(|c| c.source.is_none())
            })
            .map(|(i, scope)| {
                let limits = scope.limits();
                let dims =
                    scope_dims().filter(|d| d.limit(&limits) > 0 || d.index() < Dimension::LEGACY);
                let config = scope.config.as_deref();
                ScopeSnapshot {
                    source: config.and_then(|c| c.source.clone()),
                    sourced: config.map_or_else(Vec::new, |c| c.sourced.clone()),
                    model: scope.name.clone(),
                    models: config.map_or_else(Vec::new, |c| c.models.clone()),
                    usage: dims
                        .clone()
                        .map(|d| (d, scope.meter.usage_at(d, now, limits.daily_window)))
                        .collect(),
                    limits: scope_dims()
                        .map(|d| (d, d.limit(&limits)))
                        .filter(|(_, l)| *l > 0)
                        .collect(),
                    headroom_seconds: if full {
                        dims.filter_map(|d| {
                            scope
                                .meter
                                .headroom_seconds(d, &limits, now)
                                .map(|h| (d, h))
                        })
                        .collect()
                    } else {
                        Vec::new()
                    },
                    rate_limited: x
                        .rate_limited
                        .iter()
                        .filter(|c| usize::from(c.scope) == i + 1)
                        .filter_map(|c| {
                            let app = self.apps.get(c.app as usize)?;
                            Some((app.name.clone(), c.counts))
                        })
                        .collect(),
                }
            })
            .collect()
    }

    /// App `ai`'s 429s by cause, all of them: its own counters and those kept for causes
    /// past [`Cause::LEGACY`] (not those of a model scope).
    pub(super) fn app_causes(&self, ai: usize) -> [u64; Cause::ALL.len()] {
        let mut all = [0; Cause::ALL.len()];
        if let Some(app) = self.apps.get(ai) {
            all[..Cause::LEGACY].copy_from_slice(&(*app.rate_limited).0);
        }
        if let Some(x) = &self.extended {
            for c in x.rate_limited.iter().filter(|c| c.scope == 0) {
                if c.app as usize == ai {
                    add(&mut all, &c.counts);
                }
            }
        }
        all
    }

    /// Per model scope, the 429s its full windows explained over all apps.
    pub(super) fn scope_causes(&self) -> Vec<(std::sync::Arc<str>, [u64; Cause::ALL.len()])> {
        let Some(x) = self.extended.as_deref() else {
            return Vec::new();
        };
        x.scopes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut all = [0; Cause::ALL.len()];
                for c in x
                    .rate_limited
                    .iter()
                    .filter(|c| usize::from(c.scope) == i + 1)
                {
                    add(&mut all, &c.counts);
                }
                (s.name.clone(), all)
            })
            .collect()
    }

    /// The 429s every app of the org met, by cause, model scopes' included.
    pub(super) fn all_causes(&self) -> [u64; Cause::ALL.len()] {
        let mut all = [0; Cause::ALL.len()];
        for app in &self.apps {
            add(&mut all, &(*app.rate_limited).0);
        }
        if let Some(x) = &self.extended {
            for c in &x.rate_limited {
                add(&mut all, &c.counts);
            }
        }
        all
    }
}

/// Adds `counts` to the first causes of `all`.
fn add(all: &mut [u64; Cause::ALL.len()], counts: &[u64]) {
    for (a, n) in all.iter_mut().zip(counts) {
        *a += n;
    }
}
