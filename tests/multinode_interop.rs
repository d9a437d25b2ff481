//! Interoperability with the real LAVA 2023.01 programs:
//! (a) labd's client against Debian's lava-coordinator;
//! (b) lava-dispatcher's own Python Multi-Node code (MultinodeProtocol + SignalDirector)
//!     against `labd coordinator` and against lava-coordinator, and labd's DUT handling of the
//!     same console lines: the same console replies and results everywhere;
//! (c) the same raw frames (the captured transcript plus malformed input lava-coordinator
//!     survives) against both servers: byte-identical replies.

mod multinode_support;

use std::time::{Duration, Instant};

use labd::multinode::client::message_from_pairs;
use labd::multinode::dut::{self, DutFlow, find_request};
use labd::multinode::pyjson::dumps;
use labd::multinode::{ClientSettings, CoordinatorError};
use labd_hw_fixtures::peers::lava_coordinator::{LavaCoordinator, transcript};
use labd_hw_fixtures::peers::lava_dispatcher;
use multinode_support::*;

fn lava() -> LavaCoordinator {
    LavaCoordinator::start().expect("lava-coordinator (run .ci/install-deps)")
}

/// A three-node group through labd's client; returns everything each call returned.
async fn client_scenario(settings: ClientSettings, group: &str) -> Vec<String> {
    let s = client(&settings, "100", group, "server", 3);
    let c1 = client(&settings, "101", group, "client", 3);
    let c2 = client(&settings, "102", group, "client", 3);
    let (r0, r1, r2) = tokio::join!(s.group_data(), c1.group_data(), c2.group_data());
    let roles = r0.unwrap();
    assert_eq!(roles.len(), 3);
    let mut sorted = roles.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [("100", "server"), ("101", "client"), ("102", "client")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert_eq!(r1.unwrap(), roles);
    assert_eq!(r2.unwrap(), roles);
    let mut log = Vec::new();
    s.lava_send(
        "ipaddr",
        message_from_pairs([("ip", "10.0.0.1"), ("port", "5000")]),
    )
    .await
    .unwrap();
    log.push(dumps(&c1.lava_wait("ipaddr").await.unwrap()));
    log.push(dumps(&c2.lava_wait("ipaddr").await.unwrap()));
    // wait_all on an ID nobody sent: nack at once.
    log.push(format!(
        "{:?}",
        c1.lava_wait_all("nobody", None)
            .await
            .err()
            .map(|e| matches!(e, CoordinatorError::Nack { .. }))
    ));
    s.lava_send("ready", message_from_pairs([("r", "server")]))
        .await
        .unwrap();
    c1.lava_send("ready", message_from_pairs([("r", "client")]))
        .await
        .unwrap();
    let (w, _) = tokio::join!(s.lava_wait_all("ready", None), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        c2.lava_send("ready", message_from_pairs([("r", "client2")]))
            .await
            .unwrap();
    });
    log.push(dumps(&w.unwrap()));
    // With a role (LAVA's quirk: the requester's role is iterated).
    log.push(dumps(
        &c1.lava_wait_all("ready", Some("server")).await.unwrap(),
    ));
    let (a, b, c) = tokio::join!(
        s.lava_sync("done"),
        c1.lava_sync("done"),
        c2.lava_sync("done")
    );
    log.push(format!(
        "{} {} {}",
        dumps(&a.unwrap()),
        dumps(&b.unwrap()),
        dumps(&c.unwrap())
    ));
    for n in [&s, &c1, &c2] {
        n.clear_group().await.unwrap();
    }
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labd_client_against_lava_coordinator() {
    let lava = lava();
    // The client reads the same lava-coordinator.conf the daemon was started with.
    let mut settings = ClientSettings::from_lava_conf(&lava.conf_path()).unwrap();
    assert_eq!(
        (settings.host.as_str(), settings.port),
        ("127.0.0.1", lava.port())
    );
    settings.poll_delay = Duration::from_millis(50);
    let with_lava = client_scenario(settings, "interop-a").await;
    assert_eq!(
        with_lava,
        [
            r#"{"100": {"ip": "10.0.0.1", "port": "5000"}}"#,
            r#"{"100": {"ip": "10.0.0.1", "port": "5000"}}"#,
            "Some(true)",
            r#"{"100": {"r": "server"}, "101": {"r": "client"}, "102": {"r": "client2"}}"#,
            r#"{"100": {"r": "server"}, "101": {"r": "client"}, "102": {"r": "client2"}}"#,
            r#""done" "done" "done""#,
        ]
    );
    // The same calls against labd coordinator give the same answers.
    let labd = LabdCoordinator::start(&[]);
    let with_labd = client_scenario(settings_for(labd.port), "interop-a").await;
    assert_eq!(with_labd, with_lava);
}

fn settings_for(port: u16) -> ClientSettings {
    settings(port, Duration::from_millis(50))
}

/// Delayed start: the guest's job waits (waitrole) for the host's `lava_start`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_start_against_both_servers() {
    let lava = lava();
    let labd = LabdCoordinator::start(&[]);
    for port in [lava.port(), labd.port] {
        let s = settings_for(port);
        let host = client(&s, "200", "delayed", "host", 2);
        let guest = client(&s, "201", "delayed", "guest", 2);
        let (a, b) = tokio::join!(host.group_data(), guest.group_data());
        a.unwrap();
        b.unwrap();
        let t = Instant::now();
        let (started, _) = tokio::join!(guest.wait_for_start("host", None), async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            host.lava_start().await.unwrap();
        });
        started.unwrap();
        assert!(t.elapsed() >= Duration::from_millis(400));
        host.clear_group().await.unwrap();
        guest.clear_group().await.unwrap();
    }
}

