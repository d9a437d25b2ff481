//! `labd run-job` as a user runs it: the real binary, a simulated board on a pty and a
//! simulated PDU reached over http; in its own process (no daemon) and through a running
//! daemon's `run-job` control request. Checks the streamed log, the results table and the
//! exit status.

mod runner_support;

use std::sync::Arc;
use std::time::Duration;

use labd::daemon::Daemon;
use labd::inventory::Inventory;
use labd::jobs::runner::{RunEnv, ServiceFetcher, service};
use labd_hw_fixtures::simboard::{BoardScript, KernelMode, Stage};
use labd_hw_fixtures::simpdu::http::SimPduServer;
use runner_support::{SimLab, boot_section};

const JOB: &str = r#"
job_name: cli smoke
device_type: labd-sim
visibility: public
timeouts:
  job: {minutes: 2}
  action: {minutes: 1}
  connection: {seconds: 30}
actions:
- boot:
    method: u-boot
    commands: [boot]
    auto_login: {login_prompt: 'login:', username: root, password_prompt: 'Password:', password: root}
    prompts: ['root@HOST:~# ']
- test:
    definitions:
    - from: inline
      name: smoke
      path: inline/smoke.yaml
      repository:
        metadata: {format: Lava-Test Test Definition 1.0, name: smoke}
        run:
          steps:
          - lava-test-case always-pass --shell true
          - lava-test-case always-fail --shell false
"#;

/// Runs the labd binary; its output goes to files so a hang still shows what it printed.
async fn labd(args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let (o, e) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_labd"))
        .args(args)
        .env_remove("LABD_CONFIG")
        .stdout(std::fs::File::create(&o).unwrap())
        .stderr(std::fs::File::create(&e).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let status = match tokio::time::timeout(Duration::from_secs(120), child.wait()).await {
        Ok(s) => s.unwrap(),
        Err(_) => panic!(
            "labd {args:?} did not end:\n{}\n{}",
            std::fs::read_to_string(&o).unwrap(),
            std::fs::read_to_string(&e).unwrap()
        ),
    };
    std::process::Output {
        status,
        stdout: std::fs::read(&o).unwrap(),
        stderr: std::fs::read(&e).unwrap(),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_job_in_process_complete() {
    let lab = SimLab::new("sim21", BoardScript::uboot_linux("sim21"), |d| {
        boot_section(d, "")
    });
    let server = SimPduServer::start(lab.pdu.clone()).await.unwrap();
    let inv = lab.write_inventory(&server.url());
    let job = lab.dir.path().join("job.yaml");
    std::fs::write(&job, JOB.replace("HOST", "sim21")).unwrap();
    let out = labd(&[
        "run-job",
        job.to_str().unwrap(),
        "--device",
        "sim21",
        "-c",
        inv.to_str().unwrap(),
        "--id",
        "4242",
    ])
    .await;
    let stdout = text(&out.stdout);
    println!("{stdout}\n{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("no daemon at"));
    // The board's output, labd's lines, and the table.
    assert!(stdout.contains("Hit any key to stop autoboot"));
    assert!(stdout.contains("[info] start: 1 uboot-action"));
    assert!(stdout.contains("<< boot\n"));
    assert!(stdout.ends_with(
        "definition  case         result  measurement\n\
         0_smoke     always-pass  pass\n\
         0_smoke     always-fail  fail\n\
         job: Complete\n"
    ));
    let log = lab.dir.path().join("state/jobs/4242/output.yaml");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.lines().all(|l| labd::jobs::log::parse_line(l).is_ok()));
    assert!(log.contains("\"case\": \"always-fail\""));
    assert!(
        lab.control
            .wait_for_stage(Stage::Off, Duration::from_secs(5))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_job_kernel_panic_exits_nonzero() {
    let mut script = BoardScript::uboot_linux("sim22");
    script.kernel = KernelMode::Panic("Attempted to kill init! exitcode=0x00000100".into());
    let lab = SimLab::new("sim22", script, |d| boot_section(d, ""));
    let server = SimPduServer::start(lab.pdu.clone()).await.unwrap();
    let inv = lab.write_inventory(&server.url());
    let job = lab.dir.path().join("job.yaml");
    std::fs::write(&job, JOB.replace("HOST", "sim22")).unwrap();
    let out = labd(&[
        "run-job",
        job.to_str().unwrap(),
        "-d",
        "sim22",
        "-c",
        inv.to_str().unwrap(),
        "--local",
    ])
    .await;
    let stdout = text(&out.stdout);
    println!("{stdout}");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout.lines().any(|l| l.starts_with("lava ")
            && l.contains(" kernel-messages ")
            && l.ends_with(" fail")),
        "{stdout}"
    );
    assert!(
        stdout.contains("job: Incomplete (Job: ")
            && stdout.contains("Kernel panic - not syncing: Attempted to kill init!"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_job_through_the_daemon() {
    let lab = SimLab::new("sim23", BoardScript::uboot_linux("sim23"), |d| {
        boot_section(d, "")
    });
    let server = SimPduServer::start(lab.pdu.clone()).await.unwrap();
    let inv_path = lab.write_inventory(&server.url());
    let inv = Inventory::load(&inv_path).unwrap();
    let daemon = Daemon::new(&inv_path, inv);
    let services = daemon.services().clone();
    let power = labd::power::PowerService::new(&services.inventory()).unwrap();
    let images = labd::images::ImageService::new(
        labd::images::ImageSettings::from_inventory(&services.inventory()).unwrap(),
    )
    .await
    .unwrap();
    let s2 = services.clone();
    let jobs_dir = lab.dir.path().join("state/jobs");
    services.control.register(
        "run-job",
        service::handler(
            move || RunEnv {
                consoles: Some(s2.consoles.clone()),
                inventory: Some(s2.inventory()),
                power: Some(power.clone()),
                images: Some(Arc::new(ServiceFetcher::new(images.clone()))),
                multinode: None,
                dispatcher_ip: None,
            },
            jobs_dir,
        ),
    );
    let running = daemon.start().await.unwrap();
    let job = lab.dir.path().join("job.yaml");
    std::fs::write(&job, JOB.replace("HOST", "sim23")).unwrap();
    let out = labd(&[
        "run-job",
        job.to_str().unwrap(),
        "-d",
        "sim23",
        "-c",
        inv_path.to_str().unwrap(),
        "--id",
        "77",
    ])
    .await;
    let stdout = text(&out.stdout);
    println!("{stdout}\n{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
    assert!(!text(&out.stderr).contains("no daemon"));
    assert!(stdout.contains(
        "[info] [common] connect-device Connecting to device using 'labd console sim23'"
    ));
    assert!(stdout.ends_with("0_smoke     always-fail  fail\njob: Complete\n"));
    assert!(lab.dir.path().join("state/jobs/77/output.yaml").is_file());
    // The daemon's console journal saw the job's input.
    running.stop().await;
}
