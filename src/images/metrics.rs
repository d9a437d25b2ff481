//! The image service's series in the process-wide registry (`labd::metrics::global()`).

use crate::metrics::{Counter, Gauge, Registry};

use super::error::Stage;

/// Handles to every image metric, created once per service.
#[derive(Debug, Clone)]
pub(crate) struct ImageMetrics {
    registry: &'static Registry,
    pub downloaded_bytes: Counter,
    pub output_bytes: Counter,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub cache_evictions: Counter,
    pub cache_bytes: Gauge,
    pub decompress_queue: Gauge,
    pub decompress_active: Gauge,
    pub download_queue: Gauge,
    pub downloads_active: Gauge,
    pub decompress_busy_ms: Counter,
    pub last_throughput: Gauge,
    pub fetches: Counter,
}

impl ImageMetrics {
    pub fn new(registry: &'static Registry) -> Self {
        Self {
            registry,
            downloaded_bytes: registry.counter(
                "labd_images_downloaded_bytes_total",
                "Bytes received from image servers (compressed, as transferred).",
                &[],
            ),
            output_bytes: registry.counter(
                "labd_images_output_bytes_total",
                "Decompressed bytes written to image destinations; rate() is the decompression throughput.",
                &[],
            ),
            cache_hits: registry.counter(
                "labd_images_cache_hits_total",
                "Fetches served from the image cache.",
                &[],
            ),
            cache_misses: registry.counter(
                "labd_images_cache_misses_total",
                "Fetches that had to download (cacheable requests only).",
                &[],
            ),
            cache_evictions: registry.counter(
                "labd_images_cache_evictions_total",
                "Cache entries removed to stay under cache_size.",
                &[],
            ),
            cache_bytes: registry.gauge(
                "labd_images_cache_bytes",
                "Bytes held by the image cache after the last change by this process.",
                &[],
            ),
            decompress_queue: registry.gauge(
                "labd_images_decompress_queue_depth",
                "Fetches waiting for a decompressor slot.",
                &[],
            ),
            decompress_active: registry.gauge(
                "labd_images_decompress_active",
                "Decompressor slots in use.",
                &[],
            ),
            download_queue: registry.gauge(
                "labd_images_download_queue_depth",
                "Fetches waiting for a download slot.",
                &[],
            ),
            downloads_active: registry.gauge(
                "labd_images_downloads_active",
                "Download slots in use.",
                &[],
            ),
            decompress_busy_ms: registry.counter(
                "labd_images_decompress_busy_milliseconds_total",
                "Time decoder threads spent on images; output bytes over this is the per-stream throughput.",
                &[],
            ),
            last_throughput: registry.gauge(
                "labd_images_last_throughput_bytes_per_second",
                "Output bytes per second of the last finished fetch.",
                &[],
            ),
            fetches: registry.counter(
                "labd_images_fetches_total",
                "Fetches finished successfully.",
                &[],
            ),
        }
    }

    pub fn error(&self, stage: Stage) {
        self.registry
            .counter(
                "labd_images_fetch_errors_total",
                "Failed fetches by stage.",
                &[("stage", stage.label())],
            )
            .inc();
    }
}
