//! The daemon's limit sources (`[[limit_sources]]`): one poller task per source, whose good
//! polls are put in force in the live state and whose `LimitSourceFailing` transitions go to
//! the channels like the tracker's. It starts and stops them; it decides nothing itself.

use tokio::sync::watch;

use crate::config::Config;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::sources::limits::{Source, run};

/// How long connecting to an admin API may take, within each source's `timeout`.
const CONNECT_MS: i64 = 10_000;

/// Starts polling every configured limit source, until `stop` turns true; `None` when there
/// is none. The admin keys are read from their variables here (`run` refused to start
/// without them: [`Config::missing_secrets`]).
pub(super) fn start(
    config: &Config,
    live: &Live,
    metrics: &Metrics,
    mut stop: watch::Receiver<bool>,
) -> Result<Option<tokio::task::JoinHandle<()>>, String> {
    if config.limit_sources.is_empty() {
        return Ok(None);
    }
    let sources = config
        .limit_sources
        .iter()
        .map(|c| Source::from_env(c.clone()).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    // Each request sets its source's own timeout; this one only bounds what none sets.
    let longest = config
        .limit_sources
        .iter()
        .map(|c| c.timeout_ms)
        .max()
        .unwrap_or(30_000);
    let client = crate::outbound::client(longest, CONNECT_MS)?;
    let (limits, alerts) = (live.clone(), live.clone());
    let stopped = async move {
        let _ = stop.wait_for(|&stopping| stopping).await;
    };
    Ok(Some(tokio::spawn(run(
        sources,
        client,
        live.clock(),
        metrics.limit_sources(),
        move |polled| limits.set_sourced_limits(&polled),
        move |t| alerts.notify_external(t),
        stopped,
    ))))
}
