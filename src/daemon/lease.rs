//! A replica's lease task (`[cluster]`): keeps or takes the lead, notes this instance under
//! its replica id (two running instances with one id both stop), notes the config's
//! fingerprint and counts the replicas that run another, and marks the leader caught up with
//! the log (batches are dispatched only then). It never applies the log nor sends anything.

use std::time::Duration;

use tokio::sync::watch;

use crate::cluster::{EntryId, Leadership, Presence, SharedLog, differing};
use crate::live::Live;

/// How long a lease lasts without renewal: a killed leader's successor takes over after it.
pub(super) const LEASE_TTL: Duration = Duration::from_secs(10);
/// A replica whose config note is older than this is not compared (it has stopped).
const CONFIG_RECENT_MS: i64 = 60_000;
/// How often the lease is renewed, or asked for.
pub(super) const LEASE_EVERY: Duration = Duration::from_secs(2);

/// Keeps the lead while this replica has it, and takes it when it is free, until `stop`;
/// notes this instance under its replica id each time, and sends on `twin` what another
/// instance running under the same id says of itself ([`Presence`]; `me` is this instance's
/// note, as it claimed the id); notes the config's `fingerprint` and tells `live` how many
/// replicas run another.
pub(super) async fn keep_the_lease(
    log: SharedLog,
    leadership: Leadership,
    mut stop: watch::Receiver<bool>,
    twin: tokio::sync::mpsc::Sender<String>,
    (live, fingerprint, me): (Live, u64, String),
    mut applied: Option<watch::Receiver<EntryId>>,
) {
    let mut differ: Vec<String> = Vec::new();
    let mut presence = Presence::default();
    let mut every = tokio::time::interval(LEASE_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => return,
        }
        if let Ok(before) = log.note_presence(&me, LEASE_TTL).await
            && let Some(other) = presence.judge(&me, before)
        {
            tracing::error!(other = %other, "another running ratewarden uses this replica_id; stopping");
            let _ = twin.send(other).await;
            return;
        }
        let now = live.now_ms();
        if let Ok(notes) = log.note_config(fingerprint, now).await {
            let now_differ =
                differing(log.replica_id(), fingerprint, &notes, now, CONFIG_RECENT_MS);
            if now_differ != differ {
                if now_differ.is_empty() {
                    tracing::info!("every replica seen lately runs this replica's config");
                } else {
                    tracing::warn!(replicas = ?now_differ, "these replicas run another config (limits, tiers, orgs, detection or alerts): their answers differ from this one's; expected only during a rolling change");
                }
                live.note_config_differs(now_differ.len() as u32);
                differ = now_differ;
            }
        }
        let before = leadership.token();
        match log.lead(&leadership, LEASE_TTL).await {
            Ok(now) if now != before => match now {
                Some(token) => {
                    tracing::info!(token, "leading: this replica delivers notifications")
                }
                None => tracing::info!("another replica leads"),
            },
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the shared engine for the lease; not leading")
            }
        }
        // Batches are dispatched only once what the previous leader recorded last is
        // applied here: the log as it is now, read to its end.
        if let Some(token) = leadership.token()
            && leadership.dispatching().is_none()
            && let Some(applied) = applied.as_mut()
            && let Ok(end) = log.last_id().await
            && tokio::time::timeout(LEASE_EVERY, applied.wait_for(|&at| at >= end))
                .await
                .is_ok_and(|r| r.is_ok())
        {
            leadership.caught_up(token);
            tracing::info!(token, up_to = %end, "caught up as leader: this replica dispatches batches");
        }
    }
}
