//! Sources: where events come from besides `POST /v1/events`.
//!
//! [`file`](mod@file) tails log files (SPEC §3 `[[sources.file]]`); their bytes become events through
//! the one intake path, [`crate::events::intake`]. Sources only read and parse; they hand events to [`Live`] together with the
//! checkpoint those events reach, and never count anything themselves. Each file source runs
//! on its own thread (file I/O blocks); [`Sources`] owns the threads and stops them.

pub mod file;
mod health;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::config::Config;
use crate::live::{Live, Recovery};
use crate::metrics::Metrics;
pub use health::Health;

/// Clears the flag when the thread ends, panics included.
struct Running(Arc<Health>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.ready.store(false, Ordering::Release);
    }
}

/// The running sources.
pub struct Sources {
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    health: Vec<Arc<Health>>,
}

impl Sources {
    /// Starts every configured file source, resuming from the recovered checkpoints.
    pub fn start(
        config: &Config,
        live: &Live,
        metrics: &Arc<Metrics>,
        recovery: &Recovery,
    ) -> std::io::Result<Sources> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut health = Vec::new();
        for cfg in &config.sources {
            let started = recovery.started_sources.contains(&cfg.name);
            let source = file::FileSource::new(
                cfg.clone(),
                live.clone(),
                metrics.clone(),
                &recovery.checkpoints,
                started,
            );
            let h = Arc::new(Health {
                name: cfg.name.clone(),
                ready: AtomicBool::new(false),
            });
            let (stop_flag, flag) = (stop.clone(), h.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("source-{}", cfg.name))
                .spawn(move || {
                    let _running = Running(flag.clone());
                    source.run(&stop_flag, &flag);
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    // Stop the sources already running rather than leave them behind.
                    Sources {
                        threads,
                        stop,
                        health,
                    }
                    .stop();
                    return Err(e);
                }
            }
            health.push(h);
        }
        Ok(Sources {
            threads,
            stop,
            health,
        })
    }

    /// Readiness of each source.
    pub fn health(&self) -> Vec<Arc<Health>> {
        self.health.clone()
    }

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
