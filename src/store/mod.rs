//! The store: everything that must survive a restart, behind one narrow boundary.
//!
//! State is kept as a journal plus snapshots. Every batch of applied events is appended as one
//! journal entry, in the same transaction as the file checkpoints those events reached, so a
//! crash never separates a count from the offset that produced it. Now and then a snapshot of
//! the whole tracker replaces the journal up to its sequence number. Recovery is: the
//! snapshot, then the journal after it.
//!
//! The store never interprets what it holds: snapshots and journal entries are opaque bytes
//! (the tracker encodes them), checkpoints are plain records. That keeps [`StateStore`] small
//! enough for a shared backend (Redis, for several replicas) to implement without touching
//! the tracker. [`sqlite::SqliteStore`] is the embedded default.

pub mod record;
pub mod sqlite;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the data directory.
    #[error(
        "{path} is in use by another ratewarden (lock held on {path}/LOCK); stop it or use another [storage] path"
    )]
    Locked {
        /// The data directory.
        path: String,
    },
    /// A file-system error around the data directory.
    #[error("{path}: {source}")]
    Io {
        /// What was being accessed.
        path: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The database failed.
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The shared engine of `[cluster]` (Redis, Valkey) failed or could not be reached.
    #[error("shared log: {0}")]
    Shared(String),
    /// The store's file is damaged: empty, not a database, corrupt pages, or entries that
    /// cannot be decoded. Its content is left as it is.
    #[error(
        "{path} is damaged: {why}. Its content was left as it is. To go on: restore it from a backup, or \
         start once with `ratewarden run --recover`, which keeps the damaged file beside it \
         (state.sqlite.damaged-TIME) and starts from what can be read of it, logging what was lost"
    )]
    Damaged {
        /// The file.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// The shared engine's snapshot (`[cluster]`) cannot be read. It is left as it is.
    #[error(
        "the shared snapshot (Redis key {key}) is damaged: {why}. It was left as it is. To go on: if \
         other replicas run, their leader writes a new one within [cluster] snapshot_interval: start \
         this replica again then; with none running, start once with `ratewarden run --recover`, \
         which copies the damaged snapshot to {key}:damaged-TIME and starts from the log after it, \
         logging what was lost"
    )]
    SharedDamaged {
        /// The snapshot's key.
        key: String,
        /// What is wrong with it.
        why: String,
    },
    /// The database was written by a newer ratewarden.
    #[error("the store has schema version {found}; this ratewarden knows up to {known}")]
    TooNew {
        /// Version found in the database.
        found: i64,
        /// Newest version this binary knows.
        known: i64,
    },
}

/// How far a file source has read one file (stored as JSON by a replica of a cluster).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// Source name.
    pub source: String,
    /// File identity: `device:inode`.
    pub file: String,
    /// Path where the file was last seen (for finding it after a rename).
    pub path: String,
    /// Byte offset after the last complete line counted.
    pub offset: u64,
    /// Bytes covered by `head_hash` (the file's first bytes, up to a limit).
    pub head_len: u32,
    /// Hash of the first `head_len` bytes, to tell a reused inode or a truncation.
    pub head_hash: u64,
}

/// A notification waiting in the outbox (its content is opaque to the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Delivery id, stable across retries and restarts.
    pub id: String,
    /// Channel name.
    pub channel: String,
    /// When it was created (Unix ms), for `max_age`.
    pub created_ms: i64,
    /// Attempts so far.
    pub attempts: u32,
    /// Not before this time (Unix ms).
    pub next_attempt_ms: i64,
    /// The receiver's last answer, when an attempt failed.
    pub last_error: Option<String>,
    /// The encoded notification.
    pub payload: Vec<u8>,
}

/// A change to an outbox entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboxUpdate {
    /// Delivered, or given up: the entry leaves the outbox.
    Done(String),
    /// Failed for now; try again later.
    Retry {
        /// Delivery id.
        id: String,
        /// Attempts so far.
        attempts: u32,
        /// Not before this time (Unix ms).
        next_attempt_ms: i64,
        /// The receiver's answer.
        last_error: String,
    },
}

/// A batch as stored: its id and its record (a [`record::Kind::Batch`] envelope, encoded by
/// the scheduler; opaque here).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BatchRecord {
    /// Batch id.
    pub id: String,
    /// The sealed record.
    pub record: Vec<u8>,
}

/// One item of a batch as stored (a [`record::Kind::BatchItem`] envelope, opaque here).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ItemRecord {
    /// Id of the batch it belongs to.
    pub batch: String,
    /// Its place in the batch, from 0.
    pub index: u32,
    /// The sealed record.
    pub record: Vec<u8>,
}

/// Batch records changed by one commit (or, for a snapshot, every batch record there is), as
/// replicas of a cluster exchange them through the shared log (postcard-encoded): each
/// replica keeps the latest record per batch and item, in log order.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BatchChanges {
    /// Batches created or changed, oldest first.
    pub batches: Vec<BatchRecord>,
    /// Items created or changed.
    pub items: Vec<ItemRecord>,
    /// Batches forgotten, with their items (after those above are taken).
    pub dropped: Vec<String>,
}

