//! A compiled load generator for `POST /v1/events`, so that the figure measures the daemon and
//! not the client (`bench/ingest.py post` is bound by Python first).
//!
//! ```text
//! cargo build --release --example post_load
//! target/release/examples/post_load --addr 127.0.0.1:9747 [--clients 4] [--seconds 15] [--batch 1000] [--timestamps clock|fixed]
//! ```
//!
//! Each client keeps one HTTP/1.1 connection and posts NDJSON bodies of `--batch` events (50
//! orgs, 5 apps, 5 % 429s), waiting for each answer: every `202` means the batch is
//! committed. Prints events/s and the answers that were not `202`.
//!
//! `--timestamps clock` (the default) stamps every event of a body with the millisecond it is
//! sent, as a shipper flushing what just happened does; clients interleave, so some events
//! still come a few milliseconds late. `--timestamps fixed` posts the same second of the
//! minute before the start over and over, so after the first bodies every event is late for
//! its org: the worst case of the late-event path, not the common one.
//!
//! Standard library only; `RATEWARDEN_INGEST_TOKEN` is sent as a bearer token when set.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Args {
    addr: String,
    clients: usize,
    seconds: u64,
    batch: usize,
    clock: bool,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        addr: String::new(),
        clients: 4,
        seconds: 15,
        batch: 1000,
        clock: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--addr" => a.addr = value,
            "--clients" => a.clients = number(&value)?.max(1) as usize,
            "--seconds" => a.seconds = number(&value)?.max(1),
            "--batch" => a.batch = number(&value)?.max(1) as usize,
            "--timestamps" => {
                a.clock = match value.as_str() {
                    "clock" => true,
                    "fixed" => false,
                    v => return Err(format!("--timestamps {v}: expected clock or fixed")),
                }
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if a.addr.is_empty() {
        return Err("--addr HOST:PORT is required".into());
    }
    Ok(a)
}

/// Digits of a Unix-ms timestamp until 2286: fixed, so a body's stamps can be rewritten in place.
const TS_DIGITS: usize = 13;

/// A body of NDJSON events and where each event's `ts` digits are.
struct Body {
    bytes: Vec<u8>,
    stamps: Vec<usize>,
}

impl Body {
    /// Writes `ms` (13 digits) over every event's `ts`.
    fn stamp(&mut self, ms: u128) {
        let digits = format!("{ms:0TS_DIGITS$}");
        for &at in &self.stamps {
            self.bytes[at..at + TS_DIGITS].copy_from_slice(digits.as_bytes());
        }
    }
}

/// Unix time now, ms.
fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// `count` bodies of `batch` events each, stamped one ms apart from a minute before `now_ms`
/// (clock mode stamps each again as it is sent).
fn bodies(count: usize, batch: usize, now_ms: u128) -> Vec<Body> {
    (0..count)
        .map(|b| {
            let mut body = Vec::with_capacity(batch * 100);
            let mut stamps = Vec::with_capacity(batch);
            for k in 0..batch {
                let n = b * batch + k;
                let status = if k % 20 == 0 { 429 } else { 200 };
                let ts = now_ms - 60_000 + (k % 60_000) as u128;
                stamps.push(body.len() + r#"{"ts":"#.len());
                let _ = writeln!(
                    body,
                    r#"{{"ts":{ts},"org":"org-{}","app":"app-{}","status":{status},"latency_ms":300}}"#,
                    n % 50,
                    k % 5
                );
            }
            Body {
                bytes: body,
                stamps,
            }
        })
        .collect()
}

/// Posts `body` and reads the answer; its status.
fn post(
    stream: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    head: &str,
    body: &[u8],
) -> std::io::Result<u16> {
    stream.write_all(format!("{head}Content-Length: {}\r\n\r\n", body.len()).as_bytes())?;
    stream.write_all(body)?;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {line:?}")))?;
    let mut length = 0usize;
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut answer = vec![0; length];
    reader.read_exact(&mut answer)?;
    Ok(status)
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("post_load: {e}");
            std::process::exit(2);
        }
    };
    // Each client posts its own share of the bodies (it rewrites their stamps).
    let mut shares: Vec<Vec<Body>> = (0..a.clients).map(|_| Vec::new()).collect();
    for (i, body) in bodies(64.max(a.clients), a.batch, now_ms())
        .into_iter()
        .enumerate()
    {
        shares[i % a.clients].push(body);
    }
    let token = std::env::var("RATEWARDEN_INGEST_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let head = Arc::new(format!(
        "POST /v1/events HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-ndjson\r\n{token}",
        a.addr
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let events = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let clients: Vec<_> = shares
        .into_iter()
        .map(|mut bodies| {
            let (head, stop, clock) = (head.clone(), stop.clone(), a.clock);
            let (events, refused, addr, batch) = (
                events.clone(),
                refused.clone(),
                a.addr.clone(),
                a.batch as u64,
            );
            std::thread::spawn(move || -> std::io::Result<()> {
                let mut stream = TcpStream::connect(&addr)?;
                stream.set_nodelay(true)?;
                let mut reader = BufReader::new(stream.try_clone()?);
                for i in (0..bodies.len()).cycle() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let body = &mut bodies[i];
                    if clock {
                        body.stamp(now_ms());
                    }
                    match post(&mut stream, &mut reader, &head, &body.bytes)? {
                        202 => events.fetch_add(batch, Ordering::Relaxed),
                        _ => refused.fetch_add(1, Ordering::Relaxed),
                    };
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(a.seconds));
    stop.store(true, Ordering::Relaxed);
    let mut failed = false;
    for c in clients {
        if let Ok(Err(e)) | Err(e) = c.join().map_err(|_| std::io::Error::other("panicked")) {
            eprintln!("post_load: a client failed: {e}");
            failed = true;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let n = events.load(Ordering::Relaxed);
    println!(
        "post_load: {n} events in {wall:.1} s = {:.0} events/s ({} clients, {} events per body); {} answers other than 202",
        n as f64 / wall,
        a.clients,
        a.batch,
        refused.load(Ordering::Relaxed)
    );
    if failed {
        std::process::exit(1);
    }
}
