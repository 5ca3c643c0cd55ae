//! Content codings of request bodies (RFC 9110 §8.4): `gzip`, `deflate` and `zstd`, decoded
//! with flate2 and zstd up to a limit on the decoded size.
//!
//! Why not tower-http's decompression layer: its gzip decoder stops after the first member of
//! a multi-member stream (what `cat a.gz b.gz` or some shippers' chunked writers produce) and
//! ignores trailing bytes, so a body would be answered 202 with half its events silently
//! dropped. flate2's `MultiGzDecoder` reads every member and refuses trailing garbage; the
//! `zstd` decoder reads every frame. The limit holds for the decoded bytes: reading stops at
//! one byte past it, so a compression bomb costs at most that much memory.

use std::borrow::Cow;
use std::io::Read;

use axum::http::HeaderMap;
use axum::http::header::CONTENT_ENCODING;

use super::body::Charge;

/// A body's content coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// None (or `identity`).
    Identity,
    /// `gzip` (or its old name `x-gzip`), one or more members (RFC 1952).
    Gzip,
    /// `deflate`: zlib (RFC 1950) as RFC 9110 defines it, or raw deflate (RFC 1951), which
    /// some clients send under that name.
    Deflate,
    /// `zstd` (RFC 8878), one or more frames.
    Zstd,
}

/// Why a body could not be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodingError {
    /// A coding this server does not decode (415), as named.
    Unsupported(String),
    /// The bytes do not decode in their coding (400).
    Undecodable(String),
    /// Decoded, the body is larger than the limit (413).
    TooLarge,
    /// The decoded bytes do not fit in the budget of bodies in memory (429).
    Saturated,
}

/// The coding the request's `Content-Encoding` header(s) name. Several codings (stacked, in
/// one header or several) are not supported.
pub fn coding(headers: &HeaderMap) -> Result<Coding, CodingError> {
    let mut named = Vec::new();
    for value in headers.get_all(CONTENT_ENCODING) {
        let text = String::from_utf8_lossy(value.as_bytes());
        for token in text.split(',') {
            let t = token.trim().to_ascii_lowercase();
            if !t.is_empty() && t != "identity" {
                named.push(t);
            }
        }
    }
    match named.as_slice() {
        [] => Ok(Coding::Identity),
        [one] => match one.as_str() {
            "gzip" | "x-gzip" => Ok(Coding::Gzip),
            "deflate" => Ok(Coding::Deflate),
            "zstd" => Ok(Coding::Zstd),
            other => Err(CodingError::Unsupported(other.chars().take(64).collect())),
        },
        many => Err(CodingError::Unsupported(format!(
            "{} (stacked codings)",
            many.join(", ").chars().take(64).collect::<String>()
        ))),
    }
}

/// `body` decoded from `coding`, at most `max` bytes of it; each growth of the decoded copy
/// is charged to `charge` (which already covers `body`) before it is made.
pub fn decode<'b>(
    coding: Coding,
    body: &'b [u8],
    max: usize,
    charge: &mut Charge,
) -> Result<Cow<'b, [u8]>, CodingError> {
    let base = body.len();
    let bad = |what: &str, e: std::io::Error| CodingError::Undecodable(format!("{what}: {e}"));
    match coding {
        Coding::Identity => Ok(Cow::Borrowed(body)),
        Coding::Gzip => read_limited(flate2::read::MultiGzDecoder::new(body), max, base, charge)
            .map_err(|e| e.or_else(|io| bad("not a valid gzip stream", io))),
        Coding::Deflate if zlib_header(body) => {
            let mut dec = flate2::bufread::ZlibDecoder::new(body);
            let out = read_limited(&mut dec, max, base, charge)
                .map_err(|e| e.or_else(|io| bad("not a valid deflate (zlib) stream", io)))?;
            nothing_after(dec.into_inner())?;
            Ok(out)
        }
        Coding::Deflate => {
            let mut dec = flate2::bufread::DeflateDecoder::new(body);
            let out = read_limited(&mut dec, max, base, charge)
                .map_err(|e| e.or_else(|io| bad("not a valid deflate stream", io)))?;
            nothing_after(dec.into_inner())?;
            Ok(out)
        }
        Coding::Zstd => {
            let dec = zstd::stream::read::Decoder::with_buffer(body)
                .map_err(|e| bad("not a valid zstd stream", e))?;
            read_limited(dec, max, base, charge)
                .map_err(|e| e.or_else(|io| bad("not a valid zstd stream", io)))
        }
    }
}

/// What a deflate decoder left unread: only whitespace may follow the stream.
fn nothing_after(rest: &[u8]) -> Result<(), CodingError> {
    if rest.iter().any(|b| !b.is_ascii_whitespace()) {
        return Err(CodingError::Undecodable(
            "bytes after the end of the deflate stream".into(),
        ));
    }
    Ok(())
}

/// A zlib header (RFC 1950 §2.2): deflate with a window of at most 32 KiB and a check that
/// makes the first two bytes a multiple of 31.
fn zlib_header(b: &[u8]) -> bool {
    matches!(b, [cmf, flg, ..] if cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0)
}

/// Why [`read_limited`] stopped: over the limit, or a read error.
enum Stop {
    TooLarge,
    Saturated,
    Io(std::io::Error),
}

impl Stop {
    fn or_else(self, f: impl FnOnce(std::io::Error) -> CodingError) -> CodingError {
        match self {
            Stop::TooLarge => CodingError::TooLarge,
            Stop::Saturated => CodingError::Saturated,
            Stop::Io(e) => f(e),
        }
    }
}

