//! Counting beyond an org's own five windows: the dimensions providers added (images, input
//! and output tokens per minute, the batch queue) and the windows of each model scope
//! (`[[orgs.models]]`). Allocated only for an org whose limits or scopes need it (or that
//! met a 429 of a cause its apps have no counter for); stored in the snapshot's trailer
//! (format 8). It measures; the alerts are judged by [`crate::detect::alerts`].

use std::sync::Arc;

use crate::detect::Cause;
use crate::detect::alerts::UsageAlerts;
use crate::events::Event;
use crate::model::{DailyWindow, Dimension, Limits, ModelScope, scope_for};

use super::settings::*;
use super::window::Window;

/// Batches one queue holds at most; past it the oldest stops counting (its finishing event
/// is then never waited for).
const MAX_BATCHES: usize = 10_000;

/// How long a batch counts without its finishing event: OpenAI's batches complete or expire
/// within their 24 h completion window, so one still held after 25 h lost its end.
pub(super) const BATCH_EXPIRY_MS: i64 = 25 * 3_600_000;

/// Input tokens of batches enqueued and not yet finished (`batch_queue_tokens`).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct BatchQueue {
    /// Batch (job) id, when it was enqueued, its input tokens; oldest first.
    held: Vec<(Box<str>, i64, u64)>,
    tokens: u64,
}

impl BatchQueue {
    fn enqueue(&mut self, id: &str, ts: i64, tokens: u64) {
        if self.held.iter().any(|(j, ..)| **j == *id) {
            return;
        }
        if self.held.len() >= MAX_BATCHES {
            let (_, _, t) = self.held.remove(0);
            self.tokens = self.tokens.saturating_sub(t);
        }
        let at = self.held.partition_point(|&(_, t, _)| t <= ts);
        self.held.insert(at, (id.into(), ts, tokens));
        self.tokens = self.tokens.saturating_add(tokens);
    }

    /// True when batch `id` was held.
    fn finish(&mut self, id: &str) -> bool {
        let Some(i) = self.held.iter().position(|(j, ..)| **j == *id) else {
            return false;
        };
        let (_, _, t) = self.held.remove(i);
        self.tokens = self.tokens.saturating_sub(t);
        true
    }

    fn expire(&mut self, now: i64) {
        let gone = self
            .held
            .partition_point(|&(_, t, _)| t.saturating_add(BATCH_EXPIRY_MS) <= now);
        for (_, _, t) in self.held.drain(..gone) {
            self.tokens = self.tokens.saturating_sub(t);
        }
    }
}

/// The windows of one limit scope. An org's own meter uses only the dimensions past
/// [`Dimension::LEGACY`] (its requests and tokens are in its own windows); a model scope's
/// uses them all but concurrency. A window allocates nothing until it counts.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct Meter {
    rpm: Window<u32>,
    daily: Window<u32>,
    tpm: Window<u64>,
    tpd: Window<u64>,
    ipm: Window<u64>,
    itpm: Window<u64>,
    otpm: Window<u64>,
    batches: BatchQueue,
}

impl Default for Meter {
    fn default() -> Self {
        Meter {
            rpm: Window::new(RPM_WIDTH, RPM_SLACK),
            daily: Window::new(DAILY_WIDTH, DAILY_SLACK),
            tpm: Window::new(RPM_WIDTH, RPM_SLACK),
            tpd: Window::new(DAILY_WIDTH, DAILY_SLACK),
            ipm: Window::new(RPM_WIDTH, RPM_SLACK),
            itpm: Window::new(RPM_WIDTH, RPM_SLACK),
            otpm: Window::new(RPM_WIDTH, RPM_SLACK),
            batches: BatchQueue::default(),
        }
    }
}

impl Meter {
    /// Counts request `ev` at `ts`; `all` also counts its requests and tokens (a model
    /// scope's meter). A 2xx `batch` request with a job id enqueues its input tokens.
    fn count(&mut self, ts: i64, ev: &Event<'_>, all: bool) {
        let (s, m) = (sec(ts), minute(ts));
        if all {
            self.rpm.add(s, 1);
            self.daily.add(m, 1);
        }
        // A batch's tokens are the batch queue's, not the minute's.
        if !ev.batch {
            if let (true, Some(n)) = (all, ev.tokens) {
                self.tpm.add(s, n);
                self.tpd.add(m, n);
            }
            if let Some(n) = ev.images {
                self.ipm.add(s, n);
            }
            if let Some(n) = ev.input_tokens {
                self.itpm.add(s, n);
            }
            if let Some(n) = ev.output_tokens {
                self.otpm.add(s, n);
            }
        }
        if ev.batch
            && matches!(ev.status, Some(200..=299))
            && let Some(id) = &ev.job_id
        {
            let tokens = ev.input_tokens.or(ev.tokens).unwrap_or(0);
            self.batches.enqueue(id, ts, tokens);
        }
    }

