//! `labd log`: Print a journal. Not built yet.

use std::process::ExitCode;

use super::InventoryArg;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub inventory: InventoryArg,
}

pub async fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("labd log is not built yet")
}
