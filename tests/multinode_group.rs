//! `labd run-job` on a Multi-Node submission, end to end: the real binary, an inventory of
//! simulated boards (pseudo-terminals) powered by a simulated PDU over its HTTP API, the
//! group of `examples/jobs/demo-group.yaml` (two servers of one type, a client of another
//! type that is the master of a slave board, the slave booted by the master's test
//! definition after the `lava_ms_*` handshake), and labd's own in-process coordinator.

mod group_support;

use std::time::{Duration, Instant};

use group_support::{lab, run_job, table, two_roles};

/// The leader fails: `lava-test-raise` ends its job Incomplete.
const LEADER_FAILS: &str =
    "          - lava-test-case started --shell true\n          - lava-test-raise leader-broke";

const GROUP: &str = include_str!("../examples/jobs/demo-group.yaml");

/// (name, device_type, tags) of the boards; outlet n+1 powers board n.
const BOARDS: [(&str, &str, &str); 4] = [
    ("srv-a", "labd-sim", "[\"usb-otg\"]"),
    ("srv-b", "labd-sim", "[\"usb-otg\", \"spare\"]"),
    ("master", "labd-sim-master", "[]"),
    ("slave", "labd-sim-slave", "[]"),
];

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

const TWO_BOARDS: [(&str, &str, &str); 2] = [
    ("lead", "labd-sim", "[]"),
    ("follow", "labd-sim-master", "[]"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_essential_role_failing_cancels_a_waiting_peer_at_once() {
    let lab = lab(&TWO_BOARDS).await;
    // Without the essential rule the follower would wait for its 5-minute protocol timeout.
    let job = two_roles(
        true,
        LEADER_FAILS,
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
    let job = two_roles(
        false,
        LEADER_FAILS,
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

/// Whatever happens to the group's future (its caller gone, a panic above it), its boards
/// stay reserved until every sub-job has ended and switched its board off: the sub-jobs are
/// canceled, and only then can another job have the boards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_dropped_while_running_keeps_its_boards_until_its_sub_jobs_ended() {
    use labd::ids::DeviceName;
    use labd::multinode::group::{GroupOptions, run_group};
    use std::sync::{Arc, Mutex};

    let lab = lab(&TWO_BOARDS).await;
    let inv = Arc::new(labd::inventory::Inventory::load(&lab.inventory).unwrap());
    let busy = "          - sleep 30\n          - lava-test-case slept --shell true";
    let group = two_roles(false, busy, busy);
    let mut opts = GroupOptions::new("900");
    opts.poll_delay = Duration::from_millis(100);
    let reservations = opts.reservations.clone();
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let s = seen.clone();
    opts.lines = Some(Arc::new(move |_role: &str, id: &str, line: &str| {
        s.lock().unwrap().push((id.to_string(), line.to_string()));
    }));
    let run = tokio::spawn(async move { run_group(inv, &group, opts).await });
    let deadline = Instant::now() + Duration::from_secs(120);
    while !["900", "901"].iter().all(|id| {
        seen.lock()
            .unwrap()
            .iter()
            .any(|(j, l)| j == id && l.contains("STARTRUN"))
    }) {
        assert!(
            Instant::now() < deadline,
            "the sub-jobs never ran their tests"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    run.abort();
    assert!(run.await.unwrap_err().is_cancelled());
    let (lead, follow) = (
        DeviceName::new("lead").unwrap(),
        DeviceName::new("follow").unwrap(),
    );
    assert!(
        reservations.is_taken(&lead) && reservations.is_taken(&follow),
        "the boards were released while the sub-jobs still ran"
    );
    let canceled_at = Instant::now();
    while reservations.is_taken(&lead) || reservations.is_taken(&follow) {
        assert!(
            canceled_at.elapsed() < Duration::from_secs(25),
            "the sub-jobs were not canceled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // By the time the boards are free, both sub-jobs ended and switched their boards off.
    let events = lab.pdu.events();
    for outlet in [1, 2] {
        let last = events.iter().rev().find(|e| e.outlet == outlet);
        assert!(last.is_some_and(|e| !e.on), "outlet {outlet}: {events:?}");
    }
    for id in ["900", "901"] {
        let log = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(j, _)| j == id)
            .map(|(_, l)| l.clone())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(log.contains("JobCanceled"), "{id}: {log}");
    }
}
