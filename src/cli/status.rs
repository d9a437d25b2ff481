//! `labd status`: what the running daemon owns: each console's state, where its adapter is,
//! each device's power and each PDU's health.

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
    let power: Option<super::power::PowerView> = reply
        .get("power")
        .filter(|v| !v.is_null())
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    let discovery = reply.get("discovery").cloned().unwrap_or_default();
    let boards = reply.get("boards").cloned().unwrap_or_default();
    // Who holds a board (`job 77`, `group 900`, `master job 12`), from the reservations.
    let held_by = |dev: &str| -> Option<String> {
        boards.get("held")?.as_array()?.iter().find_map(|h| {
            (h.get("device")?.as_str()? == dev).then(|| h.get("by")?.as_str().map(String::from))?
        })
    };
    let status: StatusReply =
        serde_json::from_value(reply).context("unexpected status reply from the daemon")?;
    let power_of = |dev: &str| {
        power
            .as_ref()
            .and_then(|p| p.devices.iter().find(|d| d.device == dev))
    };
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
        if let Some(e) = &c.listen_error {
            println!("    telnet:   not listening: {e}");
        }
        if let Some(n) = discovery
            .get("devices")
            .and_then(|d| d.get(c.device.as_str()))
        {
            let node = n.get("node").and_then(|v| v.as_str()).unwrap_or("absent");
            let via = n.get("via").and_then(|v| v.as_str()).unwrap_or("?");
            println!("    adapter:  {node} (followed by {via})");
        }
        if let Some(p) = power_of(c.device.as_str()) {
            println!("    power:    {}, {}", p.state_text(), p.target_text());
        }
        if let Some(h) = held_by(c.device.as_str()) {
            println!("    job:      {h}");
        }
    }
    if let Some(p) = &power {
        let consoles: Vec<&str> = status.consoles.iter().map(|c| c.device.as_str()).collect();
        for d in p
            .devices
            .iter()
            .filter(|d| !consoles.contains(&d.device.as_str()))
        {
            println!("{:<16} (no console)", d.device);
            println!("    power:    {}, {}", d.state_text(), d.target_text());
        }
        for pdu in &p.pdus {
            println!("pdu {}", pdu.line());
        }
    }
    let waiting: Vec<&str> = boards
        .get("waiting")
        .and_then(|w| w.as_array())
        .map(|w| w.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    if !waiting.is_empty() {
        println!("waiting for boards: {}", waiting.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}
