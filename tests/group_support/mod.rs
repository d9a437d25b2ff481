//! Shared by the tests that run Multi-Node groups with `labd run-job`: a simulated lab (boards
//! on pseudo-terminals powered by a simulated PDU over its HTTP API, an inventory for them)
//! and the real binary.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};

use labd_hw_fixtures::simboard::{BoardScript, SimBoard};
use labd_hw_fixtures::simpdu::SimPdu;
use labd_hw_fixtures::simpdu::http::SimPduServer;

fn inventory(dir: &Path, boards: &[(String, &str, &str, String)], pdu_url: &str) -> String {
    let mut t = format!(
        "[worker]\nname = \"w\"\nstate_dir = \"{}\"\n\
         [[pdu]]\nname = \"pdu\"\ndriver = \"sim\"\noutlets = 8\nurl = \"{pdu_url}\"\n",
        dir.join("state").display()
    );
    for (i, (name, ty, tags, tty)) in boards.iter().enumerate() {
        t.push_str(&format!(
            "[[device]]\nname = \"{name}\"\ndevice_type = \"{ty}\"\ntags = {tags}\n\
             [device.console]\ntty = \"{tty}\"\nbaud = 115200\n\
             [device.power]\npdu = \"pdu\"\noutlet = {}\nreboot_delay = \"100ms\"\n\
             [device.boot]\nmethods = [\"minimal\"]\nresults_dir = \"{}/lava-%s\"\n\
             character_delays = {{ boot = 1, test = 0 }}\n",
            i + 1,
            dir.display()
        ));
    }
    t
}

pub struct Lab {
    pub dir: tempfile::TempDir,
    _boards: Vec<SimBoard>,
    pub pdu: SimPdu,
    _server: SimPduServer,
    pub inventory: std::path::PathBuf,
}

pub async fn lab(boards: &[(&str, &str, &str)]) -> Lab {
    let dir = tempfile::tempdir().unwrap();
    let pdu = SimPdu::new("pdu", 8);
    let mut sims = Vec::new();
    let mut rows = Vec::new();
    for (i, (name, ty, tags)) in boards.iter().enumerate() {
        let mut script = BoardScript::uboot_linux(name).fast();
        script.login = None;
        let b = SimBoard::spawn(name, dir.path(), script).unwrap();
        let c = b.control();
        pdu.on_switch(
            i as u32 + 1,
            Box::new(move |on| if on { c.power_on() } else { c.power_off() }),
        );
        rows.push((
            name.to_string(),
            *ty,
            *tags,
            b.control().tty_path().display().to_string(),
        ));
        sims.push(b);
    }
    let server = SimPduServer::start(pdu.clone()).await.unwrap();
    let text = inventory(dir.path(), &rows, &server.url());
    let path = dir.path().join("inventory.toml");
    std::fs::write(&path, text).unwrap();
    Lab {
        dir,
        _boards: sims,
        pdu,
        _server: server,
        inventory: path,
    }
}

/// Runs `labd run-job` in another thread (the PDU server lives on this runtime).
pub async fn run_job(lab: &Lab, job: &str) -> (i32, String, String) {
    run_job_as(&lab.paths(), job, "900", &[]).await
}

/// Where a lab is (to run jobs from other tasks).
#[derive(Debug, Clone)]
pub struct LabPaths {
    pub dir: std::path::PathBuf,
    pub inventory: std::path::PathBuf,
}

impl Lab {
    pub fn paths(&self) -> LabPaths {
        LabPaths {
            dir: self.dir.path().to_path_buf(),
            inventory: self.inventory.clone(),
        }
    }
}

/// `labd run-job` with the base id `id` and more arguments.
pub async fn run_job_as(
    lab: &LabPaths,
    job: &str,
    id: &str,
    extra: &[&str],
) -> (i32, String, String) {
    let job_path = lab.dir.join(format!("job-{id}.yaml"));
    std::fs::write(&job_path, job).unwrap();
    let inv = lab.inventory.clone();
    let (id, extra): (String, Vec<String>) = (
        id.to_string(),
        extra.iter().map(|s| s.to_string()).collect(),
    );
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_labd"))
            .arg("run-job")
            .arg(&job_path)
            .arg("-c")
            .arg(&inv)
            .args(["--id", &id])
            .args(&extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// The rows of one sub-job's results table in the summary (after `[role id] on device:`).
pub fn table<'a>(stdout: &'a str, head: &str) -> Vec<&'a str> {
    let start = stdout
        .find(head)
        .unwrap_or_else(|| panic!("no {head:?} in\n{stdout}"));
    stdout[start..]
        .lines()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect()
}

/// A single job named `name` on a labd-sim board: boots, then runs `steps` (YAML list items,
/// indented as in [`two_roles`]) as one inline test definition; action and test timeouts
/// `minutes`.
pub fn single_job(name: &str, minutes: u32, steps: &str) -> String {
    format!(
        r#"
job_name: {name}
device_type: labd-sim
visibility: public
timeouts:
  job: {{minutes: 5}}
  action: {{minutes: {minutes}}}
  connection: {{minutes: 1}}
actions:
- boot:
    method: minimal
    prompts: ['root@[a-z0-9-]+:~# ']
    timeout: {{minutes: 2}}
- test:
    timeout: {{minutes: {minutes}}}
    definitions:
    - from: inline
      name: {name}
      path: inline/{name}.yaml
      repository:
        metadata: {{format: Lava-Test Test Definition 1.0, name: {name}}}
        run:
          steps:
{steps}
"#
    )
}

/// A group of two roles on one board each: `leader` (of type labd-sim, `essential` or not)
/// and `follower` (labd-sim-master), each running its test steps (YAML list items, indented).
pub fn two_roles(essential: bool, leader_steps: &str, follower_steps: &str) -> String {
    format!(
        r#"
job_name: essential roles
visibility: public
timeouts:
  job: {{minutes: 10}}
  action: {{minutes: 5}}
  connection: {{minutes: 1}}
protocols:
  lava-multinode:
    roles:
      leader:
        count: 1
        device_type: labd-sim
        essential: {essential}
      follower:
        count: 1
        device_type: labd-sim-master
    timeout: {{minutes: 5}}
actions:
- boot:
    role: [leader, follower]
    method: minimal
    prompts: ['root@[a-z0-9-]+:~# ']
    timeout: {{minutes: 2}}
- test:
    role: [leader]
    timeout: {{minutes: 5}}
    definitions:
    - from: inline
      name: leader
      path: inline/leader.yaml
      repository:
        metadata: {{format: Lava-Test Test Definition 1.0, name: leader}}
        run:
          steps:
{leader_steps}
- test:
    role: [follower]
    timeout: {{minutes: 5}}
    definitions:
    - from: inline
      name: follower
      path: inline/follower.yaml
      repository:
        metadata: {{format: Lava-Test Test Definition 1.0, name: follower}}
        run:
          steps:
{follower_steps}
"#
    )
}
