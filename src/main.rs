//! The `ratewarden` binary: parses flags, loads config, starts tracing, and hands off.

/// `print!` to standard output, exiting quietly when the reader has gone (`check-config |
/// head -1`): a closed pipe is not an error of ours, and `print!` would panic on it.
macro_rules! out {
    ($($arg:tt)*) => {
        write_out(format_args!($($arg)*), false)
    };
}

/// `println!`, the same way as [`out!`].
macro_rules! outln {
    ($($arg:tt)*) => {
        write_out(format_args!($($arg)*), true)
    };
}

/// `eprintln!` that never panics: a closed standard error (`check-config 2>&1 | head -1`)
/// loses the message, as there is nowhere left to say it.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

fn write_out(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_fmt(args)
        .and_then(|()| {
            if newline {
                stdout.write_all(b"\n")
            } else {
                Ok(())
            }
        })
        .and_then(|()| stdout.flush());
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        errln!("ratewarden: writing to standard output: {e}");
        std::process::exit(1);
    }
}

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use ratewarden::cli::{self, Api, ClientError};
use ratewarden::config::{CONFIG_ENV, Config};
use ratewarden::{daemon, generate, replay};

#[derive(Parser)]
#[command(
    name = "ratewarden",
    version,
    about = "Usage monitor and Prometheus exporter for rate-limited APIs"
)]
struct Cli {
    /// Log line format on stderr (filter with RUST_LOG, default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (built-in defaults without a config).
    Run {
        /// Config file.
        #[arg(long, env = CONFIG_ENV)]
        config: Option<PathBuf>,
        /// The store is damaged: keep it beside as state.sqlite.damaged-TIME, start from what
        /// can be read of it and log what was lost.
        #[arg(long)]
        recover: bool,
    },
    /// Validate a config file: exit 0 with a summary, or 2 with FILE:LINE:COL: message.
    CheckConfig {
        /// Config file.
        file: PathBuf,
    },
    /// Analyse request logs offline, in event time.
    Replay {
        /// Config file (tiers, orgs, detectors).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Line format of the inputs [default: json].
        #[arg(long, value_enum)]
        format: Option<replay::Format>,
        /// An nginx log_format or Envoy format string for --format nginx|envoy, or a built-in
        /// name: combined, main (nginx); default, istio (Envoy).
        #[arg(long, value_name = "STRING")]
        line_format: Option<String>,
        /// Where an event field is: FIELD=VARIABLE for templates ("org=$http_x_org"),
        /// FIELD=DOTTED.PATH for JSON ("org=organization.id"). Repeatable.
        #[arg(long = "field", value_name = "FIELD=WHERE")]
        fields: Vec<String>,
        /// Read the inputs as the [[sources.file]] of this name in --config does (its format,
        /// log_format, fields, default org and max_line_bytes).
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Also write an HTML report to FILE: an overview, then per org usage over time
        /// against its limits, 429s by cause, bursts, stuck jobs and alerts (self-contained;
        /// opens from disk with no network).
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        /// Org of lines that carry none (nginx and Envoy logs usually do not).
        #[arg(long)]
        org: Option<String>,
        /// Threads in all (they decode lines and apply them on as many shards, each org on
        /// one, in input order), so the report is the same for any count [default: the
        /// number of cores, at most 8].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
        threads: Option<u16>,
        /// Files to read in order ("-" for standard input).
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Deferred batches on a running daemon (admin token from RATEWARDEN_ADMIN_TOKEN).
    Batch {
        /// Daemon base URL.
        #[arg(long, global = true, default_value = "http://127.0.0.1:9747")]
        server: String,
        #[command(subcommand)]
        command: BatchCommand,
    },
    /// Alert channels.
    Alerts {
        #[command(subcommand)]
        command: AlertsCommand,
    },
    /// Exit 0 if a running daemon is ready (GET /readyz), 1 if not: for container health checks.
    Health {
        /// Daemon base URL.
        #[arg(long, default_value = "http://127.0.0.1:9747")]
        server: String,
    },
    /// Show live usage from a running daemon (admin token from RATEWARDEN_ADMIN_TOKEN).
    Status {
        /// Daemon base URL.
        #[arg(long, default_value = "http://127.0.0.1:9747")]
        server: String,
    },
    /// Write Prometheus rules or a Grafana dashboard that match a config's thresholds and
    /// limits (the shipped alerts/ and dashboards/ files are the built-in defaults' output).
    Generate {
        #[command(subcommand)]
        what: GenerateCommand,
    },
}

#[derive(Subcommand)]
enum GenerateCommand {
    /// Prometheus recording and alerting rules (alerts/ratewarden.rules.yml).
    Rules {
        /// Config file [default: the built-in defaults; RATEWARDEN_CONFIG is not read].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Write to FILE instead of standard output.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Grafana dashboard (dashboards/ratewarden.json).
    Dashboard {
        /// Config file [default: the built-in defaults; RATEWARDEN_CONFIG is not read].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Write to FILE instead of standard output.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// For file provisioning: query the Prometheus data source of this uid instead of
        /// asking for one on import (no __inputs).
        #[arg(long, value_name = "UID")]
        datasource: Option<String>,
    },
}

#[derive(Subcommand)]
enum BatchCommand {
    /// Submit a batch: FILE holds one request per line ({"path", "method", "body", "idempotency_key"}); "-" is stdin.
    Submit {
        /// Upstream to send to.
        #[arg(long)]
        upstream: String,
        /// Org (defaults to the upstream's).
        #[arg(long)]
        org: Option<String>,
        /// When to send.
        #[arg(long, value_enum, default_value_t = ModeArg::Offpeak)]
        mode: ModeArg,
        /// JSON-lines file of requests.
        file: PathBuf,
    },
    /// List batches.
    List,
    /// Show one batch.
    Status {
        /// Batch id.
        id: String,
    },
    /// Print one batch's items as JSON lines.
    Items {
        /// Batch id.
        id: String,
    },
    /// Cancel the items of a batch not sent yet.
    Cancel {
        /// Batch id.
        id: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Offpeak,
    Asap,
}

#[derive(Subcommand)]
enum AlertsCommand {
    /// Send a test notification to every configured channel, to check the wiring.
    Test {
        /// Config file.
        #[arg(long, env = CONFIG_ENV)]
        config: Option<PathBuf>,
    },
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal, never into files or journald.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Why a command stopped: the message for stderr and the exit code (2 for bad usage or
/// configuration, 1 for everything else).
struct Failed(u8, String);

impl Failed {
    fn usage(msg: impl std::fmt::Display) -> Failed {
        Failed(2, msg.to_string())
    }

    fn other(msg: impl std::fmt::Display) -> Failed {
        Failed(1, msg.to_string())
    }
}

/// Writes the HTML report to `path`: a regular file (or a symlink to one) is replaced whole
/// or not at all (a temporary file beside the target, renamed over it); anything else (a pipe,
/// `/dev/stdout`) is written through. An output that is one of the `inputs` is refused.
fn write_html(
    report: &mut replay::Report,
    path: &std::path::Path,
    inputs: &[String],
) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind, Write};
    // Through symlinks, a dangling one included (the report is then written where it points).
    let resolved = std::fs::canonicalize(path).ok().or_else(|| {
        let link = std::fs::read_link(path).ok()?;
        Some(match path.parent() {
            Some(dir) if link.is_relative() => dir.join(link),
            _ => link,
        })
    });
    if let Some(out) = &resolved
        && inputs
            .iter()
            .filter(|i| i.as_str() != "-")
            .any(|i| std::fs::canonicalize(i).ok().as_ref() == Some(out))
    {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "it is also an input: refusing to overwrite it",
        ));
    }
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        let mut w = std::io::BufWriter::new(std::fs::OpenOptions::new().write(true).open(path)?);
        report.write_html(&mut w)?;
        return w.flush();
    }
    let target = resolved.as_deref().unwrap_or(path);
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        report.write_html(&mut w)?;
        w.flush()?;
        drop(w);
        std::fs::rename(&tmp, target)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn load(path: Option<&PathBuf>) -> Result<Config, Failed> {
    match path {
        Some(p) => Config::load(p).map_err(Failed::usage),
        None => Ok(Config::default()),
    }
}

/// Runs `f` to completion on a fresh multi-threaded runtime.
fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, Failed> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failed::other(format!("cannot start the async runtime: {e}")))?;
    Ok(rt.block_on(f))
}

