//! The transfer half of a fetch: run the pipeline (download or file), check sizes and digests,
//! rename the image into place, store the cache copy.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use reqwest::Url;
use tokio::sync::mpsc;

use super::cache::{Cache, IndexEntry};
use super::error::FetchError;
use super::fsutil::TempFile;
use super::hashing::verify;
use super::http::{StreamError, Validators};
use super::input::Source;
use super::limits::Slot;
use super::pipeline::{self, Job, Output, PipelineError};
use super::request::{CacheOutcome, FetchReport, Phase};
use super::service::{Ctx, ImageService, join_error};

/// Compressed chunks queued between the network and the decoder (each at most a few hundred
/// KiB: hyper's read buffer), which bounds memory per image.
const INPUT_QUEUE: usize = 4;

impl ImageService {
    /// Runs the pipeline and maps its failures to the fetch's errors.
    pub(super) async fn pipeline(
        &self,
        ctx: &Ctx,
        source: Source,
        source_path: &Path,
        dest: TempFile,
        cache: Option<TempFile>,
        cpu: Slot,
    ) -> Result<Output, FetchError> {
        let job = Job {
            decompress: ctx.decompress,
            // A cache copy is named by its sha256.
            sha256: ctx.record_sha256 || ctx.checksums.sha256.is_some() || cache.is_some(),
            md5: ctx.checksums.md5.is_some(),
            sha512: ctx.checksums.sha512.is_some(),
            dest,
            cache,
            counters: ctx.counters.clone(),
        };
        let dest_path = ctx.destination.clone();
        let result = pipeline::spawn(job, source, cpu).await.unwrap_or_else(|_| {
            Err(PipelineError::Internal(
                "the decoder thread could not start or died".into(),
            ))
        });
        result.map_err(|e| match e {
            PipelineError::Decompress {
                format,
                message,
                offset,
            } => FetchError::Decompress {
                url: ctx.url.clone(),
                format,
                message,
                offset,
            },
            PipelineError::Source(source) => FetchError::Source {
                url: ctx.url.clone(),
                path: source_path.to_path_buf(),
                source,
            },
            PipelineError::Write(source) => FetchError::Write {
                url: ctx.url.clone(),
                path: dest_path,
                source,
            },
            PipelineError::Internal(message) => FetchError::Cache {
                url: ctx.url.clone(),
                message,
            },
            // Only seen if the fetch was dropped, so nobody reads this.
            PipelineError::Cancelled => FetchError::Cache {
                url: ctx.url.clone(),
                message: "cancelled".into(),
            },
        })
    }

    /// Streams `resp` (a 200) through the pipeline; tees into the cache when `cache` is given.
    /// Returns the report; the cache commit (if any) has been attempted.
    pub(super) async fn download(
        &self,
        url: &Url,
        ctx: &mut Ctx,
        resp: reqwest::Response,
        cpu: Slot,
        net: Slot,
        cache: Option<&Arc<Cache>>,
    ) -> Result<FetchReport, FetchError> {
        let total = resp.content_length();
        let validators = Validators::of(&resp);
        ctx.phase(Phase::Downloading, total);
        let mut tee = None;
        if let Some(cache) = cache {
            if total.is_some_and(|t| t > cache.limit()) {
                ctx.warnings.push(format!(
                    "not cached: {} bytes is more than cache_size ({} bytes)",
                    total.unwrap_or(0),
                    cache.limit()
                ));
            } else {
                let c = cache.clone();
                let made = tokio::task::spawn_blocking(move || {
                    c.evict(total.unwrap_or(0), None);
                    c.temp()
                })
                .await
                .map_err(|e| join_error(&ctx.url, e))?;
                match made {
                    Ok(t) => tee = Some(t),
                    Err(e) => ctx.warnings.push(format!(
                        "not cached: cannot create a file in {}: {e}",
                        cache.root().display()
                    )),
                }
            }
        }
        let dest = self.dest_temp(ctx).await?;
        let (tx, rx) = mpsc::channel::<Bytes>(INPUT_QUEUE);
        let http = self.http(url);
        let counters = ctx.counters.clone();
        let attempts = ctx.attempts;
        let transfer = async move {
            let r = http.stream(resp, attempts, &tx, &counters).await;
            drop(tx);
            r
        };
        let (streamed, out) = tokio::join!(
            transfer,
            self.pipeline(
                ctx,
                Source::Chunks(rx),
                Path::new(url.as_str()),
                dest,
                tee,
                cpu
            )
        );
        drop(net);
        let out = match streamed {
            Err(StreamError::Fetch(e)) => return Err(e),
            Err(StreamError::Aborted) => {
                out?;
                return Err(FetchError::Transfer {
                    url: ctx.url.clone(),
                    message: "the decoder stopped reading".into(),
                    received: ctx.counters.downloaded.load(Ordering::Relaxed),
                    expected: total,
                    attempts: ctx.attempts,
                });
            }
            Ok(s) => {
                ctx.attempts = s.attempts;
                ctx.resumes = s.resumes;
                out?
            }
        };
        if let Some(t) = total {
            if out.compressed_bytes != t {
                // LAVA: "Download finished (%i bytes) but was not expected size (%i bytes)".
                return Err(FetchError::Transfer {
                    url: ctx.url.clone(),
                    message: format!(
                        "download finished but was not the expected size ({} bytes), check your networking",
                        t
                    ),
                    received: out.compressed_bytes,
                    expected: total,
                    attempts: ctx.attempts,
                });
            }
        }
        let outcome = if cache.is_some() {
            CacheOutcome::NotStored
        } else {
            CacheOutcome::Bypassed
        };
        self.finish_and_store(ctx, out, total, outcome, cache, validators)
            .await
    }

