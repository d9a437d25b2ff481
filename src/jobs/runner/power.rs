//! Power for a job's board, as LAVA's power actions do it: `hard_reset` (`pdu-reboot`),
//! `power_on` (after `pre_power_command`), `power_off`, `pre_os_command`.
//!
//! A board labd powers itself (an inventory device with `[device.power]`) goes through the
//! [`PowerService`], so a job queues behind and with `labd power` and the pdudaemon listener on
//! the same PDU; the service's progress and driver output become job log lines. Otherwise the
//! device configuration's commands run as LAVA's `run_cmd` runs them: `nice` with the
//! command split like a shell does (`shlex.split`), no shell, output logged as `>> line`.

use std::process::Stdio;
use std::time::Instant;

use tokio::io::{AsyncBufReadExt, BufReader};

use super::connection::py_repr_list;
use super::joblog::JobLog;
use crate::ids::DeviceName;
use crate::jobs::device::DeviceCommands;
use crate::jobs::error::{LavaError, LavaErrorType};
use crate::jobs::model::StringList;
use crate::power::{PowerOp, PowerRequest, PowerService};

/// One of LAVA's power operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerStep {
    HardReset,
    PowerOn,
    PowerOff,
    PrePower,
    PreOs,
}

impl PowerStep {
    fn verb(self) -> &'static str {
        match self {
            Self::HardReset => "reboot",
            Self::PowerOn => "power-on",
            Self::PowerOff => "power-off",
            Self::PrePower => "run pre-power",
            Self::PreOs => "run pre-os",
        }
    }
}

/// How the board of a job is powered.
#[derive(Clone)]
pub enum BoardPower {
    /// labd's own power control of an inventory device.
    Service {
        power: PowerService,
        device: DeviceName,
        /// `pre_power_command`/`pre_os_command` of the device configuration still run as
        /// commands.
        commands: DeviceCommands,
    },
    /// The device configuration's commands.
    Commands(DeviceCommands),
}

impl BoardPower {
    fn commands(&self) -> &DeviceCommands {
        match self {
            BoardPower::Service { commands, .. } | BoardPower::Commands(commands) => commands,
        }
    }

    fn command_list(&self, step: PowerStep) -> Option<&StringList> {
        let c = self.commands();
        match step {
            PowerStep::HardReset => c.hard_reset.as_ref(),
            PowerStep::PowerOn => c.power_on.as_ref(),
            PowerStep::PowerOff => c.power_off.as_ref(),
            PowerStep::PrePower => c.pre_power_command.as_ref(),
            PowerStep::PreOs => c.pre_os_command.as_ref(),
        }
    }

    /// Whether this step does anything for this board.
    pub fn has(&self, step: PowerStep) -> bool {
        match (self, step) {
            (
                BoardPower::Service { .. },
                PowerStep::HardReset | PowerStep::PowerOn | PowerStep::PowerOff,
            ) => true,
            _ => self
                .command_list(step)
                .is_some_and(|l| l.0.iter().any(|c| !c.trim().is_empty())),
        }
    }

    /// Runs `step`. Failures are infrastructure errors with LAVA's messages
    /// (`Unable to reboot: '<cmd>' failed`).
    pub async fn run(&self, step: PowerStep, log: &JobLog) -> Result<(), LavaError> {
        if let BoardPower::Service { power, device, .. } = self {
            let op = match step {
                PowerStep::HardReset => Some(PowerOp::Reboot),
                PowerStep::PowerOn => Some(PowerOp::On),
                PowerStep::PowerOff => Some(PowerOp::Off),
                _ => None,
            };
            if let Some(op) = op {
                return service_request(power, device, op, log).await;
            }
        }
        let Some(list) = self.command_list(step) else {
            return Ok(());
        };
        for cmd in &list.0 {
            if cmd.trim().is_empty() {
                continue;
            }
            run_cmd(cmd, log).await.map_err(|_| {
                LavaError::new(
                    LavaErrorType::Infrastructure,
                    format!("Unable to {}: '{cmd}' failed", step.verb()),
                )
            })?;
        }
        Ok(())
    }
}

async fn service_request(
    power: &PowerService,
    device: &DeviceName,
    op: PowerOp,
    log: &JobLog,
) -> Result<(), LavaError> {
    log.debug(format!("labd power: {device} {}", op.as_str()));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let forward = {
        let log = log.clone();
        tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                log.debug(format!(">> {line}"));
            }
        })
    };
    let r = power
        .request(device, PowerRequest::new(op).events(tx))
        .await;
    let _ = forward.await;
    match r {
        Ok(o) => {
            log.debug(format!(
                "labd power: {device} {} done in {:.2}s ({})",
                op.as_str(),
                o.elapsed.as_secs_f64(),
                match (o.state, o.verified) {
                    (Some(s), true) => format!("outlet {s:?}, verified").to_lowercase(),
                    (Some(s), false) => format!("outlet {s:?}").to_lowercase(),
                    (None, _) => "state unknown".into(),
                }
            ));
            Ok(())
        }
        Err(e) => {
            for line in e.output() {
                log.debug(format!(">> {line}"));
            }
            Err(LavaError::new(LavaErrorType::Infrastructure, e.to_string()))
        }
    }
}

/// `Action.run_cmd`: `nice <shlex.split(cmd)>`, output logged line by line. Returns the exit
/// status, or an error (after logging LAVA's lines) when it cannot run or exits non-zero.
pub async fn run_cmd(cmd: &str, log: &JobLog) -> Result<(), ()> {
    let Some(args) = shlex::split(cmd) else {
        log.error(format!("Unable to run: unbalanced quotes in {cmd:?}"));
        return Err(());
    };
    log.debug(format!("Calling: 'nice' '{}'", args.join("' '")));
    let start = Instant::now();
    let child = tokio::process::Command::new("nice")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            log.error(format!("Unable to run: {e}"));
            log.error(format!("Unable to run 'nice' {}", py_repr_list(&args)));
            return Err(());
        }
    };
    let out = child.stdout.take().map(|o| BufReader::new(o).lines());
    let err = child.stderr.take().map(|e| BufReader::new(e).lines());
    let pump = |lines: Option<tokio::io::Lines<BufReader<_>>>, log: JobLog| async move {
        if let Some(mut lines) = lines {
            while let Ok(Some(l)) = lines.next_line().await {
                log.debug(format!(">> {l}"));
            }
        }
    };
    let (_, _, status) = tokio::join!(
        pump(out, log.clone()),
        pump_err(err, log.clone()),
        child.wait()
    );
    let code = status.ok().and_then(|s| s.code()).unwrap_or(-1);
    log.debug(format!(
        "Returned {code} in {} seconds",
        start.elapsed().as_secs()
    ));
    if code != 0 {
        log.error(format!("Unable to run 'nice' {}", py_repr_list(&args)));
        return Err(());
    }
    Ok(())
}

async fn pump_err(
    lines: Option<tokio::io::Lines<BufReader<tokio::process::ChildStderr>>>,
    log: JobLog,
) {
    if let Some(mut lines) = lines {
        while let Ok(Some(l)) = lines.next_line().await {
            log.debug(format!(">> {l}"));
        }
    }
}
