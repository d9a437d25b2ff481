//! `CoordinatorError`: everything that goes wrong in Multi-Node, with the context a lab admin
//! needs (coordinator address, group, request, messageID, what happened).

use std::path::PathBuf;
use std::time::Duration;

/// Which call failed: the context every client error carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// `host:port` of the coordinator.
    pub addr: String,
    pub group: String,
    /// The request name on the wire (`lava_send`...).
    pub request: &'static str,
    pub message_id: Option<String>,
}

impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "coordinator {}: {}", self.addr, self.request)?;
        if let Some(id) = &self.message_id {
            write!(f, " '{id}'")?;
        }
        write!(f, " of group {}", self.group)
    }
}

/// A Multi-Node failure.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The coordinator could not be reached (connect or I/O failed) until the timeout.
    #[error("{call}: coordinator unreachable: {last} ({attempts} attempts over {waited:.1?})")]
    Unreachable {
        call: Box<Call>,
        attempts: u32,
        waited: Duration,
        last: String,
    },
    /// The coordinator kept answering `wait` until the timeout (LAVA's
    /// MultinodeProtocolTimeoutError).
    #[error("{call}: timed out after {waited:.1?} ({attempts} polls)")]
    Timeout {
        call: Box<Call>,
        attempts: u32,
        waited: Duration,
    },
    /// The coordinator refused the request (`{"response": "nack"}`).
    #[error("{call}: refused (nack)")]
    Nack { call: Box<Call> },
    /// The reply was not what the protocol allows.
    #[error("{call}: bad reply: {detail}")]
    BadReply { call: Box<Call>, detail: String },
    /// The request is longer than the dispatcher may send (0xFFFE bytes).
    #[error("{call}: message of {len} bytes is too long to send (limit {limit})")]
    TooLong {
        call: Box<Call>,
        len: usize,
        limit: usize,
    },
    /// Coordinator settings (inventory `[coordinator]` or lava-coordinator.conf) are unusable.
    #[error("{}: {key}: {message}", .path.display())]
    Config {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("cannot read coordinator settings {}: {source}", .path.display())]
    ConfigRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The coordinator server's state directory (journal) failed.
    #[error("coordinator state {}: {what}: {source}", .path.display())]
    Store {
        path: PathBuf,
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The coordinator server could not listen.
    #[error("coordinator cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// A DUT asked something over the console that the dispatcher cannot handle.
    #[error("Multi-Node request from the DUT {line:?}: {message}")]
    DutRequest { line: String, message: String },
}
