//! `labd coordinator`: Coordinator. Not built yet.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("labd coordinator is not built yet")
}
