//! `labd coordinator`: a drop-in for lava-coordinator (same options, config file, port and
//! replies), concurrent, crash-safe and robust to bad input. See docs/multinode.md.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tracing::{info, warn};

use crate::multinode::config::{LAVA_CONF, LavaConf};
use crate::multinode::error::CoordinatorError;
use crate::multinode::server::log::{LavaLayer, LogLevel, LogSink};
use crate::multinode::server::{Durability, LOG_TARGET, Server, ServerConfig};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file (JSON: port, blocksize, poll_delay, coordinator_hostname).
    #[arg(long, default_value = LAVA_CONF)]
    pub config: PathBuf,
    /// Log file, or "-" for stdout.
    #[arg(long, default_value = "/var/log/lava-coordinator.log")]
    pub logfile: String,
    /// Log level.
    #[arg(
        short = 'l',
        long,
        value_enum,
        default_value = "INFO",
        ignore_case = false
    )]
    pub loglevel: LogLevel,
    /// Address to listen on (lava-coordinator always uses 0.0.0.0).
    #[arg(long, default_value = "0.0.0.0")]
    pub bind: IpAddr,
    /// Directory of the journal that keeps groups across restarts (systemd's
    /// `StateDirectory=` sets `$STATE_DIRECTORY`, which is used when the option is absent).
    #[arg(
        long,
        env = "STATE_DIRECTORY",
        default_value = "/var/lib/labd/coordinator"
    )]
    pub state_dir: PathBuf,
    /// Keep groups in memory only, as lava-coordinator does (overrides --state-dir).
    #[arg(long)]
    pub no_state: bool,
    /// Time a client has to send its whole request.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub read_timeout: Duration,
    /// Largest request accepted, in bytes; larger ones get nack.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_message: usize,
    /// Connections served at once.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// When a change is durable enough to answer: `process` (written to the OS: survives a
    /// crash or kill of the coordinator; synced to disk within 50 ms) or `power` (synced to
    /// disk before the reply).
    #[arg(long, value_enum, default_value = "process")]
    pub durability: Durability,
    /// Threads serving connections. One event loop is the fastest for this workload (every
    /// request is a short critical section on one state); more only add wake-ups.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let sink = LogSink::open(&args.logfile)
        .with_context(|| format!("cannot open the log file {}", args.logfile))?;
    {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        tracing_subscriber::registry()
            .with(tracing_subscriber::filter::LevelFilter::from_level(
                args.loglevel.level(),
            ))
            .with(LavaLayer::new(sink.clone()))
            .try_init()
            .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))?;
    }
    info!(target: LOG_TARGET, "[INIT] LAVA coordinator has started.");
    info!(target: LOG_TARGET, "[INIT] Version labd {}", env!("CARGO_PKG_VERSION"));
    info!(target: LOG_TARGET, "[INIT] Loading configuration from {}", args.config.display());
    let conf = LavaConf::load(&args.config)?;
    let cfg = ServerConfig {
        bind: args.bind,
        port: conf.port()?,
        blocksize: conf.blocksize()?,
        state_dir: (!args.no_state).then(|| args.state_dir.clone()),
        read_timeout: args.read_timeout,
        max_message: args.max_message,
        max_connections: args.max_connections,
        durability: args.durability,
        ..ServerConfig::default()
    };
    // The server gets its own runtime with the requested number of threads; this task only
    // waits for it.
    let threads = args.threads.max(1);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("coordinator".into())
        .spawn(move || {
            let rt = if threads == 1 {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    .enable_all()
                    .build()
            };
            let result = match rt {
                Ok(rt) => rt.block_on(serve(cfg)),
                Err(e) => Err(anyhow::anyhow!("cannot start the coordinator runtime: {e}")),
            };
            let _ = done_tx.send(result);
        })
        .context("cannot start the coordinator thread")?;
    let result = done_rx
        .await
        .map_err(|_| anyhow::anyhow!("the coordinator thread stopped unexpectedly"));
    sink.flush();
    result??;
    Ok(ExitCode::SUCCESS)
}

/// Binds (retrying like lava-coordinator), serves until SIGTERM/SIGINT.
async fn serve(cfg: ServerConfig) -> anyhow::Result<()> {
    // lava-coordinator retries a failed bind forever, doubling the delay from 1 s.
    let mut delay = Duration::from_secs(1);
    let server = loop {
        match Server::start(cfg.clone()).await {
            Ok(s) => break s,
            Err(CoordinatorError::Bind { source, .. }) => {
                warn!(target: LOG_TARGET,
                    "[BTSP] Unable to bind, trying again with delay={} msg={}", delay.as_secs(), source);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(60));
            }
            Err(e) => return Err(e.into()),
        }
    };
    wait_for_signal().await?;
    if cfg.state_dir.is_some() {
        info!(target: LOG_TARGET, "Stopping: groups are kept in the journal");
    } else {
        info!(target: LOG_TARGET, "Stopping: groups are lost (--no-state)");
    }
    server.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
