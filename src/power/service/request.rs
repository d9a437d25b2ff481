//! What a caller asks of the power service and what it gets back.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;

use super::super::driver::OutletState;
use super::super::error::TargetName;

/// What to do with an outlet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerOp {
    On,
    Off,
    /// Off, pause, on (or the PDU's own reboot when `native_reboot` is set).
    Reboot,
    /// Read the outlet (through the queue) when the driver can; else the last known state.
    Status,
}

impl PowerOp {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::On => "on",
            Self::Off => "off",
            Self::Reboot => "reboot",
            Self::Status => "status",
        }
    }
}

impl std::str::FromStr for PowerOp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            "reboot" => Ok(Self::Reboot),
            "status" => Ok(Self::Status),
            _ => Err(format!(
                "unknown power operation {s:?} (on, off, reboot, status)"
            )),
        }
    }
}

/// A request with its options.
#[derive(Debug, Clone)]
pub struct PowerRequest {
    pub op: PowerOp,
    /// Reboot: the off time (default: the device's `reboot_delay`, else `[power] reboot_delay`).
    /// On/off: a pause before acting (pdudaemon's deprecated `delay`).
    pub delay: Option<Duration>,
    /// Receives progress and driver output lines as they happen, for a job log.
    pub events: Option<UnboundedSender<String>>,
}

impl PowerRequest {
    pub fn new(op: PowerOp) -> Self {
        Self {
            op,
            delay: None,
            events: None,
        }
    }

    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = Some(d);
        self
    }

    pub fn events(mut self, tx: UnboundedSender<String>) -> Self {
        self.events = Some(tx);
        self
    }
}

/// What a successful request did.
#[derive(Debug, Clone, Serialize)]
pub struct PowerOutcome {
    pub target: TargetName,
    pub op: PowerOp,
    /// The outlet's state afterwards (`None`: unknown, e.g. status of an unreadable PDU never
    /// switched by labd).
    pub state: Option<OutletState>,
    /// The state was read back from the PDU.
    pub verified: bool,
    /// Driver attempts made (all phases).
    pub attempts: u32,
    pub elapsed: Duration,
    /// Progress and driver output, the same lines sent to `PowerRequest::events`.
    pub log: Vec<String>,
}
