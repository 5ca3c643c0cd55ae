//! One running instance per replica id. Every replica notes itself each lease period under
//! `KEY_PREFIX:replica:REPLICA_ID` (`SET … PX … GET`, Redis ≥ 6.2) with what tells this
//! instance apart (host, pid, start time); a note that replaces another instance's, after
//! this one's first, means two instances run with one id. They would share the file
//! checkpoints and the applied position kept under that id (a tailer resuming the other's
//! files at the other's offsets), so both stop, saying why.
//!
//! The first note may replace a predecessor's (a replica killed and started again within the
//! note's lifetime): that is not a conflict.

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
