//! `deploy` blocks (`to: tmpfs`, `to: downloads`): each image fetched through labd's images
//! service (cache, proxy, retries, checksums, decompression) into the job's directory, with
//! LAVA's `download-retry` / `file-download` / `http-download` frames, messages and results
//! (`label`, `size`, checksums).

use super::{block_max_retries, retry_interval};
use crate::jobs::error::{LavaError, LavaErrorType};
use crate::jobs::log::LogValue;
use crate::jobs::model::{Compression, DeployAction, DeployTo, ImageSpec};
use crate::jobs::runner::action::{action, retry};
use crate::jobs::runner::{Act, Ctx, Deployed, ImageFetch, Spec, State};

/// The name of a deploy block's top-level action.
pub fn block_name(d: &DeployAction) -> &'static str {
    match d.to {
        DeployTo::Tmpfs => "deployimages",
        DeployTo::Downloads => "downloads",
    }
}

pub async fn run(
    ctx: &Ctx<'_>,
    st: &mut State,
    root: &Act,
    d: &DeployAction,
) -> Result<(), LavaError> {
    let pipe = &ctx.pipe;
    let block = Some(&d.common);
    let name = block_name(d);
    let max = block_max_retries(ctx, &d.common, false);
    action!(pipe, root, Spec::new(name, block), |act| {
        let suffix: String = (0..8)
            .map(|_| {
                let n = rand::random::<u8>() % 36;
                char::from_digit(u32::from(n), 36).unwrap_or('x')
            })
            .collect();
        let base = ctx.tmp_dir.join(format!("{name}-{suffix}"));
        for (label, img) in d.images.iter() {
            action!(pipe, &act, Spec::new("download-retry", block), |r| {
                retry!(pipe, &r, max, retry_interval(&d.common), {
                    let child = if img.url.starts_with("file://") {
                        "file-download"
                    } else {
                        "http-download"
                    };
                    action!(pipe, &r, Spec::new(child, block), |dl| {
                        download(ctx, st, &dl, &base, label, img).await
                    })
                })
            })?;
        }
        Ok(())
    })
}

/// The file name LAVA gives a download: the URL's last path component, without the
/// compression suffix when the image is decompressed.
pub fn file_name(url: &str, compression: Option<Compression>) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let mut name = path.rsplit('/').next().unwrap_or("image").to_string();
    if name.is_empty() {
        name = "image".into();
    }
    if compression.is_some() {
        if let Some((stem, _)) = name.rsplit_once('.') {
            if !stem.is_empty() {
                name = stem.to_string();
            }
        }
    }
    name
}

async fn download(
    ctx: &Ctx<'_>,
    st: &mut State,
    act: &Act,
    base: &std::path::Path,
    label: &str,
    img: &ImageSpec,
) -> Result<(), LavaError> {
    let Some(images) = ctx.env.images.clone() else {
        return Err(LavaError::new(
            LavaErrorType::Infrastructure,
            "labd has no image service in this process",
        ));
    };
    if img.compression == Some(Compression::Zip) {
        return Err(LavaError::new(
            LavaErrorType::Job,
            "compression 'zip' is an archive, not a stream: labd does not unpack it while downloading",
        ));
    }
    let dir = base.join(label);
    let dest = dir.join(file_name(&img.url, img.compression));
    ctx.log.info(format!("downloading {}", img.url));
    ctx.log.debug(format!("saving as {}", dest.display()));
    match img.compression {
        None => ctx.log.debug("No compression specified"),
        Some(c) => ctx.log.info(format!(
            "Decompressing {} while downloading (labd)",
            compression_name(c)
        )),
    }
    let req = ImageFetch {
        url: img.url.clone(),
        destination: dest.clone(),
        compression: img.compression,
        md5: img.md5sum.clone(),
        sha256: img.sha256sum.clone(),
        sha512: img.sha512sum.clone(),
    };
    let fetched = images.fetch(req).await.map_err(|f| {
        LavaError::new(
            if f.infrastructure {
                LavaErrorType::Infrastructure
            } else {
                LavaErrorType::Job
            },
            f.message,
        )
    })?;
    for w in &fetched.warnings {
        ctx.log.warning(w.as_str());
    }
    if fetched.from_cache {
        ctx.log.debug("labd: served from the image cache");
    }
    let secs = fetched.duration.as_secs_f64().max(1e-6);
    let mb = fetched.size as f64 / (1024.0 * 1024.0);
    ctx.log.info(format!(
        "{}MB downloaded in {secs:.2}s ({:.2}MB/s)",
        mb as u64,
        mb / secs
    ));
    let mut results = LogValue::map()
        .with("label", label)
        .with("size", fetched.size as i64)
        .with("sha256sum", fetched.sha256.as_str());
    if let Some(m) = &fetched.md5 {
        results.insert("md5sum", m.as_str());
    }
    if let Some(s) = &fetched.sha512 {
        results.insert("sha512sum", s.as_str());
    }
    act.set_results(results);
    st.images.retain(|i| i.label != label);
    st.images.push(Deployed {
        label: label.to_string(),
        path: fetched.path,
        image_arg: img.image_arg.clone(),
        dir,
    });
    Ok(())
}

fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::Bz2 => "bz2",
        Compression::Gz => "gz",
        Compression::Xz => "xz",
        Compression::Zip => "zip",
        Compression::Zstd => "zstd",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(file_name("file:///srv/images/vmlinuz", None), "vmlinuz");
        assert_eq!(
            file_name("http://h/a/rootfs.ext4.xz?x=1", Some(Compression::Xz)),
            "rootfs.ext4"
        );
        assert_eq!(
            file_name("http://h/initramfs.cpio.gz", None),
            "initramfs.cpio.gz"
        );
    }
}
