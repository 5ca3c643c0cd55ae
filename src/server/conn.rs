//! Connections: accepting clients, bounding how many are open, and closing the ones that
//! hold a socket without using it, before any of them reaches the API or its tokens.
//!
//! * At most `max_connections` are served at once (the open-file limit, raised to its hard
//!   limit at start, sizes the default). Past that, a small lane of [`LANE`] more answers only
//!   `/healthz`, `/readyz` and `/metrics`, one request each and with a short head deadline, so
//!   health checks and scrapes get through while hostile or idle clients fill the rest; past
//!   the lane, a connection is closed at once.
//! * A request's head must arrive within `header_read_timeout` of its first byte (a client
//!   that sends a partial header and waits, "slowloris", is cut off); a connection with no
//!   request in progress and no bytes moving is closed after `idle_timeout`; an answer must be
//!   taken within `write_timeout` once it is ready (a client that reads a large answer a few
//!   bytes at a time would otherwise hold its memory for as long as it likes).
//!
//! The deadlines are kept by a watchdog per connection that looks at two facts the socket and
//! the service report: when bytes last moved, and whether a request is in progress (from the
//! head's arrival until the answer's body has been written).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Request, Response};

use super::tls::{Reloading, Web};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// Connections beyond `max_connections` that may still ask for health or metrics.
pub const LANE: usize = 32;
/// How long a lane connection may take to send its request head.
const LANE_HEAD: Duration = Duration::from_millis(1_000);
/// How often a connection's deadlines are checked.
const WATCH_EVERY: Duration = Duration::from_millis(100);

/// The connection limits (`[server]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A request head must arrive within this long of its first byte.
    pub header_read_timeout: Duration,
    /// Idle connections are closed after this.
    pub idle_timeout: Duration,
    /// An answer must be taken within this long once it is ready.
    pub write_timeout: Duration,
    /// Most connections served at once.
    pub max_connections: usize,
}

/// Raises the soft open-file limit to the hard one and returns the limit in force.
pub fn raise_open_files() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    }
}

/// The default `max_connections` for an open-file limit: what is left after the store, the
/// tailed files and outbound connections, which the margin leaves room for.
pub fn default_max_connections(open_files: u64) -> usize {
    usize::try_from(open_files.saturating_sub(256).max(64)).unwrap_or(usize::MAX)
}

/// What connections are answered with: the API, and the spare lane's routes. The daemon
/// hands over a new pair when start-up is done (recovering, then running); each request is
/// answered by the pair current when it arrives.
#[derive(Clone)]
pub struct Routers {
    /// Connections within `max_connections`.
    pub app: Router,
    /// The spare lane beyond them ([`LANE`]).
    pub lane: Router,
}

/// Serves `routers` on `listener` within `limits` (and the lane beyond them) until `stop`
/// turns true; then every connection finishes its request in progress and closes.
pub async fn serve(
    listener: TcpListener,
    routers: watch::Receiver<Routers>,
    limits: Limits,
    web: Web,
    mut stop: watch::Receiver<bool>,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let spare = Arc::new(Semaphore::new(LANE));
    let lane_limits = Limits {
        header_read_timeout: LANE_HEAD,
        idle_timeout: LANE_HEAD,
        write_timeout: limits.write_timeout,
        max_connections: LANE,
    };
    let mut connections = tokio::task::JoinSet::new();
    let mut refused: u64 = 0;
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            a = listener.accept() => a,
            // Reap finished connections as they go, so the set stays small.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait a moment rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if let Ok(permit) = open.clone().try_acquire_owned() {
            connections.spawn(connection(
                stream,
                (routers.clone(), false),
                web.clone(),
                limits,
                true,
                stop.clone(),
                permit,
            ));
        } else if let Ok(permit) = spare.clone().try_acquire_owned() {
            connections.spawn(connection(
                stream,
                (routers.clone(), true),
                web.clone(),
                lane_limits,
                false,
                stop.clone(),
                permit,
            ));
        } else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    refused,
                    max_connections = limits.max_connections,
                    "connection limit reached; closing new connections"
                );
            }
        }
    }
    while connections.join_next().await.is_some() {}
}

