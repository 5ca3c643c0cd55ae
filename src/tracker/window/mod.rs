//! Rolling bucketed counters: the rpm (1 s buckets) and daily (1 min buckets) windows.
//!
//! A [`Window`] answers "how many in the window ending at bucket `q`" for any `q` from the
//! newest bucket back `slack` buckets, exactly at its resolution: the answer counts every
//! event of the buckets `q − width + 1 ..= q`, so it never holds fewer than the window and at
//! most one bucket more (SPEC §5). The slack lets late events be judged at their own time.
//!
//! Memory follows activity, not time: only buckets that counted something are kept, each as
//! two LEB128 varints (its distance from the previous one, its count), so a quiet series costs
//! a few bytes and an app with one request every 10 minutes about 300 bytes a day, where a
//! ring of every bucket costs 5.8 KB whatever happens. The common operations stay O(1)
//! amortized: counting at the newest bucket appends or bumps the last entry, moving the head
//! walks past the entries that leave, and the count at the head is kept. Queries behind the
//! head (late events) walk the entries from the nearer end (varints read backwards too), so
//! a late event costs the entries newer than it, not the whole day. [`dense::Dense`] is the
//! ring this replaced: the layout older snapshots hold, and the model the tests check this
//! against.

pub mod dense;
mod slot;
mod varint;

use dense::Dense;

pub use slot::Slot;

use varint::{put, put_in_place, read, take, varint_len};

use std::marker::PhantomData;

/// A position in the entries: the byte offset of an entry and the bucket before it (its gap
/// counts from there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    at: usize,
    prev: i64,
}

/// Rolling counts of the buckets `head − width − slack + 1 ..= head`, keeping only the
/// buckets that counted something.
#[derive(Debug, Clone)]
pub struct Window<S: Slot> {
    /// Entries in ascending bucket order from `front.at`: varint(gap from the bucket before),
    /// varint(count). Bytes before `front.at` are dropped entries not yet compacted away.
    bytes: Vec<u8>,
    /// The first entry the ring still holds.
    front: Cursor,
    /// The first entry inside the window ending at the head (bucket > head − width).
    inside: Cursor,
    /// Newest bucket held (`i64::MIN` until the first count).
    head: i64,
    /// Bucket of the last entry (`i64::MIN` when there is none) and the offset of its count.
    last_bucket: i64,
    last_at: u32,
    /// Sum of the entries inside the window ending at the head; 128 bits so that counts near
    /// their maximum never overflow it (answers are clamped).
    head_sum: u128,
    /// Buckets in one window (61 for rpm: the current second and the 60 before).
    width: u16,
    /// Buckets held: `width + slack`.
    span: u16,
    slot: PhantomData<S>,
}

impl<S: Slot> Window<S> {
    /// A window of `width` buckets that can still be queried `slack` buckets behind its head.
    /// Allocates nothing until it counts.
    pub fn new(width: usize, slack: usize) -> Self {
        debug_assert!(width >= 1 && width + slack <= usize::from(u16::MAX));
        Window {
            bytes: Vec::new(),
            front: Cursor { at: 0, prev: 0 },
            inside: Cursor { at: 0, prev: 0 },
            head: i64::MIN,
            last_bucket: i64::MIN,
            last_at: 0,
            head_sum: 0,
            width: width as u16,
            span: (width + slack) as u16,
            slot: PhantomData,
        }
    }

    fn width(&self) -> i64 {
        i64::from(self.width)
    }

    fn span(&self) -> i64 {
        i64::from(self.span)
    }

    /// The last entry: its bucket and the offset of its count.
    fn last(&self) -> Option<(i64, usize)> {
        (self.last_bucket != i64::MIN).then_some((self.last_bucket, self.last_at as usize))
    }

    fn set_last(&mut self, last: Option<(i64, usize)>) {
        (self.last_bucket, self.last_at) = last.map_or((i64::MIN, 0), |(b, at)| (b, at as u32));
    }

    /// Newest bucket seen, if any.
    pub fn head(&self) -> Option<i64> {
        (self.head != i64::MIN).then_some(self.head)
    }

