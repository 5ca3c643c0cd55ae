//! The embedded store: SQLite (bundled) in WAL mode in `[storage].path`.
//!
//! Commits are full-sync transactions: once [`StateStore::commit`] returns, the data survives a
//! crash of the process and of the machine. A lock file keeps a second daemon out of the same
//! directory. The schema carries a version (`PRAGMA user_version`) and upgrades itself through
//! its migration list; a newer schema than this binary knows is refused, never guessed at.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use rusqlite::blob::ZeroBlob;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};

use super::{
    BatchRecord, Checkpoint, Commit, ItemRecord, OutboxEntry, OutboxUpdate, Recovered, Snapshot,
    StateStore, StoreError,
};

/// Schema migrations, applied in order; entry `i` takes the schema from version `i` to `i+1`.
/// Later features (the alert outbox, batches) add entries here.
const MIGRATIONS: &[&str] = &[
    // 1: journal, snapshot, file checkpoints, sources.
    "CREATE TABLE snapshot (
         id INTEGER PRIMARY KEY CHECK (id = 1),
         seq INTEGER NOT NULL,
         state BLOB NOT NULL
     );
     CREATE TABLE journal (
         seq INTEGER PRIMARY KEY,
         events INTEGER NOT NULL,
         data BLOB NOT NULL
     );
     CREATE TABLE checkpoints (
         source TEXT NOT NULL,
         file TEXT NOT NULL,
         path TEXT NOT NULL,
         byte_offset INTEGER NOT NULL,
         head_len INTEGER NOT NULL,
         head_hash INTEGER NOT NULL,
         PRIMARY KEY (source, file)
     );
     CREATE TABLE sources (
         name TEXT PRIMARY KEY
     );
     CREATE TABLE meta (
         key TEXT PRIMARY KEY,
         value INTEGER NOT NULL
     );",
    // 2: the alert outbox; rowid keeps commit order, which delivery follows per channel.
    "CREATE TABLE outbox (
         id TEXT NOT NULL UNIQUE,
         channel TEXT NOT NULL,
         created_ms INTEGER NOT NULL,
         attempts INTEGER NOT NULL DEFAULT 0,
         next_attempt_ms INTEGER NOT NULL,
         last_error TEXT,
         payload BLOB NOT NULL
     );",
    // 3: deferred batches and their items (encoded by the scheduler).
    "CREATE TABLE batches (
         id TEXT NOT NULL UNIQUE,
         payload BLOB NOT NULL
     );
     CREATE TABLE batch_items (
         batch_id TEXT NOT NULL,
         idx INTEGER NOT NULL,
         payload BLOB NOT NULL,
         PRIMARY KEY (batch_id, idx)
     );",
];

/// The database file in the data directory.
pub const FILE: &str = "state.sqlite";

/// Tables and their columns, in the order [`SqliteStore::salvage`] copies them.
const TABLES: &[(&str, &str)] = &[
    ("meta", "key, value"),
    ("snapshot", "id, seq, state"),
    ("journal", "seq, events, data"),
    (
        "checkpoints",
        "source, file, path, byte_offset, head_len, head_hash",
    ),
    ("sources", "name"),
    (
        "outbox",
        "id, channel, created_ms, attempts, next_attempt_ms, last_error, payload",
    ),
    ("batches", "id, payload"),
    ("batch_items", "batch_id, idx, payload"),
];