/// What the watchdog knows about one connection.
#[derive(Debug)]
struct Activity {
    start: Instant,
    /// Milliseconds since `start` when bytes last moved.
    last_io_ms: AtomicU64,
    /// Milliseconds since `start` when a request head began arriving, +1 (0 = none pending).
    head_since_ms: AtomicU64,
    /// Requests between head and the end of their answer.
    in_progress: AtomicUsize,
    /// Milliseconds since `start` when the answer in progress was ready, +1 (0 = none).
    answer_since_ms: AtomicU64,
    /// Set when the connection is cut off mid-answer: its socket is then reset, not closed,
    /// so the bytes still queued for the slow client are dropped at once.
    abort: std::sync::atomic::AtomicBool,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn bytes_moved(&self, read: bool) {
        let now = self.now_ms();
        self.last_io_ms.store(now, Ordering::Relaxed);
        if read && self.in_progress.load(Ordering::Acquire) == 0 {
            let _ = self.head_since_ms.compare_exchange(
                0,
                now + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    fn request_started(&self) {
        self.in_progress.fetch_add(1, Ordering::AcqRel);
        self.head_since_ms.store(0, Ordering::Release);
    }

    fn answer_ready(&self) {
        self.answer_since_ms
            .store(self.now_ms() + 1, Ordering::Release);
    }

    fn request_ended(&self) {
        self.answer_since_ms.store(0, Ordering::Release);
        self.in_progress.fetch_sub(1, Ordering::AcqRel);
        self.last_io_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Why the connection should close now, if it should.
    fn expired(&self, limits: &Limits) -> Option<&'static str> {
        let now = self.now_ms();
        if self.in_progress.load(Ordering::Acquire) > 0 {
            let answer = self.answer_since_ms.load(Ordering::Acquire);
            let late = answer > 0
                && now.saturating_sub(answer - 1) >= limits.write_timeout.as_millis() as u64;
            return late.then_some("answer not taken in time");
        }
        let head = self.head_since_ms.load(Ordering::Acquire);
        if head > 0 && now.saturating_sub(head - 1) >= limits.header_read_timeout.as_millis() as u64
        {
            return Some("request head not received in time");
        }
        let idle = now.saturating_sub(self.last_io_ms.load(Ordering::Relaxed));
        (head == 0 && idle >= limits.idle_timeout.as_millis() as u64).then_some("idle")
    }
}

async fn connection(
    stream: TcpStream,
    (routers, lane): (watch::Receiver<Routers>, bool),
    web: Web,
    limits: Limits,
    keep_alive: bool,
    stop: watch::Receiver<bool>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity {
        start: Instant::now(),
        last_io_ms: AtomicU64::new(0),
        head_since_ms: AtomicU64::new(1),
        in_progress: AtomicUsize::new(0),
        answer_since_ms: AtomicU64::new(0),
        abort: std::sync::atomic::AtomicBool::new(false),
    });
    let watched = Watched {
        inner: stream,
        activity: activity.clone(),
    };
    let service = hyper_util::service::TowerToHyperService::new(Tracked {
        routers,
        lane,
        activity: activity.clone(),
        headers: web.headers.clone(),
    });
    let connection = Connection {
        limits,
        keep_alive,
        stop,
        activity,
    };
    match &web.tls {
        None => connection.drive(watched, service).await,
        Some(tls) => {
            if let Some(stream) = handshake(watched, tls, limits.header_read_timeout).await {
                connection.drive(stream, service).await;
            }
        }
    }
}

/// Go's answer to a plain HTTP request on a TLS port (net/http), so a mistaken `http://`
/// gets a readable reason rather than a reset.
const PLAIN_ON_TLS: &[u8] = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// A TLS record starts with this content type (handshake; RFC 8446 §5.1).
const TLS_HANDSHAKE: u8 = 0x16;

/// The TLS handshake, within `deadline` (a client that opens and waits is cut like a slow
/// request head); `None` when it fails (logged by [`handshake_failed`]).
async fn handshake(
    mut stream: Watched,
    tls: &Reloading,
    deadline: Duration,
) -> Option<tokio_rustls::server::TlsStream<Watched>> {
    use tokio::io::AsyncWriteExt;
    let shake = async {
        let mut first = [0u8; 1];
        if stream.inner.peek(&mut first).await.ok()? == 0 {
            return None;
        }
        if first[0] != TLS_HANDSHAKE {
            tracing::debug!("a plain HTTP request on the TLS port; answered 400");
            let _ = stream.inner.write_all(PLAIN_ON_TLS).await;
            let _ = stream.inner.shutdown().await;
            return None;
        }
        let acceptor =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
        let start = match acceptor.await {
            Ok(s) => s,
            Err(e) => {
                handshake_failed(&e);
                return None;
            }
        };
        match start.into_stream(tls.config()).await {
            Ok(s) => Some(s),
            Err(e) => {
                handshake_failed(&e);
                None
            }
        }
    };
    tokio::time::timeout(deadline, shake).await.ok().flatten()
}

/// Failed handshakes so far.
static HANDSHAKES_FAILED: AtomicU64 = AtomicU64::new(0);

/// Logs a failed TLS handshake: the 1st, 2nd, 4th, 8th... at warn (a client that cannot
/// connect, a certificate rustls refuses, should be visible without debug logs; scanners
/// must not flood the log), every one at debug.
fn handshake_failed(e: &std::io::Error) {
    let n = HANDSHAKES_FAILED.fetch_add(1, Ordering::Relaxed) + 1;
    if n.is_power_of_two() {
        tracing::warn!(error = %e, failed_so_far = n, "TLS handshake failed");
    } else {
        tracing::debug!(error = %e, "TLS handshake failed");
    }
}

/// One accepted connection's settings, for serving HTTP on whatever stream it turned into.
struct Connection {
    limits: Limits,
    keep_alive: bool,
    stop: watch::Receiver<bool>,
    activity: Arc<Activity>,
}

impl Connection {
    async fn drive<S>(
        mut self,
        stream: S,
        service: hyper_util::service::TowerToHyperService<Tracked>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (limits, activity) = (self.limits, self.activity.clone());
        let io = TokioIo::new(stream);
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            // hyper's own deadline backs ours up (it also runs while a keep-alive connection waits).
            .header_read_timeout(limits.header_read_timeout.max(limits.idle_timeout))
            .keep_alive(self.keep_alive);
        let conn = builder.serve_connection(io, service);
        tokio::pin!(conn);
        let mut watch = tokio::time::interval(WATCH_EVERY);
        let mut stopping = false;
        loop {
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = self.stop.changed(), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = watch.tick() => {
                    if let Some(why) = activity.expired(&limits) {
                        tracing::debug!(why, "closing a connection");
                        if activity.in_progress.load(Ordering::Acquire) > 0 {
                            activity.abort.store(true, Ordering::Release);
                        }
                        return;
                    }
                }
            }
        }
    }
}

/// The socket, reporting when bytes move.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_moved(true);
        }
        r
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if self.activity.abort.load(Ordering::Acquire) {
            // A reset discards what the kernel still holds for this client (up to the send
            // buffer, megabytes); a close would keep sending it for as long as the client reads.
            let _ = self.inner.set_zero_linger();
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.bytes_moved(false);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The API, reporting when a request is in progress: from its head until its answer's body
/// is done (or dropped).
#[derive(Clone)]
struct Tracked {
    routers: watch::Receiver<Routers>,
    lane: bool,
    activity: Arc<Activity>,
    headers: Arc<[(HeaderName, HeaderValue)]>,
}

impl tower::Service<Request<Incoming>> for Tracked {
    type Response = Response<Body>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        self.activity.request_started();
        let guard = InProgress(self.activity.clone());
        let mut router = {
            let r = self.routers.borrow();
            if self.lane {
                r.lane.clone()
            } else {
                r.app.clone()
            }
        };
        let activity = self.activity.clone();
        let headers = self.headers.clone();
        Box::pin(async move {
            let mut resp = tower::Service::call(&mut router, req.map(Body::new)).await?;
            // A header the route set itself stays (the status page's own
            // Content-Security-Policy allows its inline script; a site-wide one would not).
            for (name, value) in headers.iter() {
                resp.headers_mut()
                    .entry(name.clone())
                    .or_insert_with(|| value.clone());
            }
            activity.answer_ready();
            Ok(resp.map(|body| Body::new(super::body::Guarded::new(body, guard))))
        })
    }
}

