//! Image download + decompression: labd against the command-line pipelines LAVA-style setups
//! use, in the same run, on loopback.
//!
//! ```sh
//! cargo bench --bench images                       # 1 GiB images, gz xz zstd
//! LABD_BENCH_SIZE=256MiB LABD_BENCH_FORMATS=gz,zstd,bz2 LABD_BENCH_REPEAT=3 cargo bench --bench images
//! ```
//!
//! For each format: `curl URL | gzip -dc > out` (and `pigz -dc`, `xz -dc`, `zstd -dc`,
//! `bzip2 -dc`) against a child `labd fetch URL -o out --no-cache`; then 1, 2 and 4 images at
//! once (one `labd fetch` with several URLs, against as many pipelines). Throughput is output
//! bytes per wall-clock second; peak memory is the child's `ru_maxrss` (wait4). Each figure is
//! the best of `LABD_BENCH_REPEAT` runs (default 2; the one-image runs interleave their commands
//! round by round), because the machine is shared; the load
//! average is printed beside each measurement. `LABD_BENCH_ALT_BIN=/path/to/labd` adds another
//! build to the one-image rounds (A/B of a change). Outputs are written to a tmpfs
//! (`LABD_BENCH_OUT`, default `/dev/shm/labd-bench`) so that disk writeback does not drown the
//! comparison.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use labd_hw_fixtures::peers::httpd::HttpServer;
use labd_hw_fixtures::peers::httpd::images::{compress_file, write_sample_image};

struct Run {
    wall: Duration,
    max_rss_kib: u64,
    /// User + system CPU of the command and its children.
    cpu: Duration,
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Runs `cmd` to completion; wall time and peak RSS of it and its children.
fn measure(mut cmd: Command) -> anyhow::Result<Run> {
    let start = Instant::now();
    let child = cmd.spawn()?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child, status and usage are valid pointers.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    anyhow::ensure!(r == pid, "wait4 failed");
    anyhow::ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed with status {status}"
    );
    std::mem::forget(child);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(Run {
        wall,
        max_rss_kib: usage.ru_maxrss as u64,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
    })
}

fn best_of(repeat: usize, mut f: impl FnMut() -> anyhow::Result<Run>) -> anyhow::Result<Run> {
    let mut best: Option<Run> = None;
    for _ in 0..repeat {
        let r = f()?;
        let better = best.as_ref().is_none_or(|b| r.wall < b.wall);
        let rss = best
            .as_ref()
            .map_or(r.max_rss_kib, |b| b.max_rss_kib.max(r.max_rss_kib));
        if better {
            best = Some(Run {
                max_rss_kib: rss,
                ..r
            });
        } else if let Some(b) = &mut best {
            b.max_rss_kib = rss;
        }
    }
    best.ok_or_else(|| anyhow::anyhow!("no runs"))
}

/// A labelled command, built afresh for each run.
type Row = (String, Box<dyn Fn() -> Command>);

/// Each command of `rows` once per round, for `repeat` rounds; the best run of each.
fn best_of_interleaved(repeat: usize, rows: &[Row], outs: &[PathBuf]) -> anyhow::Result<Vec<Run>> {
    let mut best: Vec<Option<Run>> = rows.iter().map(|_| None).collect();
    for _ in 0..repeat {
        for ((_, cmd), slot) in rows.iter().zip(&mut best) {
            cleanup(outs);
            let r = measure(cmd())?;
            *slot = Some(match slot.take() {
                None => r,
                Some(b) => {
                    let rss = b.max_rss_kib.max(r.max_rss_kib);
                    let faster = if r.wall < b.wall { r } else { b };
                    Run {
                        max_rss_kib: rss,
                        ..faster
                    }
                }
            });
        }
    }
    best.into_iter()
        .map(|r| r.ok_or_else(|| anyhow::anyhow!("no runs")))
        .collect()
}

