//! The `sd_notify(3)` protocol: newline-separated `KEY=VALUE` assignments in one datagram to the
//! `AF_UNIX` socket named by `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
//! Without `NOTIFY_SOCKET` (not started by systemd) every call is a no-op.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;

/// Why a notification could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET {0:?} is neither an absolute path nor an @abstract name")]
    BadAddress(String),
    #[error("NOTIFY_SOCKET {address:?}: {source}")]
    Socket {
        address: String,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug)]
struct Target {
    address: String,
    addr: SocketAddr,
    socket: UnixDatagram,
}

/// A handle to systemd's notification socket; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    target: Option<Arc<Target>>,
}

/// A `STATUS=` value must stay on one line.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

impl Notifier {
    /// From `NOTIFY_SOCKET`; a no-op notifier when unset or unusable (logged once).
    pub fn from_env() -> Self {
        match std::env::var("NOTIFY_SOCKET") {
            Ok(a) if !a.is_empty() => Self::from_address(&a).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot use NOTIFY_SOCKET; systemd will not hear from labd");
                Self::disabled()
            }),
            _ => Self::disabled(),
        }
    }

    /// A notifier for `address`: an absolute path or `@abstract-name`.
    pub fn from_address(address: &str) -> Result<Self, NotifyError> {
        let addr = if let Some(name) = address.strip_prefix('@') {
            SocketAddr::from_abstract_name(name.as_bytes())
        } else if address.starts_with('/') {
            SocketAddr::from_pathname(address)
        } else {
            return Err(NotifyError::BadAddress(address.to_string()));
        }
        .map_err(|source| NotifyError::Socket {
            address: address.to_string(),
            source,
        })?;
        let socket = UnixDatagram::unbound().map_err(|source| NotifyError::Socket {
            address: address.to_string(),
            source,
        })?;
        // Never block the caller (an async task) on a full socket.
        socket
            .set_nonblocking(true)
            .map_err(|source| NotifyError::Socket {
                address: address.to_string(),
                source,
            })?;
        Ok(Self {
            target: Some(Arc::new(Target {
                address: address.to_string(),
                addr,
                socket,
            })),
        })
    }

    /// Sends nothing, ever.
    pub fn disabled() -> Self {
        Self { target: None }
    }

    /// Whether systemd is listening (`NOTIFY_SOCKET` was set).
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `state` (one or more `KEY=VALUE` lines) as one datagram.
    pub fn notify(&self, state: &str) -> Result<(), NotifyError> {
        let Some(t) = &self.target else {
            return Ok(());
        };
        t.socket
            .send_to_addr(state.as_bytes(), &t.addr)
            .map(|_| ())
            .map_err(|source| NotifyError::Socket {
                address: t.address.clone(),
                source,
            })
    }

    /// Start-up finished (initial enumeration done, consoles started): `READY=1` with a status
    /// line, byte for byte what `systemd-notify --ready --status=...` sends.
    pub fn ready(&self, status: &str) -> Result<(), NotifyError> {
        self.notify(&format!("READY=1\nSTATUS={}", one_line(status)))
    }

    /// `STATUS=...`, shown by `systemctl status`.
    pub fn status(&self, status: &str) -> Result<(), NotifyError> {
        self.notify(&format!("STATUS={}", one_line(status)))
    }

    /// Reloading the inventory (SIGHUP); send [`Self::ready`] when done. `MONOTONIC_USEC` lets
    /// systemd ≥ 253 (`Type=notify-reload`) order the reload; older versions ignore it.
    pub fn reloading(&self) -> Result<(), NotifyError> {
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
            .unwrap_or(0);
        self.notify(&format!("RELOADING=1\nMONOTONIC_USEC={now}"))
    }

    /// Shutting down.
    pub fn stopping(&self) -> Result<(), NotifyError> {
        self.notify("STOPPING=1")
    }

    /// One watchdog ping.
    pub fn watchdog(&self) -> Result<(), NotifyError> {
        self.notify("WATCHDOG=1")
    }
}
