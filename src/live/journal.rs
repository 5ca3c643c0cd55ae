//! The journal's and the snapshot's stored forms: format byte, CRC-32 and the commit each
//! entry follows (format 3), the `RWS1` snapshot envelope, and the records an entry holds.
//! Older forms (journal formats 1 and 2, unsealed snapshots) are read as they are; anything
//! else is an error, never a guess.

use serde::{Deserialize, Serialize};

use crate::cluster::EntryId;
use crate::events::Event;

/// First byte of every journal entry: the record format below (2 added `Clock`; 3 added the
/// [`JOURNAL_HEADER`]; 4 added the admission records; 5 replaced an event's `ratelimit` by
/// its upstream reports of every dimension; 6 added an event's `model` and `batch`; entries
/// of formats 1 and 2 read as 4, unchecked, and format 3 as 4; format 4 events through
/// [`v4::Event`], format 5 through [`v5::Event`]).
pub(super) const JOURNAL_FORMAT: u8 = 6;
/// A format 3 entry starts with: the format byte, the CRC-32 of everything after these five
/// bytes (little-endian), and the commit of the journal entry before it (u64, little-endian)
/// — or of the snapshot, for the first entry after one. Bits that flip in the store and rows
/// that go missing are then found at start-up instead of read as other counts.
pub(super) const JOURNAL_HEADER: usize = 13;
/// A snapshot as stored: this magic, the CRC-32 of the tracker's bytes (little-endian), then
/// those bytes. Snapshots without it (older versions) are read as they are.
pub(super) const SNAPSHOT_SEAL: &[u8; 4] = b"RWS1";

/// Fills in a journal entry's header before it is committed.
pub(super) fn seal_journal(journal: &mut [u8], prev: u64) {
    if journal.len() >= JOURNAL_HEADER && journal[0] == JOURNAL_FORMAT {
        journal[5..JOURNAL_HEADER].copy_from_slice(&prev.to_le_bytes());
        let crc = crc32fast::hash(&journal[5..]);
        journal[1..5].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Whether an entry's first byte `f` names a journal format a newer ratewarden writes (such an
/// entry is never dropped as damage). Formats grow one at a time; a byte far past the current
/// one is damage or something else's bytes.
pub(super) fn newer_format(f: u8) -> bool {
    f > JOURNAL_FORMAT && f <= JOURNAL_FORMAT + 16
}

/// The records of a journal entry, and the format they are in (1 and 2 read as 4).
#[derive(Debug, Clone, Copy)]
pub(super) struct Records<'a> {
    bytes: &'a [u8],
    format: u8,
}

/// A journal entry's records and, from format 3, the commit of the entry before it; an error
/// when the format is unknown or the check fails.
pub(super) fn open_journal(data: &[u8]) -> Result<(Records<'_>, Option<u64>), String> {
    match data.split_first() {
        Some((1 | 2, records)) => Ok((
            Records {
                bytes: records,
                format: 4,
            },
            None,
        )),
        Some((&f, _)) if (3..=JOURNAL_FORMAT).contains(&f) && data.len() >= JOURNAL_HEADER => {
            let want = u32::from_le_bytes([data[1], data[2], data[3], data[4]]);
            if crc32fast::hash(&data[5..]) != want {
                return Err("its checksum does not match".into());
            }
            let mut prev = [0u8; 8];
            prev.copy_from_slice(&data[5..JOURNAL_HEADER]);
            let records = Records {
                bytes: &data[JOURNAL_HEADER..],
                format: f.max(4),
            };
            Ok((records, Some(u64::from_le_bytes(prev))))
        }
        Some((&f, _)) if newer_format(f) => Err(format!(
            "format {f}, newer than this ratewarden knows ({JOURNAL_FORMAT})"
        )),
        Some((&f, _)) if f > JOURNAL_FORMAT => Err(format!(
            "not a journal entry (its first byte is {f}, no format ratewarden writes)"
        )),
        Some((f, _)) => Err(format!("format {f} is unknown or the entry is cut short")),
        None => Err("it is empty".into()),
    }
}

/// Bytes before the tracker's in a stored snapshot: [`SNAPSHOT_SEAL`] and the CRC-32.
const SEAL_LEN: usize = SNAPSHOT_SEAL.len() + 4;

/// A buffer for a snapshot of about `size_hint` bytes, its seal's place kept at the front: the
/// tracker encodes after it and [`seal_snapshot`] fills it in, so the snapshot is never copied.
pub(super) fn snapshot_buffer(size_hint: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(SEAL_LEN + size_hint + size_hint / 8);
    buf.extend_from_slice(SNAPSHOT_SEAL);
    buf.extend_from_slice(&[0; 4]);
    buf
}

/// A snapshot as it is stored ([`SNAPSHOT_SEAL`], CRC-32, the tracker's bytes), from a
/// [`snapshot_buffer`] the tracker encoded into.
pub(super) fn seal_snapshot(mut buf: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&buf[SEAL_LEN..]);
    buf[SNAPSHOT_SEAL.len()..SEAL_LEN].copy_from_slice(&crc.to_le_bytes());
    buf
}

