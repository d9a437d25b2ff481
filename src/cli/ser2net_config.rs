//! `labd ser2net-config`: ser2net configuration. Not built yet.

use std::process::ExitCode;

use super::InventoryArg;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub inventory: InventoryArg,
}

pub async fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("labd ser2net-config is not built yet")
}
