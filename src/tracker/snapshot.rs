//! Tracker snapshots: everything events changed, as one versioned blob.
//!
//! A snapshot holds the dynamic state only (windows, jobs, counters, detector and alert
//! states, request ids). What the config decides (tiers, limits, caps) is taken from the
//! config in use when restoring, so a tier change applies to state recorded under the old one.

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use super::{AlertKey, OVERFLOW, Org, Overflow, Settings, Tracker};
use crate::config::{Config, Limits};
use crate::tracker::dedupe::Dedupe;

/// Leading bytes of a snapshot: format name and version. Bump the digit when the encoded
/// structures change; an older binary then refuses a newer snapshot instead of misreading it.
const MAGIC: &[u8; 4] = b"RWT2";

/// Why a snapshot could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Not a snapshot of a version this binary reads.
    #[error("the stored state has format {found:?}, this ratewarden reads {MAGIC:?}")]
    Version {
        /// The leading bytes found.
        found: String,
    },
    /// The bytes do not decode.
    #[error("the stored state is corrupt: {0}")]
    Corrupt(#[from] postcard::Error),
}

#[derive(Serialize)]
struct SnapshotRef<'a> {
    orgs: &'a [Org],
    overflow_org: Option<usize>,
    overflow: Overflow,
    dedupe: &'a Dedupe,
    repeats: &'a BTreeMap<AlertKey, i64>,
}

#[derive(Deserialize)]
struct SnapshotOwned {
    orgs: Vec<Org>,
    overflow_org: Option<usize>,
    overflow: Overflow,
    dedupe: Dedupe,
    repeats: BTreeMap<AlertKey, i64>,
}

impl Tracker {
    /// The whole dynamic state as bytes.
    pub fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        let state = SnapshotRef {
            orgs: &self.orgs,
            overflow_org: self.overflow_org,
            overflow: self.overflow,
            dedupe: &self.dedupe,
            repeats: &self.repeats,
        };
        postcard::to_extend(&state, MAGIC.to_vec())
    }

    /// A tracker for `config` holding the state of `bytes`.
    pub fn restore(config: &Config, bytes: &[u8]) -> Result<Tracker, RestoreError> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(RestoreError::Version {
                found: String::from_utf8_lossy(&bytes[..bytes.len().min(4)]).into_owned(),
            });
        }
        let state: SnapshotOwned = postcard::from_bytes(&bytes[MAGIC.len()..])?;
        let mut t = Tracker::new(config);
        t.overflow = state.overflow;
        t.dedupe = state.dedupe;
        t.dedupe.rebind(t.settings.max_request_ids);
        t.repeats = state.repeats;
        for (i, mut org) in state.orgs.into_iter().enumerate() {
            if Some(i) == state.overflow_org || &*org.name == OVERFLOW {
                org.rebind(OVERFLOW.into(), Limits::default(), false, &t.settings);
                t.overflow_org = Some(t.orgs.len());
                t.orgs.push(org);
                continue;
            }
            let configured = config.orgs.iter().find(|o| *o.id == *org.name);
            let (tier, limits) = match configured {
                Some(o) => (o.tier.as_str().into(), o.limits),
                None => (t.settings.default_tier.clone(), t.settings.default_limits),
            };
            org.rebind(tier, limits, true, &t.settings);
            match t.index.get(&org.name) {
                Some(&at) => t.orgs[at] = org,
                None => {
                    t.index.insert(org.name.clone(), t.orgs.len());
                    t.orgs.push(org);
                }
            }
        }
        Ok(t)
    }
}

impl Org {
    /// Sets what the config decides after a restore.
    fn rebind(&mut self, tier: std::sync::Arc<str>, limits: Limits, alerting: bool, s: &Settings) {
        let fresh = Org::new(self.name.clone(), tier, limits, alerting, s);
        self.tier = fresh.tier;
        self.limits = fresh.limits;
        self.alerting = fresh.alerting;
        self.burst_threshold = fresh.burst_threshold;
        self.jobs.set_max(super::job_cap(s, &limits));
        if self.tokens.is_none() {
            self.tokens = fresh.tokens;
        }
        self.app_index = self
            .apps
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != self.overflow_app)
            .map(|(i, a)| (a.name.clone(), i))
            .collect();
    }
}
