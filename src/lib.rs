//! ratewarden: a usage monitor and Prometheus exporter for rate-limited APIs.
//!
//! # Layout
//!
//! Data moves one way; the modules below are listed in that order. Imports go downward only,
//! in the layers the README's Architecture section lists (`tests/architecture.rs` checks it).
//!
//! * [`model`]: at the bottom, the words every stage shares (dimensions, alert names,
//!   severities, tier limits, the overflow series, name checks, the stable hash); it imports
//!   no stage.
//! * [`config`]: the TOML file, parsed once into a validated [`config::Config`].
//! * **sources**: where events come from. [`server`] takes `POST /v1/events` and OTLP
//!   (`/v1/traces`, `/v1/logs`); [`sources`]
//!   tails log files (JSON, nginx, Envoy) and polls providers' admin APIs for an org's limits
//!   ([`sources::limits`]); [`replay`] reads files offline.
//! * [`events`]: the one intake path all three share: [`events::intake`] normalises and frames
//!   bytes, [`events::format`] decodes records, and validation makes a [`events::Event`] (with
//!   the fields that did not parse) or one rejection reason.
//! * [`tracker`]: per org, org/app and model scope rolling windows, jobs in flight and
//!   counters, in event time (a limit source's values laid over the configured scopes); it hands each event to the detectors, judging current state at each org's present.
//! * [`detect`]: bursts, 429 causes, retry violations and storms, and the alert state
//!   machines; their output is [`detect::Transition`]s.
//! * [`live`]: the tracker shared by the daemon's tasks; applies events and journals them
//!   with the file offsets they reached, in one critical section.
//! * [`store`]: underneath, what survives a restart (journal, snapshots, checkpoints, the
//!   outbox, batches and their items), behind the narrow [`store::StateStore`] trait; SQLite
//!   by default. Records stored as bytes carry a typed, versioned envelope ([`store::record`]).
//! * [`cluster`]: beside the store, for several replicas: the shared, ordered log on Redis or
//!   Valkey (connection, keys, appends, reads), the leader's lease, and the
//!   [`store::StateStore`] whose journal, file checkpoints and batch records go there; it
//!   treats entries as opaque bytes. [`live`] of a replica only journals what comes in and
//!   applies the log, its own entries included, in the log's order, keeping the log's batch
//!   records beside the tracker for the [`scheduler`], which dispatches only on the leader.
//! * [`outbox`]: which channels get a transition, and the outbox entry (stable delivery id)
//!   [`live`] writes for each in the commit that caused it.
//! * [`alerts`]: delivery of outbox entries by email and webhook, one worker per channel;
//!   [`alerts::render`] presents a transition (SPEC §9 JSON, email, Slack, Alertmanager).
//! * [`metrics`]: everything above as Prometheus metrics at `/metrics`; scrape-time values
//!   come from a [`metrics::ScrapeSource`] (the live state), which it does not import.
//! * [`scheduler`]: beside the tracker, deferred batches dispatched upstream in the
//!   [`offpeak`] windows, paced by the tracker's usage; its answers go back in as events.
//! * [`daemon`]: wires the long-running pieces (HTTP server, sources, writer, delivery,
//!   dispatcher, clock ticks, shutdown).
//! * [`generate`]: beside it all, the Prometheus rules and Grafana dashboard that match a
//!   config (`ratewarden generate`); the shipped `alerts/` and `dashboards/` files are its
//!   output for the built-in defaults.
//! * [`cli`]: the CLI commands that are clients (`status`, `batch …`, `health`, `alerts
//!   test`), of a running daemon or of the alert channels.
//! * [`outbound`]: what every outbound request shares (webhooks, upstream APIs, the CLI): the
//!   HTTP client (user agent, no redirects, timeouts), capped answer reading with echoed
//!   secrets scrubbed, `Retry-After`, full-jitter backoff, and what may be shown of a URL.
//!
//! [`clock`] supplies "now" to everything that needs it; nothing reads the wall clock itself.
//! [`assets`] holds the files compiled in for the pages (the vendored chart library).

#![deny(missing_docs)]

pub use outbound::USER_AGENT;

pub mod alerts;
pub mod assets;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod detect;
pub mod events;
pub mod generate;
pub mod live;
pub mod metrics;
pub mod model;
pub mod offpeak;
pub mod outbound;
pub mod outbox;
pub mod replay;
pub mod scheduler;
pub mod server;
pub mod sources;
pub mod store;
pub mod tracker;
