//! Multi-Node groups through the running daemon: `labd run-job` on a submission hands it to
//! `labd agent` (which owns the boards' consoles), and the daemon's board reservations are
//! shared by single jobs and groups. The real binary as the client, the daemon in this
//! process, simulated boards on ptys powered by a simulated PDU over HTTP.

mod group_support;

use std::time::{Duration, Instant};

use group_support::{Lab, lab, run_job_as, table, two_roles};
use labd::control::ControlClient;
use labd::daemon::{Daemon, RunningDaemon};

const SEED_BOARDS: [(&str, &str, &str); 4] = [
    ("srv-a", "labd-sim", "[\"usb-otg\"]"),
    ("srv-b", "labd-sim", "[\"usb-otg\", \"spare\"]"),
    ("master", "labd-sim-master", "[]"),
    ("slave", "labd-sim-slave", "[]"),
];

const TWO_BOARDS: [(&str, &str, &str); 2] = [
    ("lead", "labd-sim", "[]"),
    ("follow", "labd-sim-master", "[]"),
];

/// Both roles pass after syncing with each other.
const SYNC: &str = "          - lava-sync together\n          - lava-test-case synced --shell true";

/// A single job on a labd-sim board that keeps it a few seconds.
const SINGLE: &str = r#"
job_name: single job holding its board
device_type: labd-sim
visibility: public
timeouts:
  job: {minutes: 5}
  action: {minutes: 2}
  connection: {minutes: 1}
actions:
- boot:
    method: minimal
    prompts: ['root@[a-z0-9-]+:~# ']
    timeout: {minutes: 2}
- test:
    timeout: {minutes: 2}
    definitions:
    - from: inline
      name: single
      path: inline/single.yaml
      repository:
        metadata: {format: Lava-Test Test Definition 1.0, name: single}
        run:
          steps:
          - sleep 5
          - lava-test-case slept --shell true
"#;

async fn daemon(lab: &Lab) -> RunningDaemon {
    Daemon::load(&lab.inventory).unwrap().start().await.unwrap()
}

