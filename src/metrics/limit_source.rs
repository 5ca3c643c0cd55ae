//! The limit sources' families (`[[limit_sources]]`): polls by result, changes, and the time
//! of the last good poll. The poller holds a clone ([`LimitSourceMetrics`] handles are atomics).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceOrg {
    source: &'static str,
    org: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PollLabels {
    source: &'static str,
    org: String,
    result: &'static str,
}

/// `limit_source_polls_total`, `limit_source_changes_total` and
/// `limit_source_last_success_timestamp_seconds`, labelled by source (`openai-admin`,
/// `anthropic-admin`) and org.
#[derive(Clone, Debug, Default)]
pub struct LimitSourceMetrics {
    polls: Family<PollLabels, Counter>,
    changes: Family<SourceOrg, Counter>,
    last_success: Family<SourceOrg, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl LimitSourceMetrics {
    /// Registers the families in `registry` (which adds the `ratewarden_` prefix).
    pub fn register(registry: &mut Registry) -> LimitSourceMetrics {
        let m = LimitSourceMetrics::default();
        registry.register(
            "limit_source_polls",
            "Polls of a limit source's admin API, by source, org and result (success, error)",
            m.polls.clone(),
        );
        registry.register(
            "limit_source_changes",
            "Limit values a limit source changed (one per model and dimension), by source and org",
            m.changes.clone(),
        );
        registry.register(
            "limit_source_last_success_timestamp_seconds",
            "Unix time of a limit source's last successful poll (absent before the first)",
            m.last_success.clone(),
        );
        m
    }

    /// Creates a source's counters at zero, so `increase()` sees its first poll.
    pub fn declare(&self, source: &'static str, org: &str) {
        for result in ["success", "error"] {
            self.polls
                .get_or_create(&PollLabels {
                    source,
                    org: org.to_string(),
                    result,
                })
                .inc_by(0);
        }
        self.changes(source, org, 0);
    }

    /// A poll ended: successful (at `now_ms`) or not.
    pub fn poll(&self, source: &'static str, org: &str, ok: bool, now_ms: i64) {
        self.polls
            .get_or_create(&PollLabels {
                source,
                org: org.to_string(),
                result: if ok { "success" } else { "error" },
            })
            .inc();
        if ok {
            self.last_success
                .get_or_create(&SourceOrg {
                    source,
                    org: org.to_string(),
                })
                .set(now_ms as f64 / 1000.0);
        }
    }

    /// `n` limit values changed.
    pub fn changes(&self, source: &'static str, org: &str, n: u64) {
        self.changes
            .get_or_create(&SourceOrg {
                source,
                org: org.to_string(),
            })
            .inc_by(n);
    }
}
