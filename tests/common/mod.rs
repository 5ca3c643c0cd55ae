//! Starting and stopping the real binary for black-box tests.

#![allow(dead_code)]

pub mod dashboard;
pub mod redis;
pub mod upstream;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A port nothing listens on right now, for a server a test starts (the OS picks it; the
/// listener is closed again at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A server process a test started: killed and reaped when dropped, so a failing test
/// leaves nothing running.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Path of the built binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ratewarden")
}

/// Runs the binary to completion.
pub fn run(args: &[&str], dir: &Path) -> Output {
    Command::new(bin())
        .args(args)
        .current_dir(dir)
        .env_remove("RATEWARDEN_CONFIG")
        .output()
        .expect("binary runs")
}

/// A running daemon; killed on drop if still alive.
pub struct Daemon {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts `ratewarden run --config FILE` in `dir` and waits until it listens and is ready.
    pub fn start(dir: &Path, config: &str, env: &[(&str, &str)]) -> Daemon {
        Daemon::try_start(dir, config, env)
            .unwrap_or_else(|log| panic!("daemon did not start:\n{log}"))
    }

    /// Like [`Daemon::start`] but returns the log on failure.
    pub fn try_start(dir: &Path, config: &str, env: &[(&str, &str)]) -> Result<Daemon, String> {
        Daemon::try_start_with(dir, config, env, &[])
    }

