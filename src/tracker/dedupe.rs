//! `request_id` deduplication: an id seen again within 24 h counts once (SPEC §4).
//!
//! Keys are 64-bit stable hashes of (org, request_id), kept in arrival order with their
//! event time. Memory is bounded by `max`: past it the oldest keys are forgotten early, and a
//! duplicate of a forgotten id counts again. At 1 000 000 keys (the default) this is about
//! 40 MB; real duplicates (a shipper's retry, the same request in a log and over HTTP) arrive
//! within seconds or minutes, far inside what is kept.

use std::collections::{HashSet, VecDeque};

/// How long an id is remembered.
const HORIZON_MS: i64 = 24 * 3_600_000;

/// Recently seen request ids.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Dedupe {
    /// (event time, key) in arrival order.
    order: VecDeque<(i64, u64)>,
    /// Newest event time seen, the reference for the 24 h horizon.
    newest: i64,
    /// Membership; rebuilt from `order` after a restore.
    #[serde(skip)]
    seen: HashSet<u64, foldhash::fast::RandomState>,
    #[serde(skip)]
    max: usize,
}

impl Dedupe {
    /// Remembers at most `max` ids.
    pub fn new(max: usize) -> Dedupe {
        Dedupe {
            max,
            ..Dedupe::default()
        }
    }

    /// After a restore: sets the bound and rebuilds membership.
    pub fn rebind(&mut self, max: usize) {
        self.max = max;
        self.seen = self.order.iter().map(|(_, k)| *k).collect();
        self.evict();
    }

    /// Ids remembered now.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// True the first time `key` is seen (within the horizon); false for a duplicate.
    pub fn first_seen(&mut self, key: u64, ts: i64) -> bool {
        if self.max == 0 {
            return true;
        }
        if !self.seen.insert(key) {
            return false;
        }
        self.order.push_back((ts, key));
        self.newest = self.newest.max(ts);
        self.evict();
        true
    }

    fn evict(&mut self) {
        while let Some(&(ts, key)) = self.order.front()
            && (self.order.len() > self.max || ts <= self.newest - HORIZON_MS)
        {
            self.order.pop_front();
            self.seen.remove(&key);
        }
    }
}

/// A hash of (org, request_id) that is the same in every process and version, because it is
/// stored in snapshots (FNV-1a, 64 bit).
pub fn request_key(org: &str, request_id: &str) -> u64 {
    crate::model::stable_hash(&[org.as_bytes(), request_id.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_within_24h_count_once() {
        let mut d = Dedupe::new(10);
        assert!(d.first_seen(1, 0));
        assert!(!d.first_seen(1, 1_000));
        assert!(d.first_seen(2, 1_000));
        // Past the horizon the id is forgotten.
        d.first_seen(3, HORIZON_MS + 1);
        assert!(d.first_seen(1, HORIZON_MS + 2));
    }

    #[test]
    fn bounded_by_max() {
        let mut d = Dedupe::new(3);
        for k in 0..5 {
            d.first_seen(k, 0);
        }
        assert_eq!(d.len(), 3);
        assert!(d.first_seen(0, 0), "forgotten early past the bound");
        assert!(!d.first_seen(4, 0));
    }

    #[test]
    fn round_trip() {
        let mut d = Dedupe::new(10);
        d.first_seen(7, 5);
        let mut back: Dedupe = postcard::from_bytes(&postcard::to_stdvec(&d).unwrap()).unwrap();
        back.rebind(10);
        assert!(!back.first_seen(7, 6));
        assert_eq!(request_key("a", "b"), request_key("a", "b"));
        assert_ne!(request_key("a", "bc"), request_key("ab", "c"));
    }
}
