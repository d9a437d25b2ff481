//! Every failure the issue lists, against the fault-injecting server: each gives an error that
//! names the URL and the stage, and none leaves anything in the cache or at the destination.
//! Transient failures (5xx, 429, resets) are retried or resumed and then succeed.

mod images_common;

use std::path::Path;
use std::time::{Duration, Instant};

use images_common::*;
use labd::images::{CacheOutcome, FetchError, ImageRequest, ImageService, Stage};

struct Env {
    dir: tempfile::TempDir,
    svc: ImageService,
    srv: HttpServer,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(settings(dir.path())).await;
    Env {
        dir,
        svc,
        srv: HttpServer::start().unwrap(),
    }
}

impl Env {
    fn dest(&self) -> std::path::PathBuf {
        self.dir.path().join("out").join("image")
    }

    async fn fetch(&self, path: &str) -> Result<labd::images::FetchReport, FetchError> {
        self.svc
            .fetch(ImageRequest::new(self.srv.url(path), self.dest()))
            .await
    }

    /// The failure left nothing behind.
    fn assert_clean(&self) {
        assert_eq!(
            cache_files(&self.dir.path().join("cache")),
            Vec::<std::path::PathBuf>::new()
        );
        assert_eq!(
            dir_files(&self.dir.path().join("out")),
            Vec::<String>::new()
        );
    }
}

fn assert_names(e: &FetchError, stage: Stage, url: &str) {
    assert_eq!(e.stage(), stage, "{e}");
    assert_eq!(e.url(), url);
    let text = e.to_string();
    assert!(text.starts_with(&format!("{stage}: '{url}': ")), "{text}");
}

#[tokio::test]
async fn not_found_is_not_retried() {
    let t = env().await;
    let e = t.fetch("nothing-here.img").await.unwrap_err();
    let url = t.srv.url("nothing-here.img");
    assert_names(&e, Stage::HttpStatus, &url);
    assert_eq!(
        e.to_string(),
        format!("http status: '{url}': 404 Not Found (after 1 attempt)")
    );
    assert!(!e.is_infrastructure());
    assert_eq!(t.srv.requests().len(), 1);
    t.assert_clean();
}

#[tokio::test]
async fn server_errors_and_429_are_retried() {
    let t = env().await;
    let image = sample_image(512 << 10, 10);
    let body = compress(&image, "gz").unwrap();
    t.srv.serve("busy.img.gz", body);
    t.srv.set_faults(
        "busy.img.gz",
        Faults {
            fail_with: vec![503, 500, 429],
            retry_after: Some(1),
            ..Faults::default()
        },
    );
    let started = Instant::now();
    let r = t.fetch("busy.img.gz").await.unwrap();
    assert!(std::fs::read(t.dest()).unwrap() == image);
    assert_eq!(r.attempts, 4);
    // Retry-After: 1 was honoured (capped at the policy's 200 ms maximum in tests).
    assert!(started.elapsed() >= Duration::from_millis(150 * 3));
    let statuses: Vec<u16> = t.srv.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![503, 500, 429, 200]);

    t.srv.serve("down.img", b"x".to_vec());
    t.srv.set_faults(
        "down.img",
        Faults {
            fail_with: vec![502; 10],
            ..Faults::default()
        },
    );
    std::fs::remove_file(t.dest()).unwrap();
    let e = t.fetch("down.img").await.unwrap_err();
    let url = t.srv.url("down.img");
    assert_names(&e, Stage::HttpStatus, &url);
    assert!(
        e.to_string()
            .ends_with("502 Bad Gateway (after 4 attempts)"),
        "{e}"
    );
    assert!(e.is_infrastructure());
    assert!(!t.dest().exists());
    // The earlier good image is still cached; the failed one added nothing.
    assert_eq!(cache_files(&t.dir.path().join("cache")).len(), 2);
}

#[tokio::test]
async fn reset_mid_transfer_resumes_with_range() {
    let t = env().await;
    let image = sample_image(4 << 20, 11);
    let body = compress(&image, "xz").unwrap();
    t.srv.serve("r.img.xz", body.clone());
    let cut = body.len() as u64 / 3;
    t.srv.set_faults(
        "r.img.xz",
        Faults {
            reset_after: Some(cut),
            resets: 2,
            ..Faults::default()
        },
    );
    let r = t.fetch("r.img.xz").await.unwrap();
    assert!(std::fs::read(t.dest()).unwrap() == image);
    assert_eq!(r.sha256, Some(sha256(&body)));
    assert_eq!((r.resumes, r.attempts), (2, 3));
    assert_eq!(r.cache, CacheOutcome::Stored);
    let log = t.srv.requests_to("r.img.xz");
    assert_eq!(log.len(), 3);
    assert_eq!(log[0].header("range"), None);
    // Each resume asks for the rest from what arrived (an RST discards data the client had
    // not read yet, so that is at most the cut), guarded by If-Range.
    let from = |r: &labd_hw_fixtures::peers::httpd::RequestLog| -> u64 {
        let v = r.header("range").unwrap();
        v.strip_prefix("bytes=")
            .unwrap()
            .trim_end_matches('-')
            .parse()
            .unwrap()
    };
    let (first, second) = (from(&log[1]), from(&log[2]));
    assert!(first > 0 && first <= cut, "{first} vs cut {cut}");
    assert!(second > first && second <= first + cut);
    assert_eq!((log[1].status, log[2].status), (206, 206));
    assert!(log[1].header("if-range").unwrap().starts_with('"'));
    // Whatever a cut connection delivered counts once in the output.
    assert_eq!(r.compressed_bytes, body.len() as u64);
}

