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

/// Waits until the daemon holds at least `bytes` of request bodies (its
/// `ratewarden_http_body_bytes_held` gauge says so), for at most 5 s.
fn held_at_least(d: &Daemon, bytes: u64) {
    let held = common::eventually(5, || {
        let (_, m) = http("GET", &format!("{}/metrics", d.base), &[], b"")?;
        let held = common::sample(&m, "ratewarden_http_body_bytes_held")?;
        (held >= bytes as f64).then_some(held)
    });
    assert!(
        held.is_some(),
        "the daemon never held {bytes} bytes of bodies"
    );
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
    // Once the daemon holds what they sent (1 KiB charged each), they compete with others.
    held_at_least(&d, 80 * 1024);
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

#[test]
fn an_upstream_answer_never_chooses_where_the_api_key_goes() {
    use common::upstream::Upstream;
    let api = Upstream::start(1200, 100, Duration::from_secs(3600));
    // Where a hostile job id would send the key: another port on this host.
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    let other = elsewhere.local_addr().unwrap().port();
    let hostile = format!("@127.0.0.1:{other}/x");
    api.hand_out_ids(&[&hostile, "../../admin", ".."]);
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[tiers.t]
rpm = 600
concurrency = 10
[[orgs]]
id = "acme"
tier = "t"
[[upstreams]]
name = "api"
base_url = "{}"
api_key_env = "T_UP_KEY"
org = "acme"
[upstreams.poll]
status_path = "/v1/videos/{{id}}"
id_field = "id"
status_field = "status"
done = ["completed"]
failed = ["failed"]
interval = "100ms"
"#,
        api.url()
    );
    let d = Daemon::start(dir.path(), &config, &[("T_UP_KEY", "sk-secret-key")]);
    let body = r#"{"upstream":"api","mode":"asap","requests":[{"path":"/v1/videos"},{"path":"/v1/videos"},{"path":"/v1/videos"}]}"#;
    let batch = common::create_batch(&d, body);
    // Each id goes into the path as one percent-encoded segment.
    let want = [
        format!("/v1/videos/%40127.0.0.1%3A{other}%2Fx"),
        "/v1/videos/..%2F..%2Fadmin".to_string(),
    ];
    let polled = common::eventually(10, || {
        let paths: Vec<String> = api.gets().into_iter().map(|(p, _)| p).collect();
        want.iter().all(|w| paths.contains(w)).then_some(paths)
    });
    assert!(polled.is_some(), "{:?}", api.gets());
    // An id that cannot be one segment (`..`) is never polled: its item fails, saying why,
    // and its job stops holding a slot.
    let unpollable = common::eventually(10, || {
        let (_, rows) = http(
            "GET",
            &format!("{}/v1/batches/{batch}/items", d.base),
            &[],
            b"",
        )?;
        rows.lines()
            .find(|l| l.contains("cannot be polled"))
            .map(str::to_string)
    });
    let row = unpollable.unwrap_or_else(|| panic!("{}", d.log_text()));
    assert!(row.contains(r#""state":"failed""#), "{row}");
    assert!(
        api.gets().iter().all(|(p, _)| !p.ends_with("/..")),
        "{:?}",
        api.gets()
    );
    assert!(
        api.gets()
            .iter()
            .all(|(_, auth)| auth.as_deref() == Some("Bearer sk-secret-key")),
        "the key went to the configured host only"
    );
    // An answer that redirects is not followed: the item fails with it.
    api.script(&[common::upstream::Misbehave::Redirect(format!(
        "http://127.0.0.1:{other}/stolen"
    ))]);
    let body = r#"{"upstream":"api","mode":"asap","requests":[{"path":"/v1/videos"}]}"#;
    let id = common::create_batch(&d, body);
    let failed = common::eventually(10, || {
        let (_, rows) = http(
            "GET",
            &format!("{}/v1/batches/{id}/items", d.base),
            &[],
            b"",
        )?;
        rows.contains("redirects are not followed").then_some(rows)
    });
    assert!(failed.is_some(), "{}", d.log_text());
    assert!(
        elsewhere.accept().is_err(),
        "nothing connected to the other port"
    );
}

#[test]
fn credentials_stay_out_of_errors_logs_and_the_store() {
    // A webhook whose URL is a credential, pointing at a port where nothing listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let hook = format!("http://127.0.0.1:{port}/services/T0SECRET/B0SECRET?token=TOPSECRET");
    let dir = tempfile::tempdir().unwrap();
    let config = "[server]\nlisten = \"127.0.0.1:0\"\n[tiers.t]\nconcurrency = 1\n[limits]\ndefault_tier = \"t\"\n\
                  [[alerts.webhook]]\nname = \"hook\"\nurl_env = \"T_HOOK_URL\"\n[alerts]\nretry_base = \"100ms\"\nretry_cap = \"200ms\"\n";
    let d = Daemon::start(dir.path(), config, &[("T_HOOK_URL", &hook)]);
    // A job fills the org's one slot: UsageHigh fires and its delivery fails.
    assert_eq!(
        d.post_events(r#"{"org":"acme","status":202,"job_id":"j"}"#)
            .0,
        202
    );
    let alerts = common::eventually(10, || {
        let (_, a) = http("GET", &format!("{}/v1/alerts", d.base), &[], b"").unwrap();
        a.contains(r#""last_error":{"#).then_some(a)
    })
    .expect("a failed delivery is shown");
    for secret in ["TOPSECRET", "T0SECRET", "B0SECRET"] {
        assert!(!alerts.contains(secret), "{alerts}");
        assert!(!d.log_text().contains(secret), "{}", d.log_text());
    }
    drop(d);
    let stored = std::fs::read(dir.path().join("ratewarden-data/state.sqlite")).unwrap();
    let wal =
        std::fs::read(dir.path().join("ratewarden-data/state.sqlite-wal")).unwrap_or_default();
    for secret in [&b"TOPSECRET"[..], b"T0SECRET"] {
        assert!(!stored.windows(secret.len()).any(|w| w == secret));
        assert!(!wal.windows(secret.len()).any(|w| w == secret));
    }
    // check-config refuses a base_url with a password in it, and says why without it.
    std::fs::write(
        dir.path().join("bad.toml"),
        "[[upstreams]]\nname = \"u\"\nbase_url = \"https://user:hunter2@api.example.com\"\norg = \"acme\"\n",
    )
    .unwrap();
    let out = common::run(&["check-config", "bad.toml"], dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("user:password@") && !err.contains("hunter2"),
        "{err}"
    );
    // A status path that would put the job id where the host is.
    std::fs::write(
        dir.path().join("bad.toml"),
        "[[upstreams]]\nname = \"u\"\nbase_url = \"https://api.example.com\"\norg = \"acme\"\n\
         [upstreams.poll]\nstatus_path = \"{id}\"\nid_field = \"id\"\nstatus_field = \"s\"\ndone = [\"d\"]\nfailed = [\"f\"]\n",
    )
    .unwrap();
    let out = common::run(&["check-config", "bad.toml"], dir.path());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("status_path must start with /"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes a whole request (head and body) on a new connection and reads the whole answer.
fn exchange(d: &Daemon, head: &str, body: &[u8]) -> String {
    let mut s = TcpStream::connect(addr(d)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn bodies_beyond_max_inflight_bytes_get_429_and_count_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        dir.path(),
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = 100000\nmax_inflight_bytes = 150000\n",
        &[],
    );
    // Bodies are charged for what they sent, not for what they announce: 20 sockets that
    // announce the maximum and stall hold next to nothing, and others are served.
    let _announced = stalled(
        &d,
        20,
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nContent-Length: 100000\r\n\r\n{\"org\":",
    );
    held_at_least(&d, 20 * 1024);
    let (status, body) = d.post_events(r#"{"org":"small","status":200}"#);
    assert_eq!(status, 202, "{body}");
    // One body that really sent 99 000 of its 100 000 bytes holds that much of the 150 000.
    let mut holder = TcpStream::connect(addr(&d)).unwrap();
    holder
        .write_all(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nContent-Length: 100000\r\n\r\n")
        .unwrap();
    holder.write_all(&vec![b' '; 99_000]).unwrap();
    held_at_least(&d, 99_000);
    // A second body of 60 000 bytes does not fit: the client writes all of it, then reads a
    // clean 429 with Retry-After (not a reset), and none of its events count.
    let line = "{\"org\":\"late\",\"status\":200}\n";
    let body = line.repeat(60_000 / line.len());
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let answer = exchange(&d, &head, body.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert!(answer.contains("saturated"), "{answer}");
    let (_, usage) = http("GET", &format!("{}/v1/usage", d.base), &[], b"").unwrap();
    assert!(!usage.contains("\"late\""), "{usage}");
    // Sent without Content-Length (chunked), it is refused the same way as it grows.
    let mut chunked = String::new();
    for part in body.as_bytes().chunks(8192) {
        chunked.push_str(&format!(
            "{:x}\r\n{}\r\n",
            part.len(),
            String::from_utf8_lossy(part)
        ));
    }
    chunked.push_str("0\r\n\r\n");
    let answer = exchange(
        &d,
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n",
        chunked.as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    // Once the first body is gone, the same request is taken whole.
    drop(holder);
    let taken = common::eventually(5, || {
        let answer = exchange(&d, &head, body.as_bytes());
        answer.starts_with("HTTP/1.1 202").then_some(answer)
    })
    .expect("accepted once the budget is free");
    assert!(
        taken.contains(&format!("\"accepted\":{}", 60_000 / line.len())),
        "{taken}"
    );
}

#[test]
fn a_malformed_chunked_body_or_an_abort_is_400_not_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), "[server]\nlisten = \"127.0.0.1:0\"\n", &[]);
    let answer = exchange(
        &d,
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"1c\r\n{\"org\":\"acme\",\"status\":200}\n\r\nzz\r\nnot a chunk\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("unreadable_body"), "{answer}");
    // A client that goes away half-way through its body.
    let mut gone = TcpStream::connect(addr(&d)).unwrap();
    gone.write_all(
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"org\":\"acme\"",
    )
    .unwrap();
    drop(gone);
    common::observe(
        Duration::from_millis(300),
        "the aborted body is not counted",
    );
    let metrics = common::eventually(5, || {
        http("GET", &format!("{}/metrics", d.base), &[], b"").map(|(_, m)| m)
    })
    .unwrap();
    let too_large = common::sample(
        &metrics,
        "ratewarden_events_rejected_total{source=\"http\",reason=\"too_large\"}",
    )
    .unwrap_or(0.0);
    assert_eq!(too_large, 0.0, "{metrics}");
    let (_, usage) = http("GET", &format!("{}/v1/usage", d.base), &[], b"").unwrap();
    assert!(!usage.contains("\"acme\""), "{usage}");
}

#[test]
fn a_webhook_that_redirects_is_not_followed() {
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    let other = elsewhere.local_addr().unwrap().port();
    let hook = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hook.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = hook.accept().unwrap();
        let mut buf = [0u8; 65536];
        let _ = s.read(&mut buf);
        let answer = format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{other}/stolen\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        s.write_all(answer.as_bytes()).unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.toml"),
        format!("[[alerts.webhook]]\nname = \"hook\"\nurl = \"http://127.0.0.1:{port}/hook?token=tok-secret\"\n"),
    )
    .unwrap();
    let out = common::run(&["alerts", "test", "--config", "c.toml"], dir.path());
    server.join().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("redirects are not followed"), "{text}");
    assert!(!text.contains("tok-secret"), "{text}");
    assert!(
        elsewhere.accept().is_err(),
        "nothing connected to the other port"
    );
}

#[test]
fn slow_readers_of_large_answers_are_cut_off_and_cannot_multiply_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        dir.path(),
        "[server]\nlisten = \"127.0.0.1:0\"\nwrite_timeout = \"2s\"\n\
         [limits]\nmax_new_orgs_per_second = 100000\nmax_orgs = 20000\n",
        &[],
    );
    // Enough series that /metrics is several MB: more than the socket buffers hold (an org
    // whose apps only succeed has about 8 series).
    let mut body = Vec::new();
    for org in 0..12_000 {
        for app in 0..3 {
            body.extend_from_slice(
                format!("{{\"org\":\"org-{org}\",\"app\":\"app-{app}\",\"status\":200}}\n")
                    .as_bytes(),
            );
        }
    }
    let answer = http(
        "POST",
        &format!("{}/v1/events", d.base),
        &[("Content-Type", "application/x-ndjson")],
        &body,
    );
    assert_eq!(answer.map(|a| a.0), Some(202));
    // Read whole: a reader starved for write_timeout (a busy machine) is cut off like the
    // slow ones below, so a short answer is asked again rather than taken for the size.
    let mut full = String::new();
    for _ in 0..5 {
        let (status, body) = http("GET", &format!("{}/metrics", d.base), &[], b"").unwrap();
        assert_eq!(status, 200);
        full = body;
        if full.len() > 6_000_000 {
            break;
        }
    }
    assert!(full.len() > 6_000_000, "/metrics is {} bytes", full.len());

    // Six clients ask and then read nothing: at most four answers are built and held at
    // once, and each is cut off write_timeout after it was ready.
    let asked = Instant::now();
    let mut readers: Vec<TcpStream> = (0..6)
        .map(|_| {
            // A small receive buffer, set before connecting, as a slow reader's would be:
            // otherwise loopback's (up to 32 MiB here) takes the whole answer at once.
            let sock =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            sock.set_recv_buffer_size(16 * 1024).unwrap();
            let to: std::net::SocketAddr = addr(&d).parse().unwrap();
            sock.connect(&to.into()).unwrap();
            let mut s: TcpStream = sock.into();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    // They read 4 KiB every 100 ms each (the whole answer would take minutes): each is cut
    // off write_timeout after its answer was ready, the last two once a turn freed up.
    let mut read = [0usize; 6];
    let mut ended = [false; 6];
    let mut buf = [0u8; 4096];
    while ended.iter().any(|e| !e) && asked.elapsed() < Duration::from_secs(20) {
        for (i, s) in readers.iter_mut().enumerate() {
            if ended[i] {
                continue;
            }
            s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
            match s.read(&mut buf) {
                Ok(0) => ended[i] = true,
                Ok(n) => read[i] += n,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => ended[i] = true,
                Err(_) => {}
            }
        }
        common::pace(Duration::from_millis(100), "six slow readers");
    }
    for i in 0..6 {
        assert!(ended[i], "reader {i} was cut off ({} bytes read)", read[i]);
        assert!(
            read[i] < full.len() / 2,
            "reader {i} read {} bytes",
            read[i]
        );
    }
    assert!(asked.elapsed() < Duration::from_secs(20));
    // A scraper that reads gets its whole answer again.
    let (status, again) = http("GET", &format!("{}/metrics", d.base), &[], b"").unwrap();
    assert_eq!(status, 200);
    assert!(again.len() > 6_000_000);
    assert!(!d.log_text().contains("panicked"), "{}", d.log_text());
}

/// A receiver that answers every request with an error quoting the request back, head and
/// all, as default error pages and debug endpoints do: `400` under `/v1/`, else `500`.
fn echo_server() -> (String, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        // Serves until the test's daemon stops calling; each connection is one request.
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let Ok((mut s, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&head).to_string();
            let status = if text.contains(" /v1/") {
                "400 Bad Request"
            } else {
                "500 Oops"
            };
            let body = format!("you sent: {text}");
            let _ = s.write_all(
                format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    (url, handle)
}

#[test]
fn credentials_a_receiver_echoes_back_are_scrubbed() {
    let (echo, _server) = echo_server();
    let hook = format!("{echo}/hook/SECRETPATH2?token=SECRETQ2");
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[tiers.t]\nconcurrency = 1\n[tiers.u]\nrpm = 600\n\
         [limits]\ndefault_tier = \"t\"\n[[orgs]]\nid = \"beta\"\ntier = \"u\"\n\
         [[alerts.webhook]]\nname = \"hook\"\nurl_env = \"T_HOOK_URL\"\n\
         [alerts]\nretry_base = \"100ms\"\nretry_cap = \"200ms\"\n\
         [[upstreams]]\nname = \"api\"\nbase_url = \"{echo}\"\napi_key_env = \"T_UP_KEY\"\norg = \"beta\"\n"
    );
    let d = Daemon::start(
        dir.path(),
        &config,
        &[("T_HOOK_URL", &hook), ("T_UP_KEY", "sk-SECRETKEY123")],
    );
    // UsageHigh fires; its delivery gets a 500 quoting the URL.
    assert_eq!(
        d.post_events(r#"{"org":"acme","status":202,"job_id":"j"}"#)
            .0,
        202
    );
    // A batch item gets a 400 quoting the Authorization header.
    let body = r#"{"upstream":"api","mode":"asap","requests":[{"path":"/v1/videos"}]}"#;
    let batch = common::create_batch(&d, body);
    let alerts = common::eventually(10, || {
        let (_, a) = http("GET", &format!("{}/v1/alerts", d.base), &[], b"").unwrap();
        a.contains("you sent").then_some(a)
    })
    .unwrap_or_else(|| panic!("a failed delivery quoting the request: {}", d.log_text()));
    let items = common::eventually(10, || {
        let (_, rows) = http(
            "GET",
            &format!("{}/v1/batches/{batch}/items", d.base),
            &[],
            b"",
        )?;
        rows.contains("you sent").then_some(rows)
    })
    .unwrap_or_else(|| panic!("a failed item quoting the request: {}", d.log_text()));
    assert!(items.contains("[redacted]"), "{items}");
    let log = d.log_text();
    for secret in ["SECRETPATH2", "SECRETQ2", "sk-SECRETKEY123"] {
        assert!(!alerts.contains(secret), "{secret} in {alerts}");
        assert!(!items.contains(secret), "{secret} in {items}");
        assert!(!log.contains(secret), "{secret} in {log}");
    }
    drop(d);
    let stored = std::fs::read(dir.path().join("ratewarden-data/state.sqlite")).unwrap();
    let wal =
        std::fs::read(dir.path().join("ratewarden-data/state.sqlite-wal")).unwrap_or_default();
    for secret in [&b"SECRETPATH2"[..], b"SECRETQ2", b"sk-SECRETKEY123"] {
        assert!(!stored.windows(secret.len()).any(|w| w == secret));
        assert!(!wal.windows(secret.len()).any(|w| w == secret));
    }
}
