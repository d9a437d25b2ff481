//! `[images]`: where the shared image cache lives, how big it may grow, the proxy, the lab CA,
//! and the worker-wide bounds on downloads and decompressors.
//!
//! ```toml
//! [images]
//! cache_dir = "/var/lib/labd/images"   # default: <worker.state_dir>/images
//! cache_size = "50 GiB"                # least recently used entries are evicted beyond this
//! proxy = "http://proxy.lab:3128"      # default: http_proxy/https_proxy; "" = never a proxy
//! no_proxy = "localhost,.lab.example"  # default: no_proxy from the environment
//! ca_file = "/etc/labd/lab-ca.pem"     # trusted in addition to the system roots
//! max_downloads = 4
//! max_decompressors = 2                # default: number of CPU cores
//! connect_timeout = "30s"
//! read_timeout = "60s"                 # longest silence within a transfer
//! retries = 5
//! retry_delay = "1s"                   # first backoff, doubled each time, capped at 30 s
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::proxy::{ProxySettings, parse_proxy_url};
use crate::inventory::{ByteSize, Diagnostics, DurationValue, Inventory};

/// Default cache size limit.
pub const DEFAULT_CACHE_SIZE: u64 = 20 << 30;
/// Default number of concurrent downloads on the worker.
pub const DEFAULT_MAX_DOWNLOADS: usize = 4;

/// `[images]` as written in the inventory.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesConfig {
    pub cache_dir: Option<Spanned<PathBuf>>,
    pub cache_size: Option<Spanned<ByteSize>>,
    pub proxy: Option<Spanned<String>>,
    pub no_proxy: Option<Spanned<String>>,
    pub ca_file: Option<Spanned<PathBuf>>,
    pub max_downloads: Option<Spanned<usize>>,
    pub max_decompressors: Option<Spanned<usize>>,
    pub connect_timeout: Option<DurationValue>,
    pub read_timeout: Option<DurationValue>,
    pub retries: Option<u32>,
    pub retry_delay: Option<DurationValue>,
}

/// Backoff between attempts: `initial`, doubled each time, capped, with some jitter so that
/// jobs which failed together do not retry together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts after the first one (per failure streak: progress resets the count).
    pub retries: u32,
    pub initial: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retries: 5,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The pause before retry number `n` (1-based).
    pub fn delay(&self, n: u32) -> Duration {
        let base = self
            .initial
            .saturating_mul(1u32 << n.saturating_sub(1).min(16))
            .min(self.max);
        // Up to +25 % jitter.
        let jitter = base.mul_f64(rand::random::<f64>() * 0.25);
        base + jitter
    }
}

/// The settings the image service runs with, resolved from the inventory and the environment.
#[derive(Debug, Clone)]
pub struct ImageSettings {
    pub cache_dir: PathBuf,
    pub cache_size: u64,
    pub proxy: ProxySettings,
    pub ca_file: Option<PathBuf>,
    pub max_downloads: usize,
    pub max_decompressors: usize,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub retry: RetryPolicy,
}

/// Number of CPU cores, the default bound on decompressors.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl ImageSettings {
    /// Defaults with the cache in `cache_dir` and proxies from the environment.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Result<Self, String> {
        Ok(Self {
            cache_dir: cache_dir.into(),
            cache_size: DEFAULT_CACHE_SIZE,
            proxy: ProxySettings::from_env()?,
            ca_file: None,
            max_downloads: DEFAULT_MAX_DOWNLOADS,
            max_decompressors: cpu_count(),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
        })
    }

    /// The settings of a validated inventory.
    pub fn from_inventory(inv: &Inventory) -> Result<Self, String> {
        let c = inv.images.clone().unwrap_or_default();
        Self::from_config(&c, &inv.worker.state_dir, |k| std::env::var(k).ok())
    }

    /// `[images]` over the defaults; `env` reads proxy variables.
    pub fn from_config(
        c: &ImagesConfig,
        state_dir: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let d = RetryPolicy::default();
        Ok(Self {
            cache_dir: c
                .cache_dir
                .as_ref()
                .map_or_else(|| state_dir.join("images"), |p| p.get_ref().clone()),
            cache_size: c
                .cache_size
                .as_ref()
                .map_or(DEFAULT_CACHE_SIZE, |s| s.get_ref().0),
            proxy: ProxySettings::resolve(
                c.proxy.as_ref().map(|p| p.get_ref().as_str()),
                c.no_proxy.as_ref().map(|p| p.get_ref().as_str()),
                env,
            )?,
            ca_file: c.ca_file.as_ref().map(|p| p.get_ref().clone()),
            max_downloads: c
                .max_downloads
                .as_ref()
                .map_or(DEFAULT_MAX_DOWNLOADS, |n| *n.get_ref()),
            max_decompressors: c
                .max_decompressors
                .as_ref()
                .map_or_else(cpu_count, |n| *n.get_ref()),
            connect_timeout: c
                .connect_timeout
                .map_or(Duration::from_secs(30), DurationValue::get),
            read_timeout: c
                .read_timeout
                .map_or(Duration::from_secs(60), DurationValue::get),
            retry: RetryPolicy {
                retries: c.retries.unwrap_or(d.retries),
                initial: c.retry_delay.map_or(d.initial, DurationValue::get),
                max: d.max,
            },
        })
    }
}

