//! `ConsoleError`: everything that can go wrong with a console, with the endpoint or device an
//! administrator needs to act on it.

use std::io;

use crate::ids::{ClientId, DeviceName};

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("{endpoint}: cannot open: {source}")]
    Open {
        endpoint: String,
        #[source]
        source: io::Error,
    },
    #[error("{endpoint}: cannot configure the serial line: {message}")]
    Serial { endpoint: String, message: String },
    #[error("{endpoint}: cannot connect: {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: io::Error,
    },
    /// ser2net accepted the TCP connection but said why it cannot serve it.
    #[error("{endpoint}: ser2net refused the connection: {message}")]
    Refused { endpoint: String, message: String },
    #[error("{endpoint}: closed by the other end")]
    Closed { endpoint: String },
    #[error("{endpoint}: {source}")]
    Io {
        endpoint: String,
        #[source]
        source: io::Error,
    },
    #[error("{endpoint}: timed out {what}")]
    Timeout {
        endpoint: String,
        what: &'static str,
    },
    #[error("console of {device} is offline; input not sent")]
    Offline { device: DeviceName },
    #[error("console of {device} is held by {holder}; use --force to write anyway")]
    HeldByJob {
        device: DeviceName,
        holder: ClientId,
    },
    #[error("console of {device} already has an exclusive writer: {holder}")]
    LeaseHeld {
        device: DeviceName,
        holder: ClientId,
    },
    #[error("console of {device}: this writer lease is no longer held")]
    LeaseLost { device: DeviceName },
    #[error("console of {device}: more than {limit} bytes of input are waiting; input refused")]
    InputBacklog { device: DeviceName, limit: usize },
    #[error("console of {device} is stopped")]
    Stopped { device: DeviceName },
    #[error("no console for device {0:?}")]
    UnknownDevice(String),
}

impl ConsoleError {
    /// Whether the error concerns the link to the board (worth a reconnect), not a request.
    pub fn is_link_error(&self) -> bool {
        matches!(
            self,
            Self::Open { .. }
                | Self::Serial { .. }
                | Self::Connect { .. }
                | Self::Refused { .. }
                | Self::Closed { .. }
                | Self::Io { .. }
                | Self::Timeout { .. }
        )
    }
}
