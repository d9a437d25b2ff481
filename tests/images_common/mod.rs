//! Shared helpers of the `images_*` integration tests.
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use labd::images::proxy::ProxySettings;
use labd::images::{ImageService, ImageSettings, RetryPolicy};
use labd::metrics::Registry;
pub use labd_hw_fixtures::peers::httpd::images::{compress, sample_image};
pub use labd_hw_fixtures::peers::httpd::{Faults, HttpServer, TestCa};
use sha2::Digest;

/// Settings for a test: cache in `dir`, no proxy (whatever the environment says), fast retries.
pub fn settings(dir: &Path) -> ImageSettings {
    let mut s = ImageSettings::new(dir.join("cache")).unwrap();
    s.proxy = ProxySettings::default();
    s.retry = RetryPolicy {
        retries: 3,
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
    };
    s.connect_timeout = Duration::from_secs(5);
    s.read_timeout = Duration::from_secs(10);
    s
}

/// A registry of its own, so one test's gauges are not another's.
pub fn registry() -> &'static Registry {
    Box::leak(Box::new(Registry::default()))
}

pub async fn service(s: ImageSettings) -> ImageService {
    ImageService::with_metrics(s, registry()).await.unwrap()
}

pub fn sha256(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

/// Every file under the cache's blobs/, index/ and tmp/ (locks/ holds empty lock files).
pub fn cache_files(cache: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in ["blobs", "index", "tmp"] {
        if let Ok(rd) = std::fs::read_dir(cache.join(sub)) {
            out.extend(rd.flatten().map(|e| e.path()));
        }
    }
    out.sort();
    out
}

/// Files in `dir` (to check that no temporary destination file was left behind).
pub fn dir_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
