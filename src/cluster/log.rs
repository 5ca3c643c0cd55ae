//! The shared log on a Redis Stream (`XADD`, `XREAD`; Redis ≥ 5, Valkey alike): appends that
//! answer only once the entry is stored (and, with `min_replicas_ack`, held by that many
//! Redis replicas, `WAIT`), a file checkpoint stored in the same `MULTI`/`EXEC` as the entry
//! its lines produced, and reads in log order from any entry on.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::StreamReadReply;
use redis::{AsyncConnectionConfig, IntoConnectionInfo};

use super::settings::ClusterSettings;

/// How long one command may take before the engine counts as unreachable.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest `ack_timeout` a `WAIT` may be given: it must answer before the connection gives up
/// on the engine ([`RESPONSE_TIMEOUT`]), or a slow Redis replica would look like a lost
/// primary.
pub const MAX_ACK_TIMEOUT: Duration = Duration::from_secs(4);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait a reader asks `XREAD` for: its connection gives up on an engine that has not
/// answered past this and [`RESPONSE_TIMEOUT`] (a frozen Redis must not hold a reader, and
/// the daemon's shutdown behind it, forever).
pub const MAX_READ_WAIT: Duration = Duration::from_secs(2);

/// Why the shared engine did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The engine refused, or could not be reached.
    #[error("redis: {0}{hint}", hint = wrong_type_hint(.0))]
    Redis(#[from] redis::RedisError),
    /// Fewer Redis replicas than `min_replicas_ack` confirmed the entry in time; it is on the
    /// primary and may yet be lost with it.
    #[error(
        "only {got} of the {wanted} Redis replicas required (min_replicas_ack) confirmed the write within {timeout:?}"
    )]
    NotReplicated {
        /// `min_replicas_ack`.
        wanted: u32,
        /// Replicas that confirmed.
        got: u32,
        /// How long the append waited.
        timeout: Duration,
    },
    /// The engine is older than the log needs.
    #[error("the shared engine is Redis {0}; ratewarden needs Redis 7 or newer, or Valkey")]
    TooOld(String),
    /// The engine answered something this log never writes.
    #[error("unexpected answer from the shared log: {0}")]
    Reply(String),
}

/// What a `WRONGTYPE` answer means here: one of the keys under `key_prefix` holds something
/// ratewarden does not write there.
fn wrong_type_hint(e: &redis::RedisError) -> &'static str {
    if e.code() == Some("WRONGTYPE") {
        " (a key under [cluster] key_prefix holds another type than ratewarden writes there: \
         written by something else, or the prefix shared with another program? `redis-cli --scan \
         --pattern 'KEY_PREFIX:*'` and `TYPE` show which)"
    } else {
        ""
    }
}

impl ClusterError {
    /// True when the engine could not be reached, or answered that it cannot serve yet
    /// (still loading its data, no primary): worth asking again later. A refused password,
    /// an engine too old or an answer this log never writes are not.
    pub fn is_unreachable(&self) -> bool {
        match self {
            ClusterError::Redis(e) => {
                e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || matches!(e.retry_method(), redis::RetryMethod::WaitAndRetry)
            }
            ClusterError::NotReplicated { .. } => true,
            ClusterError::TooOld(_) | ClusterError::Reply(_) => false,
        }
    }
}

/// A log entry's id, as Redis Streams give them: milliseconds of the primary's clock, then a
/// sequence number within that millisecond. Ids only grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EntryId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

