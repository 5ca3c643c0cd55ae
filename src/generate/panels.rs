//! The dashboard's panels whose content no config changes, as data, top to bottom; and the
//! words each dimension's panels use. Only describes: `dashboard` turns these into JSON.

use crate::model::Dimension;

/// A panel's queries: PromQL with the `org` (and `app`) variables, and its legend.
///
/// Several replicas (`[cluster]`) each export the org-wide series under their own instance
/// (and pod): those are taken once, with `max without (instance, pod)`, before anything is
/// summed (batch items too: every replica holds the shared log's batches). Each replica's
/// own series (ingest, notifications, batch requests sent) are summed as they are.
pub(super) type Queries = &'static [(&'static str, &'static str)];

/// What a panel of fixed content draws.
pub(super) enum Shape {
    /// Lines over time; `stack` stacks them, `dashed` draws the series whose legend matches
    /// it as red dashed lines (limits).
    Series {
        unit: &'static str,
        stack: bool,
        dashed: Option<&'static str>,
    },
    /// One number per series, red from `red_from` when given.
    Stat {
        unit: &'static str,
        red_from: Option<i64>,
    },
    /// What fires now, one line per series.
    Table,
}

/// A panel whose content no config changes.
pub(super) struct Spec {
    pub(super) title: &'static str,
    pub(super) description: &'static str,
    pub(super) shape: Shape,
    pub(super) width: i64,
    pub(super) queries: Queries,
}

const fn series(unit: &'static str, stack: bool) -> Shape {
    Shape::Series {
        unit,
        stack,
        dashed: None,
    }
}

/// Beside the utilization gauges.
pub(super) const ALERTS_FIRING: Spec = Spec {
    title: "Alerts firing",
    description: "Alerts firing now in ratewarden, by alert and severity.",
    shape: Shape::Stat {
        unit: "none",
        red_from: Some(1),
    },
    width: 6,
    queries: &[(
        r#"sum by (alert, severity) (max without (instance, pod) (ratewarden_alerts_firing{org=~"$org"}))"#,
        "{{alert}} {{severity}}",
    )],
};

/// After the usage panels of each dimension: what is left, and what the upstream says.
pub(super) const AGAINST_UPSTREAM: &[Spec] = &[
    Spec {
        title: "Headroom (limit − usage)",
        description: "How much of each limited dimension is left now.",
        shape: series("short", false),
        width: 12,
        queries: &[(
            r#"max without (instance, pod) (ratewarden_limit{org=~"$org"}) - on (org, model, dimension) max without (instance, pod) (ratewarden_usage{org=~"$org"})"#,
            "{{org}} {{dimension}}",
        )],
    },
    Spec {
        title: "Upstream remaining (x-ratelimit headers)",
        description: "What the upstream itself reports as remaining.",
        shape: series("short", false),
        width: 12,
        queries: &[(
            r#"max without (instance, pod) (ratewarden_upstream_remaining{org=~"$org"})"#,
            "{{org}} {{dimension}}",
        )],
    },
    Spec {
        title: "Upstream limit vs configured",
        description: "The limit the upstream reports in its x-ratelimit-limit headers, and the configured one as a dashed line where both exist; apart, RatewardenLimitMismatch fires.",
        shape: Shape::Series {
            unit: "short",
            stack: false,
            dashed: Some(".* configured"),
        },
        width: 12,
        queries: &[
            (
                r#"max without (instance, pod) (ratewarden_upstream_limit{org=~"$org"})"#,
                "{{org}} {{dimension}} upstream",
            ),
            (
                r#"max without (instance, pod) (ratewarden_limit{org=~"$org",model=""}) and on (org, dimension) max without (instance, pod) (ratewarden_upstream_limit{org=~"$org"})"#,
                "{{org}} {{dimension}} configured",
            ),
        ],
    },
    Spec {
        title: "Usage drift",
        description: "How far the usage the upstream's headers imply is from ratewarden's own count; far from 0, some traffic bypasses ratewarden or is counted twice.",
        shape: series("short", false),
        width: 12,
        queries: &[(
            r#"max without (instance, pod) (ratewarden_usage_drift{org=~"$org"})"#,
            "{{org}} {{dimension}}",
        )],
    },
];

