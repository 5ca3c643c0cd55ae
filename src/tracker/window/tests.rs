//! The compact window: its own cases, and random histories checked against the dense ring
//! (the straightforward model) and against exact timestamps.

use proptest::prelude::*;

use super::dense::Dense;
use super::*;

#[test]
fn rpm_window_holds_61_one_second_buckets() {
    let mut w: Window<u32> = Window::new(61, 0);
    w.add(100, 1);
    assert_eq!(w.count_at(100), 1);
    assert_eq!(w.count_at(160), 1, "t-60 s still inside: conservative");
    assert_eq!(w.count_at(161), 0);
    w.add(161, 2);
    assert_eq!(w.count_at(161), 2);
    assert!(!w.add(100, 1), "older than the ring");
}

#[test]
fn per_bucket_lists_each_buckets_count_in_range() {
    let mut w: Window<u32> = Window::new(1441, 0);
    assert_eq!(w.per_bucket(0, 3), vec![0; 4], "empty");
    w.add(10, 2);
    w.add(12, 1);
    w.add(12, 4);
    w.add(20, 7);
    assert_eq!(w.per_bucket(9, 13), vec![0, 2, 0, 5, 0]);
    assert_eq!(w.per_bucket(19, 21), vec![0, 7, 0]);
    assert_eq!(w.per_bucket(21, 20), Vec::<u64>::new(), "an empty range");
    let sum: u64 = w.per_bucket(0, 20).iter().sum();
    assert_eq!(sum, w.count_at(20));
}

#[test]
fn slack_allows_exact_late_queries() {
    let mut w: Window<u32> = Window::new(61, 300);
    for b in 0..400 {
        w.add(b, 1);
    }
    assert_eq!(w.count_at(399), 61);
    assert_eq!(w.count_at(200), 61, "300 buckets back is still exact");
    assert_eq!(w.count_at(420), 40);
    assert_eq!(w.count_at(1000), 0);
    w.add(150, 5);
    assert_eq!(w.count_at(150), 66);
    assert_eq!(w.count_at(399), 61);
}

#[test]
fn max_count_is_the_highest_window_over_a_range() {
    let mut w: Window<u32> = Window::new(61, 300);
    for b in [100, 130, 150, 200, 205] {
        w.add(b, 1);
    }
    let by_hand = |from: i64, to: i64| (from..=to).map(|q| w.count_at(q)).max().unwrap();
    for (from, to) in [(100, 205), (150, 160), (161, 205), (200, 400), (90, 99)] {
        assert_eq!(
            w.max_count(from, to),
            by_hand(from, to.min(205)),
            "{from}..{to}"
        );
    }
    assert_eq!(
        w.max_count(100, 205),
        3,
        "130, 150 and the one at 100..=160"
    );
    assert_eq!(w.max_count(300, 200), 0);
}

#[test]
fn frees_at_finds_when_the_oldest_leave() {
    let mut w: Window<u32> = Window::new(61, 0);
    w.add(10, 3);
    w.add(20, 2);
    assert_eq!(w.frees_at(30, 6), 30, "room now");
    assert_eq!(
        w.frees_at(30, 5),
        71,
        "the three at 10 leave the window at 71"
    );
    assert_eq!(w.frees_at(30, 2), 81);
    assert_eq!(w.frees_at(30, 1), 81);
}

#[test]
fn saturating_slots_keep_totals_consistent() {
    let mut w: Window<u32> = Window::new(2, 0);
    w.add(1, u64::MAX);
    assert_eq!(w.count_at(1), u32::MAX as u64);
    w.add(3, 1);
    assert_eq!(w.count_at(3), 1);
    // Token windows: however many huge counts arrive, answers stay within i64 and a
    // single count is kept whole.
    let mut t: Window<u64> = Window::new(61, 300);
    t.add(0, i64::MAX as u64);
    assert_eq!(t.count_at(0), i64::MAX as u64);
    for s in 0..70 {
        for _ in 0..3 {
            t.add(s, i64::MAX as u64);
        }
        assert_eq!(t.count_at(s), i64::MAX as u64, "at {s}");
        assert_eq!(t.max_count(s.saturating_sub(5), s), i64::MAX as u64);
    }
    assert_eq!(t.count_at(69 + 61 + 1), 0, "all of it leaves the window");
}

