//! Replay on several threads with the answers of one: worker threads take turns reading and
//! framing the inputs into blocks of whole lines ([`Source`]), each decoding and validating
//! the block it read, and the calling thread takes the decoded blocks in input order (and
//! routes their events to the shards that apply them: `sharded`), reading and decoding a
//! block itself whenever the next one is not ready.
//!
//! Decoding (JSON or a log template, then SPEC §4 validation) is the larger part of the
//! per-line cost and needs nothing but the line, so it spreads over threads; the tracker sees
//! exactly the sequence of events, rejections and ticks a single thread would give it, so
//! the report is byte-identical whatever the thread count.
//!
//! A decoded block holds each line's event as decoded, its strings still borrowing the block's
//! bytes ([`Record`]), so nothing is copied or read again on the threads that apply it.
//!
//! `--threads N` runs N threads in all: N − 1 decoders and the calling thread. Every one of
//! them also applies the shards' batches ([`Chores`]) between blocks (a decoder before it
//! reads another and while the budget has no room), and the calling thread decodes too while
//! it would otherwise wait: whichever stage is behind gets every core, with no more threads
//! than cores to share them. (Shards on threads of their own, with N decoders besides the
//! caller, ran five threads on two cores: 1.75 cores busy; the same work done this way took
//! about a tenth less wall time and 5 % less CPU.) What is in flight (read, not yet
//! applied) is held to budgets per thread: input bytes ([`BYTES_PER_THREAD`];
//! one block at a time past it, for a block that holds one long line) and the records decoded
//! from them ([`RECORDS_PER_THREAD`]; a block of at most [`BLOCK_LINES`] lines, and a
//! decoder over it waits), so memory does not grow with the input: a block's share is
//! released when the last thread done with it drops its [`Lease`].

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex};

use super::input::{Reading, ReplayError};
use crate::events::format::LineFormat;
use crate::events::intake::FieldSet;
use crate::events::{Event, FieldError, Parsed, Rejection};

mod budget;
mod source;
use budget::{Admit, Cost, InFlight};
use source::{BLOCK, BLOCK_LINES, Framed, Source};

/// What a line adds to its block's memory besides its bytes: its record and its entry in
/// the block's lines.
const LINE_COST: usize = size_of::<Record>() + size_of::<DecodedLine>();

/// Input bytes in flight (read, not yet applied) per thread: two blocks.
const BYTES_PER_THREAD: usize = 2 * BLOCK;

/// Memory of decoded records in flight per thread: those of two blocks of lines of
/// 160 bytes ([`LINE_COST`] a line).
const RECORDS_PER_THREAD: usize = 2 * (BLOCK / 160) * LINE_COST;

/// The in-flight budget of a replay on `threads` threads.
fn budget(threads: usize) -> Cost {
    Cost {
        bytes: threads * BYTES_PER_THREAD,
        records: threads * RECORDS_PER_THREAD,
    }
}

/// Records decoded between two counts of them against the budget, within a line too: a
/// line of many objects (`{}{}…`) makes a record of each, so a decoder over the budget waits
/// in the middle of it.
const COUNT_EVERY: usize = 4096;

/// Work besides reading and decoding that any thread of the replay takes up between blocks,
/// before it reads another and while it would wait for room: applying the shards' batches
/// (`sharded`). So the replay needs no threads of its own for them, and runs no more
/// threads than it was given.
pub(super) trait Chores: Sync {
    /// Some is queued that no thread is doing.
    fn ready(&self) -> bool;
    /// Does one piece, if one is queued that no thread is doing; whether it did.
    fn run_one(&self) -> bool;
}

/// Buffers the applier is done with, kept for the threads that read and decode to fill again:
/// a fresh quarter-megabyte block per read (and its decoded records) costs page faults
/// and zeroed pages on every block, which made the threaded replay spend a seventh of its
/// CPU time in the kernel. At most the blocks in flight are ever held here.
#[derive(Default)]
struct Spares {
    bytes: Mutex<Vec<Vec<u8>>>,
    spans: Mutex<Vec<Vec<Option<Range<usize>>>>>,
    lines: Mutex<Vec<Vec<DecodedLine>>>,
    records: Mutex<Vec<Vec<Record>>>,
}

/// An emptied buffer from `pool`, or a new one. Emptied here, by the thread that fills it
/// again, rather than by the thread done with it, which may be one that applies (records
/// are the exception: see [`Spares::keep_decoded`]).
fn spare<T>(pool: &Mutex<Vec<Vec<T>>>) -> Vec<T> {
    let mut v = pool
        .lock()
        .ok()
        .and_then(|mut p| p.pop())
        .unwrap_or_default();
    v.clear();
    v
}

