//! Request bodies held in memory: each one within `max_body_bytes` and `body_read_timeout`,
//! and all of them together within `max_inflight_bytes`.
//!
//! The budget is what bounds the daemon's memory under many large bodies at once (SPEC §6):
//! a body is charged as its bytes arrive (each growth of its buffer, before it is made), a
//! decoded (decompressed) copy is charged as it grows, and the charge is returned when the
//! request is done with the bytes. A request that would go beyond the
//! budget is answered `429` with `Retry-After` and nothing of it is applied. This module never
//! parses what it reads.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;

/// The budget counts in units of this many bytes, so that a body of any allowed size is one
/// `u32` of permits.
const UNIT: usize = 1024;

/// The bytes of request bodies held at once, across requests ([`Charge`] takes from it).
#[derive(Debug, Clone)]
pub struct Budget {
    permits: std::sync::Arc<Semaphore>,
    bytes: usize,
    /// `ratewarden_http_body_bytes_held`, when exported.
    held: Option<Gauge>,
}

impl Budget {
    /// A budget of `bytes` (rounded up to the unit).
    pub fn new(bytes: usize) -> Budget {
        let units = bytes.div_ceil(UNIT).clamp(1, Semaphore::MAX_PERMITS);
        Budget {
            permits: std::sync::Arc::new(Semaphore::new(units)),
            bytes,
            held: None,
        }
    }

    /// The same budget, keeping `gauge` at the bytes charged.
    pub fn exported(mut self, gauge: Gauge) -> Budget {
        self.held = Some(gauge);
        self
    }

    /// Bytes charged right now.
    pub fn in_use(&self) -> usize {
        let free = self.permits.available_permits();
        self.bytes
            .div_ceil(UNIT)
            .saturating_sub(free)
            .saturating_mul(UNIT)
    }

    /// An empty charge against this budget.
    pub fn charge(&self) -> Charge {
        Charge {
            budget: self.clone(),
            held: None,
            bytes: 0,
        }
    }
}

/// What one request holds of the [`Budget`]; given back on drop.
#[derive(Debug)]
pub struct Charge {
    budget: Budget,
    held: Option<OwnedSemaphorePermit>,
    bytes: usize,
}

impl Charge {
    /// Makes the charge cover `bytes` in all (it never shrinks); `false` when the budget has
    /// not that much left.
    pub fn cover(&mut self, bytes: usize) -> bool {
        let want = bytes.div_ceil(UNIT);
        let have = self.bytes.div_ceil(UNIT);
        if want <= have {
            return true;
        }
        let Ok(more) = u32::try_from(want - have) else {
            return false;
        };
        match self.budget.permits.clone().try_acquire_many_owned(more) {
            Ok(p) => {
                match &mut self.held {
                    Some(h) => h.merge(p),
                    None => self.held = Some(p),
                }
                if let Some(g) = &self.budget.held {
                    g.inc_by(((want - have) * UNIT) as i64);
                }
                self.bytes = want * UNIT;
                true
            }
            Err(_) => false,
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if let Some(g) = &self.budget.held {
            g.dec_by(self.bytes as i64);
        }
    }
}

/// A body read whole, with the charge that pays for it.
#[derive(Debug)]
pub struct Held {
    /// The bytes as they came (still encoded).
    pub bytes: Vec<u8>,
    /// Returned to the budget when the request drops it.
    pub charge: Charge,
}

/// How a body read can fail, before it becomes an [`ApiError`] (the caller decides what it
/// counts).
#[derive(Debug)]
pub enum BodyError {
    /// Larger than `max_body_bytes`.
    TooLarge,
    /// The budget of bodies in memory is spent.
    Saturated,
    /// Not all of it arrived within the read timeout.
    Timeout(Duration),
    /// The connection failed or the framing was malformed (a client abort, a bad chunk).
    Unreadable(String),
}

impl BodyError {
    /// The answer for this failure.
    pub fn to_api(&self, max_body_bytes: usize) -> ApiError {
        match self {
            BodyError::TooLarge => too_large(max_body_bytes),
            BodyError::Saturated => saturated(),
            BodyError::Timeout(t) => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!("the body did not arrive within {t:?}"),
            ),
            BodyError::Unreadable(why) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "unreadable_body",
                format!("the body could not be read: {why}"),
            ),
        }
    }
}