/// The tracker's bytes of a stored snapshot, checked when it carries a checksum.
pub(super) fn open_snapshot(bytes: &[u8]) -> Result<&[u8], String> {
    match bytes.strip_prefix(SNAPSHOT_SEAL) {
        Some(rest) if rest.len() >= 4 => {
            let want = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
            if crc32fast::hash(&rest[4..]) == want {
                Ok(&rest[4..])
            } else {
                Err("its checksum does not match".into())
            }
        }
        Some(_) => Err("it is cut short".into()),
        None => Ok(bytes),
    }
}

/// One journal record, as written.
#[derive(Serialize)]
pub(super) enum RecordRef<'r, 'a> {
    Event(&'r Event<'a>),
    Tick(i64),
    Clock(i64),
    /// A grant made (replayed as made, never weighed again).
    Grant(&'r Admission<'a>),
    /// A lease given back at a time (Unix ms).
    Release(&'r str, i64),
    /// A job id attached to a lease.
    Attach(&'r str, &'r str),
    /// A replica's ask: weighed when the log is applied, alike on every replica.
    Ask(&'r Admission<'a>),
}

/// An admission grant or ask as journaled: [`crate::tracker::Ask`] with its lease and time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Admission<'a> {
    #[serde(borrow)]
    pub(super) org: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    pub(super) app: std::borrow::Cow<'a, str>,
    pub(super) requests: u64,
    pub(super) tokens: u64,
    pub(super) job: bool,
    #[serde(borrow)]
    pub(super) request_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) lease: std::borrow::Cow<'a, str>,
    /// Unix ms.
    pub(super) now: i64,
    pub(super) share_bp: Option<u32>,
}

impl Admission<'_> {
    pub(super) fn ask(&self) -> crate::tracker::Ask<'_> {
        crate::tracker::Ask {
            org: &self.org,
            app: &self.app,
            requests: self.requests,
            tokens: self.tokens,
            job: self.job,
            request_id: self.request_id.as_deref(),
            share_bp: self.share_bp,
        }
    }
}

