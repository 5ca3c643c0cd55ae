//! The fast path for the common native event: one flat JSON object on its line.
//!
//! Most lines a producer writes are one object of plain strings, small integers, booleans and
//! nulls, with no escapes (`{"ts":"…","org":"acme","status":200,…}`). For exactly that subset
//! of JSON (RFC 8259 §2–7) this scanner fills the [`Wire`] that serde_json would, in one pass
//! and without serde's per-token machinery. Anything outside it (an escape, a nested object
//! or array, a fraction or exponent, a negative or 19-digit number, a second object on the
//! line, a control character, a `ratelimit` or `headers` key) returns `None`, and the caller
//! reads the line with serde_json as before: so serde_json stays the reference for every other input
//! and for every error message. Chosen by measurement (see the README's replay figures); a
//! differential property test holds it to serde_json's answers. The keys of the lines before
//! are remembered by their place on the line ([`KeyMemo`]), a shortcut that changes no answer.

use super::event::EventField;
use super::values::Raw;
use super::wire::Wire;
use std::borrow::Cow;

/// Fills `w` (empty) with the line's fields as one flat object; false for anything outside
/// the subset (`w` then holds some of them and is to be dropped). Filled in place: a
/// [`Wire`] is half a kilobyte, and returning one copied it three times a line.
pub(crate) fn flat_event<'a>(text: &'a str, w: &mut Wire<'a>) -> bool {
    flat_fields(text, w).is_some()
}

fn flat_fields<'a>(text: &'a str, w: &mut Wire<'a>) -> Option<()> {
    MEMO.with_borrow_mut(|memo| fields_remembering(text, w, memo))
}

fn fields_remembering<'a>(text: &'a str, w: &mut Wire<'a>, memo: &mut KeyMemo) -> Option<()> {
    let mut s = Scanner {
        text,
        b: text.as_bytes(),
        i: 0,
    };
    s.ws();
    s.eat(b'{')?;
    s.ws();
    if !s.eat_if(b'}') {
        let mut k = 0;
        loop {
            let field = match s.known_key(memo, k) {
                Some(field) => field,
                None => {
                    // Whitespace before a key or a value is looked for only off the
                    // remembered path: compact JSON has none, and the calls were a
                    // fifteenth of the scanner.
                    s.ws();
                    let start = s.i;
                    let key = s.string()?;
                    let end = s.i;
                    if !s.punct(b':') {
                        return None;
                    }
                    let field = EventField::parse(key);
                    if s.i == end + 1 {
                        memo.learn(k, &s.b[start..s.i], field);
                    }
                    field
                }
            };
            k += 1;
            match field {
                // `ratelimit` and `headers` (objects, no slot) are left to serde_json.
                Some(f) => s.value_into(w.scalar_slot(f)?)?,
                None => s.value_into(&mut None)?,
            }
            if s.punct(b',') {
                continue;
            }
            if !s.punct(b'}') {
                return None;
            }
            break;
        }
    }
    s.ws();
    (s.i == s.b.len()).then_some(())
}

/// Keys remembered, by their place on the line.
const MEMO_KEYS: usize = 24;

thread_local! {
    /// The last lines' keys on this thread. Only a shortcut: a remembered key is taken only
    /// where the line holds exactly its bytes, which the full path would read the same. Kept
    /// per thread rather than passed in, so that every caller of the line decoders (replay's
    /// workers, the tailer, HTTP ingest) has one without a new parameter on each path.
    static MEMO: std::cell::RefCell<KeyMemo> = const { std::cell::RefCell::new(KeyMemo::EMPTY) };
}

/// A key as the line held it at one place, quotes and colon included (`"org":`), up to 16
/// bytes: the bytes little-endian in a `u128` and the mask of those used.
#[derive(Debug, Clone, Copy)]
struct MemoKey {
    bytes: u128,
    mask: u128,
    /// Bytes used; 0 for none remembered.
    len: u8,
    field: Option<EventField>,
}

