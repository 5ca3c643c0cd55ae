//! Admission on the live state: a grant is weighed and reserved in one critical section with
//! journaling it, so recovery holds the same reservations; on a replica the ask goes to the
//! shared log and is weighed where the log is applied, so every replica decides it alike and
//! in one order (the decision is atomic across replicas because the log is).
//!
//! A grant is answered before its journal entry is committed, and does not hurry the writer
//! (which commits it within its idle wait, 200 ms, or with the next change that is waited
//! for): a crash in between loses those reservations (each call's own event, when reported,
//! is then counted as any other), never a grant recorded twice.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::journal::{Admission, RecordRef};
use super::{Inner, Live};
use crate::tracker::{Ask, AttachError, Verdict};

/// How long a replica waits for its ask to come back from the shared log, decided.
const DECIDED_WITHIN: Duration = Duration::from_secs(5);

/// Why an ask was not answered.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    /// A replica's ask did not come back from the shared log in time (Redis unreachable or
    /// slow); it may still be decided and then holds its reservation until `lease_ttl`.
    #[error("the shared log did not decide the ask within {0:?} (is Redis reachable?)")]
    NotDecided(Duration),
}

/// A new lease id: 128 random bits as hex (unique, not a secret: the routes that take a
/// lease need the ingest token).
pub fn new_lease() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

impl Live {
    /// Weighs `ask` at the clock's now and reserves it under `lease` when it fits; with the
    /// name the org's series go by (`__overflow__` past `max_orgs`).
    pub async fn admit(
        &self,
        ask: &Ask<'_>,
        lease: &str,
    ) -> Result<(Verdict, Arc<str>), AdmitError> {
        let now = self.now_ms();
        let record = Admission {
            org: ask.org.into(),
            app: ask.app.into(),
            requests: ask.requests,
            tokens: ask.tokens,
            job: ask.job,
            request_id: ask.request_id.map(Into::into),
            lease: lease.into(),
            now,
            share_bp: ask.share_bp,
        };
        if let (true, Some(d)) = (self.shared, &self.durable) {
            let (tx, rx) = oneshot::channel();
            d.decisions_waiting(|w| w.insert(lease.into(), tx));
            self.lock().pending.record(&RecordRef::Ask(&record));
            self.wake_writer();
            let decided = tokio::time::timeout(DECIDED_WITHIN, rx).await;
            d.decisions_waiting(|w| w.remove(lease));
            return match decided {
                Ok(Ok(v)) => Ok((v, self.lock().tracker.tracked_as(ask.org))),
                _ => {
                    // The ask may still reach the log: its release follows it there, so a
                    // grant nobody was told of gives its room back where it is applied.
                    self.lock()
                        .pending
                        .record(&RecordRef::Release(lease, self.now_ms()));
                    self.wake_writer();
                    Err(AdmitError::NotDecided(DECIDED_WITHIN))
                }
            };
        }
        let mut out = Vec::new();
        let verdict = {
            let mut g = self.lock();
            let Inner { tracker, pending } = &mut *g;
            self.note_clock(tracker, pending, now);
            let v = tracker.admit(ask, lease, now, &mut out);
            if let Verdict::Granted {
                repeated: false, ..
            } = v
                && self.durable.is_some()
            {
                pending.record(&RecordRef::Grant(&record));
            }
            self.notify(pending, &out, now);
            (v, tracker.tracked_as(ask.org))
        };
        // No one waits for a grant to be stored: the writer takes it with the next commit
        // (within its idle wait), so asks do not each cost a commit. A transition does wake it.
        if !out.is_empty() {
            self.wake_writer();
        }
        super::logged::log(&out);
        Ok(verdict)
    }

    /// Notes that `n` admission asks of `org` wait in this process's queue.
    pub fn note_waiting(&self, org: &str, n: usize) {
        let mut w = self
            .asks_waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if n == 0 {
            w.remove(org);
        } else {
            w.insert(org.into(), n);
        }
    }

    /// Whether admission asks of `org` wait in this process's queue.
    pub fn waiting(&self, org: &str) -> bool {
        self.asks_waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(org)
    }

    /// Gives back the grant of `lease` (a job lease's slot is free at once); false when no
    /// grant of it is held. A replica answers from the state it has applied and sends the
    /// release through the shared log. With the commit to wait for ([`Live::durable_at`]).
    pub fn release(&self, lease: &str) -> (bool, u64) {
        let now = self.now_ms();
        let mut out = Vec::new();
        let held = {
            let mut g = self.lock();
            let Inner { tracker, pending } = &mut *g;
            let held = if self.shared {
                tracker.reservations().get_lease(lease)
            } else {
                tracker.release(lease, now, &mut out)
            };
            if held && self.durable.is_some() {
                pending.record(&RecordRef::Release(lease, now));
            }
            self.notify(pending, &out, now);
            (held, pending.seq)
        };
        self.wake_writer();
        super::logged::log(&out);
        held
    }

    /// Attaches upstream job `job_id` to the job lease `lease` (see
    /// [`crate::tracker::Tracker::attach`]); the commit to wait for.
    pub fn attach(&self, lease: &str, job_id: &str) -> Result<u64, AttachError> {
        let attached = {
            let mut g = self.lock();
            let Inner { tracker, pending } = &mut *g;
            let attached = if self.shared {
                tracker.can_attach(lease, job_id)
            } else {
                tracker.attach(lease, job_id)
            };
            if attached.is_ok() && self.durable.is_some() {
                pending.record(&RecordRef::Attach(lease, job_id));
            }
            attached.map(|()| pending.seq)
        };
        self.wake_writer();
        attached
    }
}
