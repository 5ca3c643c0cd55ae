//! A compiled load generator for `POST /v1/admit`: admits per second and the latency of each
//! answer, measured by the client (`bench/admit.py` starts daemons and runs it).
//!
//! ```text
//! cargo build --release --example admit_load
//! target/release/examples/admit_load --addr 127.0.0.1:9747 [--addr ...] [--clients 256] [--seconds 15] [--orgs 100] [--path /v1/admit]
//! ```
//!
//! Each client keeps one HTTP/1.1 connection (to the `--addr` given in turn, for several
//! replicas) and asks for one request of org `org-N` (N = client % `--orgs`) at a time,
//! waiting for each answer; it times every answer. Prints asks/s, granted and refused counts,
//! and p50/p99/p99.9/max latency. Standard library only; `RATEWARDEN_INGEST_TOKEN` is sent as
//! a bearer token when set. `--path` posts the same body elsewhere (a baseline: `/healthz`
//! answers every POST `405` at once, the cost of the HTTP stack alone).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

struct Args {
    addrs: Vec<String>,
    clients: usize,
    seconds: u64,
    orgs: usize,
    path: String,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        addrs: Vec::new(),
        clients: 256,
        seconds: 15,
        orgs: 100,
        path: "/v1/admit".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--addr" => a.addrs.push(value),
            "--clients" => a.clients = number(&value)?.max(1) as usize,
            "--seconds" => a.seconds = number(&value)?.max(1),
            "--orgs" => a.orgs = number(&value)?.max(1) as usize,
            "--path" => a.path = value,
            other => return Err(format!("unknown option {other}")),
        }
    }
    if a.addrs.is_empty() {
        return Err("--addr HOST:PORT is required".into());
    }
    Ok(a)
}

/// Posts `body` and reads the answer; its status.
fn post(
    stream: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    head: &str,
    body: &[u8],
    answer: &mut Vec<u8>,
) -> std::io::Result<u16> {
    let mut request = Vec::with_capacity(head.len() + 32 + body.len());
    request.extend_from_slice(head.as_bytes());
    request.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    request.extend_from_slice(body);
    stream.write_all(&request)?;
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
    answer.resize(length, 0);
    reader.read_exact(answer)?;
    Ok(status)
}

/// What one client saw: answer times (µs) by status class.
#[derive(Default)]
struct Seen {
    micros: Vec<u32>,
    granted: u64,
    refused: u64,
    other: u64,
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("admit_load: {e}");
            std::process::exit(2);
        }
    };
    let token = std::env::var("RATEWARDEN_INGEST_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let clients: Vec<_> = (0..a.clients)
        .map(|c| {
            let addr = a.addrs[c % a.addrs.len()].clone();
            let head = format!(
                "POST {} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{token}",
                a.path
            );
            let body = format!(
                r#"{{"org":"org-{}","app":"load","requests":1}}"#,
                c % a.orgs
            );
            let stop = stop.clone();
            std::thread::spawn(move || -> std::io::Result<Seen> {
                let mut stream = TcpStream::connect(&addr)?;
                stream.set_nodelay(true)?;
                let mut reader = BufReader::new(stream.try_clone()?);
                let mut seen = Seen::default();
                let mut answer = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let status = post(
                        &mut stream,
                        &mut reader,
                        &head,
                        body.as_bytes(),
                        &mut answer,
                    )?;
                    seen.micros
                        .push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                    match status {
                        200 => seen.granted += 1,
                        429 => seen.refused += 1,
                        _ => seen.other += 1,
                    }
                }
                Ok(seen)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(a.seconds));
    stop.store(true, Ordering::Relaxed);
    let mut all = Seen::default();
    let mut failed = false;
    for c in clients {
        match c.join().map_err(|_| std::io::Error::other("panicked")) {
            Ok(Ok(s)) => {
                all.micros.extend(s.micros);
                all.granted += s.granted;
                all.refused += s.refused;
                all.other += s.other;
            }
            Ok(Err(e)) | Err(e) => {
                eprintln!("admit_load: a client failed: {e}");
                failed = true;
            }
        }
    }
    let wall = started.elapsed().as_secs_f64();
    all.micros.sort_unstable();
    let q = |p: f64| -> f64 {
        let n = all.micros.len();
        if n == 0 {
            return 0.0;
        }
        let i = ((n as f64 * p).ceil() as usize).clamp(1, n) - 1;
        f64::from(all.micros[i]) / 1000.0
    };
    let n = all.micros.len();
    println!(
        "admit_load: {n} asks in {wall:.1} s = {:.0} asks/s ({} clients, {} daemons, {} orgs); granted {}, refused {}, other {}; latency ms p50 {:.3} p99 {:.3} p99.9 {:.3} max {:.3}",
        n as f64 / wall,
        a.clients,
        a.addrs.len(),
        a.orgs,
        all.granted,
        all.refused,
        all.other,
        q(0.50),
        q(0.99),
        q(0.999),
        q(1.0),
    );
    if failed {
        std::process::exit(1);
    }
}
