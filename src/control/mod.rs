//! The Unix control socket between the daemon and the CLI (`labd console`, `labd status`,
//! later `labd power`...).
//!
//! Protocol: the client sends one JSON object on one line, `{"request": "<kind>", ...}`; the
//! daemon answers one JSON line, `{"ok": true, ...}` or `{"ok": false, "error": "..."}`. A
//! request kind may then switch the connection to its own stream: `attach` continues with
//! binary frames ([`frame`]). Request kinds are looked up in a [`Handlers`] registry, so other
//! domains add theirs (`power`, `devices`...) without touching this module. Unknown or
//! malformed requests get an error reply; the daemon never trusts the client's bytes.

pub mod attach;
pub mod client;
pub mod frame;
mod server;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use client::{AttachSession, ControlClient};
pub use server::{
    Conn, ControlServer, Handler, Handlers, Peer, Request, parse_request_line, simple,
};

/// Fuzz entry point for request lines: any bytes give a kind and body or an error.
pub fn fuzz_request_line(data: &[u8]) {
    if let Ok((kind, body)) = parse_request_line(data) {
        assert_eq!(
            body.get("request").and_then(|v| v.as_str()),
            Some(kind.as_str())
        );
        let _ = serde_json::from_value::<AttachRequest>(body);
    }
}

use crate::console::ConsoleError;

/// Longest request line accepted.
pub const MAX_REQUEST: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot connect to the labd daemon at {path}: {source} (is `labd agent` running?)")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("control socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("control connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed request: {0}")]
    BadRequest(String),
    #[error("unknown request {0:?}")]
    UnknownRequest(String),
    #[error("request line longer than {MAX_REQUEST} bytes")]
    TooLong,
    #[error("malformed reply from the daemon: {0}")]
    BadReply(String),
    #[error("{0}")]
    Remote(String),
    #[error(transparent)]
    Console(#[from] ConsoleError),
    #[error("attach stream: {0}")]
    Frame(#[from] frame::FrameError),
    #[error("another labd daemon is already serving {0}")]
    AlreadyRunning(PathBuf),
    #[error("socket_group {0:?} does not exist on this machine")]
    NoSuchGroup(String),
}

/// `{"request": "attach", ...}`: stream a console.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttachRequest {
    pub device: String,
    /// Never send input.
    #[serde(default)]
    pub read_only: bool,
    /// Write even while a job holds the console (journaled as forced).
    #[serde(default)]
    pub force: bool,
    /// Scrollback bytes to replay first.
    #[serde(default = "default_replay")]
    pub replay: usize,
}

fn default_replay() -> usize {
    crate::console::DEFAULT_SCROLLBACK
}

/// The reply to `{"request": "attach"}` before the frames start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttachReply {
    pub device: String,
    /// The name the input is journaled under (`op:<user>`).
    pub client: String,
    pub online: bool,
    /// Holder of the writer lease, if any.
    pub writer: Option<String>,
}

/// The reply to `{"request": "status"}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReply {
    pub worker: String,
    pub pid: u32,
    pub version: String,
    pub consoles: Vec<crate::console::ConsoleStatus>,
}
