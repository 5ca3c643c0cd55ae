//! The one intake path: bytes as producers write them, normalised and framed into records,
//! decoded by a [`LineFormat`], counted.
//!
//! HTTP bodies ([`body_records`]), the file tailer and `replay` (both [`LineFramer`]) frame
//! bytes here and decode every record through [`LineFormat::decode`], so one input gives the
//! same events and the same counts on every path. Normalisation: a UTF-8 byte-order mark at
//! the start of a body or line is dropped (Windows tools write one at the start of a file),
//! CRLF line ends are LF, blank lines are no records, and objects back to back without a
//! newline (Fluent Bit's `json_stream`) are separate events. [`SourceStats`] counts what a
//! source accepted, rejected and lost field by field, and says once, in the log, when a
//! source's first lines are all rejected or a mapped field is never found.

use serde_json::value::RawValue;

pub use super::event::FieldSet;
use super::event::{EventField, FieldError, ParseContext, Parsed, Reason, Rejection};
use super::format::LineFormat;

/// The UTF-8 encoding of U+FEFF, the byte-order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Records a source's first-lines check looks at before it decides.
const FIRST_LINES: u32 = 100;
/// Most bytes of a rejected line quoted in the first-lines warning.
const SAMPLE_BYTES: usize = 200;

/// First bytes of the archive formats logrotate and friends write (RFC 1952 gzip, RFC 8878
/// zstd, bzip2, xz): such bytes are never read as lines of text.
const ARCHIVES: [(&str, &[u8]); 4] = [
    ("gzip", b"\x1f\x8b"),
    ("zstd", b"\x28\xb5\x2f\xfd"),
    ("bzip2", b"BZh"),
    ("xz", b"\xfd7zXZ\x00"),
];

/// The archive format `head` (a file's first bytes) starts with, if any.
pub fn archive_format(head: &[u8]) -> Option<&'static str> {
    ARCHIVES
        .iter()
        .find(|(_, magic)| head.starts_with(magic))
        .map(|(name, _)| *name)
}

/// `bytes` without a leading byte-order mark.
pub fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(BOM).unwrap_or(bytes)
}

/// One framed line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'b> {
    /// A line without its line end or byte-order mark; never blank.
    Text(&'b [u8]),
    /// A line longer than the limit; its bytes were dropped as they came.
    TooLong,
}

/// Splits a byte stream into lines, chunk by chunk, never holding more than `max` bytes of
/// one line: a longer line is dropped as it arrives and reported once as [`Line::TooLong`].
#[derive(Debug, Clone)]
pub struct LineFramer {
    max: usize,
    /// Inside a line longer than `max`: bytes are dropped up to its newline.
    skipping: bool,
}

impl LineFramer {
    /// A framer for lines of at most `max` bytes.
    pub fn new(max: usize) -> LineFramer {
        LineFramer {
            max,
            skipping: false,
        }
    }

    /// True while inside a line longer than the limit.
    pub fn skipping(&self) -> bool {
        self.skipping
    }

    /// Frames `buf`, the bytes after those already consumed, calling `each` per line, and
    /// returns how many bytes were consumed. An unfinished last line is left for the next
    /// call (the caller keeps it and appends to it), unless it is already too long or
    /// `at_eof` says no more bytes will come, in which case it is a line of its own.
    pub fn feed<'b>(&mut self, buf: &'b [u8], at_eof: bool, each: impl FnMut(Line<'b>)) -> usize {
        self.feed_at_most(buf, at_eof, usize::MAX, each)
    }

