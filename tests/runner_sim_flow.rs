//! The job runner on simulated boards: `minimal` boot with auto-login on a board without a
//! bootloader interrupt, interactive tests, monitors, cancellation and the job timeout.

mod runner_support;

use std::time::Duration;

use labd::jobs::error::LavaErrorType;
use labd::jobs::runner::Health;
use labd_hw_fixtures::simboard::{BoardScript, KernelMode, Stage};
use runner_support::{SimLab, boot_section, cases, logged};
use tokio_util::sync::CancellationToken;

const MINIMAL_JOB: &str = r#"
job_name: sim minimal interactive
device_type: labd-sim
visibility: public
timeouts:
  job: {minutes: 2}
  action: {minutes: 1}
  connection: {seconds: 20}
actions:
- boot:
    method: minimal
    auto_login: {login_prompt: 'login:', username: root, password_prompt: 'Password:', password: root}
    prompts: ['root@sim11:~# ']
    timeout: {seconds: 40}
- test:
    timeout: {seconds: 30}
    interactive:
    - name: shell-checks
      prompts: ['root@sim11:~# ']
      script:
      - command: echo labd-$((40+2))
        name: arithmetic
        successes:
        - message: labd-42
      - command: cat /nonexistent-labd-file
        name: missing-file
        failures:
        - message: No such file or directory
          error: the file is missing
          exception: TestError
- test:
    timeout: {seconds: 30}
    monitors:
    - name: selftests
      start: SELFTEST START
      end: SELFTEST END
      pattern: '(?P<test_case_id>[a-z_]+): (?P<result>PASS|FAIL)'
      fixupdict: {PASS: pass, FAIL: fail}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimal_boot_interactive_and_monitor() {
    let lab = SimLab::new("sim11", BoardScript::uboot_linux("sim11"), |d| {
        boot_section(d, "")
    });
    // The board prints its self-test report once the monitor waits for it.
    let control = lab.control.clone();
    let printer = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if String::from_utf8_lossy(&control.input()).contains("/nonexistent-labd-file") {
                std::thread::sleep(Duration::from_millis(1500));
                control.write_raw(
                    b"\r\nSELFTEST START\r\nmemory_walk: PASS\r\ncache_flush: FAIL\r\nSELFTEST END\r\n",
                );
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    });
    let (report, lines) = lab.run(MINIMAL_JOB).await;
    assert!(printer.join().unwrap(), "the interactive step never ran");
    // The interactive failure ends that block (TestError) and with it the job, as in LAVA.
    let c = cases(&report);
    println!("{c:?}");
    assert!(logged(&lines, "start: 1 minimal-boot"));
    assert!(
        c.contains(&("2_shell-checks".into(), "arithmetic".into(), "pass".into())),
        "{c:?}"
    );
    assert!(
        c.contains(&(
            "2_shell-checks".into(),
            "missing-file".into(),
            "fail".into()
        )),
        "{c:?}"
    );
    assert_eq!(report.health, Health::Incomplete);
    let e = report.error.clone().unwrap();
    assert_eq!(e.kind, LavaErrorType::Test, "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_records_each_pattern_match() {
    let lab = SimLab::new("sim12", BoardScript::uboot_linux("sim12"), |d| {
        boot_section(d, "")
    });
    let control = lab.control.clone();
    let printer = std::thread::spawn(move || {
        let ok = control.wait_for_stage(Stage::Shell, Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(2500));
        control.write_raw(
            b"\r\nSELFTEST START\r\nmemory_walk: PASS\r\ncache_flush: FAIL\r\nSELFTEST END\r\n",
        );
        ok
    });
    let job = MINIMAL_JOB.replace("sim11", "sim12");
    // Only the boot and the monitor.
    let start = job
        .find("- test:\n    timeout: {seconds: 30}\n    interactive")
        .unwrap();
    let end = job
        .find("- test:\n    timeout: {seconds: 30}\n    monitors")
        .unwrap();
    let job = format!("{}{}", &job[..start], &job[end..]);
    let (report, _lines) = lab.run(&job).await;
    assert!(printer.join().unwrap());
    assert_eq!(report.health, Health::Complete, "{:?}", report.error);
    let c = cases(&report);
    // LAVA names a monitor's results after the monitor.
    assert!(
        c.contains(&("selftests".into(), "memory_walk".into(), "pass".into())),
        "{c:?}"
    );
    assert!(
        c.contains(&("selftests".into(), "cache_flush".into(), "fail".into())),
        "{c:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_the_job_and_powers_off() {
    let mut script = BoardScript::uboot_linux("sim13");
    script.kernel = KernelMode::NeverBoots;
    let lab = SimLab::new("sim13", script, |d| boot_section(d, ""));
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    let control = lab.control.clone();
    tokio::spawn(async move {
        // Cancel while the job waits for a kernel that never starts.
        while !control.is_powered() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        c2.cancel();
    });
    let job = MINIMAL_JOB.replace("sim11", "sim13");
    let started = std::time::Instant::now();
    let (report, lines) = lab.run_with(&job, cancel).await;
    assert_eq!(report.health, Health::Canceled);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let e = report.error.unwrap();
    assert_eq!(e.kind, LavaErrorType::Canceled);
    assert_eq!(e.message, "The job was canceled");
    assert!(logged(
        &lines,
        "\"lvl\": \"exception\", \"msg\": \"The job was canceled\""
    ));
    assert!(logged(&lines, "JobCanceled: The job was canceled"));
    assert!(
        lab.control
            .wait_for_stage(Stage::Off, Duration::from_secs(5))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_timeout_ends_the_job_incomplete() {
    let lab = SimLab::new("sim14", BoardScript::uboot_linux("sim14"), |d| {
        boot_section(d, "")
    });
    // The boot fits; the test would too by its own timeout, but not in what the job has left.
    let job = r#"
job_name: sim job timeout
device_type: labd-sim
visibility: public
timeouts:
  job: {seconds: 12}
  action: {seconds: 10}
  connection: {seconds: 8}
actions:
- boot:
    method: minimal
    auto_login: {login_prompt: 'login:', username: root, password_prompt: 'Password:', password: root}
    prompts: ['root@sim14:~# ']
    timeout: {seconds: 10}
- test:
    timeout: {seconds: 10}
    interactive:
    - name: slow
      prompts: ['root@sim14:~# ']
      script:
      - command: sleep 4
      - command: sleep 4
      - command: sleep 4
      - command: sleep 4
"#;
    let started = std::time::Instant::now();
    let (report, lines) = lab.run(job).await;
    assert!(started.elapsed() < Duration::from_secs(25));
    assert_eq!(report.health, Health::Incomplete);
    let e = report.error.unwrap();
    // The job's deadline ends the innermost running action, which is named.
    assert!(
        e.message
            .starts_with("lava-test-interactive timed out after "),
        "{e:?}"
    );
    assert!(logged(&lines, "start: 2 lava-test-interactive-retry"));
    assert!(
        lab.control
            .wait_for_stage(Stage::Off, Duration::from_secs(5))
    );
}