/// Keeps `v` in `pool`, to be emptied when it is taken again.
fn keep<T>(pool: &Mutex<Vec<Vec<T>>>, v: Vec<T>) {
    if let Ok(mut p) = pool.lock() {
        p.push(v);
    }
}

impl Spares {
    /// Keeps a block's buffers. Its records are emptied here, before its bytes can be
    /// filled again: they borrow those bytes ([`Record`]).
    fn keep_decoded(&self, d: Decoded) {
        let Decoded {
            mut records,
            bytes,
            lines,
            owns_heap,
            ..
        } = d;
        if owns_heap {
            records.clear();
        } else {
            // SAFETY: length 0 is within any capacity and counts no element. The records
            // are forgotten, not dropped: none owns memory (`owns_heap`), so nothing leaks.
            // Their drops read every record once more, on the thread releasing the block
            // (1.7 % of a two-thread replay's instructions).
            unsafe { records.set_len(0) };
        }
        // Records of a line of very many objects are let go, not kept for every block after.
        if records.capacity() <= 2 * BLOCK_LINES {
            keep(&self.records, records);
        }
        keep(&self.bytes, bytes.into_vec());
        keep(&self.lines, lines);
    }
}

/// The buffers and the budget of one replay, shared by its threads and by the blocks
/// handed out ([`Lease`]), which may outlive [`run`] on a thread that applies them.
struct Pool {
    spares: Spares,
    in_flight: InFlight,
}

/// A decoded block handed to the applier. Dropping it gives its buffers back and releases its
/// share of the budget, on whichever thread is last done with it: a thread waiting to read
/// waits for that, never for the applying thread to notice.
pub(super) struct Lease {
    decoded: Decoded,
    pool: Arc<Pool>,
}

impl std::ops::Deref for Lease {
    type Target = Decoded;

    fn deref(&self) -> &Decoded {
        &self.decoded
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Empty vectors allocate nothing: what is left behind costs nothing to drop.
        let empty = Decoded {
            owns_heap: false,
            seq: self.decoded.seq,
            cost: Cost::default(),
            bytes: BlockBytes::Raw(Vec::new()),
            lines: Vec::new(),
            records: Vec::new(),
        };
        let d = std::mem::replace(&mut self.decoded, empty);
        let n = d.cost;
        self.pool.spares.keep_decoded(d);
        self.pool.in_flight.release(n);
    }
}

/// Whole lines of one input, as read.
struct Block {
    seq: u64,
    /// What it counts against the budget: its bytes, and [`LINE_COST`] a line.
    cost: Cost,
    bytes: Vec<u8>,
    /// Each framed line: its bytes, or `None` for a line over the limit (not kept).
    lines: Vec<Option<Range<usize>>>,
}