impl EntryId {
    /// Before every entry: reading after it reads the whole log.
    pub const ZERO: EntryId = EntryId { ms: 0, seq: 0 };
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for EntryId {
    type Err = ClusterError;

    /// `MS-SEQ`, as `XADD` answers and `XREAD` lists.
    fn from_str(s: &str) -> Result<EntryId, ClusterError> {
        let bad = || ClusterError::Reply(format!("{s:?} is not a stream entry id"));
        let (ms, seq) = s.split_once('-').ok_or_else(bad)?;
        Ok(EntryId {
            ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// One entry of the log as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its place in the log.
    pub id: EntryId,
    /// The replica that appended it.
    pub replica: String,
    /// What was appended (a journal entry; opaque here; empty when the entry carries only
    /// batch records).
    pub bytes: Vec<u8>,
    /// The batch records its commit changed, if any (opaque here).
    pub batches: Option<Vec<u8>>,
}

/// The latest snapshot in the shared engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedSnapshot {
    /// The entry it was taken after.
    pub at: EntryId,
    /// The tracker, sealed (opaque here).
    pub state: Vec<u8>,
    /// Every batch record as of `at` (opaque here), if the snapshot has them.
    pub batches: Option<Vec<u8>>,
}

/// What a replica's file sources reached, stored per replica (each tails its own files, and
/// its offsets mean nothing elsewhere). Opaque here: a field names a file, a record says
/// where it got to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FileMarks {
    /// `(file, record)` to store, replacing the file's previous record.
    pub set: Vec<(String, Vec<u8>)>,
    /// Files whose records go (the files are gone).
    pub forget: Vec<String>,
    /// Sources that ran for the first time.
    pub started: Vec<String>,
}

impl FileMarks {
    /// Nothing to store.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.forget.is_empty() && self.started.is_empty()
    }
}

/// Key names, all under the configured prefix.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
    log: String,
    checkpoints: String,
    started: String,
}

impl Keys {
    fn new(prefix: &str, replica: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
            log: format!("{prefix}:log"),
            // Per replica: each tails its own files, and its offsets mean nothing elsewhere.
            checkpoints: format!("{prefix}:checkpoints:{replica}"),
            started: format!("{prefix}:sources:{replica}"),
        }
    }
}

/// The log, for appending; [`SharedLog::reader`] opens a connection to read it.
///
/// Appends share one connection that reconnects by itself (the request that meets a broken
/// connection fails, the next one connects again), so an engine that went away and came back
/// needs nothing from the caller.
#[derive(Clone)]
pub struct SharedLog {
    client: redis::Client,
    conn: ConnectionManager,
    keys: Keys,
    replica: String,
    min_replicas_ack: u32,
    ack_timeout: Duration,
}

impl fmt::Debug for SharedLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedLog")
            .field("log", &self.keys.log)
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

impl SharedLog {
    /// Connects to the engine `settings` name, with the password given there (never one in
    /// the URL's place: the config refuses those).
    pub async fn connect(settings: &ClusterSettings) -> Result<SharedLog, ClusterError> {
        let mut info = settings.redis_url.as_str().into_connection_info()?;
        if let Some(password) = &settings.password {
            let redis = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(redis);
        }
        let client = redis::Client::open(info)?;
        // One attempt at start-up: an engine that is not there is the caller's error to show.
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let mut conn = ConnectionManager::new_with_config(client.clone(), manager).await?;
        // Connecting does not authenticate: a wrong or missing password shows on the first
        // command, so ask now, and check the engine speaks what the log needs.
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await?;
        check_version(&info)?;
        Ok(SharedLog {
            client,
            conn,
            keys: Keys::new(&settings.key_prefix, &settings.replica_id),
            replica: settings.replica_id.clone(),
            min_replicas_ack: settings.min_replicas_ack,
            ack_timeout: settings.ack_timeout,
        })
    }

    /// Appends `entry`, and with it (in one `MULTI`/`EXEC`) this replica's file `marks`;
    /// returns its id once stored, and once held by `min_replicas_ack` Redis replicas when
    /// that is set. An error means the entry may or may not be in the log (its marks with it,
    /// or neither): the caller must not acknowledge it.
    pub async fn append(&self, entry: &[u8], marks: &FileMarks) -> Result<EntryId, ClusterError> {
        self.append_with(entry, None, marks).await
    }