/// `413 too_large`.
pub fn too_large(max_body_bytes: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("body is larger than max_body_bytes ({max_body_bytes})"),
    )
}

/// `429 saturated` (with `Retry-After`).
pub fn saturated() -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "saturated",
        "too many ingest requests or request bytes in progress, or waiting for the store; retry shortly",
    )
}

/// The declared `Content-Length`, if it is one number.
pub fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
}

/// Reads the whole body: at most `max` bytes, within `timeout`, charged to `budget` as it
/// arrives. The buffer grows by doubling (never past the declared `Content-Length`, when there
/// is one) and each growth is charged before it is made: a client is charged for what it has
/// sent, not for what it announces, so sockets that announce large bodies and then stall
/// cannot spend the budget of everyone else.
///
/// A body that does not fit in the budget is still read to its end, into nothing, before
/// [`BodyError::Saturated`] is returned: a client that writes its whole request before it
/// reads the answer (most do) then gets the `429` and its `Retry-After` rather than a reset
/// connection.
pub async fn read(
    budget: &Budget,
    headers: &HeaderMap,
    body: Body,
    max: usize,
    timeout: Duration,
) -> Result<Held, BodyError> {
    let declared = declared_length(headers);
    if declared.is_some_and(|n| n > max) {
        return Err(BodyError::TooLarge);
    }
    let ceiling = declared.unwrap_or(max);
    let mut charge = budget.charge();
    let mut bytes = Vec::new();
    // Bytes received so far; once the budget ran out (`keep` false) they are dropped.
    let mut received = 0usize;
    let mut keep = true;
    let collect = async {
        let mut body = body;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BodyError::Unreadable(cause_chain(&e)))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let need = received + data.len();
            if need > max {
                return Err(BodyError::TooLarge);
            }
            received = need;
            if !keep {
                continue;
            }
            if need > bytes.capacity() {
                let cap = need
                    .max(bytes.capacity().saturating_mul(2))
                    .min(ceiling.max(need));
                if !charge.cover(cap) {
                    keep = false;
                    bytes = Vec::new();
                    continue;
                }
                bytes.reserve_exact(cap - bytes.len());
            }
            bytes.extend_from_slice(&data);
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, collect).await {
        Ok(Ok(())) if keep => Ok(Held { bytes, charge }),
        Ok(Ok(())) => Err(BodyError::Saturated),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(BodyError::Timeout(timeout)),
    }
}

/// An error with its causes, `: `-separated (hyper's own message is often just "error
/// reading a body from connection").
fn cause_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// A large answer sent a slice at a time, holding `G` (a permit) until the last slice has
/// been taken. Handed over whole, hyper would take the answer in one frame and drop the body
/// at once, so neither the permit nor the connection's "answer in progress" would last while
/// the bytes are still waiting for a slow client.
pub struct Sliced<G> {
    rest: axum::body::Bytes,
    _guard: G,
}

/// Bytes of one slice of a [`Sliced`] answer.
const SLICE: usize = 64 * 1024;

impl<G> Sliced<G> {
    /// `bytes`, holding `guard`.
    pub fn new(bytes: impl Into<axum::body::Bytes>, guard: G) -> Self {
        Sliced {
            rest: bytes.into(),
            _guard: guard,
        }
    }
}

impl<G: Unpin> http_body::Body for Sliced<G> {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if self.rest.is_empty() {
            return std::task::Poll::Ready(None);
        }
        let n = self.rest.len().min(SLICE);
        let slice = self.rest.split_to(n);
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(slice))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.rest.len() as u64)
    }
}