/// One record of a decoded line: its event (with the fields that did not parse) or why it
/// was rejected, as decoded, its strings still borrowing the bytes of the block it was
/// decoded from, which it travels with to the applying threads: nothing is copied or
/// checked again there. (Strings as byte ranges of the block, made into an event again on
/// the applying side, cost about 450 instructions a line, most of a threaded line's extra.)
///
/// The lifetime is erased, so the borrow is upheld here instead of by the compiler: a
/// `Record` is made only in [`decode_block`] from what was decoded from the block's bytes,
/// lives only in that block's [`Decoded::records`], is only ever lent out (never moved out
/// or cloned) and only for as long as the block is borrowed, and a block's records are
/// emptied before its bytes are released or reused ([`Spares::keep_decoded`]; the records
/// field is declared first so that they are also dropped first). The bytes' heap buffer does
/// not move when the block does.
#[repr(transparent)]
pub(super) struct Record(Result<Parsed<'static>, Rejection>);

impl Record {
    /// Pushes `decoded`, decoded from `block`, onto `records`, the records of that block:
    /// moved once, as it is (building another type from it copied the event three times).
    /// Returns whether it owns heap memory (a rejection counts as owning: they are few).
    ///
    /// # Safety
    /// `records` must not outlive `block`'s bytes or see them changed: see [`Record`].
    unsafe fn push(
        records: &mut Vec<Record>,
        decoded: Result<Parsed<'_>, Rejection>,
        block: &[u8],
    ) -> bool {
        records.reserve(1);
        let len = records.len();
        // SAFETY: `reserve` made room for one more at `len`, which `write` fills before
        // `set_len` counts it, so the vector never holds an uninitialised record. The types
        // differ only in the lifetime (same layout: `Record` is a transparent wrapper); what
        // remains borrowed lies in `block` once `own_outside` is done, before `push`
        // returns and before anything reads the record, and the caller keeps `block` alive
        // and unchanged for as long as `records` holds it. Written in place: a `push` of the
        // record built from `decoded` copied it twice more.
        unsafe {
            let slot = records
                .as_mut_ptr()
                .add(len)
                .cast::<Result<Parsed<'_>, Rejection>>();
            slot.write(decoded);
            records.set_len(len + 1);
        }
        match records.last_mut() {
            Some(Record(Ok(p))) => {
                own_outside(&mut p.event, block) || p.field_errors.capacity() != 0
            }
            _ => true,
        }
    }

    /// The event and the fields of it that did not parse, or why the line was rejected;
    /// borrowed for no longer than the block is.
    pub(super) fn get(&self) -> Result<(&Event<'_>, &[FieldError]), &Rejection> {
        match &self.0 {
            Ok(p) => Ok((&p.event, &p.field_errors)),
            Err(e) => Err(e),
        }
    }
}

/// Makes every string `ev` borrows from elsewhere than `block` (a source's default org or
/// app) its own, so that only the block's bytes are borrowed; returns whether `ev` then
/// owns heap memory.
fn own_outside(ev: &mut Event<'_>, block: &[u8]) -> bool {
    let base = block.as_ptr_range();
    let base = base.start as usize..base.end as usize;
    let own = |s: &mut std::borrow::Cow<'_, str>| {
        if let std::borrow::Cow::Borrowed(b) = s {
            let at = b.as_ptr() as usize;
            // (An empty one from elsewhere is owned too: it allocates nothing, and no record
            // then points outside its block at all.)
            if !(base.contains(&at) && at + b.len() <= base.end) {
                *s = std::borrow::Cow::Owned((*b).to_owned());
            }
        }
    };
    // Every string field by name, so that a new one does not compile until it is handled
    // here.
    let Event {
        ts_ms: _,
        org,
        app,
        kind: _,
        status: _,
        job_id,
        retry_after_ms: _,
        error_code,
        tokens: _,
        input_tokens: _,
        output_tokens: _,
        images: _,
        latency_ms: _,
        request_id,
        upstream,
        model,
        batch: _,
    } = ev;
    own(org);
    let mut owns = matches!(org, std::borrow::Cow::Owned(_)) || upstream.capacity() != 0;
    for s in [app, job_id, error_code, request_id, model]
        .into_iter()
        .flatten()
    {
        own(s);
        owns |= matches!(s, std::borrow::Cow::Owned(_));
    }
    owns
}

/// A decoded line: its bytes in the block (`None`: over the limit, not kept), its records
/// and the mapped fields it held.
pub(super) struct DecodedLine {
    pub(super) line: Option<Range<usize>>,
    pub(super) found: FieldSet,
    pub(super) records: Range<usize>,
}

/// A block's bytes: text when the whole block is UTF-8, else as read. One check of the block
/// on a decoding thread replaces one per line there, and the applying thread then takes the
/// strings its events borrow without checking each again.
pub(super) enum BlockBytes {
    Text(String),
    Raw(Vec<u8>),
}

impl BlockBytes {
    fn new(bytes: Vec<u8>) -> BlockBytes {
        // simdutf8's check, as a single-thread replay's of each record: std's took twice its
        // instructions (80 a line of the bench file).
        if simdutf8::basic::from_utf8(&bytes).is_ok() {
            // SAFETY: the bytes were just checked to be UTF-8, and are not changed since.
            BlockBytes::Text(unsafe { String::from_utf8_unchecked(bytes) })
        } else {
            BlockBytes::Raw(bytes)
        }
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        match self {
            BlockBytes::Text(s) => s.as_bytes(),
            BlockBytes::Raw(b) => b,
        }
    }

    fn into_vec(self) -> Vec<u8> {
        match self {
            BlockBytes::Text(s) => s.into_bytes(),
            BlockBytes::Raw(b) => b,
        }
    }
}

/// A block after decoding, ready to apply: its lines in order, each pointing at its records.
pub(super) struct Decoded {
    /// Declared before the bytes its events borrow, so that it is dropped before them.
    records: Vec<Record>,
    /// Some record owns heap memory (else they are let go without their drops).
    owns_heap: bool,
    seq: u64,
    /// What it counts against the budget, released when its [`Lease`] is dropped.
    cost: Cost,
    bytes: BlockBytes,
    lines: Vec<DecodedLine>,
}

