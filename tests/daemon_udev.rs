//! The daemon's console follows a replug of a simulated board.
//!
//! - Path watching (no udev daemon runs here): a board whose stable symlink disappears and
//!   comes back on a new pty. The console must reopen on the new node as soon as the link is
//!   back, not on its own backoff tick; operators stay attached; the journal has the lost/back
//!   markers and loses nothing outside the outage.
//! - Live udev in a sandbox (see below): replug on a new node with the old node's `remove`
//!   arriving after the new `add`, and a quick replug on the same node whose stale `remove`
//!   (older SEQNUM) arrives last; neither may close the console on the new node.

mod daemon_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use daemon_support::*;
use labd::console::journal::RecordKind;
use labd::console::journal::reader::JournalReader;
use labd::control::frame::FrameKind;
use labd::ids::DeviceName;
use labd_hw_fixtures::simboard::{BoardScript, SimBoard};

const T: Duration = Duration::from_secs(30);

/// The console's own reconnect schedule after a loss at 0 (`ReconnectPolicy::default()`: 200 ms
/// doubling to 5 s): attempts at about 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 11.4 s.
const OWN_RETRIES: [f64; 7] = [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 11.4];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_follows_a_replug_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let board = SimBoard::spawn("u1", d, BoardScript::silent()).unwrap();
    board.power_on();
    let inv = worker(d) + &device("u1", &board.tty_path(), None);
    let agent = start_agent(d, &inv, &[]).await;
    assert!(
        agent
            .log_text()
            .contains("no udev daemon runs here; following the configured tty paths"),
        "{}",
        agent.log_text()
    );
    let first_pty = board.pty_path().unwrap();
    let op = Operator::attach(&agent, "u1").await;
    wait_until(T, "console online", || {
        agent.log_text().contains("console open")
    })
    .await;

    // The board prints a numbered line every 10 ms; remember which reached its tty.
    let stop = Arc::new(AtomicBool::new(false));
    let written: Arc<Mutex<Vec<(u32, Instant, bool)>>> = Arc::default();
    let writer = {
        let (b, stop, written) = (board.control(), stop.clone(), written.clone());
        std::thread::spawn(move || {
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let line = format!("L{i:06}\r\n");
                let ok = b.write_raw(line.as_bytes()) == line.len();
                written.lock().unwrap().push((i, Instant::now(), ok));
                i += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Unplug for 7 s: the console's backoff has grown to seconds by then.
    let unplugged = Instant::now();
    board.unplug();
    let lost = op.wait_kind(FrameKind::Lost, unplugged, T).await;
    assert!(lost.at - unplugged < Duration::from_secs(2));
    // Hold the freed pty number meanwhile, so the board comes back on another node (as a
    // USB-serial adapter re-enumerated as ttyUSB1 would).
    let _blocker = labd_hw_fixtures::simboard::Pty::open_raw().unwrap();
    tokio::time::sleep(Duration::from_secs(7)).await;
    let replugged = Instant::now();
    board.replug().unwrap();
    let new_pty = board.pty_path().unwrap();
    assert_ne!(new_pty, first_pty);
    let back = op.wait_kind(FrameKind::Back, replugged, T).await;
    let reopen = back.at - replugged;
    // The next attempt of its own after the loss would come at 11.4 s, 4.4 s after the replug.
    let own_next = OWN_RETRIES
        .iter()
        .map(|s| lost.at + Duration::from_secs_f64(*s))
        .find(|t| *t > replugged)
        .unwrap();
    assert!(
        reopen < Duration::from_millis(1500) && back.at + Duration::from_secs(2) < own_next,
        "reopened {reopen:?} after the replug; the console's own next attempt was {:?} after it",
        own_next - replugged
    );
    eprintln!(
        "reopened {reopen:?} after the replug (own next attempt {:?} after it)",
        own_next - replugged
    );
    let back_text = String::from_utf8_lossy(&back.payload).into_owned();
    assert!(
        back_text.contains(&new_pty.display().to_string()) || back_text.contains("u1"),
        "{back_text}"
    );
    assert!(
        agent
            .log_text()
            .contains("adapter present: reopening the console now"),
        "{}",
        agent.log_text()
    );

    // The operator is still attached and receives the board's output on the new pty.
    op.wait_for(b"\r\n", back.at, T).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let last_written = written.lock().unwrap().last().unwrap().0;
    let want = format!("L{last_written:06}\r\n");
    op.wait_for(want.as_bytes(), back.at, T).await;

    // The journal: lost and back markers, and every line except those of the outage.
    let st = agent.status().await;
    assert_eq!(st["consoles"][0]["online"], true);
    assert_eq!(st["consoles"][0]["reconnects"], 1);
    assert_eq!(st["discovery"]["mode"], "path");
    assert_eq!(
        st["discovery"]["devices"]["u1"]["node"],
        new_pty.display().to_string()
    );
    let out = agent.labd(&["status"]).await;
    assert!(
        text(&out).0.contains(&format!(
            "    adapter:  {} (followed by path)",
            new_pty.display()
        )),
        "{}",
        text(&out).0
    );
    let journal_dir = d.join("state").join("journal");
    let records = || {
        JournalReader::open(&journal_dir, &DeviceName::new("u1").unwrap(), None)
            .poll()
            .unwrap()
    };
    wait_until(T, "journal written", || {
        let out: Vec<u8> = records()
            .into_iter()
            .filter(|r| r.kind == RecordKind::Output)
            .flat_map(|r| r.data)
            .collect();
        contains(&out, want.as_bytes())
    })
    .await;
    let recs = records();
    let marks: Vec<String> = recs
        .iter()
        .filter(|r| r.kind == RecordKind::Marker)
        .map(|r| String::from_utf8_lossy(&r.data).into_owned())
        .collect();
    let lost_i = marks
        .iter()
        .position(|m| m.starts_with("console lost: "))
        .unwrap_or_else(|| panic!("{marks:?}"));
    let back_i = marks
        .iter()
        .position(|m| {
            m.starts_with("console back after 7.") || m.starts_with("console back after 8.")
        })
        .unwrap_or_else(|| panic!("{marks:?}"));
    assert!(lost_i < back_i, "{marks:?}");
    let output: Vec<u8> = recs
        .iter()
        .filter(|r| r.kind == RecordKind::Output)
        .flat_map(|r| r.data.clone())
        .collect();
    let got: Vec<u32> = String::from_utf8_lossy(&output)
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.strip_prefix('L')
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("garbled line {l:?}"))
        })
        .collect();
    // In order, no duplicates, exactly one hole.
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order");
    let holes: Vec<(u32, u32)> = got
        .windows(2)
        .filter(|w| w[1] != w[0] + 1)
        .map(|w| (w[0], w[1]))
        .collect();
    assert_eq!(holes.len(), 1, "one hole, at the outage: {holes:?}");
    // Everything written before the unplug (but what was in the pty at that instant) and
    // everything written after the console was back is in the journal.
    let w = written.lock().unwrap().clone();
    for (i, at, ok) in &w {
        let must = *ok && (*at + Duration::from_millis(100) < unplugged || *at > back.at);
        if must {
            assert!(got.binary_search(i).is_ok(), "line {i} missing ({holes:?})");
        }
    }
    let (a, b) = holes[0];
    let hole_start = w.iter().find(|x| x.0 == a + 1).unwrap().1;
    let hole_end = w.iter().find(|x| x.0 == b - 1).unwrap().1;
    assert!(
        hole_start + Duration::from_millis(100) >= unplugged && hole_end <= back.at,
        "the hole is the outage"
    );
}