const SEC: i64 = 1000;

proptest! {
    /// The rpm window against a model that keeps every timestamp, on random out-of-order
    /// streams: never fewer than the exact count of `(t − 60 s, t]`, never more than the
    /// conservative bound (the 61 whole seconds `floor(t) − 60 ..= floor(t)`).
    #[test]
    fn rpm_window_is_conservative(
        start in 1_700_000_000_000i64..1_800_000_000_000,
        deltas in prop::collection::vec((-200_000i64..=5_000, 1u64..4), 1..400),
        probes in prop::collection::vec(-300_000i64..=120_000, 1..20),
    ) {
        let slack = 300;
        let mut w: Window<u32> = Window::new(61, slack);
        let mut newest = start;
        let mut all: Vec<(i64, u64)> = Vec::new();
        for (d, n) in deltas {
            // Mostly forward, sometimes far behind: late events up to 200 s old.
            let ts = (newest + d).max(0);
            newest = newest.max(ts);
            let held = w.add(ts.div_euclid(SEC), n);
            // The ring may only drop events that no supported query can need.
            prop_assert!(held || ts.div_euclid(SEC) <= newest.div_euclid(SEC) - (61 + slack as i64));
            all.push((ts, n));
            // The O(1) answer at the head agrees with the model after every step.
            let q = newest.div_euclid(SEC);
            let at_head = w.count_at(q);
            let bound: u64 = all.iter().filter(|(t, _)| t.div_euclid(SEC) >= q - 60 && t.div_euclid(SEC) <= q).map(|e| e.1).sum();
            prop_assert_eq!(at_head, bound, "at the head the window holds exactly its 61 buckets");
        }
        for p in probes {
            let t = newest + p;
            // Queries are supported from `slack` seconds behind the head onwards.
            prop_assume!(t.div_euclid(SEC) >= newest.div_euclid(SEC) - slack as i64);
            let got = w.count_at(t.div_euclid(SEC));
            let exact: u64 = all.iter().filter(|(ts, _)| *ts > t - 60 * SEC && *ts <= t).map(|e| e.1).sum();
            let lo = (t.div_euclid(SEC) - 60) * SEC;
            let hi = (t.div_euclid(SEC) + 1) * SEC;
            let bound: u64 = all.iter().filter(|(ts, _)| *ts >= lo && *ts < hi).map(|e| e.1).sum();
            prop_assert!(got >= exact, "undercount at {t}: got {got} < exact {exact}");
            prop_assert!(got <= bound, "overcount at {t}: got {got} > bound {bound}");
        }
    }

    /// The daily window (1 min buckets, 1441 of them) under the same model.
    #[test]
    fn daily_window_is_conservative(
        start in 1_700_000_000_000i64..1_800_000_000_000,
        deltas in prop::collection::vec((-240_000i64..=3_600_000, 1u64..4), 1..300),
        probes in prop::collection::vec(-240_000i64..=7_200_000, 1..20),
    ) {
        const MIN: i64 = 60_000;
        let mut w: Window<u32> = Window::new(1441, 5);
        let mut newest = start;
        let mut all: Vec<(i64, u64)> = Vec::new();
        for (d, n) in deltas {
            let ts = newest + d;
            newest = newest.max(ts);
            w.add(ts.div_euclid(MIN), n);
            all.push((ts, n));
        }
        for p in probes {
            let t = newest + p;
            prop_assume!(t.div_euclid(MIN) >= newest.div_euclid(MIN) - 5);
            let got = w.count_at(t.div_euclid(MIN));
            let exact: u64 = all.iter().filter(|(ts, _)| *ts > t - 1440 * MIN && *ts <= t).map(|e| e.1).sum();
            let lo = (t.div_euclid(MIN) - 1440) * MIN;
            let hi = (t.div_euclid(MIN) + 1) * MIN;
            let bound: u64 = all.iter().filter(|(ts, _)| *ts >= lo && *ts < hi).map(|e| e.1).sum();
            prop_assert!(got >= exact, "undercount at {t}: got {got} < exact {exact}");
            prop_assert!(got <= bound, "overcount at {t}: got {got} > bound {bound}");
        }
    }
}

