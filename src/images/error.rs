//! `FetchError`: what went wrong with one image, where, and for which URL. The messages are
//! what a lab admin reads in a job log, so each names the stage and the URL and says what was
//! expected; the checksum message keeps LAVA's wording (`"<algo> for '<url>' does not match."`).

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Where in the fetch a failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The request itself: URL, scheme, checksum syntax, local source file.
    Request,
    /// Reaching the server (DNS, TCP, TLS).
    Connect,
    /// Reaching or going through the proxy.
    Proxy,
    /// The server answered with an error status.
    HttpStatus,
    /// The body stopped, or its size was wrong.
    Transfer,
    /// The compressed stream was corrupt, truncated or not in the announced format.
    Decompress,
    /// md5/sha256/sha512 over the downloaded bytes did not match.
    Checksum,
    /// Writing the destination file.
    Write,
    /// The image cache (a corrupt entry, a failed commit).
    Cache,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Connect => "connect",
            Self::Proxy => "proxy",
            Self::HttpStatus => "http status",
            Self::Transfer => "transfer",
            Self::Decompress => "decompress",
            Self::Checksum => "checksum",
            Self::Write => "write",
            Self::Cache => "cache",
        }
    }

    /// The label value used in metrics (`labd_images_fetch_errors_total{stage=...}`).
    pub fn label(self) -> &'static str {
        match self {
            Self::HttpStatus => "http_status",
            other => other.as_str(),
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn n_attempts(n: &u32) -> String {
    if *n == 1 {
        "1 attempt".to_string()
    } else {
        format!("{n} attempts")
    }
}

fn of_total(total: &Option<u64>) -> String {
    total.map_or_else(String::new, |t| format!(" of {t}"))
}

/// One image could not be fetched. Nothing of it is left in the cache or at the destination.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("request: '{url}': {reason}")]
    BadRequest { url: String, reason: String },

    #[error("request: '{url}': cannot read {}: {source}", path.display())]
    Source {
        url: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("connect: '{url}': {message} (after {})", n_attempts(attempts))]
    Connect {
        url: String,
        message: String,
        attempts: u32,
    },

    #[error(
        "proxy: '{url}': through proxy {proxy}: {message} (after {})",
        n_attempts(attempts)
    )]
    Proxy {
        url: String,
        proxy: String,
        message: String,
        attempts: u32,
    },

    #[error("http status: '{url}': {status}{via} (after {})", n_attempts(attempts))]
    HttpStatus {
        url: String,
        /// Status code and reason, e.g. `404 Not Found`.
        status: String,
        code: u16,
        /// ` via proxy http://…` when a proxy answered.
        via: String,
        attempts: u32,
    },

    #[error(
        "transfer: '{url}': {message} after {received}{} bytes (after {})",
        of_total(expected),
        n_attempts(attempts)
    )]
    Transfer {
        url: String,
        message: String,
        received: u64,
        expected: Option<u64>,
        attempts: u32,
    },

    #[error(
        "decompress: '{url}': {format}: {message} (at compressed byte {offset}; is `compression:` right?)"
    )]
    Decompress {
        url: String,
        format: String,
        message: String,
        offset: u64,
    },

    /// LAVA's JobError text, then the two digests.
    #[error(
        "{algo} for '{url}' does not match. (checksum: expected {expected}, downloaded {actual})"
    )]
    Checksum {
        url: String,
        algo: &'static str,
        expected: String,
        actual: String,
    },

    #[error("write: '{url}': {}: {source}", path.display())]
    Write {
        url: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cache: '{url}': {message}")]
    Cache { url: String, message: String },
}

impl FetchError {
    pub fn stage(&self) -> Stage {
        match self {
            Self::BadRequest { .. } | Self::Source { .. } => Stage::Request,
            Self::Connect { .. } => Stage::Connect,
            Self::Proxy { .. } => Stage::Proxy,
            Self::HttpStatus { .. } => Stage::HttpStatus,
            Self::Transfer { .. } => Stage::Transfer,
            Self::Decompress { .. } => Stage::Decompress,
            Self::Checksum { .. } => Stage::Checksum,
            Self::Write { .. } => Stage::Write,
            Self::Cache { .. } => Stage::Cache,
        }
    }

    pub fn url(&self) -> &str {
        match self {
            Self::BadRequest { url, .. }
            | Self::Source { url, .. }
            | Self::Connect { url, .. }
            | Self::Proxy { url, .. }
            | Self::HttpStatus { url, .. }
            | Self::Transfer { url, .. }
            | Self::Decompress { url, .. }
            | Self::Checksum { url, .. }
            | Self::Write { url, .. }
            | Self::Cache { url, .. } => url,
        }
    }

    /// True for failures of the infrastructure (network, disk, cache), false for failures of
    /// the job's own request (bad URL, 404, wrong checksum, corrupt archive). LAVA makes the same
    /// split between InfrastructureError and JobError.
    pub fn is_infrastructure(&self) -> bool {
        match self {
            Self::Connect { .. }
            | Self::Proxy { .. }
            | Self::Transfer { .. }
            | Self::Write { .. }
            | Self::Cache { .. } => true,
            Self::HttpStatus { code, .. } => *code >= 500,
            _ => false,
        }
    }
}

/// The error and its causes on one line: reqwest's own message is terse ("error sending
/// request"), the useful part ("Connection refused") is in the chain.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_message_keeps_lava_wording() {
        let e = FetchError::Checksum {
            url: "http://h/x.img.xz".into(),
            algo: "sha256",
            expected: "aa".into(),
            actual: "bb".into(),
        };
        assert!(
            e.to_string()
                .starts_with("sha256 for 'http://h/x.img.xz' does not match.")
        );
        assert_eq!(e.stage(), Stage::Checksum);
    }

    #[test]
    fn messages_name_stage_and_url() {
        let e = FetchError::Transfer {
            url: "http://h/a".into(),
            message: "connection reset".into(),
            received: 10,
            expected: Some(20),
            attempts: 3,
        };
        assert_eq!(
            e.to_string(),
            "transfer: 'http://h/a': connection reset after 10 of 20 bytes (after 3 attempts)"
        );
    }
}