/// The keys of the lines scanned before, place by place. A producer writes the same keys in
/// the same order on every line: a key then costs one 16-byte compare, not a string search
/// and a match on its name (together about half the scanner's instructions).
#[derive(Debug)]
struct KeyMemo {
    keys: [MemoKey; MEMO_KEYS],
}

impl KeyMemo {
    const EMPTY: KeyMemo = KeyMemo {
        keys: [MemoKey {
            bytes: 0,
            mask: 0,
            len: 0,
            field: None,
        }; MEMO_KEYS],
    };

    /// Remembers `key` (a whole `"name":`, read by the full path) as the `k`th key.
    fn learn(&mut self, k: usize, key: &[u8], field: Option<EventField>) {
        let Some(slot) = self.keys.get_mut(k) else {
            return;
        };
        let mut bytes = [0u8; 16];
        match bytes.get_mut(..key.len()) {
            Some(head) => head.copy_from_slice(key),
            None => {
                slot.len = 0;
                return;
            }
        }
        *slot = MemoKey {
            bytes: u128::from_le_bytes(bytes),
            mask: u128::MAX >> (8 * (16 - key.len())),
            len: key.len() as u8,
            field,
        };
    }
}

/// Where a string's plain run stops: the first `"`, `\\` or control character of `rest`.
///
/// Sixteen bytes at a time with SSE2 (part of every x86_64 target), the rest (and other
/// targets) by [`string_stop_swar`]. Strings are most of a line's bytes, and most are
/// shorter than sixteen: one compare answers them.
#[inline]
fn string_stop(rest: &[u8]) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        // The first chunk alone answers most strings: tested before the loop's set-up.
        if let Some(first) = rest.first_chunk::<16>() {
            let mask = stops16(first);
            if mask != 0 {
                return Some(mask.trailing_zeros() as usize);
            }
        }
        let (chunks, tail) = rest.as_chunks::<16>();
        for (i, chunk) in chunks.iter().enumerate() {
            let mask = stops16(chunk);
            if mask != 0 {
                return Some(16 * i + mask.trailing_zeros() as usize);
            }
        }
        string_stop_swar(tail).map(|p| 16 * chunks.len() + p)
    }
    #[cfg(not(target_arch = "x86_64"))]
    string_stop_swar(rest)
}

/// A bit per byte of `chunk` that is `"`, `\\` or below 0x20.
#[cfg(target_arch = "x86_64")]
#[inline]
fn stops16(chunk: &[u8; 16]) -> u32 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    // SAFETY: SSE2 is part of every x86_64 target, so these instructions exist; the one
    // load reads the 16 bytes `chunk` refers to, unaligned.
    unsafe {
        let x = _mm_loadu_si128(chunk.as_ptr().cast());
        let quote = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'\\' as i8));
        // Unsigned x <= 0x1f exactly when max(x, 0x1f) is 0x1f.
        let low = _mm_set1_epi8(0x1f);
        let control = _mm_cmpeq_epi8(_mm_max_epu8(x, low), low);
        _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32
    }
}

