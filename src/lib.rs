//! ratewarden: a usage monitor and Prometheus exporter for rate-limited APIs.
//!
//! # Layout
//!
//! Data moves one way; the modules below are listed in that order.
//!
//! * [`config`]: the TOML file, parsed once into a validated [`config::Config`].
//! * **sources**: where events come from. [`server`] takes `POST /v1/events`; [`replay`]
//!   reads files offline. (The file tailer arrives with the store.)
//! * [`events`]: raw bytes to a validated [`events::Event`] or one rejection reason.
//! * [`tracker`]: per org and org/app rolling windows, jobs in flight and counters, in event
//!   time; it hands each event to the detectors.
//! * [`detect`]: bursts, 429 causes, retry violations and storms, and the alert state
//!   machines; their output is [`detect::Transition`]s.
//! * [`metrics`]: everything above as Prometheus metrics at `/metrics`.
//! * [`daemon`]: wires the long-running pieces (HTTP server, clock ticks, shutdown).
//! * [`status`]: the `status` command, a client of a running daemon.
//!
//! [`clock`] supplies "now" to everything that needs it; nothing reads the wall clock itself.
//! State lives in memory in this version; the embedded store comes next.

#![deny(missing_docs)]

pub mod clock;
pub mod config;
pub mod daemon;
pub mod detect;
pub mod events;
pub mod live;
pub mod metrics;
pub mod replay;
pub mod server;
pub mod sources;
pub mod status;
pub mod store;
pub mod tracker;