    /// True until it counted a request (or holds a batch).
    pub(super) fn is_empty(&self) -> bool {
        self.daily.head().is_none() && self.batches.held.is_empty()
    }

    /// `dim`'s usage at `ts` (`window`: how the scope's daily limit counts).
    pub(super) fn usage_at(&self, dim: Dimension, ts: i64, window: DailyWindow) -> u64 {
        let (s, m) = (sec(ts), minute(ts));
        match dim {
            Dimension::Rpm => self.rpm.count_at(s),
            Dimension::Daily => daily_count(&self.daily, window, ts),
            Dimension::Concurrency => 0,
            Dimension::Tpm => self.tpm.count_at(s),
            Dimension::Tpd => self.tpd.count_at(m),
            Dimension::Ipm => self.ipm.count_at(s),
            Dimension::Itpm => self.itpm.count_at(s),
            Dimension::Otpm => self.otpm.count_at(s),
            Dimension::BatchQueueTokens => self.batches.tokens,
        }
    }

    /// Seconds until one more unit fits in `dim` at `now` under `limits`: `None` for an
    /// unlimited dimension, `Some(None)` when it waits on a batch finishing.
    pub(super) fn headroom_seconds(
        &self,
        dim: Dimension,
        limits: &Limits,
        now: i64,
    ) -> Option<Option<u64>> {
        let limit = dim.limit(limits);
        if limit == 0 {
            return None;
        }
        let (s, m) = (sec(now), minute(now));
        let frees_at_ms = match dim {
            Dimension::Concurrency => return None,
            Dimension::BatchQueueTokens => {
                return Some((self.batches.tokens < limit).then_some(0));
            }
            Dimension::Rpm => self.rpm.frees_at(s, limit) * 1_000,
            Dimension::Daily => daily_frees_at(&self.daily, limits.daily_window, limit, now),
            Dimension::Tpm => self.tpm.frees_at(s, limit) * 1_000,
            Dimension::Tpd => self.tpd.frees_at(m, limit) * 60_000,
            Dimension::Ipm => self.ipm.frees_at(s, limit) * 1_000,
            Dimension::Itpm => self.itpm.frees_at(s, limit) * 1_000,
            Dimension::Otpm => self.otpm.frees_at(s, limit) * 1_000,
        };
        Some(Some(((frees_at_ms - now).max(0) as u64).div_ceil(1_000)))
    }
}

/// One model scope of an org: what the config says of it and what it counted.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct Scope {
    /// The `model` label, by which a restore finds it in the config.
    pub(super) name: Arc<str>,
    /// Its ids and limits (from the config in use, never stored).
    #[serde(skip)]
    pub(super) config: Option<Arc<ModelScope>>,
    pub(super) meter: Meter,
    pub(super) alerts: UsageAlerts,
}

impl Scope {
    /// The scope's limits (none until the config gives them).
    pub(super) fn limits(&self) -> Limits {
        self.config
            .as_ref()
            .map_or_else(Limits::default, |c| c.limits)
    }
}

/// 429s of one app counted here: of a model scope's full window, or of a cause past
/// [`Cause::LEGACY`] (which an app's own counters do not hold).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct ScopedCauses {
    /// The app's index in the org.
    pub(super) app: u32,
    /// The scope's index + 1, or 0 for the org's own windows.
    pub(super) scope: u16,
    pub(super) counts: [u64; Cause::ALL.len()],
}

/// What an org counts beyond its own five windows.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Extended {
    /// The org's own windows of the dimensions past [`Dimension::LEGACY`].
    pub(super) own: Meter,
    /// The org's alerts of those dimensions.
    pub(super) own_alerts: UsageAlerts,
    /// Its model scopes, in config order.
    pub(super) scopes: Vec<Scope>,
    pub(super) rate_limited: Vec<ScopedCauses>,
}

impl Extended {
    /// The index of the scope `model` belongs to.
    pub(super) fn scope_of(&self, model: Option<&str>) -> Option<usize> {
        let configs = self.scopes.iter().map(|s| s.config.as_deref());
        scope_for(configs, model?).map(|(i, _)| i)
    }

