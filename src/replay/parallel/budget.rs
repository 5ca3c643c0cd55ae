//! The budget a threaded replay holds what is in flight to: the bytes read and the records
//! decoded from them, not yet applied, counted as blocks are read and released as they are
//! let go, with the waits of the threads over it.
//!
//! Must never: let a thread wait for room that only it could release.

use std::sync::{Condvar, Mutex};

/// What is read and not yet applied (its bytes, and the records decoded or to be decoded from
/// them), and the budgets it is held to. A block is let in only while both stay under their
/// budgets (or nothing else is in flight, so a block holding one long line still goes): a
/// slow block cannot make the others pile up.
pub(super) struct InFlight {
    pub(super) state: Mutex<Held>,
    freed: Condvar,
    pub(super) budget: Cost,
}

/// Memory counted against a budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Cost {
    pub(super) bytes: usize,
    pub(super) records: usize,
}

impl Cost {
    pub(super) fn over(self, budget: Cost) -> bool {
        self.bytes > budget.bytes || self.records > budget.records
    }

    pub(super) fn plus(self, other: Cost) -> Cost {
        Cost {
            bytes: self.bytes + other.bytes,
            records: self.records + other.records,
        }
    }

    pub(super) fn minus(self, other: Cost) -> Cost {
        Cost {
            bytes: self.bytes.saturating_sub(other.bytes),
            records: self.records.saturating_sub(other.records),
        }
    }
}

pub(super) struct Held {
    /// Counted now.
    pub(super) cost: Cost,
    /// The applier has stopped: nothing will be released again.
    stopped: bool,
    /// The block the applier takes next: its decoder never waits, since every block held
    /// waits for it.
    next: u64,
}

impl Held {
    /// Whether `n` more fits `budget` (always when nothing is held, so that a block holding
    /// one long line still goes).
    fn fits(&self, n: Cost, budget: Cost) -> bool {
        self.cost == Cost::default() || !self.cost.plus(n).over(budget)
    }
}

/// What [`InFlight::admit`] did.
pub(super) enum Admit {
    Counted,
    /// It does not fit now.
    NoRoom,
    /// The applier has stopped: nothing will be released again.
    Stopped,
}

impl InFlight {
    /// Nothing held, against `budget`.
    pub(super) fn new(budget: Cost) -> InFlight {
        InFlight {
            state: Mutex::new(Held {
                cost: Cost::default(),
                stopped: false,
                next: 0,
            }),
            freed: Condvar::new(),
            budget,
        }
    }

    /// Counts `n` more if it fits now (always when nothing is held). No thread waits here:
    /// one that finds no room takes up chores or waits outside every lock
    /// ([`InFlight::wait_for_room`]).
    pub(super) fn admit(&self, n: Cost) -> Admit {
        let Ok(mut state) = self.state.lock() else {
            return Admit::Stopped;
        };
        if state.stopped {
            Admit::Stopped
        } else if state.fits(n, self.budget) {
            state.cost = state.cost.plus(n);
            Admit::Counted
        } else {
            Admit::NoRoom
        }
    }

    /// Counts `n` bytes more of records that block `seq` turned out to need when decoded (a
    /// line of several objects has a record for each), released with the block; with
    /// `wait`, then waits while over the budget, until the applier needs this block next.
    /// So decoders stop decoding while such records are held (`n` = 0: only the wait).
    pub(super) fn add_records(&self, n: usize, seq: u64, wait: bool) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        state.cost.records += n;
        while wait && !state.stopped && state.cost.over(self.budget) && state.next != seq {
            state = match self.freed.wait(state) {
                Ok(s) => s,
                Err(_) => return,
            };
        }
    }

    /// True while more is held than the budget.
    pub(super) fn over(&self) -> bool {
        self.state.lock().is_ok_and(|s| s.cost.over(self.budget))
    }

    /// The applier takes block `seq` next.
    pub(super) fn applying(&self, seq: u64) {
        if let Ok(mut state) = self.state.lock() {
            state.next = seq;
        }
        self.freed.notify_all();
    }

    pub(super) fn release(&self, n: Cost) {
        if let Ok(mut state) = self.state.lock() {
            state.cost = state.cost.minus(n);
        }
        self.freed.notify_all();
    }

    /// Wakes the threads waiting for room, to take up chores queued since.
    pub(super) fn nudge(&self) {
        // Taken so that no waiter is between its check of the chores and its wait.
        drop(self.state.lock());
        self.freed.notify_all();
    }

    /// Waits until `n` more fits, the applier stops or `chores_ready` (other work for the
    /// thread, looked at again whenever [`InFlight::nudge`] or a release wakes it).
    pub(super) fn wait_for_room(&self, n: Cost, chores_ready: impl Fn() -> bool) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        while !state.stopped && !state.fits(n, self.budget) && !chores_ready() {
            state = match self.freed.wait(state) {
                Ok(s) => s,
                Err(_) => return,
            };
        }
    }

    /// The applier has stopped: no thread must wait for it.
    pub(super) fn close(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.stopped = true;
        }
        self.freed.notify_all();
    }
}