/// Resolves on SIGTERM or SIGINT. SIGHUP, whose default action would end the daemon
/// without a word (a closed terminal, a `reload` by habit), is logged and ignored: the
/// config is read once, at start. The listeners are set up when this is called (on the
/// runtime, before the daemon opens its store), not when it is first awaited: until then
/// each signal would still have its default action.
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{Signal, SignalKind, signal};
    let listen = |kind, name: &str| match signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch {name}; it keeps its default action");
            None
        }
    };
    let mut term = listen(SignalKind::terminate(), "SIGTERM");
    let mut interrupt = listen(SignalKind::interrupt(), "SIGINT");
    let mut hangup = listen(SignalKind::hangup(), "SIGHUP");
    async fn next(s: &mut Option<Signal>) -> Option<()> {
        match s {
            Some(s) => s.recv().await,
            None => std::future::pending().await,
        }
    }
    async move {
        loop {
            tokio::select! {
                Some(()) = next(&mut term) => {
                    tracing::info!("SIGTERM received");
                    break;
                }
                Some(()) = next(&mut interrupt) => {
                    tracing::info!("SIGINT received");
                    break;
                }
                Some(()) = next(&mut hangup) => tracing::warn!(
                    "SIGHUP received and ignored: the config is read at start only; restart ratewarden to apply a change"
                ),
                // Every listener ended: the runtime is going away.
                else => break,
            }
        }
    }
}

