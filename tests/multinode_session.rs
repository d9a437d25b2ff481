//! A job's Multi-Node session (`labd::multinode::session`) with the seed group's roles — two
//! servers, a client that is the master of a slave board, the slave — against Debian's real
//! lava-coordinator and against `labd coordinator`: registration, the `lava_ms_*` handshake,
//! console requests answered with the exact reply lines, interactive steps, delayed start,
//! clear at the end. Both servers must give the same lines.

mod multinode_support;

use std::collections::BTreeMap;
use std::time::Duration;

use labd::multinode::ClientSettings;
use labd::multinode::dut::DutFlow;
use labd::multinode::session::{
    DelayedStart, MultinodeSession, SessionParams, parse_wait_complete,
};
use labd_hw_fixtures::peers::lava_coordinator::LavaCoordinator;
use multinode_support::*;

fn params(job: &str, group: &str, role: &str) -> SessionParams {
    SessionParams {
        job_id: job.into(),
        target_group: group.into(),
        role: role.into(),
        group_size: 4,
        hostname: "worker1".into(),
        api_timeout: Some(Duration::from_secs(20)),
        system_timeout: None,
        delayed_start: None,
        slave_data: None,
    }
}

fn line(o: labd::multinode::dut::DutOutcome) -> String {
    assert_eq!(o.flow, DutFlow::Continue, "{:?}", o.error);
    o.reply_line.unwrap_or_default()
}

async fn server(s: &mut MultinodeSession) -> Vec<String> {
    s.set_up().await.unwrap();
    let out = vec![line(s.handle("SYNC", "booted").await)];
    s.finalise().await.unwrap();
    out
}

/// Runs the seed group; returns every console reply line per job.
async fn seed_group(settings: ClientSettings, group: &str) -> BTreeMap<&'static str, Vec<String>> {
    let mk = |p: SessionParams| MultinodeSession::new(settings.clone(), p);
    let mut s0 = mk(params("10", group, "server"));
    let mut s1 = mk(params("11", group, "server"));
    let mut master = mk(params("12", group, "client"));
    let mut slave = mk(SessionParams {
        slave_data: Some(vec![
            ("device".into(), "slave01".into()),
            ("console".into(), "localhost:7103".into()),
            ("kernel".into(), "http://images/zImage".into()),
        ]),
        ..params("13", group, "slave")
    });
    let master_job = async {
        master.set_up().await.unwrap();
        let mut out = vec![line(master.handle("WAIT", "lava_ms_slave_data").await)];
        out.push(line(master.handle("SEND", "lava_ms_ready").await));
        out.push(line(master.handle("WAIT", "lava_ms_boot").await));
        // Here the master's test definition boots the slave.
        out.push(line(master.handle("SYNC", "booted").await));
        master.finalise().await.unwrap();
        out
    };
    let slave_job = async {
        slave.set_up().await.unwrap();
        let out = vec![line(slave.handle("SYNC", "booted").await)];
        slave.finalise().await.unwrap();
        out
    };
    let (a, b, m, sl) = tokio::join!(server(&mut s0), server(&mut s1), master_job, slave_job);
    BTreeMap::from([("server0", a), ("server1", b), ("master", m), ("slave", sl)])
}

fn expected_seed() -> BTreeMap<&'static str, Vec<String>> {
    let sync = "<LAVA_SYNC_COMPLETE>".to_string();
    BTreeMap::from([
        ("server0", vec![sync.clone()]),
        ("server1", vec![sync.clone()]),
        (
            "master",
            vec![
                "<LAVA_WAIT_COMPLETE 13:device=slave01 13:console=localhost:7103 13:kernel=http://images/zImage>".into(),
                String::new(),
                "<LAVA_WAIT_COMPLETE>".into(),
                sync.clone(),
            ],
        ),
        ("slave", vec![sync]),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_group_with_slave_handshake_against_both_coordinators() {
    let lava = LavaCoordinator::start().expect("lava-coordinator (run .ci/install-deps)");
    let labd = LabdCoordinator::start(&[]);
    let poll = Duration::from_millis(100);
    let real = seed_group(settings(lava.port(), poll), "seed-lava").await;
    let ours = seed_group(settings(labd.port, poll), "seed-labd").await;
    assert_eq!(real, expected_seed());
    assert_eq!(ours, real);
    let data = parse_wait_complete(&real["master"][0]);
    assert_eq!(data["13"]["kernel"], "http://images/zImage");
    // Every node cleared: the group is gone from labd's coordinator.
    let line = "Clearing group data for seed-labd";
    assert!(labd.log_with(&[line]).contains(line));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_steps_and_delayed_start() {
    let labd = LabdCoordinator::start(&[]);
    let st = settings(labd.port, Duration::from_millis(100));
    let two = |job: &str, role: &str| SessionParams {
        group_size: 2,
        ..params(job, "inter", role)
    };
    let mut host = MultinodeSession::new(st.clone(), two("1", "host"));
    let mut guest = MultinodeSession::new(
        st.clone(),
        SessionParams {
            delayed_start: Some(DelayedStart {
                expect_role: "host".into(),
                timeout: Some(Duration::from_secs(20)),
            }),
            ..two("2", "guest")
        },
    );
    let host_job = async {
        host.set_up().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The guest is still held by its delayed start until lava_start.
        host.interactive("lava-send", "lava_start").await.unwrap();
        host.interactive("lava-send", "ipv4 ipaddr=10.0.0.5 port=22")
            .await
            .unwrap();
        let all = host
            .interactive("lava-wait-all", "ack role=guest")
            .await
            .unwrap();
        host.finalise().await.unwrap();
        all
    };
    let guest_job = async {
        let t = std::time::Instant::now();
        guest.set_up().await.unwrap();
        let waited = t.elapsed();
        let got = guest.interactive("lava-wait", "ipv4").await.unwrap();
        guest.interactive("lava-send", "ack ok=yes").await.unwrap();
        let bad = guest
            .interactive("lava-wait-all", "ack group=x")
            .await
            .unwrap_err()
            .to_string();
        guest.finalise().await.unwrap();
        (waited, got, bad)
    };
    let (all, (waited, got, bad)) = tokio::join!(host_job, guest_job);
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    assert_eq!(
        got,
        BTreeMap::from([
            ("ipaddr".to_string(), "10.0.0.5".to_string()),
            ("port".to_string(), "22".to_string())
        ])
    );
    assert_eq!(all, BTreeMap::from([("ok".to_string(), "yes".to_string())]));
    assert_eq!(
        bad,
        "Multi-Node request from the DUT \"lava-wait-all: ack group=x\": lava-wait-all 2nd param must be role=<rolename>, got: group=x"
    );
}
