//! `labd check -c FILE`: validate an inventory and say what it describes.

use std::process::ExitCode;

use super::InventoryArg;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub inventory: InventoryArg,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match crate::inventory::Inventory::load(&args.inventory.config) {
        Ok(inv) => {
            println!(
                "{}: ok (worker {}, {} device{}, {} PDU{})",
                args.inventory.config.display(),
                inv.worker.name,
                inv.devices.len(),
                if inv.devices.len() == 1 { "" } else { "s" },
                inv.pdus.len(),
                if inv.pdus.len() == 1 { "" } else { "s" },
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(1))
        }
    }
}
