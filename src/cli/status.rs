//! `labd status`: what the running daemon owns and the state of each console.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;

use super::InventoryArg;
use crate::control::{ControlClient, StatusReply};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub inventory: InventoryArg,
    /// The daemon's control socket (default: `labd.sock` in the inventory's state_dir).
    #[arg(long)]
    pub socket: Option<std::path::PathBuf>,
    /// Print the daemon's reply as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The control socket from `--socket` or the inventory.
pub fn socket_path(
    socket: &Option<std::path::PathBuf>,
    inventory: &InventoryArg,
) -> anyhow::Result<std::path::PathBuf> {
    match socket {
        Some(p) => Ok(p.clone()),
        None => Ok(inventory.load()?.worker.control_socket()),
    }
}

fn ago(t: SystemTime) -> String {
    let d = SystemTime::now().duration_since(t).unwrap_or_default();
    let d = Duration::from_secs(d.as_secs());
    format!("{} ago", humantime::format_duration(d))
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = ControlClient::new(socket_path(&args.socket, &args.inventory)?);
    let reply = client
        .request(serde_json::json!({"request": "status"}))
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(ExitCode::SUCCESS);
    }
    let status: StatusReply =
        serde_json::from_value(reply).context("unexpected status reply from the daemon")?;
    println!(
        "labd {} on worker {} (pid {}): {} console{}",
        status.version,
        status.worker,
        status.pid,
        status.consoles.len(),
        if status.consoles.len() == 1 { "" } else { "s" }
    );
    for c in &status.consoles {
        let state = if c.online { "online" } else { "OFFLINE" };
        println!("{:<16} {state:<8} {}", c.device.as_str(), ago(c.since));
        println!("    source:   {}", c.source);
        if let Some(o) = &c.opened {
            println!("    opened:   {o}");
        }
        if let Some(e) = &c.last_error {
            println!("    error:    {e}");
        }
        println!(
            "    clients:  {}   writer: {}   bytes in/out: {}/{}   reconnects: {}",
            c.clients,
            c.writer.as_deref().unwrap_or("-"),
            c.bytes_in,
            c.bytes_out,
            c.reconnects
        );
        if let Some(l) = &c.listen {
            println!("    telnet:   {l}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
