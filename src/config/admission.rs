//! `[admission]`: how `POST /v1/admit` decides (issue "Admission").

use serde::Deserialize;
use toml::Spanned;

use super::check::{Spanned2, at};
use super::duration::HumanDuration;

/// `[admission]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmissionConfig {
    /// Share of each limit that grants may fill, in basis points (10 000 = the whole limit;
    /// below leaves room for traffic that does not ask). Each dimension's cap is rounded
    /// down, at least 1.
    pub share_bp: u32,
    /// Time allowed between a grant and the upstream receiving the call, ms: a grant counts
    /// in every window that could hold the call, so windows are this much longer.
    pub margin_ms: i64,
    /// A job lease holds its concurrency slot at most this long, ms (default and most:
    /// `[detect] release_after`).
    pub lease_ttl_ms: i64,
    /// The longest `wait` a caller may ask for, ms.
    pub max_wait_ms: i64,
}

/// The most `margin` may be: the windows keep this much history behind their width.
pub const MAX_MARGIN_MS: i64 = 60_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAdmission {
    share: Spanned<f64>,
    margin: Spanned<HumanDuration>,
    lease_ttl: Option<Spanned<HumanDuration>>,
    max_wait: Spanned<HumanDuration>,
}

impl Default for RawAdmission {
    fn default() -> Self {
        let d = |ms: u64| HumanDuration(std::time::Duration::from_millis(ms));
        RawAdmission {
            share: Spanned::new(0..0, 1.0),
            margin: Spanned::new(0..0, d(1_000)),
            lease_ttl: None,
            max_wait: Spanned::new(0..0, d(60_000)),
        }
    }
}

impl RawAdmission {
    /// Validated against `[detect] release_after` (ms), which bounds a lease.
    pub(super) fn validate(&self, release_after_ms: i64) -> Result<AdmissionConfig, Spanned2> {
        let share = *self.share.get_ref();
        if !(share > 0.0 && share <= 1.0) {
            return Err(at(self.share.span(), "share must be above 0 and at most 1"));
        }
        let margin_ms = self.margin.get_ref().as_millis_i64();
        if margin_ms > MAX_MARGIN_MS {
            return Err(at(self.margin.span(), "margin must be at most 60s"));
        }
        let lease_ttl_ms = match &self.lease_ttl {
            None => release_after_ms,
            Some(t) => {
                let ms = t.get_ref().as_millis_i64();
                if ms < 1_000 || ms > release_after_ms {
                    return Err(at(
                        t.span(),
                        "lease_ttl must be at least 1s and at most [detect] release_after \
                         (a job holds a slot no longer than that)",
                    ));
                }
                ms
            }
        };
        let max_wait_ms = self.max_wait.get_ref().as_millis_i64();
        if max_wait_ms > 3_600_000 {
            return Err(at(self.max_wait.span(), "max_wait must be at most 1h"));
        }
        Ok(AdmissionConfig {
            share_bp: (share * 10_000.0).round().clamp(1.0, 10_000.0) as u32,
            margin_ms,
            lease_ttl_ms,
            max_wait_ms,
        })
    }
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            share_bp: 10_000,
            margin_ms: 1_000,
            lease_ttl_ms: 1_800_000,
            max_wait_ms: 60_000,
        }
    }
}
