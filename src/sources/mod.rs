//! Sources: where events come from besides `POST /v1/events`.
//!
//! [`file`](mod@file) tails log files (SPEC §3 `[[sources.file]]`); their bytes become events through
//! the one intake path, [`crate::events::intake`]. Sources only read and parse; they hand events to [`Live`] together with the
//! checkpoint those events reach, and never count anything themselves. Each file source runs
//! on its own thread (file I/O blocks): [`Sources`] builds them, [`Running`] owns the threads
//! and stops them.

pub mod file;
mod health;
pub mod limits;
mod replica;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::config::Config;
use crate::live::{Live, Recovery};
use crate::metrics::Metrics;
pub use health::Health;
pub use replica::Replica;

/// Clears the flag when the thread ends, panics included.
struct ReadyWhileRunning(Arc<Health>);

impl Drop for ReadyWhileRunning {
    fn drop(&mut self) {
        self.0.ready.store(false, Ordering::Release);
    }
}

/// The configured sources, built and not started: each file source holds its checkpoints.
/// [`Sources::start`] runs them.
pub struct Sources {
    built: Vec<(file::FileSource, Arc<Health>)>,
}

/// The running sources, stopped by [`Running::stop`].
pub struct Running {
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    health: Vec<Arc<Health>>,
}

impl Sources {
    /// Every configured file source, resuming from the recovered checkpoints; on a replica
    /// of a cluster, `replica` is the shared engine that holds them.
    pub fn new(
        config: &Config,
        live: &Live,
        metrics: &Arc<Metrics>,
        recovery: &Recovery,
        replica: Option<Replica>,
    ) -> Sources {
        let built = config
            .sources
            .iter()
            .map(|cfg| {
                let started = recovery.started_sources.contains(&cfg.name);
                let source = file::FileSource::new(
                    cfg.clone(),
                    live.clone(),
                    metrics.clone(),
                    &recovery.checkpoints,
                    started,
                );
                let source = match &replica {
                    Some(r) => source.on_replica(r.clone()),
                    None => source,
                };
                let health = Arc::new(Health {
                    name: cfg.name.clone(),
                    ready: AtomicBool::new(false),
                });
                (source, health)
            })
            .collect();
        Sources { built }
    }

    /// Readiness of each source (not ready until it has run its first scan).
    pub fn health(&self) -> Vec<Arc<Health>> {
        self.built.iter().map(|(_, h)| h.clone()).collect()
    }

    /// Starts a thread per source. When a thread cannot be started, those already running are
    /// stopped and joined before the error is returned.
    pub fn start(self) -> std::io::Result<Running> {
        let mut running = Running {
            threads: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            health: Vec::new(),
        };
        for (source, h) in self.built {
            let (stop_flag, flag) = (running.stop.clone(), h.clone());
            let name = flag.name.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("source-{name}"))
                .spawn(move || {
                    let _running = ReadyWhileRunning(flag.clone());
                    source.run(stop_flag, &flag);
                });
            match spawned {
                Ok(t) => running.threads.push(t),
                Err(e) => {
                    running.stop();
                    return Err(e);
                }
            }
            running.health.push(h);
        }
        Ok(running)
    }
}

impl Running {
    /// True when every source finished its first scan and is running.
    pub fn ready(&self) -> bool {
        self.health.iter().all(|h| h.ready.load(Ordering::Acquire))
    }

    /// Stops every source and waits for its thread.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        for t in &self.threads {
            t.thread().unpark();
        }
        for t in self.threads {
            if t.join().is_err() {
                tracing::error!("a file source panicked");
            }
        }
    }
}
