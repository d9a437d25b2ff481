//! `labd run-job` on a Multi-Node submission, end to end: the real binary, an inventory of
//! simulated boards (pseudo-terminals) powered by a simulated PDU over its HTTP API, the
//! group of `examples/jobs/demo-group.yaml` (two servers of one type, a client of another
//! type that is the master of a slave board, the slave booted by the master's test
//! definition after the `lava_ms_*` handshake), and labd's own in-process coordinator.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use labd_hw_fixtures::simboard::{BoardScript, SimBoard};
use labd_hw_fixtures::simpdu::SimPdu;
use labd_hw_fixtures::simpdu::http::SimPduServer;

const GROUP: &str = include_str!("../examples/jobs/demo-group.yaml");

/// (name, device_type, tags) of the boards; outlet n+1 powers board n.
const BOARDS: [(&str, &str, &str); 4] = [
    ("srv-a", "labd-sim", "[\"usb-otg\"]"),
    ("srv-b", "labd-sim", "[\"usb-otg\", \"spare\"]"),
    ("master", "labd-sim-master", "[]"),
    ("slave", "labd-sim-slave", "[]"),
];

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

struct Lab {
    dir: tempfile::TempDir,
    _boards: Vec<SimBoard>,
    pdu: SimPdu,
    _server: SimPduServer,
    inventory: std::path::PathBuf,
}

