//! Limits a limit source gives (`[[limit_sources]]`: a provider's admin API), laid over the
//! configured model scopes of the org they map to, and the `LimitSourceFailing` alerts firing
//! (kept for `/v1/alerts` and `alerts_firing`). Polling is [`crate::sources::limits`]'; the
//! alert's state machine is [`crate::detect::source`]'s.

use std::sync::Arc;

use super::Tracker;
use crate::detect::{Status, Transition};
use crate::model::{
    Dimension, Limits, ModelScope, ScopeLimits, SourcedLimits, scope_for, valid_name,
};

/// Scopes one source may add to an org beyond the configured ones: an OpenAI project lists
/// every model it may call, and each scope is a set of windows.
const MAX_SOURCED_SCOPES: usize = 512;

impl Tracker {
    /// Puts `sourced` in force for its org at `now`: each scope it lists replaces the limits
    /// it gives of the configured scope with one of its models (or is added as a scope of its
    /// own); a scope it added before and no longer lists is dropped, its firing alerts
    /// resolved into `out`. Returns false when nothing changed.
    pub fn set_sourced_limits(
        &mut self,
        sourced: &SourcedLimits,
        now: i64,
        out: &mut Vec<Transition>,
    ) -> bool {
        let org: Arc<str> = sourced.org.as_str().into();
        self.polled.insert(org.clone(), sourced.clone());
        let scopes = self.overlaid(&org, sourced);
        if self.sourced.get(&org) == Some(&scopes) {
            return false;
        }
        if let Some(&i) = self.index.get(&org) {
            self.ticking.mark(i);
            let o = &mut self.orgs[i];
            let rules = self.settings.rules.for_org(&o.name);
            for mut gone in o.set_scopes(&scopes) {
                let limits = gone.limits();
                let limit = |d: Dimension| d.limit(&limits);
                gone.alerts
                    .resolve_all(&o.name, Some(&gone.name), &limit, now, rules, out);
            }
        }
        self.sourced.insert(org, scopes);
        true
    }

    /// The configured scopes of `org` with `sourced` laid over.
    fn overlaid(&self, org: &str, sourced: &SourcedLimits) -> Vec<Arc<ModelScope>> {
        overlay(self.configured_scopes(org), sourced)
    }

    /// The model scopes the config gives `org`: its own for a configured org, else its tier's.
    fn configured_scopes(&self, org: &str) -> &[Arc<ModelScope>] {
        self.config_scopes
            .get(org)
            .map_or(&self.settings.default_models, |v| v)
    }

    /// The last good poll of each org's source, for the snapshot: a restart puts them in force
    /// again before the journal is replayed, so the scopes a source added keep their counts.
    pub(super) fn polled(&self) -> Vec<&SourcedLimits> {
        self.polled.values().collect()
    }

    /// Puts polls stored in a snapshot back in force (before the orgs are bound to the
    /// config: see [`Tracker::scopes_of_org`]).
    pub(super) fn restore_polled(&mut self, polled: Vec<SourcedLimits>) {
        for p in polled {
            // No org holds state yet: nothing is dropped, nothing resolved.
            self.set_sourced_limits(&p, i64::MIN, &mut Vec::new());
        }
    }

    /// The model scopes `org` is bound to: a source's over the config's, else the config's.
    pub(super) fn scopes_of_org(&self, org: &str) -> &[Arc<ModelScope>] {
        match self.sourced.get(org) {
            Some(s) => s,
            None => self.configured_scopes(org),
        }
    }

    /// Keeps a `LimitSourceFailing` transition: firing ones are listed with the org's alerts
    /// until they resolve.
    pub fn note_source_alert(&mut self, t: &Transition) {
        self.source_alerts
            .retain(|a| !(a.org == t.org && a.app == t.app && a.alert == t.alert));
        if t.status == Status::Firing {
            self.source_alerts.push(t.clone());
        }
    }

    /// The `LimitSourceFailing` alerts firing for `org`, dated `now`.
    pub(super) fn source_alerts_of(&self, org: &str, now: i64, out: &mut Vec<Transition>) {
        for a in self.source_alerts.iter().filter(|a| *a.org == *org) {
            out.push(Transition {
                ts_ms: now,
                repeat: false,
                ..a.clone()
            });
        }
    }
}