    /// Verifies, moves the image into place, then stores the cache copy.
    async fn finish_and_store(
        &self,
        ctx: &mut Ctx,
        mut out: Output,
        total: Option<u64>,
        mut outcome: CacheOutcome,
        cache: Option<&Arc<Cache>>,
        validators: Validators,
    ) -> Result<FetchReport, FetchError> {
        if let Some(e) = out.cache_error.take() {
            ctx.warnings.push(format!("not cached: {e}"));
        }
        let tee = out.cache.take();
        // With a cache copy the sha256 was computed: it is the copy's name.
        let entry = out.digests.sha256.as_deref().map(|sha| {
            let mut entry = IndexEntry::new(&ctx.url, sha, out.compressed_bytes);
            entry.etag = validators.etag;
            entry.last_modified = validators.last_modified;
            entry.md5 = out.digests.md5.clone();
            entry.sha512 = out.digests.sha512.clone();
            entry
        });
        let mut report = self.finish(ctx, out, total, outcome).await?;
        if let (Some(cache), Some(tee), Some(entry)) = (cache, tee, entry) {
            let c = cache.clone();
            let stored = tokio::task::spawn_blocking(move || c.commit(tee, &entry))
                .await
                .map_err(|e| join_error(&ctx.url, e))?;
            match stored {
                Ok(()) => outcome = CacheOutcome::Stored,
                Err(e) => report.warnings.push(format!("not cached: {e}")),
            }
            report.cache = outcome;
        }
        Ok(report)
    }

    /// Checks the digests and renames the image into place.
    pub(super) async fn finish(
        &self,
        ctx: &mut Ctx,
        out: Output,
        total: Option<u64>,
        cache: CacheOutcome,
    ) -> Result<FetchReport, FetchError> {
        ctx.phase(Phase::Verifying, total);
        verify(&ctx.url, &ctx.checksums, &out.digests)?;
        let busy_ms = out.busy.as_millis() as u64;
        self.inner.metrics.decompress_busy_ms.inc_by(busy_ms);
        if busy_ms > 0 {
            self.inner
                .metrics
                .last_throughput
                .set_f64(out.output_bytes as f64 * 1000.0 / busy_ms as f64);
        }
        let Output {
            compression,
            compressed_bytes,
            output_bytes,
            digests,
            output_sha256,
            dest,
            ..
        } = out;
        let (to, url) = (ctx.destination.clone(), ctx.url.clone());
        tokio::task::spawn_blocking(move || dest.persist(&to))
            .await
            .map_err(|e| join_error(&url, e))?
            .map_err(|source| FetchError::Write {
                url: ctx.url.clone(),
                path: ctx.destination.clone(),
                source,
            })?;
        Ok(FetchReport {
            url: ctx.url.clone(),
            path: ctx.destination.clone(),
            compression,
            downloaded_bytes: ctx.counters.downloaded.load(Ordering::Relaxed),
            compressed_bytes,
            output_bytes,
            sha256: digests.sha256,
            md5: digests.md5,
            sha512: digests.sha512,
            output_sha256,
            cache,
            cache_hit: cache.is_hit(),
            attempts: ctx.attempts,
            resumes: ctx.resumes,
            queued: ctx.queued,
            duration: ctx.started.elapsed(),
            warnings: std::mem::take(&mut ctx.warnings),
        })
    }
}
