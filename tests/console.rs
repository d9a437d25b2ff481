//! The console layer against simulated boards on local ptys and through the real ser2net:
//! exact bytes both ways, fan-out, writer arbitration, slow clients, replug and ser2net restart.

mod support;

use std::sync::Arc;
use std::time::Duration;

use labd::console::config::LineSettings;
use labd::console::journal::RecordKind;
use labd::console::source::{Ser2netSource, TtySource};
use labd::console::{ConsoleError, ConsoleEvent, SubscribeOptions};
use labd::ids::ClientId;
use labd_hw_fixtures::peers::ser2net::{Accepter, Ser2net, Ser2netPort};
use labd_hw_fixtures::simboard::{BoardScript, BootloaderMode, KernelMode, SimBoard, Stage};
use support::*;

const T: Duration = Duration::from_secs(20);

fn tty(board: &SimBoard) -> Arc<TtySource> {
    Arc::new(TtySource::new(board.tty_path(), LineSettings::default()))
}

fn op(name: &str) -> ClientId {
    ClientId(format!("op:{name}"))
}

/// Sends `data` to a silent board through the console and checks it arrives exactly, then
/// makes the board print `data` and checks a subscriber and the journal get it exactly.
async fn exact_bytes_both_ways(
    console: &labd::console::Console,
    board: &SimBoard,
    dir: &std::path::Path,
    name: &str,
) {
    let h = console.handle();
    let mut sub = h.subscribe(SubscribeOptions::operator("t")).await.unwrap();
    eventually(T, "console online", || h.status().online).await;
    let data = every_byte();

    h.send_input(&op("alice"), data.clone(), false)
        .await
        .unwrap();
    let b = board.control();
    let want = data.clone();
    assert!(
        blocking(move || b.wait_for_input(&want, T)).await,
        "board got {:?}",
        board.input()
    );
    assert_eq!(board.input(), data, "input must arrive byte for byte");

    assert_eq!(board.write_raw(&data), data.len());
    let (got, _) = read_until(&mut sub, T, |d| d.len() >= data.len()).await;
    assert_eq!(got, data, "output must arrive byte for byte");

    h.flush_journal().await;
    assert_eq!(journal_output(dir, name), data);
    let inputs: Vec<_> = journal(dir, name)
        .into_iter()
        .filter(|r| r.kind == RecordKind::Input)
        .collect();
    assert_eq!(inputs.len(), 1);
    assert_eq!(inputs[0].who.as_deref(), Some("op:alice"));
    assert_eq!(inputs[0].data, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tty_passes_every_byte_both_ways() {
    let dir = temp();
    let board = SimBoard::spawn("b1", dir.path(), BoardScript::silent()).unwrap();
    board.power_on();
    let console = start_console(dir.path(), "b1", tty(&board));
    exact_bytes_both_ways(&console, &board, dir.path(), "b1").await;
    console.stop().await;
    let m = markers(dir.path(), "b1");
    assert!(m.iter().any(|m| m.starts_with("console open: ")), "{m:?}");
    assert_eq!(m.last().map(String::as_str), Some("console stopped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ser2net_telnet_passes_every_byte_both_ways() {
    let dir = temp();
    let board = SimBoard::spawn("b1", dir.path(), BoardScript::silent()).unwrap();
    board.power_on();
    let ser2net = Ser2net::start(
        dir.path(),
        vec![Ser2netPort::telnet("b1", &board.tty_path())],
    )
    .unwrap();
    let source = Arc::new(Ser2netSource::new(
        "127.0.0.1".into(),
        ser2net.port("b1"),
        None,
    ));
    let console = start_console(dir.path(), "b1", source);
    exact_bytes_both_ways(&console, &board, dir.path(), "b1").await;
    console.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc2217_sets_the_remote_baud_rate() {
    let dir = temp();
    let board = SimBoard::spawn("b1", dir.path(), BoardScript::silent()).unwrap();
    board.power_on();
    let mut port = Ser2netPort::telnet("b1", &board.tty_path());
    port.accepter = Accepter::Rfc2217;
    let ser2net = Ser2net::start(dir.path(), vec![port]).unwrap();
    let line = LineSettings {
        baud: 9600,
        ..LineSettings::default()
    };
    let source = Arc::new(Ser2netSource::new(
        "127.0.0.1".into(),
        ser2net.port("b1"),
        Some(line),
    ));
    let console = start_console(dir.path(), "b1", source);
    let b = board.control();
    eventually(T, "ser2net applies 9600 baud to the tty", || {
        b.tty_baud() == Some(9600)
    })
    .await;
    // And data still flows, 0xFF included.
    exact_bytes_both_ways(&console, &board, dir.path(), "b1").await;
    console.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_board_boots_logs_in_and_runs_a_real_shell() {
    let dir = temp();
    let board = SimBoard::spawn("b1", dir.path(), BoardScript::uboot_linux("b1").fast()).unwrap();
    let console = start_console(dir.path(), "b1", tty(&board));
    let h = console.handle().clone();
    let mut ex = Expect::new(h.subscribe(SubscribeOptions::job("job:1")).await.unwrap());
    let lease = h.acquire_writer(ClientId("job:1".into())).await.unwrap();
    board.power_on();

    // Interrupt autoboot, use the bootloader.
    ex.expect(b"Hit any key to stop autoboot", T).await;
    lease.send(&b" "[..]).await.unwrap();
    ex.expect(b"=> ", T).await;
    lease.send(&b"setenv answer 42\r"[..]).await.unwrap();
    ex.expect(b"=> ", T).await;
    lease.send(&b"printenv answer\r"[..]).await.unwrap();
    let d = ex.expect(b"answer=42\r\n=> ", T).await;
    assert!(contains(&d, b"printenv answer\r\n"), "bootloader echoes");
    lease.send(&b"boot\r"[..]).await.unwrap();
    ex.expect(b"Linux version 6.1.0-sim", T).await;

    // Wrong password, then the right one.
    ex.expect(b"b1 login: ", T).await;
    lease.send(&b"root\r"[..]).await.unwrap();
    ex.expect(b"Password: ", T).await;
    lease.send(&b"nope\r"[..]).await.unwrap();
    let d = ex.expect(b"b1 login: ", T).await;
    assert!(contains(&d, b"Login incorrect\r\n"));
    assert!(!contains(&d, b"nope"), "passwords are not echoed");
    lease.send(&b"root\r"[..]).await.unwrap();
    ex.expect(b"Password: ", T).await;
    lease.send(&b"root\r"[..]).await.unwrap();
    ex.expect(b"root@b1:~# ", T).await;

    // A real shell behind the pty.
    lease.send(&b"echo $((6*7)) $$\r"[..]).await.unwrap();
    let d = ex.expect(b"\r\n42 ", T).await;
    assert!(
        contains(&d, b"echo $((6*7))"),
        "the shell's tty echoes input"
    );
    let b = board.control();
    assert!(blocking(move || b.wait_for_stage(Stage::Shell, T)).await);

    // Power off: output stops, the shell dies; power on boots again.
    lease
        .send(&b"while true; do echo tick; sleep 0.05; done\r"[..])
        .await
        .unwrap();
    ex.expect(b"tick\r\ntick", T).await;
    let b = board.control();
    blocking(move || b.power_off()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    ex.drain();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ex.sub.try_recv(), None, "no output after power-off");
    assert_eq!(board.stage(), Stage::Off);
    board.power_on();
    ex.expect(b"U-Boot 2024.01-sim", T).await;
    drop(lease);
    console.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn board_failure_modes() {
    let dir = temp();
    let mut script = BoardScript::uboot_linux("b2").fast();
    script.autoboot_secs = 1;
    script.bootloader = BootloaderMode::Error(
        "Wrong Image Format for bootm command\nERROR: can't get kernel image!".into(),
    );
    let board = SimBoard::spawn("b2", dir.path(), script.clone()).unwrap();
    let console = start_console(dir.path(), "b2", tty(&board));
    let mut ex = Expect::new(
        console
            .handle()
            .subscribe(SubscribeOptions::job("j"))
            .await
            .unwrap(),
    );
    board.power_on();
    let d = ex.expect(b"ERROR: can't get kernel image!\r\n=> ", T).await;
    assert!(!contains(&d, b"Starting kernel"));

    board.power_off();
    script.bootloader = BootloaderMode::Boots;
    script.kernel = KernelMode::Panic("VFS: Unable to mount root fs on unknown-block(0,0)".into());
    board.set_script(script.clone());
    board.power_on();
    ex.expect(
        b"Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\r\n",
        T,
    )
    .await;

    board.power_off();
    script.kernel = KernelMode::NeverBoots;
    script.login = None;
    board.set_script(script);
    board.power_on();
    ex.expect(b"Starting kernel ...", T).await;
    let b = board.control();
    assert!(blocking(move || b.wait_for_stage(Stage::Halted, T)).await);
    console.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operators_and_a_job_writer() {
    let dir = temp();
    let board = SimBoard::spawn("b1", dir.path(), BoardScript::silent()).unwrap();
    board.power_on();
    let console = start_console(dir.path(), "b1", tty(&board));
    let h = console.handle().clone();
    let mut alice = h
        .subscribe(SubscribeOptions::operator("op:alice"))
        .await
        .unwrap();
    let mut bob = h
        .subscribe(SubscribeOptions::operator("op:bob"))
        .await
        .unwrap();
    let mut job = h.subscribe(SubscribeOptions::job("job:7")).await.unwrap();
    eventually(T, "online", || h.status().online).await;
    assert_eq!(h.status().clients, 3);

    // No lease: operators type.
    h.send_input(&op("alice"), &b"a1"[..], false).await.unwrap();
    let lease = h.acquire_writer(ClientId("job:7".into())).await.unwrap();
    assert_eq!(h.status().writer.as_deref(), Some("job:7"));
    // A second lease is refused.
    assert!(matches!(
        h.acquire_writer(ClientId("job:8".into())).await,
        Err(ConsoleError::LeaseHeld { .. })
    ));
    // While the job holds it, operators are read-only unless they force.
    let refused = h.send_input(&op("bob"), &b"b1"[..], false).await;
    assert!(
        matches!(&refused, Err(ConsoleError::HeldByJob { holder, .. }) if holder.0 == "job:7"),
        "{refused:?}"
    );
    assert!(h.send_break(&op("bob"), false).await.is_err());
    lease.send(&b"j1"[..]).await.unwrap();
    h.send_input(&op("bob"), &b"b2"[..], true).await.unwrap();
    drop(lease);
    support::eventually(T, "lease released", || h.status().writer.is_none()).await;
    h.send_input(&op("bob"), &b"b3"[..], false).await.unwrap();
    let b = board.control();
    assert!(blocking(move || b.wait_for_input(b"a1j1b2b3", T)).await);
    assert_eq!(board.input(), b"a1j1b2b3");

    // Everyone sees the board's output.
    board.write_raw(b"hello all\r\n");
    for s in [&mut alice, &mut bob, &mut job] {
        let (d, _) = read_until(s, T, |d| contains(d, b"hello all\r\n")).await;
        assert_eq!(d, b"hello all\r\n");
    }

    h.flush_journal().await;
    let inputs: Vec<(String, Vec<u8>)> = journal(dir.path(), "b1")
        .into_iter()
        .filter(|r| r.kind == RecordKind::Input)
        .map(|r| (r.who.unwrap_or_default(), r.data))
        .collect();
    assert_eq!(
        inputs,
        vec![
            ("op:alice".to_string(), b"a1".to_vec()),
            ("job:7".to_string(), b"j1".to_vec()),
            ("op:bob(forced)".to_string(), b"b2".to_vec()),
            ("op:bob".to_string(), b"b3".to_vec()),
        ]
    );
    let m = markers(dir.path(), "b1");
    assert!(
        m.contains(&"writer lease taken by job:7".to_string()),
        "{m:?}"
    );
    assert!(
        m.contains(&"writer lease released by job:7".to_string()),
        "{m:?}"
    );
    drop((alice, bob));
    support::eventually(T, "clients detached", || h.status().clients == 1).await;
    console.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_does_not_stall_the_others() {
    let dir = temp();
    let board = SimBoard::spawn("b1", dir.path(), BoardScript::silent()).unwrap();
    board.power_on();
    let console = start_console(dir.path(), "b1", tty(&board));
    let h = console.handle().clone();
    let mut stalled = h
        .subscribe(SubscribeOptions {
            name: "stalled".into(),
            queue_bytes: 64 * 1024,
            replay: 0,
        })
        .await
        .unwrap();
    let mut reader = h
        .subscribe(SubscribeOptions::operator("reader"))
        .await
        .unwrap();
    eventually(T, "online", || h.status().online).await;

    // 4 MiB of numbered lines while `stalled` never reads.
    let b = board.control();
    let writer = std::thread::spawn(move || {
        let mut all = Vec::new();
        for i in 0..65536u32 {
            let line = format!("{i:08} 0123456789abcdefghijklmnopqrstuvwxyz0123456789ABCDEF\r\n");
            all.extend_from_slice(line.as_bytes());
        }
        for chunk in all.chunks(4096) {
            assert_eq!(b.write_raw(chunk), chunk.len(), "labd must keep reading");
        }
        all
    });
    let total = 65536 * 63;
    let (got, _) = read_until(&mut reader, Duration::from_secs(60), |d| d.len() >= total).await;
    let sent = writer.join().unwrap();
    assert_eq!(got.len(), sent.len());
    assert!(
        got == sent,
        "the reading subscriber got every byte in order"
    );

    // The stalled one got at most its 64 KiB; the rest was counted as missed.
    let mut data = 0usize;
    let mut missed = 0u64;
    while let Some(ev) = stalled.try_recv() {
        match ev {
            ConsoleEvent::Data(d) => data += d.len(),
            ConsoleEvent::Missed(n) => missed += n,
            ConsoleEvent::Lost { .. } | ConsoleEvent::Back { .. } => {}
        }
    }
    assert!(
        data <= 64 * 1024,
        "the stalled queue stays within its budget"
    );
    assert!(stalled.missed_total() > 0);
    assert_eq!(data as u64 + stalled.missed_total(), sent.len() as u64);
    board.write_raw(b"x");
    read_until(&mut reader, T, |d| d == b"x").await;
    // Once drained, the stalled subscriber is told exactly how much it missed, then gets data.
    let mut rest = Vec::new();
    while rest.last() != Some(&ConsoleEvent::Data(bytes::Bytes::from_static(b"x"))) {
        rest.push(stalled.recv().await.unwrap());
    }
    for ev in &rest {
        if let ConsoleEvent::Missed(n) = ev {
            missed += n;
        }
    }
    assert_eq!(
        missed,
        stalled.missed_total(),
        "every missed byte is reported"
    );

    h.flush_journal().await;
    let mut j = journal_output(dir.path(), "b1");
    assert_eq!(j.pop(), Some(b'x'));
    assert!(j == sent, "the journal has every byte");
    console.stop().await;
}

/// A thread printing numbered lines (`L000001\r\n`) every `period` until stopped; remembers
/// which lines the pty took.
struct LineWriter {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<(u32, bool)>>>,
}

impl LineWriter {
    fn start(board: labd_hw_fixtures::simboard::BoardControl, period: Duration) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut log = Vec::new();
            let mut i = 0u32;
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                let line = format!("L{i:06}\r\n");
                let ok = board.write_raw(line.as_bytes()) == line.len();
                log.push((i, ok));
                i += 1;
                std::thread::sleep(period);
            }
            log
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<(u32, bool)> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// Line numbers in journaled output; panics on a torn or foreign line.
fn journal_lines(output: &[u8]) -> Vec<u32> {
    let text = String::from_utf8(output.to_vec()).unwrap();
    text.split_terminator("\r\n")
        .map(|l| {
            l.strip_prefix('L')
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected line {l:?} in the journal"))
        })
        .collect()
}

/// Like [`journal_lines`], but a line torn by the outage (the peer died mid-line, e.g.
/// `LL000134`) is read by its last number; returns how many were torn.
fn journal_lines_torn(output: &[u8]) -> (Vec<u32>, usize) {
    let text = String::from_utf8(output.to_vec()).unwrap();
    let mut torn = 0;
    let lines = text
        .split_terminator("\r\n")
        .map(|l| match l.strip_prefix('L').and_then(|n| n.parse().ok()) {
            Some(n) => n,
            None => {
                torn += 1;
                let at = l
                    .rfind('L')
                    .unwrap_or_else(|| panic!("unexpected line {l:?}"));
                l[at + 1..]
                    .parse()
                    .unwrap_or_else(|_| panic!("unexpected line {l:?}"))
            }
        })
        .collect();
    (lines, torn)
}

/// The journal holds a contiguous run from line 0, then (after at most one gap: the outage)
/// a contiguous run to the last line; lines the board printed after `must_have_from` are all
/// there.
fn assert_one_gap(lines: &[u32], log: &[(u32, bool)], must_have_from: u32) {
    assert_eq!(
        lines.first(),
        Some(&0),
        "the journal starts at the first line"
    );
    let gaps: Vec<(u32, u32)> = lines
        .windows(2)
        .filter(|w| w[1] != w[0] + 1)
        .map(|w| (w[0], w[1]))
        .collect();
    assert!(
        gaps.len() <= 1,
        "more than one hole in the journal: {gaps:?}"
    );
    for (a, b) in &gaps {
        assert!(b > a, "lines out of order around {a} -> {b}");
    }
    let last_ok = log
        .iter()
        .rev()
        .find(|(_, ok)| *ok)
        .map(|(i, _)| *i)
        .unwrap();
    assert_eq!(
        lines.last(),
        Some(&last_ok),
        "the journal ends at the last line printed"
    );
    if let Some((_, after)) = gaps.first() {
        assert!(
            *after <= must_have_from,
            "lines from {must_have_from} were printed after the outage but the journal resumes at {after}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tty_replug_is_recovered_with_no_journal_loss_outside_the_outage() {
    let dir = temp();
    let board = SimBoard::spawn("replug1", dir.path(), BoardScript::silent()).unwrap();
    board.power_on();
    let console = start_console(dir.path(), "replug1", tty(&board));
    let h = console.handle().clone();
    eventually(T, "online", || h.status().online).await;
    let mut sub = h
        .subscribe(SubscribeOptions::operator("op:watcher"))
        .await
        .unwrap();
    let writer = LineWriter::start(board.control(), Duration::from_millis(2));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let b = board.control();
    blocking(move || b.unplug()).await;
    let lost = wait_event(&mut sub, T, |e| matches!(e, ConsoleEvent::Lost { .. })).await;
    assert!(!h.status().online);
    tokio::time::sleep(Duration::from_millis(300)).await;
    board.replug().unwrap();
    let back = wait_event(&mut sub, T, |e| matches!(e, ConsoleEvent::Back { .. })).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = writer.finish();
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.flush_journal().await;

    let ConsoleEvent::Back { opened, after } = back else {
        unreachable!()
    };
    assert!(
        opened.contains(&board.pty_path().unwrap().display().to_string()),
        "{opened}"
    );
    assert!(after >= Duration::from_millis(300));
    assert!(matches!(lost, ConsoleEvent::Lost { .. }));
    // Lines printed after the replug (they waited in the new pty) are all journaled.
    let failed_last = log
        .iter()
        .rev()
        .find(|(_, ok)| !*ok)
        .map(|(i, _)| *i)
        .unwrap();
    let lines = journal_lines(&journal_output(dir.path(), "replug1"));
    assert_one_gap(&lines, &log, failed_last + 1);
    let m = markers(dir.path(), "replug1");
    assert!(
        m.iter().any(|m| m.starts_with("console lost: tty ")),
        "{m:?}"
    );
    assert!(
        m.iter().any(|m| m.starts_with("console back after ")),
        "{m:?}"
    );
    // (Metrics are process-wide by device name: this test's device name is its own.)
    assert_eq!(h.status().reconnects, 1, "{m:?}");
    console.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ser2net_restart_is_recovered_with_no_journal_loss_outside_the_outage() {
    let dir = temp();
    let board = SimBoard::spawn("b1", dir.path(), BoardScript::silent()).unwrap();
    board.power_on();
    let ser2net = Ser2net::start(
        dir.path(),
        vec![Ser2netPort::telnet("b1", &board.tty_path())],
    )
    .unwrap();
    let port = ser2net.port("b1");
    let source = Arc::new(Ser2netSource::new("127.0.0.1".into(), port, None));
    let console = start_console(dir.path(), "b1", source);
    let h = console.handle().clone();
    eventually(T, "online", || h.status().online).await;
    let mut sub = h
        .subscribe(SubscribeOptions::operator("op:watcher"))
        .await
        .unwrap();
    let writer = LineWriter::start(board.control(), Duration::from_millis(2));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let ser2net = blocking(move || {
        let mut s = ser2net;
        s.stop();
        s
    })
    .await;
    wait_event(&mut sub, T, |e| matches!(e, ConsoleEvent::Lost { .. })).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ser2net = blocking(move || {
        let mut s = ser2net;
        s.restart().unwrap();
        s
    })
    .await;
    wait_event(&mut sub, T, |e| matches!(e, ConsoleEvent::Back { .. })).await;
    let back_at = board.input().len(); // marker only; the board's input is untouched
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = writer.finish();
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.flush_journal().await;
    assert_eq!(back_at, 0);

    // ser2net drops what it had in flight when killed: one hole at most, then every line
    // from the reconnection on.
    let (lines, torn) = journal_lines_torn(&journal_output(dir.path(), "b1"));
    assert!(torn <= 1, "{torn} torn lines");
    let last = *lines.last().unwrap();
    assert_one_gap(&lines, &log, last);
    let m = markers(dir.path(), "b1");
    assert!(
        m.iter()
            .any(|m| m.starts_with(&format!("console lost: ser2net 127.0.0.1:{port}"))),
        "{m:?}"
    );
    assert!(m.iter().any(|m| m.contains("cannot connect")), "{m:?}");
    assert!(
        m.iter().any(|m| m.starts_with("console back after ")),
        "{m:?}"
    );
    console.stop().await;
    drop(ser2net);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ser2net_status_lines_are_connection_failures_not_board_output() {
    let dir = temp();
    let board = SimBoard::spawn("b1", dir.path(), BoardScript::silent()).unwrap();
    board.power_on();
    let ser2net = Ser2net::start(
        dir.path(),
        vec![Ser2netPort::telnet("b1", &board.tty_path())],
    )
    .unwrap();
    let port = ser2net.port("b1");

    // Someone else holds the only connection: "Port already in use".
    let squatter = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let source = Arc::new(Ser2netSource::new("127.0.0.1".into(), port, None));
    let console = start_console(dir.path(), "b1", source);
    let h = console.handle().clone();
    eventually(T, "refusal recorded", || {
        h.status()
            .last_error
            .is_some_and(|e| e.contains("ser2net refused the connection: Port already in use"))
    })
    .await;
    drop(squatter);
    eventually(T, "online once the port is free", || h.status().online).await;

    // The tty vanishes: ser2net closes us, then answers "Device open failure".
    let b = board.control();
    blocking(move || b.unplug()).await;
    eventually(T, "device open failure recorded", || {
        h.status()
            .last_error
            .is_some_and(|e| e.contains("ser2net refused the connection: Device open failure: "))
    })
    .await;
    board.replug().unwrap();
    eventually(T, "back online", || h.status().online).await;
    board.write_raw(b"after replug\r\n");
    let mut sub = h
        .subscribe(SubscribeOptions::operator("op:x"))
        .await
        .unwrap();
    board.write_raw(b"live\r\n");
    read_until(&mut sub, T, |d| contains(d, b"live\r\n")).await;
    h.flush_journal().await;

    let out = journal_output(dir.path(), "b1");
    assert!(
        !contains(&out, b"Port already in use"),
        "status line journaled as output"
    );
    assert!(
        !contains(&out, b"Device open failure"),
        "status line journaled as output"
    );
    let m = markers(dir.path(), "b1");
    assert!(m.iter().any(|m| m.contains("Port already in use")), "{m:?}");
    assert!(
        m.iter().any(|m| m.contains("Device open failure: ")),
        "{m:?}"
    );
    console.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_now_moves_to_a_new_node_at_once() {
    let dir = temp();
    let a = SimBoard::spawn("a", dir.path(), BoardScript::silent()).unwrap();
    let b = SimBoard::spawn("b", dir.path(), BoardScript::silent()).unwrap();
    a.power_on();
    b.power_on();
    // A long backoff, so only reopen_now can explain a fast switch.
    let mut spec = labd::console::ConsoleSpec::new(tty(&a));
    spec.reconnect.initial = Duration::from_secs(30);
    spec.reconnect.max = Duration::from_secs(30);
    let ctx = labd::console::ConsoleContext {
        journal_dir: dir.path().join("journal"),
        journal: Default::default(),
    };
    let console = labd::console::Console::start(dev("a"), spec, &ctx).unwrap();
    let h = console.handle().clone();
    eventually(T, "online", || h.status().online).await;
    let mut sub = h
        .subscribe(SubscribeOptions::operator("op:x"))
        .await
        .unwrap();

    let b_pty = b.pty_path().unwrap();
    h.reopen_now(Some(b_pty.clone())).await.unwrap();
    let ev = wait_event(&mut sub, Duration::from_secs(5), |e| {
        matches!(e, ConsoleEvent::Back { .. })
    })
    .await;
    let ConsoleEvent::Back { opened, .. } = ev else {
        unreachable!()
    };
    assert_eq!(opened, b_pty.display().to_string());
    b.write_raw(b"from b\r\n");
    read_until(&mut sub, T, |d| contains(d, b"from b\r\n")).await;
    h.send_input(&op("x"), &b"to b"[..], false).await.unwrap();
    let bc = b.control();
    assert!(blocking(move || bc.wait_for_input(b"to b", T)).await);
    assert!(a.input().is_empty());

    // While offline too: the console does not wait for its 30 s backoff.
    let ac = a.control();
    h.reopen_now(None).await.unwrap();
    wait_event(&mut sub, Duration::from_secs(5), |e| {
        matches!(e, ConsoleEvent::Back { .. })
    })
    .await;
    blocking(move || ac.unplug()).await;
    wait_event(&mut sub, T, |e| matches!(e, ConsoleEvent::Lost { .. })).await;
    a.replug().unwrap();
    h.reopen_now(Some(a.tty_path())).await.unwrap();
    wait_event(&mut sub, Duration::from_secs(5), |e| {
        matches!(e, ConsoleEvent::Back { .. })
    })
    .await;
    h.flush_journal().await;
    let m = markers(dir.path(), "a");
    assert!(
        m.iter().any(|m| m.contains("reopening on request at ")),
        "{m:?}"
    );
    console.stop().await;
}

/// Collects what the console delivers for `d` (data and events), for checking what must not
/// happen.
async fn quiet_for(
    sub: &mut labd::console::Subscription,
    d: Duration,
) -> (Vec<u8>, Vec<ConsoleEvent>) {
    let mut data = Vec::new();
    let mut other = Vec::new();
    let deadline = tokio::time::Instant::now() + d;
    while let Ok(ev) = tokio::time::timeout_at(deadline, sub.recv()).await {
        match ev {
            Some(ConsoleEvent::Data(b)) => data.extend_from_slice(&b),
            Some(ev) => other.push(ev),
            None => panic!("console stopped"),
        }
    }
    (data, other)
}

/// A kernel node handed over by udev (`reopen_now(Some(node))`) names whichever adapter the
/// kernel enumerates there next: after the link is lost, or after discovery reports the
/// adapter gone, the console never opens it again; it retries its configured (stable) path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udev_node_is_not_reopened_after_its_adapter_went_away() {
    let dir = temp();
    let a = SimBoard::spawn("a", dir.path(), BoardScript::silent()).unwrap();
    let b = SimBoard::spawn("b", dir.path(), BoardScript::silent()).unwrap();
    a.power_on();
    b.power_on();
    let stable = dir.path().join("by-id-a");
    let node = dir.path().join("ttyUSB3");
    let relink = |link: &std::path::Path, to: &std::path::Path| {
        let _ = std::fs::remove_file(link);
        std::os::unix::fs::symlink(to, link).unwrap();
    };
    relink(&stable, &a.pty_path().unwrap());
    let mut spec = labd::console::ConsoleSpec::new(Arc::new(TtySource::new(
        stable.clone(),
        LineSettings::default(),
    )));
    spec.reconnect.initial = Duration::from_millis(100);
    spec.reconnect.max = Duration::from_millis(300);
    let ctx = labd::console::ConsoleContext {
        journal_dir: dir.path().join("journal"),
        journal: Default::default(),
    };
    let console = labd::console::Console::start(dev("a"), spec, &ctx).unwrap();
    let h = console.handle().clone();
    eventually(T, "online", || h.status().online).await;
    let mut sub = h
        .subscribe(SubscribeOptions::operator("op:x"))
        .await
        .unwrap();
    let chatter = |board: &SimBoard, text: &'static str| {
        let c = board.control();
        std::thread::spawn(move || {
            for _ in 0..15 {
                c.write_raw(text.as_bytes());
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    // udev hands over ttyUSB3 (a's adapter): opened directly.
    relink(&node, &a.pty_path().unwrap());
    h.reopen_now(Some(node.clone())).await.unwrap();
    wait_event(&mut sub, T, |e| matches!(e, ConsoleEvent::Back { .. })).await;
    assert!(
        h.status()
            .opened
            .unwrap()
            .starts_with(&node.display().to_string())
    );

    // 1. a's adapter is unplugged (its by-id link goes); b's adapter becomes ttyUSB3.
    let ac = a.control();
    blocking(move || ac.unplug()).await;
    std::fs::remove_file(&stable).unwrap();
    wait_event(&mut sub, T, |e| matches!(e, ConsoleEvent::Lost { .. })).await;
    relink(&node, &b.pty_path().unwrap());
    let t = chatter(&b, "from b\r\n");
    let (data, events) = quiet_for(&mut sub, Duration::from_millis(1500)).await;
    t.join().unwrap();
    assert!(
        !contains(&data, b"from b"),
        "opened b's adapter after a loss"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, ConsoleEvent::Back { .. })),
        "{events:?}"
    );
    assert!(!h.status().online);

    // 2. udev announces a node that cannot be opened yet; then the adapter is reported gone
    //    and another adapter gets that node.
    let node5 = dir.path().join("ttyUSB5");
    h.reopen_now(Some(node5.clone())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.adapter_gone().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    relink(&node5, &b.pty_path().unwrap());
    let t = chatter(&b, "b again\r\n");
    let (data, events) = quiet_for(&mut sub, Duration::from_millis(1500)).await;
    t.join().unwrap();
    assert!(
        !contains(&data, b"b again"),
        "opened b's adapter after adapter_gone"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, ConsoleEvent::Back { .. })),
        "{events:?}"
    );

    // 3. a's adapter is back: its stable link is what the console opens.
    a.replug().unwrap();
    relink(&stable, &a.pty_path().unwrap());
    wait_event(&mut sub, T, |e| matches!(e, ConsoleEvent::Back { .. })).await;
    assert!(
        h.status()
            .opened
            .unwrap()
            .starts_with(&stable.display().to_string())
    );
    a.write_raw(b"from a\r\n");
    read_until(&mut sub, T, |d| contains(d, b"from a\r\n")).await;
    assert!(b.input().is_empty());
    console.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_rotates_under_a_running_console() {
    let dir = temp();
    let board = SimBoard::spawn("b1", dir.path(), BoardScript::silent()).unwrap();
    board.power_on();
    let mut spec = labd::console::ConsoleSpec::new(tty(&board));
    spec.reconnect.initial = Duration::from_millis(50);
    let ctx = labd::console::ConsoleContext {
        journal_dir: dir.path().join("journal"),
        journal: labd::console::config::JournalConfig {
            max_file_size: labd::inventory::ByteSize(64 * 1024),
            keep_files: 3,
        },
    };
    let console = labd::console::Console::start(dev("b1"), spec, &ctx).unwrap();
    let h = console.handle().clone();
    eventually(T, "online", || h.status().online).await;
    let mut sub = h
        .subscribe(SubscribeOptions::operator("op:x"))
        .await
        .unwrap();
    let mut sent = Vec::new();
    for i in 0..40000u32 {
        sent.extend_from_slice(format!("L{i:06}\r\n").as_bytes());
    }
    for c in sent.chunks(1024) {
        board.write_raw(c);
    }
    read_until(&mut sub, T, |d| d.len() >= sent.len()).await;
    h.flush_journal().await;
    let files = labd::console::journal::files(&dir.path().join("journal"), &dev("b1"));
    assert_eq!(files.len(), 4, "current + 3 rotated: {files:?}");
    for f in &files {
        assert!(std::fs::metadata(f).unwrap().len() <= 64 * 1024);
    }
    let kept = journal_output(dir.path(), "b1");
    assert!(sent.ends_with(&kept), "the kept files hold the exact tail");
    // The oldest kept record may start mid-line.
    let first_nl = kept.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    let lines = journal_lines(&kept[first_nl..]);
    assert!(lines.windows(2).all(|w| w[1] == w[0] + 1));
    assert_eq!(lines.last(), Some(&39999));
    console.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_is_sent_in_order_and_journaled_on_tty_and_ser2net() {
    let dir = temp();
    let board = SimBoard::spawn("b1", dir.path(), BoardScript::silent()).unwrap();
    let board2 = SimBoard::spawn("b2", dir.path(), BoardScript::silent()).unwrap();
    board.power_on();
    board2.power_on();
    let ser2net = Ser2net::start(
        dir.path(),
        vec![Ser2netPort::telnet("b2", &board2.tty_path())],
    )
    .unwrap();
    let tty_console = start_console(dir.path(), "b1", tty(&board));
    let s2n_console = start_console(
        dir.path(),
        "b2",
        Arc::new(Ser2netSource::new(
            "127.0.0.1".into(),
            ser2net.port("b2"),
            None,
        )),
    );
    for (console, b, name) in [(&tty_console, &board, "b1"), (&s2n_console, &board2, "b2")] {
        let h = console.handle().clone();
        eventually(T, "online", || h.status().online).await;
        h.send_input(&op("alice"), &b"before"[..], false)
            .await
            .unwrap();
        h.send_break(&op("alice"), false).await.unwrap();
        h.send_input(&op("alice"), &b"after"[..], false)
            .await
            .unwrap();
        let bc = b.control();
        // A pty has no line to hold low: the bytes around the BREAK arrive, in order.
        assert!(
            blocking(move || bc.wait_for_input(b"beforeafter", T)).await,
            "{name}"
        );
        h.flush_journal().await;
        let kinds: Vec<(RecordKind, Option<String>)> = journal(dir.path(), name)
            .into_iter()
            .filter(|r| r.kind != RecordKind::Marker)
            .map(|r| (r.kind, r.who))
            .collect();
        let alice = Some("op:alice".to_string());
        assert_eq!(
            kinds,
            vec![
                (RecordKind::Input, alice.clone()),
                (RecordKind::Break, alice.clone()),
                (RecordKind::Input, alice)
            ],
            "{name}"
        );
        assert!(h.status().online, "{name}: a BREAK does not drop the link");
    }
    tty_console.stop().await;
    s2n_console.stop().await;
}
