//! `ImageService`: the worker-wide object every fetch goes through (one per daemon, or per
//! `labd fetch` / `labd run-job` process). It owns the HTTP client, the cache, the single-flight
//! table and the two worker-wide bounds, and runs each fetch: wait for slots, transfer,
//! decode on dedicated threads, verify, rename into place.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::Url;
use reqwest::header::HeaderMap;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::cache::{Cache, IndexEntry};
use super::compression::Decompress;
use super::config::{ImageSettings, read_ca_file};
use super::error::FetchError;
use super::flight::Flights;
use super::fsutil::TempFile;
use super::hashing::{Checksums, verify};
use super::http::{Http, StreamError, Validators};
use super::input::Source;
use super::limits::{Slot, Slots};
use super::metrics::ImageMetrics;
use super::pipeline::{self, Counters, Job, Output, PipelineError};
use super::request::{CacheOutcome, FetchReport, ImageRequest, Phase, Progress};

/// Compressed chunks queued between the network and the decoder (each at most a few hundred
/// KiB: hyper's read buffer), which bounds memory per image.
const INPUT_QUEUE: usize = 16;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("image cache {}: {source}", path.display())]
    Cache {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("[images] ca_file: {0}")]
    Ca(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// The worker's image fetcher. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct ImageService {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub settings: ImageSettings,
    pub client: reqwest::Client,
    pub cache: Option<Arc<Cache>>,
    pub flights: Flights,
    pub cpu: Slots,
    pub net: Slots,
    pub metrics: ImageMetrics,
}

/// One fetch in progress.
pub(super) struct Ctx {
    pub url: String,
    pub destination: std::path::PathBuf,
    pub decompress: Decompress,
    pub checksums: Checksums,
    pub counters: Arc<Counters>,
    pub progress: Option<watch::Sender<Progress>>,
    pub started: Instant,
    pub queued: Duration,
    pub warnings: Vec<String>,
    pub attempts: u32,
    pub resumes: u32,
}

impl Ctx {
    pub fn phase(&self, phase: Phase, total: Option<u64>) {
        if let Some(tx) = &self.progress {
            tx.send_modify(|p| {
                p.phase = phase;
                if total.is_some() {
                    p.total = total;
                }
            });
        }
    }
}

fn join_error(url: &str, e: tokio::task::JoinError) -> FetchError {
    FetchError::Cache {
        url: url.to_string(),
        message: format!("background task failed: {e}"),
    }
}

impl ImageService {
    /// Opens the cache (creating its directories) and builds the HTTP client with the proxy
    /// settings and the lab CA.
    pub async fn new(settings: ImageSettings) -> Result<Self, ServiceError> {
        Self::with_metrics(settings, crate::metrics::global()).await
    }

