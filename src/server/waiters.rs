//! The queues of admission asks that wait for room (`POST /v1/admit` with `wait`), one per
//! org, in arrival order; and what the admission routes share. It decides nothing: the
//! routes weigh asks through the live state.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::model::Dimension;
use crate::tracker::Verdict;

/// One org's asks waiting, in arrival order.
#[derive(Debug, Default)]
pub(super) struct Queue {
    pub(super) waiting: VecDeque<u64>,
    /// Woken when the head changes or a lease is given back.
    pub(super) changed: Arc<Notify>,
    /// The head's last refusal, answered to asks that arrive while it waits: (dimension,
    /// when it would fit).
    pub(super) head_refused: Option<(Dimension, Instant)>,
}

/// Every org's waiting asks (this process's).
#[derive(Debug, Default)]
pub struct Waiters {
    orgs: Mutex<HashMap<String, Queue>>,
    pub(super) next: AtomicU64,
}

impl Waiters {
    pub(super) fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Queue>) -> T) -> T {
        f(&mut self.orgs.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Takes `id` out of `org`'s queue (when it was the head, the next one weighs afresh)
    /// and wakes the rest; the number left waiting.
    pub(super) fn leave(&self, org: &str, id: u64) -> usize {
        self.with(|orgs| {
            let Some(q) = orgs.get_mut(org) else {
                return 0;
            };
            if q.waiting.front() == Some(&id) {
                q.head_refused = None;
            }
            q.waiting.retain(|&w| w != id);
            q.changed.notify_waiters();
            let left = q.waiting.len();
            if left == 0 {
                orgs.remove(org);
            }
            left
        })
    }

    /// Wakes every queue's head: a lease was given back.
    pub(super) fn wake_all(&self) {
        self.with(|orgs| {
            for q in orgs.values() {
                q.changed.notify_waiters();
            }
        });
    }
}

/// What an ask ended with.
pub(super) enum Answer {
    Decided(Verdict, Arc<str>),
    /// Refused after waiting until its deadline.
    TimedOut(Dimension, u64, Arc<str>),
}

/// What the admission routes share: the queues and `[admission] max_wait`.
#[derive(Debug)]
pub struct Admission {
    pub(super) waiters: Waiters,
    pub(super) max_wait: Duration,
}

impl Admission {
    /// Empty queues; asks may wait at most `max_wait`.
    pub fn new(max_wait: Duration) -> Admission {
        Admission {
            waiters: Waiters::default(),
            max_wait,
        }
    }
}

/// An ask's place in its org's queue. Dropping it leaves the queue, however the ask ended:
/// answered, or its client gone mid-wait (the handler's future is dropped), so one vanished
/// client never holds up the org's other asks.
pub(super) struct Place<'a> {
    pub(super) waiters: &'a Waiters,
    pub(super) org: &'a str,
    pub(super) id: u64,
    /// Told how many are left waiting (metrics, the dispatcher's view).
    pub(super) left: &'a (dyn Fn(usize) + Sync),
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let left = self.waiters.leave(self.org, self.id);
        (self.left)(left);
    }
}
