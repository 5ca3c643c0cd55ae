//! The LEB128 varints a [`super::Window`]'s entries are written in: gaps between buckets and
//! counts, seven bits a byte, low bits first, the high bit set on every byte but the last.

/// Appends `v` as an LEB128 varint.
pub(super) fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Writes `v` over the start of `out`, which holds a varint of the same length.
pub(super) fn put_in_place(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut() {
        if v < 0x80 {
            *b = v as u8;
            return;
        }
        *b = v as u8 | 0x80;
        v >>= 7;
    }
}

/// Bytes [`put`] writes for `v` (a gap, never negative).
pub(super) fn varint_len(v: i64) -> usize {
    let mut v = v as u64;
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Reads an LEB128 varint at `*at`, moving past it; `None` when the bytes end first or it
/// does not fit 64 bits (only stored bytes can be like that: [`super::Window::adopt`]
/// checks them).
#[inline]
pub(super) fn take(bytes: &[u8], at: &mut usize) -> Option<u64> {
    // Gaps and counts are mostly under 128: one byte, read without the loop.
    let first = *bytes.get(*at)?;
    if first < 0x80 {
        *at += 1;
        return Some(u64::from(first));
    }
    take_long(bytes, at)
}

/// [`take`] of a varint of more than one byte.
fn take_long(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        // The tenth byte can hold only bit 63: any higher bit does not fit, and the shift
        // would drop it rather than refuse it.
        if shift == 63 && b & 0x7f > 1 {
            return None;
        }
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// [`take`] on bytes this window wrote with [`put`], which are well formed.
pub(super) fn read(bytes: &[u8], at: &mut usize) -> u64 {
    take(bytes, at).unwrap_or(0)
}