    /// [`SharedLog::append`] of an entry that also carries `batches` (opaque here), the
    /// batch records its commit changed, in the entry's `k` field.
    pub async fn append_with(
        &self,
        entry: &[u8],
        batches: Option<&[u8]>,
        marks: &FileMarks,
    ) -> Result<EntryId, ClusterError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("XADD")
            .arg(&self.keys.log)
            .arg("*")
            .arg("r")
            .arg(&self.replica)
            .arg("b")
            .arg(entry);
        if let Some(k) = batches {
            pipe.arg("k").arg(k);
        }
        self.add_marks(&mut pipe, marks);
        // Each command's outcome on its own: a MULTI does not undo the others when one fails
        // (a key of another type), and an entry that is in the log is counted, so it must be
        // answered stored, or its lines would be read and counted again.
        pipe.ignore_errors();
        let mut conn = self.conn.clone();
        let results: Vec<redis::RedisResult<redis::Value>> = pipe.query_async(&mut conn).await?;
        let mut results = results.into_iter();
        let id: String = match results.next() {
            Some(Ok(v)) => redis::from_redis_value(v)
                .map_err(|e| ClusterError::Reply(format!("XADD answered {e}")))?,
            Some(Err(e)) => return Err(e.into()),
            None => return Err(ClusterError::Reply("no answer to XADD".into())),
        };
        for failed in results.filter_map(Result::err) {
            tracing::error!(key = %self.keys.checkpoints, error = %ClusterError::from(failed), "the entry is in the shared log, but this replica's file checkpoints could not be stored with it: a restart would read those lines again");
        }
        self.wait_for_replicas(&mut conn).await?;
        id.parse()
    }

    /// Stores this replica's file `marks` alone (files opened, forgotten, sources started:
    /// nothing for the log), as [`SharedLog::append`] stores them with an entry.
    pub async fn mark_files(&self, marks: &FileMarks) -> Result<(), ClusterError> {
        if marks.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        self.add_marks(&mut pipe, marks);
        let mut conn = self.conn.clone();
        let _: redis::Value = pipe.query_async(&mut conn).await?;
        self.wait_for_replicas(&mut conn).await
    }

    fn add_marks(&self, pipe: &mut redis::Pipeline, marks: &FileMarks) {
        if !marks.set.is_empty() {
            pipe.cmd("HSET").arg(&self.keys.checkpoints);
            for (file, record) in &marks.set {
                pipe.arg(file).arg(record);
            }
        }
        if !marks.forget.is_empty() {
            pipe.cmd("HDEL")
                .arg(&self.keys.checkpoints)
                .arg(&marks.forget);
        }
        if !marks.started.is_empty() {
            pipe.cmd("SADD").arg(&self.keys.started).arg(&marks.started);
        }
    }

    /// With `min_replicas_ack`, waits (`WAIT`) until that many Redis replicas hold what this
    /// connection wrote.
    async fn wait_for_replicas(&self, conn: &mut ConnectionManager) -> Result<(), ClusterError> {
        if self.min_replicas_ack == 0 {
            return Ok(());
        }
        let got: u32 = redis::cmd("WAIT")
            .arg(self.min_replicas_ack)
            .arg(self.ack_timeout.as_millis() as u64)
            .query_async(conn)
            .await?;
        if got < self.min_replicas_ack {
            return Err(ClusterError::NotReplicated {
                wanted: self.min_replicas_ack,
                got,
                timeout: self.ack_timeout,
            });
        }
        Ok(())
    }

    /// The id of the newest entry in the log ([`EntryId::ZERO`] when it is empty): a replica
    /// that has applied it has caught up with the log as it was when asked.
    pub async fn last_id(&self) -> Result<EntryId, ClusterError> {
        self.end_id("XREVRANGE", "+", "-").await
    }

    /// The id of the oldest entry still in the log ([`EntryId::ZERO`] when it is empty).
    pub async fn first_id(&self) -> Result<EntryId, ClusterError> {
        self.end_id("XRANGE", "-", "+").await
    }

    /// The first id `range` (`XRANGE` or `XREVRANGE`) lists from `from` to `to`.
    async fn end_id(&self, range: &str, from: &str, to: &str) -> Result<EntryId, ClusterError> {
        let ends: Vec<(String, Vec<(String, redis::Value)>)> = redis::cmd(range)
            .arg(&self.keys.log)
            .arg(from)
            .arg(to)
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.conn())
            .await?;
        match ends.first() {
            Some((id, _)) => id.parse(),
            None => Ok(EntryId::ZERO),
        }
    }

    /// Stores a snapshot of the tracker as of entry `at` (sealed; opaque here), with every
    /// batch record as of `at`, replacing the previous one in one command, so a reader never
    /// sees one's bytes with another's id.
    pub async fn store_snapshot(
        &self,
        at: EntryId,
        sealed: &[u8],
        batches: &[u8],
    ) -> Result<(), ClusterError> {
        let _: () = redis::cmd("HSET")
            .arg(self.key("snapshot"))
            .arg("at")
            .arg(at.to_string())
            .arg("state")
            .arg(sealed)
            .arg("batches")
            .arg(batches)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// The latest snapshot, if any.
    pub async fn snapshot(&self) -> Result<Option<SharedSnapshot>, ClusterError> {
        let (at, state, batches): (Option<String>, Option<Vec<u8>>, Option<Vec<u8>>) =
            redis::cmd("HMGET")
                .arg(self.key("snapshot"))
                .arg("at")
                .arg("state")
                .arg("batches")
                .query_async(&mut self.conn())
                .await?;
        match (at, state) {
            (Some(at), Some(state)) => Ok(Some(SharedSnapshot {
                at: at.parse().map_err(|e| {
                    ClusterError::Reply(format!("its \"at\" field does not read: {e}"))
                })?,
                state,
                batches,
            })),
            (None, None) if batches.is_none() => Ok(None),
            (at, _) => Err(ClusterError::Reply(format!(
                "it lacks its {} field",
                if at.is_none() { "\"at\"" } else { "\"state\"" }
            ))),
        }
    }

    /// The snapshot's key.
    pub fn snapshot_key(&self) -> String {
        self.key("snapshot")
    }

    /// Copies the snapshot, as it is, to `KEY_PREFIX:snapshot:damaged-TIME` (before `run
    /// --recover` starts without it); returns the copy's key.
    pub async fn keep_snapshot_copy(&self) -> Result<String, ClusterError> {
        let to = self.damaged_snapshot_key();
        let _: i64 = redis::cmd("COPY")
            .arg(self.snapshot_key())
            .arg(&to)
            .query_async(&mut self.conn())
            .await?;
        Ok(to)
    }

    /// Moves the snapshot, as it is, to `KEY_PREFIX:snapshot:damaged-TIME` (`run --recover`,
    /// when not even its fields read: the leader's next snapshot takes its place); returns the
    /// copy's key.
    pub async fn set_snapshot_aside(&self) -> Result<String, ClusterError> {
        let to = self.damaged_snapshot_key();
        let _: () = redis::cmd("RENAME")
            .arg(self.snapshot_key())
            .arg(&to)
            .query_async(&mut self.conn())
            .await?;
        Ok(to)
    }

    fn damaged_snapshot_key(&self) -> String {
        format!(
            "{}:damaged-{}",
            self.snapshot_key(),
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
        )
    }

    /// Notes how far this replica has applied the log, and when (the leader trims only behind
    /// every replica seen lately).
    pub async fn note_applied(&self, at: EntryId, now_ms: i64) -> Result<(), ClusterError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HSET")
            .arg(self.key("applied"))
            .arg(&self.replica)
            .arg(format!("{at} {now_ms}"))
            .ignore();
        let _: () = pipe.query_async(&mut self.conn()).await?;
        Ok(())
    }

    /// Where each replica noted it had applied the log, with when: `(replica, at, ms)`.
    /// Notes that cannot be read are left out.
    pub async fn positions(&self) -> Result<Vec<(String, EntryId, i64)>, ClusterError> {
        let all: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.key("applied"))
            .query_async(&mut self.conn())
            .await?;
        Ok(all
            .into_iter()
            .filter_map(|(replica, v)| {
                let (at, ms) = v.split_once(' ')?;
                Some((replica, at.parse().ok()?, ms.parse().ok()?))
            })
            .collect())
    }

    /// Drops the log's entries older than `before`; returns how many.
    pub async fn trim(&self, before: EntryId) -> Result<u64, ClusterError> {
        Ok(redis::cmd("XTRIM")
            .arg(&self.keys.log)
            .arg("MINID")
            .arg(before.to_string())
            .query_async(&mut self.conn())
            .await?)
    }

    /// The key `name` under the configured prefix.
    pub(super) fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.keys.prefix)
    }

    /// This replica's name.
    pub(super) fn replica(&self) -> &str {
        &self.replica
    }

    /// This replica's id (`[cluster] replica_id`).
    pub fn replica_id(&self) -> &str {
        &self.replica
    }

    /// The shared, reconnecting connection.
    pub(super) fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The key of this replica's file checkpoints.
    pub fn checkpoints_key(&self) -> &str {
        &self.keys.checkpoints
    }

    /// This replica's stored file checkpoints, as `(file, offset record)`.
    pub async fn checkpoints(&self) -> Result<Vec<(String, Vec<u8>)>, ClusterError> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("HGETALL")
            .arg(&self.keys.checkpoints)
            .query_async(&mut conn)
            .await?)
    }

    /// This replica's sources that have run before.
    pub async fn started_sources(&self) -> Result<Vec<String>, ClusterError> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("SMEMBERS")
            .arg(&self.keys.started)
            .query_async(&mut conn)
            .await?)
    }

    /// A reader of the log on a connection of its own (its blocking reads would hold up
    /// appends on a shared one).
    pub async fn reader(&self) -> Result<LogReader, ClusterError> {
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config(Some(
                RESPONSE_TIMEOUT + MAX_READ_WAIT,
            )))
            .await?;
        Ok(LogReader {
            conn,
            log: self.keys.log.clone(),
        })
    }
}