/// Marks the end of a request when dropped.
struct InProgress(Arc<Activity>);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines() {
        let limits = Limits {
            header_read_timeout: Duration::from_millis(50),
            idle_timeout: Duration::from_millis(200),
            write_timeout: Duration::from_millis(100),
            max_connections: 16,
        };
        let a = Activity {
            start: Instant::now() - Duration::from_secs(1),
            last_io_ms: AtomicU64::new(1_000),
            head_since_ms: AtomicU64::new(0),
            in_progress: AtomicUsize::new(0),
            answer_since_ms: AtomicU64::new(0),
            abort: std::sync::atomic::AtomicBool::new(false),
        };
        assert_eq!(a.expired(&limits), None, "fresh and idle");
        a.bytes_moved(true);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(
            a.expired(&limits),
            Some("request head not received in time")
        );
        a.request_started();
        assert_eq!(
            a.expired(&limits),
            None,
            "a request in progress is never cut"
        );
        a.request_ended();
        std::thread::sleep(Duration::from_millis(210));
        assert_eq!(a.expired(&limits), Some("idle"));
        a.request_started();
        a.answer_ready();
        assert_eq!(a.expired(&limits), None, "an answer being taken");
        std::thread::sleep(Duration::from_millis(110));
        assert_eq!(a.expired(&limits), Some("answer not taken in time"));
    }
}