/// One step of a history: count `n` at `ahead` buckets from the newest (negative: late).
fn history() -> impl Strategy<Value = Vec<(i64, u64)>> {
    prop::collection::vec(
        prop_oneof![
            4 => (0i64..3, 1u64..5),
            2 => (-400i64..0, 1u64..5),
            1 => (3i64..2_000, 1u64..5),
            1 => (0i64..1, u32::MAX as u64 - 2..u32::MAX as u64 + 10),
            // The head moving on without a count, then counts that lengthen a varint.
            1 => (0i64..120, 0u64..1),
            1 => (-400i64..1, 100u64..20_000),
        ],
        1..300,
    )
}

proptest! {
    /// Compact and dense give the same answer to every query, after every step of random
    /// histories with late counts, long quiet gaps and saturating counts, for the rpm and the
    /// daily shapes.
    #[test]
    fn compact_answers_as_the_dense_ring(
        steps in history(),
        daily in any::<bool>(),
        start in -5_000i64..1_800_000_000,
        probes in prop::collection::vec(prop_oneof![-2_000i64..2_000, -80i64..3], 1..8),
    ) {
        let (width, slack) = if daily { (1441, 5) } else { (61, 300) };
        let mut c: Window<u32> = Window::new(width, slack);
        let mut d: Dense<u32> = Dense::new(width, slack);
        let mut newest = start;
        for (ahead, n) in steps {
            let b = newest + ahead;
            newest = newest.max(b);
            prop_assert_eq!(c.add(b, n), d.add(b, n), "add({}, {})", b, n);
            prop_assert_eq!(c.head(), d.head());
            prop_assert_eq!(c.count_at(newest), d.count_at(newest));
            for &p in &probes {
                let q = newest + p;
                prop_assert_eq!(c.count_at(q), d.count_at(q), "count_at({}) head {}", q, newest);
                prop_assert_eq!(c.max_count(q, q + 40), d.max_count(q, q + 40), "max_count({})", q);
                let to = q + width as i64 - 1;
                prop_assert_eq!(c.max_count(q, to), d.max_count(q, to), "max_count({}, {})", q, to);
                for limit in [1, 3, 50] {
                    prop_assert_eq!(c.frees_at(q, limit), d.frees_at(q, limit), "frees_at({}, {})", q, limit);
                }
            }
        }
        // Stored and read back, and from the dense layout older snapshots hold: the same.
        let back: Window<u32> = postcard::from_bytes(&postcard::to_stdvec(&c).unwrap()).unwrap();
        let converted = Window::from_dense(d.clone());
        for p in probes.iter().map(|p| newest + p).chain([newest]) {
            prop_assert_eq!(back.count_at(p), d.count_at(p));
            prop_assert_eq!(converted.count_at(p), d.count_at(p));
        }
    }
}

proptest! {
    /// A window told to hold more buckets (a calendar day's) part way through a history
    /// answers as the dense ring told the same, and still stores and reads back: the buckets
    /// it holds again were dropped before, so a late count there must not be stored as a
    /// gap counted back from a later bucket.
    #[test]
    fn holding_longer_answers_as_the_dense_ring(
        steps in history(),
        daily in any::<bool>(),
        hold_at in 0.0f64..1.0,
        more in 1usize..200,
        probes in prop::collection::vec(prop_oneof![-2_000i64..2_000, -80i64..3], 1..8),
    ) {
        let (width, slack) = if daily { (1441, 5) } else { (61, 300) };
        let mut c: Window<u32> = Window::new(width, slack);
        let mut d: Dense<u32> = Dense::new(width, slack);
        let mut newest = 10_000i64;
        let hold_at = (hold_at * steps.len() as f64) as usize;
        for (i, (ahead, n)) in steps.into_iter().enumerate() {
            if i == hold_at {
                c.hold_at_least(width + slack + more);
                d.hold_at_least(width + slack + more);
            }
            let b = newest + ahead;
            newest = newest.max(b);
            prop_assert_eq!(c.add(b, n), d.add(b, n), "add({}, {})", b, n);
            for &p in &probes {
                let q = newest + p;
                prop_assert_eq!(c.count_at(q), d.count_at(q), "count_at({}) head {}", q, newest);
                prop_assert_eq!(c.max_count(q, q + 40), d.max_count(q, q + 40), "max_count({})", q);
            }
        }
        let back: Window<u32> = postcard::from_bytes(&postcard::to_stdvec(&c).unwrap())
            .map_err(|e| TestCaseError::fail(format!("stored window not read back: {e}")))?;
        for p in probes.iter().map(|p| newest + p).chain([newest]) {
            prop_assert_eq!(back.count_at(p), d.count_at(p));
        }
    }
}

