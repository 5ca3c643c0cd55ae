//! `ratewarden run`: wires the long-running pieces and owns their shutdown.
//!
//! [`run`] binds the listener, starts the HTTP server and the clock ticker, and waits for the
//! `shutdown` future (SIGTERM/SIGINT in `main`, a channel in tests). Then it stops intake,
//! lets in-flight requests finish, stops the ticker and returns within the deadline. Every
//! task it spawns is joined before it returns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::server::{ApiState, Tokens, router};

/// How often live gauges, stuck jobs and alert states advance with the wall clock.
const TICK: Duration = Duration::from_secs(1);
/// Time allowed for in-flight requests after shutdown begins (SPEC §2: exit within 10 s).
const DRAIN: Duration = Duration::from_secs(8);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address from `[server].listen`.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A non-loopback listen address without tokens.
    #[error(
        "refusing to listen on {addr} without {missing}: set the variable(s) or \
         `allow_unauthenticated = true` in [server]"
    )]
    Unauthenticated {
        /// Address from `[server].listen`.
        addr: SocketAddr,
        /// Which tokens are missing.
        missing: String,
    },
    /// The server failed while running.
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// Refuses a non-loopback listen address that has no ingest or admin token (SPEC §6).
pub fn check_exposure(config: &Config, tokens: &Tokens) -> Result<(), DaemonError> {
    let addr = config.server.listen;
    if addr.ip().is_loopback() || config.server.allow_unauthenticated {
        return Ok(());
    }
    let mut missing = Vec::new();
    if !tokens.ingest.is_set() {
        missing.push(format!(
            "an ingest token (${})",
            config
                .server
                .ingest_token_env
                .as_deref()
                .unwrap_or("ingest_token_env")
        ));
    }
    if !tokens.admin.is_set() {
        missing.push(format!(
            "an admin token (${})",
            config
                .server
                .admin_token_env
                .as_deref()
                .unwrap_or("admin_token_env")
        ));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(DaemonError::Unauthenticated {
            addr,
            missing: missing.join(" and "),
        })
    }
}

/// A daemon bound to its socket, ready to serve.
pub struct Daemon {
    listener: TcpListener,
    state: ApiState,
}

impl Daemon {
    /// Validates exposure and binds the listener, with the wall clock.
    pub async fn bind(config: &Config) -> Result<Daemon, DaemonError> {
        Daemon::bind_with(
            config,
            Tokens::from_env(&config.server),
            Arc::new(SystemClock),
        )
        .await
    }

    /// Binds with explicit tokens and clock (tests).
    pub async fn bind_with(
        config: &Config,
        tokens: Tokens,
        clock: Arc<dyn Clock>,
    ) -> Result<Daemon, DaemonError> {
        check_exposure(config, &tokens)?;
        let addr = config.server.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Bind { addr, source })?;
        let state = ApiState::new(config, tokens, clock);
        Ok(Daemon { listener, state })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `shutdown` resolves, then drains and returns.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), DaemonError> {
        let Daemon { listener, state } = self;
        let (stop_tx, stop_rx) = watch::channel(false);

        let ticker = {
            let live = state.live.clone();
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(TICK);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = every.tick() => live.tick(),
                        _ = stop.changed() => break,
                    }
                }
            })
        };

        let app = router(state.clone());
        let mut server_stop = stop_rx.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = server_stop.changed().await;
                })
                .await
        });

        state.ready.store(true, Ordering::Release);
        tracing::info!("ready (state is kept in memory in this version)");

        shutdown.await;
        tracing::info!("shutting down: no new requests, finishing those in progress");
        state.ready.store(false, Ordering::Release);
        let _ = stop_tx.send(true);

        let result = match tokio::time::timeout(DRAIN, server).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(DaemonError::Serve(e)),
            Ok(Err(join)) => Err(DaemonError::Serve(std::io::Error::other(join))),
            Err(_) => {
                tracing::warn!("requests still open after {DRAIN:?}; closing them");
                Ok(())
            }
        };
        let _ = ticker.await;
        tracing::info!("stopped");
        result
    }
}

/// Runs the daemon on `config` until `shutdown` resolves.
pub async fn run(
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    let daemon = Daemon::bind(config).await?;
    if let Some(addr) = daemon.local_addr() {
        tracing::info!(%addr, "listening");
    }
    daemon.run(shutdown).await
}