/// `configured` with `sourced`'s scopes laid over it.
fn overlay(configured: &[Arc<ModelScope>], sourced: &SourcedLimits) -> Vec<Arc<ModelScope>> {
    let mut out: Vec<ModelScope> = configured.iter().map(|s| (**s).clone()).collect();
    let source: Arc<str> = sourced.source.as_str().into();
    // Per scope, how closely the entry applied matched it ([`ModelScope::match_rank`]): an
    // entry for a scope's own name wins over one for another of its ids, which wins over a
    // prefix match, whatever the provider's order.
    let mut applied: Vec<Option<usize>> = vec![None; out.len()];
    let (mut added, mut dropped) = (0, 0);
    for entry in &sourced.scopes {
        let Some(first) = entry.models.first().filter(|m| valid_name(m)) else {
            continue;
        };
        let closest = entry
            .models
            .iter()
            .filter_map(|m| scope_for(out.iter().map(Some), m))
            .max_by_key(|&(_, rank)| rank);
        match closest {
            Some((i, rank)) => {
                if applied[i].is_some_and(|r| r > rank) {
                    continue;
                }
                applied[i] = Some(rank);
                apply(&mut out[i], entry, &source);
            }
            None if added < MAX_SOURCED_SCOPES => {
                added += 1;
                let mut scope = ModelScope {
                    name: first.as_str().into(),
                    models: entry.models.iter().map(|m| m.as_str().into()).collect(),
                    limits: Limits::default(),
                    source: None,
                    sourced: Vec::new(),
                };
                apply(&mut scope, entry, &source);
                out.push(scope);
                applied.push(Some(usize::MAX));
            }
            None => dropped += 1,
        }
    }
    if dropped > 0 {
        tracing::warn!(org = %sourced.org, source = %sourced.source, dropped,
            "a limit source lists more models than {MAX_SOURCED_SCOPES} scopes hold; the rest keep no limits of their own");
    }
    out.into_iter().map(Arc::new).collect()
}

/// Sets the limits `entry` gives in `scope`. A provider's `0` (no such limit for that model)
/// leaves the configured value: in ratewarden `0` would mean unlimited.
fn apply(scope: &mut ModelScope, entry: &ScopeLimits, source: &Arc<str>) {
    let given = [
        (Dimension::Rpm, entry.rpm),
        (Dimension::Tpm, entry.tpm),
        (Dimension::Itpm, entry.itpm),
        (Dimension::Otpm, entry.otpm),
        (Dimension::Ipm, entry.ipm),
        (Dimension::Daily, entry.daily),
        (Dimension::BatchQueueTokens, entry.batch_queue_tokens),
    ];
    for (dim, value) in given {
        if let Some(v) = value.filter(|&v| v > 0) {
            dim.set_limit(&mut scope.limits, v);
            if !scope.sourced.contains(&dim) {
                scope.sourced.push(dim);
            }
        }
    }
    if !scope.sourced.is_empty() {
        scope.source = Some(source.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(name: &str, models: &[&str], rpm: u64) -> Arc<ModelScope> {
        Arc::new(ModelScope {
            name: name.into(),
            models: models.iter().map(|&m| m.into()).collect(),
            limits: Limits {
                rpm,
                ..Limits::default()
            },
            source: None,
            sourced: Vec::new(),
        })
    }

    #[test]
    fn sourced_values_replace_configured_ones_and_add_scopes() {
        let configured = [scope("gpt-4o", &["gpt-4o", "gpt-4o-2024-*"], 100)];
        let sourced = SourcedLimits {
            source: "openai-admin".into(),
            org: "acme".into(),
            scopes: vec![
                ScopeLimits {
                    models: vec!["gpt-4o-2024-08-06".into()],
                    rpm: Some(500),
                    tpm: Some(30_000),
                    ipm: Some(0),
                    ..ScopeLimits::default()
                },
                ScopeLimits {
                    models: vec!["gpt-image-1".into()],
                    ipm: Some(5),
                    ..ScopeLimits::default()
                },
                ScopeLimits::default(),
            ],
        };
        let out = overlay(&configured, &sourced);
        assert_eq!(out.len(), 2);
        assert_eq!(
            &*out[0].name, "gpt-4o",
            "the configured scope holding the id"
        );
        assert_eq!((out[0].limits.rpm, out[0].limits.tpm), (500, 30_000));
        assert_eq!(out[0].limits.ipm, 0, "a provider's 0 sets no limit");
        assert_eq!(out[0].sourced, [Dimension::Rpm, Dimension::Tpm]);
        assert_eq!(out[0].source.as_deref(), Some("openai-admin"));
        assert_eq!((&*out[1].name, out[1].limits.ipm), ("gpt-image-1", 5));
    }
}