/// SQLite-backed [`StateStore`].
pub struct SqliteStore {
    conn: Connection,
    /// The database file.
    path: PathBuf,
    /// Held for the life of the store; the OS releases it if the process dies.
    _lock: File,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// What SQLite says about a file that is not (or no longer) a sound database, as
/// [`StoreError::Damaged`]; other errors as they are.
fn classify(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |e| match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::Damaged {
            path: path.display().to_string(),
            why: e.to_string(),
        },
        // Reading failed below SQLite: a file cut short (a copy that stopped, a truncation
        // under its write-ahead log) reads this way as well as a failing disk. Either way the
        // operator needs the file named and the way out, not "disk I/O error" alone.
        Some(ErrorCode::SystemIoFailure) => {
            let code = match &e {
                rusqlite::Error::SqliteFailure(f, _) => f.extended_code,
                _ => 0,
            };
            StoreError::Damaged {
                path: path.display().to_string(),
                why: format!(
                    "reading it failed ({e}, SQLite code {code}): it may be cut short, or the disk may be failing (check the kernel log)"
                ),
            }
        }
        _ => StoreError::Sqlite(e),
    }
}

/// `path` with `suffix` appended to its file name (`state.sqlite` → `state.sqlite-wal`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// `state.sqlite.damaged-YYYYMMDDTHHMMSSZ` beside `db`, not yet taken.
fn aside_name(db: &Path) -> PathBuf {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let mut n = 0;
    loop {
        let suffix = if n == 0 {
            format!(".damaged-{stamp}")
        } else {
            format!(".damaged-{stamp}-{n}")
        };
        let p = with_suffix(db, &suffix);
        if !p.exists() {
            return p;
        }
        n += 1;
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store in directory `dir`, takes its lock and brings the
    /// schema up to date.
    ///
    /// A new store is built under a temporary name and renamed into place once its schema is
    /// written, so `state.sqlite` is never legitimately empty: an empty one, a write-ahead log
    /// without its database, or a file SQLite cannot read is [`StoreError::Damaged`], never a
    /// first start.
    pub fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path: PathBuf = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    path: dir.display().to_string(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        let path = dir.join(FILE);
        let damaged = |why: &str| StoreError::Damaged {
            path: path.display().to_string(),
            why: why.to_string(),
        };
        match std::fs::metadata(&path) {
            Ok(m) if m.len() == 0 => {
                return Err(damaged(
                    "it is empty (0 bytes), which no ratewarden writes: its contents are gone",
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if with_suffix(&path, "-wal").exists() {
                    return Err(damaged(
                        "it is missing but its write-ahead log (state.sqlite-wal) is there",
                    ));
                }
                SqliteStore::create(dir, &path)?;
            }
            Err(e) => return Err(io(&path)(e)),
        }
        let conn = Connection::open(&path).map_err(classify(&path))?;
        let mut store = SqliteStore {
            conn,
            path: path.clone(),
            _lock: lock,
        };
        store.configure().map_err(classify(&path))?;
        store.migrate()?;
        Ok(store)
    }

    fn configure(&mut self) -> Result<(), rusqlite::Error> {
        self.conn.pragma_update(None, "journal_mode", "WAL")?;
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        self.conn.pragma_update(None, "foreign_keys", "ON")?;
        // A page cache of 1 MiB, not SQLite's default 2 000 KiB: what the store reads back
        // is the newest snapshot and the journal after it, once at start; the rest is
        // appended. The default's second half stayed resident at 10 000 orgs, for nothing.
        self.conn.pragma_update(None, "cache_size", -1024)?;
        // Reads the header and the schema: a file that is not a database fails here.
        self.conn
            .query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            })?;
        Ok(())
    }

    /// Writes an empty store with the current schema as `path`, atomically.
    fn create(dir: &Path, path: &Path) -> Result<(), StoreError> {
        let tmp = dir.join(format!("{FILE}.new"));
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let _ = std::fs::remove_file(with_suffix(&tmp, suffix));
        }
        {
            let conn = Connection::open(&tmp)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            let tx = conn.unchecked_transaction()?;
            for sql in MIGRATIONS {
                tx.execute_batch(sql)?;
            }
            tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
            tx.commit()?;
            // Closing checkpoints the log into the file, so the file alone is the store.
            conn.close().map_err(|(_, e)| e)?;
        }
        std::fs::rename(&tmp, path).map_err(io(path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
        tracing::info!(path = %path.display(), "new store created");
        Ok(())
    }

    /// `run --recover` after [`StoreError::Damaged`]: moves the damaged file (and its log)
    /// aside as `state.sqlite.damaged-TIME`, creates a new store and copies into it every row
    /// that can still be read from the damaged one, table by table. Returns the new store and
    /// what was kept and lost, one line each, for the log. Call it with no store open on
    /// `dir`.
    pub fn salvage(dir: &Path) -> Result<(SqliteStore, Vec<String>), StoreError> {
        let path = dir.join(FILE);
        let aside = aside_name(&path);
        let mut report = Vec::new();
        let mut kept = Vec::new();
        for suffix in ["", "-wal", "-shm"] {
            let from = with_suffix(&path, suffix);
            if let Ok(m) = std::fs::metadata(&from) {
                let to = with_suffix(&aside, suffix);
                std::fs::rename(&from, &to).map_err(io(&from))?;
                kept.push(format!("{} ({} bytes)", to.display(), m.len()));
            }
        }
        report.push(format!(
            "the damaged store is kept as {}; nothing reads or writes it from now on",
            kept.join(", ")
        ));
        let mut store = SqliteStore::open(dir)?;
        // Read from a scratch copy: opening a database can change its files (SQLite
        // checkpoints or discards a write-ahead log), and the kept copy must stay as found.
        let scratch = dir.join(format!("{FILE}.salvage"));
        match SqliteStore::scratch_copy(&aside, &scratch) {
            Ok(()) => store.copy_from(&scratch, &mut report),
            Err(e) => report.push(format!(
                "nothing could be read from it ({e}): every count, checkpoint, notification and batch it held is lost"
            )),
        }
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let _ = std::fs::remove_file(with_suffix(&scratch, suffix));
        }
        Ok((store, report))
    }

    /// Copies the kept database (and its log) to `scratch` for reading. A database file that
    /// is empty or missing while its write-ahead log holds pages is given a fresh empty
    /// database to stand on, so that SQLite reads the log instead of discarding it.
    fn scratch_copy(aside: &Path, scratch: &Path) -> Result<(), StoreError> {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let _ = std::fs::remove_file(with_suffix(scratch, suffix));
        }
        let main_len = std::fs::metadata(aside).map(|m| m.len()).unwrap_or(0);
        let wal = with_suffix(aside, "-wal");
        let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        if main_len == 0 && wal_len > 0 {
            // Pages not written since the last checkpoint are only in the lost database,
            // the schema among them: an empty store of this schema puts its tables where the
            // log expects them.
            let dir = scratch.parent().unwrap_or(Path::new("."));
            SqliteStore::create(dir, scratch)?;
        } else if main_len > 0 {
            std::fs::copy(aside, scratch).map_err(io(aside))?;
        } else {
            return Err(StoreError::Damaged {
                path: aside.display().to_string(),
                why: "neither the database nor its write-ahead log holds anything".into(),
            });
        }
        if wal_len > 0 {
            let to = with_suffix(scratch, "-wal");
            std::fs::copy(&wal, &to).map_err(io(&wal))?;
        }
        Ok(())
    }

    /// Copies every readable row of `from` into this (new, empty) store.
    fn copy_from(&mut self, from: &Path, report: &mut Vec<String>) {
        let src = match Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_WRITE) {
            Ok(c) => c,
            Err(e) => {
                report.push(format!("nothing could be read from it ({e}): every count, checkpoint, notification and batch it held is lost"));
                return;
            }
        };
        let tx = match self.conn.transaction() {
            Ok(tx) => tx,
            Err(e) => {
                report.push(format!("cannot write the new store: {e}"));
                return;
            }
        };
        for (table, cols) in TABLES {
            let mut read = 0u64;
            let copied = (|| -> Result<(), rusqlite::Error> {
                // The notes of what must be there describe the damaged store, not this one.
                let only = if *table == "meta" {
                    " WHERE key NOT IN ('snapshot_seq', 'journal_seq')"
                } else {
                    ""
                };
                let mut get = src.prepare(&format!("SELECT {cols} FROM {table}{only}"))?;
                let n = get.column_count();
                let marks = vec!["?"; n].join(", ");
                let mut put = tx.prepare(&format!(
                    "INSERT OR REPLACE INTO {table} ({cols}) VALUES ({marks})"
                ))?;
                let mut rows = get.query([])?;
                while let Some(row) = rows.next()? {
                    let values = (0..n)
                        .map(|i| row.get::<_, rusqlite::types::Value>(i))
                        .collect::<Result<Vec<_>, _>>()?;
                    put.execute(rusqlite::params_from_iter(values))?;
                    read += 1;
                }
                Ok(())
            })();
            match copied {
                Ok(()) => report.push(format!("{table}: {read} rows kept")),
                Err(e) => report.push(format!("{table}: {read} rows kept, the rest is lost ({e})")),
            }
        }
        if let Err(e) = tx.commit() {
            report.push(format!("cannot write the new store: {e}"));
        }
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew {
                found: version,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
            tx.commit()?;
            tracing::info!(version = i + 1, "store schema upgraded");
        }
        Ok(())
    }

    /// The schema version in use.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }
}

