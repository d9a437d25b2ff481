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
use crate::multinode::server::log::{LavaFormat, LogLevel, LogSink};
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
    /// Directory of the journal that keeps groups across restarts.
    #[arg(
        long,
        default_value = "/var/lib/labd/coordinator",
        conflicts_with = "no_state"
    )]
    pub state_dir: PathBuf,
    /// Keep groups in memory only, as lava-coordinator does.
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
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let sink = LogSink::open(&args.logfile)
        .with_context(|| format!("cannot open the log file {}", args.logfile))?;
    tracing_subscriber::fmt()
        .event_format(LavaFormat)
        .with_writer(sink)
        .with_max_level(args.loglevel.level())
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))?;
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
    info!(target: LOG_TARGET, "Stopping: groups are kept in the journal");
    server.shutdown().await;
    Ok(ExitCode::SUCCESS)
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
