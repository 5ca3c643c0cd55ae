//! How an org takes what the upstream reports (SPEC §4 `headers`, `ratelimit`): each
//! dimension's report and its drift from ratewarden's own count, then the limits learnt
//! (`[limits] learn`) or judged against the config (`LimitMismatch`, whose state and
//! transitions are `detect`'s). The reports themselves are kept by [`super::upstream`].

use super::Org;
use super::settings::Settings;
use super::upstream::Upstream;
use crate::detect::Transition;
use crate::events::QuotaReport;
use crate::model::Dimension;

impl Org {
    /// Notes what the upstream reported with an event at `ts`: each dimension's report and
    /// its drift from ratewarden's own count (measured after the event itself was counted, as
    /// the upstream's `remaining` was); then adopts changed limits (`learn`) or judges them
    /// against the config (`LimitMismatch`).
    pub(super) fn note_upstream(
        &mut self,
        ts: i64,
        reports: &[QuotaReport],
        s: &Settings,
        out: &mut Vec<Transition>,
    ) {
        // A report that does not give both the limit and what remains measures no drift, and
        // an older measure no longer describes the window it reports.
        let drifts: Vec<_> = reports
            .iter()
            .map(|q| {
                // Input and output tokens are counted only by an org that limits one of
                // its extended dimensions: otherwise its own count is not a count.
                let counted = q
                    .dimension
                    .configured()
                    .filter(|d| d.index() < Dimension::LEGACY || self.extended.is_some());
                let drift =
                    counted
                        .zip(q.limit.zip(q.remaining))
                        .map(|(dim, (limit, remaining))| {
                            let used = i64::try_from(limit.saturating_sub(remaining));
                            let ours = i64::try_from(self.usage_at(dim, ts)).unwrap_or(i64::MAX);
                            used.unwrap_or(i64::MAX) - ours
                        });
                (q.dimension, drift)
            })
            .collect();
        let configured = self.limits;
        let u = self
            .upstream
            .get_or_insert_with(|| Box::new(Upstream::new(configured)));
        let mut changed = false;
        for (q, (dim, drift)) in reports.iter().zip(drifts) {
            // A report older than the one kept changes neither it nor its drift.
            if let Some(limit_changed) = u.note(ts, q) {
                changed |= limit_changed;
                u.set_drift(dim, drift);
            }
        }
        if s.learn {
            if changed {
                let learned = u.learned(u.configured);
                self.set_limits(learned, s);
            }
        } else if self.alerting {
            self.judge_mismatch(s, out);
        }
    }

    /// `LimitMismatch` for every configured dimension, at the org's present.
    pub(super) fn judge_mismatch(&mut self, s: &Settings, out: &mut Vec<Transition>) {
        let Some(u) = self.upstream.as_deref_mut() else {
            return;
        };
        u.rejudge = false;
        let at = self.present_ms;
        for dim in Dimension::ALL {
            let (configured, reported) = if s.learn {
                (0, None)
            } else {
                (dim.limit(&u.configured), u.limit(dim))
            };
            u.mismatch
                .judge(&self.name, dim, configured, reported, at, out);
        }
    }
}