impl Decoded {
    /// The block's bytes, as read.
    pub(super) fn bytes(&self) -> &[u8] {
        self.bytes.as_bytes()
    }

    /// The block's lines, in input order.
    pub(super) fn lines(&self) -> &[DecodedLine] {
        &self.lines
    }

    /// The records of its lines ([`DecodedLine::records`] index them).
    pub(super) fn records(&self) -> &[Record] {
        &self.records
    }
}

/// What [`next_block`] gave.
enum Next {
    Block(Block),
    /// The block read (of this cost) does not fit the budget now; it is read next.
    Later(Cost),
    /// Every input is read, or the replay stopped (a read failed, the applier has gone).
    End,
    Failed(ReplayError),
}

/// Reads and frames `source`'s next block and counts it against `pool`'s budget if it fits
/// now; a block that does not is left framed in `source` for the next thread.
fn next_block<P: FnMut(u64)>(source: &mut Source<'_, P>, pool: &Pool) -> Next {
    let (lines, used) = match source.frame(|| spare(&pool.spares.spans)) {
        Framed::Lines { lines, used } => (lines, used),
        Framed::End => return Next::End,
        Framed::Failed(e) => return Next::Failed(e),
    };
    let cost = Cost {
        bytes: used,
        records: lines.len() * LINE_COST,
    };
    match pool.in_flight.admit(cost) {
        Admit::Counted => {}
        Admit::NoRoom => {
            source.unframe(lines, used);
            return Next::Later(cost);
        }
        Admit::Stopped => {
            source.stop();
            return Next::End;
        }
    }
    let (seq, bytes) = source.take(used, spare(&pool.spares.bytes));
    Next::Block(Block {
        seq,
        cost,
        bytes,
        lines,
    })
}

/// Does `chores` while there are any ready; whether it did some.
fn run_chores(pool: &Pool, chores: Option<&dyn Chores>) -> bool {
    let Some(chores) = chores else {
        return false;
    };
    let mut did = false;
    while chores.run_one() {
        did = true;
        // What it did may have let another chore be taken (one that waited for the same
        // shard): the threads waiting for room look again.
        pool.in_flight.nudge();
    }
    did
}

/// Reads and decodes blocks until the inputs are done or the applier has gone, doing
/// `chores` first whenever there are any: they are further down the line, and release the
/// budget a thread would otherwise wait for.
fn decode<P: FnMut(u64)>(
    reading: &Reading,
    pool: &Pool,
    source: &Mutex<Source<'_, P>>,
    chores: Option<&dyn Chores>,
    results: SyncSender<Result<Decoded, ReplayError>>,
) {
    let ctx = reading.context();
    loop {
        run_chores(pool, chores);
        // The lock is held only to read and frame one block.
        let next = match source.lock() {
            Ok(mut source) => next_block(&mut source, pool),
            Err(_) => return,
        };
        let block = match next {
            Next::Block(block) => block,
            // Waited for outside the lock, with chores taken up meanwhile; the block stays
            // framed for whichever thread reads next.
            Next::Later(cost) => {
                pool.in_flight
                    .wait_for_room(cost, || chores.is_some_and(|c| c.ready()));
                continue;
            }
            Next::End => return,
            Next::Failed(e) => {
                let _ = results.send(Err(e));
                return;
            }
        };
        // Over the budget (lines of many objects), a block the applier does not need next
        // waits before it starts: begun, its records would take the room left to the decoder
        // of the blocks before it, and with more decoders than cores that slowed such input
        // by a fifth.
        pool.in_flight.add_records(0, block.seq, true);
        let decoded = decode_block(&reading.format, &ctx, pool, block, true);
        if results.send(Ok(decoded)).is_err() {
            return;
        }
    }
}