fn parse_size(s: &str) -> u64 {
    labd::inventory::ByteSize::parse(s).map_or(1 << 30, |b| b.0)
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

/// A shell pipeline downloading `urls` at once and decoding each with `decoder`.
fn pipelines(urls: &[String], decoder: &str, outs: &[PathBuf]) -> Command {
    let mut script = String::new();
    for (u, o) in urls.iter().zip(outs) {
        script.push_str(&format!(
            "curl -sS --fail '{u}' | {decoder} > '{}' & ",
            o.display()
        ));
    }
    script.push_str("wait");
    let mut c = Command::new("sh");
    c.arg("-c").arg(script);
    c
}

/// The fastest pipeline doing labd's work too: sha256 of the download and of the output
/// (`openssl`, which uses the CPU's SHA instructions as labd does; coreutils' sha256sum does
/// not and would make the reference look slow).
fn hashing_pipeline(url: &str, decoder: &str, out: &Path) -> Command {
    let script = format!(
        "curl -sS --fail '{url}' | tee >(openssl sha256 > /dev/null) | {decoder} | tee '{}' | openssl sha256 > /dev/null",
        out.display()
    );
    let mut c = Command::new("bash");
    c.arg("-c").arg(script);
    c
}

/// `labd fetch --no-cache`: the output's sha256 is computed, the download's only with
/// `--sha256` (a [`labd_fetch_with`] option).
fn labd_fetch(urls: &[String], outs: &[PathBuf], cache: &Path) -> Command {
    labd_fetch_with(env!("CARGO_BIN_EXE_labd"), urls, outs, cache, &[])
}

/// `bin fetch --no-cache` with `extra` options (`--sha256 HEX`: the download verified too, as
/// for a job with `sha256sum:`, both streams hashed as LAVA does).
fn labd_fetch_with(
    bin: &str,
    urls: &[String],
    outs: &[PathBuf],
    cache: &Path,
    extra: &[&str],
) -> Command {
    let mut c = Command::new(bin);
    c.arg("fetch")
        .args(extra)
        .arg("--no-cache")
        .arg("--cache-dir")
        .arg(cache);
    c.env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("LABD_CONFIG")
        .env("RUST_LOG", "warn");
    c.args(urls);
    for o in outs {
        c.arg("-o").arg(o);
    }
    c.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    c
}

/// `cmd` confined to the first `cores` CPUs (`taskset`): how throughput scales with cores,
/// which the unconfined figures cannot show once one image already keeps every core busy.
fn pinned(cmd: Command, cores: usize) -> Command {
    let mut c = Command::new("taskset");
    c.arg("-c").arg(format!("0-{}", cores.saturating_sub(1)));
    c.arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    c
}

fn file_sha256(path: &Path) -> anyhow::Result<String> {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

fn cleanup(outs: &[PathBuf]) {
    for o in outs {
        let _ = std::fs::remove_file(o);
    }
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes --bench; nothing else is expected.
    let size = parse_size(&std::env::var("LABD_BENCH_SIZE").unwrap_or_else(|_| "1GiB".into()));
    let formats: Vec<String> = std::env::var("LABD_BENCH_FORMATS")
        .unwrap_or_else(|_| "gz,xz,zstd".into())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let repeat: usize = std::env::var("LABD_BENCH_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let concurrency: Vec<usize> = std::env::var("LABD_BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "1,2,4".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let dir =
        PathBuf::from(std::env::var("LABD_BENCH_DIR").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-images").into()
        }));
    std::fs::create_dir_all(&dir)?;
    for prog in [
        "curl", "gzip", "pigz", "xz", "zstd", "bzip2", "openssl", "taskset",
    ] {
        labd_hw_fixtures::require_program(prog)?;
    }
    // Another labd build to compare in the one-image rounds (A/B of a change).
    let mut labd_bins = vec![env!("CARGO_BIN_EXE_labd").to_string()];
    labd_bins.extend(
        std::env::var("LABD_BENCH_ALT_BIN")
            .ok()
            .filter(|s| !s.is_empty()),
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "images bench: {} MiB images, formats {formats:?}, best of {repeat}, {cores} cores, load {}",
        size >> 20,
        load()
    );

    // Test data, kept between runs (generating xz of 1 GiB takes minutes).
    let raw = dir.join(format!("sample-{size}.img"));
    if std::fs::metadata(&raw).map(|m| m.len()).ok() != Some(size) {
        println!("generating {}", raw.display());
        write_sample_image(&raw, size, 0x1abd)?;
    }
    let srv = HttpServer::start()?;
    let mut files = Vec::new();
    for f in &formats {
        let suffix = match f.as_str() {
            "gz" => "gz",
            "xz" => "xz",
            "bz2" => "bz2",
            "zstd" => "zst",
            other => anyhow::bail!("unknown format {other}"),
        };
        let path = dir.join(format!("sample-{size}.img.{suffix}"));
        if !path.exists() {
            println!("compressing {} (once)", path.display());
            let tmp = path.with_extension("part");
            let extra: &[&str] = match f.as_str() {
                "xz" | "zstd" => &["-T0"],
                _ => &[],
            };
            compress_file(&raw, &tmp, f, extra)?;
            std::fs::rename(&tmp, &path)?;
        }
        let name = format!("img.{suffix}");
        srv.serve_file(&name, &path)?;
        let digest = file_sha256(&path)?;
        let csize = std::fs::metadata(&path)?.len();
        println!(
            "  {f}: {} MiB compressed (ratio {:.2})",
            csize >> 20,
            size as f64 / csize as f64
        );
        files.push((f.clone(), name, digest));
    }
    let cache = dir.join("cache");
    // Outputs go to a tmpfs: the shared VM disk's writeback throttling otherwise dominates and
    // varies from run to run (it stalled both labd and the pipelines for seconds).
    let out_dir = std::env::var_os("LABD_BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            if Path::new("/dev/shm").is_dir() {
                PathBuf::from("/dev/shm/labd-bench")
            } else {
                dir.clone()
            }
        });
    std::fs::create_dir_all(&out_dir)?;
    println!("outputs in {}", out_dir.display());
    let outs: Vec<PathBuf> = (0..concurrency.iter().copied().max().unwrap_or(1).max(1))
        .map(|i| out_dir.join(format!("out{i}.img")))
        .collect();

    let mut summary = String::new();
    summary.push_str(
        "| format | pipeline | MB/s | peak RSS MiB | CPU s | labd / best CLI | load |\n|---|---|---|---|---|---|---|\n",
    );
    let mut per_core = String::from(
        "| format | 1 image on 1 core MB/s | 2 images on 2 cores MB/s (total) | labd speed-up | CLI speed-up | load |\n|---|---|---|---|---|---|\n",
    );
    let mut scaling = String::new();
    scaling.push_str("| format | images at once | labd MB/s (total) | speed-up vs 1 | CLI MB/s (total) | CLI speed-up | labd peak RSS MiB | load |\n|---|---|---|---|---|---|---|---|\n");

    for (format, name, digest) in &files {
        let url = srv.url(name);
        let decoders: Vec<(&str, &str)> = match format.as_str() {
            "gz" => vec![
                ("curl | gzip -dc", "gzip -dc"),
                ("curl | pigz -dc", "pigz -dc"),
            ],
            "xz" => vec![("curl | xz -dc", "xz -dc")],
            "zstd" => vec![("curl | zstd -dc", "zstd -dc")],
            "bz2" => vec![("curl | bzip2 -dc", "bzip2 -dc")],
            _ => vec![],
        };
        println!("\n== {format} (one image)");
        // One row per command; the rounds interleave them so that the slow phases of a shared
        // machine hit every command alike (best of each is kept).
        let mut rows: Vec<Row> = Vec::new();
        for (label, dec) in &decoders {
            let (u, o) = (url.clone(), outs[0].clone());
            let dec = dec.to_string();
            rows.push((
                label.to_string(),
                Box::new(move || {
                    pipelines(std::slice::from_ref(&u), &dec, std::slice::from_ref(&o))
                }),
            ));
        }
        if let Some((label, dec)) = decoders.last() {
            let (u, o) = (url.clone(), outs[0].clone());
            let dec = dec.to_string();
            rows.push((
                format!("{label} + 2x sha256"),
                Box::new(move || hashing_pipeline(&u, &dec, &o)),
            ));
        }
        let first_labd = rows.len();
        for (i, bin) in labd_bins.iter().enumerate() {
            let tag = if i == 0 {
                String::new()
            } else {
                format!(" [{bin}]")
            };
            let (u, o, c, b) = (url.clone(), outs[0].clone(), cache.clone(), bin.clone());
            rows.push((
                format!("labd fetch{tag}"),
                Box::new(move || {
                    labd_fetch_with(
                        &b,
                        std::slice::from_ref(&u),
                        std::slice::from_ref(&o),
                        &c,
                        &[],
                    )
                }),
            ));
            let (u, o, c, b, d) = (
                url.clone(),
                outs[0].clone(),
                cache.clone(),
                bin.clone(),
                digest.clone(),
            );
            rows.push((
                format!("labd fetch --sha256{tag}"),
                Box::new(move || {
                    labd_fetch_with(
                        &b,
                        std::slice::from_ref(&u),
                        std::slice::from_ref(&o),
                        &c,
                        &["--sha256", &d],
                    )
                }),
            ));
        }
        let l = load();
        let runs = best_of_interleaved(repeat, &rows, &outs)?;
        let best_cli = runs[..first_labd - 1]
            .iter()
            .map(|r| mbps(size, r.wall))
            .fold(0f64, f64::max);
        for (i, ((label, _), r)) in rows.iter().zip(&runs).enumerate() {
            let t = mbps(size, r.wall);
            let rss = r.max_rss_kib as f64 / 1024.0;
            let cpu = r.cpu.as_secs_f64();
            let md_label = label.replace('|', "\\|");
            if i + 1 < first_labd {
                println!("  {label:<22} {t:8.1} MB/s  {rss:6.1} MiB  CPU {cpu:.2} s");
                summary.push_str(&format!(
                    "| {format} | `{md_label}` | {t:.1} | {rss:.1} | {cpu:.2} | | {l} |\n"
                ));
            } else if i + 1 == first_labd {
                println!(
                    "  {label:<22} {t:8.1} MB/s  CPU {cpu:.2} s  (same work as labd; not the goal's baseline)"
                );
                summary.push_str(&format!("| {format} | `{md_label}` (same work, for reference) | {t:.1} | {rss:.1} | {cpu:.2} | | {l} |\n"));
            } else {
                let ratio = t / best_cli;
                let goal_row = i == first_labd;
                println!(
                    "  {label:<22} {t:8.1} MB/s  {rss:6.1} MiB  CPU {cpu:.2} s  ratio to the fastest pipeline: {ratio:.2}"
                );
                let shown = if goal_row {
                    format!("**{ratio:.2}**")
                } else {
                    format!("{ratio:.2}")
                };
                summary.push_str(&format!(
                    "| {format} | `{md_label}` | {t:.1} | {rss:.1} | {cpu:.2} | {shown} | {l} |\n"
                ));
            }
        }
        println!("  (load {l} before the rounds)");

        println!("== {format} (several images at once)");
        let fastest_dec = decoders.last().map_or("cat", |d| d.1);
        let mut base_labd = None;
        let mut base_cli = None;
        for &n in &concurrency {
            let urls: Vec<String> = (0..n).map(|_| url.clone()).collect();
            let l = load();
            let lr = best_of(repeat, || {
                cleanup(&outs);
                measure(labd_fetch(&urls, &outs[..n], &cache))
            })?;
            let cr = best_of(repeat, || {
                cleanup(&outs);
                measure(pipelines(&urls, fastest_dec, &outs[..n]))
            })?;
            let lt = mbps(size * n as u64, lr.wall);
            let ct = mbps(size * n as u64, cr.wall);
            let bl = *base_labd.get_or_insert(lt);
            let bc = *base_cli.get_or_insert(ct);
            println!(
                "  {n} at once: labd {lt:8.1} MB/s (x{:.2})  {fastest_dec} {ct:8.1} MB/s (x{:.2})  labd peak {:.1} MiB  (load {l})",
                lt / bl,
                ct / bc,
                lr.max_rss_kib as f64 / 1024.0
            );
            scaling.push_str(&format!(
                "| {format} | {n} | {lt:.1} | {:.2} | {ct:.1} | {:.2} | {:.1} | {l} |\n",
                lt / bl,
                ct / bc,
                lr.max_rss_kib as f64 / 1024.0
            ));
        }
        if cores >= 2 && outs.len() >= 2 {
            // One image on one core against two on two: does the work spread over the cores
            // (the worker-wide decompressor pool sizes itself from the CPUs it may use).
            let l = load();
            let one = [url.clone()];
            let two = [url.clone(), url.clone()];
            let run = |urls: &[String], n: usize, labd: bool| {
                best_of(repeat, || {
                    cleanup(&outs);
                    let cmd = if labd {
                        labd_fetch(urls, &outs[..urls.len()], &cache)
                    } else {
                        pipelines(urls, fastest_dec, &outs[..urls.len()])
                    };
                    measure(pinned(cmd, n))
                })
                .map(|r| mbps(size * urls.len() as u64, r.wall))
            };
            let (l1, l2) = (run(&one, 1, true)?, run(&two, 2, true)?);
            let (c1, c2) = (run(&one, 1, false)?, run(&two, 2, false)?);
            println!(
                "  per core: labd 1 image on 1 core {l1:.1} MB/s, 2 on 2 cores {l2:.1} MB/s (x{:.2}); {fastest_dec} x{:.2}  (load {l})",
                l2 / l1,
                c2 / c1
            );
            per_core.push_str(&format!(
                "| {format} | {l1:.1} | {l2:.1} | **{:.2}** | {:.2} | {l} |\n",
                l2 / l1,
                c2 / c1
            ));
        }
    }
    cleanup(&outs);
    let report = format!("{summary}\n{scaling}\n{per_core}");
    std::fs::write(dir.join("results.md"), &report)?;
    println!(
        "\n{report}\n(written to {})",
        dir.join("results.md").display()
    );
    Ok(())
}
