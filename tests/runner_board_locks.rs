//! `labd run-job` runs that do not go through the daemon's reservations: every run in its own
//! process holds its boards' lock files (`state_dir/locks/boards/<device>.lock`), so two such
//! runs on one board take turns and a group never overlaps a single job; `--local` is refused
//! beside a running daemon; `--wait-timeout` ends a wait naming the boards' holders, in the
//! daemon and in-process. The real binary, simulated boards on ptys, a simulated PDU over HTTP
//! (`tests/group_support/`); the daemon, when there is one, in this process.

mod group_support;

use std::time::{Duration, Instant};

use group_support::{Lab, LabPaths, lab, run_job_as, single_job, two_roles};
use labd::daemon::Daemon;

const TWO_BOARDS: [(&str, &str, &str); 2] = [
    ("lead", "labd-sim", "[]"),
    ("follow", "labd-sim-master", "[]"),
];

/// A single job on a labd-sim board that keeps it `SECONDS` seconds after booting.
fn single(seconds: u32) -> String {
    single_job(
        "single",
        2,
        &format!("          - sleep {seconds}\n          - lava-test-case slept --shell true"),
    )
}

/// Both roles pass after a short while.
const BRIEF: &str = "          - sleep 1\n          - lava-test-case slept --shell true";

/// The text in a board's lock file (who holds it, or held it last).
fn lock_text(lab: &Lab, device: &str) -> String {
    let path = lab
        .dir
        .path()
        .join(format!("state/locks/boards/{device}.lock"));
    std::fs::read_to_string(path).unwrap_or_default()
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts `labd run-job` in the background.
fn spawn_run(
    lab: &LabPaths,
    job: String,
    id: &'static str,
    extra: &'static [&'static str],
) -> tokio::task::JoinHandle<(i32, String, String)> {
    let l = lab.clone();
    tokio::spawn(async move { run_job_as(&l, &job, id, extra).await })
}

/// Starts job 77 in its own process (`--local`) on `lead`, keeping it `seconds` after boot;
/// returns once it holds lead's lock file, with the holder text found there.
async fn hold_lead_locally(
    lab: &Lab,
    seconds: u32,
) -> (tokio::task::JoinHandle<(i32, String, String)>, String) {
    let run = spawn_run(
        &lab.paths(),
        single(seconds),
        "77",
        &["-d", "lead", "--local"],
    );
    eventually("job 77 to lock lead", || {
        lock_text(lab, "lead").starts_with("job 77 (pid ")
    })
    .await;
    (run, lock_text(lab, "lead").trim().to_string())
}

