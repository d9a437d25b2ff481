//! `labd fetch` as an admin runs it: the binary, its stage lines, its exit status, proxies from
//! the real environment variables (tinyproxy), the inventory's [images] section.

mod images_common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use images_common::*;
use labd_hw_fixtures::peers::tinyproxy::Tinyproxy;

fn labd(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_labd"));
    // A clean environment: no proxies or inventory from the machine running the tests.
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("RUST_LOG", "warn");
    c
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

fn run(c: &mut Command) -> Output {
    let o = c.output().unwrap();
    eprintln!("stdout:\n{}\nstderr:\n{}", text(&o.stdout), text(&o.stderr));
    o
}

#[test]
fn fetch_through_the_environment_proxy_with_stage_lines() {
    let proxy = Tinyproxy::start().unwrap();
    let srv = HttpServer::start().unwrap();
    let image = sample_image(2 << 20, 70);
    let body = compress(&image, "xz").unwrap();
    srv.serve("rootfs.img.xz", body.clone());
    let dir = tempfile::tempdir().unwrap();
    let url = srv.url("rootfs.img.xz");
    let out = dir.path().join("rootfs.img");
    let o = run(labd(dir.path())
        .env("http_proxy", proxy.url())
        .args(["fetch", &url, "-o"])
        .arg(&out)
        .args(["--sha256", &sha256(&body)]));
    assert!(o.status.success());
    assert!(std::fs::read(&out).unwrap() == image);
    let stderr = text(&o.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        vec![
            format!("labd fetch: {url}: queued"),
            format!("labd fetch: {url}: connecting"),
            format!("labd fetch: {url}: downloading {} bytes", body.len()),
            format!("labd fetch: {url}: verifying"),
        ]
    );
    assert_eq!(
        text(&o.stdout),
        format!(
            "{}: {} bytes, sha256 {} (from {url}: xz, {} bytes, sha256 {}; cache Stored; ",
            out.display(),
            image.len(),
            sha256(&image),
            body.len(),
            sha256(&body)
        ) + text(&o.stdout).split("; cache Stored; ").nth(1).unwrap()
    );
    assert!(proxy.wait_for_request(&format!("GET {url} HTTP/1.1"), Duration::from_secs(5)));
    // The default cache (no inventory) is under $HOME/.cache.
    let blob = dir
        .path()
        .join(".cache/labd/images/blobs")
        .join(sha256(&body));
    assert!(blob.exists());

    // Again, from the cache.
    let o = run(labd(dir.path())
        .args(["fetch", &url, "-o"])
        .arg(&out)
        .args(["--sha256", &sha256(&body)]));
    assert!(o.status.success());
    assert!(text(&o.stderr).contains(&format!("labd fetch: {url}: reading from the cache")));
    assert!(text(&o.stdout).contains("cache Hit;"));
}

#[test]
fn checksum_mismatch_exits_non_zero_and_keeps_nothing() {
    let srv = HttpServer::start().unwrap();
    srv.serve("a.img", b"some image".to_vec());
    let dir = tempfile::tempdir().unwrap();
    let url = srv.url("a.img");
    let out = dir.path().join("a");
    let wrong = "0".repeat(64);
    let o = run(labd(dir.path())
        .args(["fetch", &url, "-o"])
        .arg(&out)
        .args(["--sha256", &wrong, "--cache-dir"])
        .arg(dir.path().join("c")));
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains(&format!(
        "labd fetch: sha256 for '{url}' does not match. (checksum: expected {wrong}, downloaded {})",
        sha256(b"some image")
    )));
    assert!(!out.exists());
    assert_eq!(
        cache_files(&dir.path().join("c")),
        Vec::<std::path::PathBuf>::new()
    );

    let o = run(labd(dir.path())
        .args(["fetch", &url, "-o"])
        .arg(&out)
        .args(["--compression", "zip"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("compression 'zip' is an archive, not a stream"));
}

#[test]
fn several_images_at_once_with_an_inventory_and_no_cache() {
    let srv = HttpServer::start().unwrap();
    let a = sample_image(1 << 20, 71);
    let b = sample_image(1 << 20, 72);
    srv.serve("a.gz", compress(&a, "gz").unwrap());
    srv.serve("b.zst", compress(&b, "zstd").unwrap());
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inv.toml");
    std::fs::write(
        &inv,
        format!(
            "[worker]\nname = \"w1\"\nstate_dir = \"{}\"\n[images]\nmax_decompressors = 1\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let (oa, ob) = (dir.path().join("a"), dir.path().join("b"));
    let o = run(labd(dir.path())
        .args(["fetch", "-c"])
        .arg(&inv)
        .args(["--json", &srv.url("a.gz"), &srv.url("b.zst"), "-o"])
        .arg(&oa)
        .arg("-o")
        .arg(&ob));
    assert!(o.status.success());
    assert!(std::fs::read(&oa).unwrap() == a && std::fs::read(&ob).unwrap() == b);
    let reports: Vec<serde_json::Value> = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0]["compression"], "gz");
    assert_eq!(reports[1]["compression"], "zstd");
    assert_eq!(reports[1]["output_sha256"], sha256(&b));
    assert_eq!(reports[0]["cache"], "stored");
    // The inventory put the cache under state_dir.
    assert_eq!(cache_files(&dir.path().join("state/images")).len(), 4);

    let o = run(labd(dir.path())
        .args(["fetch", "--no-cache", "--cache-dir"])
        .arg(dir.path().join("nc"))
        .args([&srv.url("a.gz"), "-o"])
        .arg(&oa));
    assert!(o.status.success());
    assert!(text(&o.stdout).contains("cache Bypassed;"));
    assert_eq!(
        cache_files(&dir.path().join("nc")),
        Vec::<std::path::PathBuf>::new()
    );

    let o = run(labd(dir.path())
        .args(["fetch", &srv.url("a.gz"), &srv.url("b.zst"), "-o"])
        .arg(&oa));
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("2 URL(s) but 1 -o FILE"));
}