/// Decodes `block`'s lines. Records past one a line (lines of several objects) are counted
/// against the pool's budget as they come (every [`COUNT_EVERY`]), as one a line was when
/// the block was read; with `wait` (a decoding thread, not the applier), waiting then as
/// [`InFlight::add_records`] says.
fn decode_block(
    format: &LineFormat,
    ctx: &crate::events::ParseContext<'_>,
    pool: &Pool,
    block: Block,
    wait: bool,
) -> Decoded {
    let spares = &pool.spares;
    let Block {
        seq,
        mut cost,
        bytes,
        mut lines,
    } = block;
    // Declared before the records that borrow them, so that they are dropped after them
    // here too (should decoding panic).
    let bytes = BlockBytes::new(bytes);
    let all = bytes.as_bytes();
    let mut records = spare(&spares.records);
    let mut owns_heap = false;
    records.reserve(lines.len());
    let mut out = spare(&spares.lines);
    out.reserve(lines.len());
    // Bytes of the records past one a line counted so far.
    let total = lines.len();
    let mut counted = 0;
    let mut count = |len: usize| {
        let extra = len.saturating_sub(total) * size_of::<Record>();
        if extra > counted {
            pool.in_flight.add_records(extra - counted, seq, wait);
            counted = extra;
        }
    };
    for line in lines.drain(..) {
        let from = records.len();
        let mut found = FieldSet::default();
        let mut emit = |r| {
            // SAFETY: what is decoded is decoded from `all`, the bytes of the block these
            // records go into (see `Record`).
            owns_heap |= unsafe { Record::push(&mut records, r, all) };
            if records.len().is_multiple_of(COUNT_EVERY) {
                count(records.len());
            }
        };
        match (&bytes, &line) {
            (_, None) => {}
            // Lines end at a newline, so a line of UTF-8 text is on its character boundaries.
            (BlockBytes::Text(text), Some(range)) => match text.get(range.clone()) {
                Some(line) => format.decode_text(line, ctx, &mut found, &mut emit),
                None => format.decode(&all[range.clone()], ctx, &mut found, &mut emit),
            },
            (BlockBytes::Raw(raw), Some(range)) => {
                format.decode(&raw[range.clone()], ctx, &mut found, &mut emit)
            }
        }
        out.push(DecodedLine {
            line,
            found,
            records: from..records.len(),
        });
    }
    count(records.len());
    cost.records += counted;
    keep(&spares.spans, lines);
    Decoded {
        owns_heap,
        seq,
        cost,
        bytes,
        lines: out,
        records,
    }
}

/// Reads `inputs` as `reading` says, decodes on `threads` threads (and on the caller while it
/// waits) and hands each decoded block to `apply` on the calling thread, in input order.
/// `progress` is called, on whichever thread read them, with the bytes of each read. A
/// block's bytes count against the budget until its [`Lease`] is dropped, here or on a
/// thread `apply` gave it to.
pub(super) fn run(
    reading: &Reading,
    inputs: &[String],
    threads: usize,
    chores: Option<&dyn Chores>,
    progress: impl FnMut(u64) + Send,
    mut apply: impl FnMut(Lease) -> Result<(), ReplayError>,
) -> Result<(), ReplayError> {
    let threads = threads.max(1);
    let pool = Arc::new(Pool {
        spares: Spares::default(),
        in_flight: InFlight::new(budget(threads)),
    });
    let shared: &Pool = &pool;
    let source = Mutex::new(Source::new(inputs, reading.max_line_bytes, progress));
    let source = &source;
    std::thread::scope(|scope| {
        let (result_tx, result_rx) = sync_channel(threads * 2);
        // The calling thread is the Nth (and a decoder needs one besides it, to read ahead
        // while the caller routes).
        for i in 0..threads.saturating_sub(1).max(1) {
            let result_tx = result_tx.clone();
            std::thread::Builder::new()
                .name(format!("replay-decode-{i}"))
                .spawn_scoped(scope, move || {
                    decode(reading, shared, source, chores, result_tx)
                })
                .map_err(ReplayError::Output)?;
        }
        // Only the decoders send: when the last has ended, the results end.
        drop(result_tx);
        // Dropping the receiver on any return (an error included) ends the decoders: their
        // sends fail, so the scope can join them; one waiting for budget is told to stop.
        let helper = Helper {
            reading,
            pool: shared,
            source,
            chores,
        };
        // Closed however the applier ends, a panic included (a batch it applied, say): the
        // blocks it held then go without releasing their share, and a decoder waiting for
        // room would keep the scope from ever joining it.
        let _closed = CloseOnDrop(&pool.in_flight);
        apply_in_order(result_rx, &pool, &helper, &mut apply)
    })
}

/// Closes the budget when dropped: no thread waits on it once the applier has gone.
struct CloseOnDrop<'a>(&'a InFlight);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// What the applying thread needs to read and decode a block itself.
struct Helper<'h, 'i, P> {
    reading: &'h Reading,
    pool: &'h Pool,
    source: &'h Mutex<Source<'i, P>>,
    chores: Option<&'h dyn Chores>,
}

