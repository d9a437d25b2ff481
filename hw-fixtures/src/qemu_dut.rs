//! A real device under test: Debian's kernel and a busybox initramfs booted by qemu-system-x86.
//!
//! `.ci/install-deps` extracts `vmlinuz` and a static `busybox` from Debian packages into
//! `$LABD_DUT_DIR` (default `/opt/labd-dut`); this module writes the initramfs (a gzip'ed newc
//! cpio, built here so no `cpio`, `mknod` or root is needed) and starts qemu. The guest prints a
//! banner and gives a root shell with the prompt `/ # ` (or a `dut login: ` getty).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;

use crate::util::{ChildGuard, require_program};

/// Where `.ci/install-deps` put the kernel and busybox.
pub fn dut_dir() -> PathBuf {
    std::env::var_os("LABD_DUT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/labd-dut"))
}

/// What `/init` runs once the system is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitVariant {
    /// A root shell on the console, prompt `/ # ` (what LAVA jobs with `prompts: ['/ # ']` expect).
    Shell,
    /// `getty` on ttyS0: `dut login: `, user `root` with no password.
    Login,
}

/// The kernel and initramfs of the DUT.
#[derive(Debug, Clone)]
pub struct DutImages {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
}

/// The kernel command line the images expect.
pub const KERNEL_APPEND: &str = "console=ttyS0,115200 rdinit=/init panic=-1";

/// Copies the kernel into `out_dir` and writes `initramfs.cpio.gz` there.
pub fn build_images(out_dir: &Path, variant: InitVariant) -> anyhow::Result<DutImages> {
    let src = dut_dir();
    let vmlinuz = src.join("vmlinuz");
    let busybox = src.join("busybox");
    for p in [&vmlinuz, &busybox] {
        anyhow::ensure!(
            p.is_file(),
            "{} is missing; run .ci/install-deps (as root) to extract the DUT kernel and busybox",
            p.display()
        );
    }
    std::fs::create_dir_all(out_dir)?;
    let kernel = out_dir.join("vmlinuz");
    std::fs::copy(&vmlinuz, &kernel).with_context(|| format!("copy {}", vmlinuz.display()))?;
    let busybox = std::fs::read(&busybox)?;
    let initramfs = out_dir.join("initramfs.cpio.gz");
    let cpio = initramfs_cpio(&busybox, variant);
    let file = std::fs::File::create(&initramfs)?;
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(file, flate2::Compression::default());
    gz.write_all(&cpio)?;
    gz.finish()?.sync_all()?;
    Ok(DutImages { kernel, initramfs })
}

fn init_script(variant: InitVariant) -> String {
    let tail = match variant {
        InitVariant::Shell => {
            "export HOME=/root PS1='/ # '\ncd /\nwhile true; do setsid cttyhack /bin/sh -i; done\n"
        }
        InitVariant::Login => "while true; do /sbin/getty -L 115200 ttyS0 vt100; done\n",
    };
    format!(
        "#!/bin/busybox sh\n\
         /bin/busybox --install -s /bin\n\
         /bin/busybox --install -s /sbin\n\
         mount -t proc proc /proc 2>/dev/null\n\
         mount -t sysfs sysfs /sys 2>/dev/null\n\
         mount -t devtmpfs devtmpfs /dev 2>/dev/null\n\
         hostname dut\n\
         echo\n\
         echo \"busybox DUT: kernel $(uname -r), booted in $(cut -d' ' -f1 /proc/uptime)s\"\n\
         {tail}"
    )
}

/// The uncompressed newc archive: directories, device nodes the kernel needs before devtmpfs,
/// busybox, a passwd with a password-less root, and `/init`.
pub fn initramfs_cpio(busybox: &[u8], variant: InitVariant) -> Vec<u8> {
    let mut w = NewcWriter::default();
    for d in [
        "bin", "sbin", "dev", "etc", "proc", "sys", "tmp", "usr", "usr/bin", "usr/sbin", "root",
    ] {
        w.entry(d, 0o040755, (0, 0), b"");
    }
    w.entry("dev/console", 0o020600, (5, 1), b"");
    w.entry("dev/ttyS0", 0o020660, (4, 64), b"");
    w.entry("dev/null", 0o020666, (1, 3), b"");
    w.entry("bin/busybox", 0o100755, (0, 0), busybox);
    w.entry(
        "etc/passwd",
        0o100644,
        (0, 0),
        b"root::0:0:root:/root:/bin/sh\n",
    );
    w.entry("etc/group", 0o100644, (0, 0), b"root:x:0:\n");
    w.entry("etc/issue", 0o100644, (0, 0), b"labd busybox DUT\n\n");
    w.entry("init", 0o100755, (0, 0), init_script(variant).as_bytes());
    w.finish()
}

/// Writes the SVR4 "newc" cpio format (magic 070701) the kernel unpacks into its rootfs.
#[derive(Default)]
struct NewcWriter {
    out: Vec<u8>,
    ino: u32,
}

impl NewcWriter {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: reproducible archives
            data.len() as u32,
            0, // dev major
            0, // dev minor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), b"");
        self.out
    }
}

/// The qemu-system-x86_64 arguments for the DUT (TCG: KVM guests hang on these machines).
pub fn qemu_args(images: &DutImages, memory_mb: u32) -> Vec<String> {
    vec![
        "-M".into(),
        "pc".into(),
        "-m".into(),
        memory_mb.to_string(),
        "-smp".into(),
        "1".into(),
        "-accel".into(),
        "tcg".into(),
        "-kernel".into(),
        images.kernel.display().to_string(),
        "-initrd".into(),
        images.initramfs.display().to_string(),
        "-append".into(),
        KERNEL_APPEND.into(),
        "-display".into(),
        "none".into(),
        "-nic".into(),
        "none".into(),
        "-no-reboot".into(),
    ]
}

/// A running qemu DUT whose serial console is a telnet server on `127.0.0.1:port`.
pub struct QemuDut {
    pub child: ChildGuard,
    pub serial_port: u16,
}

impl QemuDut {
    /// Starts qemu with its serial port as a telnet server that waits for the first client, so
    /// that client sees the whole boot.
    pub fn spawn_telnet(images: &DutImages, serial_port: u16) -> anyhow::Result<Self> {
        let qemu = require_program("qemu-system-x86_64")?;
        let mut args = qemu_args(images, 256);
        args.push("-serial".into());
        args.push(format!("telnet:127.0.0.1:{serial_port},server,wait"));
        args.push("-monitor".into());
        args.push("none".into());
        let child = Command::new(qemu)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start qemu-system-x86_64")?;
        Ok(Self {
            child: ChildGuard::new("qemu", child),
            serial_port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout_is_aligned_and_terminated() {
        let cpio = initramfs_cpio(b"\x7fELFfake", InitVariant::Shell);
        assert!(cpio.len().is_multiple_of(4));
        assert!(cpio.starts_with(b"070701"));
        let trailer = cpio
            .windows(10)
            .position(|w| w == b"TRAILER!!!")
            .expect("trailer");
        // The trailer is the last entry: after its name come only padding NULs.
        assert!(cpio[trailer + 10..].iter().all(|&b| b == 0));
        // `init` is present and its header says mode 0100755.
        let init = cpio.windows(5).position(|w| w == b"init\0").expect("init");
        let header = &cpio[init - 110..init];
        assert_eq!(&header[14..22], b"000081ED");
    }
}