#[test]
fn a_late_count_in_buckets_held_again_round_trips() {
    // From a review: the front had dropped bucket 10 000 when the span grew back over it.
    let mut w: Window<u32> = Window::new(1441, 5);
    let mut d: Dense<u32> = Dense::new(1441, 5);
    for (b, n) in [(10_000, 1), (11_446, 1)] {
        w.add(b, n);
        d.add(b, n);
    }
    w.hold_at_least(1506);
    d.hold_at_least(1506);
    assert!(w.add(9_950, 1) && d.add(9_950, 1));
    let back: Window<u32> = postcard::from_bytes(&postcard::to_stdvec(&w).unwrap()).unwrap();
    for q in [9_950, 11_390, 11_446] {
        assert_eq!(back.count_at(q), d.count_at(q), "count_at({q})");
        assert_eq!(w.count_at(q), d.count_at(q), "count_at({q})");
    }
}

#[test]
fn a_window_stored_with_a_late_count_before_its_anchor_is_read_back() {
    // What builds before the fix above stored for that sequence: the first entry's gap
    // counted back from the dropped bucket 10 000, wrapped to 64 bits.
    let mut entries = Vec::new();
    for v in [(9_950i64 - 10_000) as u64, 1, 11_446 - 9_950, 1] {
        put(&mut entries, v);
    }
    let stored = Stored {
        head: 11_446,
        width: 1441,
        span: 1506,
        prev: 10_000,
        entries: std::borrow::Cow::Owned(entries),
    };
    let w: Window<u32> = postcard::from_bytes(&postcard::to_stdvec(&stored).unwrap()).unwrap();
    let mut d: Dense<u32> = Dense::new(1441, 5);
    d.hold_at_least(1506);
    for (b, n) in [(11_446, 1), (9_950, 1)] {
        d.add(b, n);
    }
    let again: Window<u32> = postcard::from_bytes(&postcard::to_stdvec(&w).unwrap()).unwrap();
    for q in [9_950, 11_390, 11_391, 11_446] {
        assert_eq!(w.count_at(q), d.count_at(q), "count_at({q})");
        assert_eq!(
            again.count_at(q),
            d.count_at(q),
            "count_at({q}) stored again"
        );
    }
    // Only the first entry may count back: a later one that does is refused as before.
    let mut entries = Vec::new();
    for v in [1u64, 1, (-1i64) as u64, 1] {
        put(&mut entries, v);
    }
    let stored = Stored {
        entries: std::borrow::Cow::Owned(entries),
        ..stored
    };
    assert!(postcard::from_bytes::<Window<u32>>(&postcard::to_stdvec(&stored).unwrap()).is_err());
}

#[test]
fn memory_follows_activity() {
    // One request every 10 minutes for a day, in the daily window: about 2 bytes each.
    let mut w: Window<u32> = Window::new(1441, 5);
    for i in 0..144 {
        w.add(i * 10, 1);
    }
    assert_eq!(w.count_at(1430), 144);
    assert!(w.held_bytes() <= 600, "{} bytes", w.held_bytes());
    // A quiet window holds nothing.
    let quiet: Window<u32> = Window::new(1441, 5);
    assert_eq!(quiet.held_bytes(), 0);
    // Entries that leave the ring give their bytes back.
    for i in 0..100_000 {
        w.add(2_000 + i, 1);
    }
    assert!(w.held_bytes() <= 16 * 1446, "{} bytes", w.held_bytes());
}

#[test]
fn a_varint_past_64_bits_does_not_read() {
    // u64::MAX: nine bytes of seven ones, then bit 63 in the tenth.
    let mut max = vec![0xff; 9];
    max.push(0x01);
    let mut at = 0;
    assert_eq!(take(&max, &mut at), Some(u64::MAX));
    assert_eq!(at, 10);
    // One more bit in the tenth byte would be bit 64: the old loop dropped it silently.
    let mut over = vec![0xff; 9];
    over.push(0x02);
    assert_eq!(take(&over, &mut 0), None);
    // Nor does an eleventh byte ever read.
    let mut long = vec![0x80; 10];
    long.push(0x00);
    assert_eq!(take(&long, &mut 0), None);
    // The one-byte path and the bytes ending early.
    assert_eq!(take(&[0x7f], &mut 0), Some(0x7f));
    assert_eq!(take(&[0x80], &mut 0), None);
    assert_eq!(take(&[], &mut 0), None);
}

