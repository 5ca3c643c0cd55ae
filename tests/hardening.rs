//! Black-box: the real binary against hostile and careless clients on loopback — sockets that
//! send half a header and wait, bodies that never finish, connections left idle.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Daemon, http};

fn addr(d: &Daemon) -> String {
    d.base.trim_start_matches("http://").to_string()
}

/// Sockets that each sent `bytes` and then nothing.
fn stalled(d: &Daemon, n: usize, bytes: &[u8]) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| {
            let mut s = TcpStream::connect(addr(d)).ok()?;
            s.write_all(bytes).ok()?;
            Some(s)
        })
        .collect()
}

/// How long until `GET path` answers 200 on a new connection, trying for at most 10 s.
fn time_to_answer(d: &Daemon, path: &str) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if let Some((200, _)) = http("GET", &format!("{}{path}", d.base), &[], b"") {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// True when the server closed `s` (read returns end of stream or an answer then the end).
fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

const PARTIAL: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ";

#[test]
fn half_sent_headers_cannot_take_the_daemon_down() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        dir.path(),
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_connections = 32\nheader_read_timeout = \"1s\"\n",
        &[],
    );
    // Many more half-sent heads than connections: the regular pool and the spare lane fill up.
    let mut stalled = stalled(&d, 200, PARTIAL);
    assert!(stalled.len() >= 150, "{} sockets connected", stalled.len());
    // Health and metrics still answer (through the lane once its own stalled heads are cut).
    let healthz = time_to_answer(&d, "/healthz").expect("/healthz answers");
    let metrics = time_to_answer(&d, "/metrics").expect("/metrics answers");
    assert!(healthz < Duration::from_secs(3), "{healthz:?}");
    assert!(metrics < Duration::from_secs(3), "{metrics:?}");
    // The stalled sockets are cut after header_read_timeout, and ingest works again.
    assert!(closed_by_server(&mut stalled[0], Duration::from_secs(3)));
    let ingest = Instant::now();
    loop {
        let answer = http(
            "POST",
            &format!("{}/v1/events", d.base),
            &[("Content-Type", "application/x-ndjson")],
            br#"{"org":"acme","status":200}"#,
        );
        if let Some((202, _)) = answer {
            break;
        }
        assert!(ingest.elapsed() < Duration::from_secs(5), "{answer:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_connection_that_sends_nothing_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        dir.path(),
        "[server]\nlisten = \"127.0.0.1:0\"\nheader_read_timeout = \"1s\"\nidle_timeout = \"1s\"\n",
        &[],
    );
    // Connected, silent: cut after the head deadline.
    let mut silent = TcpStream::connect(addr(&d)).unwrap();
    assert!(closed_by_server(&mut silent, Duration::from_secs(3)));
    // A keep-alive connection after its answer, then idle: cut after the idle timeout.
    let mut idle = TcpStream::connect(addr(&d)).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    assert!(closed_by_server(&mut idle, Duration::from_secs(4)));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "kept until idle"
    );
}

#[test]
fn slow_bodies_hold_no_ingest_slot_and_get_408() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        dir.path(),
        "[server]\nlisten = \"127.0.0.1:0\"\nbody_read_timeout = \"2s\"\n",
        &[],
    );
    // More slow bodies than ingest slots (64): each announces 1000 bytes and sends 8.
    let head = b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nContent-Length: 1000\r\n\r\n{\"org\":";
    let mut slow = stalled(&d, 80, head);
    assert_eq!(slow.len(), 80);
    std::thread::sleep(Duration::from_millis(300));
    // Everyone else is served.
    let (status, body) = d.post_events(r#"{"org":"acme","status":200}"#);
    assert_eq!(status, 202, "{body}");
    // The slow ones are answered 408 once the body deadline passes.
    slow[0]
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = String::new();
    let _ = slow[0].read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
}
