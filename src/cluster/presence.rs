//! One running instance per replica id. Every replica notes itself each lease period under
//! `KEY_PREFIX:replica:REPLICA_ID` (`SET … PX … GET`, Redis ≥ 6.2) with what tells this
//! instance apart (host, pid, start time); a note that replaces another instance's, after
//! this one's first, means two instances run with one id. They would share the file
//! checkpoints and the applied position kept under that id (a tailer resuming the other's
//! files at the other's offsets), so both stop, saying why.
//!
//! Before a replica reads its checkpoints or starts a source it claims its id
//! ([`SharedLog::claim_replica_id`]): a note left by another instance is a predecessor's (a
//! replica killed and started again within the note's lifetime) when that process is gone
//! from this host, or when the note is not renewed within a renewal period (or has no
//! expiry: no replica wrote it); otherwise the
//! other instance runs and this one does not start, so two instances never tail under one id.
//!
//! Every replica also notes the fingerprint of its config's tracker-shaping parts (limits,
//! tiers, orgs, detection, alerts) in `KEY_PREFIX:configs`: each applies the same log with its
//! own config, so replicas configured differently answer differently. That is normal for the
//! minutes of a rolling change and wrong after; the replicas that differ are counted
//! (`ratewarden_cluster_config_differs`), not refused.

use std::path::Path;
use std::time::Duration;

use super::log::{ClusterError, SharedLog};

impl SharedLog {
    /// Notes `instance` under this replica's id for `ttl`; returns the instance noted there
    /// before (`None`: nobody, or the note had lapsed).
    pub async fn note_presence(
        &self,
        instance: &str,
        ttl: Duration,
    ) -> Result<Option<String>, ClusterError> {
        Ok(redis::cmd("SET")
            .arg(self.key(&format!("replica:{}", self.replica())))
            .arg(instance)
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .arg("GET")
            .query_async(&mut self.conn())
            .await?)
    }
}

/// Sets `KEYS[1]` to `ARGV[1]` for `ARGV[2]` ms when it holds nothing, `ARGV[1]` already, or
/// `ARGV[3]` (a gone predecessor's note); otherwise returns what it holds.
const CLAIM: &str = r"
local now = redis.call('GET', KEYS[1])
if now == false or now == ARGV[1] or now == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return false
end
return now
";

/// Deletes `KEYS[1]` if it holds `ARGV[1]`.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// What a starting instance learned of its replica id.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// The id is this instance's now.
    Claimed,
    /// Another running instance holds it; what it noted about itself.
    InUse(String),
}

impl SharedLog {
    /// Claims this replica's id for `me` (an [`instance_note`]) before anything is read under
    /// it. A note by another instance is taken over when that instance is gone: its process is
    /// no longer running on this host, or the note is not renewed within `renew_every` plus a
    /// second (it is renewed every `renew_every` while its instance runs); and a note without
    /// an expiry, which no replica writes.
    pub async fn claim_replica_id(
        &self,
        me: &str,
        ttl: Duration,
        renew_every: Duration,
    ) -> Result<Claim, ClusterError> {
        let key = self.key(&format!("replica:{}", self.replica()));
        let (before, pttl) = self.presence_note(&key).await?;
        let mut expected = String::new();
        if let Some(other) = before.filter(|other| other != me) {
            if pttl == -1 {
                // Every note a replica writes lapses: this one was written by something else.
                tracing::warn!(key, note = %other, "the replica id's note has no expiry, so no replica wrote it; taking it over");
            } else if !gone_from_this_host(&other, me) {
                let watched = renew_every + Duration::from_secs(1);
                tokio::time::sleep(watched).await;
                let (now, pttl_now) = self.presence_note(&key).await?;
                // Unrenewed, a note's time to live falls by the time watched; renewed, it is
                // set back up.
                let renewed = pttl_now > pttl - watched.as_millis() as i64 + 500;
                match now {
                    Some(now) if now != other || renewed => return Ok(Claim::InUse(now)),
                    _ => {}
                }
            }
            expected = other;
        }
        // Two instances starting at once both find the id free: one takes it.
        let found: Option<String> = redis::Script::new(CLAIM)
            .key(&key)
            .arg(me)
            .arg(ttl.as_millis() as u64)
            .arg(&expected)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(match found {
            None => Claim::Claimed,
            Some(other) => Claim::InUse(other),
        })
    }

