//! The live udev path of the discovery thread, end to end, with no udev daemon on the machine:
//! inside a udev sandbox (simulated sysfs over /sys, udev database written by the real
//! udevadm, private network namespace) the daemon's `Discovery` enumerates through libudev and
//! listens on a real libudev monitor, while a stand-in for udevd broadcasts the recorded events
//! on the udev netlink group and changes the simulated sysfs as the kernel would. Covers
//! unplug, replug on a new node, a missed remove, a stale remove and a foreign subsystem.
//!
//! The outer tests build the sandbox and re-run this test binary inside it; the `inner_*`
//! tests do nothing unless started that way.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use labd::inventory::Inventory;
use labd::udev::discovery::{Discovery, DiscoveryConfig, Mode};
use labd::udev::{NodeChange, parse_dump};
use labd_hw_fixtures::simudev::{self, SimSysfs, UdevBroadcaster, UdevSandbox};

const INNER: &str = "LABD_UDEV_LIVE_INNER";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the sandbox with every recorded adapter processed by udev, then runs `inner` (a test
/// of this binary) inside it; returns its output.
fn run_inner(inner: &str, extra_env: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let sys = SimSysfs::create(tmp.path().join("sys")).unwrap();
    let rules = tmp.path().join("rules.d");
    std::fs::create_dir_all(&rules).unwrap();
    let mut ttys = Vec::new();
    for rec in simudev::recorded_adapters() {
        ttys.extend(sys.plug(&rec.adapter, &rec.placement).unwrap());
    }
    let mut sandbox = UdevSandbox::new(sys.root(), &rules);
    sandbox.udev_control = true;
    sandbox.net_namespace = true;
    let cmd = format!(
        "{INNER}=1 {extra_env} RUST_LOG=labd=debug {} --exact {inner} --nocapture --test-threads=1",
        std::env::current_exe().unwrap().display()
    );
    let run = sandbox.add_all_then(&ttys, &cmd).unwrap();
    run.command_output
}

fn assert_inner_passed(out: &str, inner: &str) {
    // With --nocapture, log lines come between "test NAME ..." and "ok".
    assert!(
        out.contains(&format!("test {inner} ...")) && out.contains("test result: ok. 1 passed"),
        "inner test failed:\n{out}"
    );
}

/// A recorded record as the property list udevd would send, with overrides.
fn props(file: &str, index: usize, set: &[(&str, &str)]) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(simudev::fixtures_dir().join(file)).unwrap();
    let rec = parse_dump(&text).unwrap().swap_remove(index);
    let mut map: BTreeMap<String, String> = rec.props;
    for (k, v) in set {
        map.insert((*k).to_string(), (*v).to_string());
    }
    map.into_iter().collect()
}

#[test]
fn real_udevadm_monitor_receives_the_simulated_broadcast() {
    // The wire format and the subsystem hash are right: real libudev (udevadm monitor with the
    // same BPF subsystem filter labd installs) receives and decodes the events.
    let out = run_inner("inner_send_under_udevadm_monitor", "");
    assert_inner_passed(&out, "inner_send_under_udevadm_monitor");
}

