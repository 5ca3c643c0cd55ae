//! An accepted event detached from the buffer it was decoded from, so that it can cross
//! threads (replay decodes on worker threads and applies in input order on one).
//!
//! Strings the event borrowed from the buffer are kept as byte ranges of it, not copied; only
//! strings that were owned already (JSON escapes) or borrowed from elsewhere (a source's
//! default org) are held as their own. [`Detached::attach`] gives the same [`Event`] back
//! given the same buffer.

use std::borrow::Cow;
use std::ops::Range;

use super::event::{Event, Kind, QuotaReport};

/// A string of a detached event.
#[derive(Debug, Clone, PartialEq)]
enum Text {
    /// Bytes `start..end` of the buffer.
    Span(u32, u32),
    Own(Box<str>),
}

impl Text {
    /// A span when `s` lies inside the buffer at `base` (an owned string never does).
    fn detach(s: &str, base: &Range<usize>) -> Text {
        let at = s.as_ptr() as usize;
        if base.contains(&at)
            && at + s.len() <= base.end
            && u32::try_from(at + s.len() - base.start).is_ok()
        {
            let start = (at - base.start) as u32;
            Text::Span(start, start + s.len() as u32)
        } else {
            Text::Own(s.into())
        }
    }

    fn attach<'b>(&'b self, buf: Buffer<'b>) -> Cow<'b, str> {
        match self {
            // A span is a whole `str` of this very buffer, so it is valid UTF-8 and in bounds;
            // a buffer that is not the one detached from gives replacement characters, never
            // a panic.
            Text::Span(a, b) => {
                let span = *a as usize..*b as usize;
                let bytes = match buf {
                    Buffer::Text(s) => match s.get(span.clone()) {
                        Some(s) => return Cow::Borrowed(s),
                        None => s.as_bytes(),
                    },
                    Buffer::Bytes(b) => b,
                };
                let bytes = bytes.get(span).unwrap_or_default();
                match std::str::from_utf8(bytes) {
                    Ok(s) => Cow::Borrowed(s),
                    Err(_) => String::from_utf8_lossy(bytes).into_owned().into(),
                }
            }
            Text::Own(s) => Cow::Borrowed(s),
        }
    }
}

/// The buffer a detached event is attached to again: text already checked to be UTF-8 (its
/// spans are then taken without checking each again), or bytes.
#[derive(Debug, Clone, Copy)]
pub enum Buffer<'b> {
    /// The whole buffer, known to be UTF-8.
    Text(&'b str),
    /// The buffer as read.
    Bytes(&'b [u8]),
}

/// The fields of an event that decide which org and series it goes to, and whether it is
/// a repeat (SPEC §4: `ts`, `org`, `kind`, `request_id`).
#[derive(Debug, Clone, PartialEq)]
pub struct EventKey<'b> {
    /// Event time (ms since the Unix epoch), if the event has one.
    pub ts_ms: Option<i64>,
    /// The org named (before `max_orgs` decides whether it is tracked).
    pub org: Cow<'b, str>,
    /// Request or job lifecycle event.
    pub kind: Kind,
    /// The producer's id of the request, for dedupe.
    pub request_id: Option<Cow<'b, str>>,
}

/// An [`Event`] without its lifetime: see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct Detached {
    ts_ms: Option<i64>,
    org: Text,
    app: Option<Text>,
    kind: Kind,
    status: Option<u16>,
    job_id: Option<Text>,
    retry_after_ms: Option<i64>,
    error_code: Option<Text>,
    tokens: Option<u64>,
    latency_ms: Option<f64>,
    request_id: Option<Text>,
    model: Option<Text>,
    /// What few events carry, boxed so that the rest stay small (they are moved per line
    /// between replay's threads).
    rare: Option<Box<Rare>>,
}

/// The fields of [`Detached`] that most events leave out.
#[derive(Debug, Clone, PartialEq)]
struct Rare {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    images: Option<u64>,
    upstream: Vec<QuotaReport>,
    batch: bool,
}