// ---------------------------------------------------------------------------------------------
// Replug races under live udev: the real agent in a udev sandbox (simulated sysfs over /sys,
// the udev database and links written by the real udevadm with labd's generated rules, a
// private network namespace where a stand-in for udevd broadcasts events that the agent's real
// libudev monitor receives). The "adapter" ttys are the simulated board's ptys: the test gives
// each simulated tty the pty's device number, and `/dev/ttyUSBn` leads to the pty, so the node
// udev announces is the board.

const INNER: &str = "LABD_DAEMON_UDEV_INNER";

#[test]
fn console_survives_udev_replug_races() {
    in_udev_sandbox("inner_console_survives_udev_replug_races");
}

#[test]
fn console_never_opens_another_adapter_on_its_old_node() {
    in_udev_sandbox("inner_console_never_opens_another_adapter_on_its_old_node");
}

/// Runs the inner test `inner` in a udev sandbox with the inventory's rules installed.
fn in_udev_sandbox(inner: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let sys = labd_hw_fixtures::simudev::SimSysfs::create(tmp.path().join("sys")).unwrap();
    let rules = tmp.path().join("rules.d");
    std::fs::create_dir_all(&rules).unwrap();
    // The inventory and its udev rules, as an admin would install them.
    let inv = format!(
        "{}[[device]]\nname = \"u1\"\ndevice_type = \"sim\"\n[device.console]\n\
         tty = \"/dev/lab/u1\"\n[device.usb]\nvendor = \"0403\"\nproduct = \"6001\"\n\
         serial = \"A10K6L1B\"\nsymlink = \"lab/u1\"\n",
        worker(tmp.path())
    );
    let inventory = tmp.path().join("inventory.toml");
    std::fs::write(&inventory, &inv).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_labd"))
        .args(["udev-rules", "-c"])
        .arg(&inventory)
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(rules.join("99-labd.rules"), &out.stdout).unwrap();
    let mut sandbox = labd_hw_fixtures::simudev::UdevSandbox::new(sys.root(), &rules);
    sandbox.udev_control = true;
    sandbox.net_namespace = true;
    let cmd = format!(
        "{INNER}={} {} --exact {inner} --nocapture --test-threads=1",
        tmp.path().display(),
        std::env::current_exe().unwrap().display()
    );
    let run = sandbox.add_all_then(&[], &cmd).unwrap();
    let out = run.command_output;
    println!("{out}");
    assert!(
        out.contains("test result: ok. 1 passed"),
        "inner test failed:\n{out}"
    );
}