/// An answer's body that holds `G` (a guard: the end of a request, a permit) until the body
/// is done or dropped.
pub struct Guarded<G> {
    inner: Body,
    _guard: G,
}

impl<G> Guarded<G> {
    /// `inner`, holding `guard`.
    pub fn new(inner: Body, guard: G) -> Self {
        Guarded {
            inner,
            _guard: guard,
        }
    }
}

impl<G: Unpin> http_body::Body for Guarded<G> {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use axum::body::Bytes;
    use http_body::Frame;

    use super::*;

    /// A body that yields the given chunks, then ends.
    struct Chunks(VecDeque<Result<Bytes, std::io::Error>>);

    impl http_body::Body for Chunks {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(self.0.pop_front().map(|c| c.map(Frame::data)))
        }
    }

    fn chunks(c: Vec<Result<Bytes, std::io::Error>>) -> Body {
        Body::new(Chunks(c.into()))
    }

    #[test]
    fn the_exported_gauge_follows_the_charges() {
        let gauge = Gauge::default();
        let b = Budget::new(10 * UNIT).exported(gauge.clone());
        let mut one = b.charge();
        assert!(one.cover(UNIT + 1));
        assert_eq!(gauge.get(), 2 * UNIT as i64);
        let mut two = b.charge();
        assert!(two.cover(3 * UNIT));
        assert!(!two.cover(20 * UNIT), "a refused growth charges nothing");
        assert_eq!(gauge.get(), 5 * UNIT as i64);
        drop(one);
        assert_eq!(gauge.get(), 3 * UNIT as i64);
        drop(two);
        assert_eq!(gauge.get(), 0);
    }

    #[test]
    fn a_charge_grows_within_the_budget_and_returns_on_drop() {
        let b = Budget::new(10 * UNIT);
        let mut one = b.charge();
        assert!(one.cover(3 * UNIT));
        assert!(one.cover(2 * UNIT), "covering less than held is free");
        let mut two = b.charge();
        assert!(two.cover(7 * UNIT));
        assert!(!two.cover(8 * UNIT), "beyond the budget");
        assert_eq!(b.in_use(), 10 * UNIT);
        drop(one);
        assert!(two.cover(8 * UNIT));
        drop(two);
        assert_eq!(b.in_use(), 0);
    }

    #[test]
    fn odd_sizes_round_up_to_the_unit() {
        let b = Budget::new(2 * UNIT);
        let mut c = b.charge();
        assert!(c.cover(1));
        assert!(c.cover(UNIT));
        assert!(c.cover(UNIT + 1));
        assert!(!c.cover(2 * UNIT + 1));
    }

    #[tokio::test]
    async fn a_chunked_body_is_charged_as_it_grows() {
        let b = Budget::new(64 * UNIT);
        let body = chunks((0..40).map(|_| Ok(vec![b'x'; UNIT].into())).collect());
        let held = read(&b, &HeaderMap::new(), body, 1 << 20, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(held.bytes.len(), 40 * UNIT);
        assert!(b.in_use() >= 40 * UNIT && b.in_use() <= 64 * UNIT);
        drop(held);
        assert_eq!(b.in_use(), 0);

        let body = chunks((0..100).map(|_| Ok(vec![b'x'; UNIT].into())).collect());
        let err = read(&b, &HeaderMap::new(), body, 1 << 20, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, BodyError::Saturated), "{err:?}");
        assert_eq!(b.in_use(), 0, "a refused body gives its charge back");
    }

    #[tokio::test]
    async fn a_failing_stream_is_unreadable_not_too_large() {
        let b = Budget::new(64 * UNIT);
        let body = chunks(vec![
            Ok(vec![b'x'; 10].into()),
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "peer went away",
            )),
        ]);
        let err = read(&b, &HeaderMap::new(), body, 1 << 20, Duration::from_secs(5))
            .await
            .unwrap_err();
        match err {
            BodyError::Unreadable(why) => assert!(why.contains("peer went away"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
