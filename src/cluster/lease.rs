//! One leader for side effects: a lease on one key (`SET NX PX`, renewed by its holder) with a
//! fencing token (`INCR`, one per new holder), and the marks of delivered notifications that
//! only the holder of the current token can write.
//!
//! Every replica computes the same notifications (the same log, the same delivery ids); only
//! the leader sends them, and marks each one delivered in Redis before it leaves the outbox.
//! The others drop from their outboxes what is marked, and keep the rest for the day they
//! lead: a leader that stops (and steps down) leaves nothing sent twice; one that is killed
//! may leave the deliveries it had in flight unmarked, which its successor sends again with
//! the same delivery id.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::log::{ClusterError, SharedLog};

/// Takes the lease when free, or renews it when `ARGV[1]` (`replica:token`) holds it.
/// Returns the token held (0: another replica leads). A value without an expiry was not
/// written by a replica (every lease lapses): it is taken over, and the token is returned
/// negated so that the replica says so.
const TRY_LEAD: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(ARGV[4])
end
local foreign = false
if cur then
  if redis.call('PTTL', KEYS[1]) ~= -1 then return 0 end
  foreign = true
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[3] .. ':' .. token, 'PX', ARGV[2])
if foreign then return -token end
return token
";

/// Gives the lease up if `ARGV[1]` still holds it.
const STEP_DOWN: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Marks delivery ids (`ARGV[3..]`) delivered for `ARGV[2]` ms, only if `ARGV[1]` still
/// holds the lease (the fencing check); returns 1 if marked.
const MARK: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 3, #ARGV do
  redis.call('SET', KEYS[2] .. ARGV[i], '1', 'PX', ARGV[2])
end
return 1
";

/// How long a delivered mark is kept: past any notification's `max_age`.
pub const MARK_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// This replica's standing: the fencing token while it leads, 0 while it does not; and the
/// token under which it has caught up with the log since taking the lead (it acts on batches
/// only then: what the previous leader did last must be known first).
#[derive(Debug, Clone, Default)]
pub struct Leadership(Arc<(AtomicU64, AtomicU64)>);

impl Leadership {
    /// The token held, if this replica leads.
    pub fn token(&self) -> Option<u64> {
        match self.0.0.load(Ordering::Acquire) {
            0 => None,
            t => Some(t),
        }
    }

    /// Whether this replica leads.
    pub fn leads(&self) -> bool {
        self.token().is_some()
    }

    /// Notes that this replica, leading under `token`, has applied the log as it was when it
    /// took the lead.
    pub fn caught_up(&self, token: u64) {
        self.0.1.store(token, Ordering::Release);
    }

    /// The token to dispatch under: this replica leads and has caught up since it took the
    /// lead.
    pub fn dispatching(&self) -> Option<u64> {
        self.token()
            .filter(|&t| self.0.1.load(Ordering::Acquire) == t)
    }

    fn set(&self, token: Option<u64>) {
        self.0.0.store(token.unwrap_or(0), Ordering::Release);
    }
}

impl SharedLog {
    fn holder(&self, token: u64) -> String {
        format!("{}:{token}", self.replica())
    }

    /// Takes or renews the lease for `ttl`; updates and returns `leadership`'s standing.
    /// An engine that fails leaves this replica not leading (another may take over once the
    /// lease lapses, and two must never send at once).
    pub async fn lead(
        &self,
        leadership: &Leadership,
        ttl: Duration,
    ) -> Result<Option<u64>, ClusterError> {
        let held = leadership.token().unwrap_or(0);
        let outcome: Result<i64, redis::RedisError> = redis::Script::new(TRY_LEAD)
            .key(self.key("leader"))
            .key(self.key("leader:epoch"))
            .arg(self.holder(held))
            .arg(ttl.as_millis() as u64)
            .arg(self.replica())
            .arg(held)
            .invoke_async(&mut self.conn())
            .await;
        match outcome {
            Ok(0) => {
                leadership.set(None);
                Ok(None)
            }
            Ok(token) => {
                if token < 0 {
                    tracing::warn!(key = %self.key("leader"), "the lease key held a value without an expiry, not written by a replica: taken over");
                }
                let token = token.unsigned_abs();
                leadership.set(Some(token));
                Ok(Some(token))
            }
            Err(e) => {
                leadership.set(None);
                let e = ClusterError::from(e);
                Err(match e {
                    e if e.is_unreachable() => e,
                    e => ClusterError::Reply(format!(
                        "the lease script failed on keys {} and {} (written by something else? each must hold what a replica writes: a string and an integer): {e}",
                        self.key("leader"),
                        self.key("leader:epoch")
                    )),
                })
            }
        }
    }

    /// Gives up the lease, so another replica takes over at its next try.
    pub async fn step_down(&self, leadership: &Leadership) -> Result<(), ClusterError> {
        if let Some(token) = leadership.token() {
            leadership.set(None);
            let _: i64 = redis::Script::new(STEP_DOWN)
                .key(self.key("leader"))
                .arg(self.holder(token))
                .invoke_async(&mut self.conn())
                .await?;
        }
        Ok(())
    }

    /// Marks `ids` delivered, if `token` still holds the lease; false when it does not (a
    /// successor leads: what this replica delivered meanwhile may be sent again).
    pub async fn mark_delivered(&self, token: u64, ids: &[String]) -> Result<bool, ClusterError> {
        if ids.is_empty() {
            return Ok(true);
        }
        let script = redis::Script::new(MARK);
        let mut call = script.prepare_invoke();
        call.key(self.key("leader"))
            .key(self.key("delivered:"))
            .arg(self.holder(token))
            .arg(MARK_TTL.as_millis() as u64);
        for id in ids {
            call.arg(id);
        }
        let marked: i64 = call.invoke_async(&mut self.conn()).await?;
        Ok(marked == 1)
    }

    /// Which of `ids` are marked delivered.
    pub async fn delivered(&self, ids: &[String]) -> Result<Vec<bool>, ClusterError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids
            .iter()
            .map(|id| self.key(&format!("delivered:{id}")))
            .collect();
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut self.conn())
            .await?;
        Ok(values.into_iter().map(|v| v.is_some()).collect())
    }
}
