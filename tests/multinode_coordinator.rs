//! `labd coordinator` (the real binary) under bad input and crashes: every malformed request
//! gets a nack or a closed connection while other groups keep working, a silent client blocks
//! nobody, and groups survive SIGKILL and restart. Where it helps, the same input is shown
//! against the real lava-coordinator, which blocks or dies.

mod multinode_support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use labd::multinode::client::message_from_pairs;
use labd::multinode::pyjson::Value;
use labd_hw_fixtures::peers::lava_coordinator::LavaCoordinator;
use multinode_support::*;

const NACK: &str = r#"00000014{"response": "nack"}"#;

fn base(client: &str, group: &str) -> String {
    format!(
        r#""port": 3079, "blocksize": 4096, "poll_delay": 1, "host": "127.0.0.1", "hostname": "w", "client_name": "{client}", "group_name": "{group}", "role": "r""#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slow_clients_block_nobody() {
    let coord = LabdCoordinator::start(&["--read-timeout", "2s"]);
    // One client connects and says nothing; another sends half a header.
    let mut silent = TcpStream::connect(coord.addr()).unwrap();
    let mut slow = TcpStream::connect(coord.addr()).unwrap();
    slow.write_all(b"0000").unwrap();
    let took = healthy_group(coord.port, "busy").await;
    assert!(
        took < Duration::from_secs(2),
        "group took {took:?} next to a silent client"
    );
    // After the read timeout both are closed without a reply.
    for s in [&mut silent, &mut slow] {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        let t = Instant::now();
        s.read_to_end(&mut buf).unwrap();
        assert!(buf.is_empty());
        assert!(t.elapsed() < Duration::from_secs(5));
    }
    let line = "Timed out after 2s waiting for a request from 127.0.0.1";
    assert!(coord.log_with(&[line]).contains(line));
}

/// The same silent client stops the single-threaded lava-coordinator entirely.
#[test]
fn a_silent_client_blocks_lava_coordinator() {
    let lava = LavaCoordinator::start().expect("lava-coordinator (run .ci/install-deps)");
    let silent = TcpStream::connect(lava.addr()).unwrap();
    let mut probe = TcpStream::connect(lava.addr()).unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let body = format!(
        r#"{{{}, "request": "lava_send", "group_size": 1}}"#,
        base("1", "g")
    );
    probe.write_all(&frame(&body)).unwrap();
    probe.shutdown(Shutdown::Write).unwrap();
    let mut buf = [0u8; 64];
    assert!(
        probe.read(&mut buf).is_err(),
        "lava-coordinator answered despite the silent client"
    );
    drop(silent);
    let mut rest = Vec::new();
    probe
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    probe.read_to_end(&mut rest).unwrap();
    assert_eq!(
        String::from_utf8(rest).unwrap(),
        r#"00000013{"response": "ack"}"#
    );
}

#[test]
fn malformed_frames_get_nack_or_a_closed_connection() {
    let coord = LabdCoordinator::start(&["--max-message", "65536"]);
    let a = coord.addr();
    // Header not hex, empty connection: closed without reply (lava: "Invalid message").
    assert_eq!(exchange_str(a, b"zzzzzzzz{}"), "");
    assert_eq!(exchange_str(a, b""), "");
    // Bad JSON, empty body: closed (lava: "JSON error").
    assert_eq!(exchange_str(a, &frame("{\"request\": ")), "");
    assert_eq!(exchange_str(a, b"00000000"), "");
    assert_eq!(exchange_str(a, &frame("\u{fffd}")), "");
    assert_eq!(exchange_str(a, b"00000002\xff\xfe"), "");
    // Header says more than arrives (and the client half-closes): closed.
    assert_eq!(exchange_str(a, b"00000100{}"), "");
    // Header says less than is sent: only the announced bytes are read (here not JSON).
    assert_eq!(exchange_str(a, b"00000003{\"request\": 1}"), "");
    // Oversized: nack without reading the body.
    assert_eq!(exchange_str(a, b"FFFFFFFF"), NACK);
    let mut big = format!("{:08X}", 70_000).into_bytes();
    big.extend(std::iter::repeat_n(b' ', 70_000));
    assert_eq!(exchange_str(a, &big), NACK);
    // Valid JSON, bad requests: nack.
    assert_eq!(exchange_str(a, &frame("{}")), NACK);
    assert_eq!(exchange_str(a, &frame("[1, 2]")), NACK);
    assert_eq!(exchange_str(a, &frame("null")), NACK);
    let lines = [
        "WARNING Invalid message: zzzzzzzz from 127.0.0.1",
        "WARNING JSON error for '{\"request\": '",
        "WARNING Invalid message: header announced 256 bytes, got 2 from 127.0.0.1",
        "exceeds the limit of 65536; nack",
    ];
    let log = coord.log_with(&lines);
    for line in lines {
        assert!(log.contains(line), "missing {line:?} in\n{log}");
    }
}

/// Missing fields that raise KeyError in lava-coordinator: the real one dies, labd nacks and
/// its other groups carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_fields_kill_lava_coordinator_but_not_labd() {
    let no_group = r#"{"request": "lava_send", "client_name": "1", "messageID": "x"}"#;
    let no_host = r#"{"request": "group_data", "client_name": "9", "group_name": "g", "role": "r", "group_size": 2}"#;

    let mut lava = LavaCoordinator::start().expect("lava-coordinator (run .ci/install-deps)");
    assert_eq!(exchange_str(lava.addr(), &frame(no_group)), "");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !lava.is_running(),
        "lava-coordinator survived a missing group_name"
    );

    let mut coord = LabdCoordinator::start(&[]);
    let s = settings(coord.port, Duration::from_millis(20));
    // A group that exists before the bad requests (any request with group_size creates it).
    let first = format!(
        r#"{{{}, "request": "lava_send", "messageID": "before", "message": {{}}, "group_size": 2}}"#,
        base("1", "other")
    );
    assert_eq!(
        exchange_str(coord.addr(), &frame(&first)),
        r#"00000013{"response": "ack"}"#
    );
    assert_eq!(exchange_str(coord.addr(), &frame(no_group)), NACK);
    assert_eq!(exchange_str(coord.addr(), &frame(no_host)), NACK);
    let unknown_role = format!(
        r#"{{{}, "request": "lava_wait_all", "messageID": "x", "waitrole": "nobody", "group_size": 1}}"#,
        base("5", "solo")
    );
    assert_eq!(exchange_str(coord.addr(), &frame(&unknown_role)), NACK);
    assert!(coord.is_running());
    // (A message reaches the clients registered when it was sent: ask as the sender.)
    let after = client(&s, "1", "other", "r", 2);
    let m = after.lava_wait("before").await.unwrap();
    assert_eq!(labd::multinode::pyjson::dumps(&m), r#"{"1": {}}"#);
    healthy_group(coord.port, "after").await;
    let line = "lava-coordinator would stop here (KeyError: 'group_name')";
    assert!(coord.log_with(&[line]).contains(line));
}