    /// As [`new`](Self::new), with metrics in `registry` (tests use their own).
    pub async fn with_metrics(
        settings: ImageSettings,
        registry: &'static crate::metrics::Registry,
    ) -> Result<Self, ServiceError> {
        let metrics = ImageMetrics::new(registry);
        let proxies = settings.proxy.clone();
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .proxy(reqwest::Proxy::custom(move |url| {
                proxies.for_url(url).cloned()
            }))
            .connect_timeout(settings.connect_timeout)
            .read_timeout(settings.read_timeout)
            .user_agent(concat!("labd/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &settings.ca_file {
            for cert in read_ca_file(ca).map_err(ServiceError::Ca)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| ServiceError::Client(super::error::chain(&e)))?;
        let (dir, limit, m) = (
            settings.cache_dir.clone(),
            settings.cache_size,
            metrics.clone(),
        );
        let cache = tokio::task::spawn_blocking(move || Cache::open(&dir, limit, m))
            .await
            .map_err(|e| ServiceError::Cache {
                path: settings.cache_dir.clone(),
                source: std::io::Error::other(e),
            })?
            .map_err(|source| ServiceError::Cache {
                path: settings.cache_dir.clone(),
                source,
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                cpu: Slots::new(
                    settings.max_decompressors,
                    metrics.decompress_queue.clone(),
                    metrics.decompress_active.clone(),
                ),
                net: Slots::new(
                    settings.max_downloads,
                    metrics.download_queue.clone(),
                    metrics.downloads_active.clone(),
                ),
                settings,
                client,
                cache: Some(Arc::new(cache)),
                flights: Flights::default(),
                metrics,
            }),
        })
    }

    pub fn settings(&self) -> &ImageSettings {
        &self.inner.settings
    }

    /// Fetches one image.
    pub async fn fetch(&self, req: ImageRequest) -> Result<FetchReport, FetchError> {
        self.run(req, None).await
    }

    /// Fetches one image, publishing progress snapshots on `progress`.
    pub async fn fetch_with_progress(
        &self,
        req: ImageRequest,
        progress: watch::Sender<Progress>,
    ) -> Result<FetchReport, FetchError> {
        self.run(req, Some(progress)).await
    }

    async fn run(
        &self,
        req: ImageRequest,
        progress: Option<watch::Sender<Progress>>,
    ) -> Result<FetchReport, FetchError> {
        let span = tracing::info_span!("fetch", url = %req.url);
        let counters = Arc::new(Counters::default());
        let sampler = progress.clone().map(|tx| {
            let counters = counters.clone();
            AbortOnDrop(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tick.tick().await;
                    tx.send_modify(|p| {
                        p.downloaded = counters.downloaded.load(Ordering::Relaxed);
                        p.compressed = counters.compressed.load(Ordering::Relaxed);
                        p.output = counters.output.load(Ordering::Relaxed);
                    });
                }
            }))
        });
        let result = self
            .dispatch(req, counters, progress.clone())
            .instrument(span)
            .await;
        drop(sampler);
        let m = &self.inner.metrics;
        match &result {
            Ok(r) => {
                m.fetches.inc();
                m.output_bytes.inc_by(r.output_bytes);
                if let Some(tx) = &progress {
                    tx.send_modify(|p| {
                        p.phase = Phase::Done;
                        p.downloaded = r.downloaded_bytes;
                        p.compressed = r.compressed_bytes;
                        p.output = r.output_bytes;
                    });
                }
                tracing::debug!(
                    url = %r.url,
                    cache = ?r.cache,
                    output_bytes = r.output_bytes,
                    "fetched in {:.2?}",
                    r.duration
                );
            }
            Err(e) => {
                m.error(e.stage());
                // The caller reports it (job log, CLI); this is for daemon debugging.
                tracing::debug!("{e}");
            }
        }
        result
    }

    async fn dispatch(
        &self,
        req: ImageRequest,
        counters: Arc<Counters>,
        progress: Option<watch::Sender<Progress>>,
    ) -> Result<FetchReport, FetchError> {
        let bad = |reason: String| FetchError::BadRequest {
            url: req.url.clone(),
            reason,
        };
        let checksums = req.checksums.normalized().map_err(bad)?;
        let url = Url::parse(&req.url).map_err(|e| bad(format!("not a URL: {e}")))?;
        if req.destination.as_os_str().is_empty() {
            return Err(bad("no destination path".into()));
        }
        let mut ctx = Ctx {
            url: req.url.clone(),
            destination: req.destination.clone(),
            decompress: req.decompress,
            checksums,
            counters,
            progress,
            started: Instant::now(),
            queued: Duration::ZERO,
            warnings: Vec::new(),
            attempts: 0,
            resumes: 0,
        };
        match url.scheme() {
            "file" => self.fetch_file(&url, &mut ctx).await,
            "http" | "https" => match (&self.inner.cache, req.use_cache) {
                (Some(cache), true) => self.fetch_cached(&url, cache.clone(), &mut ctx).await,
                _ => {
                    let (cpu, net) = self.slots(&mut ctx).await;
                    let (resp, n) = self.http(&url).open(HeaderMap::new()).await?;
                    ctx.attempts += n;
                    self.download(&url, &mut ctx, resp, cpu, net, None).await
                }
            },
            other => Err(bad(format!(
                "unsupported URL scheme {other:?} (labd fetches http, https and file URLs)"
            ))),
        }
    }

    pub(super) fn http<'a>(&'a self, url: &'a Url) -> Http<'a> {
        Http {
            client: &self.inner.client,
            url,
            proxy: self.inner.settings.proxy.for_url(url),
            policy: self.inner.settings.retry,
            metrics: &self.inner.metrics,
        }
    }

    /// A decompressor slot, then a download slot (always in this order, so waiting for both
    /// cannot deadlock).
    pub(super) async fn slots(&self, ctx: &mut Ctx) -> (Slot, Slot) {
        ctx.phase(Phase::Queued, None);
        let t = Instant::now();
        let cpu = self.inner.cpu.acquire().await;
        let net = self.inner.net.acquire().await;
        ctx.queued += t.elapsed();
        ctx.phase(Phase::Connecting, None);
        (cpu, net)
    }

    pub(super) async fn cpu_slot(&self, ctx: &mut Ctx) -> Slot {
        ctx.phase(Phase::Queued, None);
        let t = Instant::now();
        let cpu = self.inner.cpu.acquire().await;
        ctx.queued += t.elapsed();
        cpu
    }

    /// The destination's temporary file, in the destination's directory so the final rename
    /// stays on one file system.
    pub(super) async fn dest_temp(&self, ctx: &Ctx) -> Result<TempFile, FetchError> {
        let dest = ctx.destination.clone();
        let url = ctx.url.clone();
        tokio::task::spawn_blocking(move || {
            let write_err = |source| FetchError::Write {
                url: url.clone(),
                path: dest.clone(),
                source,
            };
            if dest.is_dir() {
                return Err(write_err(std::io::Error::other(
                    "the destination is a directory, not a file",
                )));
            }
            let parent = match dest.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => Path::new(".").to_path_buf(),
            };
            std::fs::create_dir_all(&parent).map_err(write_err)?;
            let name = dest
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            TempFile::create_in(&parent, &format!(".{name}.labd-")).map_err(write_err)
        })
        .await
        .map_err(|e| join_error(&ctx.url, e))?
    }

    /// `file://`: the local file through the same pipeline; never cached.
    async fn fetch_file(&self, url: &Url, ctx: &mut Ctx) -> Result<FetchReport, FetchError> {
        let path = url.to_file_path().map_err(|()| FetchError::BadRequest {
            url: ctx.url.clone(),
            reason: "not a local file path".into(),
        })?;
        let cpu = self.cpu_slot(ctx).await;
        let (p, u) = (path.clone(), ctx.url.clone());
        let file = tokio::task::spawn_blocking(move || std::fs::File::open(&p))
            .await
            .map_err(|e| join_error(&u, e))?
            .map_err(|source| FetchError::Source {
                url: ctx.url.clone(),
                path: path.clone(),
                source,
            })?;
        let total = file.metadata().ok().map(|m| m.len());
        ctx.phase(Phase::Downloading, total);
        let dest = self.dest_temp(ctx).await?;
        let out = self
            .pipeline(ctx, Source::File(file), &path, dest, None, cpu)
            .await?;
        self.finish(ctx, out, total, CacheOutcome::Bypassed).await
    }

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
        let mut entry = IndexEntry::new(&ctx.url, &out.digests.sha256, out.compressed_bytes);
        entry.etag = validators.etag;
        entry.last_modified = validators.last_modified;
        entry.md5 = out.digests.md5.clone();
        entry.sha512 = out.digests.sha512.clone();
        let mut report = self.finish(ctx, out, total, outcome).await?;
        if let (Some(cache), Some(tee)) = (cache, tee) {
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

/// Aborts a background task when the fetch ends or is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
