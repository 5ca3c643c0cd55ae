//! A replica's lease task (`[cluster]`): keeps or takes the lead, notes this instance under
//! its replica id (two running instances with one id both stop), notes the config's
//! fingerprint and counts the replicas that run another, marks the leader caught up with
//! the log (batches are dispatched only then), and notices an engine that lost its data
//! ([`crate::cluster::EngineMark`]). It never applies the log nor sends anything.

use std::time::Duration;

use tokio::sync::watch;

use crate::cluster::{EngineMark, EntryId, Leadership, Presence, SharedLog, differing};
use crate::live::Live;
use crate::store::StateStore;

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
    let mut said = EngineSaid::default();
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
        check_engine(&log, &live, &mut said).await;
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
            Err(e) if e.is_unreachable() => {
                tracing::warn!(error = %e, "cannot reach the shared engine for the lease; not leading")
            }
            Err(e) => {
                tracing::error!(error = %e, "the shared engine refused the lease; not leading")
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

/// Joins the shared engine at start-up: notes a new cluster id in an empty engine, and says so
/// when the engine no longer holds the one this replica (`store`) last started on; returns
/// the engine's mark and whether it lost its data since (then the file checkpoints this
/// replica kept locally may stand in for those the engine lost). Errors name the part that
/// failed, and why.
pub(super) async fn join_engine(
    log: &SharedLog,
    store: &mut dyn StateStore,
) -> Result<(EngineMark, bool), (&'static str, String)> {
    let store_error = |e: crate::store::StoreError| ("the local store (cluster id)", e.to_string());
    let noted_before = store.cluster_id().map_err(store_error)?;
    let last = noted_before.map(|(id, _)| id);
    // Put back after a loss, the id comes with a new incarnation, so that every replica
    // that started on the engine before learns of the loss.
    let fresh = EngineMark {
        id: last.unwrap_or_else(|| fastrand::u64(1..)),
        incarnation: fastrand::u64(..),
    };
    let (held, noted) = log
        .mark_engine(fresh)
        .await
        .map_err(|e| ("the shared engine's cluster id", e.to_string()))?;
    match last {
        Some(last) if noted => {
            tracing::error!(
                cluster = last,
                "the shared engine holds none of this cluster's data (FLUSHALL, a Redis restarted without persistence, or another Redis behind redis_url), and no running replica put it back: this replica starts from what the engine holds now; usage counted before is lost, and file sources start their files over from read_from"
            );
        }
        Some(last) if last != held.id => {
            tracing::warn!(
                last,
                now = held.id,
                "this replica last ran on another cluster's engine (another redis_url or key_prefix): it starts from this one's state"
            );
        }
        None if noted => tracing::info!(
            cluster = held.id,
            "a new cluster: its id is noted in the shared engine"
        ),
        _ => {}
    }
    let lost = match noted_before {
        Some(_) if noted => true,
        Some((id, incarnation)) if id == held.id && held.incarnation != incarnation => {
            tracing::warn!(
                "the shared engine lost its data since this replica last started (it was put back since: its incarnation changed)"
            );
            true
        }
        _ => false,
    };
    if noted_before != Some((held.id, held.incarnation)) {
        store
            .note_cluster_id(held.id, held.incarnation)
            .map_err(store_error)?;
    }
    Ok((held, lost))
}

/// What [`check_engine`] has said once already.
#[derive(Default)]
struct EngineSaid {
    /// Another cluster's id the engine holds.
    other: Option<u64>,
    /// The engine's id does not read.
    unreadable: bool,
}

/// Notices, once per lease period, an engine that lost its data since this replica joined
/// it: it no longer holds the cluster id. The first replica to notice puts the id back with
/// a new incarnation; each replica that sees the new incarnation puts back what it holds
/// (its sources' checkpoints; the leader a snapshot). `said` keeps what is said only once.
async fn check_engine(log: &SharedLog, live: &Live, said: &mut EngineSaid) {
    let Some(known) = live.engine() else {
        return;
    };
    let next = EngineMark {
        id: known.id,
        incarnation: fastrand::u64(..),
    };
    match log.mark_engine(next).await {
        Ok((_, true)) => {
            tracing::error!(
                cluster = known.id,
                "the shared engine lost its data (its cluster id was gone: FLUSHALL, a Redis restarted without persistence?); putting back what the replicas hold: the leader's snapshot, each replica's file checkpoints. request_id dedupe and delivered marks from before are lost"
            );
            live.note_engine(next);
        }
        Ok((held, false)) if held.id == known.id && held.incarnation != known.incarnation => {
            tracing::warn!(
                incarnation = held.incarnation,
                "another replica found the shared engine's data lost; putting back what this replica holds"
            );
            live.note_engine(held);
        }
        Ok((held, false)) if held.id != known.id && said.other != Some(held.id) => {
            tracing::error!(
                joined = known.id,
                now = held.id,
                "the shared engine now holds another cluster's data (redis_url or key_prefix shared with another cluster?): this replica's answers no longer match it"
            );
            said.other = Some(held.id);
        }
        Ok(_) => {}
        Err(e) if e.is_unreachable() => {
            tracing::debug!(error = %e, "cannot read the shared engine's cluster id")
        }
        // Junk under the key: a loss would go unnoticed while it stays; said once.
        Err(e) => {
            if !std::mem::replace(&mut said.unreadable, true) {
                tracing::error!(error = %e, "the shared engine's cluster id does not read: a loss of its data is not noticed until it does");
            }
        }
    }
}
