//! Test images: deterministic data that compresses like a root file system image (zero runs,
//! text, small binary numbers, some incompressible blocks), compressed by the real `gzip`,
//! `xz`, `bzip2` and `zstd` programs.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context;

const BLOCK: usize = 64 * 1024;

const WORDS: &[&str] = &[
    "the", "kernel", "usr", "lib", "bin", "etc", "share", "doc", "systemd", "module", "firmware",
    "device", "driver", "config", "init", "boot", "root", "mount", "proc", "sys", "dev", "tmp",
    "var", "log", "include", "python3", "perl", "locale", "man", "zoneinfo", "debian", "arm64",
    "x86_64", "linux", "gnu", "so", "0", "1", "2", "=", "{", "}", "(", ")", ";", "if", "else",
    "return", "static", "int", "char", "void", "struct", "const", "unsigned", "#define",
];

/// splitmix64: small, fast, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn fill_block(rng: &mut Rng, out: &mut Vec<u8>) {
    let kind = rng.next() % 100;
    let start = out.len();
    match kind {
        // Unused blocks of a file system.
        0..30 => out.resize(start + BLOCK, 0),
        // Text: configuration, scripts, documentation.
        30..65 => {
            while out.len() - start < BLOCK {
                let r = rng.next();
                out.extend_from_slice(WORDS[(r % WORDS.len() as u64) as usize].as_bytes());
                out.push(if r >> 60 == 0 { b'\n' } else { b' ' });
            }
        }
        // Binaries: mostly small numbers and repeated opcodes.
        65..90 => {
            while out.len() - start < BLOCK {
                let r = rng.next();
                let v = (r & 0xfff) as u32 * ((r >> 40) & 3) as u32;
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        // Already compressed files.
        _ => {
            while out.len() - start < BLOCK {
                out.extend_from_slice(&rng.next().to_le_bytes());
            }
        }
    }
    out.truncate(start + BLOCK);
}

/// `len` bytes of sample image for `seed`.
pub fn sample_image(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut out = Vec::with_capacity(len + BLOCK);
    while out.len() < len {
        fill_block(&mut rng, &mut out);
    }
    out.truncate(len);
    out
}

/// Writes a sample image of `len` bytes to `path` without holding it in memory.
pub fn write_sample_image(path: &Path, len: u64, seed: u64) -> anyhow::Result<()> {
    let mut rng = Rng(seed);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut buf = Vec::with_capacity(BLOCK);
    let mut left = len;
    while left > 0 {
        buf.clear();
        fill_block(&mut rng, &mut buf);
        let n = left.min(BLOCK as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

/// The real compressor command for a LAVA compression name (`gz`, `xz`, `bz2`, `zstd`).
pub fn compressor(format: &str) -> anyhow::Result<Command> {
    let (prog, args): (&str, &[&str]) = match format {
        "gz" => ("gzip", &["-c", "-6"]),
        "xz" => ("xz", &["-c", "-6", "-T1"]),
        "bz2" => ("bzip2", &["-c", "-9"]),
        "zstd" => ("zstd", &["-c", "-q", "-3"]),
        other => anyhow::bail!("no compressor for {other:?}"),
    };
    let mut cmd = Command::new(crate::require_program(prog)?);
    cmd.args(args);
    Ok(cmd)
}

/// `data` compressed by the real program.
pub fn compress(data: &[u8], format: &str) -> anyhow::Result<Vec<u8>> {
    let mut child = compressor(format)?
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting the {format} compressor"))?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let mut out = Vec::new();
    child
        .stdout
        .take()
        .context("stdout")?
        .read_to_end(&mut out)?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "{format} compressor failed: {status}");
    Ok(out)
}

/// Compresses the file `input` into `output` with the real program (`extra` arguments appended,
/// e.g. `-T0`).
pub fn compress_file(
    input: &Path,
    output: &Path,
    format: &str,
    extra: &[&str],
) -> anyhow::Result<()> {
    let status = compressor(format)?
        .args(extra)
        .stdin(std::fs::File::open(input)?)
        .stdout(std::fs::File::create(output)?)
        .status()?;
    anyhow::ensure!(status.success(), "{format} compressor failed: {status}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_compressible() {
        let a = sample_image(1 << 20, 7);
        assert_eq!(a, sample_image(1 << 20, 7));
        assert_ne!(a, sample_image(1 << 20, 8));
        assert_eq!(a.len(), 1 << 20);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        write_sample_image(&p, (1 << 20) + 5, 7).unwrap();
        let on_disk = std::fs::read(&p).unwrap();
        assert_eq!(&on_disk[..1 << 20], &a[..]);
    }
}
