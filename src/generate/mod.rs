//! `ratewarden generate`: the Prometheus rules and the Grafana dashboard that match a config.
//!
//! Owns the text of what users import: [`rules`] writes `alerts/ratewarden.rules.yml` and
//! [`dashboard`] writes `dashboards/ratewarden.json`; the shipped files are their output for
//! the built-in defaults, byte for byte (`tests/generate.rs` holds them to it). What a config
//! changes is read once into a [`Plan`]: the `UsageHigh` thresholds (`[alerts]` and each
//! `[[orgs]] thresholds` override) and the dimensions that have a limit.
//!
//! It reads a validated [`Config`](crate::config::Config) and nothing else: never a file, the
//! clock or the environment, and it iterates no hash map, so one config always gives the same
//! bytes. It must not grow a second source of truth: what a rule or panel says about the
//! config comes from the [`Plan`].

mod dashboard;
mod json;
mod panels;
mod plan;
mod rules;

pub use dashboard::{Datasource, dashboard};
pub use plan::{Pair, Plan};
pub use rules::rules;
