//! [`ImageFetcher`] over labd's images service: a deploy image becomes an [`ImageRequest`]
//! with LAVA's semantics (no `compression:` keeps the bytes as downloaded), through the
//! worker-wide cache, proxy, retries and decompression bounds.

use crate::console::source::BoxFut;
use crate::images::{Checksums, Compression, Decompress, ImageRequest, ImageService};
use crate::jobs::model::Compression as JobCompression;

use super::images::{FetchFailure, FetchedImage, ImageFetch, ImageFetcher};

/// The runner's image fetcher: one [`ImageService`] shared by every job of the process.
#[derive(Clone)]
pub struct ServiceFetcher {
    service: ImageService,
}

impl ServiceFetcher {
    pub fn new(service: ImageService) -> Self {
        Self { service }
    }
}

/// The images service's format for a job's `compression:`; `zip` is refused by the deploy
/// action before it gets here.
fn decompress(c: Option<JobCompression>) -> Result<Decompress, FetchFailure> {
    Ok(match c {
        None => Decompress::None,
        Some(JobCompression::Gz) => Decompress::Format(Compression::Gz),
        Some(JobCompression::Xz) => Decompress::Format(Compression::Xz),
        Some(JobCompression::Bz2) => Decompress::Format(Compression::Bz2),
        Some(JobCompression::Zstd) => Decompress::Format(Compression::Zstd),
        Some(JobCompression::Zip) => {
            return Err(FetchFailure {
                message: "compression 'zip' is an archive, not a stream: labd does not unpack it while downloading".into(),
                infrastructure: false,
            });
        }
    })
}

impl ImageFetcher for ServiceFetcher {
    fn fetch(&self, req: ImageFetch) -> BoxFut<'static, Result<FetchedImage, FetchFailure>> {
        let service = self.service.clone();
        Box::pin(async move {
            let mut r = ImageRequest::new(req.url, req.destination);
            r.decompress = decompress(req.compression)?;
            r.checksums = Checksums {
                md5: req.md5,
                sha256: req.sha256,
                sha512: req.sha512,
            };
            match service.fetch(r).await {
                Ok(report) => Ok(FetchedImage {
                    path: report.path,
                    size: report.compressed_bytes,
                    output_bytes: report.output_bytes,
                    md5: report.md5,
                    // Recorded by default (ImageRequest::record_sha256).
                    sha256: report.sha256.unwrap_or_default(),
                    sha512: report.sha512,
                    from_cache: report.cache_hit,
                    duration: report.duration,
                    warnings: report.warnings,
                }),
                Err(e) => Err(FetchFailure {
                    message: e.to_string(),
                    infrastructure: e.is_infrastructure(),
                }),
            }
        })
    }
}