#[cfg(not(unix))]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn batch(
    server: &str,
    token: Option<String>,
    command: BatchCommand,
) -> Result<String, ClientError> {
    let api = Api::new(server, token)?;
    match command {
        BatchCommand::Submit {
            upstream,
            org,
            mode,
            file,
        } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(&file)
            }
            .map_err(|e| ClientError::Input(format!("{}: {e}", file.display())))?;
            let mode = match mode {
                ModeArg::Offpeak => "offpeak",
                ModeArg::Asap => "asap",
            };
            cli::batch::submit(&api, &upstream, org.as_deref(), mode, &text).await
        }
        BatchCommand::List => cli::batch::list(&api).await,
        BatchCommand::Status { id } => cli::batch::status(&api, &id).await,
        BatchCommand::Items { id } => cli::batch::items(&api, &id).await,
        BatchCommand::Cancel { id } => cli::batch::cancel(&api, &id).await,
    }
}

/// Has the allocator map large buffers (request bodies, snapshots, `/metrics` answers) on
/// their own and give them back when freed. glibc raises this threshold each time such a
/// buffer is freed and then keeps the next ones in its heap, so a daemon would hold its peak
/// for good (measured: 87 MiB resident after the 10 000-org scale run against 64 MiB with a
/// fixed threshold).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn return_large_buffers() {
    // SAFETY: mallopt only sets an allocator parameter; it is called before any other thread
    // exists, as glibc asks.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_large_buffers() {}

fn main() -> ExitCode {
    return_large_buffers();
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match command(cli.command) {
        Ok(code) => code,
        Err(Failed(code, msg)) => {
            errln!("{msg}");
            ExitCode::from(code)
        }
    }
}

