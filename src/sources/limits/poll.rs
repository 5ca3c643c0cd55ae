//! Polling: [`fetch`] reads one source, a [`Poller`] keeps one source's last good limits and
//! health, and [`run`] drives every source on its schedule until shutdown.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::source::{FetchError, Source};
use super::{anthropic, openai};
use crate::clock::Clock;
use crate::config::{LimitScope, LimitSourceKind};
use crate::detect::Transition;
use crate::detect::source::SourceHealth;
use crate::metrics::LimitSourceMetrics;
use crate::model::{ScopeLimits, SourcedLimits};

/// Reads every page of `source` into its limits, or why not.
pub async fn fetch(source: &Source, client: &reqwest::Client) -> Result<SourcedLimits, FetchError> {
    let scopes = match (&source.config.kind, &source.config.scope) {
        (LimitSourceKind::Openai, LimitScope::Project(p)) => {
            openai::fetch(client, source, p).await?
        }
        (LimitSourceKind::Anthropic, _) => anthropic::fetch(client, source).await?,
        (LimitSourceKind::Openai, _) => {
            return Err(FetchError::Url(
                "an openai source needs a project_id".into(),
            ));
        }
    };
    Ok(SourcedLimits {
        source: source.config.kind.source_name().to_string(),
        org: source.config.org.clone(),
        scopes: valid_models(scopes),
    })
}

/// `scopes` with only the model ids that are names (1–128 printable characters, as a config
/// `match` holds): an id the provider sends that is not one (empty, a control character such
/// as a newline that would forge log lines, kilobytes long) is dropped, and a scope left
/// with none with it; how many is logged once per poll.
fn valid_models(mut scopes: Vec<ScopeLimits>) -> Vec<ScopeLimits> {
    let mut dropped = 0;
    for s in &mut scopes {
        let before = s.models.len();
        s.models.retain(|m| crate::model::valid_name(m));
        dropped += before - s.models.len();
    }
    scopes.retain(|s| !s.models.is_empty());
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "model ids from the limit source that are not 1-128 printable characters were ignored"
        );
    }
    scopes
}

/// One change of a limit value between two good polls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The scope's models, comma-separated.
    pub scope: String,
    /// The dimension (`rpm`, `itpm`, …).
    pub dimension: &'static str,
    /// Before (`None`: no value, or no such scope).
    pub old: Option<u64>,
    /// Now.
    pub new: Option<u64>,
}

