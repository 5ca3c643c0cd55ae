//! `ratewarden run`: wires the long-running pieces and owns their start-up and shutdown.
//!
//! Start-up: take the store's lock (a second daemon fails here), bind the listener, serve
//! `/healthz` at once, rebuild the state from the store, then start the clock ticker and the
//! sources and turn `/readyz` ready. Shutdown (the `shutdown` future: SIGTERM/SIGINT in
//! `main`, a channel in tests): not ready, stop accepting and finish requests in progress,
//! stop the sources, commit what is pending with a final snapshot, and return, all within the
//! 10 s of SPEC §2. Every task and thread started here is joined before [`Daemon::run`] returns.
//!
//! With `[cluster]` it also connects to the shared log, follows it (ready only once caught up
//! with it), gates delivery on the leader's lease, keeps or seeks that lease, and steps down
//! last at shutdown, after the final commit has marked what this replica delivered.

mod lease;
mod limits;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::alerts::{Delivering, Delivery};
use crate::clock::{Clock, SystemClock};
use crate::cluster::{Claim, ClusterSettings, EntryId, Leadership, SharedLog, SharedStore};
use crate::config::ClusterConfig;
use crate::config::Config;
use crate::live::{Live, RecoverError, Writer};
use crate::metrics::{Metrics, Recovering};
use crate::scheduler::Scheduler;
use crate::scheduler::dispatch::{Dispatcher, Dispatching};
use crate::server::{ApiState, Parts, Tokens, conn, lane_router, router, starting_router};
use crate::sources::{self, Sources};
use crate::store::sqlite::SqliteStore;
use crate::store::{StateStore, StoreError};

/// How often live gauges, stuck jobs and alert states advance with the wall clock.
const TICK: Duration = Duration::from_secs(1);
/// Time allowed for in-flight requests after shutdown begins; the rest of the 10 s budget is
/// for the final commit.
const DRAIN: Duration = Duration::from_secs(5);

/// Why the daemon could not start or stopped with an error.
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
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored state could not be recovered.
    #[error("recovering stored state: {0}")]
    Recover(#[from] RecoverError),
    /// A part of the daemon could not start (or its start-up task failed).
    #[error("cannot start {part}: {why}")]
    Start {
        /// What could not start.
        part: &'static str,
        /// Why.
        why: String,
    },
    /// The web config's TLS files do not load.
    #[error("{0}")]
    Web(String),
    /// The server failed while running.
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
    /// A notification channel cannot be set up (a missing secret, a bad CA file).
    #[error("{0}")]
    Channel(String),
    /// Another running instance uses this replica's `replica_id`.
    #[error(
        "another running ratewarden uses replica_id {replica:?} ({other}); each replica needs its own ([cluster] replica_id, default the host name)"
    )]
    ReplicaIdInUse {
        /// The id.
        replica: String,
        /// What the other instance noted about itself.
        other: String,
    },
}