/// Groups survive SIGKILL: the journal is replayed at start-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_survive_a_crash_and_restart() {
    let mut coord = LabdCoordinator::start(&[]);
    let s = settings(coord.port, Duration::from_millis(20));
    let a = client(&s, "100", "durable", "server", 2);
    let b = client(&s, "101", "durable", "client", 2);
    let (ra, rb) = tokio::join!(a.group_data(), b.group_data());
    assert_eq!(ra.unwrap(), rb.unwrap());
    a.lava_send("ipaddr", message_from_pairs([("ipaddr", "10.1.2.3")]))
        .await
        .unwrap();
    // A sync half done: 100 has arrived, 101 not yet.
    let sync = format!(
        r#"{{{}, "request": "lava_sync", "messageID": "up"}}"#,
        base("100", "durable")
    );
    assert_eq!(
        exchange_str(coord.addr(), &frame(&sync)),
        r#"00000014{"response": "wait"}"#
    );

    coord.crash_and_restart();
    let line = "Recovered 1 groups from the journal";
    assert!(coord.log_with(&[line]).contains(line));

    let m = b.lava_wait("ipaddr").await.unwrap();
    assert_eq!(
        labd::multinode::pyjson::dumps(&m),
        r#"{"100": {"ipaddr": "10.1.2.3"}}"#
    );
    // The sync resumes where it was: 101's first call waits, then both are released.
    let (sa, sb) = tokio::join!(a.lava_sync("up"), b.lava_sync("up"));
    assert!(matches!(sa.unwrap(), Value::Str(s) if s == "up"));
    sb.unwrap();
    a.clear_group().await.unwrap();
    coord.crash_and_restart();
    b.clear_group().await.unwrap();
    // Deleted after the last clear_group; a later restart remembers that too.
    coord.crash_and_restart();
    let late = format!(
        r#"{{{}, "request": "lava_wait", "messageID": "ipaddr"}}"#,
        base("101", "durable")
    );
    assert_eq!(exchange_str(coord.addr(), &frame(&late)), NACK);
    let journal = coord.dir.path().join("state/coordinator.journal");
    assert_eq!(
        file_len(&journal),
        0,
        "the compacted journal holds no dead group"
    );
}

/// Many groups at once, with a flood of garbage on the side: every group completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_groups_in_parallel_with_garbage_alongside() {
    let coord = LabdCoordinator::start(&[]);
    let addr = coord.addr();
    let garbage = std::thread::spawn(move || {
        for i in 0..200 {
            let junk: &[u8] = match i % 4 {
                0 => b"nothex!!",
                1 => b"00000004{{{{",
                2 => b"FFFFFFFF",
                _ => b"00000002[]",
            };
            exchange(addr, junk);
        }
    });
    let mut tasks = Vec::new();
    for g in 0..20 {
        let port = coord.port;
        tasks.push(tokio::spawn(async move {
            healthy_group(port, &format!("group-{g}")).await
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    garbage.join().unwrap();
}