#[tokio::test]
async fn unreachable_coordinator_and_timeouts_are_clear_errors() {
    let port = labd_hw_fixtures::free_tcp_port();
    let mut c = client(&settings_for(port), "300", "nowhere", "r", 2);
    c.set_system_timeout(Duration::from_millis(1500));
    let t = Instant::now();
    let e = c.group_data().await.unwrap_err();
    let waited = t.elapsed();
    assert!(
        matches!(e, CoordinatorError::Unreachable { attempts, .. } if attempts >= 2),
        "{e}"
    );
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    let text = e.to_string();
    assert!(
        text.starts_with(&format!(
            "coordinator 127.0.0.1:{port}: group_data of group nowhere: coordinator unreachable: "
        )),
        "{text}"
    );

    let labd = LabdCoordinator::start(&[]);
    let mut c = client(&settings_for(labd.port), "301", "lonely", "r", 2);
    c.set_system_timeout(Duration::from_millis(600));
    let e = c.group_data().await.unwrap_err();
    assert!(matches!(e, CoordinatorError::Timeout { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("group_data of group lonely: timed out after"),
        "{e}"
    );
}

/// The console scenario: node lines ordered by syncs so every reply is deterministic.
fn scenario(group: &str) -> serde_json::Value {
    let l = |s: &str| format!("<LAVA_MULTI_NODE> <LAVA_{s}>");
    serde_json::json!({
        "group": group,
        "timeout": 30,
        "nodes": [
            {"job_id": "100", "role": "server", "lines": [
                l("SEND ipaddr ip=10.0.0.1 port=5000"), l("SEND ready role=server"), l("SYNC s1"),
                l("SYNC s2"), l("WAIT_ALL ready"), l("SYNC s3"), l("SYNC done")]},
            {"job_id": "101", "role": "client", "lines": [
                l("WAIT ipaddr"), l("SYNC s1"), l("SEND ready role=client note=two  words"),
                l("SYNC s2"), l("SYNC s3"), l("WAIT_ALL ready server"), l("SYNC done")]},
            {"job_id": "102", "role": "client", "lines": [
                l("WAIT ipaddr"), l("SYNC s1"), l("SYNC s2"), l("SEND ready role=client x=1=2"),
                l("WAIT_ALL ready"), l("SYNC s3"), l("WAIT_ALL never"), l("SYNC done")]},
        ]
    })
}

/// The same scenario through labd: CoordinatorClient + dut::handle per node.
async fn labd_dut_run(port: u16, sc: &serde_json::Value) -> Vec<serde_json::Value> {
    let nodes = sc["nodes"].as_array().unwrap().clone();
    let size = nodes.len() as u32;
    let group = sc["group"].as_str().unwrap().to_string();
    let mut tasks = Vec::new();
    for n in nodes {
        let group = group.clone();
        tasks.push(tokio::spawn(async move {
            let job = n["job_id"].as_str().unwrap();
            let c = client(
                &settings(port, Duration::from_millis(100)),
                job,
                &group,
                n["role"].as_str().unwrap(),
                size,
            );
            c.group_data().await.unwrap();
            let mut steps = Vec::new();
            for line in n["lines"].as_array().unwrap() {
                let line = line.as_str().unwrap();
                let req = find_request(line).unwrap().request;
                let out = dut::handle(&req, &c, "\n").await;
                let mut step = serde_json::json!({"line": line});
                step["ret"] = serde_json::json!(out.flow == DutFlow::Continue);
                if let Some(r) = &out.result {
                    step["result"] =
                        serde_json::json!([r.test_case_id, if r.pass { "pass" } else { "fail" }]);
                }
                // What LAVA's sendline(reply); sendline("\n") writes with this fake connection.
                step["console"] = serde_json::json!(
                    out.reply_line
                        .map(|l| format!("{l}\n\n\n"))
                        .unwrap_or_default()
                );
                let stop = out.flow != DutFlow::Continue;
                steps.push(step);
                if stop {
                    break;
                }
            }
            c.clear_group().await.unwrap();
            serde_json::json!({"job_id": job, "steps": steps})
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn python_run(port: u16, sc: &serde_json::Value) -> Vec<serde_json::Value> {
    let out = lava_dispatcher::run_driver("127.0.0.1", port, 0.1, &sc.to_string())
        .expect("lava-dispatcher's Python code (run .ci/install-deps)");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lava_dispatcher_python_client_against_labd_coordinator() {
    let labd = LabdCoordinator::start(&[]);
    let lava = lava();
    let sc = scenario("py-interop");
    let port = labd.port;
    let py_labd = tokio::task::spawn_blocking(move || python_run(port, &scenario("py-interop")))
        .await
        .unwrap();
    let lport = lava.port();
    let py_lava = tokio::task::spawn_blocking(move || python_run(lport, &scenario("py-interop")))
        .await
        .unwrap();
    assert_eq!(
        py_labd, py_lava,
        "LAVA's client sees the same from both servers"
    );
    let ours = labd_dut_run(labd.port, &sc).await;
    assert_eq!(
        ours, py_labd,
        "labd's DUT handling writes what LAVA's writes"
    );
    // Spot-check the bytes LAVA wrote.
    let n101 = &py_lava[1]["steps"];
    assert_eq!(
        n101[0]["console"],
        "<LAVA_WAIT_COMPLETE 100:ip=10.0.0.1 100:port=5000>\n\n\n"
    );
    assert_eq!(n101[1]["console"], "<LAVA_SYNC_COMPLETE>\n\n\n");
    assert_eq!(
        n101[5]["console"],
        "<LAVA_WAIT_ALL_COMPLETE 100:role=server 101:role=client 101:note=two  words 102:role=client>\n\n\n"
    );
    assert_eq!(
        py_lava[2]["steps"][6]["console"],
        "<LAVA_WAIT_ALL_COMPLETE nack>\n\n\n"
    );
    assert_eq!(
        py_lava[0]["steps"][4]["result"],
        serde_json::json!(["multinode-wait_all-ready", "pass"])
    );
    let line = "Clearing group data for py-interop";
    assert!(labd.log_with(&[line]).contains(line));
}

/// Requests (bodies) that lava-coordinator survives, well-formed or not, in an order that
/// exercises the quirks; plus raw frames it closes without a reply.
fn script() -> Vec<Vec<u8>> {
    let b = |client: &str, role: &str, extra: &str| {
        frame(&format!(
            r#"{{"port": 3079, "blocksize": 4096, "poll_delay": 1, "host": "127.0.0.1", "hostname": "w", "client_name": "{client}", "group_name": "diff", "role": "{role}", {extra}}}"#
        ))
    };
    let mut v: Vec<Vec<u8>> = transcript()
        .unwrap()
        .into_iter()
        .map(|(req, _)| req.into_bytes())
        .collect();
    v.extend([
        frame("{}"),
        frame("[1, 2]"),
        frame("\"no such key\""),
        frame(r#"{"request": "group_data"}"#),
        frame(r#"{"request": "group_data", "client_name": "1", "group_name": "z"}"#),
        frame(r#"{"request": "group_data", "client_name": "1", "group_name": "z", "group_size": 0}"#),
        b("1", "a", r#""request": "group_data", "group_size": 3"#),
        b("2", "b", r#""request": "dance""#),
        b("3", "b", r#""request": "complete""#),
        b("1", "a", r#""request": "group_data""#),
        b("2", "b", r#""request": "lava_wait_all", "messageID": "go", "waitrole": "a""#),
        b("1", "a", r#""request": "lava_send", "messageID": "go", "message": null"#),
        b("2", "b", r#""request": "lava_wait_all", "messageID": "go", "waitrole": "a""#),
        b("1", "a", r#""request": "lava_wait_all", "messageID": "go""#),
        b("1", "a", r#""request": "lava_send""#),
        b("2", "b", r#""request": "lava_wait""#),
        b("3", "b", r#""request": "lava_send", "messageID": "u", "message": {"k": "caf\u00e9 \ud83d\ude00", "n": [1.5, 1e100, null, true]}"#),
        b("1", "a", r#""request": "lava_wait", "messageID": "u""#),
        b("1", "a", r#""request": "lava_sync", "messageID": "s", "message": {"x": 1}"#),
        b("2", "b", r#""request": "lava_sync", "messageID": "s""#),
        b("3", "b", r#""request": "lava_sync", "messageID": "s""#),
        b("1", "a", r#""request": "lava_sync", "messageID": "s""#),
        b("2", "b", r#""request": "lava_sync", "messageID": "s""#),
        b("1", "a", r#""request": "lava_sync", "messageID": "s""#),
        b("3", "b", r#""request": "lava_sync", "messageID": "s""#),
        b("1", "a", r#""request": "aggregate", "bundle": "b1", "sub_id": "9.0""#),
        b("2", "b", r#""request": "aggregate", "bundle": "b2", "sub_id": "9.1""#),
        b("3", "b", r#""request": "aggregate", "bundle": "b3", "sub_id": "9.2""#),
        b("1", "a", r#""request": "aggregate", "bundle": "b1", "sub_id": "9.0""#),
        b("1", "a", r#""request": "aggregate", "bundle": "b1", "sub_id": "9.0""#),
        b("1", "a", r#""request": "aggregate", "bundle": "b1", "sub_id": "9.0""#),
        b("1", "a", r#""request": "aggregate", "sub_id": "9.0""#),
        b("1", "a", r#""request": "clear_group", "group_size": 3"#),
        b("1", "a", r#""request": "clear_group", "group_size": 3"#),
        b("1", "a", r#""request": "clear_group", "group_size": 3"#),
        b("2", "b", r#""request": "lava_wait", "messageID": "u""#),
        b("2", "b", r#""request": "clear_group", "group_size": 1"#),
        b"nothex!!{}".to_vec(),
        b"00000005{\"a\":".to_vec(),
        b"0000000A{\"a\": 1}  ".to_vec(),
    ]);
    v
}

#[test]
fn same_frames_same_bytes_from_both_servers() {
    let lava = lava();
    let labd = LabdCoordinator::start(&[]);
    let want = transcript().unwrap();
    let mut n_transcript = 0;
    for (i, req) in script().into_iter().enumerate() {
        let from_lava = exchange_str(lava.addr(), &req);
        let from_labd = exchange_str(labd.addr(), &req);
        assert_eq!(
            from_labd,
            from_lava,
            "request {i}: {}",
            String::from_utf8_lossy(&req)
        );
        if let Some((_, reply)) = want.get(i) {
            assert_eq!(&from_lava, reply, "transcript step {i}");
            n_transcript += 1;
        }
    }
    assert_eq!(n_transcript, 18, "every captured connection");
}

#[test]
fn console_requests_need_a_live_coordinator_only_for_known_names() {
    // An unknown API name ends the test shell with a pass, as LAVA's SignalDirector does,
    // without any coordinator call.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = client(
        &settings_for(labd_hw_fixtures::free_tcp_port()),
        "1",
        "g",
        "r",
        1,
    );
    let req = find_request("<LAVA_MULTI_NODE> <LAVA_DANCE now>")
        .unwrap()
        .request;
    let out = rt.block_on(dut::handle(&req, &c, "\n"));
    assert_eq!(out.flow, DutFlow::StopTestShell);
    assert_eq!(out.result.unwrap().test_case_id, "multinode-dance-now");
    let req = find_request("<LAVA_MULTI_NODE> <LAVA_SYNC a b>")
        .unwrap()
        .request;
    let out = rt.block_on(dut::handle(&req, &c, "\n"));
    assert_eq!(out.flow, DutFlow::FailJob);
    assert!(out.result.is_none());
}
