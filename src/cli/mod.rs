//! The command line. `main.rs` parses it and calls [`run`]; each subcommand lives in its own
//! file and owns its arguments. This is the edge of the program: errors become `anyhow` here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod agent;
mod check;
mod console;
mod coordinator;
mod demo;
mod devices;
mod fetch;
mod log;
mod master_ping;
mod power;
mod run_job;
mod ser2net_config;
mod status;
mod udev_rules;

/// Default inventory path; `LABD_CONFIG` or `-c` override it.
pub const DEFAULT_INVENTORY: &str = "/etc/labd/inventory.toml";

/// The inventory option shared by every command that reads it.
#[derive(Debug, Clone, clap::Args)]
pub struct InventoryArg {
    /// Inventory file (TOML).
    #[arg(short = 'c', long = "config", env = "LABD_CONFIG", default_value = DEFAULT_INVENTORY)]
    pub config: PathBuf,
}

impl InventoryArg {
    /// Loads and validates the inventory, or explains every problem in it.
    pub fn load(&self) -> anyhow::Result<crate::inventory::Inventory> {
        Ok(crate::inventory::Inventory::load(&self.config)?)
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "labd",
    version,
    about = "Board-farm dispatcher agent",
    propagate_version = true
)]
pub struct Cli {
    /// More log output (-v debug, -vv trace). `RUST_LOG` takes precedence.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a simulated lab (boards on pseudo-terminals, a PDU) with no hardware and no root.
    Demo(demo::Args),
    /// Validate an inventory file.
    Check(check::Args),
    /// Run the daemon: consoles, control socket, power queue, master link.
    Agent(agent::Args),
    /// Attach to a board's console through the running daemon.
    Console(console::Args),
    /// Print a board's console journal.
    Log(log::Args),
    /// Show what the running daemon owns and the state of each device.
    Status(status::Args),
    /// Print (or install) udev rules giving every adapter its stable name.
    UdevRules(udev_rules::Args),
    /// List USB-serial adapters present and the inventory device each matches.
    Devices(devices::Args),
    /// Generate ser2net configuration for devices exported through ser2net.
    Ser2netConfig(ser2net_config::Args),
    /// Switch a board's power through the running daemon's per-PDU queue.
    Power(power::Args),
    /// Download (and decompress) an image through labd's cache.
    Fetch(fetch::Args),
    /// Run a LAVA job definition on inventory devices, without a master.
    RunJob(run_job::Args),
    /// Run a LAVA-compatible Multi-Node coordinator (drop-in for lava-coordinator).
    Coordinator(coordinator::Args),
    /// Ping the LAVA master once with the [master] settings and show its answer.
    MasterPing(master_ping::Args),
}

/// Sets up `tracing` for a command-line run: human-readable, to stderr.
pub fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // The coordinator configures its own logging (lava-coordinator's options).
    if !matches!(cli.command, Command::Coordinator(_)) {
        init_tracing(cli.verbose);
    }
    match cli.command {
        Command::Demo(a) => demo::run(a).await,
        Command::Check(a) => check::run(a).await,
        Command::Agent(a) => agent::run(a).await,
        Command::Console(a) => console::run(a).await,
        Command::Log(a) => log::run(a).await,
        Command::Status(a) => status::run(a).await,
        Command::UdevRules(a) => udev_rules::run(a).await,
        Command::Devices(a) => devices::run(a).await,
        Command::Ser2netConfig(a) => ser2net_config::run(a).await,
        Command::Power(a) => power::run(a).await,
        Command::Fetch(a) => fetch::run(a).await,
        Command::RunJob(a) => run_job::run(a).await,
        Command::Coordinator(a) => coordinator::run(a).await,
        Command::MasterPing(a) => master_ping::run(a).await,
    }
}
