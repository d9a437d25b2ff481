//! The job runner end to end on simulated boards (U-Boot, Linux, a real shell on a pty, a
//! simulated PDU): u-boot interrupt and commands, login, inline test definitions with their
//! signals, and the failures LAVA detects while booting.

mod runner_support;

use labd::jobs::error::LavaErrorType;
use labd::jobs::runner::Health;
use labd_hw_fixtures::simboard::{BoardScript, BootloaderMode, KernelMode, Stage};
use runner_support::{SimLab, boot_section, cases, logged, msgs};

const UBOOT_JOB: &str = r#"
job_name: sim u-boot smoke
device_type: labd-sim
visibility: public
priority: medium
timeouts:
  job: {minutes: 3}
  action: {minutes: 1}
  connection: {seconds: 30}
actions:
- boot:
    method: u-boot
    commands:
    - setenv bootargs console=ttyS0,115200 root=/dev/mmcblk0p2
    - boot
    auto_login:
      login_prompt: 'login:'
      username: root
      password_prompt: 'Password:'
      password: PASSWORD
    prompts: ['root@HOST:~# ']
    timeout: {seconds: 60}
- test:
    timeout: {seconds: 60}
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
          - lava-test-case speed --result pass --measurement 12.5 --units MB/s
"#;

fn uboot_job(host: &str, password: &str) -> String {
    UBOOT_JOB
        .replace("HOST", host)
        .replace("PASSWORD", password)
}

fn lab(name: &str, script: BoardScript) -> SimLab {
    SimLab::new(name, script, |d| boot_section(d, ""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uboot_login_and_inline_test_complete() {
    let lab = lab("sim01", BoardScript::uboot_linux("sim01"));
    let (report, lines) = lab.run(&uboot_job("sim01", "root")).await;
    assert_eq!(report.health, Health::Complete, "{:?}", report.error);
    let c = cases(&report);
    for want in [
        ("0_smoke", "always-pass", "pass"),
        ("0_smoke", "always-fail", "fail"),
        ("0_smoke", "speed", "pass"),
        ("lava", "0_smoke", "pass"),
        ("lava", "job", "pass"),
    ] {
        assert!(
            c.iter()
                .any(|(d, n, r)| (d.as_str(), n.as_str(), r.as_str()) == want),
            "missing {want:?} in {c:?}"
        );
    }
    let speed = report
        .results
        .iter()
        .find(|r| r.get("case").and_then(|v| v.as_str()) == Some("speed"))
        .unwrap();
    assert_eq!(
        speed.get("measurement").and_then(|v| v.as_str()),
        Some("12.5")
    );
    assert_eq!(speed.get("units").and_then(|v| v.as_str()), Some("MB/s"));
    // The bootloader saw the interrupt and every command, typed one character at a time.
    let input = String::from_utf8_lossy(&lab.control.input()).to_string();
    assert!(
        input.contains("setenv bootargs console=ttyS0,115200 root=/dev/mmcblk0p2\n"),
        "{input:?}"
    );
    let inputs = msgs(&lines, "input");
    assert!(inputs.iter().any(|m| m.as_str() == Some("boot")));
    assert!(logged(&lines, "Sending with 1 millisecond of delay"));
    assert!(logged(
        &lines,
        "start: 1 uboot-action (timeout 00:01:00) [common]"
    ));
    assert!(logged(&lines, "end: 2 lava-test-retry"));
    // The job ends by powering the board off.
    assert!(
        lab.control
            .wait_for_stage(Stage::Off, std::time::Duration::from_secs(5))
    );
    assert!(lines.last().unwrap().contains("\"lvl\": \"results\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_panic_ends_incomplete_with_the_panic() {
    let mut script = BoardScript::uboot_linux("sim02");
    script.kernel = KernelMode::Panic("VFS: Unable to mount root fs on unknown-block(0,0)".into());
    let lab = lab("sim02", script);
    let (report, lines) = lab.run(&uboot_job("sim02", "root")).await;
    assert_eq!(report.health, Health::Incomplete);
    let e = report.error.clone().unwrap();
    assert_eq!(e.kind, LavaErrorType::Job);
    assert!(
        e.message.contains(
            "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"
        ),
        "{}",
        e.message
    );
    assert!(logged(&lines, "kernel-messages"));
    let c = cases(&report);
    assert!(
        c.contains(&("lava".into(), "kernel-messages".into(), "fail".into())),
        "{c:?}"
    );
    assert!(
        c.contains(&("lava".into(), "job".into(), "fail".into())),
        "{c:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_login_incorrect() {
    let lab = lab("sim03", BoardScript::uboot_linux("sim03"));
    let (report, _lines) = lab.run(&uboot_job("sim03", "wrong")).await;
    assert_eq!(report.health, Health::Incomplete);
    let e = report.error.clone().unwrap();
    assert_eq!(e.kind, LavaErrorType::Job);
    assert_eq!(e.message, "Login incorrect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootloader_error_is_an_infrastructure_error() {
    let mut script = BoardScript::uboot_linux("sim04");
    script.bootloader = BootloaderMode::Error("Wrong Image Format for bootm command".into());
    let lab = lab("sim04", script);
    let (report, _lines) = lab.run(&uboot_job("sim04", "root")).await;
    assert_eq!(report.health, Health::Incomplete);
    let e = report.error.clone().unwrap();
    assert_eq!(e.kind, LavaErrorType::Infrastructure, "{e:?}");
    assert!(
        e.message
            .starts_with("matched a bootloader error message: 'Wrong Image Format"),
        "{}",
        e.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_that_never_boots_times_out_naming_the_action() {
    let mut script = BoardScript::uboot_linux("sim05");
    script.kernel = KernelMode::NeverBoots;
    let lab = lab("sim05", script);
    let job = uboot_job("sim05", "root").replace(
        "timeout: {seconds: 60}\n- test",
        "timeout: {seconds: 8}\n- test",
    );
    let (report, lines) = lab.run(&job).await;
    assert_eq!(report.health, Health::Incomplete);
    let e = report.error.clone().unwrap();
    // The innermost action whose deadline passed is named, as LAVA names it.
    assert!(
        e.message.starts_with("auto-login-action timed out after "),
        "{e:?}"
    );
    assert_eq!(e.kind, LavaErrorType::Job);
    assert!(logged(&lines, "timed out after"));
    assert!(
        lab.control
            .wait_for_stage(Stage::Off, std::time::Duration::from_secs(5))
    );
}
