//! `labd agent`: Run the daemon. Not built yet.

use std::process::ExitCode;

use super::InventoryArg;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub inventory: InventoryArg,
}

pub async fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("labd agent is not built yet")
}