/// One journal record, as read back (same variant order as [`RecordRef`]).
// Records live one at a time on the stack while replaying; boxing the event would allocate
// for every record instead.
#[allow(clippy::large_enum_variant)]
#[derive(Deserialize)]
pub(super) enum Record<'a> {
    #[serde(borrow)]
    Event(Event<'a>),
    Tick(i64),
    Clock(i64),
    #[serde(borrow)]
    Grant(Admission<'a>),
    Release(&'a str, i64),
    Attach(&'a str, &'a str),
    #[serde(borrow)]
    Ask(Admission<'a>),
}

/// Calls `f` with each record of a journal entry's `records` (as [`open_journal`] gives
/// them), in order; returns how many were read, and the bytes left when a record cannot be
/// decoded (the rest of the entry is then unreadable).
pub(super) fn each_record<'a>(
    records: Records<'a>,
    mut f: impl FnMut(Record<'a>),
) -> (u64, Option<usize>) {
    let (mut records, format) = (records.bytes, records.format);
    let mut read = 0;
    while !records.is_empty() {
        let next = match format {
            4 => postcard::take_from_bytes::<v4::Record<v4::Event<'a>, Admission<'a>>>(records)
                .map(|(r, rest)| (r.into(), rest)),
            5 => postcard::take_from_bytes::<v4::Record<v5::Event<'a>, Admission<'a>>>(records)
                .map(|(r, rest)| (r.into(), rest)),
            _ => postcard::take_from_bytes::<Record<'a>>(records),
        };
        match next {
            Ok((record, rest)) => {
                records = rest;
                f(record);
                read += 1;
            }
            Err(_) => return (read, Some(records.len())),
        }
    }
    (read, None)
}

/// Journal records of formats up to 4, whose events carried the `ratelimit` object's six
/// values in place of a list of upstream reports.
mod v4 {
    use std::borrow::Cow;

    use serde::Deserialize;

    use crate::events::{Kind, QuotaReport};
    use crate::model::UpstreamDimension;

    /// An event of format 4, field for field.
    #[derive(Deserialize)]
    pub(super) struct Event<'a> {
        ts_ms: Option<i64>,
        #[serde(borrow)]
        org: Cow<'a, str>,
        app: Option<Cow<'a, str>>,
        kind: Kind,
        status: Option<u16>,
        job_id: Option<Cow<'a, str>>,
        retry_after_ms: Option<i64>,
        error_code: Option<Cow<'a, str>>,
        tokens: Option<u64>,
        latency_ms: Option<f64>,
        request_id: Option<Cow<'a, str>>,
        ratelimit: Option<RateLimit>,
    }

    /// Limit, remaining and reset (ms) of requests, then of tokens.
    pub(super) type RateLimit = (
        Option<u64>,
        Option<u64>,
        Option<i64>,
        Option<u64>,
        Option<u64>,
        Option<i64>,
    );

    /// A record of format 4 (`E` [`Event`]) or 5 (`E` [`super::v5::Event`]); `A` is the
    /// admission record, unchanged since.
    #[allow(clippy::large_enum_variant)]
    #[derive(Deserialize)]
    pub(super) enum Record<'a, E, A> {
        Event(E),
        Tick(i64),
        Clock(i64),
        Grant(A),
        Release(&'a str, i64),
        Attach(&'a str, &'a str),
        Ask(A),
    }

    impl<'a> From<Event<'a>> for crate::events::Event<'a> {
        fn from(e: Event<'a>) -> Self {
            let upstream = e
                .ratelimit
                .map(|r| {
                    [
                        (UpstreamDimension::Rpm, r.0, r.1, r.2),
                        (UpstreamDimension::Tpm, r.3, r.4, r.5),
                    ]
                    .into_iter()
                    .map(|(dimension, limit, remaining, reset_ms)| QuotaReport {
                        dimension,
                        limit,
                        remaining,
                        reset_ms,
                    })
                    .filter(|q| q.limit.is_some() || q.remaining.is_some())
                    .collect()
                })
                .unwrap_or_default();
            crate::events::Event {
                ts_ms: e.ts_ms,
                org: e.org,
                app: e.app,
                kind: e.kind,
                status: e.status,
                job_id: e.job_id,
                retry_after_ms: e.retry_after_ms,
                error_code: e.error_code,
                tokens: e.tokens,
                input_tokens: None,
                output_tokens: None,
                images: None,
                latency_ms: e.latency_ms,
                request_id: e.request_id,
                upstream,
                model: None,
                batch: false,
            }
        }
    }
}

/// Journal records of format 5, whose events did not keep the `model` or a `batch` flag.
mod v5 {
    use std::borrow::Cow;

    use serde::Deserialize;

    use crate::events::{Kind, QuotaReport};

    /// An event of format 5, field for field.
    #[derive(Deserialize)]
    pub(super) struct Event<'a> {
        ts_ms: Option<i64>,
        #[serde(borrow)]
        org: Cow<'a, str>,
        app: Option<Cow<'a, str>>,
        kind: Kind,
        status: Option<u16>,
        job_id: Option<Cow<'a, str>>,
        retry_after_ms: Option<i64>,
        error_code: Option<Cow<'a, str>>,
        tokens: Option<u64>,
        input_tokens: Option<u64>,
        output_tokens: Option<u64>,
        images: Option<u64>,
        latency_ms: Option<f64>,
        request_id: Option<Cow<'a, str>>,
        upstream: Vec<QuotaReport>,
    }

    impl<'a> From<Event<'a>> for crate::events::Event<'a> {
        fn from(e: Event<'a>) -> Self {
            crate::events::Event {
                ts_ms: e.ts_ms,
                org: e.org,
                app: e.app,
                kind: e.kind,
                status: e.status,
                job_id: e.job_id,
                retry_after_ms: e.retry_after_ms,
                error_code: e.error_code,
                tokens: e.tokens,
                input_tokens: e.input_tokens,
                output_tokens: e.output_tokens,
                images: e.images,
                latency_ms: e.latency_ms,
                request_id: e.request_id,
                upstream: e.upstream,
                model: None,
                batch: false,
            }
        }
    }
}

