//! The shared cache and the worker-wide bounds: single flight, revalidation, LRU eviction,
//! corrupt entries, cancellation, and the decompressor pool's limit and FIFO queue.

mod images_common;

use std::sync::Arc;
use std::time::Duration;

use images_common::*;
use labd::images::{CacheOutcome, ImageRequest};

#[tokio::test]
async fn concurrent_requests_for_one_url_download_once() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(settings(dir.path())).await;
    let srv = HttpServer::start().unwrap();
    let image = sample_image(2 << 20, 30);
    let body = compress(&image, "xz").unwrap();
    srv.serve("one.img.xz", body.clone());
    // Slow enough that all requests arrive while the first is downloading.
    srv.set_faults(
        "one.img.xz",
        Faults {
            rate: Some(body.len() as u64 * 2),
            ..Faults::default()
        },
    );
    let url = srv.url("one.img.xz");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let svc = svc.clone();
        let req = ImageRequest::new(&url, dir.path().join(format!("out{i}.img")));
        tasks.push(tokio::spawn(async move { svc.fetch(req).await }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        let r = t.await.unwrap().unwrap();
        assert!(std::fs::read(&r.path).unwrap() == image);
        assert_eq!(r.sha256, Some(sha256(&body)));
        outcomes.push(r.cache);
    }
    outcomes.sort_by_key(|o| format!("{o:?}"));
    let mut expected = vec![CacheOutcome::Hit; 7];
    expected.push(CacheOutcome::Stored);
    assert_eq!(outcomes, expected);
    // One request reached the server: followers reused the leader's fresh download.
    let log = srv.requests_to("one.img.xz");
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].status, 200);
}

#[tokio::test]
async fn a_changed_file_is_downloaded_again() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(settings(dir.path())).await;
    let srv = HttpServer::start().unwrap();
    let v1 = sample_image(1 << 20, 31);
    let v2 = sample_image(1 << 20, 32);
    srv.serve("c.img.gz", compress(&v1, "gz").unwrap());
    let req = ImageRequest::new(srv.url("c.img.gz"), dir.path().join("c.img"));
    assert_eq!(
        svc.fetch(req.clone()).await.unwrap().cache,
        CacheOutcome::Stored
    );
    srv.serve("c.img.gz", compress(&v2, "gz").unwrap());
    let r = svc.fetch(req.clone()).await.unwrap();
    assert_eq!(r.cache, CacheOutcome::Stored);
    assert!(std::fs::read(dir.path().join("c.img")).unwrap() == v2);
    let log = srv.requests_to("c.img.gz");
    assert_eq!(log.len(), 2);
    // The conditional request carried the old validators; the server answered with the file.
    assert!(log[1].header("if-none-match").is_some());
    assert!(log[1].header("if-modified-since").is_some());
    assert_eq!(log[1].status, 200);
    assert_eq!(
        svc.fetch(req).await.unwrap().cache,
        CacheOutcome::Revalidated
    );
}

#[tokio::test]
async fn without_validators_only_the_jobs_sha256_allows_a_hit() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(settings(dir.path())).await;
    let srv = HttpServer::start().unwrap();
    let body = compress(&sample_image(512 << 10, 33), "bz2").unwrap();
    srv.serve("n.bz2", body.clone());
    srv.set_faults(
        "n.bz2",
        Faults {
            no_validators: true,
            ..Faults::default()
        },
    );
    let req = ImageRequest::new(srv.url("n.bz2"), dir.path().join("n"));
    assert_eq!(
        svc.fetch(req.clone()).await.unwrap().cache,
        CacheOutcome::Stored
    );
    assert_eq!(
        svc.fetch(req.clone()).await.unwrap().cache,
        CacheOutcome::Stored
    );
    let log = srv.requests_to("n.bz2");
    assert_eq!(log.len(), 2);
    assert_eq!(log[1].header("if-none-match"), None);
    let mut by_sha = req.clone();
    by_sha.checksums.sha256 = Some(sha256(&body));
    assert_eq!(svc.fetch(by_sha).await.unwrap().cache, CacheOutcome::Hit);
    assert_eq!(srv.requests_to("n.bz2").len(), 2);

    // An md5 the cache recorded when a job asked for it works the same way.
    let md5 = hex::encode(<md5::Md5 as sha2::Digest>::digest(&body));
    let mut by_md5 = req;
    by_md5.checksums.md5 = Some(md5);
    assert_eq!(
        svc.fetch(by_md5.clone()).await.unwrap().cache,
        CacheOutcome::Stored
    );
    assert_eq!(srv.requests_to("n.bz2").len(), 3);
    assert_eq!(svc.fetch(by_md5).await.unwrap().cache, CacheOutcome::Hit);
    assert_eq!(srv.requests_to("n.bz2").len(), 3);
}

