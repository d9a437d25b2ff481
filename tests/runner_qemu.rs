//! The job runner with a real device under test: Debian's kernel and a busybox initramfs,
//! served over http by the images test server (the kernel xz-compressed, checked by sha256),
//! deployed to the job's directory through labd's images service, booted with
//! qemu-system-x86_64 (`method: qemu`), and an inline test definition run by busybox sh.

mod runner_support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use labd::inventory::Inventory;
use labd::jobs::error::LavaErrorType;
use labd::jobs::runner::{Health, LocalBoard};
use labd_hw_fixtures::peers::httpd::HttpServer;
use labd_hw_fixtures::qemu_dut::{InitVariant, build_images};
use labd_hw_fixtures::require_program;
use runner_support::{cases, logged, run_collect};
use tokio_util::sync::CancellationToken;

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(data))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn inventory(dir: &Path) -> Arc<Inventory> {
    let text = format!(
        "[worker]\nname = \"w\"\nstate_dir = \"{}\"\n[images]\nproxy = \"\"\n\
         [[device]]\nname = \"qemu01\"\ndevice_type = \"qemu\"\n\
         [device.boot]\nmethods = [\"qemu\"]\nprompts = [\"/ # \"]\n\
         [device.boot.qemu]\ncommand = \"qemu-system-x86_64\"\n\
         options = [\"-nographic\", \"-M pc\", \"-m 256\", \"-smp 1\", \"-accel tcg\", \"-nic none\", \"-no-reboot\", \"-monitor none\"]\n",
        dir.join("state").display()
    );
    Arc::new(Inventory::parse(&dir.join("inventory.toml"), &text).unwrap())
}

fn job(server: &HttpServer, kernel_sha256: &str, test_step: &str) -> String {
    format!(
        r#"device_type: qemu
job_name: qemu busybox
visibility: public
timeouts:
  job: {{minutes: 8}}
  action: {{minutes: 4}}
  connection: {{minutes: 2}}
context:
  arch: amd64
actions:
- deploy:
    timeout: {{minutes: 2}}
    to: tmpfs
    images:
      kernel:
        image_arg: -kernel {{kernel}} -append "console=ttyS0,115200 rdinit=/init panic=-1"
        url: {kernel}
        compression: xz
        sha256sum: {kernel_sha256}
      initrd:
        image_arg: -initrd {{initrd}}
        url: {initrd}
- boot:
    timeout: {{minutes: 4}}
    method: qemu
    media: tmpfs
    prompts: ['/ # ']
- test:
    timeout: {{minutes: 3}}
    definitions:
    - from: inline
      name: busybox
      path: inline/busybox.yaml
      repository:
        metadata: {{format: Lava-Test Test Definition 1.0, name: busybox}}
        run:
          steps:
          - lava-test-case kernel-is-linux --shell 'uname -s | grep -q Linux'
          - {test_step}
"#,
        kernel = server.url("/images/vmlinuz.xz"),
        initrd = server.url("/images/initramfs.cpio.gz"),
    )
}

struct Fixture {
    dir: tempfile::TempDir,
    server: HttpServer,
    kernel_sha256: String,
    kernel_len: usize,
}

fn fixture() -> Fixture {
    require_program("qemu-system-x86_64").unwrap();
    require_program("xz").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let images = build_images(&dir.path().join("dut"), InitVariant::Shell).unwrap();
    let st = Command::new("xz")
        .args(["-k", "-1", "-T1"])
        .arg(&images.kernel)
        .status()
        .unwrap();
    assert!(st.success());
    let kernel_xz = std::fs::read(images.kernel.with_extension("xz")).unwrap();
    let server = HttpServer::start().unwrap();
    server.serve("/images/vmlinuz.xz", kernel_xz.clone());
    server
        .serve_file("/images/initramfs.cpio.gz", &images.initramfs)
        .unwrap();
    Fixture {
        dir,
        server,
        kernel_sha256: sha256_hex(&kernel_xz),
        kernel_len: kernel_xz.len(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_job_deploys_boots_and_tests_busybox() {
    let f = fixture();
    let inv = inventory(f.dir.path());
    let local = LocalBoard::start(inv, "qemu01", None, None).await.unwrap();
    let def = job(
        &f.server,
        &f.kernel_sha256,
        "lava-test-case busybox-echo --shell 'echo labd | grep -q labd'",
    );
    let (report, lines) = run_collect(&local, &def, f.dir.path(), CancellationToken::new()).await;
    local.stop().await;
    assert_eq!(report.health, Health::Complete, "{:?}", report.error);
    let c = cases(&report);
    for want in [
        ("lava", "http-download", "pass"),
        ("lava", "execute-qemu", "pass"),
        ("0_busybox", "kernel-is-linux", "pass"),
        ("0_busybox", "busybox-echo", "pass"),
        ("lava", "0_busybox", "pass"),
        ("lava", "job", "pass"),
    ] {
        assert!(
            c.iter()
                .any(|(d, n, r)| (d.as_str(), n.as_str(), r.as_str()) == want),
            "missing {want:?} in {c:?}"
        );
    }
    // The kernel's download record: LAVA's size (the compressed bytes) and checksum.
    let dl = report
        .results
        .iter()
        .find(|r| {
            r.get("case").and_then(|v| v.as_str()) == Some("http-download")
                && r.get("extra")
                    .and_then(|e| e.get("label"))
                    .and_then(|v| v.as_str())
                    == Some("kernel")
        })
        .expect("kernel download record");
    let extra = dl.get("extra").unwrap();
    assert_eq!(
        extra.get("sha256sum").and_then(|v| v.as_str()),
        Some(f.kernel_sha256.as_str())
    );
    assert_eq!(
        extra.get("size"),
        Some(&labd::jobs::log::LogValue::Int(f.kernel_len as i64))
    );
    assert!(logged(&lines, "Boot command: "));
    assert!(logged(&lines, "-kernel "));
    assert!(logged(&lines, "Decompressing xz while downloading (labd)"));
    // The job's downloads are gone afterwards.
    assert!(!f.dir.path().join("job/tmp").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_checksum_is_a_job_error_before_booting() {
    let f = fixture();
    let inv = inventory(f.dir.path());
    let local = LocalBoard::start(inv, "qemu01", None, None).await.unwrap();
    let bad = "0".repeat(64);
    let def = job(&f.server, &bad, "lava-test-case x --shell true");
    let (report, lines) = run_collect(&local, &def, f.dir.path(), CancellationToken::new()).await;
    local.stop().await;
    assert_eq!(report.health, Health::Incomplete);
    let e = report.error.unwrap();
    assert_eq!(e.kind, LavaErrorType::Job, "{e:?}");
    assert!(
        e.message.starts_with(&format!(
            "sha256 for '{}' does not match.",
            f.server.url("/images/vmlinuz.xz")
        )),
        "{}",
        e.message
    );
    assert!(!logged(&lines, "Boot command: "));
}
