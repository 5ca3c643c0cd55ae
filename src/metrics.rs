//! Prometheus metrics (SPEC §8), exposed at `/metrics` as OpenMetrics text.
//!
//! Ingest counters are ordinary prometheus-client handles, bumped once per batch. Everything
//! the tracker knows (usage, limits, requests, 429 causes, jobs, alerts) is read at scrape
//! time by a [`Collector`] from one snapshot, so the per-event path never touches a label map
//! and every gauge is computed against the clock at the moment Prometheus asks.
//! Label values are org/app names and fixed enums; never ids, paths or URLs.

use crate::model::Dimension;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::config::{Config, MetricsConfig};
use crate::detect::Cause;
use crate::events::intake::Tally;
use crate::events::{EventField, Outcome, Reason};
use crate::offpeak::OffPeak;
use crate::tracker::{JobOutcome, OrgSnapshot};

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
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

/// What a scrape reads of the live state, taken at scrape time.
#[derive(Debug, Clone)]
pub struct Scraped {
    /// False after a failed store commit until one succeeds.
    pub store_writable: bool,
    /// Store commits that failed.
    pub store_commit_failures: u64,
    /// Every tracked org at `now_ms`.
    pub orgs: Vec<crate::tracker::OrgSnapshot>,
    /// Events routed to the overflow series, by kind.
    pub overflow: crate::tracker::Overflow,
    /// Orgs past `max_new_orgs_per_second`.
    pub new_orgs_refused: u64,
}

/// Where scrape-time values come from. The daemon's live state implements it; `metrics`
/// never reaches into that state, it only asks this (nothing while state is recovering).
pub trait ScrapeSource: Send + Sync {
    /// Now, by the daemon's clock; `None` while state is recovering.
    fn now_ms(&self) -> Option<i64>;
    /// The values a scrape shows; `None` while state is recovering.
    fn scrape(&self) -> Option<Scraped>;
    /// Records the state could not encode since start, by kind (`journal`, `snapshot`,
    /// `notification`): counted in `store_record_errors_total{op="encode"}`.
    fn unencodable(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// No scrape-time values: stored state is still being recovered, so `/metrics` shows the
/// registry alone.
pub struct Recovering;

impl ScrapeSource for Recovering {
    fn now_ms(&self) -> Option<i64> {
        None
    }

    fn scrape(&self) -> Option<Scraped> {
        None
    }
}

impl Metrics {
    /// Registers every metric; tracker-derived ones are read from `source` at scrape time.
    pub fn new(source: Arc<dyn ScrapeSource>, config: &Config) -> Metrics {
        let offpeak = config.offpeak.clone();
        let mut registry = Registry::with_prefix("ratewarden");
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
        let body_bytes_held = Gauge::default();
        registry.register(
            "http_body_bytes_held",
            "Bytes of request bodies held in memory now, charged against [server] max_inflight_bytes (in 1 KiB units)",
            body_bytes_held.clone(),
        );
        registry.register(
            "build",
            "Build information",
            Info::new(vec![("version", VERSION)]),
        );
        registry.register_collector(Box::new(OffPeakCollector {
            source: source.clone(),
            offpeak,
        }));
        registry.register_collector(Box::new(TrackerCollector {
            source: source.clone(),
            series: config.metrics.clone(),
        }));
        let m = Metrics {
            registry,
            ingested,
            rejected,
            field_errors,
            files_skipped,
            record_errors,
            source,
            unencodable_seen: Mutex::default(),
            last_len: std::sync::atomic::AtomicUsize::new(0),
            notifications,
            pending,
            batch_items,
            batch_requests,
            body_bytes_held,
        };
        m.declare_source("http");
        m
    }

    /// The gauge of request body bytes held (`ratewarden_http_body_bytes_held`), for the
    /// server's body budget to keep.
    pub fn body_bytes_held(&self) -> Gauge {
        self.body_bytes_held.clone()
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
        if classic {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        } else {
            prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
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

/// A count as a gauge value: never negative, however large (a saturated window is u64::MAX).
fn as_gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
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

/// Reads the tracker at scrape time.
struct TrackerCollector {
    /// Empty while start-up recovery runs; nothing is exported from the tracker until then.
    source: Arc<dyn ScrapeSource>,
    /// Which optional series to export.
    series: MetricsConfig,
}

/// The `app` label, or none (per-app series switched off).
struct AppLabel<'a>(Option<&'a str>);

impl EncodeLabelSet for AppLabel<'_> {
    fn encode(&self, encoder: &mut prometheus_client::encoding::LabelSetEncoder) -> fmt::Result {
        match self.0 {
            Some(app) => [("app", app)].encode(encoder),
            None => Ok(()),
        }
    }
}

/// An app's counters as exported: one app's, or the sum of an org's apps under no app label.
struct AppCounts<'a> {
    app: Option<&'a str>,
    requests: [u64; Outcome::ALL.len()],
    rate_limited: [u64; Cause::ALL.len()],
    retry_violations: u64,
}

impl AppCounts<'_> {
    fn had_429(&self) -> bool {
        self.rate_limited.iter().any(|&n| n > 0)
    }
}

/// The labels of an app's series: its org and, per app, its app.
fn app_l<'a>(
    o: &'a OrgSnapshot,
    a: &AppCounts<'a>,
) -> ([(&'static str, &'a str); 1], AppLabel<'a>) {
    (org_l(o), AppLabel(a.app))
}