    /// Like [`Daemon::try_start`] with more arguments to `run` (`--recover`).
    pub fn try_start_with(
        dir: &Path,
        config: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Result<Daemon, String> {
        Daemon::try_start_probed(dir, config, env, args, &|base| {
            http_status(&format!("{base}/readyz")) == Some(200)
        })
    }

    /// Like [`Daemon::try_start_with`], judging readiness by `ready(base)` (a TLS listener
    /// needs a TLS client); `base` is `http://ADDR`.
    pub fn try_start_probed(
        dir: &Path,
        config: &str,
        env: &[(&str, &str)],
        args: &[&str],
        ready: &dyn Fn(&str) -> bool,
    ) -> Result<Daemon, String> {
        let path: PathBuf = dir.join("ratewarden.toml");
        std::fs::write(&path, config).expect("config written");
        let mut cmd = Command::new(bin());
        cmd.args(["--log-format", "json", "run", "--config"])
            .arg(&path)
            .args(args)
            .current_dir(dir)
            .env_remove("RATEWARDEN_CONFIG")
            .env_remove("RATEWARDEN_INGEST_TOKEN")
            .env_remove("RATEWARDEN_ADMIN_TOKEN")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("daemon spawns");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let mut reader = Some(std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        }));
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut daemon = Daemon {
            child,
            base: String::new(),
            log,
        };
        while Instant::now() < deadline {
            if let Ok(Some(_)) = daemon.child.try_wait() {
                // Its standard error ends with it: every line it wrote is read.
                if let Some(r) = reader.take() {
                    let _ = r.join();
                }
                return Err(daemon.log_text());
            }
            if daemon.base.is_empty()
                && let Some(addr) = daemon
                    .find_log("listening")
                    .and_then(|v| v["fields"]["addr"].as_str().map(str::to_string))
            {
                daemon.base = format!("http://{addr}");
            }
            if !daemon.base.is_empty() && ready(&daemon.base) {
                return Ok(daemon);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(daemon.log_text())
    }

    /// `POST /v1/events` without a token, as NDJSON; the status and the answer's body.
    pub fn post_events(&self, body: &str) -> (u16, String) {
        self.post_body("application/x-ndjson", body.as_bytes())
    }

    /// `POST /v1/events` of raw bytes with a content type, without a token.
    pub fn post_body(&self, content_type: &str, body: &[u8]) -> (u16, String) {
        http(
            "POST",
            &format!("{}/v1/events", self.base),
            &[("Content-Type", content_type)],
            body,
        )
        .expect("the daemon answers")
    }

    /// The first JSON log line whose message contains `needle`.
    pub fn find_log(&self, needle: &str) -> Option<serde_json::Value> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| {
                v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(needle))
            })
    }

    /// Everything logged so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The exit code once the process has ended (-1 for a signal), `None` while it runs.
    pub fn exited(&mut self) -> Option<i32> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.code().unwrap_or(-1)),
            _ => None,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`: no chance to flush anything.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits up to `limit` for the exit code.
    pub fn terminate(&mut self, limit: Duration) -> Option<i32> {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Minimal HTTP/1.1 client over std, so black-box tests need no async runtime.
pub fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut stream = match std::net::TcpStream::connect(host) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("connect {host}: {e}");
            return None;
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    let mut resp = Vec::new();
    if let Err(e) = stream.read_to_end(&mut resp) {
        eprintln!("read {url}: {e} after {} bytes", resp.len());
        return None;
    }
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Status of a GET, if the server answers.
pub fn http_status(url: &str) -> Option<u16> {
    http("GET", url, &[], b"").map(|(s, _)| s)
}

/// GET `/metrics` and parse one sample, `None` if absent or unreachable.
pub fn metric(base: &str, series: &str) -> Option<f64> {
    http("GET", &format!("{base}/metrics"), &[], b"").and_then(|(_, body)| sample(&body, series))
}

/// `POST /v1/batches` with `body` (no token); asserts `201` and answers the batch's id.
#[allow(dead_code)]
pub fn create_batch(d: &Daemon, body: &str) -> String {
    let (status, answer) = http(
        "POST",
        &format!("{}/v1/batches", d.base),
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 201, "{answer}");
    serde_json::from_str::<serde_json::Value>(&answer).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The one fixed wait tests take: a window in which something must *not* happen (nothing
/// sent twice, no alert, no line read), named by `what` so a failure says what was watched.
/// Everything else polls a condition with [`eventually`] (or a loop with a deadline).
pub fn observe(window: Duration, what: &str) {
    eprintln!("observing for {window:?}: {what}");
    std::thread::sleep(window);
}

/// A peer that is slow on purpose (an upstream that takes its time, a client that reads a
/// little at a time) waits here: not a test waiting for something, but the behaviour under
/// test. `who` names the peer.
#[allow(dead_code)]
pub fn pace(period: Duration, who: &str) {
    let _ = who;
    std::thread::sleep(period);
}

/// One number read from a running daemon's store in `dir` (WAL mode lets a reader in), or
/// `None` while it cannot be read: for waiting on what the store has committed.
#[allow(dead_code)]
pub fn store_value(dir: &Path, sql: &str) -> Option<i64> {
    let db = rusqlite::Connection::open_with_flags(
        dir.join("ratewarden-data/state.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .ok()?;
    db.query_row(sql, [], |r| r.get(0)).ok()
}

/// Polls `f` until it returns `Some`, for at most `secs`.
pub fn eventually<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of the first sample line starting with `series` (`name{labels}`) in `metrics`.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A tool installed by `scripts/test` (Debian's prometheus, promtool, amtool...), by its path.
pub fn tool(name: &str) -> String {
    installed(name).unwrap_or_else(|| panic!("{name} is not installed; scripts/test installs it"))
}

/// The path of `name` if it is installed where `scripts/test` puts it.
pub fn installed(name: &str) -> Option<String> {
    ["/usr/bin", "/usr/local/bin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.exists())
        .map(|p| p.display().to_string())
}

/// A real Prometheus, stopped when dropped.
pub struct Prometheus {
    _process: Reaped,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

/// Starts Prometheus in `dir` with `config` as its `prometheus.yml` (paths in it relative to
/// `dir`) on a free port, and waits until it is ready.
pub fn start_prometheus(dir: &Path, config: &str) -> Prometheus {
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let child = Command::new(tool("prometheus"))
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus starts");
    let base = format!("http://127.0.0.1:{port}");
    assert!(
        eventually(30, || (http_status(&format!("{base}/-/ready"))
            == Some(200))
        .then_some(()))
        .is_some(),
        "prometheus ready"
    );
    Prometheus {
        _process: Reaped(child),
        base,
    }
}
