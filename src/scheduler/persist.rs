//! The scheduler's persistence: batches and items as stored records (`store::record`
//! envelopes, with the older layouts they are still read from), what one decision changed
//! handed to `live` together (so it lands in one commit), and the batches rebuilt from the
//! store at start-up. It decides nothing: which records change is the decisions' business
//! (`machine`).

use serde::{Deserialize, Serialize};

use super::batch::{Batch, Header, Item, ItemState, Mode, State};
use super::machine::Effects;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::store::record::{self, Kind, Opened, RecordError};
use crate::store::{BatchChanges, BatchRecord, ItemRecord};

/// The records a decision's [`Effects`] name, as they are in `st` now: headers and items,
/// each sealed in its envelope. One that cannot be encoded is logged and counted, and left
/// out (the stored one stays as it was).
pub(super) fn records(
    st: &State,
    fx: &Effects,
    metrics: &Metrics,
) -> (Vec<BatchRecord>, Vec<ItemRecord>) {
    let batches = fx
        .headers
        .iter()
        .filter_map(|&bi| {
            let header = &st.batches[bi].header;
            Some(BatchRecord {
                id: header.id.clone(),
                record: encode(Kind::Batch, header, metrics)?,
            })
        })
        .collect();
    let items = fx
        .items
        .iter()
        .filter_map(|&(bi, ii)| {
            let b = &st.batches[bi];
            let item = &b.items[ii];
            Some(ItemRecord {
                batch: b.header.id.clone(),
                index: item.index,
                record: encode(Kind::BatchItem, item, metrics)?,
            })
        })
        .collect();
    (batches, items)
}

/// Stores what `fx` changed: the records in the next commit, the forgotten batches dropped.
/// Returns the commit to wait for before acting on them.
pub(super) fn store(st: &State, fx: &mut Effects, metrics: &Metrics, live: &Live) -> u64 {
    let (batches, items) = records(st, fx, metrics);
    live.record_batches(batches, items, std::mem::take(&mut fx.forgotten))
}

/// The batches as stored, rebuilt in their stored order. A record that cannot be read is
/// logged, counted and skipped (with its items, for a batch): the rest still run.
pub(super) fn restore(
    batches: Vec<BatchRecord>,
    items: Vec<ItemRecord>,
    metrics: &Metrics,
) -> State {
    let mut st = State::default();
    let all = BatchChanges {
        batches,
        items,
        dropped: Vec::new(),
    };
    absorb(&mut st, &all, metrics);
    st
}

/// Takes batch `changes` (the stored records at start-up; another replica's, from the shared
/// log) into `st`: each record replaces the copy in `st` (a new batch is added, an item of a
/// batch it does not know is skipped), forgotten batches go. Returns the orgs whose batches
/// changed. A record that cannot be read is logged, counted and skipped; an unreadable item
/// keeps its batch from being finished or forgotten here.
pub(super) fn absorb(st: &mut State, changes: &BatchChanges, metrics: &Metrics) -> Vec<String> {
    let mut orgs = Vec::new();
    for BatchRecord { id, record } in &changes.batches {
        match Header::decode(record) {
            Ok(header) => {
                orgs.push(header.org.clone());
                match st.index.get(id) {
                    Some(&b) => st.batches[b].header = header,
                    None => {
                        st.index.insert(id.clone(), st.batches.len());
                        st.batches.push(Batch {
                            header,
                            items: Vec::new(),
                            unreadable: 0,
                        });
                    }
                }
            }
            Err(e) => {
                tracing::error!(batch = %id, error = %e, "unreadable batch record; skipped");
                metrics.store_record_error(Kind::Batch.as_str(), "decode");
            }
        }
    }
    for ItemRecord {
        batch,
        index,
        record,
    } in &changes.items
    {
        let Some(&b) = st.index.get(batch) else {
            continue;
        };
        match Item::decode(record) {
            Ok(item) => {
                let items = &mut st.batches[b].items;
                match items.binary_search_by_key(index, |i| i.index) {
                    Ok(at) => items[at] = item,
                    Err(at) => items.insert(at, item),
                }
                orgs.push(st.batches[b].header.org.clone());
            }
            Err(e) => {
                st.batches[b].unreadable += 1;
                tracing::error!(batch = %batch, index, error = %e, "unreadable item record; skipped (its batch is kept as it is)");
                metrics.store_record_error(Kind::BatchItem.as_str(), "decode");
            }
        }
    }
    if !changes.dropped.is_empty() {
        for b in st
            .batches
            .iter()
            .filter(|b| changes.dropped.contains(&b.header.id))
        {
            orgs.push(b.header.org.clone());
        }
        st.batches
            .retain(|b| !changes.dropped.contains(&b.header.id));
        st.index = st
            .batches
            .iter()
            .enumerate()
            .map(|(i, b)| (b.header.id.clone(), i))
            .collect();
        for lane in st.lanes.values_mut() {
            lane.polled
                .retain(|(batch, _), _| !changes.dropped.contains(batch));
        }
    }
    orgs.sort_unstable();
    orgs.dedup();
    orgs
}