#[tokio::test]
async fn early_close_resumes_and_servers_without_ranges_restart() {
    let t = env().await;
    let image = sample_image(2 << 20, 12);
    let body = compress(&image, "zstd").unwrap();
    t.srv.serve("c.img.zst", body.clone());
    t.srv.set_faults(
        "c.img.zst",
        Faults {
            close_after: Some(100_000),
            closes: 1,
            no_range: true,
            ..Faults::default()
        },
    );
    let r = t.fetch("c.img.zst").await.unwrap();
    assert!(std::fs::read(t.dest()).unwrap() == image);
    assert_eq!(r.sha256, Some(sha256(&body)));
    let log = t.srv.requests_to("c.img.zst");
    assert_eq!(log.len(), 2);
    // The server ignored Range and sent everything again; the first 100000 bytes were skipped.
    assert_eq!(log[1].status, 200);
    assert_eq!(log[1].header("range"), Some("bytes=100000-"));
    assert_eq!(r.downloaded_bytes, 100_000 + body.len() as u64);
}

#[tokio::test]
async fn connection_reset_every_time_fails_cleanly() {
    let t = env().await;
    let body = compress(&sample_image(1 << 20, 13), "gz").unwrap();
    t.srv.serve("flaky.img.gz", body.clone());
    t.srv.set_faults(
        "flaky.img.gz",
        Faults {
            reset_after: Some(50_000),
            resets: 100,
            no_range: true,
            ..Faults::default()
        },
    );
    let e = t.fetch("flaky.img.gz").await.unwrap_err();
    let url = t.srv.url("flaky.img.gz");
    assert_names(&e, Stage::Transfer, &url);
    let text = e.to_string();
    // What arrived before each reset (at most the 50000 bytes sent; an RST may drop some).
    let received: u64 = text
        .split(" after ")
        .nth(1)
        .and_then(|s| s.split(" of ").next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(received > 0 && received <= 50_000, "{text}");
    assert!(
        text.contains(&format!(" of {} bytes (after 4 attempts)", body.len())),
        "{text}"
    );
    assert!(text.contains("reset") || text.contains("closed"), "{text}");
    assert!(e.is_infrastructure());
    t.assert_clean();
}

#[tokio::test]
async fn truncated_and_corrupt_archives() {
    let t = env().await;
    let image = sample_image(2 << 20, 14);
    for format in ["gz", "xz", "bz2", "zstd"] {
        let body = compress(&image, format).unwrap();
        let name = format!("t.{format}");
        t.srv.serve(&name, body[..body.len() * 2 / 3].to_vec());
        let e = t.fetch(&name).await.unwrap_err();
        assert_names(&e, Stage::Decompress, &t.srv.url(&name));
        assert!(e.to_string().contains("truncated"), "{format}: {e}");
        assert!(!e.is_infrastructure());
        t.assert_clean();

        let mut corrupt = body.clone();
        let mid = corrupt.len() / 2;
        for b in &mut corrupt[mid..mid + 64] {
            *b ^= 0x5a;
        }
        let name = format!("c.{format}");
        t.srv.serve(&name, corrupt);
        let e = t.fetch(&name).await.unwrap_err();
        assert_names(&e, Stage::Decompress, &t.srv.url(&name));
        let text = e.to_string();
        assert!(
            text.contains("corrupt") || text.contains("truncated"),
            "{format}: {text}"
        );
        t.assert_clean();
    }
}

#[tokio::test]
async fn nobody_listening() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(settings(dir.path())).await;
    let port = labd_hw_fixtures::free_tcp_port();
    let url = format!("http://127.0.0.1:{port}/x.img");
    let e = svc
        .fetch(ImageRequest::new(&url, dir.path().join("x")))
        .await
        .unwrap_err();
    assert_names(&e, Stage::Connect, &url);
    let text = e.to_string();
    assert!(
        text.contains("Connection refused") && text.ends_with("(after 4 attempts)"),
        "{text}"
    );
    assert_eq!(
        cache_files(&dir.path().join("cache")),
        Vec::<std::path::PathBuf>::new()
    );
    assert!(!Path::new(&dir.path().join("x")).exists());
}

#[tokio::test]
async fn silent_server_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.read_timeout = Duration::from_millis(300);
    let svc = service(s).await;
    let srv = HttpServer::start().unwrap();
    let image = sample_image(1 << 20, 15);
    let body = compress(&image, "gz").unwrap();
    srv.serve("slow.gz", body.clone());
    // The server sits on every request longer than the read timeout.
    srv.set_faults(
        "slow.gz",
        Faults {
            delay: Some(Duration::from_millis(600)),
            ..Faults::default()
        },
    );
    let e = svc
        .fetch(ImageRequest::new(srv.url("slow.gz"), dir.path().join("o")))
        .await
        .unwrap_err();
    assert_eq!(e.stage(), Stage::Connect, "{e}");
    assert!(e.to_string().contains("no response in time"), "{e}");
    assert_eq!(
        cache_files(&dir.path().join("cache")),
        Vec::<std::path::PathBuf>::new()
    );
}
