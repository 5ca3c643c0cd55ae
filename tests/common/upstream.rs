//! A fake rate-limited upstream API over raw TCP: enforces an rpm and a concurrency limit with
//! 429 + Retry-After, runs async jobs that finish after a while, and can be told to misbehave
//! (429, 5xx, 400, slow answers, dropped connections) for the next requests.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What to do with one creating request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Misbehave {
    /// 429, with this Retry-After in seconds if any.
    TooMany(Option<u64>),
    /// 503.
    ServerError,
    /// 400 with an error body.
    BadRequest,
    /// Close the connection without answering.
    Drop,
    /// Answer normally after this long.
    Slow(Duration),
    /// 307 to this URL.
    Redirect(String),
}

/// A creating request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub key: Option<String>,
    pub authorization: Option<String>,
    pub body: String,
    pub status: u16,
}

#[derive(Default)]
struct State {
    rpm: usize,
    concurrency: usize,
    job: Duration,
    times: VecDeque<Instant>,
    jobs: HashMap<String, Instant>,
    script: VecDeque<Misbehave>,
    seen: Vec<Seen>,
    limited_429: usize,
    max_in_flight: usize,
    /// Job ids to hand out next (a hostile upstream's), before the usual `vid_N`.
    ids: VecDeque<String>,
    /// Status polls as seen: (path, Authorization).
    gets: Vec<(String, Option<String>)>,
    /// Connections being answered now.
    answering: usize,
}

/// Counts a connection as being answered until it is dropped.
struct Answering<'a>(&'a Mutex<State>);

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        if let Ok(mut st) = self.0.lock() {
            st.answering -= 1;
        }
    }
}

/// The fake upstream; stops when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    accepter: Option<std::thread::JoinHandle<()>>,
}

fn respond(mut s: &TcpStream, status: u16, extra: &str, body: &str) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        429 => "Too Many Requests",
        _ => "Service Unavailable",
    };
    let _ = s.write_all(
        format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
}

impl Upstream {
    /// Limits: `rpm` requests per rolling minute, `concurrency` unfinished jobs; a job
    /// finishes `job` after it was created.
    pub fn start(rpm: usize, concurrency: usize, job: Duration) -> Upstream {
        Upstream::start_on("127.0.0.1:0".parse().unwrap(), rpm, concurrency, job)
    }

    /// Like [`Upstream::start`] on a given address (to come back on the same port).
    pub fn start_on(addr: SocketAddr, rpm: usize, concurrency: usize, job: Duration) -> Upstream {
        let listener = TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            rpm,
            concurrency,
            job,
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, halt) = (state.clone(), stop.clone());
        let accepter = std::thread::spawn(move || {
            // Blocks in accept; `Drop` wakes it with a connection of its own after setting
            // the flag.
            for stream in listener.incoming() {
                if halt.load(Ordering::Acquire) {
                    break;
                }
                if let Ok(stream) = stream {
                    let st = st.clone();
                    std::thread::spawn(move || handle(stream, &st));
                }
            }
        });
        Upstream {
            addr,
            state,
            stop,
            accepter: Some(accepter),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next creating requests misbehave like this, in order.
    pub fn script(&self, steps: &[Misbehave]) {
        self.state
            .lock()
            .unwrap()
            .script
            .extend(steps.iter().cloned());
    }

    /// The next created jobs get these ids.
    pub fn hand_out_ids(&self, ids: &[&str]) {
        self.state
            .lock()
            .unwrap()
            .ids
            .extend(ids.iter().map(|s| s.to_string()));
    }

    /// Status polls received: (path, Authorization header).
    pub fn gets(&self) -> Vec<(String, Option<String>)> {
        self.state.lock().unwrap().gets.clone()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// 429s the limits themselves caused (not scripted ones).
    pub fn limited(&self) -> usize {
        self.state.lock().unwrap().limited_429
    }

    /// Connections being answered right now (a slow answer counts until it is written).
    pub fn answering(&self) -> usize {
        self.state.lock().unwrap().answering
    }

    pub fn max_in_flight(&self) -> usize {
        self.state.lock().unwrap().max_in_flight
    }
}

impl Drop for Upstream {
    /// Stops accepting and closes the listener before returning, so the port is free for an
    /// upstream that comes back on it.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accepter.take() {
            let _ = t.join();
        }
    }
}

