//! `labd master-ping -c FILE`: check the `[master]` section against the real master: one ping
//! with the configured name, token and version, and what the master answered. Starts no job.

use std::process::ExitCode;

use anyhow::Context as _;

use super::InventoryArg;
use crate::master::{MasterClient, MasterError, TokenSource};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub inventory: InventoryArg,
    /// Register the worker if the token file does not exist yet (as the daemon would).
    #[arg(long)]
    pub register: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let inv = args.inventory.load()?;
    let master = inv.master.as_ref().with_context(|| {
        format!(
            "{}: no [master] section: nothing to ping",
            args.inventory.config.display()
        )
    })?;
    let settings = master.settings(&inv.worker.name, &inv.worker.state_dir);
    let client = MasterClient::new(&settings)?;
    println!(
        "master {} as worker {:?}, version {}",
        settings.url,
        settings.name.as_str(),
        settings.version
    );
    let token = match &settings.token {
        TokenSource::Inline(t) => t.clone(),
        TokenSource::File(p) if p.exists() || args.register => {
            crate::master::link::obtain_token(&client, &settings.token).await?
        }
        TokenSource::File(p) => anyhow::bail!(
            "token file {} does not exist; pass --register to register the worker",
            p.display()
        ),
    };
    match client.ping(&token).await {
        Ok(a) => {
            let ids = |v: &[crate::master::JobRef]| {
                v.iter()
                    .map(|j| j.id.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            println!("ping: ok");
            println!("  start  : [{}]", ids(&a.start));
            println!("  running: [{}]", ids(&a.running));
            println!("  cancel : [{}]", ids(&a.cancel));
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ MasterError::VersionMismatch { .. }) => {
            eprintln!("ping: {e}");
            Ok(ExitCode::from(2))
        }
        Err(e) => {
            eprintln!("ping: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
