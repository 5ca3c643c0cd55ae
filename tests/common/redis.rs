//! A real `redis-server` (Debian's; `scripts/test` installs it) on a free loopback port, in a
//! temporary directory, stopped and reaped when dropped.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Reaped, free_port};

/// A running Redis.
pub struct Redis {
    pub port: u16,
    _process: Reaped,
}

impl Redis {
    /// Starts Redis in `dir` with `extra` arguments (`--requirepass`, `--appendonly yes`…);
    /// returns once it answers `PING` (with the password, when one is set).
    pub fn start(dir: &Path, extra: &[&str]) -> Redis {
        let mut last = String::new();
        // The port is free when picked; another process may take it before Redis binds.
        for _ in 0..5 {
            let port = free_port();
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
                    return Redis {
                        port,
                        _process: process,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("redis-server did not start: {last}");
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
