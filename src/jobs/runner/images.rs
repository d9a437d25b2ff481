//! The runner's edge to the images service: what a deploy action asks for and gets back. The
//! implementation over `crate::images::ImageService` is [`super::ServiceFetcher`]; tests may
//! plug in their own.

use std::path::PathBuf;
use std::time::Duration;

use crate::console::source::BoxFut;
use crate::jobs::model::Compression;

/// One image of a deploy action.
#[derive(Debug, Clone)]
pub struct ImageFetch {
    pub url: String,
    /// Where the (decompressed) image goes.
    pub destination: PathBuf,
    /// The job's `compression:`; `None` keeps the bytes as downloaded (LAVA's default).
    pub compression: Option<Compression>,
    pub md5: Option<String>,
    pub sha256: Option<String>,
    pub sha512: Option<String>,
}

/// A fetched image.
#[derive(Debug, Clone)]
pub struct FetchedImage {
    pub path: PathBuf,
    /// Size of the downloaded (compressed) bytes: LAVA's `size`.
    pub size: u64,
    /// Size of the image written.
    pub output_bytes: u64,
    pub md5: Option<String>,
    pub sha256: String,
    pub sha512: Option<String>,
    /// Served from labd's image cache.
    pub from_cache: bool,
    pub duration: Duration,
    /// Things an admin should know that did not fail the fetch.
    pub warnings: Vec<String>,
}

/// A failed fetch: the message (with LAVA's checksum text when a checksum did not match) and
/// whether the lab (network, disk, server) or the job (URL, checksum, archive) is at fault.
#[derive(Debug, Clone)]
pub struct FetchFailure {
    pub message: String,
    pub infrastructure: bool,
}

/// Fetches images for deploy actions.
pub trait ImageFetcher: Send + Sync + 'static {
    fn fetch(&self, req: ImageFetch) -> BoxFut<'static, Result<FetchedImage, FetchFailure>>;
}
