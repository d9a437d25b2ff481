//! Daemon glue for power: the daemon's one [`PowerService`] behind a handle that survives
//! inventory reloads ([`PowerControl`]), and the control-socket `power` request with its client
//! (`labd power` talks to the daemon, so an operator's request queues behind a job's).
//!
//! Reload: when nothing power-related changed (`[power]`, `[[pdu]]`, `[device.power]`, compared
//! resolved, so moving lines does not count), the running service is kept as it is. Otherwise a
//! new service is built from the handle's [`UnitPool`]: every PDU whose own settings did not
//! change keeps its unit (queue, health, last known outlet states), and a PDU whose settings
//! changed gets a new unit on the old one's queue and outlet locks. So the services before and
//! after a reload share each PDU's serialisation: a job that holds the old service, a request
//! whose caller went away, or a pdudaemon connection still on the old listener never reach a
//! PDU at the same time as a request through the new service. The swap itself also waits for
//! the requests running through this handle.

use std::path::Path;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use labd_hw_fixtures::simpdu::SimPdu;

use crate::control::ControlError;
use crate::ids::{DeviceName, PduName};
use crate::inventory::Inventory;

use super::error::TargetName;
use super::settings::{self, DeviceTarget, ResolvedPdu};
use super::{
    DevicePowerStatus, PowerError, PowerOp, PowerOutcome, PowerRequest, PowerService, PowerStatus,
    UnitPool,
};

/// What decides whether a reload must rebuild the power service.
#[derive(Debug, Clone, PartialEq)]
struct Fingerprint {
    pdus: Vec<ResolvedPdu>,
    devices: Vec<(DeviceName, DeviceTarget, Option<Duration>)>,
    unhealthy_after: u32,
    reboot_delay: Duration,
    max_retry_delay: Duration,
}

fn fingerprint(inv: &Inventory) -> Option<Fingerprint> {
    let pdus = inv
        .pdus
        .iter()
        .map(|p| settings::resolve_pdu(p).ok())
        .collect::<Option<Vec<_>>>()?;
    let mut devices = Vec::new();
    for d in &inv.devices {
        let Some(p) = &d.power else { continue };
        let t = settings::resolve_device(d.name(), d.name.span(), p, &inv.pdus).ok()?;
        devices.push((
            d.name().clone(),
            t,
            p.reboot_delay.as_ref().map(|r| r.get_ref().get()),
        ));
    }
    let ps = inv.power.clone().unwrap_or_default();
    Some(Fingerprint {
        pdus,
        devices,
        unhealthy_after: ps.unhealthy_after(),
        reboot_delay: ps.reboot_delay(),
        max_retry_delay: ps.max_retry_delay(),
    })
}

/// What [`PowerControl::install`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// The first service.
    New,
    /// Nothing power-related changed: the running service (queues, states) is kept.
    Kept,
    /// A new service replaced the old one. PDUs whose own settings are unchanged keep their
    /// queue, health and last known outlet states; changed ones start over on the same queue.
    Replaced,
}

/// The daemon's power layer: every power request of the daemon (control socket, job runner)
/// goes through here, so each PDU has exactly one queue.
pub struct PowerControl {
    current: RwLock<Option<(PowerService, Option<Fingerprint>)>>,
    /// Requests hold it shared; a swap takes it exclusively (waits for them to finish).
    gate: tokio::sync::RwLock<()>,
    /// In-process simulators for `sim` PDUs without `url` (`labd demo`, tests).
    sims: Mutex<Vec<(PduName, SimPdu)>>,
    /// Units (queues, outlet locks, health) shared by every service this handle builds.
    pool: UnitPool,
}

impl Default for PowerControl {
    fn default() -> Self {
        Self::new()
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

impl PowerControl {
    /// No service yet: requests fail until [`Self::install`] ran.
    pub fn new() -> Self {
        Self {
            current: RwLock::new(None),
            gate: tokio::sync::RwLock::new(()),
            sims: Mutex::new(Vec::new()),
            pool: UnitPool::new(),
        }
    }

    /// Drives the `sim` PDU `pdu` (no `url`) through this in-process simulator, now and after
    /// every rebuild. Call before [`Self::install`].
    pub fn attach_sim(&self, pdu: PduName, sim: SimPdu) {
        self.sims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((pdu, sim));
    }

    fn build(&self, inv: &Inventory) -> Result<PowerService, PowerError> {
        let sims = self.sims.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut b = PowerService::builder(inv).pool(&self.pool);
        for (name, sim) in sims {
            if inv.pdus.iter().any(|p| p.name() == &name) {
                b = b.attach_sim(&name, sim);
            }
        }
        b.build()
    }

    /// Builds the service for `inv` (or keeps the running one when nothing power-related
    /// changed). A replacement waits until the requests running through this handle are done.
    pub async fn install(&self, inv: &Inventory) -> Result<Installed, PowerError> {
        let fp = fingerprint(inv);
        let had = {
            let cur = read(&self.current);
            match cur.as_ref() {
                Some((_, old)) if old.is_some() && *old == fp => return Ok(Installed::Kept),
                Some(_) => true,
                None => false,
            }
        };
        let service = self.build(inv)?;
        let _exclusive = self.gate.write().await;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some((service, fp));
        Ok(if had {
            Installed::Replaced
        } else {
            Installed::New
        })
    }

    /// The service in force (for status, and for the pdudaemon listener, which is restarted
    /// when the service is replaced).
    pub fn service(&self) -> Option<PowerService> {
        read(&self.current).as_ref().map(|(s, _)| s.clone())
    }

    /// Powers a device through its PDU's queue. `req.events` receives every progress and
    /// driver output line as it happens (for a job log).
    pub async fn request(
        &self,
        device: &DeviceName,
        req: PowerRequest,
    ) -> Result<PowerOutcome, PowerError> {
        let _shared = self.gate.read().await;
        let Some(service) = self.service() else {
            return Err(PowerError::Internal {
                target: TargetName {
                    pdu: None,
                    outlet: None,
                    device: Some(device.clone()),
                },
                op: req.op.as_str(),
                reason: "the daemon's power service is not running".into(),
            });
        };
        service.request(device, req).await
    }

    /// `request` with default options.
    pub async fn power(
        &self,
        device: &DeviceName,
        op: PowerOp,
    ) -> Result<PowerOutcome, PowerError> {
        self.request(device, PowerRequest::new(op)).await
    }

    /// Every PDU and device with health and last known states.
    pub fn status(&self) -> Option<PowerStatus> {
        self.service().map(|s| s.status())
    }

    /// One device's last known power and whether it can be powered now (`None`: no power
    /// control for that device).
    pub fn device_status(&self, device: &DeviceName) -> Option<DevicePowerStatus> {
        self.service()?.device_status(device)
    }
}

/// `{"request": "power", ...}`: switch or read a device's power through the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PowerCommand {
    pub device: String,
    pub op: PowerOp,
    /// Reboot: the off time; on/off: a pause first (milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
}

/// The result of a successful request as the control socket carries it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PowerDone {
    /// `PDU pdu1 outlet 3 (device bbb01)`.
    pub target: String,
    pub op: PowerOp,
    /// `on`, `off`, or `None` when unknown.
    pub state: Option<String>,
    /// The state was read back from the PDU.
    pub verified: bool,
    pub attempts: u32,
    pub elapsed_ms: u64,
}