/// The daemon's `boards` status: `(held devices with holders, waiters)`.
async fn boards(lab: &Lab) -> (Vec<(String, String)>, Vec<String>) {
    let socket = lab.dir.path().join("state/labd.sock");
    let v = ControlClient::new(socket)
        .request(serde_json::json!({"request": "status"}))
        .await
        .unwrap();
    let b = &v["boards"];
    let held = b["held"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["device"].as_str().unwrap().to_string(),
                h["by"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let waiting = b["waiting"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect();
    (held, waiting)
}

async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_group_runs_in_the_daemon_on_its_consoles() {
    labd_hw_fixtures::require_program("curl").unwrap();
    let lab = lab(&SEED_BOARDS).await;
    let running = daemon(&lab).await;
    let group = include_str!("../examples/jobs/demo-group.yaml");
    let (code, stdout, stderr) = run_job_as(&lab.paths(), group, "900", &[]).await;
    println!("{stdout}\n{stderr}");
    assert_eq!(code, 0);
    assert!(!stderr.contains("no daemon"), "{stderr}");
    for head in [
        "[server 900] on srv-a: Complete",
        "[server 901] on srv-b: Complete",
        "[client 902] on master: Complete",
        "[slave 903] on slave: Complete",
    ] {
        assert!(stdout.contains(head), "no {head:?}");
    }
    assert!(stdout.contains("group: 4 of 4 sub-jobs Complete"));
    // Per-sub-job results reach the client (collected from the streamed lines).
    let rows: Vec<String> = table(&stdout, "[slave 903] on slave:")
        .iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| l.contains("pass"))
        .collect();
    assert_eq!(
        rows,
        ["0_slave booted-by-master pass", "0_slave synced pass"]
    );
    // The daemon wrote each sub-job's log.
    for id in ["900", "901", "902", "903"] {
        assert!(
            lab.dir
                .path()
                .join(format!("state/jobs/{id}/output.yaml"))
                .is_file()
        );
    }
    assert_eq!(boards(&lab).await, (vec![], vec![]), "every board released");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impossible_group_is_refused_by_the_daemon_at_once() {
    let lab = lab(&TWO_BOARDS).await;
    let running = daemon(&lab).await;
    // Two leaders, one labd-sim board.
    let job = two_roles(false, SYNC, SYNC).replace(
        "      leader:\n        count: 1",
        "      leader:\n        count: 2",
    );
    let started = Instant::now();
    let (code, stdout, stderr) = run_job_as(&lab.paths(), &job, "900", &[]).await;
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!stderr.contains("no daemon"), "{stderr}");
    assert!(
        stderr.contains(
            "the group cannot run: the inventory can never run this group: role leader needs 2 \
             board(s) of type labd-sim; matching boards: [lead]"
        ),
        "{stderr}"
    );
    assert!(lab.pdu.events().is_empty(), "no board was switched");
    // A single job without a device is refused, not taken for a group.
    let e = ControlClient::new(lab.dir.path().join("state/labd.sock"))
        .request(serde_json::json!({"request": "run-job", "definition": SINGLE}))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no device, and the definition is not a Multi-Node submission"),
        "{e}"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_waits_for_a_single_job_holding_one_of_its_boards() {
    let lab = lab(&TWO_BOARDS).await;
    let running = daemon(&lab).await;
    let single = {
        let l = lab.paths();
        tokio::spawn(async move { run_job_as(&l, SINGLE, "77", &["-d", "lead"]).await })
    };
    eventually("the single job to hold lead", || async {
        boards(&lab).await.0 == [("lead".to_string(), "job 77".to_string())]
    })
    .await;
    let group = two_roles(false, SYNC, SYNC);
    let (code, stdout, stderr) = run_job_as(&lab.paths(), &group, "900", &[]).await;
    println!("{stdout}\n{stderr}");
    let (single_code, single_out, _) = single.await.unwrap();
    assert_eq!(single_code, 0, "{single_out}");
    assert_eq!(code, 0);
    assert!(
        stderr.contains("labd run-job: waiting for boards (busy: [lead (job 77)])"),
        "{stderr}"
    );
    assert!(stdout.contains("group: 2 of 2 sub-jobs Complete"));
    // All or nothing: the free board (follow, outlet 2) was not touched before the single
    // job on lead (outlet 1) ended and switched its board off.
    let events = lab.pdu.events();
    let single_off = events
        .iter()
        .position(|e| e.outlet == 1 && !e.on)
        .expect("the single job switched lead off");
    let follow_first = events
        .iter()
        .position(|e| e.outlet == 2)
        .expect("the group used follow");
    assert!(single_off < follow_first, "{events:?}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_groups_competing_for_the_same_boards_both_finish() {
    let lab = lab(&TWO_BOARDS).await;
    let running = daemon(&lab).await;
    let group = two_roles(false, SYNC, SYNC);
    let runs: Vec<_> = ["900", "910"]
        .into_iter()
        .map(|id| {
            let (l, group) = (lab.paths(), group.clone());
            tokio::spawn(async move { run_job_as(&l, &group, id, &[]).await })
        })
        .collect();
    let mut waited = 0;
    for r in runs {
        let (code, stdout, stderr) = tokio::time::timeout(Duration::from_secs(240), r)
            .await
            .expect("no deadlock")
            .unwrap();
        println!("{stdout}\n{stderr}");
        assert_eq!(code, 0);
        assert!(stdout.contains("group: 2 of 2 sub-jobs Complete"));
        if stderr.contains("waiting for boards") {
            waited += 1;
        }
    }
    assert_eq!(waited, 1, "one group waited for the other");
    assert_eq!(boards(&lab).await, (vec![], vec![]));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_on_the_client_cancels_the_group_in_the_daemon() {
    let lab = lab(&TWO_BOARDS).await;
    let running = daemon(&lab).await;
    // Both roles wait for a message nobody sends (a 5-minute protocol timeout).
    let wait = "          - lava-wait never-sent";
    let job_path = lab.dir.path().join("waiting.yaml");
    std::fs::write(&job_path, two_roles(false, wait, wait)).unwrap();
    let out = lab.dir.path().join("client.out");
    let mut client = tokio::process::Command::new(env!("CARGO_BIN_EXE_labd"))
        .arg("run-job")
        .arg(&job_path)
        .arg("-c")
        .arg(&lab.inventory)
        .args(["--id", "900"])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Once both sub-jobs are in their wait, interrupt the client.
    eventually("both sub-jobs waiting", || async {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        ["[leader 900]", "[follower 901]"].iter().all(|p| {
            text.lines()
                .any(|l| l.starts_with(p) && l.contains("<LAVA_WAIT never-sent>"))
        })
    })
    .await;
    assert_eq!(boards(&lab).await.0.len(), 2);
    let pid = nix::unistd::Pid::from_raw(client.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = client.wait().await.unwrap();
    assert_eq!(status.code(), Some(2));
    // The daemon cancels both sub-jobs at once (not after the protocol timeout) and
    // releases their boards.
    let canceled_at = Instant::now();
    eventually("the boards released", || async {
        boards(&lab).await.0.is_empty()
    })
    .await;
    assert!(canceled_at.elapsed() < Duration::from_secs(30));
    for id in ["900", "901"] {
        let log =
            std::fs::read_to_string(lab.dir.path().join(format!("state/jobs/{id}/output.yaml")))
                .unwrap();
        assert!(log.contains("JobCanceled: The job was canceled"), "{log}");
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_job_waits_for_a_group_holding_its_board() {
    let lab = lab(&TWO_BOARDS).await;
    let running = daemon(&lab).await;
    let busy = "          - sleep 4\n          - lava-test-case slept --shell true";
    let group = {
        let (l, g) = (lab.paths(), two_roles(false, busy, busy));
        tokio::spawn(async move { run_job_as(&l, &g, "900", &[]).await })
    };
    eventually("the group to hold both boards", || async {
        boards(&lab).await.0.len() == 2
    })
    .await;
    // `labd status` shows who holds each board.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_labd"))
        .args(["status", "-c"])
        .arg(&lab.inventory)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert_eq!(
        status.matches("    job:      group 900").count(),
        2,
        "{status}"
    );
    let (code, stdout, stderr) = run_job_as(&lab.paths(), SINGLE, "77", &["-d", "lead"]).await;
    println!("{stdout}\n{stderr}");
    assert_eq!(code, 0);
    assert!(
        stderr.contains("labd run-job: waiting for lead: busy: [lead (group 900)]"),
        "{stderr}"
    );
    let (group_code, group_out, _) = group.await.unwrap();
    assert_eq!(group_code, 0, "{group_out}");
    // The single job's board came on only after the group's sub-job switched it off.
    let lead: Vec<bool> = lab
        .pdu
        .events()
        .iter()
        .filter(|e| e.outlet == 1)
        .map(|e| e.on)
        .collect();
    assert_eq!(lead, [true, false, true, false]);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_work_directory_that_cannot_be_made_fails_the_group_before_any_sub_job_starts() {
    let lab = lab(&TWO_BOARDS).await;
    let running = daemon(&lab).await;
    // A regular file where the follower's (job 901) work directory should be.
    let jobs = lab.dir.path().join("state/jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::write(jobs.join("901"), "in the way").unwrap();
    let started = Instant::now();
    let (code, stdout, stderr) =
        run_job_as(&lab.paths(), &two_roles(false, SYNC, SYNC), "900", &[]).await;
    println!("{stdout}\n{stderr}");
    assert_eq!(code, 1);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        stderr.contains(&format!(
            "the group cannot run: role follower (job 901): cannot create its work directory {}:",
            jobs.join("901").display()
        )),
        "{stderr}"
    );
    // No sub-job started (none can outlive the group's reservation), no board was touched,
    // and both boards are free at once.
    assert!(!jobs.join("900/output.yaml").exists(), "sub-job 900 ran");
    assert!(lab.pdu.events().is_empty(), "{:?}", lab.pdu.events());
    assert_eq!(boards(&lab).await, (vec![], vec![]));
    let (code, stdout, stderr) = run_job_as(&lab.paths(), SINGLE, "77", &["-d", "lead"]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(!stderr.contains("waiting"), "{stderr}");
    running.stop().await;
}