/// Stand-in for systemd-udevd inside the sandbox.
struct Udevd {
    b: labd_hw_fixtures::simudev::UdevBroadcaster,
}

impl Udevd {
    fn info(&self, devpath: &str) -> Vec<(String, String)> {
        let out = std::process::Command::new("udevadm")
            .args(["info", "--query=property"])
            .arg(format!("--path=/sys{devpath}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "udevadm info {devpath}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn with(props: &[(String, String)], action: &str, seq: u64) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = props
            .iter()
            .filter(|(k, _)| k != "ACTION" && k != "SEQNUM")
            .cloned()
            .collect();
        v.push(("ACTION".into(), action.into()));
        v.push(("SEQNUM".into(), seq.to_string()));
        v
    }

    /// Runs the rules (database, links) for a new tty, then broadcasts its `add` if asked.
    fn add(&self, devpath: &str, seq: u64, broadcast: bool) {
        let out = std::process::Command::new("udevadm")
            .args(["test", "--action=add"])
            .arg(format!("/sys{devpath}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "udevadm test {devpath}");
        if broadcast {
            self.b
                .send(&Self::with(&self.info(devpath), "add", seq))
                .unwrap();
        }
    }

    fn remove(&self, props: &[(String, String)], seq: u64) {
        self.b.send(&Self::with(props, "remove", seq)).unwrap();
    }
}

/// Plugs the FT232R of the inventory at USB port 1-2 as `ttyUSB{n}` whose device number is
/// the board's current pty, and makes `/dev/ttyUSB{n}` lead to that pty. Returns the devpath.
fn plug_as_pty(
    sys: &labd_hw_fixtures::simudev::SimSysfs,
    board: &SimBoard,
    n: u32,
    devnum: u32,
) -> String {
    plug_adapter_as_pty(sys, board, "A10K6L1B", "1-2", n, devnum)
}

/// Like [`plug_as_pty`] for an FT232R with serial `serial` at USB port `port`.
fn plug_adapter_as_pty(
    sys: &labd_hw_fixtures::simudev::SimSysfs,
    board: &SimBoard,
    serial: &str,
    port: &str,
    n: u32,
    devnum: u32,
) -> String {
    use std::os::unix::fs::MetadataExt;
    let pty = board.pty_path().unwrap();
    let rdev = std::fs::metadata(&pty).unwrap().rdev();
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    let devpath = sys
        .plug(
            &labd_hw_fixtures::simudev::UsbSerialAdapter::ft232r(serial),
            &labd_hw_fixtures::simudev::Placement {
                port: port.into(),
                first_tty: n,
                devnum,
            },
        )
        .unwrap()
        .remove(0);
    let dir = std::path::Path::new("/sys").join(devpath.trim_start_matches('/'));
    std::fs::write(
        dir.join("uevent"),
        format!("MAJOR={major}\nMINOR={minor}\nDEVNAME=ttyUSB{n}\n"),
    )
    .unwrap();
    std::fs::write(dir.join("dev"), format!("{major}:{minor}\n")).unwrap();
    let node = format!("/dev/ttyUSB{n}");
    let _ = std::fs::remove_file(&node);
    std::os::unix::fs::symlink(&pty, &node).unwrap();
    devpath
}

fn sh(cmd: &str) {
    let st = std::process::Command::new("sh")
        .args(["-c", cmd])
        .status()
        .unwrap();
    assert!(st.success(), "{cmd}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inner_console_survives_udev_replug_races() {
    let Some(dir) = std::env::var_os(INNER) else {
        return;
    };
    let d = std::path::PathBuf::from(dir);
    // Ptys inside the sandbox's private /dev.
    sh(
        "mkdir -p /dev/pts && mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts && ln -sf pts/ptmx /dev/ptmx",
    );
    let sys = labd_hw_fixtures::simudev::SimSysfs::open("/sys");
    let udevd = Udevd {
        b: labd_hw_fixtures::simudev::UdevBroadcaster::new().unwrap(),
    };
    let board = SimBoard::spawn("u1", &d, BoardScript::silent()).unwrap();
    board.power_on();
    let tty0 = plug_as_pty(&sys, &board, 0, 5);
    udevd.add(&tty0, 100, false);
    assert_eq!(
        std::fs::canonicalize("/dev/lab/u1").unwrap(),
        board.pty_path().unwrap(),
        "labd's rule made the link"
    );
    let inv = std::fs::read_to_string(d.join("inventory.toml")).unwrap();
    let agent = start_agent(&d, &inv, &[]).await;
    let op = Operator::attach(&agent, "u1").await;
    wait_until(T, "console open", || {
        agent.log_text().contains("console open")
    })
    .await;
    let st = agent.status().await;
    assert_eq!(st["discovery"]["mode"], "udev", "{st}");
    assert_eq!(st["discovery"]["devices"]["u1"]["node"], "/dev/ttyUSB0");
    assert_eq!(st["discovery"]["devices"]["u1"]["via"], "udev");
    let say = |text: &str| {
        let line = format!("{text}\r\n");
        assert_eq!(board.write_raw(line.as_bytes()), line.len());
    };
    say("first plug");
    op.wait_for(b"first plug\r\n", Instant::now() - T, T).await;

    // 1. Unplugged, then back on another node (ttyUSB0 still held): the add brings the console
    //    back at once on /dev/ttyUSB11; the remove of the first plug, arriving after that add,
    //    changes nothing.
    let first = udevd.info(&tty0);
    let unplugged = Instant::now();
    board.unplug();
    sys.unplug("1-2").unwrap();
    std::fs::remove_file("/dev/ttyUSB0").unwrap();
    let lost = op.wait_kind(FrameKind::Lost, unplugged, T).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _blocker = labd_hw_fixtures::simboard::Pty::open_raw().unwrap();
    board.replug().unwrap();
    let tty11 = plug_as_pty(&sys, &board, 11, 12);
    let replugged = Instant::now();
    udevd.add(&tty11, 120, true);
    let back = op.wait_kind(FrameKind::Back, replugged, T).await;
    assert!(
        back.at - replugged < Duration::from_millis(1500),
        "back {:?} after the add (lost {:?} before it)",
        back.at - replugged,
        replugged - lost.at
    );
    udevd.remove(&first, 110);
    tokio::time::sleep(Duration::from_millis(500)).await;
    say("second plug");
    op.wait_for(b"second plug\r\n", back.at, T).await;
    let st = agent.status().await;
    assert_eq!(st["consoles"][0]["online"], true);
    assert_eq!(st["consoles"][0]["reconnects"], 1);
    assert_eq!(st["discovery"]["devices"]["u1"]["node"], "/dev/ttyUSB11");
    assert_eq!(
        op.frames()
            .iter()
            .filter(|f| f.kind == FrameKind::Lost)
            .count(),
        1,
        "the late remove did not close the new node"
    );

    // 2. A quick replug on the same name (the kernel reuses ttyUSB11) where the monitor gets
    //    the new add before the old instance's remove: the add reopens on the new instance,
    //    the stale remove (older SEQNUM, same devpath) is ignored.
    let second = udevd.info(&tty11);
    let unplugged = Instant::now();
    board.unplug();
    sys.unplug("1-2").unwrap();
    op.wait_kind(FrameKind::Lost, unplugged, T).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    board.replug().unwrap();
    let again = plug_as_pty(&sys, &board, 11, 13);
    assert_eq!(again, tty11);
    let replugged = Instant::now();
    udevd.add(&again, 131, true);
    let back = op.wait_kind(FrameKind::Back, replugged, T).await;
    assert!(back.at - replugged < Duration::from_millis(1500));
    udevd.remove(&second, 130);
    wait_until(T, "the stale remove was seen and ignored", || {
        agent.log_text().contains("stale udev event ignored")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    say("third plug");
    op.wait_for(b"third plug\r\n", back.at, T).await;
    let st = agent.status().await;
    assert_eq!(st["consoles"][0]["online"], true);
    assert_eq!(st["consoles"][0]["reconnects"], 2);
    assert_eq!(st["discovery"]["devices"]["u1"]["node"], "/dev/ttyUSB11");
    assert_eq!(
        op.frames()
            .iter()
            .filter(|f| f.kind == FrameKind::Lost)
            .count(),
        2
    );
    assert!(
        agent
            .log_text()
            .contains("adapter present: reopening the console now"),
    );
}

/// A console that udev moved to `/dev/ttyUSB3` loses its adapter; the kernel then gives
/// ttyUSB3 to another board's adapter. The console must not open it (it would journal the
/// other board's output and send its job's input there): it waits for its own adapter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inner_console_never_opens_another_adapter_on_its_old_node() {
    let Some(dir) = std::env::var_os(INNER) else {
        return;
    };
    let d = std::path::PathBuf::from(dir);
    sh(
        "mkdir -p /dev/pts && mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts && ln -sf pts/ptmx /dev/ptmx",
    );
    let sys = labd_hw_fixtures::simudev::SimSysfs::open("/sys");
    let udevd = Udevd {
        b: labd_hw_fixtures::simudev::UdevBroadcaster::new().unwrap(),
    };
    let board = SimBoard::spawn("u1", &d, BoardScript::silent()).unwrap();
    board.power_on();
    let tty0 = plug_as_pty(&sys, &board, 0, 5);
    udevd.add(&tty0, 100, false);
    let inv = std::fs::read_to_string(d.join("inventory.toml")).unwrap();
    let agent = start_agent(&d, &inv, &[]).await;
    let op = Operator::attach(&agent, "u1").await;
    wait_until(T, "console open", || {
        agent.log_text().contains("console open")
    })
    .await;
    let say = |b: &SimBoard, text: &str| {
        let line = format!("{text}\r\n");
        assert_eq!(b.write_raw(line.as_bytes()), line.len());
    };
    // Unplugs u1's adapter as udevd would: node and link gone, `remove` broadcast.
    let unplug = |devpath: &str, node: &str, seq: u64| {
        let props = udevd.info(devpath);
        let since = Instant::now();
        board.unplug();
        sys.unplug("1-2").unwrap();
        std::fs::remove_file(node).unwrap();
        let _ = std::fs::remove_file("/dev/lab/u1");
        udevd.remove(&props, seq);
        since
    };

    // 1. Replugged on ttyUSB3: udev's node is opened directly.
    let since = unplug(&tty0, "/dev/ttyUSB0", 101);
    op.wait_kind(FrameKind::Lost, since, T).await;
    board.replug().unwrap();
    let tty3 = plug_as_pty(&sys, &board, 3, 6);
    let replugged = Instant::now();
    udevd.add(&tty3, 110, true);
    let back = op.wait_kind(FrameKind::Back, replugged, T).await;
    let st = agent.status().await;
    assert!(
        st["consoles"][0]["opened"]
            .as_str()
            .is_some_and(|o| o.contains("/dev/ttyUSB3")),
        "{st}"
    );
    say(&board, "u1 on ttyUSB3");
    op.wait_for(b"u1 on ttyUSB3\r\n", back.at, T).await;

    // 2. Unplugged; another board's adapter (not in the inventory) gets ttyUSB3 and prints.
    let since = unplug(&tty3, "/dev/ttyUSB3", 120);
    let lost = op.wait_kind(FrameKind::Lost, since, T).await;
    let other = SimBoard::spawn("other", &d, BoardScript::silent()).unwrap();
    other.power_on();
    let other_tty = plug_adapter_as_pty(&sys, &other, "B20X9Q7Z", "1-3", 3, 7);
    udevd.add(&other_tty, 130, true);
    // Past the console's longest backoff (5 s) twice over.
    let until = Instant::now() + Duration::from_secs(11);
    while Instant::now() < until {
        say(&other, "other board");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let st = agent.status().await;
    assert_eq!(st["consoles"][0]["online"], false, "{st}");
    assert!(
        !contains(&op.data_since(lost.at), b"other board"),
        "u1's console opened the other board's adapter"
    );
    assert_eq!(
        op.frames()
            .iter()
            .filter(|f| f.kind == FrameKind::Back && f.at > lost.at)
            .count(),
        0
    );

    // 3. u1's adapter comes back (on ttyUSB4): the console follows it.
    board.replug().unwrap();
    let tty4 = plug_as_pty(&sys, &board, 4, 8);
    let replugged = Instant::now();
    udevd.add(&tty4, 140, true);
    let back = op.wait_kind(FrameKind::Back, replugged, T).await;
    assert!(back.at - replugged < Duration::from_millis(1500));
    say(&board, "u1 on ttyUSB4");
    op.wait_for(b"u1 on ttyUSB4\r\n", back.at, T).await;
    let journal = JournalReader::open(
        &d.join("state").join("journal"),
        &DeviceName::new("u1").unwrap(),
        None,
    )
    .poll()
    .unwrap();
    let output: Vec<u8> = journal
        .iter()
        .filter(|r| r.kind == RecordKind::Output)
        .flat_map(|r| r.data.clone())
        .collect();
    assert!(
        !contains(&output, b"other board"),
        "journal has the other board's output"
    );
}
