//! `labd agent -c FILE`: run the daemon until SIGTERM (SIGHUP reloads the inventory).

use std::process::ExitCode;

use super::InventoryArg;
use crate::daemon::Daemon;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub inventory: InventoryArg,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let inv = args.inventory.load()?;
    let running = Daemon::new(&args.inventory.config, inv).start().await?;
    running.run_until_signal().await?;
    Ok(ExitCode::SUCCESS)
}