/// What changed from `old` to `new`, scope by scope (a scope is known by its models).
pub fn changes(old: &[ScopeLimits], new: &[ScopeLimits]) -> Vec<Change> {
    let by_scope = |scopes: &[ScopeLimits]| -> BTreeMap<String, [(&'static str, Option<u64>); 7]> {
        scopes
            .iter()
            .map(|s| (s.models.join(","), s.values()))
            .collect()
    };
    let (old, new) = (by_scope(old), by_scope(new));
    let none = ScopeLimits::default().values();
    let mut out = Vec::new();
    for scope in old
        .keys()
        .chain(new.keys().filter(|k| !old.contains_key(*k)))
    {
        let a = old.get(scope).unwrap_or(&none);
        let b = new.get(scope).unwrap_or(&none);
        for ((dimension, o), (_, n)) in a.iter().zip(b) {
            if o != n {
                out.push(Change {
                    scope: scope.clone(),
                    dimension,
                    old: *o,
                    new: *n,
                });
            }
        }
    }
    out
}

/// One source's state between polls: the last good limits (kept through failed polls), its
/// health for `LimitSourceFailing`, and its metrics.
#[derive(Debug)]
pub struct Poller {
    source: Source,
    last: Option<SourcedLimits>,
    health: SourceHealth,
    metrics: LimitSourceMetrics,
}

impl Poller {
    /// Watches `source` from `now_ms`.
    pub fn new(source: Source, metrics: LimitSourceMetrics, now_ms: i64) -> Poller {
        let name = source.config.kind.source_name();
        metrics.declare(name, &source.config.org);
        Poller {
            health: SourceHealth::new(&source.config.org, name, now_ms),
            source,
            last: None,
            metrics,
        }
    }

    /// The last good limits, if a poll ever succeeded.
    pub fn last_good(&self) -> Option<&SourcedLimits> {
        self.last.as_ref()
    }

    /// The source.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Polls once; `now` is asked when the answer is in. Returns the limits on success (to
    /// put in force) and the `LimitSourceFailing` resolve a success may bring. A failure is
    /// logged and counted and changes nothing else.
    pub async fn poll(
        &mut self,
        client: &reqwest::Client,
        now: impl Fn() -> i64,
    ) -> (Option<SourcedLimits>, Option<Transition>) {
        let result = fetch(&self.source, client).await;
        self.take(result, now())
    }

    /// Takes the result of a poll (of [`fetch`] on [`Poller::source`]) that ended at `now_ms`:
    /// see [`Poller::poll`].
    pub fn take(
        &mut self,
        result: Result<SourcedLimits, FetchError>,
        now_ms: i64,
    ) -> (Option<SourcedLimits>, Option<Transition>) {
        let (name, org) = (
            self.source.config.kind.source_name(),
            &self.source.config.org,
        );
        match result {
            Err(e) => {
                self.metrics.poll(name, org, false, now_ms);
                tracing::warn!(source = name, org = %org, error = %e,
                    "limit source poll failed; the last good limits stay in force");
                (None, None)
            }
            Ok(limits) => {
                self.metrics.poll(name, org, true, now_ms);
                match &self.last {
                    None => tracing::info!(source = name, org = %org, scopes = limits.scopes.len(),
                        "limits imported from the limit source"),
                    Some(last) => {
                        let changed = changes(&last.scopes, &limits.scopes);
                        for c in &changed {
                            tracing::info!(source = name, org = %org, model = %c.scope,
                                dimension = c.dimension, old = ?c.old, new = ?c.new,
                                "limit changed at the source");
                        }
                        self.metrics.changes(name, org, changed.len() as u64);
                    }
                }
                self.last = Some(limits.clone());
                (Some(limits), self.health.success(now_ms))
            }
        }
    }

    /// Judges the source's health at `now_ms`: `LimitSourceFailing` once no poll succeeded
    /// for `failing_after`.
    pub fn judge(&mut self, now_ms: i64) -> Option<Transition> {
        self.health
            .judge(now_ms, self.source.config.failing_after_ms)
    }

    /// When [`Poller::judge`] would fire next (clock ms), while it does not fire.
    pub fn fires_at(&self) -> Option<i64> {
        self.health.fires_at(self.source.config.failing_after_ms)
    }
}

/// Polls every source at start and every `interval` until `shutdown` completes: each
/// success goes to `on_limits` (which puts them in force), each `LimitSourceFailing`
/// transition to `on_alert` (which routes it to the channels). Each source has its own task,
/// so a hanging one delays no other; all are stopped and joined before this returns.
pub async fn run<L, A>(
    sources: Vec<Source>,
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
    metrics: LimitSourceMetrics,
    on_limits: L,
    on_alert: A,
    shutdown: impl Future<Output = ()>,
) where
    L: Fn(SourcedLimits) + Send + Sync + 'static,
    A: Fn(Transition) + Send + Sync + 'static,
{
    let on_limits = Arc::new(on_limits);
    let on_alert = Arc::new(on_alert);
    let mut tasks = tokio::task::JoinSet::new();
    for source in sources {
        let poller = Poller::new(source, metrics.clone(), clock.now_ms());
        tasks.spawn(poll_forever(
            poller,
            client.clone(),
            clock.clone(),
            on_limits.clone(),
            on_alert.clone(),
        ));
    }
    tokio::select! {
        () = shutdown => {}
        // The loops never end; a panic in one ends the wait, and the others are stopped.
        _ = tasks.join_next(), if !tasks.is_empty() => {}
    }
    tasks.shutdown().await;
}

async fn poll_forever<L, A>(
    mut poller: Poller,
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
    on_limits: Arc<L>,
    on_alert: Arc<A>,
) where
    L: Fn(SourcedLimits) + Send + Sync + 'static,
    A: Fn(Transition) + Send + Sync + 'static,
{
    let interval = Duration::from_millis(poller.source().config.interval_ms.max(1) as u64);
    loop {
        let next_poll = tokio::time::Instant::now() + interval;
        // A poll may take long (a slow admin API, many pages): the health is judged while it
        // runs, so `LimitSourceFailing` fires on time however long the poll takes.
        let source = poller.source().clone();
        let fetching = fetch(&source, &client);
        tokio::pin!(fetching);
        let result = loop {
            let wake = poller.fires_at().map_or(Duration::from_secs(3600), |at| {
                Duration::from_millis(at.saturating_sub(clock.now_ms()).max(1) as u64)
            });
            tokio::select! {
                r = &mut fetching => break r,
                () = tokio::time::sleep(wake) => {
                    if let Some(t) = poller.judge(clock.now_ms()) {
                        on_alert(t);
                    }
                }
            }
        };
        let (limits, resolved) = poller.take(result, clock.now_ms());
        if let Some(l) = limits {
            on_limits(l);
        }
        if let Some(t) = resolved {
            on_alert(t);
        }
        // Until the next poll, wake to judge the health when it could fire.
        loop {
            let now_ms = clock.now_ms();
            if let Some(t) = poller.judge(now_ms) {
                on_alert(t);
            }
            let wake = match poller.fires_at() {
                Some(at) => {
                    let wait = Duration::from_millis(at.saturating_sub(now_ms).max(1) as u64);
                    next_poll.min(tokio::time::Instant::now() + wait)
                }
                None => next_poll,
            };
            if tokio::time::Instant::now() >= next_poll {
                break;
            }
            tokio::time::sleep_until(wake).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(models: &[&str], rpm: Option<u64>, itpm: Option<u64>) -> ScopeLimits {
        ScopeLimits {
            models: models.iter().map(|m| m.to_string()).collect(),
            rpm,
            itpm,
            ..ScopeLimits::default()
        }
    }

    #[test]
    fn changes_name_scope_dimension_and_values() {
        let old = [
            scope(&["a"], Some(10), None),
            scope(&["gone"], Some(1), None),
        ];
        let new = [
            scope(&["a"], Some(20), Some(5)),
            scope(&["new"], None, Some(7)),
        ];
        let c = changes(&old, &new);
        let shown: Vec<String> = c
            .iter()
            .map(|c| format!("{} {} {:?}->{:?}", c.scope, c.dimension, c.old, c.new))
            .collect();
        assert_eq!(
            shown,
            [
                "a rpm Some(10)->Some(20)",
                "a itpm None->Some(5)",
                "gone rpm Some(1)->None",
                "new itpm None->Some(7)",
            ]
        );
        assert!(changes(&new, &new).is_empty());
    }
}