#[test]
fn a_stored_window_that_does_not_decode_is_refused() {
    let mut w: Window<u32> = Window::new(61, 300);
    w.add(1_000, 3);
    let mut bytes = postcard::to_stdvec(&w).unwrap();
    // Cut inside the entries.
    bytes.truncate(bytes.len() - 1);
    assert!(postcard::from_bytes::<Window<u32>>(&bytes).is_err());
    // A count of zero, or an entry past the head, is not a window this code writes.
    let bad = Stored {
        head: 10,
        width: 61,
        span: 361,
        prev: 5,
        entries: std::borrow::Cow::Owned(vec![10, 1]),
    };
    assert!(postcard::from_bytes::<Window<u32>>(&postcard::to_stdvec(&bad).unwrap()).is_err());
}

#[test]
fn bumping_the_last_entry_behind_the_head_keeps_the_window_start() {
    // The reviewer's sequence: the head moves on with a zero count, then a late count on
    // the last entry lengthens its varint.
    let mut c: Window<u32> = Window::new(61, 300);
    let mut d: Dense<u32> = Dense::new(61, 300);
    for (b, n) in [(100, 1), (200, 0), (100, 16_382), (210, 5), (289, 1)] {
        assert_eq!(c.add(b, n), d.add(b, n));
        for q in [b, 271, 289, 300] {
            assert_eq!(c.count_at(q), d.count_at(q), "after add({b}, {n}), at {q}");
        }
    }
}

#[test]
fn a_window_that_never_counted_round_trips() {
    let w: Window<u64> = Window::new(61, 300);
    let back: Window<u64> = postcard::from_bytes(&postcard::to_stdvec(&w).unwrap()).unwrap();
    assert_eq!(back.head(), None);
    // Moved on without counting, stored, read back, then counted.
    let mut w: Window<u64> = Window::new(61, 300);
    w.add(1_000, 0);
    let mut back: Window<u64> = postcard::from_bytes(&postcard::to_stdvec(&w).unwrap()).unwrap();
    assert!(back.add(990, 4));
    assert_eq!(back.count_at(1_000), 4);
}

proptest! {
    /// `count_from` sums every held bucket from a point on (those ahead of it too), and
    /// `frees_from` is the first start at which that sum fits: checked against a plain map
    /// of every count, for starts inside, behind and ahead of the window at the head.
    #[test]
    fn count_from_and_frees_from_match_a_plain_sum(
        steps in prop::collection::vec((-350i64..3, 0u64..4), 1..200),
        daily in any::<bool>(),
        probes in prop::collection::vec(-1_800i64..5, 1..8),
        rooms in prop::collection::vec(0u64..40, 1..4),
    ) {
        let (width, slack) = if daily { (1441i64, 5i64) } else { (61, 300) };
        let mut w: Window<u32> = Window::new(width as usize, slack as usize);
        let mut all: std::collections::BTreeMap<i64, u64> = Default::default();
        let mut newest = 10_000i64;
        for (ahead, n) in steps {
            let b = newest + ahead;
            if w.add(b, n) {
                *all.entry(b).or_default() += n;
            }
            newest = newest.max(b);
        }
        let held_from = newest - width - slack + 1;
        let sum = |from: i64| -> u64 { all.range(from.max(held_from)..).map(|e| e.1).sum() };
        for p in probes {
            let from = newest + p;
            prop_assert_eq!(w.count_from(from), sum(from), "count_from({})", from);
            for &room in &rooms {
                let f = w.frees_from(from, room);
                prop_assert!(f >= from);
                prop_assert!(sum(f) <= room, "frees_from({}, {}) = {} holds {}", from, room, f, sum(f));
                if f > from {
                    prop_assert!(sum(f - 1) > room, "frees_from({}, {}) = {} is not the first", from, room, f);
                }
            }
        }
    }
}
