//! A file source on a replica of a cluster. Its lines count once the shared log holds them,
//! and where its files got to is what the shared engine holds (stored in the same `MULTI` as
//! the lines, [`crate::cluster::SharedStore`]). So the source waits for each step to be in
//! the log before it reads on, and when the log did not take a step (Redis away, or an
//! append that timed out and may or may not have landed) it asks the engine where each file
//! stands and reads again from there: the lines of an append that landed are not read twice,
//! those of one that did not are not lost. While the engine cannot be reached the source
//! reads nothing, its offsets where the engine has them, but goes on scanning its glob: a file
//! rotated in and out again during an outage is held open and read once the engine is back.

use std::collections::HashMap;
use std::time::Duration;

use tokio::runtime::Handle;

use crate::cluster::{ClusterError, SharedLog, stored_checkpoints};
use crate::live::{DurableError, Live};
use crate::store::Checkpoint;

/// How long one wait for a commit lasts before the source looks at its files again.
const WAIT_STEP: Duration = Duration::from_millis(250);

/// Where a step of a source stands.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Settled {
    /// In the shared log.
    Stored,
    /// Not taken: read again from the engine's checkpoints.
    NotStored,
    /// Not known yet: ask again.
    Waiting,
    /// The writer is gone (the daemon is stopping): stop reading.
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

    /// Where commit `seq` (from [`Live::apply`]) stands, waiting up to a quarter of a second
    /// for it to be in the shared log or known not to be. Short, so that the source goes on
    /// scanning for rotated files while the engine does not answer.
    pub(super) fn settled(&self, live: &Live, seq: u64) -> Settled {
        match self.runtime.block_on(live.durable_at(seq, WAIT_STEP)) {
            Ok(()) => Settled::Stored,
            Err(DurableError::NotStored) => Settled::NotStored,
            Err(DurableError::Stopped) => Settled::Stopping,
            Err(DurableError::Timeout(_)) => Settled::Waiting,
        }
    }

    /// `source`'s checkpoints as the engine holds them, by file identity: one attempt (the
    /// source scans its files between two).
    pub(super) fn checkpoints(
        &self,
        source: &str,
    ) -> Result<HashMap<String, Checkpoint>, ClusterError> {
        let all = self.runtime.block_on(stored_checkpoints(&self.log))?;
        Ok(all
            .into_iter()
            .filter(|c| c.source == source)
            .map(|c| (c.file.clone(), c))
            .collect())
    }
}