    /// Lets go of this replica's id, if `me` still holds it (a replica that stops cleanly:
    /// its successor need not wait to tell it gone).
    pub async fn release_replica_id(&self, me: &str) -> Result<(), ClusterError> {
        let _: i64 = redis::Script::new(RELEASE)
            .key(self.key(&format!("replica:{}", self.replica())))
            .arg(me)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// The note under `key` and its time to live in ms (negative without one).
    async fn presence_note(&self, key: &str) -> Result<(Option<String>, i64), ClusterError> {
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(key).cmd("PTTL").arg(key);
        Ok(pipe.query_async(&mut self.conn()).await?)
    }
}

/// What an instance notes about itself under its replica id: host, pid and start time, so
/// two instances tell each other apart (and a restarted one its killed predecessor).
pub fn instance_note(host: &str, pid: u32, started: chrono::DateTime<chrono::Utc>) -> String {
    format!(
        "host {host}, pid {pid}, started {}",
        started.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    )
}

/// The host and pid an [`instance_note`] names.
fn host_and_pid(note: &str) -> Option<(&str, u32)> {
    let (host, rest) = note.strip_prefix("host ")?.split_once(", pid ")?;
    Some((host, rest.split_once(',')?.0.parse().ok()?))
}

/// True when `note` (an [`instance_note`]) names a process of the host `me` names that is no
/// longer running (or this process's own pid: a container's restarted pid 1). Elsewhere, or
/// when it cannot tell, false: the caller watches the note instead.
fn gone_from_this_host(note: &str, me: &str) -> bool {
    let (Some((host, pid)), Some((my_host, _))) = (host_and_pid(note), host_and_pid(me)) else {
        return false;
    };
    host == my_host
        && (pid == std::process::id() || (Path::new("/proc/self").exists() && !running(pid)))
}

/// Whether process `pid` runs on this (Linux) host: it exists and is not a zombie (killed,
/// not yet reaped by its parent).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) STATE ...`; comm may hold spaces and parentheses.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_none_or(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

impl SharedLog {
    /// Notes this replica's config `fingerprint` at `now_ms`; returns every replica's latest
    /// note as `(replica, fingerprint, ms)` (notes that do not read are left out).
    pub async fn note_config(
        &self,
        fingerprint: u64,
        now_ms: i64,
    ) -> Result<Vec<(String, u64, i64)>, ClusterError> {
        let key = self.key("configs");
        let mut pipe = redis::pipe();
        pipe.cmd("HSET")
            .arg(&key)
            .arg(self.replica())
            .arg(format!("{fingerprint:016x} {now_ms}"))
            .ignore()
            .cmd("HGETALL")
            .arg(&key);
        let (all,): (Vec<(String, String)>,) = pipe.query_async(&mut self.conn()).await?;
        Ok(all
            .into_iter()
            .filter_map(|(replica, v)| {
                let (fp, ms) = v.split_once(' ')?;
                Some((replica, u64::from_str_radix(fp, 16).ok()?, ms.parse().ok()?))
            })
            .collect())
    }
}

/// The replicas, other than `me`, whose config `notes` (from [`SharedLog::note_config`]) say
/// differs from `mine`, among those that noted theirs within `recent_ms` of `now_ms`; sorted.
pub fn differing(
    me: &str,
    mine: u64,
    notes: &[(String, u64, i64)],
    now_ms: i64,
    recent_ms: i64,
) -> Vec<String> {
    let mut out: Vec<String> = notes
        .iter()
        .filter(|(r, fp, ms)| {
            // A note from the future was not written by a replica's clock: not believed.
            r != me && *fp != mine && now_ms - ms <= recent_ms && *ms <= now_ms + recent_ms
        })
        .map(|(r, _, _)| r.clone())
        .collect();
    out.sort();
    out
}

/// What a replica's notes found.
#[derive(Debug, Default)]
pub struct Presence {
    noted: bool,
}

impl Presence {
    /// Judges the answer of one [`SharedLog::note_presence`] of `me`: the other instance
    /// running under the same replica id, if the note replaced one after the first.
    pub fn judge(&mut self, me: &str, before: Option<String>) -> Option<String> {
        let first = !std::mem::replace(&mut self.noted, true);
        match before {
            Some(other) if !first && other != me => Some(other),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_noted_lately_with_another_config_differ() {
        let notes = vec![
            ("a".to_owned(), 1, 10_000),
            ("b".to_owned(), 2, 9_000),
            ("c".to_owned(), 1, 9_500),
            ("gone".to_owned(), 3, 1_000),
            ("forged".to_owned(), 4, 99_999_999),
        ];
        assert_eq!(differing("a", 1, &notes, 10_000, 5_000), vec!["b"]);
        assert_eq!(differing("b", 2, &notes, 10_000, 5_000), vec!["a", "c"]);
        assert!(
            differing("a", 1, &notes, 20_000, 5_000).is_empty(),
            "old notes"
        );
    }

    #[test]
    fn a_note_of_a_process_gone_from_this_host_is_a_predecessors() {
        let at = chrono::Utc::now();
        let note = |pid| instance_note("here", pid, at);
        let me = note(std::process::id());
        assert!(gone_from_this_host(&me, &me), "this pid: a restarted pid 1");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(gone_from_this_host(&note(pid), &me));
        // Killed but not yet reaped by its parent: a zombie runs no more.
        let mut zombie = std::process::Command::new("true").spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(gone_from_this_host(&note(zombie.id()), &me), "a zombie");
        zombie.wait().unwrap();
        let mut running = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let alive = note(running.id());
        assert!(!gone_from_this_host(&alive, &me), "a running process");
        let _ = running.kill();
        let _ = running.wait();
        assert!(!gone_from_this_host(
            &instance_note("elsewhere", pid, at),
            &me
        ));
        assert!(!gone_from_this_host("written by something else", &me));
    }

    #[test]
    fn only_a_later_note_replacing_another_instance_is_a_conflict() {
        let mut p = Presence::default();
        assert_eq!(
            p.judge("me", Some("killed predecessor".into())),
            None,
            "the first note may replace a predecessor's"
        );
        assert_eq!(p.judge("me", Some("me".into())), None);
        assert_eq!(p.judge("me", None), None, "a lapsed note (Redis away)");
        assert_eq!(p.judge("me", Some("twin".into())), Some("twin".to_owned()));
    }
}
