//! The image cache shared by every job of the worker (and by `labd fetch` on the same machine).
//!
//! ```text
//! <cache_dir>/blobs/<sha256>           compressed bytes as downloaded, named by their sha256
//! <cache_dir>/index/<sha256(url)>.json URL -> blob, with ETag / Last-Modified for revalidation
//! <cache_dir>/tmp/                     downloads in progress
//! <cache_dir>/locks/<sha256(url)>.lock cross-process single flight
//! ```
//!
//! A blob appears only by renaming a complete, verified temporary file, so a reader never sees
//! half an image. Hits are re-hashed while they are streamed, so on-disk corruption is caught.
//! Blob mtimes are the "last used" stamps of the LRU eviction. All calls block (file system):
//! the service runs them with `spawn_blocking`.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::fsutil::TempFile;
use super::hashing::{Checksums, sha256_hex};
use super::metrics::ImageMetrics;

/// Temporary files older than this were left by a process that died; they are removed at start.
const STALE_TMP: Duration = Duration::from_secs(3600);

/// What the cache knows about a URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IndexEntry {
    pub url: String,
    pub sha256: String,
    pub size: u64,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// Digests computed when it was downloaded, if a job asked for them: a later job giving
    /// the same md5 or sha512 needs no revalidation.
    #[serde(default)]
    pub md5: Option<String>,
    #[serde(default)]
    pub sha512: Option<String>,
    /// Seconds since the epoch.
    pub stored_at: u64,
}

impl IndexEntry {
    pub fn new(url: &str, sha256: &str, size: u64) -> Self {
        Self {
            url: url.to_string(),
            sha256: sha256.to_string(),
            size,
            etag: None,
            last_modified: None,
            md5: None,
            sha512: None,
            stored_at: now_secs(),
        }
    }

    pub fn has_validators(&self) -> bool {
        self.etag.is_some() || self.last_modified.is_some()
    }

    /// True when the job's checksums name this content (revalidation by checksum).
    pub fn matches(&self, want: &Checksums) -> bool {
        let same = |a: &Option<String>, b: &Option<String>| a.is_some() && a == b;
        let named = same(&want.sha256, &Some(self.sha256.clone()))
            || same(&want.md5, &self.md5)
            || same(&want.sha512, &self.sha512);
        // Every digest the job gives must agree with what is known.
        let contradicts =
            |w: &Option<String>, k: &Option<String>| matches!((w, k), (Some(w), Some(k)) if w != k);
        named
            && !contradicts(&want.sha256, &Some(self.sha256.clone()))
            && !contradicts(&want.md5, &self.md5)
            && !contradicts(&want.sha512, &self.sha512)
    }
}

type Pins = Arc<Mutex<HashMap<String, usize>>>;

/// An open cache blob, protected from eviction by this process while it is held.
#[derive(Debug)]
pub(crate) struct Blob {
    pub file: File,
    pub sha256: String,
    pub size: u64,
    pins: Pins,
}

impl Drop for Blob {
    fn drop(&mut self) {
        let mut pins = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = pins.get_mut(&self.sha256) {
            *n -= 1;
            if *n == 0 {
                pins.remove(&self.sha256);
            }
        }
    }
}