impl BatchChanges {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty() && self.items.is_empty() && self.dropped.is_empty()
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        // Strings, integers and byte vectors always encode.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Reads [`BatchChanges::encode`]'s form.
    pub fn decode(bytes: &[u8]) -> Result<BatchChanges, String> {
        postcard::from_bytes(bytes).map_err(|e| e.to_string())
    }
}

/// One file as a source knows it: the key of a [`Checkpoint`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    /// Source name.
    pub source: String,
    /// File identity: `device:inode`.
    pub file: String,
}

/// The latest snapshot of the whole tracker (encoded by the tracker, opaque here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The commit it covers: the journal after it starts at `seq + 1`.
    pub seq: u64,
    /// The encoded state.
    pub state: Vec<u8>,
}

/// One group commit.
#[derive(Debug, Default)]
pub struct Commit<'a> {
    /// Sequence number of this commit (strictly increasing).
    pub seq: u64,
    /// Encoded events applied since the previous commit, in the order applied.
    pub journal: &'a [u8],
    /// Number of events in `journal`.
    pub events: u64,
    /// A snapshot of the whole state after this commit's events; when present it replaces the
    /// previous snapshot and the journal up to `seq` (and `journal` is not written).
    pub snapshot: Option<&'a [u8]>,
    /// Checkpoints reached by this commit's events.
    pub checkpoints: &'a [Checkpoint],
    /// Checkpoints of files that are gone.
    pub forget: &'a [FileRef],
    /// Sources that ran for the first time (their `read_from` no longer applies afterwards).
    pub started_sources: &'a [String],
    /// Notifications caused by this commit's transitions.
    pub outbox_new: &'a [OutboxEntry],
    /// Outcomes of delivery attempts.
    pub outbox_updates: &'a [OutboxUpdate],
    /// Batches created or changed.
    pub batches: &'a [BatchRecord],
    /// Batch items created or changed.
    pub batch_items: &'a [ItemRecord],
    /// Batches forgotten, with their items (after those above are written).
    pub batches_dropped: &'a [String],
}

/// What a store holds at start-up.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The latest snapshot.
    pub snapshot: Option<Snapshot>,
    /// Highest sequence number committed.
    pub last_seq: u64,
    /// Every checkpoint.
    pub checkpoints: Vec<Checkpoint>,
    /// Sources that have run before.
    pub started_sources: Vec<String>,
    /// Events in the journal after the snapshot.
    pub journal_events: u64,
    /// Notifications not yet delivered, oldest first.
    pub outbox: Vec<OutboxEntry>,
    /// Every batch, oldest first.
    pub batches: Vec<BatchRecord>,
    /// Every batch item, by batch (oldest first) then index.
    pub batch_items: Vec<ItemRecord>,
}

/// Durable state, as the rest of ratewarden sees it: the one boundary a second backend
/// implements.
///
/// What must be atomic together, and why:
///
/// * **Everything in one [`Commit`]** — the journal entry (or the snapshot that replaces the
///   journal up to `seq`), the checkpoints its events reached, the outbox entries its
///   transitions caused, the outbox updates, batch and item records, and the noted `seq`.
///   A crash may lose a whole commit (its requests were not yet answered) but never part of
///   one: a count without the file offset that produced it is counted twice after a restart,
///   a transition without its notification is never sent, an item marked in flight without
///   its key is sent again under another.
/// * **Commits in `seq` order** — a commit is visible only after every earlier one; the
///   journal after a snapshot starts at the commit the snapshot covers.
/// * **[`StateStore::recover`] and [`StateStore::journal_after`] read one consistent
///   state** — no commit lands between them (one process holds the store while it starts).
///
/// Nothing else is promised: `keep_copy` is a best-effort copy for `run --recover`.
pub trait StateStore: Send {
    /// The snapshot, checkpoints and bookkeeping.
    fn recover(&mut self) -> Result<Recovered, StoreError>;

    /// Calls `f` with each journal entry after `seq`, in order.
    fn journal_after(&mut self, seq: u64, f: &mut dyn FnMut(u64, &[u8])) -> Result<(), StoreError>;

    /// Writes one group commit atomically.
    fn commit(&mut self, c: &Commit<'_>) -> Result<(), StoreError>;

    /// Where the state lives (a file, a server), for messages.
    fn location(&self) -> String;

    /// Keeps a copy of the state as it is now beside it (before `run --recover` drops what
    /// cannot be read); returns where.
    fn keep_copy(&mut self) -> Result<String, StoreError>;

    /// The error for state found damaged at recovery (`why`), naming where it is and how to
    /// go on.
    fn damaged(&self, why: String) -> StoreError {
        StoreError::Damaged {
            path: self.location(),
            why,
        }
    }

    /// The id and incarnation of the shared engine this replica last started on
    /// (`[cluster]`), if it noted them: what tells a restarted replica that the engine lost
    /// its data meanwhile.
    fn cluster_id(&mut self) -> Result<Option<(u64, u64)>, StoreError> {
        Ok(None)
    }

    /// Notes the id and incarnation of the shared engine this replica starts on.
    fn note_cluster_id(&mut self, _id: u64, _incarnation: u64) -> Result<(), StoreError> {
        Ok(())
    }
}
