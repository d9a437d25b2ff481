//! Images: everything between a URL in a job and a verified image file on the worker.
//!
//! - [`ImageService`] is the worker-wide entry point (one per daemon or per `labd fetch` /
//!   `labd run-job` process): `fetch(ImageRequest) -> FetchReport`.
//! - Sources: http and https (rustls, system roots plus `[images] ca_file`), through the proxy
//!   from the inventory or `http_proxy`/`https_proxy`/`no_proxy`; and `file://`.
//! - Transfers retry on connection errors, timeouts, 5xx and 429 (LAVA's status list) and
//!   resume with `Range` when a connection drops mid-transfer.
//! - gz, xz, bz2 and zstd are decoded while downloading, on dedicated threads, in a pool bounded
//!   worker-wide (`max_decompressors`, default the number of cores); downloads are bounded too
//!   (`max_downloads`). Both queues are FIFO.
//! - md5/sha256/sha512 are checked over the downloaded (compressed) bytes, as LAVA does; the
//!   output's size and sha256 are reported.
//! - A content-addressed cache shared by all jobs: single flight per URL, revalidation by
//!   ETag/Last-Modified or by the job's sha256, LRU size limit, and never a half-written entry.
//!
//! This module never knows about jobs or devices: the job runner turns a deploy action into an
//! [`ImageRequest`].

mod cache;
mod cached;
pub mod compression;
pub mod config;
mod download;
mod error;
mod flight;
mod fsutil;
mod hashing;
mod http;
mod input;
mod limits;
mod metrics;
mod pipeline;
pub mod proxy;
mod request;
mod service;

pub use compression::{Compression, Decompress};
pub use config::{ImageSettings, RetryPolicy};
pub use error::{FetchError, Stage};
pub use hashing::Checksums;
pub use http::RETRY_STATUSES;
pub use request::{CacheOutcome, FetchReport, ImageRequest, Phase, Progress};
pub use service::{ImageService, ServiceError};

/// Entry points for the fuzz targets (`fuzz/fuzz_targets/images_magic.rs`).
pub mod fuzz {
    pub use super::compression::fuzz_decode;
}
