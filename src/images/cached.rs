//! The cached path of an http(s) fetch: content-addressed hits, single flight, revalidation,
//! and serving a hit through the same pipeline (so its digests are checked again).

use std::sync::Arc;

use reqwest::header::HeaderMap;
use reqwest::{StatusCode, Url};

use super::cache::{Blob, Cache, IndexEntry};
use super::error::FetchError;
use super::http::Validators;
use super::input::Source;
use super::limits::Slot;
use super::request::{CacheOutcome, FetchReport, Phase};
use super::service::{Ctx, ImageService};

/// A hit whose bytes do not hash to their name: the entry is dropped and the image downloaded.
struct Corrupt;

impl ImageService {
    pub(super) async fn fetch_cached(
        &self,
        url: &Url,
        cache: Arc<Cache>,
        ctx: &mut Ctx,
    ) -> Result<FetchReport, FetchError> {
        // Content addressing: the job names the bytes it wants, and we have them.
        if let Some(blob) = self.blob_for(&cache, ctx).await {
            match self
                .serve_hit(ctx, &cache, blob, None, CacheOutcome::Hit)
                .await?
            {
                Ok(report) => return Ok(report),
                Err(Corrupt) => ctx.counters.reset(),
            }
        }
        ctx.phase(Phase::Queued, None);
        let flight = self.inner.flights.enter(&ctx.url).await;
        let (c, u) = (cache.clone(), ctx.url.clone());
        let cross = tokio::task::spawn_blocking(move || c.lock_url(&u)).await;
        let _cross = match cross {
            Ok(Ok(lock)) => Some(lock),
            Ok(Err(e)) => {
                ctx.warnings.push(format!(
                    "no cross-process cache lock ({e}); downloading anyway"
                ));
                None
            }
            Err(_) => None,
        };
        if let Some(blob) = self.blob_for(&cache, ctx).await {
            if let Ok(report) = self
                .serve_hit(ctx, &cache, blob, None, CacheOutcome::Hit)
                .await?
            {
                return Ok(report);
            }
            ctx.counters.reset();
        }

        let (c, u) = (cache.clone(), ctx.url.clone());
        let found = tokio::task::spawn_blocking(move || c.lookup(&u))
            .await
            .ok()
            .flatten();
        let mut headers = HeaderMap::new();
        if let Some((entry, blob)) = found {
            if flight.validated_while_waiting() || entry.matches(&ctx.checksums) {
                // Another request just downloaded or revalidated it, or the job's checksum
                // names exactly this content.
                drop((_cross, flight));
                if let Ok(report) = self
                    .serve_hit(ctx, &cache, blob, None, CacheOutcome::Hit)
                    .await?
                {
                    return Ok(report);
                }
                return self.miss(url, &cache, ctx, HeaderMap::new()).await;
            }
            if entry.has_validators() {
                headers = validators(&entry).conditional();
                let (cpu, net) = self.slots(ctx).await;
                let (resp, n) = self.http(url).open(headers).await?;
                ctx.attempts += n;
                if resp.status() == StatusCode::NOT_MODIFIED {
                    flight.mark_validated();
                    drop((net, resp, _cross, flight));
                    return match self
                        .serve_hit(ctx, &cache, blob, Some(cpu), CacheOutcome::Revalidated)
                        .await?
                    {
                        Ok(report) => Ok(report),
                        Err(Corrupt) => self.miss(url, &cache, ctx, HeaderMap::new()).await,
                    };
                }
                drop(blob);
                // 200: the file changed; this response is the new download.
                self.inner.metrics.cache_misses.inc();
                let report = self
                    .download(url, ctx, resp, cpu, net, Some(&cache))
                    .await?;
                flight.mark_validated();
                return Ok(report);
            }
            // Nothing to revalidate with and no sha256 from the job: download again.
            tracing::debug!(url = %ctx.url, "cache entry has no ETag/Last-Modified; downloading");
            headers = HeaderMap::new();
        }
        let report = self.miss(url, &cache, ctx, headers).await?;
        if report.cache == CacheOutcome::Stored {
            flight.mark_validated();
        }
        Ok(report)
    }

