//! `labd fetch URL -o FILE`: download (and decompress) images through the same service jobs
//! use, with the worker's cache, proxy and bounds. Several `URL -o FILE` pairs are fetched at
//! once through one service, as concurrent jobs on the worker would be.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use crate::images::{
    Checksums, Decompress, FetchReport, ImageRequest, ImageService, ImageSettings, Phase, Progress,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image URL (http://, https:// or file://); repeat with one -o each.
    #[arg(required = true, value_name = "URL")]
    pub urls: Vec<String>,
    /// Destination file, one per URL in the same order.
    #[arg(short = 'o', long = "output", required = true, value_name = "FILE")]
    pub outputs: Vec<PathBuf>,
    /// Expected sha256 of the downloaded (compressed) bytes.
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// Expected md5 of the downloaded (compressed) bytes.
    #[arg(long, value_name = "HEX")]
    pub md5: Option<String>,
    /// Expected sha512 of the downloaded (compressed) bytes.
    #[arg(long, value_name = "HEX")]
    pub sha512: Option<String>,
    /// gz, xz, bz2, zstd, none, or auto (by the stream's magic bytes).
    #[arg(long, default_value = "auto", value_name = "FORMAT")]
    pub compression: String,
    /// Do not read or write the image cache. The download's own sha256 (the cache's key) is
    /// then computed only to check --sha256; the output's sha256 is always reported.
    #[arg(long)]
    pub no_cache: bool,
    /// Inventory whose [images] section to use. Without it: /etc/labd/inventory.toml if it
    /// exists, else defaults (proxies from http_proxy/https_proxy/no_proxy).
    #[arg(short = 'c', long = "config", env = "LABD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Cache directory (overrides the inventory).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Print each report as a JSON line instead of a sentence.
    #[arg(long)]
    pub json: bool,
}

fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("labd/images");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(h) => PathBuf::from(h).join(".cache/labd/images"),
        None => PathBuf::from("/var/cache/labd/images"),
    }
}

fn settings(args: &Args) -> anyhow::Result<ImageSettings> {
    let inventory = match &args.config {
        Some(p) => Some(p.clone()),
        None => {
            let d = PathBuf::from(super::DEFAULT_INVENTORY);
            d.exists().then_some(d)
        }
    };
    let mut s = match inventory {
        Some(p) => {
            let inv = crate::inventory::Inventory::load(&p)?;
            ImageSettings::from_inventory(&inv)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("{}: [images]", p.display()))?
        }
        None => ImageSettings::new(default_cache_dir()).map_err(anyhow::Error::msg)?,
    };
    if let Some(dir) = &args.cache_dir {
        s.cache_dir = dir.clone();
    }
    Ok(s)
}

fn describe(r: &FetchReport) -> String {
    let format = r
        .compression
        .map_or_else(|| "not compressed".to_string(), |c| format!("{c}"));
    format!(
        "{}: {} bytes, sha256 {} (from {}: {}, {} bytes, sha256 {}; cache {:?}; {:.2} s)",
        r.path.display(),
        r.output_bytes,
        r.output_sha256,
        r.url,
        format,
        r.compressed_bytes,
        r.sha256.as_deref().unwrap_or("not computed"),
        r.cache,
        r.duration.as_secs_f64(),
    )
}

/// Shows one image's progress: a bar on a terminal, a line per phase otherwise.
async fn watch_progress(
    url: String,
    mut rx: watch::Receiver<Progress>,
    bar: Option<indicatif::ProgressBar>,
) {
    let mut printed = 0;
    let mut closed = false;
    loop {
        let p = rx.borrow_and_update().clone();
        if let Some(bar) = &bar {
            if let Some(t) = p.total {
                bar.set_length(t);
            }
            bar.set_position(if p.phase == Phase::FromCache {
                p.compressed
            } else {
                p.downloaded.max(p.compressed)
            });
            bar.set_message(p.phase.label());
        } else {
            // Every stage gets its line, even one that passed between two snapshots.
            for phase in p.passed.iter().skip(printed) {
                let what = match phase {
                    Phase::Queued => "queued".to_string(),
                    Phase::Connecting => "connecting".to_string(),
                    Phase::Downloading => match p.total {
                        Some(t) => format!("downloading {t} bytes"),
                        None => "downloading".to_string(),
                    },
                    Phase::FromCache => "reading from the cache".to_string(),
                    Phase::Verifying => "verifying".to_string(),
                    Phase::Done => continue,
                };
                eprintln!("labd fetch: {url}: {what}");
            }
            printed = p.passed.len();
        }
        if p.phase == Phase::Done || closed {
            break;
        }
        // Closed (the fetch failed): one more pass shows the stages it reached last.
        closed = rx.changed().await.is_err();
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.urls.len() != args.outputs.len() {
        anyhow::bail!(
            "{} URL(s) but {} -o FILE: give one output per URL",
            args.urls.len(),
            args.outputs.len()
        );
    }
    let checksums = Checksums {
        md5: args.md5.clone(),
        sha256: args.sha256.clone(),
        sha512: args.sha512.clone(),
    };
    if args.urls.len() > 1 && checksums != Checksums::default() {
        anyhow::bail!("--md5/--sha256/--sha512 apply to a single URL");
    }
    let decompress: Decompress = args.compression.parse()?;
    let service = ImageService::new(settings(&args)?).await?;
    let tty = std::io::stderr().is_terminal();
    let bars = tty.then(indicatif::MultiProgress::new);
    let style = indicatif::ProgressStyle::with_template(
        "{msg:>10} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )?;
    let mut tasks = Vec::new();
    for (url, out) in args.urls.iter().zip(&args.outputs) {
        let req = ImageRequest {
            url: url.clone(),
            destination: out.clone(),
            decompress,
            checksums: checksums.clone(),
            use_cache: !args.no_cache,
            record_sha256: !args.no_cache,
        };
        let (tx, rx) = watch::channel(Progress::default());
        let bar = bars.as_ref().map(|m| {
            let b = m.add(indicatif::ProgressBar::new(0));
            b.set_style(style.clone());
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        let shown = tokio::spawn(watch_progress(url.clone(), rx, bar));
        let service = service.clone();
        tasks.push(tokio::spawn(async move {
            let r = service.fetch_with_progress(req, tx).await;
            let _ = shown.await;
            r
        }));
    }
    let mut failed = false;
    for t in tasks {
        match t.await.context("fetch task")? {
            Ok(report) => {
                if args.json {
                    println!("{}", serde_json::to_string(&report)?);
                } else {
                    println!("{}", describe(&report));
                }
                for w in &report.warnings {
                    eprintln!("labd fetch: warning: {}: {w}", report.url);
                }
            }
            Err(e) => {
                failed = true;
                eprintln!("labd fetch: {e}");
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