/// The rows below the usage row, top to bottom.
pub(super) const ROWS: &[(&str, &[Spec])] = &[
    (
        "Requests and 429s",
        &[
            Spec {
                title: "Requests by outcome",
                description: "All requests, 429s and errors included (they all count).",
                shape: series("reqps", true),
                width: 8,
                queries: &[(
                    r#"sum by (outcome) (max without (instance, pod) (rate(ratewarden_requests_total{org=~"$org",app=~"$app"}[$__rate_interval])))"#,
                    "{{outcome}}",
                )],
            },
            Spec {
                title: "429s by most likely cause",
                description: "quota, concurrency, rpm, daily, burst, or unexplained.",
                shape: series("reqps", true),
                width: 8,
                queries: &[(
                    r#"sum by (cause) (max without (instance, pod) (rate(ratewarden_rate_limited_total{org=~"$org",app=~"$app"}[$__rate_interval])))"#,
                    "{{cause}}",
                )],
            },
            Spec {
                title: "Bursts and Retry-After violations",
                description: "Burst episodes per org; requests sent before a 429's Retry-After elapsed.",
                shape: series("short", false),
                width: 8,
                queries: &[
                    (
                        r#"sum by (org) (max without (instance, pod) (increase(ratewarden_bursts_total{org=~"$org"}[$__rate_interval])))"#,
                        "{{org}} bursts",
                    ),
                    (
                        r#"sum by (org, app) (max without (instance, pod) (increase(ratewarden_retry_violations_total{org=~"$org",app=~"$app"}[$__rate_interval])))"#,
                        "{{org}}/{{app}} violations",
                    ),
                ],
            },
        ],
    ),
    (
        "Jobs",
        &[
            Spec {
                title: "Stuck jobs",
                description: "Jobs in flight longer than detect.stuck_after.",
                shape: series("short", false),
                width: 8,
                queries: &[(
                    r#"max by (org) (ratewarden_jobs_stuck{org=~"$org"})"#,
                    "{{org}}",
                )],
            },
            Spec {
                title: "Jobs finished by outcome",
                description: "completed, failed, cancelled, timed_out (released after detect.release_after).",
                shape: series("ops", true),
                width: 8,
                queries: &[(
                    r#"sum by (outcome) (max without (instance, pod) (rate(ratewarden_jobs_finished_total{org=~"$org"}[$__rate_interval])))"#,
                    "{{outcome}}",
                )],
            },
            Spec {
                title: "Job duration",
                description: "Median and 90th percentile of finished jobs.",
                shape: series("s", false),
                width: 8,
                queries: &[
                    (
                        r#"histogram_quantile(0.5, sum by (le) (max without (instance, pod) (rate(ratewarden_job_duration_seconds_bucket{org=~"$org"}[$__rate_interval]))))"#,
                        "p50",
                    ),
                    (
                        r#"histogram_quantile(0.9, sum by (le) (max without (instance, pod) (rate(ratewarden_job_duration_seconds_bucket{org=~"$org"}[$__rate_interval]))))"#,
                        "p90",
                    ),
                ],
            },
        ],
    ),
    (
        "Alerts and notifications",
        &[
            Spec {
                title: "Alert states",
                description: "Every alert firing now, with its org, dimension and severity.",
                shape: Shape::Table,
                width: 8,
                queries: &[(
                    r#"max without (instance, pod) (ratewarden_alerts_firing{org=~"$org"}) > 0"#,
                    "",
                )],
            },
            Spec {
                title: "Notifications by outcome",
                description: "sent; retried (will be tried again); failed (given up).",
                shape: series("short", false),
                width: 8,
                queries: &[(
                    "sum by (channel, outcome) (increase(ratewarden_notifications_total[$__rate_interval]))",
                    "{{channel}} {{outcome}}",
                )],
            },
            // The outbox backlog gauge (notifications_pending) is not one of SPEC §8's
            // metrics, so the dashboard shows what was given up; the rules watch the backlog.
            Spec {
                title: "Notifications given up (24 h)",
                description: "Notifications not delivered before alerts.max_age, per channel.",
                shape: Shape::Stat {
                    unit: "none",
                    red_from: Some(1),
                },
                width: 8,
                queries: &[(
                    r#"sum by (channel) (increase(ratewarden_notifications_total{outcome="failed"}[24h]))"#,
                    "{{channel}}",
                )],
            },
        ],
    ),
    (
        "Off-peak windows and batches",
        &[
            Spec {
                title: "Off-peak window open",
                description: "1 while an off-peak window is open (batches in offpeak mode are sent).",
                shape: series("bool_yes_no", false),
                width: 8,
                queries: &[("max(ratewarden_offpeak_open)", "open")],
            },
            Spec {
                title: "Batch items by state",
                description: "Items of deferred batches: pending, in_flight, retrying, succeeded, failed, cancelled.",
                shape: series("short", true),
                width: 8,
                queries: &[(
                    r#"sum by (state) (max without (instance, pod) (ratewarden_batch_items{org=~"$org"}))"#,
                    "{{state}}",
                )],
            },
            Spec {
                title: "Batch requests by outcome",
                description: "Requests the dispatcher sent upstream.",
                shape: series("reqps", true),
                width: 8,
                queries: &[(
                    r#"sum by (outcome) (rate(ratewarden_batch_requests_total{org=~"$org"}[$__rate_interval]))"#,
                    "{{outcome}}",
                )],
            },
        ],
    ),
    (
        "Ingest health",
        &[
            Spec {
                title: "Events ingested by source",
                description: "Accepted events per source (http, file sources, scheduler).",
                shape: series("ops", true),
                width: 8,
                queries: &[(
                    "sum by (source) (rate(ratewarden_events_ingested_total[$__rate_interval]))",
                    "{{source}}",
                )],
            },
            Spec {
                title: "Events rejected by reason",
                description: "invalid_json, missing_org, invalid_field, future_timestamp, too_large.",
                shape: series("ops", false),
                width: 8,
                queries: &[(
                    "sum by (source, reason) (rate(ratewarden_events_rejected_total[$__rate_interval]))",
                    "{{source}} {{reason}}",
                )],
            },
            Spec {
                title: "Series overflow",
                description: "Events routed to __overflow__ past max_orgs / max_apps_per_org, and jobs dropped past max_jobs_per_org.",
                shape: series("ops", false),
                width: 4,
                queries: &[(
                    "sum by (kind) (max without (instance, pod) (rate(ratewarden_series_overflow_total[$__rate_interval])))",
                    "{{kind}}",
                )],
            },
            Spec {
                title: "Version",
                description: "Running ratewarden versions.",
                shape: Shape::Stat {
                    unit: "none",
                    red_from: None,
                },
                width: 4,
                queries: &[("count by (version) (ratewarden_build_info)", "{{version}}")],
            },
        ],
    ),
];

