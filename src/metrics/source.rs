//! What a scrape reads of the live state, and the trait the state answers it through: the
//! one door between `metrics` and the daemon's state. It must never hold a lock or state of
//! its own.

/// What a scrape reads of the live state, taken at scrape time.
#[derive(Debug, Clone)]
pub struct Scraped {
    /// False after a failed store commit until one succeeds.
    pub store_writable: bool,
    /// Store commits that failed.
    pub store_commit_failures: u64,
    /// A replica of a cluster: whether the shared log answers; `None` without `[cluster]`.
    pub cluster_connected: Option<bool>,
    /// A replica: other replicas seen lately with a config that shapes answers differently;
    /// `None` without `[cluster]`.
    pub cluster_config_differs: Option<u32>,
    /// Events routed to the overflow series, by kind.
    pub overflow: crate::tracker::Overflow,
    /// Orgs past `max_new_orgs_per_second`.
    pub new_orgs_refused: u64,
}

/// Where scrape-time values come from. The daemon's live state implements it; `metrics`
/// never reaches into that state, it only asks this (nothing while state is recovering).
pub trait ScrapeSource: Send + Sync {
    /// Now, by the daemon's clock; `None` while state is recovering.
    fn now_ms(&self) -> Option<i64>;
    /// The values a scrape shows, after handing every tracked org's snapshot to `each` in
    /// turn (a scrape that holds them all at once touched megabytes of fresh memory at
    /// 10 000 orgs); `None` while state is recovering, and then no org is handed over.
    fn scrape(&self, each: &mut dyn FnMut(crate::tracker::OrgSnapshot)) -> Option<Scraped>;
    /// Records the state could not encode since start, by kind (`journal`, `snapshot`,
    /// `notification`): counted in `store_record_errors_total{op="encode"}`.
    fn unencodable(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// No scrape-time values: stored state is still being recovered, so `/metrics` shows the
/// registry alone.
pub struct Recovering;

impl ScrapeSource for Recovering {
    fn now_ms(&self) -> Option<i64> {
        None
    }

    fn scrape(&self, _: &mut dyn FnMut(crate::tracker::OrgSnapshot)) -> Option<Scraped> {
        None
    }
}