/// Oldest engine the log runs on: Redis 7 (Valkey reports itself as Redis 7.2).
const MIN_MAJOR: u32 = 7;

/// Checks `INFO server`'s `redis_version`.
fn check_version(info: &str) -> Result<(), ClusterError> {
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .map(str::trim)
        .ok_or_else(|| ClusterError::Reply("INFO server names no redis_version".into()))?;
    let major = version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok());
    match major {
        Some(m) if m >= MIN_MAJOR => Ok(()),
        _ => Err(ClusterError::TooOld(version.to_owned())),
    }
}

fn config(response_timeout: Option<Duration>) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(response_timeout)
}

/// Reads the log in order.
pub struct LogReader {
    conn: MultiplexedConnection,
    log: String,
}

impl LogReader {
    /// Up to `count` entries after `after`, oldest first, waiting up to `block` (at most
    /// `MAX_READ_WAIT`, 2 s) for one when there is none yet (an empty answer then).
    pub async fn read_after(
        &mut self,
        after: EntryId,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Entry>, ClusterError> {
        let reply: Option<StreamReadReply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(count.max(1))
            .arg("BLOCK")
            .arg(block.min(MAX_READ_WAIT).as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(&self.log)
            .arg(after.to_string())
            .query_async(&mut self.conn)
            .await?;
        let mut out = Vec::new();
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            for mut e in key.ids {
                let id = e.id.parse()?;
                let field =
                    |map: &mut std::collections::HashMap<String, redis::Value>, name| match map
                        .remove(name)
                    {
                        Some(redis::Value::BulkString(b)) => Ok(b),
                        other => Err(ClusterError::Reply(format!(
                            "entry {id} has no {name:?} field of bytes: {other:?}"
                        ))),
                    };
                let read = (|| {
                    let bytes = field(&mut e.map, "b")?;
                    let replica = String::from_utf8_lossy(&field(&mut e.map, "r")?).into_owned();
                    let batches = match e.map.contains_key("k") {
                        true => Some(field(&mut e.map, "k")?),
                        false => None,
                    };
                    Ok::<_, ClusterError>(Entry {
                        id,
                        replica,
                        bytes,
                        batches,
                    })
                })();
                match read {
                    Ok(entry) => out.push(entry),
                    // Not written by a replica: every replica passes over it alike (an entry
                    // with nothing to apply), rather than stopping at it for good.
                    Err(e) => {
                        tracing::error!(key = %self.log, entry = %id, error = %e, "an entry of the shared log was not written by a replica (something else wrote to the key?); skipped");
                        out.push(Entry {
                            id,
                            replica: String::new(),
                            bytes: Vec::new(),
                            batches: None,
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_read_back_and_order_as_redis_orders_them() {
        let a: EntryId = "1700000000000-0".parse().expect("an id");
        let b: EntryId = "1700000000000-12".parse().expect("an id");
        let c: EntryId = "1700000000001-0".parse().expect("an id");
        assert!(EntryId::ZERO < a && a < b && b < c);
        assert_eq!(b.to_string(), "1700000000000-12");
        for bad in [
            "",
            "12",
            "a-1",
            "1-",
            "-1",
            "1-2-3",
            "18446744073709551616-0",
        ] {
            assert!(bad.parse::<EntryId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn engines_older_than_redis_7_are_refused_by_name() {
        let info = |v: &str| format!("# Server\r\nredis_version:{v}\r\nredis_mode:standalone\r\n");
        assert!(check_version(&info("7.0.15")).is_ok());
        assert!(check_version(&info("7.2.4")).is_ok(), "Valkey 8 says 7.2.4");
        assert!(check_version(&info("8.0.2")).is_ok());
        let err = check_version(&info("6.2.14")).expect_err("too old");
        assert!(err.to_string().contains("Redis 6.2.14"), "{err}");
        assert!(check_version("# Server\r\n").is_err());
    }
}