/// Reads `r` to its end, at most `max` bytes; the buffer grows by doubling and each growth is
/// charged (on top of the `base` bytes already charged) before it is made.
fn read_limited(
    mut r: impl Read,
    max: usize,
    base: usize,
    charge: &mut Charge,
) -> Result<Cow<'static, [u8]>, Stop> {
    const STEP: usize = 64 * 1024;
    let mut out: Vec<u8> = Vec::new();
    let mut scratch = vec![0u8; STEP];
    loop {
        let n = match r.read(&mut scratch) {
            Ok(0) => return Ok(Cow::Owned(out)),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Stop::Io(e)),
        };
        let need = out.len() + n;
        if need > max {
            return Err(Stop::TooLarge);
        }
        if need > out.capacity() {
            let cap = need.max(out.capacity().saturating_mul(2)).min(max);
            if !charge.cover(base.saturating_add(cap)) {
                return Err(Stop::Saturated);
            }
            out.reserve_exact(cap - out.len());
        }
        out.extend_from_slice(&scratch[..n]);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// Decodes with a budget that never runs out.
    fn dec(coding: Coding, body: &[u8], max: usize) -> Result<Vec<u8>, CodingError> {
        let budget = super::super::body::Budget::new(1 << 30);
        decode(coding, body, max, &mut budget.charge()).map(|c| c.into_owned())
    }

    #[test]
    fn a_decoded_copy_is_charged_as_it_grows() {
        let budget = super::super::body::Budget::new(320 * 1024);
        let big = gz(&[b' '; 200 * 1024]);
        let mut charge = budget.charge();
        assert!(charge.cover(big.len()));
        let out = decode(Coding::Gzip, &big, 1 << 20, &mut charge).unwrap();
        assert_eq!(out.len(), 200 * 1024);
        assert!(budget.in_use() >= 200 * 1024 + big.len());
        drop(charge);
        assert_eq!(budget.in_use(), 0);

        let bigger = gz(&[b' '; 300 * 1024]);
        let mut charge = budget.charge();
        assert_eq!(
            decode(Coding::Gzip, &bigger, 1 << 20, &mut charge),
            Err(CodingError::Saturated)
        );
    }

    fn gz(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                CONTENT_ENCODING,
                axum::http::HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn every_member_and_frame_is_read() {
        let mut two = gz(b"a\n");
        two.extend(gz(b"b\n"));
        assert_eq!(&*dec(Coding::Gzip, &two, 100).unwrap(), b"a\nb\n");
        let mut frames = zstd::encode_all(&b"a\n"[..], 1).unwrap();
        frames.extend(zstd::encode_all(&b"b\n"[..], 1).unwrap());
        assert_eq!(&*dec(Coding::Zstd, &frames, 100).unwrap(), b"a\nb\n");
    }

    #[test]
    fn trailing_garbage_and_broken_streams_are_refused() {
        let mut g = gz(b"a\n");
        g.extend_from_slice(b"garbage");
        assert!(matches!(
            dec(Coding::Gzip, &g, 100),
            Err(CodingError::Undecodable(_))
        ));
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(b"a\n").unwrap();
        let mut z = z.finish().unwrap();
        assert_eq!(&*dec(Coding::Deflate, &z, 100).unwrap(), b"a\n");
        z.extend_from_slice(b"xx");
        assert!(matches!(
            dec(Coding::Deflate, &z, 100),
            Err(CodingError::Undecodable(_))
        ));
        assert!(matches!(
            dec(Coding::Zstd, b"not zstd", 100),
            Err(CodingError::Undecodable(_))
        ));
    }

    #[test]
    fn raw_deflate_is_read_too() {
        let mut d = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        d.write_all(b"raw\n").unwrap();
        assert_eq!(
            &*dec(Coding::Deflate, &d.finish().unwrap(), 100).unwrap(),
            b"raw\n"
        );
    }

    #[test]
    fn the_limit_holds_for_the_decoded_size() {
        let big = gz(&vec![b' '; 1 << 20]);
        assert_eq!(dec(Coding::Gzip, &big, 4096), Err(CodingError::TooLarge));
        assert_eq!(
            dec(Coding::Gzip, &gz(&[b' '; 4096]), 4096).unwrap().len(),
            4096
        );
    }

    #[test]
    fn codings_are_named_by_every_header() {
        assert_eq!(coding(&headers(&[])), Ok(Coding::Identity));
        assert_eq!(coding(&headers(&[b" GZip "])), Ok(Coding::Gzip));
        assert_eq!(coding(&headers(&[b"x-gzip"])), Ok(Coding::Gzip));
        assert_eq!(coding(&headers(&[b"identity"])), Ok(Coding::Identity));
        assert_eq!(coding(&headers(&[b"zstd", b"identity"])), Ok(Coding::Zstd));
        assert!(
            matches!(coding(&headers(&[b"br"])), Err(CodingError::Unsupported(n)) if n == "br")
        );
        assert!(matches!(
            coding(&headers(&[b"gzip", b"br"])),
            Err(CodingError::Unsupported(n)) if n.contains("stacked")
        ));
        assert!(matches!(
            coding(&headers(&[b"gzip, gzip"])),
            Err(CodingError::Unsupported(_))
        ));
        assert!(matches!(
            coding(&headers(&[b"g\xffzip"])),
            Err(CodingError::Unsupported(_))
        ));
    }
}
