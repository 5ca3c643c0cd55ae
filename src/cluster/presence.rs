//! One running instance per replica id. Every replica notes itself each lease period under
//! `KEY_PREFIX:replica:REPLICA_ID` (`SET … PX … GET`, Redis ≥ 6.2) with what tells this
//! instance apart (host, pid, start time); a note that replaces another instance's, after
//! this one's first, means two instances run with one id. They would share the file
//! checkpoints and the applied position kept under that id (a tailer resuming the other's
//! files at the other's offsets), so both stop, saying why.
//!
//! The first note may replace a predecessor's (a replica killed and started again within the
//! note's lifetime): that is not a conflict.
//!
//! Every replica also notes the fingerprint of its config's tracker-shaping parts (limits,
//! tiers, orgs, detection, alerts) in `KEY_PREFIX:configs`: each applies the same log with its
//! own config, so replicas configured differently answer differently. That is normal for the
//! minutes of a rolling change and wrong after; the replicas that differ are counted
//! (`ratewarden_cluster_config_differs`), not refused.

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
        .filter(|(r, fp, ms)| r != me && *fp != mine && now_ms - ms <= recent_ms)
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
        ];
        assert_eq!(differing("a", 1, &notes, 10_000, 5_000), vec!["b"]);
        assert_eq!(differing("b", 2, &notes, 10_000, 5_000), vec!["a", "c"]);
        assert!(
            differing("a", 1, &notes, 20_000, 5_000).is_empty(),
            "old notes"
        );
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
