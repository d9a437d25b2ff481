//! `labd power DEVICE on|off|reboot|status`.
//!
//! Goes through the running daemon's control socket, so the request queues behind job requests
//! on the same PDU; progress lines (each attempt, the driver's output) stream to stderr as they
//! happen, the result goes to stdout. Without a device: every device's last known power and
//! every PDU's health.
//!
//! `--direct` is the admin's escape hatch for a worker whose daemon is stopped: it builds the
//! power layer in this process from the inventory (same drivers, retries and verification) but
//! does not queue behind a running daemon's requests, so never use it while the daemon runs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use super::InventoryArg;
use crate::control::ControlClient;
use crate::ids::DeviceName;
use crate::power::control::{PowerCommand, PowerResult, request_through_daemon};
use crate::power::{PowerOp, PowerRequest, PowerService};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub inventory: InventoryArg,
    /// The daemon's control socket (default: `labd.sock` in the inventory's state_dir).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// The board, as named in the inventory. Without it: every device's power and PDU health.
    pub device: Option<String>,
    /// on, off, reboot or status.
    #[arg(default_value = "status")]
    pub action: String,
    /// Reboot: seconds off (default: the device's reboot_delay). On/off: seconds to wait first.
    #[arg(long)]
    pub delay: Option<f64>,
    /// Drive the PDU from this process instead of through the daemon (admin use while the
    /// daemon is stopped: it does not queue behind a running daemon's requests).
    #[arg(long)]
    pub direct: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Do not print progress lines.
    #[arg(short, long)]
    pub quiet: bool,
}

/// What `labd status` and `labd power` show of the power layer (the daemon's `power` status).
#[derive(Debug, Deserialize)]
pub struct PowerView {
    pub pdus: Vec<PduView>,
    pub devices: Vec<DeviceView>,
}

#[derive(Debug, Deserialize)]
pub struct PduView {
    pub name: String,
    pub driver: String,
    pub healthy: bool,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub outlets: Vec<OutletView>,
}

#[derive(Debug, Deserialize)]
pub struct OutletView {
    pub outlet: String,
    pub state: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct TargetView {
    pub pdu: Option<String>,
    pub outlet: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct DeviceView {
    pub device: String,
    pub target: TargetView,
    pub state: Option<String>,
    pub verified: bool,
    pub can_power: bool,
    pub reason: Option<String>,
}

impl DeviceView {
    /// `PDU apc1 outlet 3` or `commands`.
    pub fn target_text(&self) -> String {
        match (&self.target.pdu, &self.target.outlet) {
            (Some(p), Some(o)) => format!("PDU {p} outlet {o}"),
            (Some(p), None) => format!("PDU {p}"),
            _ => "power commands".into(),
        }
    }

    /// `on (read back)`, `off`, `unknown`, plus why it cannot be powered.
    pub fn state_text(&self) -> String {
        let mut s = self.state.clone().unwrap_or_else(|| "unknown".into());
        if self.verified {
            s.push_str(" (read back)");
        }
        if !self.can_power {
            s.push_str(&format!(
                "; CANNOT POWER: {}",
                self.reason.as_deref().unwrap_or("PDU unhealthy")
            ));
        }
        s
    }
}

impl PduView {
    pub fn line(&self) -> String {
        let health = if self.healthy {
            "healthy".to_string()
        } else {
            format!(
                "UNHEALTHY after {} failures ({})",
                self.consecutive_failures,
                self.last_error.as_deref().unwrap_or("?")
            )
        };
        let outlets: Vec<String> = self
            .outlets
            .iter()
            .map(|o| format!("{} {}", o.outlet, o.state.as_deref().unwrap_or("unknown")))
            .collect();
        format!(
            "{} ({}): {health}; outlets: {}",
            self.name,
            self.driver,
            if outlets.is_empty() {
                "-".to_string()
            } else {
                outlets.join(", ")
            }
        )
    }
}

fn print_view(v: &PowerView) {
    for d in &v.devices {
        println!(
            "{:<20} {:<28} {}",
            d.device,
            d.target_text(),
            d.state_text()
        );
    }
    for p in &v.pdus {
        println!("pdu {}", p.line());
    }
}

fn delay(args: &Args) -> anyhow::Result<Option<Duration>> {
    args.delay
        .map(|d| Duration::try_from_secs_f64(d).context("--delay must be seconds >= 0"))
        .transpose()
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.direct {
        return direct(args).await;
    }
    let socket = super::status::socket_path(&args.socket, &args.inventory)?;
    let Some(device) = args.device.clone() else {
        let reply = ControlClient::new(&socket)
            .request(serde_json::json!({"request": "status"}))
            .await?;
        let power = reply.get("power").cloned().unwrap_or_default();
        if args.json {
            println!("{}", serde_json::to_string_pretty(&power)?);
            return Ok(ExitCode::SUCCESS);
        }
        let view: PowerView =
            serde_json::from_value(power).context("unexpected power status from the daemon")?;
        print_view(&view);
        return Ok(ExitCode::SUCCESS);
    };
    let op: PowerOp = args.action.parse().map_err(anyhow::Error::msg)?;
    let cmd = PowerCommand {
        device: device.clone(),
        op,
        delay_ms: delay(&args)?.map(|d| d.as_millis() as u64),
    };
    let quiet = args.quiet;
    let result = request_through_daemon(&socket, &cmd, |line| {
        if !quiet {
            eprintln!("{line}");
        }
    })
    .await?;
    match result {
        PowerResult::Done(done) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&done)?);
            } else {
                let state = done.state.as_deref().unwrap_or("unknown");
                let how = if done.verified { " (read back)" } else { "" };
                println!("{device}: {state}{how}");
            }
            Ok(ExitCode::SUCCESS)
        }
        PowerResult::Failed { error, output } => {
            for l in &output {
                eprintln!("  | {l}");
            }
            anyhow::bail!("{error}")
        }
    }
}

/// `--direct`: the power layer in this process.
async fn direct(args: Args) -> anyhow::Result<ExitCode> {
    let inv = args.inventory.load()?;
    let svc = PowerService::new(&inv).context("cannot set up power control")?;
    let Some(device) = args.device.clone() else {
        let status = serde_json::to_value(svc.status())?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&status)?);
        } else {
            print_view(&serde_json::from_value(status)?);
        }
        return Ok(ExitCode::SUCCESS);
    };
    let device = DeviceName::new(device.as_str())?;
    let op: PowerOp = args.action.parse().map_err(anyhow::Error::msg)?;
    // Progress lines reach stderr through the log (target `labd::power`).
    let mut req = PowerRequest::new(op);
    if let Some(d) = delay(&args)? {
        req = req.delay(d);
    }
    let out = svc.request(&device, req).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let state = out.state.map_or("unknown".to_string(), |s| s.to_string());
        let how = if out.verified { " (read back)" } else { "" };
        println!("{device}: {state}{how}");
    }
    Ok(ExitCode::SUCCESS)
}
