//! What callers ask for and what they get back.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::compression::{Compression, Decompress};
use super::hashing::Checksums;

/// One image to fetch.
#[derive(Debug, Clone)]
pub struct ImageRequest {
    /// `http://`, `https://` or `file://`.
    pub url: String,
    /// Where the (decompressed) image goes. Written to a temporary file beside it and renamed
    /// when complete and verified; parent directories are created.
    pub destination: PathBuf,
    /// The job's `compression:`, `Auto` to go by the magic bytes, `None` to keep the bytes.
    pub decompress: Decompress,
    /// Expected digests of the downloaded (compressed) bytes.
    pub checksums: Checksums,
    /// Go through the worker's cache (LAVA's `use_cache`, default true).
    pub use_cache: bool,
    /// Compute the download's sha256 even when nothing checks it: jobs record it as LAVA's
    /// `sha256sum` (default true). Without it, and without a sha256 to verify or a cache copy
    /// (whose address it is), [`FetchReport::sha256`] stays `None`, which saves a hash pass
    /// over the whole download.
    pub record_sha256: bool,
}

impl ImageRequest {
    pub fn new(url: impl Into<String>, destination: impl Into<PathBuf>) -> Self {
        Self {
            url: url.into(),
            destination: destination.into(),
            decompress: Decompress::Auto,
            checksums: Checksums::default(),
            use_cache: true,
            record_sha256: true,
        }
    }
}

/// How the cache took part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheOutcome {
    /// Served from the cache without asking the server (content address or fresh entry).
    Hit,
    /// Served from the cache after the server answered 304 Not Modified.
    Revalidated,
    /// Downloaded and stored in the cache.
    Stored,
    /// Downloaded, but not stored (see the report's warnings).
    NotStored,
    /// The cache was not used (`use_cache: false`, `--no-cache`, `file://`).
    Bypassed,
}

impl CacheOutcome {
    pub fn is_hit(self) -> bool {
        matches!(self, Self::Hit | Self::Revalidated)
    }
}

/// What a successful fetch did.
#[derive(Debug, Clone, Serialize)]
pub struct FetchReport {
    pub url: String,
    pub path: PathBuf,
    /// The format that was decoded; `None` if the bytes were kept as they are.
    pub compression: Option<Compression>,
    /// Bytes received from the network by this fetch (0 for a cache hit).
    pub downloaded_bytes: u64,
    /// Size of the compressed stream (what the checksums cover).
    pub compressed_bytes: u64,
    /// Size of the image written to `path`.
    pub output_bytes: u64,
    /// sha256 of the compressed stream (LAVA's recorded `sha256sum`); `None` when nothing
    /// needed it (see [`ImageRequest::record_sha256`]).
    pub sha256: Option<String>,
    pub md5: Option<String>,
    pub sha512: Option<String>,
    /// sha256 of the image written to `path`.
    pub output_sha256: String,
    pub cache: CacheOutcome,
    pub cache_hit: bool,
    /// HTTP requests made (1 when nothing failed).
    pub attempts: u32,
    /// Range requests that continued a broken transfer.
    pub resumes: u32,
    /// Time spent waiting for a download or decompressor slot.
    #[serde(with = "secs")]
    pub queued: Duration,
    #[serde(with = "secs")]
    pub duration: Duration,
    /// Things that did not fail the fetch but an admin should know (cache not written...).
    pub warnings: Vec<String>,
}

mod secs {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// Where a fetch is; sent on the progress channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Waiting for a download or decompressor slot, or for another request for the same URL.
    #[default]
    Queued,
    Connecting,
    Downloading,
    /// Reading the image from the cache.
    FromCache,
    /// Checking digests and renaming into place.
    Verifying,
    Done,
}

impl Phase {
    /// A short label for progress displays.
    pub fn label(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Connecting => "connecting",
            Self::Downloading => "downloading",
            Self::FromCache => "from cache",
            Self::Verifying => "verifying",
            Self::Done => "done",
        }
    }
}

/// A progress snapshot, updated a few times per second.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Progress {
    pub phase: Phase,
    /// Bytes received from the network.
    pub downloaded: u64,
    /// Compressed size, when the server said (Content-Length) or the cache knows.
    pub total: Option<u64>,
    /// Compressed bytes processed.
    pub compressed: u64,
    /// Image bytes written.
    pub output: u64,
    /// Every phase entered, in order (at most [`Progress::MAX_PASSED`]): a watch channel keeps
    /// only the latest snapshot, and a line per stage must not lose a short one.
    #[serde(skip)]
    pub passed: Vec<Phase>,
}

impl Progress {
    pub const MAX_PASSED: usize = 32;

    /// Enters `phase`, remembering it in `passed`.
    pub fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        if self.passed.last() != Some(&phase) && self.passed.len() < Self::MAX_PASSED {
            self.passed.push(phase);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_remembers_every_phase_it_passed() {
        let (tx, rx) = tokio::sync::watch::channel(Progress::default());
        for phase in [
            Phase::Queued,
            Phase::Connecting,
            Phase::Downloading,
            Phase::Downloading,
            Phase::Verifying,
            Phase::Done,
        ] {
            tx.send_modify(|p| p.enter(phase));
        }
        // The watcher only sees the last snapshot, which still lists every stage once.
        let p = rx.borrow().clone();
        assert_eq!(p.phase, Phase::Done);
        assert_eq!(
            p.passed,
            [
                Phase::Queued,
                Phase::Connecting,
                Phase::Downloading,
                Phase::Verifying,
                Phase::Done
            ]
        );
    }
}
