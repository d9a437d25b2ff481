//! `labd fetch`: Download an image. Not built yet.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("labd fetch is not built yet")
}
