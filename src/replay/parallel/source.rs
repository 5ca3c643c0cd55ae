//! The inputs of a threaded replay, read and framed into blocks of whole lines by whichever
//! thread takes the next one. Knows nothing of budgets or decoding (`super` does): it never
//! decodes or applies a line.

use std::ops::Range;

use crate::events::intake::{Line, LineFramer};
use crate::replay::input::{Input, ReplayError, open_input};

/// Bytes read into one block: big enough that handing it over costs little per line, small
/// enough that a block's buffer (pooled, with room for a partial line too) stays under the
/// allocator's mmap threshold, and to keep the blocks in flight small.
pub(super) const BLOCK: usize = 256 << 10;

/// Lines framed into one block at most. Each line decodes into a record that outweighs its
/// bytes (`super::LINE_COST`), so a block of short lines held far more records than bytes: a
/// quarter megabyte of `{"org":"a"}` lines decoded into 7 MB, and eight threads of such
/// blocks peaked at 144 MiB.
pub(super) const BLOCK_LINES: usize = 4096;

/// An input being read: where its stream is, and how its lines are framed.
struct Open<'i> {
    path: &'i str,
    input: Input,
    framer: LineFramer,
    /// The input's last read returned nothing.
    at_eof: bool,
    /// The last block ended at its line limit, so the buffer starts with whole lines still
    /// to frame, and is framed again before anything more is read.
    full: bool,
}

/// What [`Source::frame`] found.
pub(super) enum Framed {
    /// The next block's lines (`None`: a line over the limit, not kept), the first `used`
    /// bytes of the buffer; [`Source::take`] takes them.
    Lines {
        lines: Vec<Option<Range<usize>>>,
        used: usize,
    },
    /// Every input is read, or the replay stopped (a read failed, [`Source::stop`]).
    End,
    Failed(ReplayError),
}

/// The inputs, read and framed into blocks of whole lines one block at a time by whichever
/// decoding thread holds it, which then decodes that block itself: the bytes a read copies
/// in are still in its core's cache when they are decoded. (A reader thread of its own
/// handed every block to a decoder on the other core, and ran a tenth of a two-thread
/// replay's CPU time, half of it copying.) Blocks are numbered in input order as taken.
pub(super) struct Source<'i, P> {
    inputs: std::slice::Iter<'i, String>,
    open: Option<Open<'i>>,
    /// The unframed bytes: the partial line after the last block, or (`full`) whole lines.
    buf: Vec<u8>,
    max: usize,
    seq: u64,
    done: bool,
    /// A block framed and left to be taken by the next call ([`Source::unframe`]).
    framed: Option<(Vec<Option<Range<usize>>>, usize)>,
    /// Told the bytes of each read.
    progress: P,
}

impl<'i, P: FnMut(u64)> Source<'i, P> {
    pub(super) fn new(inputs: &'i [String], max: usize, progress: P) -> Self {
        Source {
            inputs: inputs.iter(),
            open: None,
            buf: Vec::with_capacity(Self::room(max)),
            max,
            seq: 0,
            done: false,
            framed: None,
            progress,
        }
    }

    /// Room for a block and the partial line before it (at most `max` and a BOM and a
    /// `\r`), so that reading a block into a buffer of the pool never grows it.
    fn room(max: usize) -> usize {
        BLOCK + max.min(BLOCK) + 4
    }

    /// Reads and frames the lines of the next block into a vector from `empty` (or gives
    /// back the block [`Source::unframe`] left). The first read error ends the replay with
    /// it, as in a single-thread replay.
    pub(super) fn frame(&mut self, empty: impl FnOnce() -> Vec<Option<Range<usize>>>) -> Framed {
        if let Some((lines, used)) = self.framed.take() {
            return Framed::Lines { lines, used };
        }
        let mut lines = empty();
        while !self.done {
            let open = match &mut self.open {
                Some(open) => open,
                None => {
                    let Some(path) = self.inputs.next() else {
                        self.done = true;
                        break;
                    };
                    match open_input(path) {
                        Ok(input) => {
                            // Each input is its own stream: a line never continues into the
                            // next file.
                            self.buf.clear();
                            self.open.insert(Open {
                                path,
                                input,
                                framer: LineFramer::new(self.max),
                                at_eof: false,
                                full: false,
                            })
                        }
                        Err(e) => return self.fail(path, e),
                    }
                }
            };
            let mut n = 0;
            if !open.full {
                n = match open.input.read_more(&mut self.buf, BLOCK) {
                    Ok(n) => n,
                    Err(e) => {
                        let path = open.path;
                        return self.fail(path, e);
                    }
                };
                open.at_eof = n == 0;
            }
            let buf = &self.buf;
            let base = buf.as_ptr() as usize;
            lines.clear();
            let used = open
                .framer
                .feed_at_most(buf, open.at_eof, BLOCK_LINES, |l| {
                    lines.push(match l {
                        Line::Text(t) => {
                            let at = t.as_ptr() as usize - base;
                            Some(at..at + t.len())
                        }
                        Line::TooLong => None,
                    })
                });
            open.full = lines.len() == BLOCK_LINES;
            if open.at_eof && !open.full {
                self.open = None;
            }
            (self.progress)(n as u64);
            if lines.is_empty() {
                self.buf.drain(..used);
                continue;
            }
            return Framed::Lines { lines, used };
        }
        Framed::End
    }

    /// Takes the first `used` bytes framed, as the buffer they were read into, and the
    /// block's number; the rest moves to `next` (emptied first), which reads on. (Copying
    /// the block instead was half of the reading's instructions.)
    pub(super) fn take(&mut self, used: usize, mut next: Vec<u8>) -> (u64, Vec<u8>) {
        next.clear();
        let used = used.min(self.buf.len());
        let want = BLOCK + (self.buf.len() - used);
        if next.capacity() < want {
            // New rather than grown: growing copies what the buffer held before.
            next = Vec::with_capacity(Self::room(self.max).max(want));
        }
        next.extend_from_slice(&self.buf[used..]);
        self.buf.truncate(used);
        let seq = self.seq;
        self.seq += 1;
        (seq, std::mem::replace(&mut self.buf, next))
    }

    /// Leaves the block [`Source::frame`] gave (not taken) to be given again by the next
    /// call, unread and uncounted.
    pub(super) fn unframe(&mut self, lines: Vec<Option<Range<usize>>>, used: usize) {
        self.framed = Some((lines, used));
    }

    /// Ends the reading: nothing more is framed.
    pub(super) fn stop(&mut self) {
        self.done = true;
        self.open = None;
        self.framed = None;
    }

    fn fail(&mut self, path: &str, source: std::io::Error) -> Framed {
        self.stop();
        Framed::Failed(ReplayError::Input {
            path: path.to_owned(),
            source,
        })
    }
}