/// Refuses a non-loopback listen address that has no ingest or admin token (SPEC §6).
pub fn check_exposure(config: &Config, tokens: &Tokens) -> Result<(), DaemonError> {
    let addr = config.server.listen;
    // Basic auth guards every route that a missing token would leave open.
    if addr.ip().is_loopback() || config.server.allow_unauthenticated || tokens.basic.is_some() {
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

/// A daemon that holds its store lock and its socket, ready to run.
pub struct Daemon {
    config: Config,
    listener: TcpListener,
    store: SqliteStore,
    tokens: Tokens,
    clock: Arc<dyn Clock>,
    /// `run --recover`: start from what can be read of a damaged store.
    salvage: bool,
    /// TLS and answer headers from the web config.
    web: crate::server::tls::Web,
}

/// Opens the store in `dir`; with `salvage`, a damaged one is moved aside and what can be
/// read of it copied into a new one (the log says what was kept and lost).
fn open_store(dir: &std::path::Path, salvage: bool) -> Result<SqliteStore, StoreError> {
    match SqliteStore::open(dir) {
        Err(StoreError::Damaged { path, why }) if salvage => {
            tracing::error!(store = %path, "run --recover: the store is damaged: {why}");
            salvaged(dir)
        }
        other => other,
    }
}

/// [`SqliteStore::salvage`], logged.
fn salvaged(dir: &std::path::Path) -> Result<SqliteStore, StoreError> {
    let (store, report) = SqliteStore::salvage(dir)?;
    for line in report {
        tracing::warn!("run --recover: {line}");
    }
    Ok(store)
}

impl Daemon {
    /// Validates exposure, opens the store and binds the listener, with the wall clock;
    /// `salvage` is `run --recover`.
    pub async fn bind(config: &Config, salvage: bool) -> Result<Daemon, DaemonError> {
        Daemon::bind_with(
            config,
            Tokens::from_env(&config.server),
            Arc::new(SystemClock),
            salvage,
        )
        .await
    }

    /// Like [`Daemon::bind`] with explicit tokens and clock (tests).
    pub async fn bind_with(
        config: &Config,
        tokens: Tokens,
        clock: Arc<dyn Clock>,
        salvage: bool,
    ) -> Result<Daemon, DaemonError> {
        check_exposure(config, &tokens)?;
        if let Some((who, what, why)) = config.missing_secrets().into_iter().next() {
            return Err(DaemonError::Channel(format!(
                "{who}: its {what} is missing ({why}); refusing to start"
            )));
        }
        let web = crate::server::tls::Web::of(config).map_err(DaemonError::Web)?;
        let path = config.storage.path.clone();
        let store = tokio::task::spawn_blocking(move || open_store(&path, salvage))
            .await
            .map_err(|e| DaemonError::Start {
                part: "the store",
                why: e.to_string(),
            })??;
        let addr = config.server.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Bind { addr, source })?;
        Ok(Daemon {
            config: config.clone(),
            listener,
            store,
            tokens,
            clock,
            salvage,
            web,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `shutdown` resolves, then drains, flushes and returns.
    ///
    /// While stored state is recovered the listener answers `/healthz`, `/metrics` (the
    /// registry alone) and `503 starting`. Then every part is built (metrics over the live
    /// state, delivery, scheduler and dispatcher, sources), the API is handed them whole and
    /// replaces the starting routes, and the daemon turns ready. If any step fails, whatever
    /// was started is stopped (and the store flushed) before the error is returned.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), DaemonError> {
        let Daemon {
            config,
            listener,
            store,
            tokens,
            clock,
            salvage,
            web,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);

        let recovering = Arc::new(Metrics::new(Arc::new(Recovering), &config));
        let starting = starting_router(Arc::new(tokens.clone()), recovering);
        let (routers, routers_rx) = watch::channel(conn::Routers {
            app: starting.clone(),
            lane: starting,
        });
        let open_files = conn::raise_open_files();
        let limits = conn::Limits {
            header_read_timeout: config.server.header_read_timeout,
            idle_timeout: config.server.idle_timeout,
            write_timeout: config.server.write_timeout,
            max_connections: config
                .server
                .max_connections
                .unwrap_or_else(|| conn::default_max_connections(open_files)),
        };
        tracing::info!(
            open_files,
            max_connections = limits.max_connections,
            "connection limits"
        );
        let mut started = Started {
            limit_sources: None,
            stop: stop_tx,
            server: Some(tokio::spawn(conn::serve(
                listener,
                routers_rx,
                limits,
                web,
                stop_rx.clone(),
            ))),
            ticker: None,
            dispatcher: None,
            delivery: None,
            sources: None,
            writer: None,
            follower: None,
            lease: None,
        };

        let mut shutdown = std::pin::pin!(shutdown);
        let me = crate::cluster::instance_note(
            &crate::config::host_name(),
            std::process::id(),
            chrono::Utc::now(),
        );
        let shared = match &config.cluster {
            Some(c) => {
                let connecting = connect_cluster(c, &me);
                tokio::select! {
                    r = connecting => match r {
                        Ok(log) => Some(log),
                        Err(e) => return started.abandon(e).await,
                    },
                    () = &mut shutdown => {
                        tracing::info!("shutdown asked for while waiting for the shared engine");
                        return started.stop().await;
                    }
                }
            }
            None => None,
        };
        let mut store = store;
        let engine = match &shared {
            Some(log) => match lease::join_engine(log, &mut store).await {
                Ok(joined) => Some(joined),
                Err((part, why)) => {
                    return started.abandon(DaemonError::Start { part, why }).await;
                }
            },
            None => None,
        };
        let leadership = Leadership::default();
        let follow_from = Arc::new(std::sync::Mutex::new(EntryId::ZERO));
        let store: Box<dyn StateStore> = match &shared {
            Some(log) => Box::new(
                SharedStore::new(
                    Box::new(store),
                    log.clone(),
                    leadership.clone(),
                    tokio::runtime::Handle::current(),
                    follow_from.clone(),
                )
                .after_engine_loss(engine.is_some_and(|(_, lost)| lost))
                .salvaging(salvage),
            ),
            None => Box::new(store),
        };

        let began = std::time::Instant::now();
        let recover_config = config.clone();
        let (to_delivery, delivery_rx) = tokio::sync::mpsc::unbounded_channel();
        let recovering = tokio::task::spawn_blocking(move || {
            let dir = recover_config.storage.path.clone();
            match Live::recover(
                &recover_config,
                store,
                clock.clone(),
                Some(to_delivery.clone()),
                salvage,
            ) {
                // Pages SQLite cannot read, met while reading the state: copy out what can be
                // read (the failed attempt has released the store).
                Err(RecoverError::Store(StoreError::Damaged { path, why })) if salvage => {
                    tracing::error!(store = %path, "run --recover: the store is damaged: {why}");
                    let store = salvaged(&dir)?;
                    Live::recover(
                        &recover_config,
                        Box::new(store),
                        clock,
                        Some(to_delivery),
                        true,
                    )
                }
                other => other,
            }
        });
        // A shutdown asked for while state is recovered takes effect once it is: recovery
        // cannot be cut short (it holds the store), and what it started is then stopped.
        let mut recovering = std::pin::pin!(recovering);
        let (recovered, stop_now) = tokio::select! {
            r = &mut recovering => (r, false),
            () = &mut shutdown => {
                tracing::info!("shutdown asked for during start-up; stopping once state is recovered");
                ((&mut recovering).await, true)
            }
        };
        let recovered = recovered.map_err(|e| DaemonError::Start {
            part: "state recovery",
            why: e.to_string(),
        });
        let (live, writer, mut recovery) = match recovered {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return started.abandon(e.into()).await,
            Err(e) => return started.abandon(e).await,
        };
        started.writer = Some(writer);
        if stop_now {
            return started.stop().await;
        }
        tracing::info!(
            from_snapshot = recovery.from_snapshot,
            replayed = recovery.replayed,
            took_ms = began.elapsed().as_millis() as u64,
            "state recovered"
        );

        let mut applied = None;
        if let Some((mark, _)) = engine {
            live.note_engine(mark);
        }
        if let Some(log) = &shared {
            // The batches of the shared snapshot; the log's changes after it follow.
            live.seed_batches(
                std::mem::take(&mut recovery.batches),
                std::mem::take(&mut recovery.batch_items),
            );
            let from = *follow_from
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let upkeep = crate::live::follow::Upkeep::new(log.clone(), leadership.clone(), &config);
            match follow_until_caught_up(&live, upkeep, from, stop_rx.clone()).await {
                Ok((follower, at)) => {
                    started.follower = Some(follower);
                    applied = Some(at);
                }
                Err(e) => return started.abandon(e).await,
            }
        }

        // Build every part; nothing below starts a task until all of them are built.
        let metrics = Arc::new(Metrics::new(Arc::new(live.clone()), &config));
        let pending_notifications = recovery.outbox.len();
        let delivery = match Delivery::new(
            &config.alerts,
            live.clone(),
            metrics.clone(),
            std::mem::take(&mut recovery.outbox),
            delivery_rx,
        ) {
            Ok(d) => match &shared {
                Some(log) => d.gated(crate::alerts::Gate {
                    log: log.clone(),
                    leadership: leadership.clone(),
                }),
                None => d,
            },
            Err(e) => return started.abandon(DaemonError::Channel(e)).await,
        };
        let scheduler = match &shared {
            // A replica's batches are the log's; it acts on them only while it leads.
            Some(_) => live.attach_batches(|batches, items| {
                Arc::new(Scheduler::following(
                    &config,
                    live.clone(),
                    metrics.clone(),
                    batches,
                    items,
                ))
            }),
            None => Arc::new(Scheduler::new(
                &config,
                live.clone(),
                metrics.clone(),
                std::mem::take(&mut recovery.batches),
                std::mem::take(&mut recovery.batch_items),
                live.now_ms(),
            )),
        };
        let dispatcher = match Dispatcher::new(scheduler.clone(), live.clone(), metrics.clone()) {
            Ok(d) if shared.is_some() => d.led_by(leadership.clone()),
            Ok(d) => d,
            Err(e) => {
                return started
                    .abandon(DaemonError::Start {
                        part: "the batch dispatcher",
                        why: e,
                    })
                    .await;
            }
        };
        let replica = shared.as_ref().map(|log| {
            crate::sources::Replica::new(log.clone(), tokio::runtime::Handle::current())
        });
        let sources = Sources::new(&config, &live, &metrics, &recovery, replica);
        let state = ApiState::with_parts(
            &config,
            tokens,
            Parts {
                live: live.clone(),
                metrics: metrics.clone(),
                sources: sources.health(),
                channels: Some(delivery.states()),
                scheduler: Some(scheduler),
                cluster: shared.clone(),
            },
        );

        // Start them: what feeds on the state first, then the sources, then the API.
        if pending_notifications > 0 {
            tracing::info!(
                pending_notifications,
                "resuming delivery of stored notifications"
            );
        }
        let (twin_tx, mut twin) = tokio::sync::mpsc::channel(1);
        if let Some(log) = &shared {
            started.lease = Some((
                tokio::spawn(lease::keep_the_lease(
                    log.clone(),
                    leadership.clone(),
                    stop_rx.clone(),
                    twin_tx,
                    (live.clone(), config.shared_fingerprint(), me.clone()),
                    applied.take(),
                )),
                log.clone(),
                leadership.clone(),
                me.clone(),
            ));
        }
        started.delivery = Some(delivery.start());
        started.dispatcher = Some(dispatcher.start());
        match limits::start(&config, &live, &metrics, stop_rx.clone()) {
            Ok(task) => started.limit_sources = task,
            Err(why) => {
                return started
                    .abandon(DaemonError::Start {
                        part: "the limit sources",
                        why,
                    })
                    .await;
            }
        }
        match sources.start() {
            Ok(s) => started.sources = Some(s),
            Err(e) => {
                return started
                    .abandon(DaemonError::Start {
                        part: "the file sources",
                        why: e.to_string(),
                    })
                    .await;
            }
        }
        routers.send_replace(conn::Routers {
            app: router(state.clone()),
            lane: lane_router(state.clone()),
        });
        started.ticker = Some({
            let live = live.clone();
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
        });

        state.ready.store(true, Ordering::Release);
        tracing::info!(store = %config.storage.path.display(), "ready");

        let twin = tokio::select! {
            () = &mut shutdown => None,
            Some(other) = twin.recv() => Some(other),
        };
        tracing::info!("shutting down: no new requests, finishing those in progress");
        state.ready.store(false, Ordering::Release);
        match (twin, &config.cluster) {
            (Some(other), Some(c)) => {
                let _ = started.stop().await;
                Err(DaemonError::ReplicaIdInUse {
                    replica: c.replica_id.clone(),
                    other,
                })
            }
            _ => started.stop().await,
        }
    }
}

/// What [`Daemon::run`] has started, stopped by [`Started::stop`] — intake first (the
/// server, then the clock), then what it feeds (dispatcher, delivery), then the sources and
/// the store writer, which flushes last — on shutdown, and when a later step of start-up
/// fails.
struct Started {
    /// The limit sources' pollers.
    limit_sources: Option<tokio::task::JoinHandle<()>>,
    stop: watch::Sender<bool>,
    server: Option<tokio::task::JoinHandle<()>>,
    ticker: Option<tokio::task::JoinHandle<()>>,
    dispatcher: Option<Dispatching>,
    delivery: Option<Delivering>,
    sources: Option<sources::Running>,
    writer: Option<Writer>,
    /// A replica's task applying the shared log.
    follower: Option<tokio::task::JoinHandle<()>>,
    /// A replica's task keeping (or waiting for) the lead, and what it steps down from.
    lease: Option<(tokio::task::JoinHandle<()>, SharedLog, Leadership, String)>,
}

impl Started {
    /// Stops everything started (requests in progress get [`DRAIN`]), flushes the store and
    /// joins every task and thread.
    async fn stop(mut self) -> Result<(), DaemonError> {
        let _ = self.stop.send(true);
        let mut result = Ok(());
        if let Some(server) = self.server.take() {
            result = match tokio::time::timeout(DRAIN, server).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(join)) => Err(DaemonError::Serve(std::io::Error::other(join))),
                Err(_) => {
                    tracing::warn!("requests still open after {DRAIN:?}; closing them");
                    Ok(())
                }
            };
        }
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.await;
        }
        if let Some(pollers) = self.limit_sources.take() {
            let _ = pollers.await;
        }
        if let Some(mut follower) = self.follower.take() {
            // It stops at its next read; one held by an engine that does not answer is let go.
            if tokio::time::timeout(Duration::from_secs(3), &mut follower)
                .await
                .is_err()
            {
                follower.abort();
            }
        }
        if let Some(dispatcher) = self.dispatcher.take() {
            dispatcher.stop().await;
        }
        if let Some(delivery) = self.delivery.take() {
            delivery.stop().await;
        }
        let (sources, writer) = (self.sources.take(), self.writer.take());
        if tokio::task::spawn_blocking(move || {
            if let Some(sources) = sources {
                sources.stop();
            }
            if let Some(writer) = writer {
                writer.shutdown();
            }
        })
        .await
        .is_err()
        {
            tracing::error!("the final store commit panicked");
        }
        // Last: the final commit has marked what this replica delivered, so the next leader,
        // taking over at once, sends none of it again.
        if let Some((task, log, leadership, me)) = self.lease.take() {
            let _ = task.await;
            if let Err(e) = log.release_replica_id(&me).await {
                tracing::debug!(error = %e, "could not let go of the replica id; it lapses in 10 s");
            }
            if leadership.leads() {
                match log.step_down(&leadership).await {
                    Ok(()) => tracing::info!("stepped down as leader"),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not step down; another replica leads once the lease lapses")
                    }
                }
            }
        }
        tracing::info!("stopped");
        result
    }

    /// Start-up failed with `error`: stops what was started, then returns the error.
    async fn abandon(self, error: DaemonError) -> Result<(), DaemonError> {
        tracing::error!(%error, "start-up failed; stopping what was started");
        let _ = self.stop().await;
        Err(error)
    }
}