/// `o`'s apps' counters, each app's or (not `per_app`) their sum.
fn app_counts(o: &OrgSnapshot, per_app: bool) -> Vec<AppCounts<'_>> {
    if per_app {
        return o
            .apps
            .iter()
            .map(|a| AppCounts {
                app: Some(&*a.app),
                requests: a.requests,
                rate_limited: a.rate_limited,
                retry_violations: a.retry_violations,
            })
            .collect();
    }
    let mut sum = AppCounts {
        app: None,
        requests: [0; Outcome::ALL.len()],
        rate_limited: [0; Cause::ALL.len()],
        retry_violations: 0,
    };
    for a in &o.apps {
        for (s, n) in sum.requests.iter_mut().zip(a.requests) {
            *s += n;
        }
        for (s, n) in sum.rate_limited.iter_mut().zip(a.rate_limited) {
            *s += n;
        }
        sum.retry_violations += a.retry_violations;
    }
    vec![sum]
}

impl fmt::Debug for TrackerCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TrackerCollector")
    }
}

fn counter<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in series {
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge<L: EncodeLabelSet, V: prometheus_client::encoding::EncodeGaugeValue + fmt::Debug>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in series {
        ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// No labels.
const NONE: [(&str, &str); 0] = [];

fn org_l(o: &OrgSnapshot) -> [(&'static str, &str); 1] {
    [("org", &*o.org)]
}

fn dim_l(o: &OrgSnapshot, d: Dimension) -> [(&'static str, &str); 2] {
    [("org", &*o.org), ("dimension", d.as_str())]
}

/// Whether `o` has ever had a job (in flight, stuck or finished): its job series and its
/// concurrency dimension have something to say only then.
fn had_jobs(o: &OrgSnapshot) -> bool {
    o.jobs_in_flight > 0 || o.jobs_stuck > 0 || o.jobs_finished.iter().any(|&n| n > 0)
}

/// Whether dimension `d` of `o` is exported: every dimension but concurrency, which only
/// for an org that has had jobs (before that its usage is 0 and says nothing).
fn shows(o: &OrgSnapshot, d: Dimension) -> bool {
    d != Dimension::Concurrency || had_jobs(o)
}

impl Collector for TrackerCollector {
    /// Series appear once they have something to say: a request outcome once it happened, the
    /// 429 causes and retry violations of an app once it had a 429 (all at once, so `rate()`
    /// sees each from zero), job series and the concurrency dimension once the org had a job,
    /// the duration histogram once a job finished. Labels are borrowed, not built per series.
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let Some(Scraped {
            store_writable,
            store_commit_failures,
            orgs,
            overflow,
            new_orgs_refused,
        }) = self.source.scrape()
        else {
            return Ok(());
        };
        gauge(
            &mut enc,
            "store_writable",
            "1 while the store commits, 0 after a failed commit (a full disk) until one succeeds",
            [(NONE, i64::from(store_writable))],
        )?;
        counter(
            &mut enc,
            "store_commit_failures",
            "Store commits that failed; each is retried until the store writes again",
            [(NONE, store_commit_failures)],
        )?;
        let per_app = self.series.per_app;
        let apps: Vec<(&OrgSnapshot, Vec<AppCounts>)> =
            orgs.iter().map(|o| (o, app_counts(o, per_app))).collect();
        counter(
            &mut enc,
            "requests",
            "Requests seen, of any status, by outcome",
            apps.iter().flat_map(|(o, apps)| {
                apps.iter().flat_map(move |a| {
                    Outcome::ALL
                        .into_iter()
                        .filter(|out| a.requests[out.index()] > 0)
                        .map(move |out| {
                            (
                                (app_l(o, a), [("outcome", out.as_str())]),
                                a.requests[out.index()],
                            )
                        })
                })
            }),
        )?;
        counter(
            &mut enc,
            "rate_limited",
            "429 responses by most likely cause",
            apps.iter().flat_map(|(o, apps)| {
                apps.iter().filter(|a| a.had_429()).flat_map(move |a| {
                    Cause::ALL.into_iter().map(move |c| {
                        (
                            (app_l(o, a), [("cause", c.as_str())]),
                            a.rate_limited[c.index()],
                        )
                    })
                })
            }),
        )?;
        gauge(
            &mut enc,
            "usage",
            "Current usage per dimension: requests in the rolling minute and 24 h, jobs in flight",
            orgs.iter().flat_map(|o| {
                o.usage
                    .iter()
                    .filter(|(d, _)| shows(o, *d))
                    .map(move |&(d, v)| (dim_l(o, d), as_gauge(v)))
            }),
        )?;
        gauge(
            &mut enc,
            "limit",
            "Limit per dimension (absent when unlimited)",
            orgs.iter().flat_map(|o| {
                o.limits
                    .iter()
                    .filter(|(d, _)| shows(o, *d))
                    .map(move |&(d, v)| (dim_l(o, d), as_gauge(v)))
            }),
        )?;
        gauge(
            &mut enc,
            "utilization_ratio",
            "Usage divided by limit per dimension",
            orgs.iter().flat_map(|o| {
                o.limits
                    .iter()
                    .filter(|(d, _)| shows(o, *d))
                    .map(move |&(d, l)| {
                        let u = o.usage_of(d).unwrap_or(0);
                        (dim_l(o, d), u as f64 / l as f64)
                    })
            }),
        )?;
        let with_jobs = || orgs.iter().filter(|o| had_jobs(o));
        gauge(
            &mut enc,
            "jobs_in_flight",
            "Jobs started and not finished or released",
            with_jobs().map(|o| (org_l(o), as_gauge(o.jobs_in_flight))),
        )?;
        gauge(
            &mut enc,
            "jobs_stuck",
            "Jobs in flight longer than stuck_after",
            with_jobs().map(|o| (org_l(o), as_gauge(o.jobs_stuck))),
        )?;
        counter(
            &mut enc,
            "jobs_finished",
            "Jobs that stopped holding a slot, by outcome",
            with_jobs().flat_map(|o| {
                JobOutcome::ALL.into_iter().map(move |j| {
                    (
                        [("org", &*o.org), ("outcome", j.as_str())],
                        o.jobs_finished[j as usize],
                    )
                })
            }),
        )?;
        if self.series.job_histogram {
            let bounds = &self.series.job_duration_buckets;
            let mut m = enc.encode_descriptor(
                "job_duration_seconds",
                "Duration of finished jobs",
                None,
                MetricType::Histogram,
            )?;
            for o in orgs.iter().filter(|o| o.job_duration.count() > 0) {
                let h = &o.job_duration;
                // The snapshot restore clears histograms of other bounds, so the counts
                // are those of these bounds (and +Inf).
                let buckets: Vec<(f64, u64)> = bounds
                    .iter()
                    .copied()
                    .chain([f64::INFINITY])
                    .zip(h.counts.iter().copied())
                    .collect();
                m.encode_family(&org_l(o))?
                    .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                        h.sum,
                        h.count(),
                        &buckets,
                        None,
                    )?;
            }
        }
        counter(
            &mut enc,
            "bursts",
            "Burst episodes",
            orgs.iter()
                .filter(|o| o.bursts > 0 || o.limit_of(Dimension::Rpm).is_some())
                .map(|o| (org_l(o), o.bursts)),
        )?;
        counter(
            &mut enc,
            "retry_violations",
            "Requests sent before the Retry-After of the last 429 elapsed",
            apps.iter().flat_map(|(o, apps)| {
                apps.iter()
                    .filter(|a| a.retry_violations > 0 || a.had_429())
                    .map(move |a| (app_l(o, a), a.retry_violations))
            }),
        )?;
        gauge(
            &mut enc,
            "upstream_remaining",
            "Remaining requests (rpm) and tokens (tpm) as last reported by the upstream",
            orgs.iter().flat_map(|o| {
                [Dimension::Rpm, Dimension::Tpm]
                    .into_iter()
                    .zip(o.upstream_remaining)
                    .filter_map(move |(d, v)| v.map(|v| (dim_l(o, d), as_gauge(v))))
            }),
        )?;
        // Several apps of one org can storm at once; the label set has no app, so sum them.
        let mut firing: BTreeMap<[(&str, &str); 4], i64> = BTreeMap::new();
        for a in orgs.iter().flat_map(|o| &o.alerts) {
            let labels = [
                ("org", &*a.org),
                ("alert", a.alert.as_str()),
                ("dimension", a.dimension.map_or("", |d| d.as_str())),
                ("severity", a.severity.as_str()),
            ];
            *firing.entry(labels).or_default() += 1;
        }
        gauge(&mut enc, "alerts_firing", "Alerts firing now", firing)?;
        counter(
            &mut enc,
            "series_overflow",
            "Events routed to __overflow__ series (org: past max_orgs; org_rate: a new org past max_new_orgs_per_second; app) and jobs dropped past max_jobs_per_org (job)",
            [
                ("org", overflow.orgs),
                ("org_rate", new_orgs_refused),
                ("app", overflow.apps),
                ("job", overflow.jobs),
            ]
            .map(|(k, v)| ([("kind", k)], v)),
        )?;
        Ok(())
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
        fn scrape(&self) -> Option<Scraped> {
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
