//! `PowerError`: what went wrong with a power request, naming the PDU, outlet, device,
//! operation and attempt an admin needs to find the fault.

use std::fmt;

use serde::Serialize;

use crate::ids::{DeviceName, PduName};

use super::driver::{DriverError, DriverErrorKind};

/// Which outlet (or which device's commands) a request was about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetName {
    pub pdu: Option<PduName>,
    pub outlet: Option<String>,
    pub device: Option<DeviceName>,
}

impl fmt::Display for TargetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.pdu, &self.outlet, &self.device) {
            (Some(p), Some(o), Some(d)) => write!(f, "PDU {p} outlet {o} (device {d})"),
            (Some(p), Some(o), None) => write!(f, "PDU {p} outlet {o}"),
            (Some(p), None, _) => write!(f, "PDU {p}"),
            (None, _, Some(d)) => write!(f, "device {d} power commands"),
            (None, _, None) => f.write_str("power"),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum PowerError {
    #[error("unknown device {0:?}")]
    UnknownDevice(String),
    #[error("device {0} has no [device.power] in the inventory")]
    NotConfigured(DeviceName),
    #[error("unknown PDU {0:?}")]
    UnknownPdu(String),
    #[error("{target}: {reason}")]
    BadOutlet { target: TargetName, reason: String },
    #[error("{target}: cannot {op}: {source}")]
    Unsupported {
        target: TargetName,
        op: &'static str,
        #[source]
        source: Box<DriverError>,
    },
    /// Every attempt failed; `source` is the last attempt's error.
    #[error("{target}: {op} failed on attempt {attempt} of {attempts}{}: {source}{}",
        if *.unhealthy { " (PDU is unhealthy: one attempt only)" } else { "" },
        output_tail(&.source.output))]
    Failed {
        target: TargetName,
        op: &'static str,
        attempt: u32,
        attempts: u32,
        unhealthy: bool,
        #[source]
        source: Box<DriverError>,
    },
    #[error("{pdu}: cannot build its driver: {source}")]
    Driver {
        pdu: PduName,
        #[source]
        source: Box<DriverError>,
    },
    #[error("{target}: {op}: the power task ended unexpectedly: {reason}")]
    Internal {
        target: TargetName,
        op: &'static str,
        reason: String,
    },
}

fn output_tail(output: &[String]) -> String {
    match output.last() {
        Some(l) if output.len() > 1 => format!(" (last output: {l:?})"),
        _ => String::new(),
    }
}

impl PowerError {
    /// What a driver printed during the failed attempt, for the job log.
    pub fn output(&self) -> &[String] {
        match self {
            Self::Failed { source, .. } | Self::Unsupported { source, .. } => &source.output,
            _ => &[],
        }
    }

    /// The kind of the last driver failure, when there was one.
    pub fn driver_kind(&self) -> Option<DriverErrorKind> {
        match self {
            Self::Failed { source, .. } | Self::Unsupported { source, .. } => Some(source.kind),
            _ => None,
        }
    }
}