impl From<&PowerOutcome> for PowerDone {
    fn from(o: &PowerOutcome) -> Self {
        Self {
            target: o.target.to_string(),
            op: o.op,
            state: o.state.map(|s| s.to_string()),
            verified: o.verified,
            attempts: o.attempts,
            elapsed_ms: o.elapsed.as_millis() as u64,
        }
    }
}

/// One line of the stream after the `power` request was accepted: progress lines, then the end.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum PowerEvent {
    /// A progress or driver output line (`PDU pdu1 outlet 3 (device bbb01): off (attempt 1 of 4)`).
    Line { line: String },
    /// The request succeeded.
    Done { outcome: PowerDone },
    /// The request failed: the error names PDU, outlet, operation and attempt; `output` is what
    /// the driver printed during the failed attempt.
    Failed { error: String, output: Vec<String> },
}

/// How a `power` request through the daemon ended.
#[derive(Debug, Clone, PartialEq)]
pub enum PowerResult {
    Done(PowerDone),
    Failed { error: String, output: Vec<String> },
}

/// Sends `cmd` to the daemon at `socket`; calls `on_line` for every progress line as it
/// arrives. Transport problems and refused requests (unknown device...) are `Err`; a power
/// request that ran and failed is `Ok(PowerResult::Failed)`.
pub async fn request_through_daemon(
    socket: &Path,
    cmd: &PowerCommand,
    mut on_line: impl FnMut(&str),
) -> Result<PowerResult, ControlError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ControlError::Connect {
            path: socket.to_path_buf(),
            source,
        })?;
    let (r, mut w) = stream.into_split();
    let mut body =
        serde_json::to_value(cmd).map_err(|e| ControlError::BadRequest(e.to_string()))?;
    if let serde_json::Value::Object(m) = &mut body {
        m.insert("request".into(), "power".into());
    }
    let mut line =
        serde_json::to_vec(&body).map_err(|e| ControlError::BadRequest(e.to_string()))?;
    line.push(b'\n');
    w.write_all(&line).await?;
    let mut lines = BufReader::new(r).lines();
    let first = lines
        .next_line()
        .await?
        .ok_or_else(|| ControlError::BadReply("the daemon closed the connection".into()))?;
    let v: serde_json::Value =
        serde_json::from_str(&first).map_err(|e| ControlError::BadReply(e.to_string()))?;
    match v.get("ok").and_then(serde_json::Value::as_bool) {
        Some(true) => {}
        Some(false) => {
            return Err(ControlError::Remote(
                v.get("error")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("unknown error")
                    .to_string(),
            ));
        }
        None => return Err(ControlError::BadReply(format!("no \"ok\" field in {v}"))),
    }
    while let Some(l) = lines.next_line().await? {
        let ev: PowerEvent =
            serde_json::from_str(&l).map_err(|e| ControlError::BadReply(format!("{e}: {l}")))?;
        match ev {
            PowerEvent::Line { line } => on_line(&line),
            PowerEvent::Done { outcome } => return Ok(PowerResult::Done(outcome)),
            PowerEvent::Failed { error, output } => {
                return Ok(PowerResult::Failed { error, output });
            }
        }
    }
    Err(ControlError::BadReply(
        "the daemon closed the connection before the power request finished".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_as_tagged_lines() {
        let ev = PowerEvent::Line {
            line: "PDU p outlet 1 (device d): off (attempt 1 of 4)".into(),
        };
        let text = serde_json::to_string(&ev).unwrap();
        assert_eq!(
            text,
            r#"{"event":"line","line":"PDU p outlet 1 (device d): off (attempt 1 of 4)"}"#
        );
        assert_eq!(serde_json::from_str::<PowerEvent>(&text).unwrap(), ev);
        let cmd: PowerCommand =
            serde_json::from_str(r#"{"request":"power","device":"d","op":"reboot"}"#).unwrap();
        assert_eq!(cmd.op, PowerOp::Reboot);
        assert_eq!(cmd.delay_ms, None);
        assert!(serde_json::from_str::<PowerCommand>(r#"{"device":"d","op":"dance"}"#).is_err());
    }
}