impl<'a, E: Into<Event<'a>>> From<v4::Record<'a, E, Admission<'a>>> for Record<'a> {
    fn from(r: v4::Record<'a, E, Admission<'a>>) -> Self {
        match r {
            v4::Record::Event(e) => Record::Event(e.into()),
            v4::Record::Tick(t) => Record::Tick(t),
            v4::Record::Clock(t) => Record::Clock(t),
            v4::Record::Grant(a) => Record::Grant(a),
            v4::Record::Release(l, t) => Record::Release(l, t),
            v4::Record::Attach(l, j) => Record::Attach(l, j),
            v4::Record::Ask(a) => Record::Ask(a),
        }
    }
}

/// Why a log entry was not applied.
#[derive(Debug, thiserror::Error)]
#[error("log entry {id} cannot be read: {why}")]
pub struct BadEntry {
    /// The entry.
    pub id: EntryId,
    /// What is wrong with it.
    pub why: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::UpstreamDimension;

    /// A format 4 entry as ratewarden 0.x wrote it: an event with its `ratelimit` values.
    #[test]
    fn format_4_events_read_with_their_ratelimit() {
        #[derive(Serialize)]
        struct OldEvent<'a> {
            ts_ms: Option<i64>,
            org: &'a str,
            app: Option<&'a str>,
            kind: crate::events::Kind,
            status: Option<u16>,
            job_id: Option<&'a str>,
            retry_after_ms: Option<i64>,
            error_code: Option<&'a str>,
            tokens: Option<u64>,
            latency_ms: Option<f64>,
            request_id: Option<&'a str>,
            ratelimit: Option<v4::RateLimit>,
        }
        let old = OldEvent {
            ts_ms: Some(1_000),
            org: "acme",
            app: Some("bot"),
            kind: crate::events::Kind::Request,
            status: Some(429),
            job_id: None,
            retry_after_ms: Some(2_000),
            error_code: None,
            tokens: Some(7),
            latency_ms: Some(1.5),
            request_id: Some("r1"),
            ratelimit: Some((Some(50), Some(0), Some(360_000), None, Some(900), None)),
        };
        let entry = old_entry(4, old, 5);
        let seen = records_of(&entry);
        let Record::Event(ev) = &seen[0] else {
            panic!("not an event")
        };
        assert_eq!(
            (&*ev.org, ev.status, ev.tokens),
            ("acme", Some(429), Some(7))
        );
        assert_eq!(ev.request_id.as_deref(), Some("r1"));
        let dims: Vec<_> = ev
            .upstream
            .iter()
            .map(|q| (q.dimension, q.limit, q.remaining, q.reset_ms))
            .collect();
        assert_eq!(
            dims,
            [
                (UpstreamDimension::Rpm, Some(50), Some(0), Some(360_000)),
                (UpstreamDimension::Tpm, None, Some(900), None)
            ]
        );
        assert!(matches!(seen[1], Record::Tick(5)));
    }

    /// A format 5 entry: an event with its input and output tokens and upstream reports, but
    /// no model or batch flag.
    #[test]
    fn format_5_events_read_without_a_model() {
        #[derive(Serialize)]
        struct OldEvent<'a> {
            ts_ms: Option<i64>,
            org: &'a str,
            app: Option<&'a str>,
            kind: crate::events::Kind,
            status: Option<u16>,
            job_id: Option<&'a str>,
            retry_after_ms: Option<i64>,
            error_code: Option<&'a str>,
            tokens: Option<u64>,
            input_tokens: Option<u64>,
            output_tokens: Option<u64>,
            images: Option<u64>,
            latency_ms: Option<f64>,
            request_id: Option<&'a str>,
            upstream: Vec<crate::events::QuotaReport>,
        }
        let old = OldEvent {
            ts_ms: Some(1_000),
            org: "acme",
            app: None,
            kind: crate::events::Kind::Request,
            status: Some(200),
            job_id: Some("j1"),
            retry_after_ms: None,
            error_code: None,
            tokens: Some(30),
            input_tokens: Some(20),
            output_tokens: Some(10),
            images: Some(2),
            latency_ms: None,
            request_id: None,
            upstream: vec![crate::events::QuotaReport {
                dimension: UpstreamDimension::Itpm,
                limit: Some(1_000),
                remaining: Some(980),
                reset_ms: None,
            }],
        };
        let entry = old_entry(5, old, 9);
        let seen = records_of(&entry);
        let Record::Event(ev) = &seen[0] else {
            panic!("not an event")
        };
        assert_eq!(
            (
                ev.input_tokens,
                ev.output_tokens,
                ev.images,
                ev.job_id.as_deref()
            ),
            (Some(20), Some(10), Some(2), Some("j1"))
        );
        assert_eq!((ev.model.as_deref(), ev.batch), (None, false));
        assert_eq!(ev.upstream[0].limit, Some(1_000));
        assert!(matches!(seen[1], Record::Tick(9)));
    }

    /// A record as older formats wrote it, around that format's event.
    #[derive(Serialize)]
    enum OldRecord<E> {
        Event(E),
        Tick(i64),
    }

    /// An entry of `format` holding `event` and a tick at `tick`, sealed as that format was
    /// ([`seal_journal`] seals only the current one).
    fn old_entry(format: u8, event: impl Serialize, tick: i64) -> Vec<u8> {
        let mut entry = vec![format; JOURNAL_HEADER];
        entry.extend(postcard::to_stdvec(&OldRecord::Event(event)).unwrap());
        entry.extend(postcard::to_stdvec(&OldRecord::<()>::Tick(tick)).unwrap());
        entry[5..JOURNAL_HEADER].copy_from_slice(&0u64.to_le_bytes());
        let crc = crc32fast::hash(&entry[5..]);
        entry[1..5].copy_from_slice(&crc.to_le_bytes());
        entry
    }

    /// The records of `entry`, every one readable.
    fn records_of(entry: &[u8]) -> Vec<Record<'_>> {
        let (records, _) = open_journal(entry).unwrap();
        let mut seen = Vec::new();
        assert_eq!(each_record(records, |r| seen.push(r)), (2, None));
        seen
    }
}