    /// Downloads and stores.
    async fn miss(
        &self,
        url: &Url,
        cache: &Arc<Cache>,
        ctx: &mut Ctx,
        headers: HeaderMap,
    ) -> Result<FetchReport, FetchError> {
        self.inner.metrics.cache_misses.inc();
        let (cpu, net) = self.slots(ctx).await;
        let (resp, n) = self.http(url).open(headers).await?;
        ctx.attempts += n;
        self.download(url, ctx, resp, cpu, net, Some(cache)).await
    }

    /// The blob named by the job's sha256, if the cache has it.
    async fn blob_for(&self, cache: &Arc<Cache>, ctx: &Ctx) -> Option<Blob> {
        let sha = ctx.checksums.sha256.clone()?;
        let c = cache.clone();
        tokio::task::spawn_blocking(move || c.blob(&sha))
            .await
            .ok()
            .flatten()
    }

    /// Streams a cache blob to the destination. `Ok(Err(Corrupt))` when the blob's bytes no
    /// longer match its name (it is then removed).
    async fn serve_hit(
        &self,
        ctx: &mut Ctx,
        cache: &Arc<Cache>,
        blob: Blob,
        cpu: Option<Slot>,
        outcome: CacheOutcome,
    ) -> Result<Result<FetchReport, Corrupt>, FetchError> {
        let cpu = match cpu {
            Some(c) => c,
            None => self.cpu_slot(ctx).await,
        };
        ctx.phase(Phase::FromCache, Some(blob.size));
        let file = blob.file.try_clone().map_err(|e| FetchError::Cache {
            url: ctx.url.clone(),
            message: format!("cannot read cache blob {}: {e}", blob.sha256),
        })?;
        let c = cache.clone();
        let sha = blob.sha256.clone();
        let touched = tokio::task::spawn_blocking(move || {
            c.touch(&blob);
            blob
        })
        .await;
        let Ok(blob) = touched else {
            return Err(FetchError::Cache {
                url: ctx.url.clone(),
                message: "cannot update the cache entry".into(),
            });
        };
        let dest = self.dest_temp(ctx).await?;
        let blob_path = cache.blob_path(&sha);
        // The blob is checked against its name, its sha256.
        ctx.record_sha256 = true;
        let out = self
            .pipeline(ctx, Source::File(file), &blob_path, dest, None, cpu)
            .await;
        let out = match out {
            Ok(out) if out.digests.sha256.as_ref() == Some(&sha) => Some(out),
            Ok(_) => None,
            // A blob that does not decode may be a damaged copy of a good download: re-hash it.
            Err(e @ (FetchError::Decompress { .. } | FetchError::Source { .. })) => {
                let rehash = tokio::task::spawn_blocking(move || hash_file(&blob_path)).await;
                match rehash {
                    Ok(Ok(actual)) if actual != sha => None,
                    _ => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let Some(out) = out else {
            tracing::warn!(url = %ctx.url, sha256 = %sha, "cache blob is corrupt; removing it and downloading again");
            let (c, u) = (cache.clone(), ctx.url.clone());
            drop(blob);
            let _ = tokio::task::spawn_blocking(move || c.remove(&u, &sha)).await;
            ctx.warnings
                .push("the cached copy was corrupt and has been downloaded again".into());
            return Ok(Err(Corrupt));
        };
        drop(blob);
        self.inner.metrics.cache_hits.inc();
        let size = out.compressed_bytes;
        let report = self.finish(ctx, out, Some(size), outcome).await?;
        Ok(Ok(report))
    }
}

fn hash_file(path: &std::path::Path) -> std::io::Result<String> {
    let mut h = super::hashing::Hashers::new(true, false, false);
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf)?;
        if n == 0 {
            return Ok(h.finish().sha256.unwrap_or_default());
        }
        h.update(&buf[..n]);
    }
}

fn validators(entry: &IndexEntry) -> Validators {
    Validators {
        etag: entry.etag.clone(),
        last_modified: entry.last_modified.clone(),
    }
}
