//! A full disk, on a small tmpfs the test mounts (root only; unmounted by a guard): the
//! destination's file system filling up fails the fetch at the write stage and leaves nothing;
//! the cache's filling up only costs the cache copy.

mod images_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use images_common::*;
use labd::images::{CacheOutcome, ImageRequest, Stage};

/// A tmpfs of `size` mounted at `dir`, unmounted on drop.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(dir: &Path, size: &str) -> Self {
        let mount = labd_hw_fixtures::require_program("mount").unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new(mount)
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "cannot mount a tmpfs (this test needs root): {st}"
        );
        Self(dir.to_path_buf())
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let umount = labd_hw_fixtures::require_program("umount").unwrap();
        let _ = Command::new(umount).arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
async fn destination_disk_full() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    let _fs = SmallFs::mount(&small, "2m");
    let svc = service(settings(dir.path())).await;
    let srv = HttpServer::start().unwrap();
    let image = sample_image(8 << 20, 60);
    srv.serve("big.img.gz", compress(&image, "gz").unwrap());
    let url = srv.url("big.img.gz");
    let dest = small.join("big.img");
    let e = svc.fetch(ImageRequest::new(&url, &dest)).await.unwrap_err();
    assert_eq!(e.stage(), Stage::Write);
    assert_eq!(
        e.to_string(),
        format!(
            "write: '{url}': {}: No space left on device (os error 28)",
            dest.display()
        )
    );
    assert!(e.is_infrastructure());
    assert_eq!(
        dir_files(&small),
        Vec::<String>::new(),
        "no partial image left"
    );
    assert_eq!(
        cache_files(&dir.path().join("cache")),
        Vec::<PathBuf>::new()
    );
}

#[tokio::test]
async fn cache_disk_full_only_loses_the_cache_copy() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let _fs = SmallFs::mount(&cache, "1m");
    let svc = service(settings(dir.path())).await;
    let srv = HttpServer::start().unwrap();
    // Compressed size well over 1 MiB: random data.
    let mut image = vec![0u8; 3 << 20];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut image);
    let body = compress(&image, "zstd").unwrap();
    assert!(body.len() > 2 << 20);
    srv.serve("c.zst", body);
    let dest = dir.path().join("c.img");
    let r = svc
        .fetch(ImageRequest::new(srv.url("c.zst"), &dest))
        .await
        .unwrap();
    assert!(std::fs::read(&dest).unwrap() == image);
    assert_eq!(r.cache, CacheOutcome::NotStored);
    assert_eq!(r.warnings.len(), 1);
    assert!(
        r.warnings[0].starts_with("not cached: cannot write cache file ")
            && r.warnings[0].ends_with("No space left on device (os error 28)"),
        "{:?}",
        r.warnings
    );
    assert_eq!(cache_files(&cache), Vec::<PathBuf>::new());
}