/// Sets `key` in the `meta` table to `value`.
fn set_meta(conn: &Connection, key: &str, value: i64) -> rusqlite::Result<usize> {
    // Cached: every commit sets one to three keys, and parsing the statement again each
    // time was a percent of durable ingest.
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, value])
}

impl StateStore for SqliteStore {
    fn recover(&mut self) -> Result<Recovered, StoreError> {
        let shown = self.path.display().to_string();
        let damaged = |why: String| StoreError::Damaged {
            path: shown.clone(),
            why,
        };
        for (table, _) in TABLES {
            let found: i64 = self
                .conn
                .query_row(
                    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                    [table],
                    |r| r.get(0),
                )
                .map_err(classify(&self.path))?;
            if found == 0 {
                return Err(damaged(format!("its table {table} is missing")));
            }
        }
        let rec = self.read_all().map_err(classify(&self.path))?;
        let noted: Option<i64> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'snapshot_seq'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(classify(&self.path))?;
        let stored = rec.snapshot.as_ref().map(|s| s.seq as i64);
        if let Some(noted) = noted
            && stored.is_none_or(|s| s < noted)
        {
            return Err(damaged(format!(
                "the snapshot of commit {noted} is missing{}",
                stored.map_or(String::new(), |s| format!(
                    " (an older one, of commit {s}, is there)"
                ))
            )));
        }
        let newest: Option<i64> = self
            .conn
            .query_row("SELECT MAX(seq) FROM journal", [], |r| r.get(0))
            .map_err(classify(&self.path))?;
        let journal_noted: Option<i64> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'journal_seq'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(classify(&self.path))?;
        if let Some(noted) = journal_noted
            && newest.max(stored).is_none_or(|top| top < noted)
        {
            return Err(damaged(format!(
                "the journal entry of commit {noted} (the newest) is missing: the events it held are lost"
            )));
        }
        Ok(rec)
    }

