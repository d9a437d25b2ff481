//! The lava-server double checked against the real clients: Debian's lava-worker and lava-run
//! 2023.01 (package lava-dispatcher) register, ping, listen to `/ws/`, fetch a job, post
//! RUNNING, upload the job log and post FINISHED against the double, which must find nothing
//! to complain about. This is what makes the double's checks of labd meaningful.

use std::process::{Command, Stdio};
use std::time::Duration;

use labd_hw_fixtures::lava_master::{JobState, MasterDouble};
use labd_hw_fixtures::{ChildGuard, require_program};

const DEBIAN_PATH: &str = "/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A qemu device dictionary rendered from lava-server's own `qemu.jinja2`, as the server
/// renders it for a job (Jinja2 with `trim_blocks`).
fn qemu_device() -> String {
    let script = r#"
import jinja2, sys
env = jinja2.Environment(loader=jinja2.FileSystemLoader(["/etc/lava-server/dispatcher-config/device-types", "/usr/share/lava-server/device-types"]), trim_blocks=True, autoescape=False)
t = env.from_string("{% extends 'qemu.jinja2' %}\n{% set mac_addr = '52:54:00:12:34:59' %}\n{% set memory = 256 %}\n{% set no_kvm = True %}\n{% set netdevice = 'user,restrict=on' %}\n")
sys.stdout.write(t.render(arch="amd64"))
"#;
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .env("PATH", DEBIAN_PATH)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The reference capture's qemu job, with images that do not exist: lava-run fails it at
/// validation, after logging, which is all this test needs.
const JOB: &str = "actions:
- deploy:
    images:
      kernel:
        image_arg: -kernel {kernel}
        url: file:///nonexistent/labd-conformance/vmlinuz
    timeout:
      minutes: 2
    to: tmpfs
- boot:
    media: tmpfs
    method: qemu
    prompts:
    - '/ # '
    timeout:
      minutes: 3
compatibility: 0
context:
  arch: amd64
device_type: qemu
job_name: labd double conformance
priority: medium
timeouts:
  action:
    minutes: 5
  connection:
    minutes: 2
  job:
    minutes: 10
visibility: public
";

#[test]
fn the_real_lava_worker_and_lava_run_pass_the_doubles_checks() {
    let lava_worker = require_program("lava-worker").unwrap();
    require_program("lava-run").unwrap();
    let d = MasterDouble::start();
    let dir = tempfile::tempdir().unwrap();
    let worker_dir = dir.path().join("worker");
    let child = Command::new(lava_worker)
        .env("PATH", DEBIAN_PATH)
        .args(["--level", "DEBUG", "--name", "real1", "--url", &d.url()])
        .args(["--ws-url", &format!("{}ws/", d.url())])
        .arg("--worker-dir")
        .arg(&worker_dir)
        .args(["--ping-interval", "1", "--job-log-interval", "1"])
        .arg("--log-file")
        .arg(dir.path().join("lava-worker.log"))
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard::new("lava-worker", child);
    d.wait_for(Duration::from_secs(30), "registration and two pings", |d| {
        d.worker("real1").is_some_and(|w| w.pings >= 2)
    });
    let token = d.worker("real1").unwrap().token;
    assert_eq!(
        std::fs::read_to_string(worker_dir.join("token")).unwrap(),
        token
    );
    let id = d.submit("real1", JOB, &qemu_device());
    d.wait_for(Duration::from_secs(120), "lava-run's FINISHED", |d| {
        d.job(id).unwrap().state == JobState::Finished
    });
    guard.stop(Duration::from_secs(5));
    let job = d.job(id).unwrap();
    assert_eq!(job.running_posts, 1);
    assert!(!job.lines.is_empty());
    assert!(
        job.lines[0].contains("\"msg\": \"lava-dispatcher, installed at version: 2023.01\""),
        "{}",
        job.lines[0]
    );
    let finish = job.finish.unwrap();
    assert_eq!(finish[0], ("state".to_string(), "FINISHED".to_string()));
    assert_eq!(finish[1].1, "fail");
    assert!(!d.ws_connections().is_empty());
    let v = d.violations();
    assert!(
        v.is_empty(),
        "the double flags the real lava-worker/lava-run:\n{}\nlog:\n{}",
        v.join("\n"),
        std::fs::read_to_string(dir.path().join("lava-worker.log")).unwrap_or_default()
    );
}