impl<P: FnMut(u64)> Helper<'_, '_, P> {
    /// Reads and decodes the next block, if no decoder is reading one now and it fits the
    /// budget (else it stays framed for the next decoder to take): over the budget, the
    /// decoders hold back (taking up chores, or waiting with no block) and so does the
    /// applier, which waits for the block it needs instead. That block is always on its
    /// way: it was read before every block held, by a decoder that decodes it before it
    /// does anything else and is not waiting for the budget (the block comes next), or by
    /// the applier itself, which decoded it at once.
    fn decode_next(&self) -> Option<Result<Decoded, ReplayError>> {
        if self.pool.in_flight.over() {
            return None;
        }
        // The applier never waits for budget: what it routes is what releases it.
        let next = next_block(&mut *self.source.try_lock().ok()?, self.pool);
        let block = match next {
            Next::Block(block) => block,
            Next::Later(_) | Next::End => return None,
            Next::Failed(e) => return Some(Err(e)),
        };
        let ctx = self.reading.context();
        Some(Ok(decode_block(
            &self.reading.format,
            &ctx,
            self.pool,
            block,
            false,
        )))
    }
}

fn apply_in_order<P: FnMut(u64)>(
    results: Receiver<Result<Decoded, ReplayError>>,
    pool: &Arc<Pool>,
    helper: &Helper<'_, '_, P>,
    apply: &mut impl FnMut(Lease) -> Result<(), ReplayError>,
) -> Result<(), ReplayError> {
    let mut next = 0u64;
    let mut waiting: BTreeMap<u64, Decoded> = BTreeMap::new();
    loop {
        while let Some(d) = waiting.remove(&next) {
            apply(Lease {
                decoded: d,
                pool: pool.clone(),
            })?;
            next += 1;
            pool.in_flight.applying(next);
        }
        // What `apply` queued, for the threads waiting for room.
        if helper.chores.is_some_and(|c| c.ready()) {
            pool.in_flight.nudge();
        }
        // The next block is still being decoded: take in what is done, else decode a queued
        // block here rather than wait, and wait only when there is nothing to decode.
        let d = match results.try_recv() {
            Ok(r) => r?,
            Err(TryRecvError::Disconnected) => return Ok(()),
            // Chores before decoding: they are further down the line.
            Err(TryRecvError::Empty) if run_chores(pool, helper.chores) => continue,
            Err(TryRecvError::Empty) => match helper.decode_next() {
                Some(d) => d?,
                None => match results.recv() {
                    Ok(r) => r?,
                    Err(_) => return Ok(()),
                },
            },
        };
        waiting.insert(d.seq, d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    /// The applier, which must not wait, leaves a block over the budget framed for the next
    /// reader: nothing is read twice or skipped, and the budget is not overshot.
    #[test]
    fn a_block_over_the_budget_is_left_for_the_next_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        // Lines of 128 bytes: blocks end at `BLOCK` bytes, before their line limit.
        let line = format!("{{\"org\":\"a\",\"pad\":\"{}\"}}\n", "x".repeat(107));
        assert_eq!(line.len(), 128);
        let total = 3 * BLOCK / line.len();
        std::fs::write(&path, line.repeat(total)).unwrap();
        let inputs = vec![path.display().to_string()];
        let pool = Pool {
            spares: Spares::default(),
            in_flight: InFlight::new(budget(1)),
        };
        let read = std::cell::Cell::new(0u64);
        let mut source = Source::new(&inputs, 1 << 20, |n| read.set(read.get() + n));
        let Next::Block(first) = next_block(&mut source, &pool) else {
            panic!("the first block is read");
        };
        // Held past the budget (a line of many objects would do this).
        pool.in_flight
            .add_records(pool.in_flight.budget.records, first.seq, false);
        assert!(matches!(next_block(&mut source, &pool), Next::Later(_)));
        let held = pool.in_flight.state.lock().unwrap().cost;
        assert_eq!(
            held.bytes, first.cost.bytes,
            "the block left was not counted"
        );
        let read_by_then = read.get();
        pool.in_flight.release(first.cost);
        pool.in_flight.release(Cost {
            bytes: 0,
            records: pool.in_flight.budget.records,
        });
        let mut seqs = vec![first.seq];
        let mut lines = first.lines.len();
        loop {
            match next_block(&mut source, &pool) {
                Next::Block(b) => {
                    if b.seq == 1 {
                        assert_eq!(read.get(), read_by_then, "the block left is not read again");
                        assert_eq!(b.cost.bytes, BLOCK, "nor read on into");
                    }
                    seqs.push(b.seq);
                    lines += b.lines.len();
                    pool.in_flight.release(b.cost);
                }
                Next::End => break,
                Next::Later(_) => panic!("nothing is held: every block fits"),
                Next::Failed(e) => panic!("{e}"),
            }
        }
        assert_eq!(seqs, [0, 1, 2]);
        assert_eq!(lines, total);
        drop(source);
        assert_eq!(read.get(), (total * line.len()) as u64);
    }

    /// A block whose records own no heap memory says so, and is let go without their
    /// drops; one record that owns any (an escaped or outside string, upstream reports, a
    /// field error, a rejection) makes its block drop them all.
    #[test]
    fn a_block_knows_whether_its_records_own_memory() {
        let owns = |text: &str, default_org: Option<&str>| {
            let pool = Pool {
                spares: Spares::default(),
                in_flight: InFlight::new(budget(1)),
            };
            let ctx = crate::events::ParseContext {
                default_org,
                ..Default::default()
            };
            let mut lines = Vec::new();
            let mut at = 0;
            for l in text.split_inclusive('\n') {
                lines.push(Some(at..at + l.trim_end().len()));
                at += l.len();
            }
            let block = Block {
                seq: 0,
                cost: Cost::default(),
                bytes: text.as_bytes().to_vec(),
                lines,
            };
            let format = LineFormat::Json { fields: Vec::new() };
            let d = decode_block(&format, &ctx, &pool, block, false);
            let owns = d.owns_heap;
            pool.spares.keep_decoded(d);
            owns
        };
        let plain = "{\"org\":\"a\",\"app\":\"b\",\"job_id\":\"j\",\"status\":202}\n";
        assert!(!owns(&plain.repeat(3), None));
        for one in [
            "{\"org\":\"a\",\"app\":\"\\u0041\"}\n",
            "{\"org\":\"a\",\"model\":\"m\\n\"}\n",
            "{\"status\":200}\n",
            "{\"org\":\"a\",\"ratelimit\":{\"limit_requests\":5,\"remaining_requests\":1}}\n",
            "{\"org\":\"a\",\"status\":\"abc\"}\n",
            "{\"org\":\"\"}\n",
        ] {
            assert!(
                owns(&format!("{plain}{one}{plain}"), Some("fallback")),
                "{one}"
            );
        }
    }

    /// How a JSON-lines replay reads.
    fn json_reading() -> Reading {
        Reading {
            name: "replay".into(),
            format: LineFormat::Json { fields: Vec::new() },
            org: None,
            app: None,
            max_line_bytes: 1 << 20,
            max_event_bytes: 64 << 10,
        }
    }

    /// A file in `dir` of short lines filling `blocks` blocks; its path.
    fn file_of_blocks(dir: &tempfile::TempDir, blocks: usize) -> String {
        let path = dir.path().join("in.jsonl");
        let line = "{\"org\":\"a\",\"status\":200}\n";
        std::fs::write(&path, line.repeat(blocks * BLOCK / line.len())).unwrap();
        path.display().to_string()
    }

    /// Chores the applier queues are taken up by the decoding thread while the applier is
    /// busy, and `--threads 2` is two threads in all: one decoder besides the caller.
    #[test]
    fn the_decoders_take_up_chores_and_no_thread_is_added() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        struct Queue {
            queued: AtomicUsize,
            done_by: Mutex<Vec<String>>,
        }
        impl Chores for Queue {
            fn ready(&self) -> bool {
                self.queued.load(Ordering::SeqCst) > 0
            }
            fn run_one(&self) -> bool {
                let taken = self
                    .queued
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if taken {
                    let name = std::thread::current().name().unwrap_or("").to_string();
                    self.done_by.lock().unwrap().push(name);
                }
                taken
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let input = file_of_blocks(&dir, 12);
        let reading = json_reading();
        let chores = Queue {
            queued: AtomicUsize::new(0),
            done_by: Mutex::new(Vec::new()),
        };
        let (mut blocks, mut queued) = (0, 0);
        run(
            &reading,
            &[input],
            2,
            Some(&chores),
            |_| {},
            |_lease| {
                blocks += 1;
                queued += 3;
                chores.queued.fetch_add(3, Ordering::SeqCst);
                // A busy applier: the chores are left to the other thread.
                std::thread::sleep(std::time::Duration::from_millis(5));
                Ok(())
            },
        )
        .unwrap();
        assert!(blocks >= 12, "{blocks} blocks");
        let done_by = chores.done_by.into_inner().unwrap();
        let left = chores.queued.load(Ordering::SeqCst);
        assert_eq!(done_by.len() + left, queued, "each chore done once");
        let mine = std::thread::current().name().unwrap_or("").to_string();
        let decoders: std::collections::BTreeSet<&str> = done_by
            .iter()
            .map(String::as_str)
            .filter(|n| **n != mine)
            .collect();
        assert_eq!(
            decoders.into_iter().collect::<Vec<_>>(),
            ["replay-decode-0"],
            "one decoder, and it took up chores"
        );
    }

    /// An applier that panics (a tracker bug) ends the replay with that panic: the decoders
    /// waiting for room it held are told to stop, not left waiting for ever.
    #[test]
    fn a_panicking_applier_does_not_leave_the_decoders_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = vec![file_of_blocks(&dir, 16)];
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let reading = json_reading();
            let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run(
                    &reading,
                    &inputs,
                    4,
                    None,
                    |_| {},
                    |_lease| {
                        // Long enough for the decoders to fill the budget and wait for room.
                        std::thread::sleep(std::time::Duration::from_millis(200));
                        panic!("an applier bug");
                    },
                )
            }));
            let _ = tx.send(ended.is_err());
        });
        let panicked = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the replay ends");
        assert!(panicked, "the panic reaches the caller");
    }

    /// A file cut short under a threaded replay fails it as a read error does, as on one
    /// thread (`input::tests`): its last block read was cut, the lines after never read.
    #[test]
    fn a_file_cut_short_while_it_is_read_fails_the_replay() {
        use crate::replay::input::tests::{assert_cut_short, cut_to};
        let dir = tempfile::tempdir().unwrap();
        // Far more blocks than the budget lets the decoders read ahead of the first applied.
        let inputs = vec![file_of_blocks(&dir, 40)];
        let path = inputs[0].clone();
        let held = std::fs::metadata(&path).unwrap().len();
        let mut cut = false;
        let err = run(
            &json_reading(),
            &inputs,
            2,
            None,
            |_| {},
            |_lease| {
                if !cut {
                    cut_to(&path, 0);
                    cut = true;
                }
                Ok(())
            },
        )
        .expect_err("a cut input is an error");
        assert_cut_short(err, &path, held);
    }

    #[test]
    fn decoded_events_borrow_only_their_blocks_bytes() {
        let text = "{\"org\":\"acme\",\"app\":\"a\\u00e9\",\"model\":\"m\"}\n{\"status\":200}\n";
        let bytes = text.as_bytes().to_vec();
        let end = text.find('\n').unwrap_or(0);
        let lines = vec![Some(0..end), Some(end + 1..text.len() - 1)];
        let fallback = String::from("fallback");
        let ctx = crate::events::ParseContext {
            default_org: Some(&fallback),
            ..Default::default()
        };
        let pool = Pool {
            spares: Spares::default(),
            in_flight: InFlight::new(budget(1)),
        };
        let spares = &pool.spares;
        let format = LineFormat::Json { fields: Vec::new() };
        let d = decode_block(
            &format,
            &ctx,
            &pool,
            Block {
                seq: 0,
                cost: Cost::default(),
                bytes,
                lines,
            },
            false,
        );
        let inside = |s: &str| {
            let (block, s) = (d.bytes().as_ptr_range(), s.as_bytes().as_ptr_range());
            block.start <= s.start && s.end <= block.end
        };
        let events: Vec<&Event<'_>> = d
            .records()
            .iter()
            .filter_map(|r| r.get().ok().map(|(ev, _)| ev))
            .collect();
        let [first, second] = events[..] else {
            panic!("both lines are events: {}", d.records().len());
        };
        assert!(matches!(&first.org, Cow::Borrowed(s) if *s == "acme" && inside(s)));
        assert!(
            matches!(&first.app, Some(Cow::Owned(s)) if s == "a\u{e9}"),
            "an escaped string is its own"
        );
        assert!(matches!(&first.model, Some(Cow::Borrowed(s)) if inside(s)));
        assert!(
            matches!(&second.org, Cow::Owned(s) if s == "fallback"),
            "a string from outside the block is its own, not a borrow of the source's config"
        );
        spares.keep_decoded(d);
        let records = spare(&spares.records);
        assert!(
            records.is_empty() && records.capacity() >= 2,
            "kept emptied"
        );
    }
}