#[tokio::test]
async fn least_recently_used_entries_are_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.cache_size = 2_500_000;
    let svc = service(s).await;
    let srv = HttpServer::start().unwrap();
    let mut bodies = Vec::new();
    for i in 0..4u64 {
        // Incompressible-ish 1 MB bodies, served as they are.
        let body: Vec<u8> = sample_image(1_000_000, 40 + i)
            .iter()
            .enumerate()
            .map(|(j, b)| b ^ (j as u8).wrapping_mul(31))
            .collect();
        srv.serve(&format!("{i}.img"), body.clone());
        bodies.push(body);
    }
    let fetch = |i: usize| {
        let svc = svc.clone();
        let req = ImageRequest::new(srv.url(&format!("{i}.img")), dir.path().join("o"));
        async move { svc.fetch(req).await.unwrap().cache }
    };
    assert_eq!(fetch(0).await, CacheOutcome::Stored);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(fetch(1).await, CacheOutcome::Stored);
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Using 0 again makes 1 the least recently used.
    assert_eq!(fetch(0).await, CacheOutcome::Revalidated);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(fetch(2).await, CacheOutcome::Stored);
    let blobs = dir.path().join("cache/blobs");
    assert!(blobs.join(sha256(&bodies[0])).exists());
    assert!(!blobs.join(sha256(&bodies[1])).exists(), "1 was evicted");
    assert!(blobs.join(sha256(&bodies[2])).exists());
    // Evicted: downloaded again (a 200 to the conditional request, as the entry is gone).
    assert_eq!(fetch(1).await, CacheOutcome::Stored);
}

#[tokio::test]
async fn an_image_bigger_than_the_cache_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.cache_size = 1000;
    let svc = service(s).await;
    let srv = HttpServer::start().unwrap();
    srv.serve("big.img", vec![7u8; 5000]);
    let r = svc
        .fetch(ImageRequest::new(srv.url("big.img"), dir.path().join("b")))
        .await
        .unwrap();
    assert_eq!(r.cache, CacheOutcome::NotStored);
    assert_eq!(
        r.warnings,
        vec!["not cached: 5000 bytes is more than cache_size (1000 bytes)".to_string()]
    );
    assert_eq!(
        cache_files(&dir.path().join("cache")),
        Vec::<std::path::PathBuf>::new()
    );
}

#[tokio::test]
async fn a_corrupt_cache_entry_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(settings(dir.path())).await;
    let srv = HttpServer::start().unwrap();
    let image = sample_image(1 << 20, 50);
    let body = compress(&image, "gz").unwrap();
    srv.serve("k.gz", body.clone());
    let mut req = ImageRequest::new(srv.url("k.gz"), dir.path().join("k"));
    req.checksums.sha256 = Some(sha256(&body));
    svc.fetch(req.clone()).await.unwrap();
    // Flip bits in the cached blob, as a failing disk would.
    let blob = dir.path().join("cache/blobs").join(sha256(&body));
    let mut bytes = std::fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let r = svc.fetch(req).await.unwrap();
    assert!(std::fs::read(dir.path().join("k")).unwrap() == image);
    assert_eq!(r.cache, CacheOutcome::Stored);
    assert_eq!(
        r.warnings,
        vec!["the cached copy was corrupt and has been downloaded again".to_string()]
    );
    assert_eq!(std::fs::read(&blob).unwrap(), body);
}

#[tokio::test]
async fn a_cancelled_fetch_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(settings(dir.path())).await;
    let srv = HttpServer::start().unwrap();
    let body = compress(&sample_image(4 << 20, 51), "zstd").unwrap();
    srv.serve("slow.zst", body.clone());
    srv.set_faults(
        "slow.zst",
        Faults {
            rate: Some(body.len() as u64 / 4),
            ..Faults::default()
        },
    );
    let out = dir.path().join("out");
    let req = ImageRequest::new(srv.url("slow.zst"), out.join("img"));
    let r = tokio::time::timeout(Duration::from_millis(1500), svc.fetch(req)).await;
    assert!(r.is_err(), "the fetch should still be running");
    // The decoder thread notices the closed channel and removes its files.
    let mut left = Vec::new();
    for _ in 0..100 {
        left = cache_files(&dir.path().join("cache"));
        left.extend(dir_files(&out).into_iter().map(Into::into));
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(left, Vec::<std::path::PathBuf>::new());
}

