//! A replica's side of the shared log (`[cluster]`): the entry it appends for the events it
//! takes in, and the loop that applies every entry of the log, in log order, to its own
//! tracker. A replica never applies its own events directly: the tracker's answers depend
//! on order (late events, bursts, which copy of a `request_id` counts), so every replica
//! applies the one order the log gives and all of them answer alike.
//!
//! An entry is a sealed journal entry (the SQLite journal's format 3): a clock note, then
//! the events. Its header's previous-commit field is 0: the log's ids order entries, and
//! the CRC still catches a damaged one.

use super::journal::{BadEntry, RecordRef, each_record, open_journal, seal_journal};
use super::recover::apply_record;
use super::*;
use crate::cluster::{ClusterError, EntryId, LogReader};

/// Entries read from the log per request.
const READ_BATCH: usize = 512;
/// How long one read waits for a new entry before checking whether to stop.
const READ_WAIT: Duration = Duration::from_millis(500);

impl Live {
    /// The log entry for `events` taken in at `now` (their missing `ts` set to `now`), led by
    /// a note of this replica's clock. Events that cannot be encoded are left out and counted
    /// as unencodable journal records, as in the SQLite journal.
    pub fn log_entry(&self, events: &mut [Event<'_>], now: i64) -> Vec<u8> {
        let mut pending = Pending::new(0);
        pending.record(&RecordRef::Clock(now));
        for ev in events.iter_mut() {
            ev.ts_ms.get_or_insert(now);
            pending.record(&RecordRef::Event(ev));
        }
        if let Some(d) = &self.durable {
            d.unencodable[JOURNAL].fetch_add(pending.unencodable[JOURNAL], Ordering::Relaxed);
        }
        let mut entry = pending.journal;
        seal_journal(&mut entry, 0);
        entry
    }

    /// Applies one log entry to the tracker, routing the notifications its transitions cause
    /// as [`Live::apply`] does; returns the records applied. A damaged entry is applied up to
    /// the first record that cannot be read, and is an error naming what was lost.
    pub fn apply_entry(&self, id: EntryId, entry: &[u8]) -> Result<u64, BadEntry> {
        let bad = |why: String| BadEntry { id, why };
        let (records, _) = open_journal(entry).map_err(bad)?;
        let mut out = Vec::new();
        let (read, unreadable) = {
            let mut g = self.lock();
            let Inner { tracker, pending } = &mut *g;
            each_record(records, |record| {
                let from = out.len();
                apply_record(tracker, &record, &mut out);
                let now = tracker.clock_ms();
                self.notify(pending, &out[from..], now);
            })
        };
        self.wake_writer();
        log(&out);
        match unreadable {
            None => Ok(read),
            Some(left) => Err(bad(format!(
                "{read} records applied, the last {left} bytes cannot be decoded"
            ))),
        }
    }

    /// Applies the log after `after` as it grows, publishing the id of the last entry
    /// applied on `applied`, until `stop` turns true (checked at least every half second).
    /// A damaged entry is logged and skipped (every replica skips it alike); an engine that
    /// fails is the error returned, the caller reconnects and calls again from the last id.
    pub async fn follow(
        &self,
        reader: &mut LogReader,
        applied: &watch::Sender<EntryId>,
        stop: &watch::Receiver<bool>,
    ) -> Result<(), ClusterError> {
        let mut after = *applied.borrow();
        while !*stop.borrow() {
            let entries = match reader.read_after(after, READ_BATCH, READ_WAIT).await {
                Ok(e) => e,
                Err(e) => {
                    self.note_log_readable(false);
                    return Err(e);
                }
            };
            self.note_log_readable(true);
            for e in &entries {
                if let Err(bad) = self.apply_entry(e.id, &e.bytes) {
                    tracing::error!(error = %bad, replica = %e.replica, "a shared log entry is damaged; what could not be read is lost");
                }
                after = e.id;
            }
            if !entries.is_empty() {
                applied.send_replace(after);
            }
        }
        Ok(())
    }
}