    /// Oldest bucket the ring still holds.
    fn ring_lo(&self) -> i64 {
        self.head.saturating_sub(self.span() - 1)
    }

    /// The entry at `c` and the cursor after it, if there is one.
    fn entry(&self, c: Cursor) -> Option<(i64, u64, Cursor)> {
        if c.at >= self.bytes.len() {
            return None;
        }
        let mut at = c.at;
        let bucket = c.prev + read(&self.bytes, &mut at) as i64;
        let count = read(&self.bytes, &mut at);
        Some((bucket, count, Cursor { at, prev: bucket }))
    }

    /// Every entry held, oldest first.
    fn entries(&self) -> impl Iterator<Item = (i64, u64)> + '_ {
        self.entries_from(self.front)
    }

    /// The entries from the one at `c` on, oldest first.
    fn entries_from(&self, mut c: Cursor) -> impl Iterator<Item = (i64, u64)> + '_ {
        std::iter::from_fn(move || {
            let (b, n, next) = self.entry(c)?;
            c = next;
            Some((b, n))
        })
    }

    /// Where the bytes end: the cursor after the last entry.
    fn end(&self) -> Cursor {
        Cursor {
            at: self.bytes.len(),
            prev: if self.last_bucket == i64::MIN {
                self.front.prev
            } else {
                self.last_bucket
            },
        }
    }

    /// The entry before the one at `c` (its bucket, its count and its cursor), if there is
    /// one held. LEB128 reads backwards: every byte of a varint but its last has the high bit
    /// set, so a varint ending at `e` starts after the previous byte without it; the entry's
    /// bucket is `c.prev`, and the one before it is that less its gap.
    fn before(&self, c: Cursor) -> Option<(i64, u64, Cursor)> {
        if c.at <= self.front.at {
            return None;
        }
        debug_assert!(self.bytes[c.at - 1] & 0x80 == 0, "a cursor off an entry");
        let start_of = |end: usize| {
            let mut s = end;
            while s > self.front.at && self.bytes[s - 1] & 0x80 != 0 {
                s -= 1;
            }
            s
        };
        let count_at = start_of(c.at - 1);
        let gap_at = start_of(count_at - 1);
        let (mut g, mut n) = (gap_at, count_at);
        let gap = read(&self.bytes, &mut g) as i64;
        let count = read(&self.bytes, &mut n);
        Some((
            c.prev,
            count,
            Cursor {
                at: gap_at,
                prev: c.prev - gap,
            },
        ))
    }

    /// The cursor of the first entry at `bucket` or after it (the end when there is none).
    /// Late events are near the newest entries and queries at the head's window start near
    /// `inside`: it walks from the front, from `inside` or back from the end, whichever is
    /// fewer buckets away, so a late event costs the entries after it, not all of them.
    fn seek(&self, bucket: i64) -> Cursor {
        let end = self.end();
        if bucket > end.prev {
            return end;
        }
        // Saturating: a query far from any timestamp must not wrap into a wrong direction.
        let (mut from, mut ahead) = (self.front, bucket.saturating_sub(self.front.prev));
        if self.inside.at < self.bytes.len()
            && bucket > self.inside.prev
            && bucket - self.inside.prev < ahead
        {
            (from, ahead) = (self.inside, bucket - self.inside.prev);
        }
        if end.prev.saturating_sub(bucket) < ahead {
            let mut c = end;
            while let Some((b, _, at)) = self.before(c)
                && b >= bucket
            {
                c = at;
            }
            return c;
        }
        while let Some((b, _, next)) = self.entry(from)
            && b < bucket
        {
            from = next;
        }
        from
    }

    /// Moves the head forward to `bucket` (counting nothing): entries leave the window and
    /// the ring as they fall behind.
    pub(super) fn advance_to(&mut self, bucket: i64) {
        if self.head != i64::MIN && bucket <= self.head {
            return;
        }
        self.head = bucket;
        let lo = self.ring_lo();
        while let Some((b, _, next)) = self.entry(self.front)
            && b < lo
        {
            self.front = next;
        }
        // Entries left behind by the front are behind the window too: `inside` walks past
        // them (their bytes stay until `compact`), subtracting each, so a head that jumps
        // costs the entries it passes, not a sum over every entry.
        let edge = self.head - self.width();
        while let Some((b, n, next)) = self.entry(self.inside)
            && b <= edge
        {
            self.head_sum -= n as u128;
            self.inside = next;
        }
        if self.front.at >= self.bytes.len() {
            // Nothing left: start the bytes over.
            self.bytes.clear();
            self.front = Cursor {
                at: 0,
                prev: lo - 1,
            };
            self.inside = self.front;
            self.set_last(None);
            self.head_sum = 0;
        } else if self.front.at > 64 && self.front.at * 2 > self.bytes.len() {
            self.compact();
        }
    }

    /// Makes room for `more` bytes, growing by a quarter rather than doubling: windows are
    /// many and mostly small, so the spare room of doubling would be a third of them.
    fn room(&mut self, more: usize) {
        if self.bytes.capacity() - self.bytes.len() < more {
            self.bytes
                .reserve_exact(more.max(self.bytes.len() / 4).max(16));
        }
    }

    /// Drops the bytes of entries that left the ring.
    fn compact(&mut self) {
        let cut = self.front.at;
        self.bytes.drain(..cut);
        self.front.at = 0;
        self.inside.at -= cut;
        if let Some((b, at)) = self.last() {
            self.set_last(Some((b, at - cut)));
        }
        if self.bytes.capacity() > 4 * self.bytes.len().max(16) {
            self.bytes.shrink_to(2 * self.bytes.len());
        }
    }

    /// Counts `n` at `bucket`. Returns false when the bucket is older than the ring holds.
    #[inline(always)]
    pub fn add(&mut self, bucket: i64, n: u64) -> bool {
        // Nearly every count lands on the head's bucket, already the last entry: counted
        // where it is asked (inlined), as `add_general` would count it.
        if bucket == self.head && bucket == self.last_bucket && bucket != i64::MIN {
            let added = self.add_to_last(self.last_at as usize, n);
            self.head_sum += added as u128;
            return true;
        }
        self.add_general(bucket, n)
    }

    /// [`Window::add`] of any bucket. Kept out of line, so that `add` stays small enough to
    /// be inlined where it is asked.
    #[inline(never)]
    fn add_general(&mut self, bucket: i64, n: u64) -> bool {
        if self.head == i64::MIN || bucket > self.head {
            self.advance_to(bucket);
        } else if bucket < self.ring_lo() {
            return false;
        }
        if n == 0 {
            return true;
        }
        let added = match self.last() {
            Some((last, at)) if bucket == last => self.add_to_last(at, n),
            Some((last, _)) if bucket < last => return self.insert(bucket, n),
            last => {
                let from = last.map_or(self.front.prev, |(b, _)| b);
                let at_end = self.inside.at >= self.bytes.len();
                let gap = (bucket - from) as u64;
                let added = n.min(S::MAX);
                // What the entry takes, not the most it could: asked for room for the
                // largest (20 bytes), a small window grew by those 20 at nearly every
                // append, a reallocation each (one every five lines of replay).
                self.room(varint_len(gap as i64) + varint_len(added as i64));
                put(&mut self.bytes, gap);
                let at = self.bytes.len();
                put(&mut self.bytes, added);
                self.set_last(Some((bucket, at)));
                if at_end && bucket <= self.head - self.width() {
                    // Appended behind the head's window (the head moved on without a count).
                    self.inside = Cursor {
                        at: self.bytes.len(),
                        prev: bucket,
                    };
                }
                added
            }
        };
        if bucket > self.head - self.width() {
            self.head_sum += added as u128;
        }
        true
    }

    /// Adds `n` (as far as the slot holds) to the last entry, whose count is at `at`, the
    /// end of the bytes; returns what was added. A count whose varint keeps its length is
    /// rewritten in place.
    #[inline]
    fn add_to_last(&mut self, at: usize, n: u64) -> u64 {
        let mut end = at;
        let count = read(&self.bytes, &mut end);
        let added = n.min(S::MAX - count);
        let total = count + added;
        if let Some(old) = self.bytes.get_mut(at..end)
            && varint_len(total as i64) == old.len()
        {
            put_in_place(old, total);
            return added;
        }
        // The last entry may already be behind the head's window (the head moved on without
        // a count): the window then starts at the end, wherever that now is.
        let at_end = self.inside.at >= self.bytes.len();
        self.bytes.truncate(at);
        put(&mut self.bytes, total);
        if at_end {
            self.inside.at = self.bytes.len();
        }
        added
    }

    /// Counts `n` at a bucket before the last entry (a late event), in place: the entries
    /// are walked to its place and the bytes there replaced.
    fn insert(&mut self, bucket: i64, n: u64) -> bool {
        let c = self.seek(bucket);
        let Some((b, count, next)) = self.entry(c) else {
            return true;
        };
        let (added, replacement, range) = if b == bucket {
            let mut count_at = c.at;
            read(&self.bytes, &mut count_at);
            let added = n.min(S::MAX - count);
            let mut r = Vec::with_capacity(10);
            put(&mut r, count + added);
            (added, r, count_at..next.at)
        } else {
            // A new entry before the one at `c`, whose gap now counts from it.
            let added = n.min(S::MAX);
            let mut r = Vec::with_capacity(30);
            put(&mut r, (bucket - c.prev) as u64);
            put(&mut r, added);
            put(&mut r, (b - bucket) as u64);
            let mut gap_end = c.at;
            read(&self.bytes, &mut gap_end);
            (added, r, c.at..gap_end)
        };
        let delta = replacement.len() as isize - range.len() as isize;
        let at = range.start;
        // Where the entry at `c` starts once a new one is put before it.
        let moved = Cursor {
            at: c.at + replacement.len() - varint_len(b - bucket),
            prev: bucket,
        };
        self.bytes.splice(range, replacement);
        let shift = |o: &mut usize| {
            if *o > at {
                *o = (*o as isize + delta) as usize;
            }
        };
        if let Some((b, mut o)) = self.last() {
            shift(&mut o);
            self.set_last(Some((b, o)));
        }
        let edge = self.head - self.width();
        if b != bucket && self.inside.at == c.at {
            // A new entry where the head's window started: it is the first inside, or the
            // window still starts at the entry it was put before.
            self.inside = if bucket > edge { c } else { moved };
        } else {
            shift(&mut self.inside.at);
        }
        if bucket > edge {
            self.head_sum += added as u128;
        }
        true
    }

    /// Takes `bytes` (entries after the bucket `prev`, as stored) as its entries once every one
    /// is checked — well formed, ascending, within the ring, a count within a slot — and finds
    /// its last entry, the start of the head's window and the sum there on the way.
    fn adopt(&mut self, bytes: Vec<u8>, prev: i64) -> Result<(), &'static str> {
        let bad = "window entries that do not decode, out of order or out of range";
        if self.head == i64::MIN {
            // Never counted: nothing to adopt.
            return if bytes.is_empty() { Ok(()) } else { Err(bad) };
        }
        if self.head < i64::MIN / 2 {
            return Err("a window head no timestamp gives");
        }
        let (lo, edge) = (self.ring_lo(), self.head - self.width());
        let mut c = Cursor { at: 0, prev };
        let mut inside = None;
        let mut last = None;
        let mut head_sum = 0u128;
        while c.at < bytes.len() {
            let mut at = c.at;
            let gap = take(&bytes, &mut at).ok_or(bad)?;
            let bucket = if c.at == 0 {
                // The first entry may count back from its anchor: builds before 2026-12-01
                // stored a late count in buckets a calendar day's span held again that way
                // (a negative gap, written wrapped). Read as it was meant, the anchor is
                // moved before the ring below, and the next snapshot is well formed.
                Some(c.prev.wrapping_add(gap as i64))
            } else {
                i64::try_from(gap)
                    .ok()
                    .filter(|&g| g >= 1)
                    .and_then(|g| c.prev.checked_add(g))
            }
            .filter(|b| (lo..=self.head).contains(b))
            .ok_or(bad)?;
            let count_at = at;
            let count = take(&bytes, &mut at)
                .filter(|n| (1..=S::MAX).contains(n))
                .ok_or(bad)?;
            if bucket > edge {
                inside.get_or_insert(c);
                head_sum += count as u128;
            }
            last = Some((bucket, count_at));
            c = Cursor { at, prev: bucket };
        }
        // With no entry, appends count their gap from just before the ring, whatever was stored.
        let (prev, end) = match last {
            None => (
                lo - 1,
                Cursor {
                    at: 0,
                    prev: lo - 1,
                },
            ),
            Some(_) => (prev, c),
        };
        self.inside = inside.unwrap_or(end);
        self.bytes = bytes;
        self.front = Cursor { at: 0, prev };
        self.set_last(last);
        self.head_sum = head_sum;
        self.anchor_before_ring();
        Ok(())
    }

    /// Events in the window ending at bucket `q` (buckets `q − width + 1 ..= q`), at most
    /// `i64::MAX`.
    pub fn count_at(&self, q: i64) -> u64 {
        clamp(self.count_exact(q))
    }

    fn count_exact(&self, q: i64) -> u128 {
        if self.head == i64::MIN {
            return 0;
        }
        if q == self.head {
            return self.head_sum;
        }
        let from = q - self.width() + 1;
        if q > self.head {
            // The head's window less what leaves it by `q`.
            if from > self.head {
                return 0;
            }
            return self.head_sum_from(from);
        }
        if self.head.saturating_sub(q) < self.width() / 2 {
            // Near the head (a late event): the head's window less what came after `q`,
            // plus what left it after `from` (just before `inside`), walking back.
            let mut sum = self.head_sum;
            let mut c = self.end();
            while let Some((b, n, at)) = self.before(c)
                && b > q
            {
                sum -= n as u128;
                c = at;
            }
            let mut c = self.inside;
            while let Some((b, n, at)) = self.before(c)
                && b >= from
            {
                sum += n as u128;
                c = at;
            }
            return sum;
        }
        self.entries_from(self.seek(from))
            .take_while(|e| e.0 <= q)
            .map(|e| e.1 as u128)
            .sum()
    }

    /// What each bucket from `from` to `to` holds (`to − from + 1` counts, 0 for buckets
    /// with nothing or outside the window), oldest first. O(entries).
    pub fn per_bucket(&self, from: i64, to: i64) -> Vec<u64> {
        let len = usize::try_from(to.saturating_sub(from).saturating_add(1)).unwrap_or(0);
        let mut out = vec![0u64; len];
        for (b, n) in self.entries() {
            if let Some(slot) = usize::try_from(b.saturating_sub(from))
                .ok()
                .filter(|_| b >= from && b <= to)
                .and_then(|i| out.get_mut(i))
            {
                *slot += n;
            }
        }
        out
    }

    /// The highest count of a window ending at any bucket from `from` to `to` (at most the
    /// head), each as [`Window::count_at`] answers it: the peak that a late event, counted at
    /// `from`, may have raised. O(entries from `from − width` to `to`), whatever the span.
    pub fn max_count(&self, from: i64, to: i64) -> u64 {
        if self.head == i64::MIN {
            return 0;
        }
        let to = to.min(self.head);
        if from > to {
            return 0;
        }
        // Moving the window's end from q − 1 to q adds bucket q and drops bucket q − width.
        // Between two entries that enter, the count only falls, so the highest is reached
        // at `from` or just as an entry enters: walk the entries that enter (buckets after
        // `from`) and, before each, drop those that left by then. Each is read once and in
        // order, and an empty stretch of buckets (late events at a sparse window) costs
        // nothing.
        let width = self.width();
        let mut enter = self.entries_from(self.seek(from + 1));
        let mut leave = self.entries_from(self.seek(from - width + 1)).peekable();
        let mut count = self.count_exact(from);
        let mut best = count;
        while let Some((b, n)) = enter.next().filter(|&(b, _)| b <= to) {
            while let Some(&(l, m)) = leave.peek()
                && l <= b - width
            {
                count = count.saturating_sub(m as u128);
                leave.next();
            }
            count += n as u128;
            best = best.max(count);
        }
        clamp(best)
    }

    /// The first bucket at which the window holds fewer than `limit` events, counting only
    /// what is already in it: `q` itself when it already does.
    pub fn frees_at(&self, q: i64, limit: u64) -> i64 {
        let count = self.count_at(q);
        if count < limit || self.head == i64::MIN {
            return q;
        }
        let excess = (count - limit + 1) as u128;
        let mut cum: u128 = 0;
        let a = (q - self.width() + 1).max(self.ring_lo());
        for (b, n) in self
            .entries_from(self.seek(a))
            .take_while(|e| e.0 <= q.min(self.head))
        {
            cum += n as u128;
            if cum >= excess {
                return b + self.width();
            }
        }
        q.min(self.head) + self.width()
    }

    /// Events counted in buckets `from` and later, those ahead of any query time included:
    /// what admission weighs a grant against (a window longer than `width` by the margin, so
    /// `from` may be up to `slack` buckets behind the window at the head; older buckets are
    /// no longer held and count nothing).
    pub fn count_from(&self, from: i64) -> u64 {
        if self.head == i64::MIN || from > self.head {
            return 0;
        }
        let edge = self.head - self.width() + 1;
        let sum = if from <= edge {
            // The head's window plus the held buckets behind it from `from`.
            let behind: u128 = self
                .entries_from(self.seek(from))
                .take_while(|e| e.0 < edge)
                .map(|e| e.1 as u128)
                .sum();
            self.head_sum + behind
        } else {
            self.head_sum_from(from)
        };
        clamp(sum)
    }

    /// The head's window less its buckets before `from` (inside it).
    fn head_sum_from(&self, from: i64) -> u128 {
        let mut sum = self.head_sum;
        let mut c = self.inside;
        while let Some((b, n, next)) = self.entry(c)
            && b < from
        {
            sum -= n as u128;
            c = next;
        }
        sum
    }

    /// The first bucket `f ≥ from` with [`Window::count_from`]`(f) ≤ room`, counting only what
    /// is already held: `from` itself when it already is.
    pub fn frees_from(&self, from: i64, room: u64) -> i64 {
        let total = self.count_from(from);
        if total <= room {
            return from;
        }
        let excess = u128::from(total - room);
        let mut cum: u128 = 0;
        for (b, n) in self.entries_from(self.seek(from)) {
            cum += n as u128;
            if cum >= excess {
                return b + 1;
            }
        }
        self.head.saturating_add(1)
    }

    /// Events counted in buckets `from ..= to` (as far as they are still held).
    pub fn count_between(&self, from: i64, to: i64) -> u64 {
        if to < from {
            return 0;
        }
        self.count_from(from)
            .saturating_sub(self.count_from(to.saturating_add(1)))
    }

    /// Keeps at least `span` buckets from now on (a calendar day's window, up to 25 h): only
    /// ever grows, so nothing held is dropped.
    pub fn hold_at_least(&mut self, span: usize) {
        let span = u16::try_from(span).unwrap_or(u16::MAX);
        if span > self.span {
            self.span = span;
            self.anchor_before_ring();
        }
    }

    /// Makes the bucket the first entry's gap counts from (`front.prev`) older than the ring:
    /// a count at any bucket the ring holds then has a positive gap. A longer span (or a
    /// stored window) can bring back buckets at or before it, whose count would otherwise be
    /// stored as a negative gap that no snapshot reads back.
    fn anchor_before_ring(&mut self) {
        if self.head == i64::MIN {
            return;
        }
        let anchor = self.ring_lo() - 1;
        if self.front.prev <= anchor {
            return;
        }
        let at = self.front.at;
        if let Some((b, _, _)) = self.entry(self.front) {
            let mut gap_end = at;
            read(&self.bytes, &mut gap_end);
            let mut gap = Vec::with_capacity(10);
            put(&mut gap, (b - anchor) as u64);
            let delta = gap.len() as isize - (gap_end - at) as isize;
            self.bytes.splice(at..gap_end, gap);
            let shift = |o: usize| {
                if o > at {
                    (o as isize + delta) as usize
                } else {
                    o
                }
            };
            if let Some((b, o)) = self.last() {
                self.set_last(Some((b, shift(o))));
            }
            self.inside.at = shift(self.inside.at);
        }
        if self.inside.at == at {
            self.inside.prev = anchor;
        }
        self.front.prev = anchor;
    }

    /// Bytes held for the entries (for tests and sizing).
    pub fn held_bytes(&self) -> usize {
        self.bytes.capacity()
    }
}

