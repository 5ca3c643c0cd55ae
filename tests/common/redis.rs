//! A real `redis-server` (Debian's; `scripts/test` installs it) on a free loopback port, in a
//! temporary directory, stopped and reaped when dropped.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Reaped, free_port};

/// A running Redis.
pub struct Redis {
    pub port: u16,
    process: Option<Reaped>,
    dir: std::path::PathBuf,
    extra: Vec<String>,
}

impl Redis {
    /// Starts Redis in `dir` with `extra` arguments (`--requirepass`, `--appendonly yes`…);
    /// returns once it answers `PING` (with the password, when one is set).
    pub fn start(dir: &Path, extra: &[&str]) -> Redis {
        let mut last = String::new();
        // The port is free when picked; another process may take it before Redis binds.
        for _ in 0..5 {
            match Redis::start_on(free_port(), dir, extra) {
                Ok(r) => return r,
                Err(e) => last = e,
            }
        }
        panic!("redis-server did not start: {last}");
    }

    /// Kills Redis (`SIGKILL`: what is not in its append-only file is lost).
    pub fn kill(&mut self) {
        self.process = None;
    }

    /// Starts Redis again on the same port and directory, after [`Redis::kill`].
    pub fn start_again(&mut self) {
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Redis::start_on(self.port, &self.dir, &extra) {
                Ok(mut r) => {
                    self.process = r.process.take();
                    return;
                }
                // The old socket may linger a moment.
                Err(e) if Instant::now() > deadline => panic!("redis-server did not restart: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn start_on(port: u16, dir: &Path, extra: &[&str]) -> Result<Redis, String> {
        let mut last = String::new();
        {
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(dir)
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("redis-server runs (scripts/test installs Debian's redis-server)");
            let mut process = Reaped(child);
            let password = extra
                .iter()
                .position(|a| *a == "--requirepass")
                .and_then(|i| extra.get(i + 1));
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = process.0.try_wait() {
                    last = format!("redis-server exited: {status}");
                    break;
                }
                if ping(port, password.copied()) {
                    return Ok(Redis {
                        port,
                        process: Some(process),
                        dir: dir.to_path_buf(),
                        extra: extra.iter().map(|s| s.to_string()).collect(),
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Err(last)
    }

    /// The server's process id (to stop and continue it).
    pub fn pid(&self) -> u32 {
        self.process.as_ref().map_or(0, |p| p.0.id())
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// Whether Redis on `port` answers `PING` with `PONG`.
fn ping(port: u16, password: Option<&str>) -> bool {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-p", &port.to_string(), "--no-auth-warning"]);
    if let Some(p) = password {
        cmd.args(["-a", p]);
    }
    cmd.arg("PING")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"PONG"))
}