    fn journal_after(&mut self, seq: u64, f: &mut dyn FnMut(u64, &[u8])) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq, data FROM journal WHERE seq > ?1 ORDER BY seq")
            .map_err(classify(&self.path))?;
        let mut rows = stmt.query([seq as i64]).map_err(classify(&self.path))?;
        while let Some(row) = rows.next().map_err(classify(&self.path))? {
            let s: i64 = row.get(0)?;
            let data = row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
            f(s as u64, data);
        }
        Ok(())
    }

    fn cluster_id(&mut self) -> Result<Option<(u64, u64)>, StoreError> {
        let get = |key: &str| -> Result<Option<i64>, rusqlite::Error> {
            self.conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
        };
        // The u64s are kept as the i64s of the same bits (SQLite integers are signed).
        Ok(match (get("cluster_id")?, get("cluster_incarnation")?) {
            (Some(id), incarnation) => Some((id as u64, incarnation.unwrap_or(0) as u64)),
            (None, _) => None,
        })
    }

    fn note_cluster_id(&mut self, id: u64, incarnation: u64) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for (key, value) in [("cluster_id", id), ("cluster_incarnation", incarnation)] {
            set_meta(&tx, key, value as i64)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn keep_copy(&mut self) -> Result<String, StoreError> {
        let aside = aside_name(&self.path);
        self.conn
            .execute("VACUUM INTO ?1", [aside.display().to_string()])
            .map_err(classify(&self.path))?;
        Ok(aside.display().to_string())
    }

    fn commit(&mut self, c: &Commit<'_>) -> Result<(), StoreError> {
        self.write(c)
    }
}

