//! Fetching images over http(s) and file://: every compression format (made by the real
//! gzip/xz/bzip2/zstd), magic-byte detection, checksums, cache hits, the lab CA.

mod images_common;

use images_common::*;
use labd::images::{
    CacheOutcome, Checksums, Compression, Decompress, FetchError, ImageRequest, Stage,
};
use sha2::Digest;

#[tokio::test]
async fn every_format_decodes_and_the_cache_serves_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(settings(dir.path())).await;
    let srv = HttpServer::start().unwrap();
    let image = sample_image(3 << 20, 1);
    let mut cases: Vec<(Option<Compression>, Vec<u8>)> = vec![(None, image.clone())];
    for c in Compression::ALL {
        cases.push((Some(c), compress(&image, c.as_str()).unwrap()));
    }
    for (format, body) in cases {
        let name = format!("rootfs.img{}", format.map_or("", |c| c.suffix()));
        srv.serve(&name, body.clone());
        let dest = dir.path().join("out").join(&name);
        let req = ImageRequest::new(srv.url(&name), &dest);
        let r = svc.fetch(req.clone()).await.unwrap();
        assert_eq!(r.compression, format, "{name}");
        assert!(
            std::fs::read(&dest).unwrap() == image,
            "{name}: wrong output"
        );
        assert_eq!(r.output_bytes, image.len() as u64);
        assert_eq!(r.output_sha256, sha256(&image));
        assert_eq!(r.compressed_bytes, body.len() as u64);
        assert_eq!(r.downloaded_bytes, body.len() as u64);
        assert_eq!(
            r.sha256,
            Some(sha256(&body)),
            "sha256 covers the compressed bytes"
        );
        assert_eq!(
            (r.cache, r.cache_hit, r.attempts),
            (CacheOutcome::Stored, false, 1)
        );

        // Again: the server is asked (If-None-Match), says 304, the cache serves it.
        std::fs::remove_file(&dest).unwrap();
        let r = svc.fetch(req.clone()).await.unwrap();
        assert_eq!((r.cache, r.cache_hit), (CacheOutcome::Revalidated, true));
        assert_eq!(r.downloaded_bytes, 0);
        assert!(std::fs::read(&dest).unwrap() == image);
        let log = srv.requests_to(&name);
        assert_eq!(log.len(), 2);
        assert_eq!(log[1].status, 304);
        assert!(
            log[1]
                .header("if-none-match")
                .unwrap()
                .starts_with(&format!("\"{}-v", body.len()))
        );

        // With the job's sha256 the cache answers without asking the server at all.
        let mut by_sha = req.clone();
        by_sha.checksums.sha256 = Some(sha256(&body));
        let r = svc.fetch(by_sha).await.unwrap();
        assert_eq!(r.cache, CacheOutcome::Hit);
        assert_eq!(srv.requests_to(&name).len(), 2);
    }
    assert_eq!(
        dir_files(&dir.path().join("out")).len(),
        5,
        "no temporary files beside the images"
    );
}

#[tokio::test]
async fn announced_compression_must_match_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(settings(dir.path())).await;
    let srv = HttpServer::start().unwrap();
    let image = sample_image(1 << 20, 2);
    srv.serve("a.img.gz", compress(&image, "gz").unwrap());
    let dest = dir.path().join("a.img");
    let mut req = ImageRequest::new(srv.url("a.img.gz"), &dest);
    req.decompress = Decompress::Format(Compression::Xz);
    let e = svc.fetch(req.clone()).await.unwrap_err();
    assert_eq!(e.stage(), Stage::Decompress);
    assert_eq!(
        e.to_string(),
        format!(
            "decompress: '{}': xz: the stream is not xz: its magic bytes say gz (at compressed byte 0; is `compression:` right?)",
            srv.url("a.img.gz")
        )
    );
    assert!(!dest.exists());
    assert_eq!(
        cache_files(&dir.path().join("cache")),
        Vec::<std::path::PathBuf>::new()
    );

    // `none` keeps the bytes as they are, `gz` decodes.
    req.decompress = Decompress::None;
    let r = svc.fetch(req.clone()).await.unwrap();
    assert_eq!(r.compression, None);
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        compress(&image, "gz").unwrap()
    );
    req.decompress = Decompress::Format(Compression::Gz);
    svc.fetch(req).await.unwrap();
    assert!(std::fs::read(&dest).unwrap() == image);
}