/// The switches of one outlet, in order (`true`: on).
fn outlet(lab: &Lab, n: u32) -> Vec<bool> {
    lab.pdu
        .events()
        .iter()
        .filter(|e| e.outlet == n)
        .map(|e| e.on)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_local_runs_on_one_board_take_turns() {
    let lab = lab(&TWO_BOARDS).await;
    let (first, holder) = hold_lead_locally(&lab, 3).await;
    // The automatic in-process run (no daemon answers) holds the lock files too.
    let (code, stdout, stderr) = run_job_as(&lab.paths(), &single(0), "78", &["-d", "lead"]).await;
    println!("{stdout}\n{stderr}");
    assert_eq!(code, 0);
    assert!(stderr.contains("no daemon at"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "labd run-job: waiting for lead: busy: [lead ({holder})]"
        )),
        "{stderr}"
    );
    assert!(stdout.ends_with("job: Complete\n"), "{stdout}");
    let (code, stdout, stderr) = first.await.unwrap();
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(!stderr.contains("waiting for"), "{stderr}");
    // One job after the other: the second switched lead on after the first switched it off.
    assert_eq!(outlet(&lab, 1), [true, false, true, false]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_group_and_a_local_single_job_on_a_shared_board_do_not_overlap() {
    let lab = lab(&TWO_BOARDS).await;
    let (single_run, holder) = hold_lead_locally(&lab, 3).await;
    let group = two_roles(false, BRIEF, BRIEF);
    let (code, stdout, stderr) = tokio::time::timeout(
        Duration::from_secs(240),
        run_job_as(&lab.paths(), &group, "900", &["--local"]),
    )
    .await
    .expect("no deadlock");
    println!("{stdout}\n{stderr}");
    assert_eq!(code, 0);
    assert!(
        stderr.contains(&format!(
            "labd run-job: waiting for boards (busy: [lead ({holder})])"
        )),
        "{stderr}"
    );
    assert!(
        stdout.contains("group: 2 of 2 sub-jobs Complete"),
        "{stdout}"
    );
    let (code, stdout, stderr) = single_run.await.unwrap();
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    // All or nothing: the group did not touch its free board (follow, outlet 2) before the
    // single job switched lead (outlet 1) off, and lead ran one job after the other.
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
    assert_eq!(outlet(&lab, 1), [true, false, true, false]);
    // Both released: a group takes both boards at once.
    let (code, _, stderr) = run_job_as(
        &lab.paths(),
        &group,
        "910",
        &["--local", "--wait-timeout", "1ms"],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_beside_a_running_daemon_is_refused() {
    let lab = lab(&TWO_BOARDS).await;
    let running = Daemon::load(&lab.inventory).unwrap().start().await.unwrap();
    let socket = lab.dir.path().join("state/labd.sock");
    let started = Instant::now();
    for (job, extra) in [
        (single(0), &["-d", "lead", "--local"][..]),
        (two_roles(false, BRIEF, BRIEF), &["--local"][..]),
    ] {
        let (code, stdout, stderr) = run_job_as(&lab.paths(), &job, "77", extra).await;
        assert_eq!(code, 1, "{stdout}\n{stderr}");
        assert!(
            stderr.contains(&format!(
                "labd: --local: a labd daemon answers on {} and owns this inventory's consoles \
                 and boards; run the job without --local (the daemon schedules it on its \
                 boards), or stop the daemon first",
                socket.display()
            )),
            "{stderr}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(lab.pdu.events().is_empty(), "no board was switched");
    running.stop().await;
    // A socket file nobody listens on (a daemon that died) is no daemon.
    if !socket.exists() {
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    }
    let (code, stdout, stderr) =
        run_job_as(&lab.paths(), &single(0), "78", &["-d", "lead", "--local"]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.ends_with("job: Complete\n"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_timeout_in_process_names_the_holder() {
    let lab = lab(&TWO_BOARDS).await;
    let (holding, holder) = hold_lead_locally(&lab, 6).await;
    let started = Instant::now();
    let (code, stdout, stderr) = run_job_as(
        &lab.paths(),
        &single(0),
        "78",
        &["-d", "lead", "--local", "--wait-timeout", "1s"],
    )
    .await;
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "labd: board lead: not free within 1s: busy: [lead ({holder})]"
        )),
        "{stderr}"
    );
    let (code, stdout, stderr) = run_job_as(
        &lab.paths(),
        &two_roles(false, BRIEF, BRIEF),
        "900",
        &["--local", "--wait-timeout", "1s"],
    )
    .await;
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "labd run-job: the group cannot run: boards for the group: not free within 1s: \
             busy: [lead ({holder})]"
        )),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    let (code, stdout, stderr) = holding.await.unwrap();
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    // Only the holder switched a board.
    assert_eq!(outlet(&lab, 1), [true, false]);
    assert!(outlet(&lab, 2).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_timeout_through_the_daemon_names_the_holder() {
    let lab = lab(&TWO_BOARDS).await;
    let running = Daemon::load(&lab.inventory).unwrap().start().await.unwrap();
    let holding = spawn_run(&lab.paths(), single(6), "77", &["-d", "lead"]);
    // The daemon locks the board's file too (it runs in this process).
    let holder = format!("job 77 (pid {})", std::process::id());
    eventually("the daemon to lock lead for job 77", || {
        lock_text(&lab, "lead").trim() == holder
    })
    .await;
    let started = Instant::now();
    let (code, stdout, stderr) = run_job_as(
        &lab.paths(),
        &single(0),
        "78",
        &["-d", "lead", "--wait-timeout", "1s"],
    )
    .await;
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(!stderr.contains("no daemon"), "{stderr}");
    assert!(
        stderr.contains("labd run-job: waiting for lead: busy: [lead (job 77)]"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "labd: the daemon could not run the job: board lead: not free within 1s: busy: \
             [lead (job 77)]"
        ),
        "{stderr}"
    );
    let (code, stdout, stderr) = run_job_as(
        &lab.paths(),
        &two_roles(false, BRIEF, BRIEF),
        "900",
        &["--wait-timeout", "1s"],
    )
    .await;
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stderr.contains(
            "labd run-job: the group cannot run: boards for the group: not free within 1s: \
             busy: [lead (job 77)]"
        ),
        "{stderr}"
    );
    // A run in its own process that does not see this daemon (another socket: another
    // inventory copy with the same state_dir) still finds the board locked.
    let elsewhere = lab.dir.path().join("no-daemon.sock");
    let (code, stdout, stderr) = run_job_as(
        &lab.paths(),
        &single(0),
        "79",
        &[
            "-d",
            "lead",
            "--local",
            "--socket",
            elsewhere.to_str().unwrap(),
            "--wait-timeout",
            "1s",
        ],
    )
    .await;
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "labd: board lead: not free within 1s: busy: [lead ({holder})]"
        )),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    let (code, stdout, stderr) = holding.await.unwrap();
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(outlet(&lab, 1), [true, false]);
    assert!(outlet(&lab, 2).is_empty());
    running.stop().await;
}