/// Checks what serde cannot: paths, the proxy address, the CA file, non-zero bounds.
pub fn validate(inv: &Inventory, diags: &mut Diagnostics) {
    let Some(c) = &inv.images else {
        return;
    };
    let src = &inv.source;
    if let Some(dir) = &c.cache_dir {
        if !dir.get_ref().is_absolute() {
            diags.push(src.diag(
                dir.span(),
                "images.cache_dir",
                format!("cache_dir {:?} must be an absolute path", dir.get_ref()),
            ));
        }
    }
    if let Some(size) = &c.cache_size {
        if size.get_ref().0 == 0 {
            diags.push(src.diag(
                size.span(),
                "images.cache_size",
                "cache_size must be more than 0 (use --no-cache or use_cache: false to bypass the cache)",
            ));
        }
    }
    if let Some(p) = &c.proxy {
        if !p.get_ref().trim().is_empty() {
            if let Err(e) = parse_proxy_url(p.get_ref()) {
                diags.push(src.diag(p.span(), "images.proxy", e));
            }
        }
    }
    if let Some(ca) = &c.ca_file {
        if let Err(e) = read_ca_file(ca.get_ref()) {
            diags.push(src.diag(ca.span(), "images.ca_file", e));
        }
    }
    for (key, value) in [
        ("images.max_downloads", &c.max_downloads),
        ("images.max_decompressors", &c.max_decompressors),
    ] {
        if let Some(n) = value {
            if *n.get_ref() == 0 {
                diags.push(src.diag(n.span(), key, "must be at least 1"));
            }
        }
    }
}

/// Reads a PEM file of CA certificates; an error says why it cannot be used.
pub fn read_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{}: not a PEM certificate bundle: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Inventory, Vec<String>> {
        Inventory::parse(Path::new("inv.toml"), text)
            .map_err(|e| e.diagnostics().iter().map(|d| d.to_string()).collect())
    }

    const HEAD: &str = "[worker]\nname = \"w\"\nstate_dir = \"/var/lib/labd\"\n";

    #[test]
    fn defaults_and_overrides() {
        let inv = parse(&format!(
            "{HEAD}[images]\ncache_size = \"2 GiB\"\nproxy = \"lab:3128\"\nmax_decompressors = 3\nretry_delay = \"250ms\"\n"
        ))
        .unwrap();
        let c = inv.images.clone().unwrap();
        let s = ImageSettings::from_config(&c, &inv.worker.state_dir, |_| None).unwrap();
        assert_eq!(s.cache_dir, Path::new("/var/lib/labd/images"));
        assert_eq!(s.cache_size, 2 << 30);
        assert_eq!(s.max_decompressors, 3);
        assert_eq!(s.max_downloads, DEFAULT_MAX_DOWNLOADS);
        assert_eq!(s.retry.initial, Duration::from_millis(250));
        assert_eq!(
            s.proxy.http.as_ref().map(|u| u.as_str()),
            Some("http://lab:3128/")
        );
    }

    #[test]
    fn bad_values_point_at_the_line() {
        let errs = parse(&format!(
            "{HEAD}[images]\ncache_dir = \"relative\"\nproxy = \"socks5://p:1\"\nmax_downloads = 0\nca_file = \"/nonexistent/ca.pem\"\n"
        ))
        .unwrap_err();
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(
            errs[0].starts_with("inv.toml:5:13: images.cache_dir: "),
            "{errs:?}"
        );
        assert!(
            errs[1].starts_with("inv.toml:6:9: images.proxy: "),
            "{errs:?}"
        );
        assert!(errs[2].contains("images.max_downloads: must be at least 1"));
        assert!(errs[3].contains("images.ca_file: cannot read /nonexistent/ca.pem"));
        let errs = parse(&format!("{HEAD}[images]\ncache_sise = 1\n")).unwrap_err();
        assert!(errs[0].contains("unknown field `cache_sise`"), "{errs:?}");
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy {
            retries: 9,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert!(
            p.delay(1) >= Duration::from_millis(100) && p.delay(1) <= Duration::from_millis(125)
        );
        assert!(p.delay(3) >= Duration::from_millis(400));
        assert!(p.delay(30) <= Duration::from_millis(1250));
    }
}
