//! Prometheus metrics (SPEC §8), exposed at `/metrics` as OpenMetrics text or, for clients
//! that ask for it, the classic Prometheus text format.
//!
//! Ingest counters are ordinary prometheus-client handles, bumped once per batch. Everything
//! the tracker knows (usage, limits, requests, 429 causes, jobs, alerts) is read at scrape
//! time from one snapshot (`tracker`) and written by `text`, so the per-event path never
//! touches a label map and every gauge is computed against the clock at the moment
//! Prometheus asks. Label values are org/app names and fixed enums; never ids, paths or URLs.

mod limit_source;
mod source;
mod text;
mod tracker;

pub use limit_source::LimitSourceMetrics;
pub use source::{Recovering, ScrapeSource, Scraped};

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::config::Config;
use crate::events::intake::Tally;
use crate::events::{EventField, Reason};
use crate::offpeak::OffPeak;
use text::{Format, PREFIX};
use tracker::TrackerFamilies;

/// Version reported by `build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotificationLabels {
    channel: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BatchItemLabels {
    org: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BatchRequestLabels {
    org: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OrgLabels {
    org: String,
}

/// Upper bounds of `admission_wait_seconds`: from an answer at once to the longest wait.
const ADMISSION_WAIT_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    source: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecordErrorLabels {
    record: &'static str,
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FieldErrorLabels {
    source: String,
    field: &'static str,
}

/// The daemon's metrics: a registry with the `ratewarden_` prefix and the ingest counters.
pub struct Metrics {
    registry: Registry,
    ingested: Family<SourceLabels, Counter>,
    rejected: Family<RejectLabels, Counter>,
    field_errors: Family<FieldErrorLabels, Counter>,
    files_skipped: Family<RejectLabels, Counter>,
    record_errors: Family<RecordErrorLabels, Counter>,
    /// Where scrape-time values come from, and how much of its `unencodable` counts the
    /// `record_errors` family has taken in.
    source: Arc<dyn ScrapeSource>,
    unencodable_seen: Mutex<HashMap<&'static str, u64>>,
    /// Length of the last exposition, to size the next one.
    last_len: std::sync::atomic::AtomicUsize,
    notifications: Family<NotificationLabels, Counter>,
    pending: Family<ChannelLabels, Gauge>,
    batch_items: Family<BatchItemLabels, Gauge>,
    body_bytes_held: Gauge,
    batch_requests: Family<BatchRequestLabels, Counter>,
    admissions: Family<BatchRequestLabels, Counter>,
    admission_wait: Histogram,
    admission_waiting: Family<OrgLabels, Gauge>,
    limit_sources: LimitSourceMetrics,
    tracker: TrackerFamilies,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers every metric; tracker-derived ones are read from `source` at scrape time.
    pub fn new(source: Arc<dyn ScrapeSource>, config: &Config) -> Metrics {
        let offpeak = config.offpeak.clone();
        let mut registry = Registry::with_prefix(PREFIX);
        let ingested = Family::<SourceLabels, Counter>::default();
        let rejected = Family::<RejectLabels, Counter>::default();
        registry.register(
            "events_ingested",
            "Events accepted, by source",
            ingested.clone(),
        );
        registry.register(
            "events_rejected",
            "Events rejected, by source and reason",
            rejected.clone(),
        );
        let field_errors = Family::<FieldErrorLabels, Counter>::default();
        registry.register(
            "event_field_errors",
            "Fields of accepted events that did not parse and were treated as absent, by source and field",
            field_errors.clone(),
        );
        let record_errors = Family::<RecordErrorLabels, Counter>::default();
        registry.register(
            "store_record_errors",
            "Stored records (batches, batch items, notifications) that could not be encoded or decoded, by record and op; each is logged",
            record_errors.clone(),
        );
        let files_skipped = Family::<RejectLabels, Counter>::default();
        registry.register(
            "source_files_skipped",
            "Files a file source's glob matched but did not read, by reason (compressed)",
            files_skipped.clone(),
        );
        let notifications = Family::<NotificationLabels, Counter>::default();
        let pending = Family::<ChannelLabels, Gauge>::default();
        registry.register(
            "notifications",
            "Notification delivery attempts by outcome: sent, retried (will be tried again), failed (given up)",
            notifications.clone(),
        );
        registry.register(
            "notifications_pending",
            "Notifications in the outbox waiting for delivery, per channel",
            pending.clone(),
        );
        let batch_items = Family::<BatchItemLabels, Gauge>::default();
        let batch_requests = Family::<BatchRequestLabels, Counter>::default();
        registry.register(
            "batch_items",
            "Items of deferred batches by state",
            batch_items.clone(),
        );
        registry.register(
            "batch_requests",
            "Requests the dispatcher sent, by outcome (success, rate_limited, client_error, server_error, error)",
            batch_requests.clone(),
        );
        let admissions = Family::<BatchRequestLabels, Counter>::default();
        registry.register(
            "admissions",
            "Admission asks (POST /v1/admit) answered, by org and outcome: granted, refused, timed_out (refused after waiting)",
            admissions.clone(),
        );
        let admission_wait = Histogram::new(ADMISSION_WAIT_BUCKETS);
        registry.register(
            "admission_wait_seconds",
            "Time from an admission ask to its answer",
            admission_wait.clone(),
        );
        let admission_waiting = Family::<OrgLabels, Gauge>::default();
        registry.register(
            "admission_waiting",
            "Admission asks waiting for room now, by org",
            admission_waiting.clone(),
        );
        let body_bytes_held = Gauge::default();
        registry.register(
            "http_body_bytes_held",
            "Bytes of request bodies held in memory now, charged against [server] max_inflight_bytes (in 1 KiB units)",
            body_bytes_held.clone(),
        );
        let limit_sources = LimitSourceMetrics::register(&mut registry);
        for l in &config.limit_sources {
            limit_sources.declare(l.kind.source_name(), &l.org);
        }
        registry.register(
            "build",
            "Build information",
            Info::new(vec![("version", VERSION)]),
        );
        registry.register_collector(Box::new(OffPeakCollector {
            source: source.clone(),
            offpeak,
        }));
        let m = Metrics {
            registry,
            ingested,
            rejected,
            field_errors,
            files_skipped,
            record_errors,
            unencodable_seen: Mutex::default(),
            last_len: std::sync::atomic::AtomicUsize::new(0),
            notifications,
            pending,
            batch_items,
            batch_requests,
            admissions,
            admission_wait,
            admission_waiting,
            body_bytes_held,
            limit_sources,
            tracker: TrackerFamilies {
                source: source.clone(),
                series: config.metrics.clone(),
            },
            source,
        };
        m.declare_source("http");
        m
    }

    /// The gauge of request body bytes held (`ratewarden_http_body_bytes_held`), for the
    /// server's body budget to keep.
    pub fn body_bytes_held(&self) -> Gauge {
        self.body_bytes_held.clone()
    }

    /// The limit sources' families, for the poller to keep.
    pub fn limit_sources(&self) -> LimitSourceMetrics {
        self.limit_sources.clone()
    }

    /// Creates a source's series at zero so `rate()` sees its first events.
    pub fn declare_source(&self, source: &str) {
        self.ingested(source, 0);
        for reason in Reason::ALL {
            self.rejected(source, reason, 0);
        }
    }

    /// Creates a channel's series at zero.
    pub fn declare_channel(&self, channel: &str) {
        for outcome in ["sent", "retried", "failed"] {
            self.notification_n(channel, outcome, 0);
        }
        self.channel_pending(channel, 0);
    }

    /// Counts one delivery attempt of `channel` with `outcome` (`sent`, `retried`, `failed`).
    pub fn notification(&self, channel: &str, outcome: &'static str) {
        self.notification_n(channel, outcome, 1);
    }

    fn notification_n(&self, channel: &str, outcome: &'static str, n: u64) {
        self.notifications
            .get_or_create(&NotificationLabels {
                channel: channel.to_string(),
                outcome,
            })
            .inc_by(n);
    }

    /// Sets the outbox backlog of `channel`.
    pub fn channel_pending(&self, channel: &str, n: i64) {
        self.pending
            .get_or_create(&ChannelLabels {
                channel: channel.to_string(),
            })
            .set(n);
    }

    /// Sets the number of `org`'s batch items in `state`.
    pub fn batch_items(&self, org: &str, state: &'static str, n: i64) {
        self.batch_items
            .get_or_create(&BatchItemLabels {
                org: org.to_string(),
                state,
            })
            .set(n);
    }

    /// Counts one dispatched request of `org` with `outcome`.
    pub fn batch_request(&self, org: &str, outcome: &'static str) {
        self.batch_requests
            .get_or_create(&BatchRequestLabels {
                org: org.to_string(),
                outcome,
            })
            .inc();
    }

    /// Counts one admission ask of `org` answered with `outcome` after `waited` seconds.
    pub fn admission(&self, org: &str, outcome: &'static str, waited: f64) {
        self.admission_decided(org, outcome);
        self.admission_wait.observe(waited);
    }

    /// Counts one admission decision of `org` that nobody waited for (the batch
    /// dispatcher's, which never waits in a queue).
    pub fn admission_decided(&self, org: &str, outcome: &'static str) {
        self.admissions
            .get_or_create(&BatchRequestLabels {
                org: org.to_string(),
                outcome,
            })
            .inc();
    }

    /// Sets how many admission asks of `org` are waiting.
    pub fn admission_waiting(&self, org: &str, n: i64) {
        self.admission_waiting
            .get_or_create(&OrgLabels {
                org: org.to_string(),
            })
            .set(n);
    }

    /// Counts `n` accepted events of `source`.
    pub fn ingested(&self, source: &str, n: u64) {
        self.ingested
            .get_or_create(&SourceLabels {
                source: source.to_string(),
            })
            .inc_by(n);
    }

    /// Counts what `source` took in: accepted and rejected events and lost fields.
    pub fn intake(&self, source: &str, tally: &Tally) {
        if tally.accepted > 0 {
            self.ingested(source, tally.accepted);
        }
        for reason in Reason::ALL {
            let n = tally.rejected[reason as usize];
            if n > 0 {
                self.rejected(source, reason, n);
            }
        }
        for field in EventField::ALL {
            let n = tally.field_errors[field as usize];
            if n > 0 {
                self.field_errors
                    .get_or_create(&FieldErrorLabels {
                        source: source.to_string(),
                        field: field.name(),
                    })
                    .inc_by(n);
            }
        }
    }

    /// Counts a file `source` skipped for `reason`.
    /// A stored record of `record` type that could not be encoded or decoded (`op`).
    pub fn store_record_error(&self, record: &'static str, op: &'static str) {
        self.record_errors
            .get_or_create(&RecordErrorLabels { record, op })
            .inc();
    }

    /// A file a source skipped, by reason.
    pub fn file_skipped(&self, source: &str, reason: &'static str) {
        self.files_skipped
            .get_or_create(&RejectLabels {
                source: source.to_string(),
                reason,
            })
            .inc();
    }

    /// Counts `n` rejected events of `source`.
    pub fn rejected(&self, source: &str, reason: Reason, n: u64) {
        self.rejected
            .get_or_create(&RejectLabels {
                source: source.to_string(),
                reason: reason.as_str(),
            })
            .inc_by(n);
    }

    /// The exposition: OpenMetrics, or the classic Prometheus text format (0.0.4) for
    /// clients that ask for `text/plain` only (older scrapers, `promtool check metrics`).
    pub fn encode(&self, classic: bool) -> Result<String, fmt::Error> {
        self.take_unencodable();
        // Sized from the last answer: growing a few MB by doubling copies it all each time.
        let last = self.last_len.load(std::sync::atomic::Ordering::Relaxed);
        let mut out = String::with_capacity((last + last / 16).max(16 * 1024));
        // The registry first, then the tracker's families (most of the bytes at scale)
        // straight into the same buffer, then the end marker OpenMetrics requires.
        if classic {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
            self.tracker.write(&mut out, Format::Classic);
        } else {
            prometheus_client::encoding::text::encode_registry(&mut out, &self.registry)?;
            self.tracker.write(&mut out, Format::OpenMetrics);
            prometheus_client::encoding::text::encode_eof(&mut out)?;
        }
        self.last_len
            .store(out.len(), std::sync::atomic::Ordering::Relaxed);
        Ok(out)
    }
}

impl Metrics {
    /// Adds what the source newly counted as unencodable to `store_record_errors_total`.
    fn take_unencodable(&self) {
        let mut seen = self
            .unencodable_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (record, n) in self.source.unencodable() {
            let before = seen.entry(record).or_default();
            if n > *before {
                self.record_errors
                    .get_or_create(&RecordErrorLabels {
                        record,
                        op: "encode",
                    })
                    .inc_by(n - *before);
                *before = n;
            }
        }
    }
}

/// `offpeak_open`, computed against the clock at scrape time.
struct OffPeakCollector {
    source: Arc<dyn ScrapeSource>,
    offpeak: OffPeak,
}

impl fmt::Debug for OffPeakCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OffPeakCollector")
    }
}

impl Collector for OffPeakCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let Some(now) = self.source.now_ms() else {
            return Ok(());
        };
        let open = self.offpeak.is_open(now);
        let m = enc.encode_descriptor(
            "offpeak_open",
            "1 while an off-peak window is open",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::from(open)).encode(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A source whose only values are its unencodable journal records.
    struct Failing(AtomicU64);

    impl ScrapeSource for Failing {
        fn now_ms(&self) -> Option<i64> {
            None
        }
        fn scrape(&self, _: &mut dyn FnMut(crate::tracker::OrgSnapshot)) -> Option<Scraped> {
            None
        }
        fn unencodable(&self) -> Vec<(&'static str, u64)> {
            vec![("journal", self.0.load(Ordering::Relaxed))]
        }
    }

    fn encode_failures(text: &str) -> Option<f64> {
        text.lines()
            .find(|l| {
                l.starts_with("ratewarden_store_record_errors_total{")
                    && l.contains(r#"record="journal""#)
                    && l.contains(r#"op="encode""#)
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    #[test]
    fn unencodable_records_of_the_source_are_counted_once_each() {
        let source = Arc::new(Failing(AtomicU64::new(0)));
        let m = Metrics::new(source.clone(), &Config::default());
        assert_eq!(encode_failures(&m.encode(true).unwrap()), None);
        source.0.store(2, Ordering::Relaxed);
        assert_eq!(encode_failures(&m.encode(true).unwrap()), Some(2.0));
        assert_eq!(
            encode_failures(&m.encode(true).unwrap()),
            Some(2.0),
            "a scrape counts only what is new"
        );
        source.0.store(3, Ordering::Relaxed);
        assert_eq!(encode_failures(&m.encode(false).unwrap()), Some(3.0));
    }
}