#[tokio::test]
async fn checksums_over_the_compressed_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(settings(dir.path())).await;
    let srv = HttpServer::start().unwrap();
    let image = sample_image(1 << 20, 3);
    let body = compress(&image, "zstd").unwrap();
    srv.serve("k.zst", body.clone());
    let url = srv.url("k.zst");
    let md5 = format!("{:x}", md5::Md5::digest(&body));
    let sha512 = hex::encode(sha2::Sha512::digest(&body));
    let dest = dir.path().join("k");
    let mut req = ImageRequest::new(&url, &dest);
    req.use_cache = false;
    req.checksums = Checksums {
        md5: Some(md5.to_uppercase()),
        sha256: Some(sha256(&body)),
        sha512: Some(sha512.clone()),
    };
    let r = svc.fetch(req.clone()).await.unwrap();
    assert_eq!(r.md5.as_deref(), Some(md5.as_str()));
    assert_eq!(r.sha512.as_deref(), Some(sha512.as_str()));
    assert_eq!(r.cache, CacheOutcome::Bypassed);

    for algo in ["md5", "sha256", "sha512"] {
        let mut bad = req.clone();
        bad.use_cache = true;
        let wrong = |s: &Option<String>| s.as_ref().map(|v| "0".repeat(v.len()));
        match algo {
            "md5" => bad.checksums.md5 = wrong(&bad.checksums.md5),
            "sha256" => bad.checksums.sha256 = wrong(&bad.checksums.sha256),
            _ => bad.checksums.sha512 = wrong(&bad.checksums.sha512),
        }
        std::fs::remove_file(&dest).ok();
        let e = svc.fetch(bad).await.unwrap_err();
        assert_eq!(e.stage(), Stage::Checksum);
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("{algo} for '{url}' does not match.")),
            "{text}"
        );
        assert!(matches!(e, FetchError::Checksum { .. }));
        assert!(
            !dest.exists(),
            "a rejected image is not left at the destination"
        );
        assert_eq!(
            cache_files(&dir.path().join("cache")),
            Vec::<std::path::PathBuf>::new()
        );
    }
    assert_eq!(dir_files(dir.path()), vec!["cache"]);

    let mut malformed = req.clone();
    malformed.checksums.sha256 = Some("xyz".into());
    let e = svc.fetch(malformed).await.unwrap_err();
    assert_eq!(e.stage(), Stage::Request);
}

#[tokio::test]
async fn file_urls_go_through_the_same_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(settings(dir.path())).await;
    let image = sample_image(2 << 20, 4);
    let src = dir.path().join("local.img.bz2");
    let body = compress(&image, "bz2").unwrap();
    std::fs::write(&src, &body).unwrap();
    let dest = dir.path().join("local.img");
    let r = svc
        .fetch(ImageRequest::new(
            format!("file://{}", src.display()),
            &dest,
        ))
        .await
        .unwrap();
    assert_eq!(r.compression, Some(Compression::Bz2));
    assert_eq!(r.sha256, Some(sha256(&body)));
    assert_eq!(r.cache, CacheOutcome::Bypassed);
    assert!(std::fs::read(&dest).unwrap() == image);

    let missing = format!("file://{}/nope.img", dir.path().display());
    let e = svc
        .fetch(ImageRequest::new(&missing, dir.path().join("x")))
        .await
        .unwrap_err();
    assert_eq!(e.stage(), Stage::Request);
    assert!(e.to_string().contains("No such file or directory"), "{e}");

    let e = svc
        .fetch(ImageRequest::new("ftp://h/x", dir.path().join("x")))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("unsupported URL scheme \"ftp\""),
        "{e}"
    );
}

#[tokio::test]
async fn https_needs_the_lab_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new().unwrap();
    let srv = HttpServer::start_tls(&ca).unwrap();
    let image = sample_image(1 << 20, 5);
    srv.serve("s.img.xz", compress(&image, "xz").unwrap());
    let url = srv.url("s.img.xz");
    assert!(url.starts_with("https://127.0.0.1:"));

    let svc = service(settings(dir.path())).await;
    let e = svc
        .fetch(ImageRequest::new(&url, dir.path().join("s.img")))
        .await
        .unwrap_err();
    assert_eq!(e.stage(), Stage::Connect);
    let text = e.to_string();
    assert!(
        text.contains("TLS") && text.contains("UnknownIssuer"),
        "{text}"
    );
    assert!(
        text.contains("(after 1 attempt)"),
        "certificate errors are not retried: {text}"
    );

    let ca_file = dir.path().join("lab-ca.pem");
    ca.write_ca(&ca_file).unwrap();
    let mut s = settings(dir.path());
    s.ca_file = Some(ca_file);
    let svc = service(s).await;
    let r = svc
        .fetch(ImageRequest::new(&url, dir.path().join("s.img")))
        .await
        .unwrap();
    assert_eq!(r.compression, Some(Compression::Xz));
    assert!(std::fs::read(dir.path().join("s.img")).unwrap() == image);
}