/// A file:// source (like a cache blob) has no channel that closes when the fetch is dropped:
/// the pipeline must notice the cancellation itself and give its decompressor slot back.
#[tokio::test]
async fn a_cancelled_file_fetch_frees_its_decompressor_slot() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.max_decompressors = 1;
    let svc = service(s).await;
    // 16 GiB of zeros as 256 concatenated xz streams (a few MiB): decoding it all takes most
    // of a minute, and the output is all holes, so an uncancelled run costs no disk.
    let stream = {
        let mut e = liblzma::write::XzEncoder::new(Vec::new(), 0);
        e.write_all(&vec![0u8; 64 << 20]).unwrap();
        e.finish().unwrap()
    };
    let big = dir.path().join("big.img.xz");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
        for _ in 0..256 {
            f.write_all(&stream).unwrap();
        }
        f.flush().unwrap();
    }
    let image = sample_image(256 << 10, 53);
    let small = dir.path().join("small.img.xz");
    std::fs::write(&small, compress(&image, "xz").unwrap()).unwrap();
    let out = dir.path().join("out");

    let req = ImageRequest::new(format!("file://{}", big.display()), out.join("big.img"));
    let r = tokio::time::timeout(Duration::from_millis(1000), svc.fetch(req)).await;
    assert!(r.is_err(), "the big fetch should still be running");

    let req = ImageRequest::new(format!("file://{}", small.display()), out.join("small.img"));
    let report = tokio::time::timeout(Duration::from_secs(15), svc.fetch(req))
        .await
        .expect("the cancelled fetch still holds the decompressor slot")
        .unwrap();
    assert!(
        report.queued < Duration::from_secs(3),
        "waited {:?} for the slot",
        report.queued
    );
    assert!(std::fs::read(out.join("small.img")).unwrap() == image);
    // The cancelled fetch's temporary destination is gone.
    let mut left = Vec::new();
    for _ in 0..100 {
        left = dir_files(&out);
        if left == ["small.img"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(left, ["small.img"]);
}

#[tokio::test]
async fn decompressors_are_bounded_and_queue_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.max_decompressors = 1;
    let registry = registry();
    let svc = labd::images::ImageService::with_metrics(s, registry)
        .await
        .unwrap();
    let srv = HttpServer::start().unwrap();
    let image = sample_image(1 << 20, 52);
    let body = compress(&image, "xz").unwrap();
    for i in 0..3 {
        srv.serve(&format!("{i}.xz"), body.clone());
        srv.set_faults(
            &format!("{i}.xz"),
            Faults {
                rate: Some(body.len() as u64 * 3),
                ..Faults::default()
            },
        );
    }
    let peak_active = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let peak_queue = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watcher = {
        let (a, q) = (peak_active.clone(), peak_queue.clone());
        tokio::spawn(async move {
            loop {
                let text = registry.render();
                let value = |name: &str| -> u64 {
                    text.lines()
                        .find_map(|l| l.strip_prefix(&format!("{name} ")))
                        .and_then(|v| v.parse::<f64>().ok())
                        .unwrap_or(0.0) as u64
                };
                a.fetch_max(
                    value("labd_images_decompress_active"),
                    std::sync::atomic::Ordering::Relaxed,
                );
                q.fetch_max(
                    value("labd_images_decompress_queue_depth"),
                    std::sync::atomic::Ordering::Relaxed,
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut tasks = Vec::new();
    for i in 0..3 {
        let svc = svc.clone();
        let req = ImageRequest::new(srv.url(&format!("{i}.xz")), dir.path().join(format!("{i}")));
        tasks.push(tokio::spawn(async move { svc.fetch(req).await.unwrap() }));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut reports = Vec::new();
    for t in tasks {
        reports.push(t.await.unwrap());
    }
    watcher.abort();
    assert_eq!(peak_active.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(peak_queue.load(std::sync::atomic::Ordering::Relaxed), 2);
    // FIFO: each waited for the previous ones.
    assert!(reports[0].queued < Duration::from_millis(50));
    assert!(reports[1].queued > Duration::from_millis(100));
    assert!(reports[2].queued > reports[1].queued);
    let text = registry.render();
    assert!(text.contains(&format!(
        "labd_images_downloaded_bytes_total {}",
        3 * body.len()
    )));
    assert!(text.contains("labd_images_cache_misses_total 3"));
    assert!(text.contains(&format!(
        "labd_images_output_bytes_total {}",
        3 * image.len()
    )));
}