/// Held while this process is the one downloading a URL into the cache.
pub(crate) struct UrlLock(#[allow(dead_code)] Flock<File>);

#[derive(Debug)]
pub(crate) struct Cache {
    root: PathBuf,
    limit: u64,
    pins: Pins,
    metrics: ImageMetrics,
}

fn is_sha256(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Cache {
    /// Opens (creating) the cache at `root` and removes what dead processes left in `tmp/`.
    pub fn open(root: &Path, limit: u64, metrics: ImageMetrics) -> io::Result<Self> {
        for sub in ["blobs", "index", "tmp", "locks"] {
            fs::create_dir_all(root.join(sub))?;
        }
        let cache = Self {
            root: root.to_path_buf(),
            limit,
            pins: Arc::default(),
            metrics,
        };
        cache.remove_stale_tmp();
        cache.metrics.cache_bytes.set(cache.size() as i64);
        Ok(cache)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn url_key(url: &str) -> String {
        sha256_hex(url.as_bytes())
    }

    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.root.join("blobs").join(sha256)
    }

    fn index_path(&self, key: &str) -> PathBuf {
        self.root.join("index").join(format!("{key}.json"))
    }

    fn remove_stale_tmp(&self) {
        let Ok(dir) = fs::read_dir(self.root.join("tmp")) else {
            return;
        };
        for entry in dir.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_TMP);
            if old {
                tracing::info!(path = %entry.path().display(), "removing a stale partial download");
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Opens the blob named `sha256` if present, pinned against eviction by this process.
    pub fn blob(&self, sha256: &str) -> Option<Blob> {
        if !is_sha256(sha256) {
            return None;
        }
        let file = File::open(self.blob_path(sha256)).ok()?;
        let size = file.metadata().ok()?.len();
        *self
            .pins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(sha256.to_string())
            .or_default() += 1;
        Some(Blob {
            file,
            sha256: sha256.to_string(),
            size,
            pins: self.pins.clone(),
        })
    }

    /// The entry for `url` and its blob; an entry whose blob is gone or wrong is forgotten.
    pub fn lookup(&self, url: &str) -> Option<(IndexEntry, Blob)> {
        let path = self.index_path(&Self::url_key(url));
        let text = fs::read(&path).ok()?;
        let entry: IndexEntry = match serde_json::from_slice(&text) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(path = %path.display(), "unreadable cache index entry ({e}); removing it");
                let _ = fs::remove_file(&path);
                return None;
            }
        };
        if entry.url != url {
            return None;
        }
        match self.blob(&entry.sha256) {
            Some(blob) if blob.size == entry.size => Some((entry, blob)),
            _ => {
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    /// Marks a blob as just used (its mtime is the LRU stamp).
    pub fn touch(&self, blob: &Blob) {
        if let Ok(f) = fs::OpenOptions::new()
            .write(true)
            .open(self.blob_path(&blob.sha256))
        {
            let _ = f.set_modified(SystemTime::now());
        }
    }

    /// A temporary file to download into.
    pub fn temp(&self) -> io::Result<TempFile> {
        TempFile::create_in(&self.root.join("tmp"), "")
    }

    /// Renames a complete, verified download into place and records its URL; then evicts the
    /// least recently used blobs beyond the size limit.
    pub fn commit(&self, tmp: TempFile, entry: &IndexEntry) -> io::Result<()> {
        tmp.persist(&self.blob_path(&entry.sha256))?;
        self.record(entry)?;
        self.evict(0, Some(&entry.sha256));
        Ok(())
    }

    /// Writes the index entry of a URL (temporary file then rename).
    pub fn record(&self, entry: &IndexEntry) -> io::Result<()> {
        let entry = IndexEntry {
            stored_at: now_secs(),
            ..entry.clone()
        };
        let json = serde_json::to_vec_pretty(&entry).map_err(io::Error::other)?;
        let tmp = TempFile::create_in(&self.root.join("tmp"), "index-")?;
        io::Write::write_all(&mut tmp.file()?, &json)?;
        tmp.persist(&self.index_path(&Self::url_key(&entry.url)))
    }

    /// Forgets a blob and the URL pointing at it (a corrupt entry).
    pub fn remove(&self, url: &str, sha256: &str) {
        let _ = fs::remove_file(self.index_path(&Self::url_key(url)));
        if is_sha256(sha256) {
            let _ = fs::remove_file(self.blob_path(sha256));
        }
        self.metrics.cache_bytes.set(self.size() as i64);
    }

    fn blobs(&self) -> Vec<(SystemTime, u64, String)> {
        let Ok(dir) = fs::read_dir(self.root.join("blobs")) else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                if !is_sha256(&name) {
                    return None;
                }
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), name))
            })
            .collect()
    }

    /// Bytes held in blobs.
    pub fn size(&self) -> u64 {
        self.blobs().iter().map(|b| b.1).sum()
    }

    /// Evicts least recently used blobs until `incoming` more bytes fit under the limit. Blobs
    /// pinned by this process and `keep` stay (another process reading a blob keeps its open
    /// file, so unlinking it under that process is safe).
    pub fn evict(&self, incoming: u64, keep: Option<&str>) {
        let mut blobs = self.blobs();
        let mut used: u64 = blobs.iter().map(|b| b.1).sum();
        blobs.sort();
        let pinned = self.pins.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (_, size, sha) in blobs {
            if used.saturating_add(incoming) <= self.limit {
                break;
            }
            if pinned.contains_key(&sha) || keep == Some(sha.as_str()) {
                continue;
            }
            if fs::remove_file(self.blob_path(&sha)).is_ok() {
                tracing::info!(sha256 = %sha, size, "evicted from the image cache");
                self.metrics.cache_evictions.inc();
                used -= size;
            }
        }
        self.metrics.cache_bytes.set(used as i64);
    }

    /// Blocks until this process is the only one downloading `url` into this cache.
    pub fn lock_url(&self, url: &str) -> io::Result<UrlLock> {
        let path = self
            .root
            .join("locks")
            .join(format!("{}.lock", Self::url_key(url)));
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map(UrlLock)
            .map_err(|(_, e)| io::Error::from(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> ImageMetrics {
        static R: std::sync::LazyLock<crate::metrics::Registry> =
            std::sync::LazyLock::new(Default::default);
        ImageMetrics::new(&R)
    }

    fn put(c: &Cache, url: &str, data: &[u8]) -> String {
        let t = c.temp().unwrap();
        io::Write::write_all(&mut t.file().unwrap(), data).unwrap();
        let sha = sha256_hex(data);
        let mut e = IndexEntry::new(url, &sha, data.len() as u64);
        e.etag = Some("\"e\"".into());
        c.commit(t, &e).unwrap();
        sha
    }

    #[test]
    fn store_lookup_and_lru_eviction() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path(), 250, metrics()).unwrap();
        let a = put(&c, "http://h/a", &[1u8; 100]);
        let old = SystemTime::now() - Duration::from_secs(100);
        File::options()
            .write(true)
            .open(c.blob_path(&a))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let b = put(&c, "http://h/b", &[2u8; 100]);
        let (entry, blob) = c.lookup("http://h/a").unwrap();
        assert_eq!((entry.sha256.as_str(), blob.size), (a.as_str(), 100));
        assert_eq!(entry.etag.as_deref(), Some("\"e\""));
        drop(blob);
        // A third blob does not fit: the least recently used (a) goes.
        let c3 = put(&c, "http://h/c", &[3u8; 100]);
        assert!(c.lookup("http://h/a").is_none());
        assert!(c.blob(&b).is_some() && c.blob(&c3).is_some());
        assert_eq!(c.size(), 200);
        // A pinned blob survives eviction.
        let pinned = c.blob(&b).unwrap();
        c.evict(250, None);
        assert!(c.blob(&b).is_some());
        drop(pinned);
        assert!(
            fs::read_dir(dir.path().join("tmp"))
                .unwrap()
                .next()
                .is_none()
        );
    }

    #[test]
    fn revalidation_by_checksum() {
        let mut e = IndexEntry::new("u", &"a".repeat(64), 1);
        e.md5 = Some("m".repeat(32));
        let want = |md5: Option<&str>, sha256: Option<&str>| Checksums {
            md5: md5.map(str::to_string),
            sha256: sha256.map(str::to_string),
            sha512: None,
        };
        assert!(e.matches(&want(None, Some(&"a".repeat(64)))));
        assert!(e.matches(&want(Some(&"m".repeat(32)), None)));
        assert!(!e.matches(&want(Some(&"m".repeat(32)), Some(&"b".repeat(64)))));
        assert!(!e.matches(&want(None, None)));
        assert!(!e.matches(&Checksums {
            sha512: Some("s".repeat(128)),
            ..Default::default()
        }));
    }
}