#[test]
fn inner_send_under_udevadm_monitor() {
    if std::env::var_os(INNER).is_none() {
        return;
    }
    let log = std::env::temp_dir().join(format!("labd-monitor-{}.log", std::process::id()));
    let mut monitor =
        std::process::Command::new(labd_hw_fixtures::require_program("udevadm").unwrap())
            .args(["monitor", "--udev", "--property", "--subsystem-match=tty"])
            .stdout(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let b = UdevBroadcaster::new().unwrap();
    b.send(&props(
        "ft232r.properties",
        0,
        &[("ACTION", "add"), ("SEQNUM", "4711")],
    ))
    .unwrap();
    // Another subsystem: dropped by the filter.
    b.send(&[
        ("ACTION".into(), "add".into()),
        ("DEVPATH".into(), "/devices/virtual/net/dummy0".into()),
        ("SUBSYSTEM".into(), "net".into()),
        ("SEQNUM".into(), "4712".into()),
    ])
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let _ = monitor.kill();
    let _ = monitor.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert!(
        text.contains(
            "add      /devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/ttyUSB0/tty/ttyUSB0 (tty)"
        ) && text.contains("SEQNUM=4711")
            && text.contains("ID_SERIAL_SHORT=A10K6L1B"),
        "{text}"
    );
    assert!(!text.contains("dummy0"), "{text}");
}

#[test]
fn discovery_follows_live_udev_events() {
    let out = run_inner("inner_discovery_follows_live_udev_events", "");
    println!("{out}");
    assert_inner_passed(&out, "inner_discovery_follows_live_udev_events");
}

/// The next change, and how long after `since` it arrived.
fn recv_since(
    rx: &mut tokio::sync::mpsc::Receiver<NodeChange>,
    what: &str,
    t0: Instant,
) -> (NodeChange, Duration) {
    loop {
        match rx.try_recv() {
            Ok(c) => return (c, t0.elapsed()),
            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {
                assert!(t0.elapsed() < Duration::from_secs(5), "no change: {what}");
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

fn quiet(rx: &mut tokio::sync::mpsc::Receiver<NodeChange>, d: Duration) {
    std::thread::sleep(d);
    if let Ok(c) = rx.try_recv() {
        panic!("unexpected change {c:?}");
    }
}

fn node(c: &NodeChange) -> Option<String> {
    c.node.as_ref().map(|n| n.display().to_string())
}

/// Stand-in for systemd-udevd: runs the real rules (`udevadm test`, which writes the udev
/// database and links in the sandbox), then broadcasts what the database says.
struct Udevd {
    b: UdevBroadcaster,
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

impl Udevd {
    /// The device's properties from the udev database.
    fn info(&self, devpath: &str) -> Vec<(String, String)> {
        let out = std::process::Command::new(labd_hw_fixtures::require_program("udevadm").unwrap())
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

    /// A new device: rules, database, then (if the monitor is to hear it) the broadcast.
    /// Returns when the broadcast was sent.
    fn add(&self, devpath: &str, seq: u64, broadcast: bool) -> Instant {
        let out = std::process::Command::new(labd_hw_fixtures::require_program("udevadm").unwrap())
            .args(["test", "--action=add"])
            .arg(format!("/sys{devpath}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "udevadm test {devpath}");
        let props = with(&self.info(devpath), "add", seq);
        let sent = Instant::now();
        if broadcast {
            self.b.send(&props).unwrap();
        }
        sent
    }

    /// A removed device (`props` read before it went): database entry dropped, broadcast.
    fn remove(&self, props: &[(String, String)], seq: u64, broadcast: bool) {
        let get = |k: &str| {
            props
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        if let (Some(major), Some(minor)) = (get("MAJOR"), get("MINOR")) {
            let _ = std::fs::remove_file(format!("/run/udev/data/c{major}:{minor}"));
        }
        if broadcast {
            self.b.send(&with(props, "remove", seq)).unwrap();
        }
    }
}

#[test]
fn inner_discovery_follows_live_udev_events() {
    if std::env::var_os(INNER).is_none() {
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let inv = Inventory::load(&repo().join("udev-rules/example-inventory.toml")).unwrap();
    let mut cfg = DiscoveryConfig::from_inventory(&inv);
    cfg.poll_interval = Duration::from_millis(100);
    cfg.rescan_interval = Duration::from_millis(400);
    let started = Discovery::start(cfg).unwrap();
    let (discovery, mut rx) = (started.discovery, started.changes);
    assert_eq!(
        discovery.mode,
        Mode::Udev,
        "a udev daemon 'runs' in the sandbox"
    );

    // Start-up: enumeration through libudev finds every adapter, all nine devices online.
    let initial: BTreeMap<String, Option<String>> = started
        .initial
        .iter()
        .map(|c| (c.device.to_string(), node(c)))
        .collect();
    assert_eq!(initial.len(), 9, "{initial:?}");
    assert_eq!(initial["bbb01"].as_deref(), Some("/dev/ttyUSB0"));
    assert_eq!(initial["imx8mp-05"].as_deref(), Some("/dev/ttyUSB5"));
    assert_eq!(initial["nanopi-09"].as_deref(), Some("/dev/ttyUSB10"));
    assert!(initial.values().all(Option::is_some), "{initial:?}");
    assert_eq!(discovery.status()[&"bbb01".parse().unwrap()].via, "udev");
    quiet(&mut rx, Duration::from_millis(200));

    let sys = SimSysfs::open("/sys");
    let udevd = Udevd {
        b: UdevBroadcaster::new().unwrap(),
    };

    // Unplug the FT232R: the kernel removes it, udevd broadcasts the remove.
    let tty0 = "/devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/ttyUSB0/tty/ttyUSB0";
    let first_plug = udevd.info(tty0);
    sys.unplug("1-2").unwrap();
    let sent = Instant::now();
    udevd.remove(&first_plug, 4718, true);
    let (c, latency) = recv_since(&mut rx, "remove", sent);
    assert_eq!((c.device.as_str(), node(&c)), ("bbb01", None));
    println!("remove → offline in {latency:?}");

    // Plugged back; ttyUSB0 was still held open, so it comes back as ttyUSB11.
    let re = simudev::replugged_ft232r();
    let tty11 = sys.plug(&re.adapter, &re.placement).unwrap().remove(0);
    let sent = udevd.add(&tty11, 4725, true);
    let (c, latency) = recv_since(&mut rx, "replug", sent);
    assert_eq!(node(&c).as_deref(), Some("/dev/ttyUSB11"));
    assert_eq!(
        c.adapter.as_ref().unwrap().serial_short.as_deref(),
        Some("A10K6L1B")
    );
    println!("add → online at the new node in {latency:?}");

    // Unplugged again, but the monitor never sees the remove (socket overrun): the periodic
    // liveness check notices that ttyUSB11's sysfs path is gone.
    let second_plug = udevd.info(&tty11);
    let t0 = Instant::now();
    sys.unplug("1-2").unwrap();
    udevd.remove(&second_plug, 4735, false);
    let (c, took) = recv_since(&mut rx, "liveness check after a missed remove", t0);
    assert_eq!((c.device.as_str(), node(&c)), ("bbb01", None));
    println!("missed remove noticed by the liveness check after {took:?}");
    let back = simudev::Placement {
        first_tty: 0,
        devnum: 13,
        ..re.placement.clone()
    };
    let tty0_again = sys.plug(&re.adapter, &back).unwrap().remove(0);
    assert_eq!(tty0_again, tty0);
    let sent = udevd.add(tty0, 4740, true);
    let (c, _) = recv_since(&mut rx, "add after a missed remove", sent);
    assert_eq!(node(&c).as_deref(), Some("/dev/ttyUSB0"));
    let bbb = &"bbb01".parse().unwrap();
    quiet(&mut rx, Duration::from_millis(300));

    // The remove of the first plug arrives very late: older SEQNUM than the add for that
    // path, ignored.
    udevd.b.send(&with(&first_plug, "remove", 4730)).unwrap();
    quiet(&mut rx, Duration::from_millis(300));
    assert_eq!(
        discovery.status()[bbb].node,
        Some(PathBuf::from("/dev/ttyUSB0"))
    );

    // The missed remove of ttyUSB11 finally arrives: nothing bound changes.
    udevd.b.send(&with(&second_plug, "remove", 4735)).unwrap();
    quiet(&mut rx, Duration::from_millis(300));

    // Another subsystem on the same group: dropped by the monitor's filter, nothing happens.
    udevd
        .b
        .send(&[
            ("ACTION".into(), "remove".into()),
            ("DEVPATH".into(), "/devices/virtual/net/dummy0".into()),
            ("SUBSYSTEM".into(), "net".into()),
            ("SEQNUM".into(), "4750".into()),
        ])
        .unwrap();
    quiet(&mut rx, Duration::from_millis(200));

    // The CH340 is replugged while the monitor is overrun: udevd processes both events but
    // labd hears neither. The periodic re-enumeration finds it on its new node, the old entry
    // fails the liveness check, and rescans of unchanged adapters announce nothing.
    let tty10 = "/devices/pci0000:00/0000:00:14.0/usb1/1-4/1-4:1.0/ttyUSB10/tty/ttyUSB10";
    let ch340_before = udevd.info(tty10);
    let t0 = Instant::now();
    sys.unplug("1-4").unwrap();
    udevd.remove(&ch340_before, 4760, false);
    let (c, _) = recv_since(
        &mut rx,
        "liveness check after the CH340's missed remove",
        t0,
    );
    assert_eq!((c.device.as_str(), node(&c)), ("nanopi-09", None));
    let tty12 = sys
        .plug(
            &simudev::UsbSerialAdapter::ch340(),
            &simudev::Placement {
                port: "1-4".into(),
                first_tty: 12,
                devnum: 14,
            },
        )
        .unwrap()
        .remove(0);
    let t0 = udevd.add(&tty12, 4761, false);
    let (c, took) = recv_since(&mut rx, "rescan after a missed add", t0);
    assert_eq!(
        (c.device.as_str(), node(&c).as_deref()),
        ("nanopi-09", Some("/dev/ttyUSB12"))
    );
    println!("missed add found by re-enumeration after {took:?}");
    quiet(&mut rx, Duration::from_millis(900));

    // Metrics of the udev domain, as the daemon's endpoint will render them.
    let text = labd::metrics::global().render();
    for line in [
        "labd_udev_adapters{device=\"bbb01\"} 1",
        "labd_udev_devices_online 9",
        "labd_udev_stale_events_total 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    discovery.stop();
}
