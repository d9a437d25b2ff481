//! `labd power DEVICE on|off|reboot|status`.
//!
//! The normal path goes through the running daemon's control socket, so a manual request queues
//! behind job requests on the same PDU; that socket arrives with the daemon. Until then (and for
//! admins on a worker whose daemon is stopped) `--direct` builds the power layer in this process
//! from the inventory: same drivers, retries and verification, but no shared queue with a
//! running daemon.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::InventoryArg;
use crate::ids::DeviceName;
use crate::power::{PowerOp, PowerRequest, PowerService};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub inventory: InventoryArg,
    /// The board, as named in the inventory. Without it (and with --direct): every PDU's state.
    pub device: Option<String>,
    /// on, off, reboot or status.
    #[arg(default_value = "status")]
    pub action: String,
    /// Reboot: seconds off (default: the device's reboot_delay). On/off: seconds to wait first.
    #[arg(long)]
    pub delay: Option<f64>,
    /// Drive the PDU from this process instead of through the daemon (admin use; does not queue
    /// behind a running daemon's requests).
    #[arg(long)]
    pub direct: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !args.direct {
        anyhow::bail!(
            "labd power goes through the running daemon's control socket, which this build does \
             not have yet; use `labd power --direct DEVICE ACTION` to drive the PDU from this \
             process (it does not queue behind a running daemon's requests)"
        );
    }
    let inv = args.inventory.load()?;
    let svc = PowerService::new(&inv).context("cannot set up power control")?;
    let Some(device) = args.device else {
        let status = svc.status();
        if args.json {
            println!("{}", serde_json::to_string_pretty(&status)?);
        } else {
            for d in &status.devices {
                let state = d.state.map_or("unknown".to_string(), |s| s.to_string());
                let health = d.reason.as_deref().unwrap_or("ok");
                println!(
                    "{:<20} {:<32} {:<8} {}",
                    d.device,
                    d.target.to_string(),
                    state,
                    health
                );
            }
        }
        return Ok(ExitCode::SUCCESS);
    };
    let device = DeviceName::new(device.as_str())?;
    let op: PowerOp = args.action.parse().map_err(anyhow::Error::msg)?;
    // Progress lines reach stderr through the log (target `labd::power`).
    let mut req = PowerRequest::new(op);
    if let Some(d) = args.delay {
        req = req.delay(Duration::try_from_secs_f64(d).context("--delay must be seconds >= 0")?);
    }
    let result = svc.request(&device, req).await;
    match result {
        Ok(out) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                let state = out.state.map_or("unknown".to_string(), |s| s.to_string());
                let how = if out.verified { " (read back)" } else { "" };
                println!("{device}: {state}{how}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(anyhow::Error::new(e)),
    }
}
