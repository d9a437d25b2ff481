//! `MasterError`: what went wrong talking to the LAVA master, with the stage, URL and job.

use std::path::PathBuf;

use super::wire::WireError;

/// One failed exchange with the master, or a failure of the on-disk job table.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// No HTTP answer at all (connection refused, reset, timeout): the master is unreachable.
    #[error("{stage}: master unreachable at {url}: {source}")]
    Unreachable {
        stage: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// lava-server refused because our version differs from its own (409).
    #[error(
        "{stage}: the master refuses version {ours:?}: {message}; set [master] version to the \
         server's version (labd speaks the 2023.01 protocol)"
    )]
    VersionMismatch {
        stage: String,
        ours: String,
        message: String,
    },
    /// Any other non-200 answer, with lava-server's `error` text.
    #[error("{stage}: {url} answered HTTP {status}: {message}")]
    Status {
        stage: String,
        url: String,
        status: u16,
        message: String,
    },
    /// A 200 answer whose body labd cannot use.
    #[error("{stage}: bad answer from {url}: {source}")]
    BadAnswer {
        stage: String,
        url: String,
        #[source]
        source: WireError,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("job table entry {path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("internal task failed: {0}")]
    Task(String),
}

impl MasterError {
    /// Whether lava-worker would treat this as "server unavailable" (5xx or no answer) and retry
    /// soon rather than after a full interval.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Status { status, .. } => *status / 100 == 5,
            _ => false,
        }
    }

    /// The HTTP status, when there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::VersionMismatch { .. } => Some(409),
            _ => None,
        }
    }

    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            what,
            path: path.into(),
            source,
        }
    }
}