/// What each dimension is called on its gauge and its usage panel.
pub(super) struct Words {
    /// Completes "Share of each org's … limit in use now."
    pub(super) what: &'static str,
    /// Title of the usage panel.
    pub(super) title: &'static str,
    /// Grafana unit of the usage panel.
    pub(super) unit: &'static str,
}

pub(super) fn words(d: Dimension) -> Words {
    let (what, title, unit) = match d {
        Dimension::Rpm => (
            "requests per minute",
            "Requests per minute vs limit",
            "reqpm",
        ),
        Dimension::Daily => ("daily quota", "Daily requests vs daily limit", "short"),
        Dimension::Concurrency => (
            "jobs in flight",
            "Jobs in flight vs concurrency limit",
            "short",
        ),
        Dimension::Tpm => ("tokens per minute", "Tokens per minute vs limit", "short"),
        Dimension::Tpd => (
            "rolling 24 h token quota",
            "Rolling 24 h tokens vs daily token limit",
            "short",
        ),
        Dimension::Ipm => ("images per minute", "Images per minute vs limit", "short"),
        Dimension::Itpm => (
            "input tokens per minute",
            "Input tokens per minute vs limit",
            "short",
        ),
        Dimension::Otpm => (
            "output tokens per minute",
            "Output tokens per minute vs limit",
            "short",
        ),
        Dimension::BatchQueueTokens => ("batch queue", "Batch queue tokens vs limit", "short"),
    };
    Words { what, title, unit }
}