impl SqliteStore {
    fn read_all(&mut self) -> Result<Recovered, rusqlite::Error> {
        let snapshot: Option<Snapshot> = self
            .conn
            .query_row("SELECT seq, state FROM snapshot WHERE id = 1", [], |r| {
                Ok(Snapshot {
                    seq: r.get::<_, i64>(0)? as u64,
                    state: r.get(1)?,
                })
            })
            .optional()?;
        let last_journal: Option<i64> =
            self.conn
                .query_row("SELECT MAX(seq) FROM journal", [], |r| r.get(0))?;
        let last_meta: Option<i64> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'last_seq'", [], |r| {
                r.get(0)
            })
            .optional()?;
        let snap_seq = snapshot.as_ref().map_or(0, |s| s.seq);
        let journal_events: i64 = self.conn.query_row(
            "SELECT COALESCE(SUM(events), 0) FROM journal WHERE seq > ?1",
            [snap_seq as i64],
            |r| r.get(0),
        )?;
        let mut stmt = self.conn.prepare(
            "SELECT source, file, path, byte_offset, head_len, head_hash FROM checkpoints",
        )?;
        let checkpoints = stmt
            .query_map([], |r| {
                Ok(Checkpoint {
                    source: r.get(0)?,
                    file: r.get(1)?,
                    path: r.get(2)?,
                    offset: r.get::<_, i64>(3)? as u64,
                    head_len: r.get::<_, i64>(4)? as u32,
                    head_hash: r.get::<_, i64>(5)? as u64,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut stmt = self.conn.prepare("SELECT name FROM sources")?;
        let started_sources = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        let mut stmt = self.conn.prepare(
            "SELECT id, channel, created_ms, attempts, next_attempt_ms, last_error, payload
             FROM outbox ORDER BY rowid",
        )?;
        let outbox = stmt
            .query_map([], |r| {
                Ok(OutboxEntry {
                    id: r.get(0)?,
                    channel: r.get(1)?,
                    created_ms: r.get(2)?,
                    attempts: r.get::<_, i64>(3)? as u32,
                    next_attempt_ms: r.get(4)?,
                    last_error: r.get(5)?,
                    payload: r.get(6)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut stmt = self
            .conn
            .prepare("SELECT id, payload FROM batches ORDER BY rowid")?;
        let batches = stmt
            .query_map([], |r| {
                Ok(BatchRecord {
                    id: r.get(0)?,
                    record: r.get(1)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut stmt = self.conn.prepare(
            "SELECT i.batch_id, i.idx, i.payload FROM batch_items i JOIN batches b ON b.id = i.batch_id
             ORDER BY b.rowid, i.idx",
        )?;
        let batch_items = stmt
            .query_map([], |r| {
                Ok(ItemRecord {
                    batch: r.get(0)?,
                    index: r.get::<_, i64>(1)? as u32,
                    record: r.get(2)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let last_seq = [last_journal, last_meta, Some(snap_seq as i64)]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(0) as u64;
        Ok(Recovered {
            snapshot,
            last_seq,
            checkpoints,
            started_sources,
            journal_events: journal_events as u64,
            outbox,
            batches,
            batch_items,
        })
    }

    fn write(&mut self, c: &Commit<'_>) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        match c.snapshot {
            Some(state) => {
                let len = i32::try_from(state.len()).map_err(|_| StoreError::Io {
                    path: self.path.display().to_string(),
                    source: std::io::Error::other(
                        "a snapshot over 2 GiB cannot be stored in SQLite",
                    ),
                })?;
                // The row gets a blob of the right size, then the snapshot is written into it
                // in place: bound as a parameter it would be copied whole first, doubling
                // what a snapshot costs in memory.
                tx.execute(
                    "INSERT INTO snapshot (id, seq, state) VALUES (1, ?1, ?2)
                     ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, state = excluded.state",
                    params![c.seq as i64, ZeroBlob(len)],
                )?;
                let mut blob = tx.blob_open(c"main", "snapshot", "state", 1, false)?;
                blob.write_at(state, 0)?;
                blob.close()?;
                tx.execute("DELETE FROM journal WHERE seq <= ?1", [c.seq as i64])?;
            }
            None if c.events > 0 => {
                tx.prepare_cached("INSERT INTO journal (seq, events, data) VALUES (?1, ?2, ?3)")?
                    .execute(params![c.seq as i64, c.events as i64, c.journal])?;
            }
            None => {}
        }
        {
            let mut put = tx.prepare_cached(
                "INSERT INTO checkpoints (source, file, path, byte_offset, head_len, head_hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (source, file) DO UPDATE SET path = excluded.path,
                   byte_offset = excluded.byte_offset, head_len = excluded.head_len,
                   head_hash = excluded.head_hash",
            )?;
            for cp in c.checkpoints {
                put.execute(params![
                    cp.source,
                    cp.file,
                    cp.path,
                    cp.offset as i64,
                    cp.head_len as i64,
                    cp.head_hash as i64
                ])?;
            }
            let mut del =
                tx.prepare_cached("DELETE FROM checkpoints WHERE source = ?1 AND file = ?2")?;
            for f in c.forget {
                del.execute(params![f.source, f.file])?;
            }
            let mut started =
                tx.prepare_cached("INSERT OR IGNORE INTO sources (name) VALUES (?1)")?;
            for name in c.started_sources {
                started.execute([name])?;
            }
            // A re-created notification (same id) after a crash is the same notification.
            let mut add = tx.prepare_cached(
                "INSERT OR IGNORE INTO outbox (id, channel, created_ms, attempts, next_attempt_ms, last_error, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for n in c.outbox_new {
                add.execute(params![
                    n.id,
                    n.channel,
                    n.created_ms,
                    n.attempts as i64,
                    n.next_attempt_ms,
                    n.last_error,
                    n.payload
                ])?;
            }
            let mut batch = tx.prepare_cached(
                "INSERT INTO batches (id, payload) VALUES (?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET payload = excluded.payload",
            )?;
            for b in c.batches {
                batch.execute(params![b.id, b.record])?;
            }
            let mut item = tx.prepare_cached(
                "INSERT INTO batch_items (batch_id, idx, payload) VALUES (?1, ?2, ?3)
                 ON CONFLICT (batch_id, idx) DO UPDATE SET payload = excluded.payload",
            )?;
            for i in c.batch_items {
                item.execute(params![i.batch, i.index as i64, i.record])?;
            }
            let mut drop_items =
                tx.prepare_cached("DELETE FROM batch_items WHERE batch_id = ?1")?;
            let mut drop_batch = tx.prepare_cached("DELETE FROM batches WHERE id = ?1")?;
            for id in c.batches_dropped {
                drop_items.execute([id])?;
                drop_batch.execute([id])?;
            }
            let mut done = tx.prepare_cached("DELETE FROM outbox WHERE id = ?1")?;
            let mut retry = tx.prepare_cached(
                "UPDATE outbox SET attempts = ?2, next_attempt_ms = ?3, last_error = ?4 WHERE id = ?1",
            )?;
            for u in c.outbox_updates {
                match u {
                    OutboxUpdate::Done(id) => {
                        done.execute([id])?;
                    }
                    OutboxUpdate::Retry {
                        id,
                        attempts,
                        next_attempt_ms,
                        last_error,
                    } => {
                        retry.execute(params![
                            id,
                            *attempts as i64,
                            next_attempt_ms,
                            last_error
                        ])?;
                    }
                }
            }
        }
        set_meta(&tx, "last_seq", c.seq as i64)?;
        // So that a snapshot or a last journal entry that goes missing is noticed, not taken
        // for a first start or a quiet end.
        let note = |key: &str| set_meta(&tx, key, c.seq as i64);
        if c.snapshot.is_some() {
            note("snapshot_seq")?;
            note("journal_seq")?;
        } else if c.events > 0 {
            note("journal_seq")?;
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FileRef;

    fn batch(id: &str, record: &[u8]) -> BatchRecord {
        BatchRecord {
            id: id.into(),
            record: record.to_vec(),
        }
    }

    fn item(batch: &str, index: u32, record: &[u8]) -> ItemRecord {
        ItemRecord {
            batch: batch.into(),
            index,
            record: record.to_vec(),
        }
    }

    fn cp(file: &str, offset: u64) -> Checkpoint {
        Checkpoint {
            source: "logs".into(),
            file: file.into(),
            path: format!("/var/log/{file}"),
            offset,
            head_len: 10,
            head_hash: u64::MAX - 1,
        }
    }

    #[test]
    fn journal_snapshot_and_checkpoints_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = SqliteStore::open(dir.path()).unwrap();
            assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
            let r = s.recover().unwrap();
            assert!(r.snapshot.is_none());
            assert_eq!(r.last_seq, 0);
            s.commit(&Commit {
                seq: 1,
                journal: b"one",
                events: 1,
                checkpoints: &[cp("1:2", 100)],
                started_sources: &["logs".to_string()],
                ..Commit::default()
            })
            .unwrap();
            s.commit(&Commit {
                seq: 2,
                journal: b"two",
                events: 2,
                checkpoints: &[cp("1:2", 250), cp("1:3", 7)],
                ..Commit::default()
            })
            .unwrap();
        }
        let mut s = SqliteStore::open(dir.path()).unwrap();
        let r = s.recover().unwrap();
        assert_eq!(r.last_seq, 2);
        assert_eq!(r.journal_events, 3);
        assert_eq!(r.started_sources, vec!["logs".to_string()]);
        let mut cps = r.checkpoints.clone();
        cps.sort_by(|a, b| a.file.cmp(&b.file));
        assert_eq!(
            cps,
            vec![cp("1:2", 250), cp("1:3", 7)],
            "u64 hashes survive i64 storage"
        );
        let mut seen = Vec::new();
        s.journal_after(0, &mut |seq, d| seen.push((seq, d.to_vec())))
            .unwrap();
        assert_eq!(seen, vec![(1, b"one".to_vec()), (2, b"two".to_vec())]);

        // A snapshot replaces the journal up to its seq.
        s.commit(&Commit {
            seq: 3,
            snapshot: Some(b"state-3"),
            forget: &[FileRef {
                source: "logs".into(),
                file: "1:3".into(),
            }],
            ..Commit::default()
        })
        .unwrap();
        s.commit(&Commit {
            seq: 4,
            journal: b"four",
            events: 1,
            ..Commit::default()
        })
        .unwrap();
        let r = s.recover().unwrap();
        assert_eq!(
            r.snapshot,
            Some(Snapshot {
                seq: 3,
                state: b"state-3".to_vec()
            })
        );
        assert_eq!(r.last_seq, 4);
        assert_eq!(r.journal_events, 1);
        assert_eq!(r.checkpoints.len(), 1);
        let mut seen = Vec::new();
        s.journal_after(3, &mut |seq, _| seen.push(seq)).unwrap();
        assert_eq!(seen, vec![4]);
    }

    #[test]
    fn outbox_entries_keep_order_and_follow_updates() {
        let dir = tempfile::tempdir().unwrap();
        let entry = |id: &str| OutboxEntry {
            id: id.into(),
            channel: "hook".into(),
            created_ms: 5,
            attempts: 0,
            next_attempt_ms: 5,
            last_error: None,
            payload: id.as_bytes().to_vec(),
        };
        {
            let mut s = SqliteStore::open(dir.path()).unwrap();
            s.commit(&Commit {
                seq: 1,
                outbox_new: &[entry("b"), entry("a"), entry("c")],
                ..Commit::default()
            })
            .unwrap();
            s.commit(&Commit {
                seq: 2,
                outbox_new: &[entry("a")],
                outbox_updates: &[
                    OutboxUpdate::Done("c".into()),
                    OutboxUpdate::Retry {
                        id: "a".into(),
                        attempts: 2,
                        next_attempt_ms: 99,
                        last_error: "503 busy".into(),
                    },
                ],
                ..Commit::default()
            })
            .unwrap();
        }
        let r = SqliteStore::open(dir.path()).unwrap().recover().unwrap();
        let ids: Vec<_> = r.outbox.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            ids,
            vec!["b", "a"],
            "commit order; a duplicate id is ignored"
        );
        assert_eq!((r.outbox[1].attempts, r.outbox[1].next_attempt_ms), (2, 99));
        assert_eq!(r.outbox[1].last_error.as_deref(), Some("503 busy"));
    }

    #[test]
    fn dropped_batches_go_with_their_items() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = SqliteStore::open(dir.path()).unwrap();
            s.commit(&Commit {
                seq: 1,
                batches: &[batch("b1", b"one"), batch("b2", b"two")],
                batch_items: &[item("b1", 0, b"x"), item("b2", 0, b"y")],
                ..Commit::default()
            })
            .unwrap();
            s.commit(&Commit {
                seq: 2,
                batches_dropped: &["b1".into()],
                ..Commit::default()
            })
            .unwrap();
        }
        let r = SqliteStore::open(dir.path()).unwrap().recover().unwrap();
        assert_eq!(r.batches, vec![batch("b2", b"two")]);
        assert_eq!(r.batch_items, vec![item("b2", 0, b"y")]);
    }

    #[test]
    fn batches_and_items_are_upserted() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = SqliteStore::open(dir.path()).unwrap();
            s.commit(&Commit {
                seq: 1,
                batches: &[batch("b2", b"two"), batch("b1", b"one")],
                batch_items: &[
                    item("b1", 1, b"x"),
                    item("b1", 0, b"y"),
                    item("b2", 0, b"z"),
                ],
                ..Commit::default()
            })
            .unwrap();
            s.commit(&Commit {
                seq: 2,
                batch_items: &[item("b1", 1, b"x2")],
                ..Commit::default()
            })
            .unwrap();
        }
        let r = SqliteStore::open(dir.path()).unwrap().recover().unwrap();
        assert_eq!(r.batches, vec![batch("b2", b"two"), batch("b1", b"one")]);
        assert_eq!(
            r.batch_items,
            vec![
                item("b2", 0, b"z"),
                item("b1", 0, b"y"),
                item("b1", 1, b"x2")
            ]
        );
    }

    #[test]
    fn a_second_opener_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = SqliteStore::open(dir.path()).unwrap();
        let err = SqliteStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("in use by another ratewarden"));
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteStore::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join("state.sqlite")).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = SqliteStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
    }
}