async fn lab(boards: &[(&str, &str, &str)]) -> Lab {
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
async fn run_job(lab: &Lab, job: &str) -> (i32, String, String) {
    let job_path = lab.dir.path().join("group.yaml");
    std::fs::write(&job_path, job).unwrap();
    let inv = lab.inventory.clone();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_labd"))
            .arg("run-job")
            .arg(&job_path)
            .arg("-c")
            .arg(&inv)
            .args(["--id", "900"])
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
fn table<'a>(stdout: &'a str, head: &str) -> Vec<&'a str> {
    let start = stdout
        .find(head)
        .unwrap_or_else(|| panic!("no {head:?} in\n{stdout}"));
    stdout[start..]
        .lines()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_group_runs_on_simulated_boards_with_a_slave_booted_by_its_master() {
    labd_hw_fixtures::require_program("curl").unwrap();
    let lab = lab(&BOARDS).await;
    let started = Instant::now();
    let (code, stdout, stderr) = run_job(&lab, GROUP).await;
    println!("{stdout}\n{stderr}");
    assert_eq!(code, 0, "exit status");
    assert!(started.elapsed() < Duration::from_secs(300));

    // Every sub-job Complete, on the board its role asks for (ids <base>.<sub_id>).
    for head in [
        "[server 900] on srv-a: Complete",
        "[server 901] on srv-b: Complete",
        "[client 902] on master: Complete",
        "[slave 903] on slave: Complete",
    ] {
        assert!(stdout.contains(head), "no {head:?}");
    }
    assert!(stdout.contains("group: 4 of 4 sub-jobs Complete"));
    let rows = |head: &str| -> Vec<String> {
        table(&stdout, head)
            .iter()
            .filter(|l| l.contains("pass") || l.contains("fail"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    };
    let server = rows("[server 900] on srv-a:");
    assert_eq!(
        server,
        ["0_server synced pass"],
        "{:?}",
        table(&stdout, "[server 900]")
    );
    assert_eq!(rows("[server 901] on srv-b:"), ["0_server synced pass"]);
    assert_eq!(
        rows("[client 902] on master:"),
        [
            "0_client server-info pass",
            "0_client slave-data pass",
            "0_client power-on-slave pass",
            "0_client synced pass",
        ]
    );
    assert_eq!(
        rows("[slave 903] on slave:"),
        ["0_slave booted-by-master pass", "0_slave synced pass"]
    );

    // The servers' lava-send data reached the client (both senders, in the reply line).
    let wait_all = stdout
        .lines()
        .find(|l| l.starts_with("[client 902]") && l.contains("<LAVA_WAIT_ALL_COMPLETE"))
        .unwrap_or_else(|| panic!("no wait-all reply in the client's log"));
    // lava-coordinator answers a wait-all with a role once the first node of that role has
    // sent (its quirk, kept): at least one server's data, each with both keys.
    let senders: Vec<&str> = ["900", "901"]
        .into_iter()
        .filter(|s| wait_all.contains(&format!("{s}:port=5000")))
        .collect();
    assert!(!senders.is_empty(), "{wait_all}");
    for s in senders {
        assert!(wait_all.contains(&format!("{s}:role=server")), "{wait_all}");
    }
    // The slave's data reached the master: its device, outlet and the PDU's URL.
    let slave_data = stdout
        .lines()
        .find(|l| {
            l.starts_with("[client 902]")
                && l.contains("<LAVA_WAIT_COMPLETE")
                && l.contains("903:device=slave")
        })
        .unwrap_or_else(|| panic!("no lava_ms_slave_data reply in the client's log"));
    assert!(slave_data.contains("903:outlet=4"), "{slave_data}");
    assert!(
        slave_data.contains("903:pdu_url=http://127.0.0.1:"),
        "{slave_data}"
    );

    // The slave booted only after the handshake: its outlet was switched on once (by the
    // master's curl; labd only switches it off when the slave's job ends), and its boot
    // output comes after the master asked for lava_ms_boot.
    let slave_events: Vec<bool> = lab
        .pdu
        .events()
        .iter()
        .filter(|e| e.outlet == 4)
        .map(|e| e.on)
        .collect();
    assert_eq!(slave_events, [true, false]);
    let pos = |pred: &dyn Fn(&str) -> bool| stdout.lines().position(pred);
    let ms_boot = pos(&|l| l.starts_with("[client 902]") && l.contains("<LAVA_WAIT lava_ms_boot>"))
        .expect("the master waits for lava_ms_boot");
    let slave_boot = pos(&|l| l.starts_with("[slave 903]") && l.contains("U-Boot"))
        .expect("the slave's boot output");
    assert!(ms_boot < slave_boot, "slave booted before the handshake");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_the_inventory_can_never_hold_is_refused_at_once_naming_the_role() {
    // One labd-sim board with the tag: the server role needs two.
    let lab = lab(&[
        ("srv-a", "labd-sim", "[\"usb-otg\"]"),
        ("srv-b", "labd-sim", "[]"),
        ("master", "labd-sim-master", "[]"),
        ("slave", "labd-sim-slave", "[]"),
    ])
    .await;
    let started = Instant::now();
    let (code, stdout, stderr) = run_job(&lab, GROUP).await;
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        stderr.contains(
            "the inventory can never run this group: role server needs 2 board(s) of type \
             labd-sim with tags [usb-otg]; matching boards: [srv-a]"
        ),
        "{stderr}"
    );
    assert!(lab.pdu.events().is_empty(), "no board was switched");
}

/// A leader that fails (`lava-test-raise`: Incomplete) and a follower waiting for a message
/// the leader never sends; `essential` marks the leader's role.
fn leader_and_follower(essential: bool, follower_steps: &str) -> String {
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
          - lava-test-case started --shell true
          - lava-test-raise leader-broke
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

const TWO_BOARDS: [(&str, &str, &str); 2] = [
    ("lead", "labd-sim", "[]"),
    ("follow", "labd-sim-master", "[]"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_essential_role_failing_cancels_a_waiting_peer_at_once() {
    let lab = lab(&TWO_BOARDS).await;
    // Without the essential rule the follower would wait for its 5-minute protocol timeout.
    let job = leader_and_follower(
        true,
        "          - lava-wait never-sent\n          - lava-test-case after-wait --shell true",
    );
    let started = Instant::now();
    let (code, stdout, stderr) = run_job(&lab, &job).await;
    println!("{stdout}\n{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(code, 1, "an Incomplete sub-job makes the group fail");
    assert!(
        stdout.contains("[leader 900] on lead: Incomplete (Test: leader-broke)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "[follower 901] on follow: Canceled (essential role leader (job 900) on lead ended Incomplete)"
        ),
        "{stdout}"
    );
    // The follower's own log says why, and it never got past the wait.
    assert!(stdout.lines().any(|l| l.starts_with("[follower 901]")
        && l.contains(
            "Canceling the job: essential role leader (job 900) on lead ended Incomplete"
        )));
    let follower = table(&stdout, "[follower 901] on follow:");
    assert!(
        !follower.iter().any(|l| l.contains("after-wait")),
        "{follower:?}"
    );
    assert!(stdout.contains("group: 0 of 2 sub-jobs Complete"));
    // Both boards were switched off at the end (finalize ran for the canceled one too).
    let offs = lab.pdu.events().iter().filter(|e| !e.on).count();
    assert!(offs >= 2, "{:?}", lab.pdu.events());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_essential_failure_lets_the_others_finish() {
    let lab = lab(&TWO_BOARDS).await;
    let job = leader_and_follower(
        false,
        "          - sleep 3\n          - lava-test-case alone --shell true",
    );
    let (code, stdout, stderr) = run_job(&lab, &job).await;
    println!("{stdout}\n{stderr}");
    assert_eq!(code, 1);
    assert!(stdout.contains("[leader 900] on lead: Incomplete (Test: leader-broke)"));
    assert!(
        stdout.contains("[follower 901] on follow: Complete"),
        "{stdout}"
    );
    assert!(!stdout.contains("Canceling the job"));
    let rows: Vec<String> = table(&stdout, "[follower 901] on follow:")
        .iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| l.contains("pass"))
        .collect();
    assert_eq!(rows, ["0_follower alone pass"]);
    assert!(stdout.contains("group: 1 of 2 sub-jobs Complete"));
}