/// [`Header`] as the first stores wrote it (before `finished_ms`).
#[derive(Deserialize)]
struct HeaderV1 {
    id: String,
    upstream: String,
    org: String,
    mode: Mode,
    created_ms: i64,
    cancelled: bool,
}

impl Header {
    /// Reads a stored header of any form (see [`decode`]).
    fn decode(bytes: &[u8]) -> Result<Header, RecordError> {
        decode(Kind::Batch, bytes, |v1: HeaderV1| Header {
            id: v1.id,
            upstream: v1.upstream,
            org: v1.org,
            mode: v1.mode,
            created_ms: v1.created_ms,
            cancelled: v1.cancelled,
            finished_ms: None,
            request_hash: None,
        })
    }
}

/// [`Item`] as the first stores wrote it (before `result_bytes`).
#[derive(Deserialize)]
struct ItemV1 {
    index: u32,
    method: String,
    path: String,
    body: Option<String>,
    key: String,
    state: ItemState,
    attempts: u32,
    next_attempt_ms: i64,
    dispatched_ms: Option<i64>,
    last_status: Option<u16>,
    job_id: Option<String>,
    result: Option<String>,
    error: Option<String>,
}

impl Item {
    /// Reads a stored item of any form (see [`decode`]).
    pub(super) fn decode(bytes: &[u8]) -> Result<Item, RecordError> {
        decode(Kind::BatchItem, bytes, |v1: ItemV1| Item {
            index: v1.index,
            method: v1.method,
            path: v1.path,
            body: v1.body,
            key: v1.key,
            state: v1.state,
            attempts: v1.attempts,
            next_attempt_ms: v1.next_attempt_ms,
            dispatched_ms: v1.dispatched_ms,
            last_status: v1.last_status,
            job_id: v1.job_id,
            result: v1.result,
            error: v1.error,
            result_bytes: None,
        })
    }
}

/// A record as stored: `v` in the envelope of `kind` ([`record::seal`]). Encoding plain data
/// cannot fail; if it ever does, the failure is logged and counted and there is no record
/// (the stored one stays as it was).
fn encode<T: Serialize>(kind: Kind, v: &T, metrics: &Metrics) -> Option<Vec<u8>> {
    match postcard::to_stdvec(v) {
        Ok(body) => Some(record::seal(kind, &body)),
        Err(e) => {
            tracing::error!(record = kind.as_str(), error = %e, "a batch record cannot be encoded; it is not stored");
            metrics.store_record_error(kind.as_str(), "encode");
            None
        }
    }
}

/// A stored record of `kind`: in its envelope, as it is now; without (written before the
/// envelope existed), as the current layout or, failing that, the first one, upgraded.
/// postcard is not self-describing: the first layout ends early, so reading it as the
/// current one fails and it is read as the first.
fn decode<T: serde::de::DeserializeOwned, V1: serde::de::DeserializeOwned>(
    kind: Kind,
    bytes: &[u8],
    upgrade: impl FnOnce(V1) -> T,
) -> Result<T, RecordError> {
    match record::open(kind, bytes)? {
        Opened::Current(body) => postcard::from_bytes(body).map_err(undecodable(kind)),
        Opened::Older(v, _) => Err(RecordError::Undecodable {
            kind: kind.as_str(),
            why: format!("an envelope of version {v}, which no ratewarden wrote"),
        }),
        Opened::Legacy(bytes) => postcard::from_bytes::<T>(bytes)
            .or_else(|e| {
                postcard::from_bytes::<V1>(bytes)
                    .map(upgrade)
                    .map_err(|_| e)
            })
            .map_err(undecodable(kind)),
    }
}

fn undecodable(kind: Kind) -> impl Fn(postcard::Error) -> RecordError {
    move |e| RecordError::Undecodable {
        kind: kind.as_str(),
        why: e.to_string(),
    }
}