    /// [`LineFramer::feed`] that also gives each line its text when the whole lines of `buf`
    /// are UTF-8: one check of them all (SIMD, with a set-up cost per call) instead of one
    /// per line, which was 2–3 % of a replay on one thread. Invalid text anywhere leaves
    /// every line to its own check (and its own error).
    pub fn feed_checked<'b>(
        &mut self,
        buf: &'b [u8],
        at_eof: bool,
        mut each: impl FnMut(Line<'b>, Option<&'b str>),
    ) -> usize {
        let whole = if at_eof {
            buf.len()
        } else {
            memchr::memrchr(b'\n', buf).map_or(0, |nl| nl + 1)
        };
        let block = buf
            .get(..whole)
            .and_then(|b| simdutf8::basic::from_utf8(b).ok());
        self.feed(buf, at_eof, |l| each(l, block.and_then(|b| within(b, l))))
    }

    /// [`LineFramer::feed`], stopping after `limit` lines (at least one): the bytes consumed
    /// then end with that line's newline, and the caller feeds the rest again (it holds
    /// whole lines, so nothing more need be read first). A replay's blocks are held to a
    /// number of lines this way, since each line's decoded record outweighs its bytes.
    pub fn feed_at_most<'b>(
        &mut self,
        buf: &'b [u8],
        at_eof: bool,
        limit: usize,
        mut each: impl FnMut(Line<'b>),
    ) -> usize {
        let mut start = 0;
        // Lines still to give (blank lines give none); a cell, read between the calls of
        // `each` that count it down.
        let left = std::cell::Cell::new(limit.max(1));
        let mut each = |l: Line<'b>| {
            left.set(left.get() - 1);
            each(l)
        };
        if self.skipping {
            match memchr::memchr(b'\n', buf) {
                Some(nl) => {
                    start = nl + 1;
                    self.skipping = false;
                    each(Line::TooLong);
                    if left.get() == 0 {
                        return start;
                    }
                }
                None => {
                    if at_eof {
                        self.skipping = false;
                        each(Line::TooLong);
                    }
                    return buf.len();
                }
            }
        }
        while let Some(nl) = memchr::memchr(b'\n', &buf[start..]) {
            self.line(&buf[start..start + nl], &mut each);
            start += nl + 1;
            if left.get() == 0 {
                return start;
            }
        }
        let rest = &buf[start..];
        if at_eof {
            if !rest.is_empty() {
                self.line(rest, &mut each);
            }
            return buf.len();
        }
        // An unfinished line surely over the limit: drop it as it comes. A leading BOM and a
        // last `\r` (its `\n` may be next) do not count, as `line` strips them: where a read
        // ends must not change what is too long.
        let body = strip_bom(rest);
        if body.len() - usize::from(body.ends_with(b"\r")) > self.max {
            self.skipping = true;
            return buf.len();
        }
        start
    }

    fn line<'b>(&self, line: &'b [u8], each: &mut impl FnMut(Line<'b>)) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = strip_bom(line);
        if line.len() > self.max {
            each(Line::TooLong);
        } else if !line.iter().all(u8::is_ascii_whitespace) {
            each(Line::Text(line));
        }
    }
}

/// The text of `line` when its bytes lie within `block`: lines end at a newline (and lose
/// only a whole BOM or `\r`), so their ends are character boundaries of the block.
fn within<'b>(block: &'b str, line: Line<'_>) -> Option<&'b str> {
    let Line::Text(bytes) = line else {
        return None;
    };
    let at = bytes.as_ptr().addr().checked_sub(block.as_ptr().addr())?;
    block.get(at..at.checked_add(bytes.len())?)
}

/// Splits an HTTP body into records (SPEC §6 body formats), after dropping a byte-order mark.
///
/// With a JSON content type the body is first read as one value (an object, or an array
/// whose elements are the records); if it is not one JSON value it is lines, as some shippers
/// send JSON lines under `application/json`. Any other type is lines. Lines may hold several
/// objects back to back (Fluent Bit's `json_stream`): [`LineFormat::decode`] splits those.
/// Lines have no length limit here; each event is held to the context's `max_event_bytes`.
pub fn body_records<'b>(body: &'b [u8], json_type: bool, mut each: impl FnMut(&'b [u8])) {
    let body = strip_bom(body);
    if json_type {
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        if first == Some(&b'[')
            && let Ok(items) = serde_json::from_slice::<Vec<&RawValue>>(body)
        {
            return items.into_iter().for_each(|r| each(r.get().as_bytes()));
        }
        if let Ok(one) = serde_json::from_slice::<&RawValue>(body) {
            return each(one.get().as_bytes());
        }
    }
    LineFramer::new(usize::MAX).feed(body, true, |line| {
        if let Line::Text(t) = line {
            each(t)
        }
    });
}

/// What one source (or one body) took in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Events accepted.
    pub accepted: u64,
    /// Events rejected, by [`Reason`] index.
    pub rejected: [u64; Reason::ALL.len()],
    /// Fields lost by accepted events, by [`EventField`] index.
    pub field_errors: [u64; EventField::ALL.len()],
}

impl Tally {
    /// Counts one decoded record.
    pub fn note(&mut self, r: &Result<Parsed<'_>, Rejection>) {
        match r {
            Ok(p) => self.note_accepted(&p.field_errors),
            Err(rej) => self.note_rejected(rej),
        }
    }