fn command(command: Command) -> Result<ExitCode, Failed> {
    Ok(match command {
        Command::Run { config, recover } => {
            let config = load(config.as_ref())?;
            // The signal listeners are made on the runtime, before the daemon starts.
            match block_on(async { daemon::run(&config, recover, shutdown_signal()).await })? {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { file } => {
            let config = Config::load(&file).map_err(Failed::usage)?;
            ratewarden::server::tls::Web::of(&config).map_err(Failed::usage)?;
            outln!("{}: OK", file.display());
            out!("{}", config.summary());
            for (who, what, why) in config.missing_secrets() {
                errln!("warning: {who}: its {what} is missing ({why}); `run` will refuse to start");
            }
            let basic_auth = config
                .server
                .web
                .as_ref()
                .is_some_and(|w| !w.basic_auth_users.is_empty());
            for (var, what) in config.secret_envs() {
                if !basic_auth && std::env::var(var).map_or(true, |v| v.is_empty()) {
                    errln!(
                        "warning: ${var} ({what}) is unset: that route is open, which `run` allows only on a loopback address"
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Command::Replay {
            config,
            format,
            line_format,
            fields,
            source,
            json,
            html,
            org,
            threads,
            files,
        } => {
            let config = load(config.as_ref())?;
            if !config.limit_sources.is_empty() {
                // Offline means offline: no admin API is asked, and the report says so.
                eprintln!(
                    "replay: [[limit_sources]] are not polled offline; the configured limits apply \
                     (a model a source adds as a scope counts against its org only)"
                );
            }
            let mut opts = replay::Options::new(files);
            opts.format = format;
            opts.line_format = line_format;
            opts.source = source;
            opts.org = org;
            if let Some(n) = threads {
                opts.threads = n.into();
            }
            opts.timeline = html.is_some();
            for f in fields {
                let Some((field, place)) = f.split_once('=') else {
                    return Err(Failed::usage(format!(
                        "--field {f:?}: expected FIELD=VARIABLE or FIELD=PATH"
                    )));
                };
                opts.fields
                    .insert(field.trim().to_string(), place.trim().to_string());
            }
            let start = chrono::Utc::now().timestamp_millis();
            let mut report = replay::run(&config, &opts, start).map_err(|e| match e {
                replay::ReplayError::Format(_) => Failed::usage(format!("replay: {e}")),
                e => Failed::other(format!("replay: {e}")),
            })?;
            if let Some(path) = &html {
                write_html(&mut report, path, &opts.inputs).map_err(|e| {
                    Failed::other(format!("replay: writing {}: {e}", path.display()))
                })?;
            }
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let written = if json {
                report.write_json(&mut out)
            } else {
                report.write_text(&mut out)
            };
            match written.and_then(|()| std::io::Write::flush(&mut out)) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    return Err(Failed::other(format!("replay: writing the report: {e}")));
                }
                _ => ExitCode::SUCCESS,
            }
        }
        Command::Alerts {
            command: AlertsCommand::Test { config },
        } => {
            let config = load(config.as_ref())?;
            if config.alerts.channels.is_empty() {
                return Err(Failed::usage(
                    "no channels configured ([[alerts.email]], [[alerts.webhook]])",
                ));
            }
            let now = chrono::Utc::now().timestamp_millis();
            let results = block_on(cli::alerts_test::send_test(&config.alerts, now))?;
            let (report, all_sent) = cli::alerts_test::report(&results);
            out!("{report}");
            if all_sent {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Batch { server, command } => {
            let token = std::env::var("RATEWARDEN_ADMIN_TOKEN").ok();
            let out = block_on(batch(&server, token, command))?
                .map_err(|e| Failed::other(format!("batch: {e}")))?;
            out!("{out}");
            ExitCode::SUCCESS
        }
        Command::Health { server } => {
            block_on(cli::health::ready(&server))?
                .map_err(|e| Failed::other(format!("not ready: {e}")))?;
            ExitCode::SUCCESS
        }
        Command::Generate { what } => {
            let (output, text) = match what {
                GenerateCommand::Rules { config, output } => {
                    (output, generate::rules(&load(config.as_ref())?))
                }
                GenerateCommand::Dashboard {
                    config,
                    output,
                    datasource,
                } => {
                    let ds =
                        datasource.map_or(generate::Datasource::Import, generate::Datasource::Uid);
                    (output, generate::dashboard(&load(config.as_ref())?, &ds))
                }
            };
            match output {
                // A plain write rather than a rename over the target: it goes through
                // symlinks and into pipes (`--output /dev/stdout`).
                Some(path) => std::fs::write(&path, text).map_err(|e| {
                    Failed::other(format!("generate: writing {}: {e}", path.display()))
                })?,
                None => out!("{text}"),
            }
            ExitCode::SUCCESS
        }
        Command::Status { server } => {
            let token = std::env::var("RATEWARDEN_ADMIN_TOKEN").ok();
            let table = block_on(cli::status::fetch(&server, token.as_deref()))?
                .map_err(|e| Failed::other(format!("status: {e}")))?;
            out!("{table}");
            ExitCode::SUCCESS
        }
    })
}
