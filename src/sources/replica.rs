//! A file source on a replica of a cluster. Its lines count once the shared log holds them,
//! and where its files got to is what the shared engine holds (stored in the same `MULTI` as
//! the lines, [`crate::cluster::SharedStore`]). So the source waits for each step to be in
//! the log before it reads on, and when the log did not take a step (Redis away, or an
//! append that timed out and may or may not have landed) it asks the engine where each file
//! stands and reads again from there: the lines of an append that landed are not read twice,
//! those of one that did not are not lost. While the engine cannot be reached the source
//! waits, its offsets where the engine has them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::runtime::Handle;

use crate::cluster::{SharedLog, stored_checkpoints};
use crate::live::{DurableError, Live};
use crate::store::Checkpoint;

/// How long one wait for a commit lasts before the stop flag is looked at again.
const WAIT_STEP: Duration = Duration::from_secs(1);
/// Pause between two attempts to read the checkpoints from an engine that did not answer.
const RETRY: Duration = Duration::from_secs(1);

/// How a step of a source ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Settled {
    /// In the shared log.
    Stored,
    /// Not taken: read again from the engine's checkpoints.
    NotStored,
    /// The daemon is stopping (or the writer is gone): stop reading.
    Stopping,
}

/// The shared engine, as one replica's file sources see it.
#[derive(Clone)]
pub struct Replica {
    log: SharedLog,
    runtime: Handle,
}

impl Replica {
    /// Sources of this replica, on `log`; `runtime` runs its requests (the sources' threads
    /// are not the runtime's).
    pub fn new(log: SharedLog, runtime: Handle) -> Replica {
        Replica { log, runtime }
    }

    /// Waits until commit `seq` (from [`Live::apply`]) is in the shared log, or is known not
    /// to be, or `stop` is set.
    pub(super) fn settle(&self, live: &Live, seq: u64, stop: &AtomicBool) -> Settled {
        loop {
            match self.runtime.block_on(live.durable_at(seq, WAIT_STEP)) {
                Ok(()) => return Settled::Stored,
                Err(DurableError::NotStored) => return Settled::NotStored,
                Err(DurableError::Stopped) => return Settled::Stopping,
                Err(DurableError::Timeout(_)) if stop.load(Ordering::Acquire) => {
                    return Settled::Stopping;
                }
                Err(DurableError::Timeout(_)) => {}
            }
        }
    }

    /// `source`'s checkpoints as the engine holds them, by file identity; asked again each
    /// second while the engine does not answer. `None` once `stop` is set.
    pub(super) fn checkpoints(
        &self,
        source: &str,
        stop: &AtomicBool,
    ) -> Option<HashMap<String, Checkpoint>> {
        let mut logged = false;
        while !stop.load(Ordering::Acquire) {
            match self.runtime.block_on(stored_checkpoints(&self.log)) {
                Ok(all) => {
                    return Some(
                        all.into_iter()
                            .filter(|c| c.source == source)
                            .map(|c| (c.file.clone(), c))
                            .collect(),
                    );
                }
                Err(e) => {
                    if !logged {
                        tracing::warn!(source, error = %e, "cannot read this source's checkpoints from the shared engine; waiting for it");
                        logged = true;
                    }
                    std::thread::sleep(RETRY);
                }
            }
        }
        None
    }
}
