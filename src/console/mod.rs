//! Serial consoles: the `ConsoleSource` trait and its tty and ser2net-telnet sources, the
//! per-device hub that fans one board's byte stream out to the journal, the job runner, attached
//! operators and telnet listener clients, and reconnection after USB replug or ser2net restarts.
//!
//! Invariant: only a console's hub writes to its board; everything else sends input through a
//! [`ConsoleHandle`], which the hub journals with who sent it.
//!
//! Client names (`ClientId`) used across labd: `job:<id>` for the job runner, `op:<user>` for
//! attached operators, `telnet:<peer address>` for telnet listener clients.

pub mod config;
mod error;
mod handle;
mod hub;
pub mod journal;
pub mod listener;
pub mod metrics;
mod queue;
mod registry;
pub mod rfc2217;
pub mod source;
pub mod telnet;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

pub use error::ConsoleError;
pub use handle::{Console, ConsoleHandle, WriterLease};
pub(crate) use hub::opened_is;
pub use queue::{ConsoleEvent, Subscription};
pub use registry::{ConsoleRegistry, RegistryChange};
pub use source::ConsoleSource;

use crate::ids::DeviceName;
use crate::inventory::{DeviceConfig, WorkerConfig};
use config::JournalConfig;

/// Reopen delays after a loss: `initial`, doubling up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectPolicy {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(5),
        }
    }
}

/// How a subscriber wants its stream.
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    /// Shown in logs (the client id).
    pub name: String,
    /// Byte budget of the subscriber's queue; beyond it data is dropped and counted.
    pub queue_bytes: usize,
    /// Scrollback bytes to replay first (0 = live only).
    pub replay: usize,
}

impl SubscribeOptions {
    /// An attached operator: 1 MiB queue, replays the scrollback.
    pub fn operator(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            queue_bytes: 1 << 20,
            replay: DEFAULT_SCROLLBACK,
        }
    }

    /// The job runner: a roomy 16 MiB queue (pattern matching may lag behind a fast boot log),
    /// live only. `Missed` events still tell it if it ever falls that far behind.
    pub fn job(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            queue_bytes: 16 << 20,
            replay: 0,
        }
    }

    /// A telnet listener client: live only, like ser2net.
    pub fn telnet(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            queue_bytes: 1 << 20,
            replay: 0,
        }
    }
}

/// Scrollback kept per console for attach replay.
pub const DEFAULT_SCROLLBACK: usize = 64 * 1024;
/// Input waiting for a slow UART beyond which more input is refused.
pub const DEFAULT_INPUT_LIMIT: usize = 1 << 20;

/// A console's state as `labd status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleStatus {
    pub device: DeviceName,
    /// The configured source (`tty /dev/lab/bbb01 115200 8N1`, `ser2net host:port (telnet)`).
    pub source: String,
    pub online: bool,
    /// What was last opened (`/dev/lab/bbb01 -> /dev/ttyUSB3`, `127.0.0.1:7001`).
    pub opened: Option<String>,
    /// When `online` last changed.
    pub since: SystemTime,
    pub last_error: Option<String>,
    /// Subscribers attached (operators, telnet clients, jobs).
    pub clients: usize,
    /// Holder of the exclusive writer lease, if any.
    pub writer: Option<String>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub reconnects: u64,
    /// The telnet listener's address, if one runs.
    pub listen: Option<String>,
    /// Why the configured telnet listener does not run (the port was taken...); retried on
    /// the next reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_error: Option<String>,
}

/// Everything needed to start one console.
#[derive(Clone)]
pub struct ConsoleSpec {
    pub source: Arc<dyn ConsoleSource>,
    pub reconnect: ReconnectPolicy,
    pub scrollback: usize,
    pub input_limit: usize,
}

impl ConsoleSpec {
    pub fn new(source: Arc<dyn ConsoleSource>) -> Self {
        Self {
            source,
            reconnect: ReconnectPolicy::default(),
            scrollback: DEFAULT_SCROLLBACK,
            input_limit: DEFAULT_INPUT_LIMIT,
        }
    }

    /// The spec of an inventory device, or `None` if it has no console.
    pub fn from_device(dev: &DeviceConfig) -> Option<Self> {
        let console = dev.console.as_ref()?;
        let endpoint = console.endpoint()?;
        Some(Self::new(source::from_endpoint(
            &endpoint,
            console.line_settings(),
        )))
    }
}

/// Where consoles keep their journals.
#[derive(Debug, Clone)]
pub struct ConsoleContext {
    pub journal_dir: PathBuf,
    pub journal: JournalConfig,
}

impl ConsoleContext {
    pub fn from_worker(w: &WorkerConfig) -> Self {
        Self {
            journal_dir: w.journal_dir(),
            journal: w.journal.clone(),
        }
    }
}