impl Detached {
    /// Detaches `ev`, decoded from `buf`.
    pub fn new(ev: &Event<'_>, buf: &[u8]) -> Detached {
        let base = buf.as_ptr_range();
        let base = base.start as usize..base.end as usize;
        let text = |s: &Option<Cow<'_, str>>| s.as_ref().map(|s| Text::detach(s, &base));
        Detached {
            ts_ms: ev.ts_ms,
            org: Text::detach(&ev.org, &base),
            app: text(&ev.app),
            kind: ev.kind,
            status: ev.status,
            job_id: text(&ev.job_id),
            retry_after_ms: ev.retry_after_ms,
            error_code: text(&ev.error_code),
            tokens: ev.tokens,
            latency_ms: ev.latency_ms,
            request_id: text(&ev.request_id),
            model: text(&ev.model),
            rare: (ev.input_tokens.is_some()
                || ev.output_tokens.is_some()
                || ev.images.is_some()
                || ev.batch
                || !ev.upstream.is_empty())
            .then(|| {
                Box::new(Rare {
                    input_tokens: ev.input_tokens,
                    output_tokens: ev.output_tokens,
                    images: ev.images,
                    upstream: ev.upstream.clone(),
                    batch: ev.batch,
                })
            }),
        }
    }

    /// What decides where the event goes (its time, org, kind and `request_id`), without the
    /// rest of [`Detached::attach`]'s work: replay's routing thread reads only this.
    pub fn key<'b>(&'b self, buf: Buffer<'b>) -> EventKey<'b> {
        EventKey {
            ts_ms: self.ts_ms,
            org: self.org.attach(buf),
            kind: self.kind,
            request_id: self.request_id.as_ref().map(|t| t.attach(buf)),
        }
    }

    /// The event again, borrowing from `buf`: the buffer it was detached from.
    pub fn attach<'b>(&'b self, buf: Buffer<'b>) -> Event<'b> {
        let text = |t: &'b Option<Text>| t.as_ref().map(|t| t.attach(buf));
        Event {
            ts_ms: self.ts_ms,
            org: self.org.attach(buf),
            app: text(&self.app),
            kind: self.kind,
            status: self.status,
            job_id: text(&self.job_id),
            retry_after_ms: self.retry_after_ms,
            error_code: text(&self.error_code),
            tokens: self.tokens,
            input_tokens: self.rare.as_ref().and_then(|r| r.input_tokens),
            output_tokens: self.rare.as_ref().and_then(|r| r.output_tokens),
            images: self.rare.as_ref().and_then(|r| r.images),
            latency_ms: self.latency_ms,
            request_id: text(&self.request_id),
            upstream: self
                .rare
                .as_ref()
                .map_or_else(Vec::new, |r| r.upstream.clone()),
            model: text(&self.model),
            batch: self.rare.as_ref().is_some_and(|r| r.batch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{ParseContext, parse_event};

    #[test]
    fn an_event_comes_back_the_same_from_its_buffer() {
        let buf = br#"{"ts":"2026-11-02T15:00:00Z","org":"acme","app":"a\u00e9","job_id":"j1","request_id":"r","error_code":"x","status":429,"tokens":5,"latency_ms":1.5}"#;
        let ctx = ParseContext::default();
        let Ok(p) = parse_event(buf, &ctx) else {
            panic!("the fixture is a valid event");
        };
        let d = Detached::new(&p.event, buf);
        assert!(matches!(d.org, Text::Span(..)));
        assert!(
            matches!(d.app, Some(Text::Own(_))),
            "an escaped string is owned"
        );
        let copy = buf.to_vec();
        assert_eq!(d.attach(Buffer::Bytes(&copy)), p.event);
        let Ok(text) = std::str::from_utf8(buf) else {
            panic!("the fixture is UTF-8");
        };
        assert_eq!(d.attach(Buffer::Text(text)), p.event);
        // Text whose two-byte characters put the org's span off their boundaries.
        let Text::Span(at, _) = d.org else {
            panic!("the org is a span");
        };
        let skew = if at % 2 == 1 { "" } else { "x" };
        let other = format!("{skew}{}", "\u{e9}".repeat(buf.len()));
        assert!(
            d.attach(Buffer::Text(&other)).org.contains('\u{fffd}'),
            "a span off the text's character boundaries gives replacement characters"
        );
    }

    #[test]
    fn strings_from_outside_the_buffer_are_owned() {
        let buf = br#"{"status":200}"#;
        let ctx = ParseContext {
            default_org: Some("fallback"),
            ..ParseContext::default()
        };
        let Ok(p) = parse_event(buf, &ctx) else {
            panic!("the default org makes it valid");
        };
        let d = Detached::new(&p.event, buf);
        assert_eq!(d.org, Text::Own("fallback".into()));
        assert_eq!(d.attach(Buffer::Bytes(buf)).org, "fallback");
        assert_eq!(d.attach(Buffer::Bytes(b"")).org, "fallback");
    }
}
