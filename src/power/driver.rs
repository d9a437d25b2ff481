//! The edge of `power`: a small trait every PDU backend implements. Drivers only switch and
//! read one outlet, once; retries, queueing, timeouts and verification live in the generic layer
//! (`service.rs`), never in a driver.

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;

use crate::ids::{DeviceName, PduName};

/// What an outlet is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutletState {
    On,
    Off,
}

impl OutletState {
    pub fn from_on(on: bool) -> Self {
        if on { Self::On } else { Self::Off }
    }

    pub fn is_on(self) -> bool {
        self == Self::On
    }
}

impl fmt::Display for OutletState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::On => "on",
            Self::Off => "off",
        })
    }
}

/// The outlet a driver call is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutletTarget {
    /// `None` for a device's own power commands.
    pub pdu: Option<PduName>,
    /// As configured or requested (`"08"` stays `"08"`; pdudaemon gets it verbatim).
    pub outlet: String,
    /// The board on it, when one is known (the `{device}` of command templates).
    pub device: Option<DeviceName>,
}

impl OutletTarget {
    /// The outlet number, for drivers that address outlets by number.
    pub fn number(&self) -> Result<u32, DriverError> {
        let n: Option<u32> = if self.outlet.bytes().all(|b| b.is_ascii_digit()) {
            self.outlet.parse().ok()
        } else {
            None
        };
        n.filter(|n| *n > 0).ok_or_else(|| {
            DriverError::new(
                DriverErrorKind::Refused,
                format!("outlet {:?} is not an outlet number", self.outlet),
            )
        })
    }
}

/// What a driver call printed or exchanged, for the daemon log and the job log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriverReply {
    pub transcript: Vec<String>,
}

impl DriverReply {
    pub fn line(s: impl Into<String>) -> Self {
        Self {
            transcript: vec![s.into()],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriverErrorKind {
    /// The driver cannot do this at all (no state query, no native reboot...).
    Unsupported,
    /// No answer: connection refused, host unreachable, no datagram back.
    Unreachable,
    /// The PDU answered with an error (HTTP status, SNMP error-status, exit status).
    Refused,
    /// The answer could not be understood.
    BadReply,
    /// The attempt took longer than the PDU's `timeout`.
    Timeout,
    /// The PDU acknowledged, but the outlet reads back otherwise.
    NotSwitched,
}

/// Why one driver call failed. `output` keeps what a command printed, for the job log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DriverError {
    pub kind: DriverErrorKind,
    pub message: String,
    pub output: Vec<String>,
}

impl DriverError {
    pub fn new(kind: DriverErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            output: Vec::new(),
        }
    }

    pub fn unsupported(what: &str) -> Self {
        Self::new(
            DriverErrorKind::Unsupported,
            format!("the driver cannot {what}"),
        )
    }
}

pub type DriverFuture<'a, T> = BoxFuture<'a, Result<T, DriverError>>;

/// One PDU backend. Implement `set`; the rest defaults to "not supported".
pub trait PowerDriver: Send + Sync + fmt::Debug {
    /// Driver name as in the inventory (`snmp`, `command`...).
    fn kind(&self) -> &'static str;

    /// Switch the outlet on or off, once.
    fn set<'a>(&'a self, target: &'a OutletTarget, on: bool) -> DriverFuture<'a, DriverReply>;

    /// Whether [`Self::get`] works; when it does, every switch is verified by reading back.
    fn can_read(&self) -> bool {
        false
    }

    /// Read the outlet's state, once.
    fn get<'a>(
        &'a self,
        _target: &'a OutletTarget,
    ) -> DriverFuture<'a, (OutletState, DriverReply)> {
        Box::pin(async { Err(DriverError::unsupported("read an outlet's state")) })
    }

    /// Whether the PDU has its own reboot (off, pause, on) that [`Self::reboot`] triggers.
    fn can_reboot(&self) -> bool {
        false
    }

    /// The PDU's own reboot; `delay` is the requested off time where the PDU takes one.
    fn reboot<'a>(
        &'a self,
        _target: &'a OutletTarget,
        _delay: Duration,
    ) -> DriverFuture<'a, DriverReply> {
        Box::pin(async { Err(DriverError::unsupported("reboot natively")) })
    }
}
