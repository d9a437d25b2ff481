//! `labd devices`: the USB serial adapters present (or recorded in dumps), their identity, the
//! inventory device each matches, and a `[device.usb]` snippet for unmatched ones.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::InventoryArg;
use crate::udev::metrics::UdevMetrics;
use crate::udev::{AssumeAlive, Target, Tracker, UdevEvent, live, parse_dump, report};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub inventory: InventoryArg,
    /// Read `udevadm info --query=property` or `udevadm monitor --property` output instead of
    /// asking udev (support bundles, other machines). Event sequences are replayed.
    #[arg(long = "from-dump", value_name = "FILE", num_args = 1..)]
    pub from_dump: Vec<PathBuf>,
}

fn events_from_dumps(files: &[PathBuf]) -> anyhow::Result<Vec<UdevEvent>> {
    let mut events = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let records = parse_dump(&text).with_context(|| format!("{}", f.display()))?;
        for r in &records {
            match UdevEvent::from_record(r) {
                Ok(e) => events.push(e),
                Err(e) => eprintln!("{}: skipped: {e}", f.display()),
            }
        }
    }
    Ok(events)
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let inv = args.inventory.load()?;
    let targets = Target::from_inventory(&inv);
    let (events, source) = if args.from_dump.is_empty() {
        let events = tokio::task::spawn_blocking(live::enumerate_ttys)
            .await
            .context("enumeration task")??;
        let source = if live::udev_daemon_running() {
            "udev".to_string()
        } else {
            "sysfs (no udev daemon runs here: identities are read from sysfs attributes; links from udev rules do not exist)".to_string()
        };
        (events, source)
    } else {
        let names: Vec<String> = args
            .from_dump
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        (events_from_dumps(&args.from_dump)?, names.join(", "))
    };
    // Through the tracker, so event sequences end in the state the daemon would have.
    let registry: &'static crate::metrics::Registry = Box::leak(Box::default());
    let mut tracker = Tracker::new(targets.clone(), UdevMetrics::new(registry));
    // The tracker's online/offline log lines are for the daemon; here the table says it all.
    tracing::dispatcher::with_default(&tracing::Dispatch::none(), || {
        for e in events {
            tracker.apply(e, &AssumeAlive);
        }
    });
    let adapters: Vec<_> = tracker.adapters().cloned().collect();
    println!("source: {source}");
    print!("{}", report::render(&targets, &adapters));
    Ok(ExitCode::SUCCESS)
}