impl<S: Slot> Window<S> {
    /// The same counts as a dense ring (tests write older snapshots with it).
    #[cfg(test)]
    fn to_dense(&self) -> Dense<S> {
        let mut d = Dense::new(self.width() as usize, (self.span() - self.width()) as usize);
        for (b, n) in self.entries() {
            d.add(b, n);
        }
        if let Some(head) = self.head() {
            d.add(head, 0);
        }
        d
    }

    /// The counts of a dense ring (a snapshot of format 3 or older): every non-empty bucket
    /// it holds.
    pub fn from_dense(d: Dense<S>) -> Window<S> {
        let len = d.slots.len() as i64;
        let mut w = Window::new(d.width as usize, (len - d.width) as usize);
        if d.head == i64::MIN {
            return w;
        }
        for b in d.head.saturating_sub(len - 1)..=d.head {
            let n = d.slots[b.rem_euclid(len) as usize].get();
            if n > 0 {
                w.add(b, n);
            }
        }
        w.advance_to(d.head);
        w
    }
}

/// A window sum as answered: at most `i64::MAX`.
fn clamp(v: u128) -> u64 {
    v.min(i64::MAX as u128) as u64
}

/// The stored form: the head, the shape, and the entries from the first one held.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored<'a> {
    head: i64,
    width: i64,
    span: i64,
    /// The bucket before the first entry.
    prev: i64,
    #[serde(borrow)]
    entries: std::borrow::Cow<'a, [u8]>,
}

