//! The scheduler's answers to the API: batches and items as SPEC §7 JSON, with the next
//! dispatch and an ETA worked out from the pacing rate and the coming windows. Reads only.

use serde_json::{Value, json};

use super::batch::{BatchError, Item, ItemState, Mode, State};
use super::{Scheduler, allowed};
use crate::clock::rfc3339;
use crate::config::UpstreamConfig;

/// One item as a SPEC §7 NDJSON row. An answer kept only in part is a string (it is no
/// longer JSON) with `result_truncated` and the whole size in `result_bytes`.
fn item_row(it: &Item) -> Value {
    let mut row = json!({
        "index": it.index,
        "state": it.state.as_str(),
        "attempts": it.attempts,
        "last_status": it.last_status,
        "job_id": it.job_id,
        "idempotency_key": it.key,
        "result": it.result.as_deref().map(|r| match it.result_bytes {
            Some(_) => Value::String(r.to_string()),
            None => serde_json::from_str::<Value>(r).unwrap_or_else(|_| Value::String(r.to_string())),
        }),
        "error": it.error,
    });
    if let Some(total) = it.result_bytes {
        row["result_truncated"] = json!(true);
        row["result_bytes"] = json!(total);
    }
    row
}

/// Batch `id`'s items and the bounds of the page after index `after` (exclusive), at most
/// `limit` long. Items are held in index order.
fn page<'s>(
    st: &'s State,
    id: &str,
    after: Option<u32>,
    limit: usize,
) -> Result<(&'s [Item], usize, usize), BatchError> {
    let &i = st
        .index
        .get(id)
        .ok_or_else(|| BatchError::NotFound(format!("no batch {id:?}")))?;
    let items = &st.batches[i].items;
    let start = after.map_or(0, |a| items.partition_point(|it| it.index <= a));
    let end = start.saturating_add(limit).min(items.len());
    Ok((items, start, end))
}

impl Scheduler {
    /// Summaries of every batch, newest first.
    pub fn list(&self, now: i64) -> Vec<Value> {
        let st = self.lock();
        (0..st.batches.len())
            .rev()
            .map(|i| self.summary(&st, i, now))
            .collect()
    }

    /// One batch's summary.
    pub fn get(&self, id: &str, now: i64) -> Result<Value, BatchError> {
        let st = self.lock();
        let &i = st
            .index
            .get(id)
            .ok_or_else(|| BatchError::NotFound(format!("no batch {id:?}")))?;
        Ok(self.summary(&st, i, now))
    }

    /// Rows (SPEC §7 NDJSON) of one batch's items whose index is above `after` (all with
    /// `None`), at most `limit` of them, and whether more follow.
    pub fn items_page(
        &self,
        id: &str,
        after: Option<u32>,
        limit: usize,
    ) -> Result<(Vec<Value>, bool), BatchError> {
        let st = self.lock();
        let (items, start, end) = page(&st, id, after, limit)?;
        let rows = items[start..end].iter().map(item_row).collect();
        Ok((rows, end < items.len()))
    }

    /// Where a page of [`Scheduler::items_page`] would end: the index of its last row when
    /// more rows follow it, else `None`.
    pub fn page_end(
        &self,
        id: &str,
        after: Option<u32>,
        limit: usize,
    ) -> Result<Option<u32>, BatchError> {
        let st = self.lock();
        let (items, start, end) = page(&st, id, after, limit)?;
        Ok((end < items.len() && end > start).then(|| items[end - 1].index))
    }

    /// Requests per minute a batch of `upstream` can go at (the pacing rate).
    pub(super) fn rate_per_min(&self, up: &UpstreamConfig, now: i64) -> f64 {
        let load = self.live.load_of(&up.org, now);
        let rpm = allowed(self.rules.cfg.share, load.limits.rpm).map_or(600.0, |a| a as f64);
        match (
            &up.poll,
            allowed(self.rules.cfg.share, load.limits.concurrency),
        ) {
            // Each job holds a slot for at least one poll interval.
            (Some(p), Some(c)) => rpm.min(c as f64 * 60_000.0 / p.interval_ms.max(1) as f64),
            _ => rpm,
        }
    }

    /// When the batch at `bi` is likely done, from the pacing rate and the windows.
    pub(super) fn eta(&self, st: &State, bi: usize, now: i64) -> Option<i64> {
        let b = &st.batches[bi];
        let remaining = b.items.iter().filter(|i| !i.state.is_final()).count();
        if remaining == 0 || b.header.cancelled {
            return None;
        }
        let up = self.rules.upstreams.get(&b.header.upstream)?;
        // Batches of the same upstream go first-in, first-out.
        let ahead: usize = st.batches[..bi]
            .iter()
            .filter(|o| o.header.upstream == b.header.upstream && !o.header.cancelled)
            .map(|o| o.items.iter().filter(|i| !i.state.is_final()).count())
            .sum();
        let per_ms = self.rate_per_min(up, now) / 60_000.0;
        let mut work = (ahead + remaining) as f64 / per_ms;
        if b.header.mode == Mode::Asap {
            return Some(now + work.ceil() as i64);
        }
        for (open, close) in self.rules.offpeak.upcoming(now, 64) {
            let span = (close - open.max(now)) as f64;
            if work <= span {
                return Some(open.max(now) + work.ceil() as i64);
            }
            work -= span;
        }
        None
    }

    pub(super) fn summary(&self, st: &State, bi: usize, now: i64) -> Value {
        let b = &st.batches[bi];
        let mut counts = serde_json::Map::new();
        for s in ItemState::ALL {
            counts.insert(
                s.as_str().into(),
                json!(b.items.iter().filter(|i| i.state == s).count()),
            );
        }
        let next_dispatch = if b
            .items
            .iter()
            .any(|i| matches!(i.state, ItemState::Pending | ItemState::Retrying))
            && !b.header.cancelled
        {
            let due = b
                .items
                .iter()
                .filter(|i| matches!(i.state, ItemState::Pending | ItemState::Retrying))
                .map(|i| i.next_attempt_ms)
                .min()
                .unwrap_or(now)
                .max(now);
            if self.rules.may_send(b, now) {
                Some(due)
            } else {
                self.rules.offpeak.status(now).next_open.map(|o| o.max(due))
            }
        } else {
            None
        };
        json!({
            "id": b.header.id,
            "upstream": b.header.upstream,
            "org": b.header.org,
            "mode": b.header.mode,
            "state": b.state().as_str(),
            "created_at": rfc3339(b.header.created_ms),
            "items": b.items.len(),
            "counts": counts,
            "next_dispatch": next_dispatch.map(rfc3339),
            "eta": self.eta(st, bi, now).map(rfc3339),
        })
    }
}
