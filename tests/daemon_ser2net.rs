//! A board exported through the real ser2net 4.x, configured by `labd ser2net-config`, and the
//! real `labd agent` whose console reaches the board through it: the board boots and its shell
//! answers an operator; RFC 2217 sets a reloaded baud on the board's tty; 0xFF passes
//! through intact both ways; after a USB replug of the board, discovery (which follows the
//! tty ser2net exports) makes the console reconnect through ser2net at once.

mod daemon_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daemon_support::*;
use labd::control::frame::FrameKind;
use labd_hw_fixtures::peers::ser2net::wait_listening;
use labd_hw_fixtures::simboard::{BoardScript, SimBoard};
use labd_hw_fixtures::{ChildGuard, require_program};

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_console_reaches_a_board_through_real_ser2net() {
    let ser2net = require_program("ser2net").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut script = BoardScript::uboot_linux("s1").fast();
    script.login = None;
    let board = SimBoard::spawn("s1", d, script).unwrap();
    let port = labd_hw_fixtures::free_tcp_port();
    let inv = worker(d)
        + &format!(
            "[[device]]\nname = \"s1\"\ndevice_type = \"sim\"\n\
             [device.console]\nser2net = \"127.0.0.1:{port}\"\nrfc2217 = true\nbaud = 57600\n\
             [device.ser2net]\nport = {port}\naddress = \"127.0.0.1\"\nprotocol = \"rfc2217\"\n\
             tty = \"{}\"\n",
            board.tty_path().display()
        );
    let inventory = d.join("inventory.toml");
    std::fs::write(&inventory, &inv).unwrap();

    // ser2net's configuration, as an admin would make it.
    let conf = d.join("ser2net.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_labd"))
        .args(["ser2net-config", "-c"])
        .arg(&inventory)
        .arg("-o")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = std::fs::read_to_string(&conf).unwrap();
    assert!(
        yaml.contains(&format!(
            "connection: &s1\n    accepter: telnet(rfc2217),tcp,127.0.0.1,{port}\n"
        )) && yaml.contains(&format!(
            "connector: serialdev,{},57600n81,local",
            board.tty_path().display()
        )),
        "{yaml}"
    );
    let log = d.join("ser2net.log");
    let child = Command::new(ser2net)
        .args(["-n", "-u", "-c"])
        .arg(&conf)
        .arg("-P")
        .arg(d.join("ser2net.pid"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(d.join("ser2net.err")).unwrap())
        .spawn()
        .unwrap();
    let _ser2net = ChildGuard::new("ser2net", child);
    wait_listening(port, Duration::from_secs(10)).unwrap();

    let agent = start_agent(d, &inv, &[]).await;
    let mut op = Operator::attach(&agent, "s1").await;
    wait_until(T, "console online through ser2net", || {
        agent.log_text().contains("console open")
    })
    .await;
    wait_until(T, "ser2net opened the tty at 57600", || {
        board.tty_baud() == Some(57600)
    })
    .await;
    // RFC 2217: a reload changes the console's baud; labd asks ser2net, which sets it on the
    // board's tty (its own configuration still says 57600).
    std::fs::write(&inventory, inv.replace("baud = 57600", "baud = 38400")).unwrap();
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    wait_until(T, "baud set through RFC 2217", || {
        board.tty_baud() == Some(38400)
    })
    .await;
    wait_until(T, "console back after the reload", || {
        agent.log_text().contains("console back")
    })
    .await;

    // The board boots; its shell answers the operator.
    let t0 = Instant::now();
    board.power_on();
    op.wait_for(b"U-Boot", t0, T).await;
    op.wait_for(b"root@s1:~# ", t0, T).await;
    let since = Instant::now();
    op.type_line("echo through-$((6*7))").await;
    op.wait_for(b"through-42\r\n", since, T).await;

    // 0xFF both ways, undoubled: labd and ser2net each escape and unescape it.
    let since = Instant::now();
    assert_eq!(board.write_raw(b"<\xff\xff\xfe>"), 5);
    op.wait_for(b"<\xff\xff\xfe>", since, T).await;
    board.clear_input();
    op.writer.input(b"\xff\x15").await.unwrap();
    assert!(board.wait_for_input(b"\xff\x15", T));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(board.input(), b"\xff\x15");

    // Replug: the console loses the board, and reconnects through ser2net as soon as the
    // tty is back (discovery follows the exported tty), not on its own backoff.
    let unplugged = Instant::now();
    board.unplug();
    let lost = op.wait_kind(FrameKind::Lost, unplugged, T).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let reopens = || {
        agent
            .log_text()
            .matches("adapter present: reopening the console now")
            .count()
    };
    let reopens_before = reopens();
    let replugged = Instant::now();
    board.replug().unwrap();
    let back = op.wait_kind(FrameKind::Back, replugged, T).await;
    let reopen = back.at - replugged;
    assert!(
        reopen < Duration::from_millis(1500),
        "reconnected {reopen:?} after the replug (lost {:?} before it)\n{}",
        replugged - lost.at,
        agent.log_text()
    );
    assert_eq!(reopens(), reopens_before + 1, "{}", agent.log_text());
    let since = Instant::now();
    op.type_line("echo again-$((6*7))").await;
    op.wait_for(b"again-42\r\n", since, T).await;
    eprintln!("reconnected through ser2net {reopen:?} after the replug");
}