/// `[cluster]`'s shared log, connected. An engine that cannot be reached yet (not started,
/// its name not resolvable yet, still loading its data) is asked again every
/// [`CONNECT_RETRY`], not ready meanwhile, as a replica started before its Redis must wait
/// rather than crash-loop; start-up fails, naming why, when the engine refuses the password or
/// is too old, or when another running instance holds the replica id (claimed as `me` here,
/// before any checkpoint is read or source started, so two never tail under one id).
async fn connect_cluster(c: &ClusterConfig, me: &str) -> Result<SharedLog, DaemonError> {
    let password = match &c.redis_password {
        Some(secret) => Some(secret.read().map_err(|why| DaemonError::Start {
            part: "[cluster] redis password",
            why,
        })?),
        None => None,
    };
    let settings = ClusterSettings {
        redis_url: c.redis_url.clone(),
        password,
        replica_id: c.replica_id.clone(),
        min_replicas_ack: c.min_replicas_ack,
        ack_timeout: Duration::from_millis(c.ack_timeout_ms),
        key_prefix: c.key_prefix.clone(),
    };
    let redis = crate::outbound::redact(&c.redis_url);
    let mut waiting_since: Option<std::time::Instant> = None;
    let mut last_said = None::<std::time::Instant>;
    let (log, claim) = loop {
        let claimed = match SharedLog::connect(&settings).await {
            Ok(log) => log
                .claim_replica_id(me, lease::LEASE_TTL, lease::LEASE_EVERY)
                .await
                .map(|claim| (log, claim)),
            Err(e) => Err(e),
        };
        match claimed {
            Ok(done) => break done,
            Err(e) if e.is_unreachable() => {
                let since = *waiting_since.get_or_insert_with(std::time::Instant::now);
                if last_said.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
                    tracing::warn!(%redis, error = %e, waiting_s = since.elapsed().as_secs(), "cannot reach the shared engine; asking again every 2 s (not ready until it answers)");
                    last_said = Some(std::time::Instant::now());
                }
                tokio::time::sleep(CONNECT_RETRY).await;
            }
            Err(e) => {
                return Err(DaemonError::Start {
                    part: "the shared log ([cluster] redis_url)",
                    why: e.to_string(),
                });
            }
        }
    };
    tracing::info!(replica = %c.replica_id, %redis, "connected to the shared log; the replica id is this instance's");
    match claim {
        Claim::Claimed => Ok(log),
        Claim::InUse(other) => Err(DaemonError::ReplicaIdInUse {
            replica: c.replica_id.clone(),
            other,
        }),
    }
}