/// [`string_stop`] eight bytes a word (SWAR): a byte equal to `c` is a zero byte of
/// `w ^ c·0x01…`, and `(x - 0x01…) & !x & 0x80…` flags zero bytes (and bytes below 0x20,
/// with 0x20·0x01…). A borrow can also flag bytes above a true hit, never below one, so the
/// lowest flag is the first stop. Byte by byte this was a quarter of replay.
fn string_stop_swar(rest: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = ONES * 0x80;
    let zero = |x: u64, below: u64| x.wrapping_sub(ONES * below) & !x & HIGH;
    let mut words = rest.chunks_exact(8);
    let mut at = 0;
    for chunk in words.by_ref() {
        let Ok(bytes) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let w = u64::from_le_bytes(bytes);
        let hit = zero(w ^ (ONES * u64::from(b'"')), 1)
            | zero(w ^ (ONES * u64::from(b'\\')), 1)
            | zero(w, 0x20);
        if hit != 0 {
            return Some(at + (hit.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let tail = words.remainder();
    tail.iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .map(|p| at + p)
}

struct Scanner<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    /// The `k`th key, when the line holds exactly the bytes remembered for it there (quotes
    /// and colon included): eaten, and its field (`Some(None)` for a key that is none).
    #[inline(always)]
    fn known_key(&mut self, memo: &KeyMemo, k: usize) -> Option<Option<EventField>> {
        let key = memo.keys.get(k)?;
        let chunk = self.b.get(self.i..)?.first_chunk::<16>()?;
        if key.len == 0 || u128::from_le_bytes(*chunk) & key.mask != key.bytes {
            return None;
        }
        self.i += usize::from(key.len);
        Some(key.field)
    }

    /// Skips JSON whitespace (RFC 8259 §2).
    #[inline]
    fn ws(&mut self) {
        // Compact JSON has none: one compare (every JSON whitespace is at most a space)
        // answers the common case.
        while let Some(&c) = self.b.get(self.i)
            && c <= b' '
            && matches!(c, b' ' | b'\t' | b'\n' | b'\r')
        {
            self.i += 1;
        }
    }

    /// Eats `c` after any whitespace; the compact form (none) is one compare.
    #[inline]
    fn punct(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            return true;
        }
        self.ws();
        self.eat_if(c)
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.eat_if(c).then_some(())
    }

    fn eat_if(&mut self, c: u8) -> bool {
        let hit = self.b.get(self.i) == Some(&c);
        self.i += usize::from(hit);
        hit
    }

    /// A string without escapes or control characters, borrowed. Inlined: called for every
    /// key and most values, its call and register saves cost as much as its search.
    #[inline(always)]
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        let rest = self.b.get(start..)?;
        let len = string_stop(rest)?;
        if rest.get(len) != Some(&b'"') {
            return None;
        }
        self.i = start + len + 1;
        // SAFETY: `start` is just past an ASCII quote and `start + len` is at one (checked
        // above), both within `text`: a UTF-8 sequence never contains an ASCII byte, so both
        // are character boundaries. The checked `get` re-ran that proof on every string, two
        // of them per key and value of every line.
        Some(unsafe { self.text.get_unchecked(start..start + len) })
    }

    /// A value, after any whitespace, written into `slot` (over what it held).
    #[inline(always)]
    fn value_into(&mut self, slot: &mut Option<Raw<'a>>) -> Option<()> {
        loop {
            *slot = Some(match *self.b.get(self.i)? {
                b'"' => Raw::Str(Cow::Borrowed(self.string()?)),
                b'0'..=b'9' => self.integer()?,
                b't' => self.word(b"true", Raw::Bool(true))?,
                b'f' => self.word(b"false", Raw::Bool(false))?,
                b'n' => self.word(b"null", Raw::Null)?,
                b' ' | b'\t' | b'\n' | b'\r' => {
                    self.ws();
                    continue;
                }
                _ => return None,
            });
            return Some(());
        }
    }

    fn word(&mut self, w: &[u8], v: Raw<'a>) -> Option<Raw<'a>> {
        self.b.get(self.i..)?.starts_with(w).then(|| {
            self.i += w.len();
            v
        })
    }

    /// A non-negative integer of at most 18 digits (so it fits a u64 without overflow), no
    /// leading zero, not followed by a fraction or exponent.
    fn integer(&mut self) -> Option<Raw<'a>> {
        let start = self.i;
        let mut n: u64 = 0;
        while let Some(d @ b'0'..=b'9') = self.b.get(self.i) {
            n = n * 10 + u64::from(d - b'0');
            self.i += 1;
        }
        let digits = self.i - start;
        let leading_zero = digits > 1 && self.b[start] == b'0';
        let more = matches!(self.b.get(self.i), Some(b'.' | b'e' | b'E'));
        (digits <= 18 && !leading_zero && !more).then_some(Raw::UInt(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::ParseContext;
    use proptest::prelude::*;

    /// What serde_json's path answers for `text`, validated, as text.
    fn by_serde(text: &str) -> String {
        let ctx = ParseContext::default();
        let mut got = Vec::new();
        let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Wire<'_>>();
        if let Some(r) = stream.next() {
            got.push(format!("{:?}", r.map(|mut w| w.validate(&ctx))));
        }
        got.join("|")
    }

    fn by_scan(text: &str) -> Option<String> {
        let ctx = ParseContext::default();
        let mut w = Wire::default();
        flat_event(text, &mut w).then(|| format!("{:?}", Ok::<_, ()>(w.validate(&ctx))))
    }

    #[test]
    fn the_common_line_is_scanned() {
        let line = r#"{"ts":"2026-11-27T14:00:00.001Z","org":"org-3","app":"render-bot","user":"u-60","model":"sora-2","kind":"request","status":200,"job_id":"vid_5d","latency_ms":251}"#;
        assert!(flat_event(line, &mut Wire::default()));
        assert_eq!(by_scan(line).as_deref(), Some(&*by_serde(line)));
    }

    #[test]
    fn anything_outside_the_subset_is_left_to_serde() {
        for line in [
            r#"{"org":"a\"b"}"#,
            r#"{"org":"a","ratelimit":{"limit_requests":5}}"#,
            r#"{"org":"a","x":[1]}"#,
            r#"{"org":"a","latency_ms":1.5}"#,
            r#"{"org":"a","tokens":-1}"#,
            r#"{"org":"a","tokens":0123}"#,
            r#"{"org":"a","tokens":1234567890123456789}"#,
            r#"{"org":"a"}{"org":"b"}"#,
            r#"{"org":"a",}"#,
            "{\"org\":\"a\tb\"}",
            r#"[{"org":"a"}]"#,
            r#"{"org":"a""#,
        ] {
            assert!(!flat_event(line, &mut Wire::default()), "{line}");
        }
    }

    /// Every stop at every place of runs up to three chunks long, among bytes that are not
    /// stops (0x7f and the high half included: signed compares would take them for controls).
    #[test]
    fn string_stop_finds_each_stop_at_each_place() {
        let fill = [b'a', b' ', 0x7f, 0x80, 0xe9, 0xff];
        for len in 0..=48usize {
            for f in fill {
                let plain = vec![f; len];
                assert_eq!(string_stop(&plain), None, "{len} × {f:#x}");
                for at in 0..len {
                    for stop in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
                        let mut b = plain.clone();
                        b[at] = stop;
                        assert_eq!(
                            string_stop(&b),
                            Some(at),
                            "{len} × {f:#x}, {stop:#x} at {at}"
                        );
                        assert_eq!(string_stop_swar(&b), Some(at));
                    }
                }
            }
        }
    }

    proptest! {
        /// The chunked searches stop where a byte-by-byte one does.
        #[test]
        fn string_stop_is_the_first_quote_backslash_or_control(
            bytes in prop::collection::vec(prop_oneof![
                8 => 0x20u8..0x7f,
                1 => Just(b'"'),
                1 => Just(b'\\'),
                1 => 0u8..0x20,
                2 => 0x80u8..=0xff,
            ], 0..40)
        ) {
            let want = bytes.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
            prop_assert_eq!(string_stop(&bytes), want);
            prop_assert_eq!(string_stop_swar(&bytes), want);
        }
    }

    #[test]
    fn duplicates_are_marked_as_serde_marks_them() {
        let line = r#"{"org":"a","org":"b","status":200}"#;
        assert_eq!(by_scan(line).as_deref(), Some(&*by_serde(line)));
        let line = r#"{"org":"a","app":"x","app":"y"}"#;
        assert_eq!(by_scan(line).as_deref(), Some(&*by_serde(line)));
    }

    fn token() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("\"org\"".to_string()),
            Just("\"app\"".to_string()),
            Just("\"ts\"".to_string()),
            Just("\"status\"".to_string()),
            Just("\"kind\"".to_string()),
            Just("\"job_id\"".to_string()),
            Just("\"tokens\"".to_string()),
            Just("\"retry_after_ms\"".to_string()),
            Just("\"latency_ms\"".to_string()),
            Just("\"request_id\"".to_string()),
            Just("\"2026-11-02T15:00:00Z\"".to_string()),
            Just("\"request\"".to_string()),
            Just("\"job_started\"".to_string()),
            "\"[a-z\\-é ]{0,6}\"",
            "[0-9]{1,20}",
            Just("-1".to_string()),
            Just("1.5".to_string()),
            Just("1e3".to_string()),
            Just("true".to_string()),
            Just("null".to_string()),
            Just("{".to_string()),
            Just("}".to_string()),
            Just("[".to_string()),
            Just(":".to_string()),
            Just(",".to_string()),
            Just(" ".to_string()),
            Just("\\".to_string()),
        ]
    }

    fn event() -> impl Strategy<Value = String> {
        let value = prop_oneof![
            "\"[a-z0-9\\-:.TZ]{0,24}\"",
            "[0-9]{1,19}",
            Just("true".to_string()),
            Just("null".to_string()),
            Just("429".to_string()),
            Just("\"2026-11-02T15:00:00.5Z\"".to_string()),
        ];
        let key = prop_oneof![
            Just("org"),
            Just("app"),
            Just("ts"),
            Just("status"),
            Just("kind"),
            Just("job_id"),
            Just("tokens"),
            Just("retry_after_ms"),
            Just("latency_ms"),
            Just("error_code"),
            Just("request_id"),
            Just("other"),
        ];
        prop::collection::vec((key, value, prop::bool::ANY), 0..8).prop_map(|fields| {
            let body: Vec<String> = fields
                .iter()
                .map(|(k, v, space)| {
                    if *space {
                        format!(" \"{k}\" : {v} ")
                    } else {
                        format!("\"{k}\":{v}")
                    }
                })
                .collect();
            format!("{{{}}}", body.join(","))
        })
    }

    /// Keys remembered from one line are taken on the next only where its bytes are the
    /// same: a longer or shorter name, spaces around the colon, a key past 16 bytes, a line
    /// that ends within 16 bytes of a key, or another order.
    #[test]
    fn remembered_keys_are_taken_only_where_the_bytes_are_the_same() {
        let lines = [
            r#"{"org":"a","status":200,"app":"x"}"#,
            r#"{"org":"b","status":429,"app":"y"}"#,
            r#"{"orgs":"b","status":429,"app":"y"}"#,
            r#"{"or":"b","status":429,"app":"y"}"#,
            r#"{"org":"b","status":429,"app":"y"}"#,
            r#"{"org" :"c","status": 500 ,"app":"z"}"#,
            r#"{ "org":"d" , "status":200,"app":"w"}"#,
            r#"{"app":"x","org":"e","status":200}"#,
            r#"{"output_tokens":5,"org":"f","retry_after_ms":7}"#,
            r#"{"output_tokens":6,"org":"g","retry_after_ms":8}"#,
            r#"{"output_tokenz":6,"org":"g","retry_after_ms":8}"#,
            r#"{"org":"h","org":"i"}"#,
            r#"{"org":"h","app":"i"}"#,
            r#"{"org":"a","ratelimit":{"limit_requests":5}}"#,
            r#"{"org":"a","headers":{}}"#,
            r#"{"org":"a","status":200,"app":"x"}"#,
        ];
        for round in 0..2 {
            for line in lines {
                let nested = line.contains("ratelimit") || line.contains("headers");
                match by_scan(line) {
                    Some(got) => assert_eq!(got, by_serde(line), "round {round}: {line}"),
                    None => assert!(nested, "round {round}: {line} left to serde"),
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Lines scanned one after another (so each is read with the keys of those before
        /// remembered) answer as serde_json does.
        #[test]
        fn a_run_of_lines_agrees_with_serde_json(lines in prop::collection::vec(event(), 1..12)) {
            for line in &lines {
                if let Some(got) = by_scan(line) {
                    prop_assert_eq!(got, by_serde(line), "{}", line);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Wherever the scanner answers, it answers as serde_json does.
        #[test]
        fn the_scanner_agrees_with_serde_json(
            line in prop_oneof![event(), prop::collection::vec(token(), 0..12).prop_map(|t| t.concat())]
        ) {
            if let Some(got) = by_scan(&line) {
                prop_assert_eq!(got, by_serde(&line), "{}", line);
            }
        }
    }
}