    /// Keeps at least `span` minutes in each model scope's daily window (a calendar day's).
    pub(super) fn hold_daily(&mut self, span: usize) {
        for s in &mut self.scopes {
            s.meter.daily.hold_at_least(span);
        }
    }

    /// Counts request `ev` at `ts` in the org's own meter and in scope `scope`'s.
    pub(super) fn count(&mut self, ts: i64, ev: &Event<'_>, scope: Option<usize>) {
        self.own.count(ts, ev, false);
        if let Some(s) = scope.and_then(|i| self.scopes.get_mut(i)) {
            s.meter.count(ts, ev, true);
        }
    }

    /// A batch's finishing event: it leaves every queue it was in. False when none held it
    /// (it is no batch, or its enqueuing request is still to come).
    pub(super) fn finish_batch(&mut self, id: &str) -> bool {
        let mut held = self.own.batches.finish(id);
        for s in &mut self.scopes {
            held |= s.meter.batches.finish(id);
        }
        held
    }

    /// Batches past [`BATCH_EXPIRY_MS`] stop counting.
    pub(super) fn expire(&mut self, now: i64) {
        self.own.batches.expire(now);
        for s in &mut self.scopes {
            s.meter.batches.expire(now);
        }
    }

    /// Notes a 429 of app `app` explained by `cause`, in scope `scope` (or the org's own).
    pub(super) fn note_429(&mut self, app: usize, scope: Option<usize>, cause: Cause) {
        let (app, scope) = (app as u32, scope.map_or(0, |i| i as u16 + 1));
        let i = match self
            .rate_limited
            .iter()
            .position(|c| c.app == app && c.scope == scope)
        {
            Some(i) => i,
            None => {
                self.rate_limited.push(ScopedCauses {
                    app,
                    scope,
                    counts: [0; Cause::ALL.len()],
                });
                self.rate_limited.len() - 1
            }
        };
        self.rate_limited[i].counts[cause.index()] += 1;
    }

    /// Sets the scopes the config gives (`scopes`): counts of a scope that keeps its name
    /// stay; a scope no longer given is dropped with its 429 counts and returned (its firing
    /// alerts are the caller's to resolve).
    pub(super) fn set_scopes(&mut self, scopes: &[Arc<ModelScope>]) -> Vec<Scope> {
        let mut old: Vec<Option<Scope>> = std::mem::take(&mut self.scopes)
            .into_iter()
            .map(Some)
            .collect();
        let mut moved: Vec<Option<u16>> = vec![None; old.len()];
        for (i, config) in scopes.iter().enumerate() {
            let kept = old
                .iter()
                .position(|s| s.as_ref().is_some_and(|s| s.name == config.name));
            let mut scope = match kept {
                Some(j) => {
                    moved[j] = Some(i as u16 + 1);
                    old[j].take()
                }
                None => None,
            }
            .unwrap_or_else(|| Scope {
                name: config.name.clone(),
                config: None,
                meter: Meter::default(),
                alerts: UsageAlerts::default(),
            });
            scope.config = Some(config.clone());
            self.scopes.push(scope);
        }
        self.rate_limited.retain_mut(|c| {
            if c.scope == 0 {
                return true;
            }
            match moved.get(usize::from(c.scope) - 1).copied().flatten() {
                Some(to) => {
                    c.scope = to;
                    true
                }
                None => false,
            }
        });
        old.into_iter().flatten().collect()
    }

    /// True while an alert of the extension is active or arming, or a batch is held.
    pub(super) fn needs_tick(&self) -> bool {
        self.own_alerts.any_active()
            || !self.own.batches.held.is_empty()
            || self
                .scopes
                .iter()
                .any(|s| s.alerts.any_active() || !s.meter.batches.held.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_hold_until_finished_or_expired() {
        let mut q = BatchQueue::default();
        q.enqueue("b1", 1_000, 500);
        q.enqueue("b2", 2_000, 300);
        q.enqueue("b1", 3_000, 999);
        assert_eq!(q.tokens, 800, "a batch enqueued twice counts once");
        q.finish("b1");
        assert_eq!(q.tokens, 300);
        q.finish("unknown");
        assert_eq!(q.tokens, 300);
        q.expire(2_000 + BATCH_EXPIRY_MS - 1);
        assert_eq!(q.tokens, 300);
        q.expire(2_000 + BATCH_EXPIRY_MS);
        assert_eq!((q.tokens, q.held.len()), (0, 0));
    }
}