/// How often a replica asks again for an engine it could not reach at start-up.
const CONNECT_RETRY: Duration = Duration::from_secs(2);

/// Starts applying the shared log to `live` (reconnecting after a failure, from the last
/// entry applied) and returns once everything in the log at start-up is applied, so the
/// replica answers like the others from its first ready moment; with the follower, the id
/// of the last entry applied as it moves.
async fn follow_until_caught_up(
    live: &Live,
    mut upkeep: crate::live::follow::Upkeep,
    from: EntryId,
    stop: watch::Receiver<bool>,
) -> Result<(tokio::task::JoinHandle<()>, watch::Receiver<EntryId>), DaemonError> {
    let log = upkeep.log().clone();
    let failed = |e: crate::cluster::ClusterError| DaemonError::Start {
        part: "the shared log",
        why: e.to_string(),
    };
    let end = log.last_id().await.map_err(failed)?;
    let (applied_tx, mut applied) = watch::channel(from);
    let began = std::time::Instant::now();
    let follower = {
        let (live, stop) = (live.clone(), stop.clone());
        tokio::spawn(async move {
            while !*stop.borrow() {
                let outcome = match log.reader().await {
                    Ok(mut reader) => {
                        live.follow(&mut reader, &applied_tx, &stop, &mut upkeep)
                            .await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = outcome {
                    tracing::warn!(error = %e, "reading the shared log failed; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        })
    };
    if end > from {
        let _ = applied.wait_for(|&id| id >= end).await;
    }
    tracing::info!(
        up_to = %end,
        took_ms = began.elapsed().as_millis() as u64,
        "caught up with the shared log"
    );
    Ok((follower, applied))
}

/// Runs the daemon on `config` until `shutdown` resolves.
pub async fn run(
    config: &Config,
    salvage: bool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    let daemon = Daemon::bind(config, salvage).await?;
    if let Some(addr) = daemon.local_addr() {
        tracing::info!(%addr, "listening");
    }
    daemon.run(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_start_stops_what_was_started() {
        // The server is up (answering /healthz while state is recovered) when a later step
        // fails: it must be stopped, not left serving, and the error returned as it was.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = Config::default();
        let recovering = Arc::new(Metrics::new(Arc::new(Recovering), &config));
        let starting = starting_router(Arc::new(Tokens::default()), recovering);
        let (_routers, routers_rx) = watch::channel(conn::Routers {
            app: starting.clone(),
            lane: starting,
        });
        let (stop, stop_rx) = watch::channel(false);
        let limits = conn::Limits {
            header_read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
            max_connections: 16,
        };
        let started = Started {
            limit_sources: None,
            stop,
            server: Some(tokio::spawn(conn::serve(
                listener,
                routers_rx,
                limits,
                crate::server::tls::Web::default(),
                stop_rx,
            ))),
            ticker: None,
            dispatcher: None,
            delivery: None,
            sources: None,
            writer: None,
            follower: None,
            lease: None,
        };
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_ok(),
            "serving"
        );
        let result = started
            .abandon(DaemonError::Channel("channel x: no way out".into()))
            .await;
        assert!(
            matches!(&result, Err(DaemonError::Channel(m)) if m == "channel x: no way out"),
            "{result:?}"
        );
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "the listener is closed once start-up failed"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shutdown_during_start_up_stops_cleanly_once_state_is_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"{}\"\n",
            dir.path().join("data").display()
        );
        let config = Config::parse(&text, "t").unwrap();
        // Shutdown is asked for before recovery can have finished.
        let result = tokio::time::timeout(Duration::from_secs(20), run(&config, false, async {}))
            .await
            .expect("returns");
        assert!(result.is_ok(), "{result:?}");
        // The store was released: a second daemon starts on it.
        let again = tokio::time::timeout(Duration::from_secs(20), run(&config, false, async {}))
            .await
            .expect("returns");
        assert!(again.is_ok(), "{again:?}");
    }
}
