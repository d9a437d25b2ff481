//! End to end with the real lava-server 2023.01 (Debian), through labd's master link and the
//! job runner: a QEMU job submitted through the server's API is fetched by labd, its images
//! downloaded over http through the images service, the busybox kernel booted with
//! qemu-system-x86_64 from the device dictionary the server rendered, an inline test run; the
//! server records it Complete with labd's log and test results. A job canceled on the server
//! ends Canceled.

mod master_support;

use std::sync::Arc;
use std::time::Duration;

use labd::images::{ImageService, ImageSettings};
use labd::jobs::runner::{RunEnv, RunnerExecutor, ServiceFetcher};
use labd::master::TokenSource;
use labd_hw_fixtures::peers::httpd::HttpServer;
use labd_hw_fixtures::peers::lava_server::LavaServer;
use labd_hw_fixtures::qemu_dut::{InitVariant, build_images};
use master_support::*;

async fn server<T: Send + 'static>(
    f: impl FnOnce(&'static LavaServer) -> anyhow::Result<T> + Send + 'static,
) -> T {
    tokio::task::spawn_blocking(move || f(LavaServer::shared()?))
        .await
        .unwrap()
        .unwrap()
}

async fn wait_job(id: u64, state: &str, timeout: Duration) -> String {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let j = server(move |s| s.job(id)).await;
        if j["state"] == state {
            return j["health"].as_str().unwrap_or_default().to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} is {} after {timeout:?}, waiting for {state}",
            j["state"]
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn job(name: &str, tag: &str, images: &HttpServer, prompt: &str) -> String {
    format!(
        r#"device_type: qemu
job_name: {name}
visibility: public
priority: medium
tags: [{tag}]
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
      initrd:
        image_arg: -initrd {{initrd}}
        url: {initrd}
- boot:
    timeout: {{minutes: 4}}
    method: qemu
    media: tmpfs
    prompts: ['{prompt}']
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
          - lava-test-case has-proc --shell 'test -r /proc/uptime'
"#,
        kernel = images.url("/vmlinuz"),
        initrd = images.url("/initramfs.cpio.gz"),
    )
}

struct Lab {
    _dir: tempfile::TempDir,
    images: HttpServer,
    link: Running,
}

async fn lab(worker: &str) -> Lab {
    init_tracing();
    labd_hw_fixtures::require_program("qemu-system-x86_64").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dut = build_images(&dir.path().join("dut"), InitVariant::Shell).unwrap();
    let images = HttpServer::start().unwrap();
    images.serve_file("/vmlinuz", &dut.kernel).unwrap();
    images
        .serve_file("/initramfs.cpio.gz", &dut.initramfs)
        .unwrap();
    let w = worker.to_string();
    let token = server(move |s| {
        let token = s.add_worker(&w)?;
        s.add_qemu_device(&format!("{w}-qemu"), &w, &format!("{w}-tag"))?;
        Ok(token)
    })
    .await;
    let url = server(|s| Ok(s.url())).await;
    let mut settings = ImageSettings::new(dir.path().join("cache")).unwrap();
    // The image server is on loopback: never through a proxy from the environment.
    settings.proxy = labd::images::proxy::ProxySettings::default();
    let service = ImageService::new(settings).await.unwrap();
    let exec = RunnerExecutor::new(move || RunEnv {
        images: Some(Arc::new(ServiceFetcher::new(service.clone()))),
        ..RunEnv::default()
    });
    let mut s = settings_for(&url, worker, TokenSource::Inline(token));
    s.ping_interval = Duration::from_secs(1);
    s.job_log_interval = Duration::from_secs(1);
    s.ws_url = None;
    let link = start_link(s, Arc::new(exec), &dir.path().join("state"));
    Lab {
        _dir: dir,
        images,
        link,
    }
}

fn settings_for(url: &str, name: &str, token: TokenSource) -> labd::master::MasterSettings {
    settings(url, name, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qemu_job_from_lava_server_runs_on_labd_and_is_recorded_complete() {
    let lab = lab("labd-run-ok").await;
    let def = job("labd runner qemu", "labd-run-ok-tag", &lab.images, "/ # ");
    let id = server(move |s| s.submit(&def)).await;
    let health = wait_job(id, "Finished", Duration::from_secs(300)).await;
    lab.link.stop().await;
    let log = server(move |s| s.job_log(id)).await;
    assert_eq!(health, "Complete", "{log}");
    let tests = server(move |s| s.job_tests(id)).await;
    let results = tests["results"].as_array().unwrap();
    assert!(log.contains("\"msg\": \"Job finished correctly\""), "{log}");
    assert!(
        log.contains("busybox DUT: kernel"),
        "the DUT's console is in the log"
    );
    // The test cases point at their lines in the server's log (starttc/endtc).
    assert!(
        results
            .iter()
            .any(|t| t["name"] == "kernel-is-linux" && t["start_log_line"].is_u64()),
        "{tests}"
    );
    for (name, suite) in [
        ("kernel-is-linux", "0_busybox"),
        ("has-proc", "0_busybox"),
        ("http-download", "lava"),
    ] {
        assert!(
            results.iter().any(|t| t["name"] == name
                && t["result"] == "pass"
                && t["metadata"]
                    .as_str()
                    .is_some_and(|m| m.contains(&format!("definition: {suite}\n")))),
            "{name} in {tests}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_canceled_on_the_server_ends_canceled() {
    let lab = lab("labd-run-cancel").await;
    let def = job(
        "labd runner cancel",
        "labd-run-cancel-tag",
        &lab.images,
        "NEVER-SEEN-PROMPT",
    );
    let id = server(move |s| s.submit(&def)).await;
    wait_job(id, "Running", Duration::from_secs(60)).await;
    // Let it reach the boot.
    tokio::time::sleep(Duration::from_secs(5)).await;
    server(move |s| s.cancel(id)).await;
    let health = wait_job(id, "Finished", Duration::from_secs(120)).await;
    lab.link.stop().await;
    let log = server(move |s| s.job_log(id)).await;
    assert_eq!(health, "Canceled", "{log}");
    assert!(
        log.contains("\"lvl\": \"exception\", \"msg\": \"The job was canceled\""),
        "{log}"
    );
    assert!(log.contains("JobCanceled: The job was canceled"));
}