fn handle(stream: TcpStream, state: &Mutex<State>) {
    state.lock().unwrap().answering += 1;
    let _answering = Answering(state);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    let _ = reader.read_exact(&mut body);
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let now = Instant::now();

    if method == "GET" {
        state
            .lock()
            .unwrap()
            .gets
            .push((path.to_string(), headers.get("authorization").cloned()));
        let id = path.rsplit('/').next().unwrap_or("").to_string();
        let started = state.lock().unwrap().jobs.get(&id).copied();
        let job = state.lock().unwrap().job;
        return match started {
            None => respond(&stream, 404, "", r#"{"error":{"code":"not_found"}}"#),
            Some(t) => {
                let status = if now.duration_since(t) >= job {
                    "completed"
                } else {
                    "in_progress"
                };
                respond(
                    &stream,
                    200,
                    "",
                    &format!(r#"{{"id":"{id}","status":"{status}"}}"#),
                )
            }
        };
    }

    let mut st = state.lock().unwrap();
    let scripted = st.script.pop_front();
    let record = |st: &mut State, status: u16| {
        st.seen.push(Seen {
            at: now,
            key: headers.get("idempotency-key").cloned(),
            authorization: headers.get("authorization").cloned(),
            body: String::from_utf8_lossy(&body).into_owned(),
            status,
        })
    };
    match scripted {
        Some(Misbehave::Drop) => {
            record(&mut st, 0);
            return; // the stream is dropped: connection closed without an answer
        }
        Some(Misbehave::TooMany(ra)) => {
            record(&mut st, 429);
            drop(st);
            let extra = ra.map_or(String::new(), |s| format!("Retry-After: {s}\r\n"));
            return respond(
                &stream,
                429,
                &extra,
                r#"{"error":{"code":"rate_limit_exceeded"}}"#,
            );
        }
        Some(Misbehave::ServerError) => {
            record(&mut st, 503);
            drop(st);
            return respond(&stream, 503, "", r#"{"error":{"code":"overloaded"}}"#);
        }
        Some(Misbehave::BadRequest) => {
            record(&mut st, 400);
            drop(st);
            return respond(
                &stream,
                400,
                "",
                r#"{"error":{"code":"invalid_prompt","message":"prompt rejected"}}"#,
            );
        }
        Some(Misbehave::Redirect(to)) => {
            record(&mut st, 307);
            drop(st);
            return respond(&stream, 307, &format!("Location: {to}\r\n"), "");
        }
        Some(Misbehave::Slow(d)) => {
            drop(st);
            super::pace(d, "a slow upstream");
            st = state.lock().unwrap();
        }
        None => {}
    }
    // The limits, as a real API enforces them.
    while st
        .times
        .front()
        .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
    {
        st.times.pop_front();
    }
    st.times.push_back(now);
    let job = st.job;
    let in_flight = st
        .jobs
        .values()
        .filter(|t| now.duration_since(**t) < job)
        .count();
    if st.times.len() > st.rpm || in_flight >= st.concurrency {
        st.limited_429 += 1;
        record(&mut st, 429);
        drop(st);
        return respond(
            &stream,
            429,
            "Retry-After: 2\r\n",
            r#"{"error":{"code":"rate_limit_exceeded"}}"#,
        );
    }
    let id = st
        .ids
        .pop_front()
        .unwrap_or_else(|| format!("vid_{}", st.jobs.len()));
    st.jobs.insert(id.clone(), now);
    st.max_in_flight = st.max_in_flight.max(in_flight + 1);
    record(&mut st, 200);
    drop(st);
    respond(
        &stream,
        200,
        "",
        &serde_json::json!({"id": id, "status": "queued"}).to_string(),
    );
}