    /// Counts an accepted event and the fields it lost.
    pub fn note_accepted(&mut self, field_errors: &[FieldError]) {
        self.accepted += 1;
        for e in field_errors {
            self.field_errors[e.field as usize] += 1;
        }
    }

    /// Counts a rejected event.
    pub fn note_rejected(&mut self, rej: &Rejection) {
        self.rejected[rej.reason as usize] += 1;
    }

    /// Rejected events of every reason.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    /// Field errors of every field.
    pub fn field_errors_total(&self) -> u64 {
        self.field_errors.iter().sum()
    }

    /// `reason=n` pairs of what was rejected, for reports.
    pub fn rejected_summary(&self) -> String {
        Reason::ALL
            .iter()
            .filter(|r| self.rejected[**r as usize] > 0)
            .map(|r| format!("{}={}", r.as_str(), self.rejected[*r as usize]))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// `field=n` pairs of the fields lost, for reports.
    pub fn field_errors_summary(&self) -> String {
        EventField::ALL
            .iter()
            .filter(|f| self.field_errors[**f as usize] > 0)
            .map(|f| format!("{}={}", f.name(), self.field_errors[*f as usize]))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The first-lines check of one source: a format that rejects everything, or a `fields`
/// mapping that never matches, is said once in the log instead of silently counting nothing.
#[derive(Debug)]
struct FirstLines {
    seen: u32,
    accepted: u32,
    /// The first rejection: reason, detail and the start of its line.
    first: Option<(Reason, String, String)>,
    /// Mapped JSON fields found so far.
    found: FieldSet,
    done: bool,
}

/// A source's counts since they were last taken, and its first-lines check.
#[derive(Debug)]
pub struct SourceStats {
    source: String,
    /// Counts since the last [`SourceStats::take`].
    pub tally: Tally,
    first: FirstLines,
}

impl SourceStats {
    /// Stats of the source named `source` (in logs).
    pub fn new(source: &str) -> SourceStats {
        SourceStats {
            source: source.to_string(),
            tally: Tally::default(),
            first: FirstLines {
                seen: 0,
                accepted: 0,
                first: None,
                found: FieldSet::default(),
                done: false,
            },
        }
    }

    /// Decodes one framed line with `format`, hands each accepted event to `accept` and
    /// counts everything.
    pub fn line<'l>(
        &mut self,
        format: &LineFormat,
        ctx: &ParseContext<'l>,
        line: Line<'l>,
        accept: impl FnMut(Parsed<'l>),
    ) {
        match line {
            Line::Text(bytes) => self.decode_counted(format, ctx, bytes, None, accept),
            Line::TooLong => {
                let r = Rejection::new(Reason::TooLarge, "the line is longer than its limit");
                self.rejected(format, b"(a line over the limit, not kept)", &r);
            }
        }
    }

    /// [`SourceStats::line`] of a line already known to be UTF-8 (replay checks the whole
    /// lines of what it read at once): decoded without a check of its own.
    pub fn text_line<'l>(
        &mut self,
        format: &LineFormat,
        ctx: &ParseContext<'l>,
        text: &'l str,
        accept: impl FnMut(Parsed<'l>),
    ) {
        self.decode_counted(format, ctx, text.as_bytes(), Some(text), accept);
    }

    /// Decodes the line `bytes` (`text` when known to be UTF-8) and counts it.
    #[inline(always)]
    fn decode_counted<'l>(
        &mut self,
        format: &LineFormat,
        ctx: &ParseContext<'l>,
        bytes: &'l [u8],
        text: Option<&'l str>,
        mut accept: impl FnMut(Parsed<'l>),
    ) {
        let mut found = self.first.found;
        // Matched by value, not counted through a reference first: that kept the whole
        // result alive across the count and copied it (300 bytes) to hand the event on.
        let emit = |r: Result<Parsed<'l>, Rejection>| match r {
            Ok(p) => {
                self.accepted(format, &p.field_errors);
                accept(p);
            }
            Err(rej) => self.rejected(format, bytes, &rej),
        };
        match text {
            Some(text) => format.decode_text(text, ctx, &mut found, emit),
            None => format.decode(bytes, ctx, &mut found, emit),
        }
        self.first.found = found;
    }

    /// Counts the records of a line decoded elsewhere (replay's decoding threads) as
    /// [`SourceStats::line`] would have: `accepted` or `rejected` for each record of the
    /// line in order, then `line_done` with the mapped fields the line held. This one: an
    /// accepted event that lost `field_errors` (no [`Parsed`] is needed).
    pub fn accepted(&mut self, format: &LineFormat, field_errors: &[FieldError]) {
        self.tally.note_accepted(field_errors);
        self.observe(format, None);
    }

    /// A rejected event of `line` (see [`SourceStats::accepted`]).
    pub fn rejected(&mut self, format: &LineFormat, line: &[u8], rej: &Rejection) {
        self.tally.note_rejected(rej);
        self.observe(format, Some((line, rej)));
    }

    /// Ends a line counted with [`SourceStats::accepted`]/[`SourceStats::rejected`]: notes
    /// the mapped fields it held.
    pub fn line_done(&mut self, found: FieldSet) {
        self.first.found.extend(found);
    }

    /// Notes a record for the first-lines check: accepted (`None`), or rejected from `line`.
    fn observe(&mut self, format: &LineFormat, rejected: Option<(&[u8], &Rejection)>) {
        let f = &mut self.first;
        if f.done {
            return;
        }
        f.seen += 1;
        match rejected {
            None => f.accepted += 1,
            Some((line, rej)) if f.first.is_none() => {
                let sample = String::from_utf8_lossy(&line[..line.len().min(SAMPLE_BYTES)]);
                f.first = Some((rej.reason, rej.detail.to_string(), sample.into_owned()));
            }
            Some(_) => {}
        }
        if f.seen >= FIRST_LINES {
            self.settle(format);
        }
    }

    /// Decides the first-lines check now (the source has read all there is for the moment),
    /// if any line was seen; logs at most once per source.
    pub fn settle(&mut self, format: &LineFormat) {
        let f = &mut self.first;
        if f.done || f.seen == 0 {
            return;
        }
        f.done = true;
        if f.accepted == 0
            && let Some((reason, detail, sample)) = &f.first
        {
            tracing::warn!(
                source = %self.source,
                lines = f.seen,
                reason = reason.as_str(),
                detail = %detail,
                sample = %sample,
                "none of the first lines of this source was accepted; check its format and fields"
            );
        }
        for (field, path) in format.mappings() {
            if !f.found.contains(*field) {
                tracing::warn!(
                    source = %self.source,
                    lines = f.seen,
                    field = field.name(),
                    path = path.as_str(),
                    "a mapped field was found in none of the first lines; check its path"
                );
            }
        }
    }

    /// The counts since the last call, for metrics.
    pub fn take(&mut self) -> Tally {
        std::mem::take(&mut self.tally)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(chunks: &[&[u8]], max: usize) -> Vec<Result<String, ()>> {
        frame_at_most(chunks, max, usize::MAX)
    }

    #[test]
    fn lines_across_chunks_crlf_bom_and_a_last_line_without_newline() {
        assert_eq!(
            frame(&[b"\xEF\xBB\xBFhel", b"lo\r\nab\n\n  \r\nla", b"st"], 100),
            vec![Ok("hello".into()), Ok("ab".into()), Ok("last".into())]
        );
    }

    /// Framing `chunks` with at most `limit` lines a call, feeding what is left again
    /// before the next chunk whenever a call stops at its limit (as replay's reader does).
    fn frame_at_most(chunks: &[&[u8]], max: usize, limit: usize) -> Vec<Result<String, ()>> {
        let mut f = LineFramer::new(max);
        let mut out = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            pending.extend_from_slice(c);
            let eof = i + 1 == chunks.len();
            loop {
                let mut given = 0;
                let used = f.feed_at_most(&pending, eof, limit, |l| {
                    given += 1;
                    out.push(match l {
                        Line::Text(t) => Ok(String::from_utf8_lossy(t).into_owned()),
                        Line::TooLong => Err(()),
                    })
                });
                assert!(
                    given <= limit.max(1),
                    "{given} lines past the limit {limit}"
                );
                pending.drain(..used);
                if given < limit.max(1) {
                    break;
                }
            }
        }
        out
    }

    #[test]
    fn a_line_limit_frames_the_same_lines() {
        let inputs: [&[&[u8]]; 4] = [
            &[b"\xEF\xBB\xBFhel", b"lo\r\nab\n\n  \r\nla", b"st"],
            &[b"a\nb\nc\nd\ne\nf\ng"],
            &[
                b"short\nthis line is far too long\nok\n",
                b"and another line too long",
                b" still\nx\n\n",
            ],
            &[b"", b"\n\n\n", b"y"],
        ];
        for chunks in inputs {
            let want = frame(chunks, 8);
            for limit in [0, 1, 2, 3, 100] {
                assert_eq!(frame_at_most(chunks, 8, limit), want, "limit {limit}");
            }
        }
    }

    #[test]
    fn without_eof_an_unfinished_line_waits() {
        let mut f = LineFramer::new(100);
        let mut n = 0;
        assert_eq!(f.feed(b"{\"a\":1}\n{\"b\"", false, |_| n += 1), 8);
        assert_eq!(n, 1);
    }

    #[test]
    fn long_lines_are_skipped_not_held() {
        let long = "x".repeat(50);
        assert_eq!(
            frame(&[b"short\n", long.as_bytes(), b"\nafter\n"], 10),
            vec![Ok("short".into()), Err(()), Ok("after".into())]
        );
        // Still too long at the end of the input: reported once.
        assert_eq!(frame(&[b"ok\n", long.as_bytes(), b"yy"], 10).len(), 2);
        // Exactly the limit after the CR is dropped is fine.
        assert_eq!(
            frame(&[b"0123456789\r\n"], 10),
            vec![Ok("0123456789".into())]
        );
        // Wherever a read ends: before the `\n` of a CRLF, or after a BOM and the limit.
        assert_eq!(
            frame(&[b"0123456789\r", b"\n"], 10),
            vec![Ok("0123456789".into())]
        );
        assert_eq!(
            frame(&[b"\xEF\xBB\xBF0123456789", b"\r", b"\n"], 10),
            vec![Ok("0123456789".into())]
        );
        assert_eq!(frame(&[b"0123456789x\r", b"\n"], 10), vec![Err(())]);
        assert_eq!(frame(&[b"0123456789\r\r", b"\n"], 10), vec![Err(())]);
    }

    fn body(b: &[u8], json: bool) -> Vec<String> {
        let mut out = Vec::new();
        body_records(b, json, |r| {
            out.push(String::from_utf8_lossy(r).into_owned())
        });
        out
    }

    #[test]
    fn body_splitting() {
        assert_eq!(body(b"{\"a\":1}\n\n{\"b\":2}\r\n", false).len(), 2);
        assert_eq!(body(b"[{\"a\":1},{\"b\":2}]", true).len(), 2);
        assert_eq!(body(b" {\"a\":1} ", true), vec!["{\"a\":1}"]);
        assert_eq!(
            body(b"{\n \"a\": 1\n}", true).len(),
            1,
            "one pretty-printed object"
        );
        // JSON lines under application/json fall back to lines.
        assert_eq!(body(b"{\"a\":1}\n{\"b\":2}\n", true).len(), 2);
        // An array under NDJSON is one (invalid) line.
        assert_eq!(body(b"[{\"a\":1}]", false).len(), 1);
        assert!(body(b"", true).is_empty());
        assert!(body(b"[]", true).is_empty());
        assert!(body(b"\n \n", false).is_empty());
        // A byte-order mark costs nothing.
        assert_eq!(body(b"\xEF\xBB\xBF[{\"a\":1},{\"b\":2}]", true).len(), 2);
        assert_eq!(body(b"\xEF\xBB\xBF{\"a\":1}\n{\"b\":2}", false).len(), 2);
        // json_stream stays one record here; decoding splits it.
        assert_eq!(body(b"{\"a\":1}{\"b\":2}", true).len(), 1);
    }

    #[test]
    fn tally_counts_events_rejections_and_field_errors() {
        let f = LineFormat::json(&Default::default()).unwrap();
        let ctx = ParseContext::default();
        let mut stats = SourceStats::new("t");
        let mut events = 0;
        for l in [
            &b"{\"org\":\"a\",\"status\":\"2xx\"}{\"org\":\"b\"}"[..],
            b"{\"status\":200}",
            b"nope",
        ] {
            stats.line(&f, &ctx, Line::Text(l), |_| events += 1);
        }
        stats.line(&f, &ctx, Line::TooLong, |_| events += 1);
        let t = stats.take();
        assert_eq!((events, t.accepted, t.rejected_total()), (2, 2, 3));
        assert_eq!(t.rejected[Reason::MissingOrg as usize], 1);
        assert_eq!(t.rejected[Reason::TooLarge as usize], 1);
        assert_eq!(t.field_errors[EventField::Status as usize], 1);
        assert_eq!(t.field_errors_summary(), "status=1");
        assert_eq!(stats.take(), Tally::default(), "taken");
    }
}
