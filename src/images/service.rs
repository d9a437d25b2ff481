//! `ImageService`: the worker-wide object every fetch goes through (one per daemon, or per
//! `labd fetch` / `labd run-job` process). It owns the HTTP client, the cache, the single-flight
//! table and the two worker-wide bounds, and runs each fetch: wait for slots, transfer,
//! decode on dedicated threads, verify, rename into place.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use reqwest::Url;
use reqwest::header::HeaderMap;
use tokio::sync::watch;
use tracing::Instrument;

use super::cache::Cache;
use super::compression::Decompress;
use super::config::{ImageSettings, read_ca_file};
use super::error::FetchError;
use super::flight::Flights;
use super::fsutil::TempFile;
use super::hashing::Checksums;
use super::http::Http;
use super::input::Source;
use super::limits::{Slot, Slots};
use super::metrics::ImageMetrics;
use super::pipeline::Counters;
use super::request::{CacheOutcome, FetchReport, ImageRequest, Phase, Progress};

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
    /// The download's sha256 is wanted even if no checksum asks for it.
    pub record_sha256: bool,
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
                p.enter(phase);
                if total.is_some() {
                    p.total = total;
                }
            });
        }
    }
}

pub(super) fn join_error(url: &str, e: tokio::task::JoinError) -> FetchError {
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
                        p.enter(Phase::Done);
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
            record_sha256: req.record_sha256,
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
}

/// Aborts a background task when the fetch ends or is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