impl<S: Slot + serde::Serialize> serde::Serialize for Window<S> {
    fn serialize<Z: serde::Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        #[cfg(test)]
        if DENSE.with(|d| d.get()) {
            return self.to_dense().serialize(s);
        }
        Stored {
            head: self.head,
            width: self.width(),
            span: self.span(),
            prev: self.front.prev,
            entries: std::borrow::Cow::Borrowed(&self.bytes[self.front.at..]),
        }
        .serialize(s)
    }
}

thread_local! {
    /// Set while a snapshot of format 3 or older is read: its windows are dense rings.
    static DENSE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `write` with windows written in the dense layout of format 3 (tests make old
/// snapshots with it).
#[cfg(test)]
pub(crate) fn writing_dense<T>(write: impl FnOnce() -> T) -> T {
    reading_dense(write)
}

/// Runs `read` with windows read in the dense layout of snapshot formats up to 3 (and
/// converted); postcard is not self-describing, so the reader has to be told.
pub(crate) fn reading_dense<T>(read: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            DENSE.with(|d| d.set(false));
        }
    }
    DENSE.with(|d| d.set(true));
    let _reset = Reset;
    read()
}

impl<'de, S: Slot + serde::Deserialize<'de>> serde::Deserialize<'de> for Window<S> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        if DENSE.with(|d| d.get()) {
            return Dense::<S>::deserialize(d).map(Window::from_dense);
        }
        let stored = Stored::deserialize(d)?;
        if stored.width < 1 || stored.span < stored.width || stored.span > i64::from(u16::MAX) {
            return Err(D::Error::custom("a window of an impossible shape"));
        }
        let mut w = Window::new(stored.width as usize, (stored.span - stored.width) as usize);
        w.head = stored.head;
        w.adopt(stored.entries.into_owned(), stored.prev)
            .map_err(D::Error::custom)?;
        Ok(w)
    }
}

#[cfg(test)]
mod tests;
