//! The daemon as users meet it: the real `labd agent` binary with simulated boards, operators
//! attaching over the control socket and with `labd console` in a terminal, the telnet listener
//! with a real `telnet` client, `labd log` and `labd status`, SIGHUP reload, SIGTERM shutdown,
//! hostile control clients, and `labd demo`.

mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use labd::control::frame::{self, FrameKind};
use labd::control::{AttachRequest, ControlClient};
use labd_hw_fixtures::simboard::{BoardScript, SimBoard};
use nix::sys::signal::Signal;
use support::*;

const T: Duration = Duration::from_secs(20);

fn attach_req(device: &str) -> AttachRequest {
    AttachRequest {
        device: device.into(),
        read_only: false,
        force: false,
        replay: 0,
    }
}

/// Reads data frames until `n` bytes arrived.
async fn read_frames(
    r: &mut labd::control::client::AttachReader,
    n: usize,
) -> (Vec<u8>, Vec<(FrameKind, Vec<u8>)>) {
    let mut data = Vec::new();
    let mut other = Vec::new();
    while data.len() < n {
        match tokio::time::timeout(T, r.next()).await {
            Ok(Ok(Some(f))) if f.kind == FrameKind::Data => data.extend_from_slice(&f.payload),
            Ok(Ok(Some(f))) => other.push((f.kind, f.payload.to_vec())),
            other_result => panic!(
                "attach stream ended after {} bytes: {other_result:?}",
                data.len()
            ),
        }
    }
    (data, other)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_serves_operators_exact_bytes_and_stops_cleanly_on_sigterm() {
    let dir = temp();
    let board = SimBoard::spawn("d1", dir.path(), BoardScript::silent()).unwrap();
    board.power_on();
    let metrics_port = labd_hw_fixtures::free_tcp_port();
    let inv = inventory(&dir.path().join("state"), &[("d1", board.tty_path(), None)])
        + &format!("[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n");
    let mut agent = Agent::start(dir.path(), &inv).await;
    let st = agent.status().await;
    assert_eq!(st.worker, "w1");
    assert_eq!(st.consoles.len(), 1);
    eventually(T, "console online", || {
        board.input().is_empty()
            && std::fs::read_to_string(dir.path().join("agent.log"))
                .unwrap_or_default()
                .contains("console open")
    })
    .await;

    // Two operators attached; a third connection attaches and never reads its socket.
    let client = agent.client();
    let (reply, mut alice) = client.attach(&attach_req("d1")).await.unwrap();
    assert_eq!(reply.client, "op:root");
    assert!(reply.online);
    let (_, mut bob) = client.attach(&attach_req("d1")).await.unwrap();
    let mut stalled = std::os::unix::net::UnixStream::connect(&agent.socket).unwrap();
    stalled
        .write_all(b"{\"request\":\"attach\",\"device\":\"d1\",\"replay\":0}\n")
        .unwrap();

    // Every byte value, both ways, through the daemon and the socket.
    let data = every_byte();
    alice.writer.input(&data).await.unwrap();
    let b = board.control();
    let want = data.clone();
    assert!(blocking(move || b.wait_for_input(&want, T)).await);
    assert_eq!(board.input(), data);
    board.write_raw(&data);
    for s in [&mut alice, &mut bob] {
        let (got, _) = read_frames(&mut s.reader, data.len()).await;
        assert_eq!(got, data);
    }

    // A flood larger than a session's 1 MiB budget: the stalled connection drops its share,
    // the two readers (reading concurrently) get every byte, in order. Paced at ~8 MB/s so a
    // busy test machine does not make the readers themselves fall 1 MiB behind.
    let mut flood = Vec::new();
    for i in 0..70000u32 {
        flood.extend_from_slice(format!("F{i:07} abcdefghijklmnopqrstuvwxyz\r\n").as_bytes());
    }
    let b = board.control();
    let f2 = flood.clone();
    let writer = std::thread::spawn(move || {
        for c in f2.chunks(16384) {
            assert_eq!(b.write_raw(c), c.len());
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    let ((got_a, other_a), (got_b, other_b)) = tokio::join!(
        read_frames(&mut alice.reader, flood.len()),
        read_frames(&mut bob.reader, flood.len())
    );
    assert!(
        other_a.is_empty() && other_b.is_empty(),
        "{other_a:?} {other_b:?}"
    );
    assert!(got_a == flood, "alice got the flood intact");
    assert!(got_b == flood, "bob got the flood intact");
    writer.join().unwrap();

    // The stalled client is still connected and the daemon counted what it dropped.
    let metrics_like = agent.status().await;
    assert_eq!(metrics_like.consoles[0].clients, 3);
    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut head = [0u8; 64];
    let n = stalled.read(&mut head).unwrap();
    assert!(
        head[..n].starts_with(b"{\"ok\":true") || head[..n].starts_with(b"{\""),
        "{:?}",
        String::from_utf8_lossy(&head[..n])
    );

    // `labd status` tells the same story.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_labd"))
        .args(["status", "-c"])
        .arg(&agent.inventory)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("labd 0.1.0 on worker w1"), "{text}");
    assert!(text.contains("d1") && text.contains("online"), "{text}");
    assert!(text.contains("clients:  3"), "{text}");

    // The metrics endpoint shows the console.
    let metrics = blocking(move || {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", metrics_port)).unwrap();
        c.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        c.read_to_string(&mut body).unwrap();
        body
    })
    .await;
    assert!(
        metrics.contains("labd_console_online{device=\"d1\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("labd_console_clients{device=\"d1\"} 3"),
        "{metrics}"
    );
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{device=\"d1\"}}")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in {metrics}"))
    };
    assert_eq!(
        value("labd_console_bytes_in_total"),
        (data.len() + flood.len()) as u64
    );
    assert_eq!(value("labd_console_bytes_out_total"), data.len() as u64);
    assert!(
        value("labd_console_client_dropped_bytes_total") > 0,
        "the stalled client dropped"
    );

    // SIGTERM: clean exit, sessions ended, socket gone, journal closed with a marker.
    alice.writer.detach().await.unwrap();
    let status = blocking(move || {
        let s = agent.child.stop(Duration::from_secs(10));
        (s, agent)
    })
    .await;
    let (status, agent) = status;
    assert!(
        status.unwrap().success(),
        "exit status {status:?}:\n{}",
        agent.log_text()
    );
    assert!(!agent.socket.exists(), "the control socket is removed");
    let got = tokio::time::timeout(T, bob.reader.next()).await.unwrap();
    assert!(matches!(got, Ok(None)), "sessions end at shutdown: {got:?}");
    let m = markers(&dir.path().join("state"), "d1");
    assert_eq!(
        m.last().map(String::as_str),
        Some("console stopped"),
        "{m:?}"
    );
    assert!(
        m.contains(&"operator attached: op:root (read-write)".to_string()),
        "{m:?}"
    );
    assert!(agent.log_text().contains("labd agent stopped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labd_console_in_a_terminal_replays_types_and_detaches() {
    let dir = temp();
    let board = SimBoard::spawn("d1", dir.path(), BoardScript::uboot_linux("d1").fast()).unwrap();
    let inv = inventory(&dir.path().join("state"), &[("d1", board.tty_path(), None)]);
    let agent = Agent::start(dir.path(), &inv).await;
    board.power_on();
    let b = board.control();
    assert!(blocking(move || b.wait_for_stage(labd_hw_fixtures::simboard::Stage::Login, T)).await);

    let mut term = OnPty::spawn(
        std::process::Command::new(env!("CARGO_BIN_EXE_labd"))
            .args(["console", "d1", "-c"])
            .arg(&agent.inventory),
    );
    let mut term = blocking(move || {
        // The scrollback replay shows the boot that already happened.
        term.expect(b"attached to d1 as op:root", T);
        term.expect(b"Linux version 6.1.0-sim", T);
        term.expect(b"d1 login: ", T);
        term.write(b"root\r");
        term.expect(b"Password: ", T);
        term.write(b"root\r");
        term.expect(b"root@d1:~# ", T);
        term.write(b"echo labd-$((40+2))\r");
        term.expect(b"labd-42\r\n", T);
        // `~` in the middle of a line is typed; at a line start it is an escape.
        term.write(b"echo a~b\r");
        term.expect(b"a~b\r\n", T);
        term.write(b"~?");
        term.expect(b"~. detach", T);
        term.write(b"~.");
        term.expect(b"[labd: detached]", T);
        term
    })
    .await;
    let status = blocking(move || term.wait(T)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(contains(&board.input(), b"echo a~b\r"));
    assert!(
        !contains(&board.input(), b"~."),
        "escapes never reach the board"
    );
    drop(agent);
}

/// `labd console d1` with piped stdin: types `input` after a moment, detaches at its end.
fn run_console(
    inv: &std::path::Path,
    extra: &[&str],
    input: &'static [u8],
) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_labd"));
    cmd.args(["console", "d1", "--no-replay", "-c"])
        .arg(inv)
        .args(extra);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        stdin.write_all(input).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    });
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_are_read_only_while_a_job_holds_the_console_unless_forced() {
    // The job runner lives inside the daemon: run the daemon in-process and attach with the
    // real `labd console` binary.
    let dir = temp();
    let board = SimBoard::spawn("d1", dir.path(), BoardScript::silent()).unwrap();
    board.power_on();
    let state = dir.path().join("state");
    let inv_path = dir.path().join("inventory.toml");
    std::fs::write(
        &inv_path,
        inventory(&state, &[("d1", board.tty_path(), None)]),
    )
    .unwrap();
    let running = labd::daemon::Daemon::load(&inv_path)
        .unwrap()
        .start()
        .await
        .unwrap();
    let console = running.services().consoles.get("d1").unwrap();
    eventually(T, "online", || console.status().online).await;
    let lease = console
        .acquire_writer(labd::ids::ClientId("job:42".into()))
        .await
        .unwrap();

    let p = inv_path.clone();
    let out = blocking(move || run_console(&p, &[], b"refused")).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("held by job:42 (read-only unless --force)"),
        "{err}"
    );
    assert!(
        err.contains("console of d1 is held by job:42; use --force to write anyway; input ignored"),
        "{err}"
    );

    let p = inv_path.clone();
    let out = blocking(move || run_console(&p, &["--read-only"], b"nope")).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("read-only session: input ignored"), "{err}");

    let p = inv_path.clone();
    let out = blocking(move || run_console(&p, &["--force"], b"forced!")).await;
    assert!(out.status.success());
    let b = board.control();
    assert!(blocking(move || b.wait_for_input(b"forced!", T)).await);
    lease.send(&b"job"[..]).await.unwrap();
    let b = board.control();
    assert!(blocking(move || b.wait_for_input(b"forced!job", T)).await);
    assert_eq!(
        board.input(),
        b"forced!job",
        "refused input never reached the board"
    );

    console.flush_journal().await;
    let inputs: Vec<_> = journal(&state, "d1")
        .into_iter()
        .filter(|r| r.kind == labd::console::journal::RecordKind::Input)
        .map(|r| (r.who.unwrap_or_default(), r.data))
        .collect();
    assert_eq!(
        inputs,
        vec![
            ("op:root(forced)".to_string(), b"forced!".to_vec()),
            ("job:42".to_string(), b"job".to_vec())
        ]
    );
    drop(lease);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telnet_listener_speaks_like_ser2net_and_survives_replug() {
    let dir = temp();
    let board = SimBoard::spawn("d1", dir.path(), BoardScript::silent()).unwrap();
    board.power_on();
    let port = labd_hw_fixtures::free_tcp_port();
    let inv = inventory(
        &dir.path().join("state"),
        &[("d1", board.tty_path(), Some(port))],
    );
    let agent = Agent::start(dir.path(), &inv).await;
    let st = agent.status().await;
    assert_eq!(
        st.consoles[0].listen.as_deref(),
        Some(format!("127.0.0.1:{port}").as_str())
    );

    // Exactly ser2net's greeting, then 0xFF doubled out and undoubled in.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut greeting = [0u8; 18];
    tokio::time::timeout(T, s.read_exact(&mut greeting))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(greeting, labd::console::telnet::SER2NET_GREETING);
    // (The greeting is written once the client is subscribed.)
    board.write_raw(b"a\xffb");
    let mut got = Vec::new();
    while got.len() < 4 {
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(T, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"a\xff\xffb");
    s.write_all(b"x\xff\xffy\xff\xfb\x2c").await.unwrap();
    let b = board.control();
    assert!(blocking(move || b.wait_for_input(b"x\xffy", T)).await);
    // WILL COM-PORT on a plain telnet port: DONT, as ser2net answers.
    let mut ans = [0u8; 3];
    tokio::time::timeout(T, s.read_exact(&mut ans))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ans, [0xff, 0xfe, 0x2c]);

    // The board's cable is pulled and plugged back: the telnet client stays connected.
    let b = board.control();
    blocking(move || b.unplug()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    board.replug().unwrap();
    eventually(T, "console back", || {
        std::fs::read_to_string(&agent.log)
            .unwrap_or_default()
            .contains("console back")
    })
    .await;
    board.write_raw(b"after replug");
    let mut got = Vec::new();
    while !contains(&got, b"after replug") {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(T, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "the telnet client was disconnected");
        got.extend_from_slice(&buf[..n]);
    }

    // A real telnet client, as LAVA's connection_command runs it.
    let telnet = labd_hw_fixtures::require_program("telnet").unwrap();
    let mut t =
        OnPty::spawn(std::process::Command::new(telnet).args(["127.0.0.1", &port.to_string()]));
    let t = blocking(move || {
        t.expect(b"Escape character is", T);
        t
    })
    .await;
    // "Escape character is" comes with the TCP connection, before the listener has
    // subscribed the client to the console: output written before that is not this client's
    // to see, so the board says hello until the client shows it.
    let mut t = t;
    let deadline = Instant::now() + T;
    loop {
        board.write_raw(b"hello from the board\r\n");
        let (back, seen) = blocking(move || {
            let seen = t.try_expect(b"hello from the board", Duration::from_millis(500));
            (t, seen)
        })
        .await;
        t = back;
        if seen {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the telnet client never showed the board's output"
        );
    }
    let mut t = blocking(move || {
        t.write(b"typed in telnet\r");
        t
    })
    .await;
    let b = board.control();
    assert!(blocking(move || b.wait_for_input(b"typed in telnet\r", T)).await);
    let _ = t.child.stop(Duration::from_secs(2));
    drop(agent);
}

/// The agent's resident memory in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telnet_client_flooding_requests_without_reading_is_disconnected() {
    use tokio::io::AsyncWriteExt;
    let dir = temp();
    let board = SimBoard::spawn("d1", dir.path(), BoardScript::silent()).unwrap();
    board.power_on();
    let port = labd_hw_fixtures::free_tcp_port();
    let inv = inventory(
        &dir.path().join("state"),
        &[("d1", board.tty_path(), Some(port))],
    );
    let agent = Agent::start(dir.path(), &inv).await;
    let before = rss_kib(agent.child.id());
    // `IAC WILL 200` over and over (each answered with `IAC DONT 200`), never reading.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let chunk: Vec<u8> = [0xffu8, 0xfb, 200].repeat(10_000);
    let limit: usize = 256 << 20;
    let mut sent = 0usize;
    let outcome = tokio::time::timeout(Duration::from_secs(40), async {
        while sent < limit {
            match s.write_all(&chunk).await {
                Ok(()) => sent += chunk.len(),
                Err(e) => return Some(e),
            }
        }
        None
    })
    .await;
    let after = rss_kib(agent.child.id());
    eprintln!("sent {} MiB; agent RSS {before} -> {after} KiB", sent >> 20);
    assert!(
        matches!(outcome, Ok(Some(_))),
        "not disconnected after {} MiB of requests",
        sent >> 20
    );
    assert!(
        agent
            .log_text()
            .contains("sends negotiation requests without reading the answers"),
        "{}",
        agent.log_text()
    );
    assert!(
        after < before + 32 * 1024,
        "RSS grew from {before} to {after} KiB"
    );
    // The listener still serves others.
    let mut t = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut greeting = [0u8; 18];
    use tokio::io::AsyncReadExt;
    tokio::time::timeout(T, t.read_exact(&mut greeting))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(greeting, labd::console::telnet::SER2NET_GREETING);
    t.shutdown().await.unwrap();
}

/// Connects to the telnet port and checks that what `board` prints arrives there.
async fn telnet_serves(port: u16, board: &SimBoard, text: &str) {
    use tokio::io::AsyncReadExt;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("port {port}: {e}"));
    let mut greeting = [0u8; 18];
    tokio::time::timeout(T, s.read_exact(&mut greeting))
        .await
        .unwrap()
        .unwrap();
    // (The greeting is written once the client is subscribed.)
    board.write_raw(text.as_bytes());
    let mut got = Vec::new();
    while !contains(&got, text.as_bytes()) {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(T, s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("port {port} did not get {text:?}: {got:?}"))
            .unwrap();
        assert!(n > 0, "port {port} closed");
        got.extend_from_slice(&buf[..n]);
    }
}

/// Waits until the status shows these telnet addresses (device, port; `None`: not listening).
async fn wait_listen(agent: &Agent, want: &[(&str, Option<u16>)]) -> labd::control::StatusReply {
    let deadline = std::time::Instant::now() + T;
    loop {
        let st = agent.status().await;
        let ok = want.iter().all(|(d, p)| {
            st.consoles
                .iter()
                .any(|c| c.device.as_str() == *d && c.listen == p.map(|p| format!("127.0.0.1:{p}")))
        });
        if ok {
            return st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "wanted {want:?}: {:?}",
            st.consoles
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reload_moves_telnet_ports_between_devices() {
    let dir = temp();
    let a = SimBoard::spawn("pa", dir.path(), BoardScript::silent()).unwrap();
    let b = SimBoard::spawn("pb", dir.path(), BoardScript::silent()).unwrap();
    let c = SimBoard::spawn("pc", dir.path(), BoardScript::silent()).unwrap();
    for x in [&a, &b, &c] {
        x.power_on();
    }
    let state = dir.path().join("state");
    let (p1, p2) = (
        labd_hw_fixtures::free_tcp_port(),
        labd_hw_fixtures::free_tcp_port(),
    );
    let inv = inventory(
        &state,
        &[
            ("pa", a.tty_path(), Some(p1)),
            ("pb", b.tty_path(), Some(p2)),
        ],
    );
    let agent = Agent::start(dir.path(), &inv).await;
    wait_listen(&agent, &[("pa", Some(p1)), ("pb", Some(p2))]).await;
    eventually(T, "both online", || {
        agent.log_text().matches("console open").count() >= 2
    })
    .await;
    telnet_serves(p1, &a, "a on p1").await;
    telnet_serves(p2, &b, "b on p2").await;

    // The two devices swap ports.
    let swapped = inventory(
        &state,
        &[
            ("pa", a.tty_path(), Some(p2)),
            ("pb", b.tty_path(), Some(p1)),
        ],
    );
    std::fs::write(&agent.inventory, swapped).unwrap();
    agent.signal(Signal::SIGHUP);
    wait_listen(&agent, &[("pa", Some(p2)), ("pb", Some(p1))]).await;
    telnet_serves(p2, &a, "a on p2").await;
    telnet_serves(p1, &b, "b on p1").await;

    // pb is renamed pc (on another board) and keeps port p1.
    let renamed = inventory(
        &state,
        &[
            ("pa", a.tty_path(), Some(p2)),
            ("pc", c.tty_path(), Some(p1)),
        ],
    );
    std::fs::write(&agent.inventory, renamed).unwrap();
    agent.signal(Signal::SIGHUP);
    wait_listen(&agent, &[("pa", Some(p2)), ("pc", Some(p1))]).await;
    eventually(T, "pc online", || {
        agent.log_text().matches("console open").count() >= 3
    })
    .await;
    telnet_serves(p1, &c, "c on p1").await;
    telnet_serves(p2, &a, "a still on p2").await;

    // A port taken by another program: status says why; the next reload binds it once free.
    let p3 = labd_hw_fixtures::free_tcp_port();
    let squatter = std::net::TcpListener::bind(("127.0.0.1", p3)).unwrap();
    let taken = inventory(
        &state,
        &[
            ("pa", a.tty_path(), Some(p3)),
            ("pc", c.tty_path(), Some(p1)),
        ],
    );
    std::fs::write(&agent.inventory, &taken).unwrap();
    agent.signal(Signal::SIGHUP);
    let deadline = std::time::Instant::now() + T;
    loop {
        let st = agent.status().await;
        let pa = st
            .consoles
            .iter()
            .find(|c| c.device.as_str() == "pa")
            .unwrap();
        if let Some(e) = &pa.listen_error {
            assert!(e.contains(&p3.to_string()), "{e}");
            assert_eq!(pa.listen, None);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{:?}", st.consoles);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(squatter);
    agent.signal(Signal::SIGHUP);
    let st = wait_listen(&agent, &[("pa", Some(p3)), ("pc", Some(p1))]).await;
    assert!(st.consoles.iter().all(|c| c.listen_error.is_none()));
    telnet_serves(p3, &a, "a on p3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reload_keeps_unchanged_consoles_and_their_sessions() {
    let dir = temp();
    let a = SimBoard::spawn("ra", dir.path(), BoardScript::silent()).unwrap();
    let b = SimBoard::spawn("rb", dir.path(), BoardScript::silent()).unwrap();
    let c = SimBoard::spawn("rc", dir.path(), BoardScript::silent()).unwrap();
    for x in [&a, &b, &c] {
        x.power_on();
    }
    let state = dir.path().join("state");
    let inv = inventory(
        &state,
        &[("ra", a.tty_path(), None), ("rb", b.tty_path(), None)],
    );
    let agent = Agent::start(dir.path(), &inv).await;
    let client = agent.client();
    let (_, mut sa) = client.attach(&attach_req("ra")).await.unwrap();
    let (_, mut sb) = client.attach(&attach_req("rb")).await.unwrap();
    eventually(T, "both online", || {
        agent.log_text().matches("console open").count() >= 2
    })
    .await;

    // Remove rb, add rc, keep ra.
    let inv2 = inventory(
        &state,
        &[("ra", a.tty_path(), None), ("rc", c.tty_path(), None)],
    );
    std::fs::write(&agent.inventory, inv2).unwrap();
    agent.signal(Signal::SIGHUP);
    let deadline = std::time::Instant::now() + T;
    loop {
        let names: Vec<String> = agent
            .status()
            .await
            .consoles
            .into_iter()
            .map(|s| s.device.to_string())
            .collect();
        if names == ["ra", "rc"] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after reload: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ra's session survived and still streams; rb's ended.
    a.write_raw(b"still here");
    let (got, _) = read_frames(&mut sa.reader, 10).await;
    assert_eq!(got, b"still here");
    let end = tokio::time::timeout(T, async {
        loop {
            match sb.reader.next().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .unwrap();
    assert!(matches!(end, Ok(None)));
    let (_, mut sc) = client.attach(&attach_req("rc")).await.unwrap();
    while !agent
        .status()
        .await
        .consoles
        .iter()
        .any(|s| s.device.as_str() == "rc" && s.online)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.write_raw(b"new one");
    let (got, _) = read_frames(&mut sc.reader, 7).await;
    assert_eq!(got, b"new one");
    // The journal is written in batches: wait for what must be there.
    eventually(T, "rb's journal closed", || {
        markers(&state, "rb").last().map(String::as_str) == Some("console stopped")
    })
    .await;
    eventually(T, "ra's journal written", || {
        markers(&state, "ra")
            .iter()
            .any(|m| m.starts_with("operator attached"))
    })
    .await;
    let ma = markers(&state, "ra");
    assert_eq!(
        ma.iter()
            .filter(|m| m.starts_with("console started"))
            .count(),
        1,
        "ra was not restarted: {ma:?}"
    );

    // A broken inventory is refused; the daemon keeps running the old one.
    std::fs::write(&agent.inventory, "[worker]\nname = \"w1\"\nstate_dir = 5\n").unwrap();
    agent.signal(Signal::SIGHUP);
    eventually(T, "reload refused", || {
        agent.log_text().contains("reload refused")
    })
    .await;
    assert!(
        agent.log_text().contains("inventory.toml:3"),
        "{}",
        agent.log_text()
    );
    assert_eq!(agent.status().await.consoles.len(), 2);
    a.write_raw(b"!");
    let (got, _) = read_frames(&mut sa.reader, 1).await;
    assert_eq!(got, b"!");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labd_log_reads_the_journal_without_the_daemon() {
    let dir = temp();
    let board = SimBoard::spawn("d1", dir.path(), BoardScript::silent()).unwrap();
    board.power_on();
    let state = dir.path().join("state");
    let inv = inventory(&state, &[("d1", board.tty_path(), None)]);
    let agent = Agent::start(dir.path(), &inv).await;
    let (_, mut s) = agent.client().attach(&attach_req("d1")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    board.write_raw(b"first line\r\nsecond \xff\r\n");
    read_frames(&mut s.reader, 22).await;
    s.writer.input(b"typed\r").await.unwrap();
    let b = board.control();
    assert!(blocking(move || b.wait_for_input(b"typed\r", T)).await);
    let inv_path = agent.inventory.clone();

    // --follow prints what arrives while it runs.
    let follow_out = dir.path().join("follow.out");
    let mut follow = labd_hw_fixtures::ChildGuard::new(
        "labd log --follow",
        std::process::Command::new(env!("CARGO_BIN_EXE_labd"))
            .args(["log", "d1", "--follow", "-c"])
            .arg(&inv_path)
            .stdout(std::fs::File::create(&follow_out).unwrap())
            .spawn()
            .unwrap(),
    );
    eventually(T, "follow prints the past", || {
        contains(
            &std::fs::read(&follow_out).unwrap_or_default(),
            b"second \xff",
        )
    })
    .await;
    board.write_raw(b"live line\r\n");
    eventually(T, "follow prints new output", || {
        contains(
            &std::fs::read(&follow_out).unwrap_or_default(),
            b"live line\r\n",
        )
    })
    .await;
    follow.stop(Duration::from_secs(2));

    drop(s);
    drop(agent); // SIGTERM: the journal is complete on disk

    let labd = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_labd"))
            .args(args)
            .arg("-c")
            .arg(&inv_path)
            .output()
            .unwrap()
    };
    let out = labd(&["log", "d1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        contains(&out.stdout, b"first line\r\nsecond \xff\r\n"),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(contains(&out.stdout, b"] console stopped\n"));
    assert!(!contains(&out.stdout, b"typed"));
    let out = labd(&["log", "d1", "--input"]);
    assert!(
        contains(&out.stdout, b"input from op:root: \"typed\\r\""),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = labd(&["log", "d1", "--records"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.ends_with(" out \"first line\\r\\nsecond \\xff\\r\\n\"")),
        "{text}"
    );
    let out = labd(&["log", "d1", "--since", "2999-01-01T00:00:00Z"]);
    assert!(out.status.success() && out.stdout.is_empty());
    let out = labd(&["log", "nosuch"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no device nosuch"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_control_requests_are_refused_without_harm() {
    let dir = temp();
    let board = SimBoard::spawn("d1", dir.path(), BoardScript::silent()).unwrap();
    board.power_on();
    let inv = inventory(&dir.path().join("state"), &[("d1", board.tty_path(), None)]);
    let agent = Agent::start(dir.path(), &inv).await;
    let ask = |bytes: Vec<u8>| {
        let sock = agent.socket.clone();
        async move {
            blocking(move || {
                let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
                let _ = s.write_all(&bytes);
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                out
            })
            .await
        }
    };
    for (bytes, expect) in [
        (b"hello\n".to_vec(), "not JSON"),
        (b"{}\n".to_vec(), "string \\\"request\\\" field"),
        (
            b"{\"request\":\"launch-missiles\"}\n".to_vec(),
            "unknown request \\\"launch-missiles\\\"; known: attach, ping, power, run-job, status",
        ),
        (
            b"{\"request\":\"attach\"}\n".to_vec(),
            "missing field `device`",
        ),
        (
            b"{\"request\":\"attach\",\"device\":\"nope\"}\n".to_vec(),
            "no console for device \\\"nope\\\"",
        ),
        (vec![b'x'; 200_000], "longer than 65536 bytes"),
        (b"\xff\xfe\xfd\n".to_vec(), "not JSON"),
    ] {
        let reply = ask(bytes).await;
        assert!(
            reply.starts_with("{\"error\":") || reply.contains("\"ok\":false"),
            "{reply}"
        );
        assert!(reply.contains(expect), "expected {expect:?} in {reply}");
    }
    // A bad frame inside an attach session closes that session only.
    let mut s = std::os::unix::net::UnixStream::connect(&agent.socket).unwrap();
    s.write_all(b"{\"request\":\"attach\",\"device\":\"d1\",\"replay\":0}\n\x63\0\0\0\0")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let nl = all.iter().position(|&b| b == b'\n').unwrap();
    let mut rest = BytesMut::from(&all[nl + 1..]);
    let mut notices = Vec::new();
    while let Ok(Some(f)) = frame::decode(&mut rest) {
        if f.kind == FrameKind::Notice {
            notices.push(String::from_utf8_lossy(&f.payload).into_owned());
        }
    }
    assert!(
        notices.iter().any(|n| n.contains("unknown frame kind 99")),
        "{notices:?}"
    );
    // A client that connects and says nothing does not block others.
    let _silent = std::os::unix::net::UnixStream::connect(&agent.socket).unwrap();
    let st = agent.status().await;
    assert_eq!(st.consoles.len(), 1);
    let v = ControlClient::new(&agent.socket)
        .request(serde_json::json!({"request": "ping"}))
        .await
        .unwrap();
    assert_eq!(v["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_a_simulated_lab_that_can_be_attached() {
    let dir = temp();
    let state = dir.path().join("demo");
    let out_path = dir.path().join("demo.out");
    let mut demo = labd_hw_fixtures::ChildGuard::new(
        "labd demo",
        std::process::Command::new(env!("CARGO_BIN_EXE_labd"))
            .args(["demo", "--boards", "2", "--exit-after", "25s", "--dir"])
            .arg(&state)
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(dir.path().join("demo.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    let out = || std::fs::read_to_string(&out_path).unwrap_or_default();
    eventually(Duration::from_secs(30), "both boards booted", || {
        let o = out();
        o.contains("[demo-bbb01] [    0.000000] Linux version 6.1.0-sim")
            && o.contains("[demo-rpi02] [    0.000000] Linux version 6.1.0-sim")
    })
    .await;
    let o = out();
    // Two demo boards plus the four boards of the Multi-Node group.
    assert!(o.contains("labd demo: 6 simulated boards"), "{o}");
    assert!(
        o.contains(&format!(
            "console demo-bbb01 -c {}",
            state.join("inventory.toml").display()
        )),
        "{o}"
    );
    assert!(
        o.contains("[demo-bbb01] Hit any key to stop autoboot"),
        "{o}"
    );

    // Attach to it as the instructions say.
    let (reply, mut s) = ControlClient::new(state.join("labd.sock"))
        .attach(&AttachRequest {
            device: "demo-bbb01".into(),
            read_only: false,
            force: false,
            replay: 65536,
        })
        .await
        .unwrap();
    assert!(reply.online);
    let mut seen = Vec::new();
    while !contains(&seen, b"demo-bbb01 login: ") {
        let f = tokio::time::timeout(T, s.reader.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.extend_from_slice(&f.payload);
    }
    demo.stop(Duration::from_secs(10));
    assert!(out().contains("labd demo: stopped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_socket_is_0660_with_the_configured_group() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = temp();
    let board = SimBoard::spawn("d1", dir.path(), BoardScript::silent()).unwrap();
    let state = dir.path().join("state");
    let base = inventory(&state, &[("d1", board.tty_path(), None)]);
    let grouped = base.replacen("[worker]\n", "[worker]\nsocket_group = \"dialout\"\n", 1);
    let agent = Agent::start(dir.path(), &grouped).await;
    let meta = std::fs::metadata(&agent.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let dialout = nix::unistd::Group::from_name("dialout").unwrap().unwrap();
    assert_eq!(meta.gid(), dialout.gid.as_raw());
    drop(agent);

    // A group that does not exist: the daemon refuses to start and says why.
    let bad = base.replacen(
        "[worker]\n",
        "[worker]\nsocket_group = \"no-such-group\"\n",
        1,
    );
    let inv = dir.path().join("bad.toml");
    std::fs::write(&inv, bad).unwrap();
    let out = blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_labd"))
            .args(["agent", "-c"])
            .arg(&inv)
            .output()
            .unwrap()
    })
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("socket_group \"no-such-group\" does not exist on this machine"),
        "{err}"
    );

    // A bad inventory: refused with file, line and key, before anything starts.
    let bad = base.replace("tty = ", "baud = 12345\ntty = ");
    let inv = dir.path().join("bad2.toml");
    std::fs::write(&inv, bad).unwrap();
    let out = blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_labd"))
            .args(["agent", "-c"])
            .arg(&inv)
            .output()
            .unwrap()
    })
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad2.toml:9:"), "{err}");
    assert!(err.contains("device.console.baud"), "{err}");
}
