//! Power through the running daemon: the real `labd agent` and `labd power` binaries, a
//! simulated PDU reached over HTTP whose outlets really power simulated boards, and the
//! pdudaemon-compatible listener driven by the real curl.

mod daemon_support;

use std::time::{Duration, Instant};

use daemon_support::*;
use labd::control::frame::FrameKind;
use labd_hw_fixtures::simboard::{BoardScript, SimBoard, Stage};
use labd_hw_fixtures::simpdu::Faults;

const T: Duration = Duration::from_secs(30);

/// A board that boots U-Boot → Linux → a shell without login, quickly.
fn quick_board(dir: &std::path::Path, name: &str) -> SimBoard {
    let mut script = BoardScript::uboot_linux(name).fast();
    script.login = None;
    SimBoard::spawn(name, dir, script).unwrap()
}

/// Starts a shell loop on the board printing `tick` every 50 ms, and waits for it.
async fn ticking(op: &mut Operator) -> Instant {
    let since = Instant::now();
    op.type_line("while :; do echo tick; sleep 0.05; done")
        .await;
    op.wait_for(b"tick\r\ntick\r\ntick\r\n", since, T).await
}

/// What the operator saw around one power cycle (off at `off`, on again at `on`): output
/// stopped with the power, nothing came while it was off, and the board booted again from its
/// first line (the U-Boot banner) through the kernel log to its shell.
async fn assert_power_cycled(op: &Operator, off: Instant, on: Instant, name: &str) {
    let frames = op.frames();
    let before: Vec<_> = frames
        .iter()
        .filter(|s| s.kind == FrameKind::Data && s.at < off)
        .collect();
    let last = before.last().expect("output before the power-off");
    assert!(
        off.duration_since(last.at) < Duration::from_millis(500),
        "the board was printing until the power went off ({:?} before)",
        off.duration_since(last.at)
    );
    // Bytes already on their way when the outlet switched may still arrive just after.
    let during: Vec<u8> = frames
        .iter()
        .filter(|s| {
            s.kind == FrameKind::Data && s.at > off + Duration::from_millis(200) && s.at < on
        })
        .flat_map(|s| s.payload.clone())
        .collect();
    assert!(
        during.is_empty(),
        "silence while off ({:?} off): got {:?}",
        on - off,
        String::from_utf8_lossy(&during)
    );
    let banner = op.wait_for(b"U-Boot SPL 2024.01-sim", on, T).await;
    let after = op.data_since(on);
    let text = String::from_utf8_lossy(&after);
    assert!(
        text.starts_with("\r\nU-Boot SPL 2024.01-sim") || text.starts_with("U-Boot SPL"),
        "the first thing after power-on is the banner: {text:?}"
    );
    assert!(
        !text.contains("tick"),
        "nothing of the old session: {text:?}"
    );
    op.wait_for(b"Linux version 6.1.0-sim", banner, T).await;
    op.wait_for(format!("root@{name}:~# ").as_bytes(), banner, T)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cycling_a_board_through_labd_boots_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let board = quick_board(d, "b1");
    let pdu = HttpPdu::start("pdu1", 4).await;
    pdu.wire(1, &board);
    let listen = labd_hw_fixtures::free_tcp_port();
    let inv = worker(d)
        + &format!("[power]\npdudaemon_listen = \"127.0.0.1:{listen}\"\nreboot_delay = \"5s\"\n\n")
        + &pdu.section("retries = 1\nretry_delay = \"100ms\"\ntimeout = \"3s\"")
        + &device("b1", &board.tty_path(), Some(("pdu1", 1)));
    let agent = start_agent(d, &inv, &[]).await;
    let mut op = Operator::attach(&agent, "b1").await;

    // On through the daemon: the board boots on its console.
    let out = agent.labd(&["power", "b1", "on"]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout, "b1: on (read back)\n");
    assert!(
        stderr.contains("PDU pdu1 outlet 1 (device b1): on (attempt 1 of 2)"),
        "progress lines stream to stderr: {stderr}"
    );
    assert!(
        stderr.contains("on done, outlet on (read back)"),
        "{stderr}"
    );
    let t0 = Instant::now() - Duration::from_secs(60);
    op.wait_for(b"Linux version 6.1.0-sim", t0, T).await;
    op.wait_for(b"root@b1:~# ", t0, T).await;
    ticking(&mut op).await;

    // `labd power b1 reboot --delay 1`: off for one second, then a fresh boot.
    let before = Instant::now();
    let out = agent.labd(&["power", "b1", "reboot", "--delay", "1"]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout, "b1: on (read back)\n");
    for line in [
        "PDU pdu1 outlet 1 (device b1): reboot: off (attempt 1 of 2)",
        "PDU pdu1 outlet 1 (device b1): off for 1s",
        "PDU pdu1 outlet 1 (device b1): reboot: on (attempt 1 of 2)",
    ] {
        assert!(stderr.contains(line), "{line:?} in {stderr}");
    }
    let off = pdu
        .switched(1, false, before)
        .expect("outlet 1 switched off");
    let on = pdu.switched(1, true, before).expect("outlet 1 switched on");
    assert!(
        on - off >= Duration::from_millis(1000),
        "the reboot delay was honoured: {:?}",
        on - off
    );
    assert_power_cycled(&op, off, on, "b1").await;

    // The same through the pdudaemon-compatible listener, with the real curl, by PDU and
    // outlet as a LAVA device dictionary's `hard_reset_command` does.
    let mut op2 = Operator::attach(&agent, "b1").await;
    ticking(&mut op2).await;
    let before = Instant::now();
    let (head, body) = curl(&format!(
        "http://127.0.0.1:{listen}/power/control/reboot?hostname=pdu1&port=1&delay=1"
    ))
    .await;
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert_eq!(body, "OK - accepted request\n");
    let off = pdu.switched(1, false, before).expect("switched off");
    let on = pdu.switched(1, true, before).expect("switched on");
    assert!(on - off >= Duration::from_millis(1000), "{:?}", on - off);
    assert_power_cycled(&op2, off, on, "b1").await;

    // And by alias (the device name), answered only after the action completed.
    ticking(&mut op2).await;
    let before = Instant::now();
    let (head, body) = curl(&format!(
        "http://127.0.0.1:{listen}/power/control/reboot?alias=b1&delay=1"
    ))
    .await;
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert_eq!(body, "OK - accepted request\n");
    let on = pdu
        .switched(1, true, before)
        .expect("switched on before the reply");
    let off = pdu.switched(1, false, before).unwrap();
    assert_power_cycled(&op2, off, on, "b1").await;
    assert!(board.wait_for_stage(Stage::Shell, T));

    // The console's journal says who powered the board and how it ended.
    let journal = labd::console::journal::reader::JournalReader::open(
        &d.join("state").join("journal"),
        &labd::ids::DeviceName::new("b1").unwrap(),
        None,
    )
    .poll()
    .unwrap();
    let marks: Vec<String> = journal
        .iter()
        .filter(|r| r.kind == labd::console::journal::RecordKind::Marker)
        .map(|r| String::from_utf8_lossy(&r.data).into_owned())
        .collect();
    for m in [
        "power on requested by op:root",
        "power on done: outlet on",
        "power reboot requested by op:root",
        "power reboot done: outlet on",
    ] {
        assert!(marks.iter().any(|x| x == m), "{m:?} in {marks:?}");
    }

    // `labd power b1 status` reads the outlet through the queue; `labd status` shows it.
    let out = agent.labd(&["power", "b1", "status"]).await;
    assert_eq!(text(&out).0, "b1: on (read back)\n");
    let out = agent.labd(&["status"]).await;
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("    power:    on (read back), PDU pdu1 outlet 1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("pdu pdu1 (sim): healthy; outlets: 1 on"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_requests_for_one_pdu_queue_through_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let boards: Vec<SimBoard> = (1..=3)
        .map(|i| SimBoard::spawn(&format!("q{i}"), d, BoardScript::silent()).unwrap())
        .collect();
    let pdu = HttpPdu::start("pdu1", 4).await;
    for (i, b) in boards.iter().enumerate() {
        pdu.wire(i as u32 + 1, b);
    }
    // Every request (switch or read) takes 250 ms at the PDU.
    pdu.pdu.set_faults(Faults {
        latency: Duration::from_millis(250),
        ..Faults::default()
    });
    let listen = labd_hw_fixtures::free_tcp_port();
    let mut inv = worker(d)
        + &format!("[power]\npdudaemon_listen = \"127.0.0.1:{listen}\"\n\n")
        + &pdu.section("timeout = \"5s\"");
    for (i, b) in boards.iter().enumerate() {
        inv += &device(b.name(), &b.tty_path(), Some(("pdu1", i as u32 + 1)));
    }
    let agent = start_agent(d, &inv, &[]).await;

    // Two `labd power` processes and a pdudaemon client at once, each for another outlet of
    // the same PDU: the daemon runs them one after the other.
    let started = Instant::now();
    let url = format!("http://127.0.0.1:{listen}/power/control/on?hostname=pdu1&port=3");
    let (a, b, (head, _)) = tokio::join!(
        agent.labd(&["power", "q1", "on"]),
        agent.labd(&["power", "q2", "on"]),
        curl(&url),
    );
    let took = started.elapsed();
    assert!(
        a.status.success() && b.status.success(),
        "{:?} {:?}",
        text(&a),
        text(&b)
    );
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert_eq!(pdu.pdu.overlaps(), 0, "no two requests at the PDU at once");
    assert_eq!(pdu.pdu.max_in_flight(), 1);
    // Each is a switch and a read-back: 3 x 2 x 250 ms, strictly in sequence.
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    assert_eq!(pdu.pdu.requests(), 6);
    let ev = pdu.pdu.events();
    assert_eq!(ev.len(), 3);
    for w in ev.windows(2) {
        assert!(
            w[1].at - w[0].at >= Duration::from_millis(450),
            "switches one queue slot apart: {:?}",
            w[1].at - w[0].at
        );
    }
    for b in &boards {
        wait_until(T, "board on", || b.is_powered()).await;
    }

    // The contrast: `--direct` builds a power layer in each process, which does not queue
    // behind anybody: two at once do reach the PDU together.
    let (a, b) = tokio::join!(
        agent.labd(&["power", "--direct", "q1", "off"]),
        agent.labd(&["power", "--direct", "q2", "off"]),
    );
    assert!(a.status.success() && b.status.success());
    assert!(
        pdu.pdu.overlaps() > 0,
        "without the daemon the requests overlap"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_errors_reach_the_cli_and_status_shows_pdu_health() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let board = SimBoard::spawn("e1", d, BoardScript::silent()).unwrap();
    let other = SimBoard::spawn("e2", d, BoardScript::silent()).unwrap();
    let dead = HttpPdu::start("dead1", 2).await;
    dead.pdu.set_faults(Faults {
        dead: true,
        ..Faults::default()
    });
    let inv = worker(d)
        + "[power]\nunhealthy_after = 1\n\n"
        + &dead.section("retries = 1\nretry_delay = \"50ms\"\ntimeout = \"300ms\"")
        + &device("e1", &board.tty_path(), Some(("dead1", 1)))
        + &device("e2", &other.tty_path(), None);
    let agent = start_agent(d, &inv, &[]).await;

    let started = Instant::now();
    let out = agent.labd(&["power", "e1", "on"]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains(
            "labd: PDU dead1 outlet 1 (device e1): on failed on attempt 2 of 2: no answer within 300ms"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("PDU dead1 outlet 1 (device e1): retrying in"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    // Now unhealthy: status says so, and the next request fails after one attempt.
    let out = agent.labd(&["status"]).await;
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("pdu dead1 (sim): UNHEALTHY after 1 failures"),
        "{stdout}"
    );
    assert!(
        stdout.contains("CANNOT POWER: dead1 is unhealthy"),
        "{stdout}"
    );
    let out = agent.labd(&["power"]).await;
    let (stdout, _) = text(&out);
    assert!(
        stdout.starts_with(
            "e1                   PDU dead1 outlet 1           unknown; CANNOT POWER: dead1 is unhealthy after 1 failed requests in a row"
        ),
        "{stdout}"
    );
    let out = agent.labd(&["power", "e1", "off"]).await;
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("off failed on attempt 1 of 1 (PDU is unhealthy: one attempt only)"),
        "{stderr}"
    );

    // Requests the daemon refuses before queueing.
    let out = agent.labd(&["power", "e2", "on"]).await;
    assert!(
        text(&out)
            .1
            .contains("power: device e2 has no power control (no [device.power] in the inventory)"),
        "{:?}",
        text(&out)
    );
    let out = agent.labd(&["power", "nope", "on"]).await;
    assert!(
        text(&out)
            .1
            .contains("power: no device nope in the inventory"),
        "{:?}",
        text(&out)
    );
    let out = agent.labd(&["power", "e1", "dance"]).await;
    assert!(
        text(&out).1.contains("unknown power operation \"dance\""),
        "{:?}",
        text(&out)
    );
    // The daemon is still fine.
    assert_eq!(agent.status().await["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_the_power_queues_unless_power_changed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let b1 = SimBoard::spawn("r1", d, BoardScript::silent()).unwrap();
    let b2 = SimBoard::spawn("r2", d, BoardScript::silent()).unwrap();
    let pdu = HttpPdu::start("pdu1", 4).await;
    pdu.wire(1, &b1);
    pdu.wire(2, &b2);
    let listen = labd_hw_fixtures::free_tcp_port();
    let base = worker(d)
        + &format!("[power]\npdudaemon_listen = \"127.0.0.1:{listen}\"\n\n")
        + &pdu.section("");
    let inv = base.clone() + &device("r1", &b1.tty_path(), Some(("pdu1", 1)));
    let agent = start_agent(d, &inv, &[]).await;
    let out = agent.labd(&["power", "r1", "on"]).await;
    assert!(out.status.success());
    let state = |v: &serde_json::Value| v["power"]["pdus"][0]["outlets"][0]["state"].clone();
    assert_eq!(state(&agent.status().await), "on");

    // A reload that changes no power setting (a device without power added, lines moved):
    // the service is kept, with its last known states.
    let inv2 = "# moved\n\n".to_string()
        + &base
        + &device("r1", &b1.tty_path(), Some(("pdu1", 1)))
        + &device("r2", &b2.tty_path(), None);
    std::fs::write(&agent.inventory, inv2).unwrap();
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    let deadline = Instant::now() + T;
    while agent.status().await["consoles"].as_array().unwrap().len() != 2 {
        assert!(Instant::now() < deadline, "reload not applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state(&agent.status().await), "on", "last known state kept");
    assert!(!agent.log_text().contains("PDU services rebuilt"));

    // Power changed (r2 on outlet 2): new queues; the listener serves the new service.
    let inv3 = base.clone()
        + &device("r1", &b1.tty_path(), Some(("pdu1", 1)))
        + &device("r2", &b2.tty_path(), Some(("pdu1", 2)));
    std::fs::write(&agent.inventory, inv3).unwrap();
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    let deadline = Instant::now() + T;
    while !agent.log_text().contains("PDU services rebuilt") {
        assert!(Instant::now() < deadline, "power not rebuilt");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + T;
    loop {
        let (head, _) = curl(&format!(
            "http://127.0.0.1:{listen}/power/control/on?alias=r2"
        ))
        .await;
        if head.starts_with("HTTP/1.1 200 OK") {
            break;
        }
        assert!(Instant::now() < deadline, "{head}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_until(T, "r2 on", || b2.is_powered()).await;
    let out = agent.labd(&["power", "r2", "off"]).await;
    assert_eq!(text(&out).0, "r2: off (read back)\n");
    wait_until(T, "r2 off", || !b2.is_powered()).await;
}

/// A reboot sent to the old pdudaemon listener (legacy TCP: its task outlives that listener)
/// is still running when a SIGHUP adds a board; an "off" through the rebuilt power service
/// waits for it, so the PDU never sees two requests at once and the board stays off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reboot_from_before_a_reload_and_an_off_after_it_take_turns() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let b1 = SimBoard::spawn("s1", d, BoardScript::silent()).unwrap();
    let b2 = SimBoard::spawn("s2", d, BoardScript::silent()).unwrap();
    let pdu = HttpPdu::start("pdu1", 4).await;
    pdu.wire(1, &b1);
    pdu.wire(2, &b2);
    let listen = labd_hw_fixtures::free_tcp_port();
    let base = worker(d)
        + &format!("[power]\npdudaemon_listen = \"127.0.0.1:{listen}\"\n\n")
        + &pdu.section("timeout = \"5s\"");
    let inv = base.clone() + &device("s1", &b1.tty_path(), Some(("pdu1", 1)));
    let agent = start_agent(d, &inv, &[]).await;
    assert!(agent.labd(&["power", "s1", "on"]).await.status.success());
    pdu.pdu.set_faults(Faults {
        latency: Duration::from_millis(200),
        ..Faults::default()
    });
    let reboot = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", listen))
            .await
            .unwrap();
        s.write_all(b"pdu1 1 reboot 3").await.unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).await.unwrap();
        (r, Instant::now())
    });
    wait_until(T, "the reboot switched s1 off", || !b1.is_powered()).await;
    // A board added with power on another outlet: the power service is replaced.
    let inv2 = base
        + &device("s1", &b1.tty_path(), Some(("pdu1", 1)))
        + &device("s2", &b2.tty_path(), Some(("pdu1", 2)));
    std::fs::write(&agent.inventory, inv2).unwrap();
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    let deadline = Instant::now() + T;
    while !agent.log_text().contains("PDU services rebuilt") {
        assert!(Instant::now() < deadline, "power not rebuilt");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = agent.labd(&["power", "s1", "off"]).await;
    let off_done = Instant::now();
    assert!(out.status.success(), "{:?}", text(&out));
    let (reply, reboot_done) = reboot.await.unwrap();
    assert_eq!(reply, "ack\n");
    assert!(reboot_done < off_done, "the off waited for the reboot");
    assert_eq!(pdu.pdu.overlaps(), 0, "no two requests at the PDU at once");
    let last = pdu
        .pdu
        .events()
        .into_iter()
        .rfind(|e| e.outlet == 1)
        .unwrap();
    assert!(!last.on, "the last switch of outlet 1 was the off");
    assert!(!b1.is_powered(), "s1 stays off");
}

/// A pdudaemon request that takes long (`delay=`) holds up neither a reload that replaces the
/// listener nor the daemon's stop: it is answered 503 after the listener's 2 s grace, and its
/// reboot still completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pdudaemon_request_in_flight_holds_up_neither_reload_nor_stop() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let b1 = SimBoard::spawn("s1", d, BoardScript::silent()).unwrap();
    let pdu = HttpPdu::start("pdu1", 4).await;
    pdu.wire(1, &b1);
    let (listen, listen2) = (
        labd_hw_fixtures::free_tcp_port(),
        labd_hw_fixtures::free_tcp_port(),
    );
    let inv = |port: u16| {
        worker(d)
            + &format!("[power]\npdudaemon_listen = \"127.0.0.1:{port}\"\n\n")
            // `outlets`: the listener accepts outlet 2, which no device uses.
            + &pdu.section("outlets = 4")
            + &device("s1", &b1.tty_path(), Some(("pdu1", 1)))
    };
    let mut agent = start_agent(d, &inv(listen), &[]).await;
    let out = agent.labd(&["power", "s1", "on"]).await;
    assert!(out.status.success());

    // A reboot with a 30 s off time in flight, then a reload that moves the listener.
    let before = Instant::now();
    let slow = |port: u16| {
        tokio::spawn(async move {
            curl(&format!(
                "http://127.0.0.1:{port}/power/control/reboot?alias=s1&delay=30"
            ))
            .await
        })
    };
    let first = slow(listen);
    wait_until(T, "s1 off", || pdu.switched(1, false, before).is_some()).await;
    std::fs::write(&agent.inventory, inv(listen2)).unwrap();
    let sighup = Instant::now();
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    let (head, body) = first.await.unwrap();
    assert!(head.starts_with("HTTP/1.1 503"), "{head}\n{body}");
    let answered = sighup.elapsed();
    assert!(answered < Duration::from_secs(5), "{answered:?}");
    let deadline = Instant::now() + T;
    loop {
        let (head, _) = curl(&format!(
            "http://127.0.0.1:{listen2}/power/control/on?hostname=pdu1&port=2"
        ))
        .await;
        if head.starts_with("HTTP/1.1 200 OK") {
            break;
        }
        assert!(Instant::now() < deadline, "{head}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        sighup.elapsed() < Duration::from_secs(8),
        "the reload took {:?}",
        sighup.elapsed()
    );

    // Another one in flight, then SIGTERM: a clean exit within a few seconds.
    let second = slow(listen2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopping = Instant::now();
    let status = tokio::task::block_in_place(|| agent.child.stop(T)).unwrap();
    let took = stopping.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(6), "the stop took {took:?}");
    let (head, _) = second.await.unwrap();
    assert!(
        head.starts_with("HTTP/1.1 503") || head.is_empty(),
        "{head}"
    );
}
