//! Cost of following hotplug on a big worker: the tracker recomputes every device's binding on
//! each event (O(devices × adapters)), so measure it at 8 and 256 devices with real udev
//! property records, and the dump parser on the recorded fixtures. There is no real peer doing
//! the same job to compare with (udevd applies rules; it does not track inventory bindings);
//! `udevadm info --query=property` is timed on a real tty for scale.
//!
//! cargo bench --bench udev_tracker

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use labd::ids::DeviceName;
use labd::metrics::Registry;
use labd::udev::config::UsbMatch;
use labd::udev::metrics::UdevMetrics;
use labd::udev::{AssumeAlive, Target, Tracker, UdevEvent, parse_dump};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("hw-fixtures/udev")
}

fn usb(serial: &str) -> UsbMatch {
    #[derive(serde::Deserialize)]
    struct W {
        usb: UsbMatch,
    }
    let w: W = toml::from_str(&format!(
        "[usb]\nvendor = \"0403\"\nproduct = \"6001\"\nserial = \"{serial}\"\nsymlink = \"lab/{serial}\"\n"
    ))
    .unwrap();
    w.usb
}

/// `n` FT232R adapters with distinct serials and nodes, built from the recorded FT232R record.
fn events(n: usize) -> Vec<(UdevEvent, UdevEvent)> {
    let text = std::fs::read_to_string(fixtures().join("ft232r.properties")).unwrap();
    let base = parse_dump(&text).unwrap().remove(0);
    (0..n)
        .map(|i| {
            let mut r = base.clone();
            let serial = format!("S{i:07}");
            r.props.insert("ID_SERIAL_SHORT".into(), serial);
            r.props.insert(
                "DEVPATH".into(),
                format!(
                    "/devices/pci0000:00/0000:00:14.0/usb1/1-{i}/1-{i}:1.0/ttyUSB{i}/tty/ttyUSB{i}"
                ),
            );
            r.props.insert("DEVNAME".into(), format!("/dev/ttyUSB{i}"));
            let mut add = r.clone();
            add.props.insert("ACTION".into(), "add".into());
            let mut rm = r;
            rm.props.insert("ACTION".into(), "remove".into());
            (
                UdevEvent::from_record(&add).unwrap(),
                UdevEvent::from_record(&rm).unwrap(),
            )
        })
        .collect()
}

fn bench_tracker(devices: usize) {
    let registry: &'static Registry = Box::leak(Box::default());
    let targets = (0..devices)
        .map(|i| Target {
            device: DeviceName::new(format!("dev{i}")).unwrap(),
            usb: usb(&format!("S{i:07}")),
        })
        .collect();
    let mut t = Tracker::new(targets, UdevMetrics::new(registry));
    let evs = events(devices);
    // All plugged, then replug cycles of one adapter at a time.
    let mut seq = 1;
    for (add, _) in &evs {
        let mut e = add.clone();
        e.seqnum = Some(seq);
        seq += 1;
        t.apply(e, &AssumeAlive);
    }
    let rounds = 4000 / devices.max(1) + 20;
    let t0 = Instant::now();
    let mut n = 0u64;
    for _ in 0..rounds {
        for (add, rm) in &evs {
            for e in [rm, add] {
                let mut e = e.clone();
                e.seqnum = Some(seq);
                seq += 1;
                black_box(t.apply(e, &AssumeAlive));
                n += 1;
            }
        }
    }
    let per = t0.elapsed() / n as u32;
    println!("tracker, {devices:>3} devices and adapters: {per:>10.2?} per event ({n} events)");
}

fn bench_parser() {
    let mut text = String::new();
    for e in std::fs::read_dir(fixtures()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "properties") {
            text.push_str(&std::fs::read_to_string(&p).unwrap());
            text.push('\n');
        }
    }
    let records = parse_dump(&text).unwrap().len();
    let t0 = Instant::now();
    let mut n = 0;
    while t0.elapsed() < Duration::from_millis(500) {
        black_box(parse_dump(black_box(&text)).unwrap());
        n += 1;
    }
    let per = t0.elapsed() / (n * records) as u32;
    println!(
        "dump parser: {per:.2?} per record ({} bytes, {records} records per pass)",
        text.len()
    );
}

fn bench_udevadm() {
    // For scale: what asking udev costs (process start + database read).
    let t0 = Instant::now();
    let runs = 20;
    for _ in 0..runs {
        let out = std::process::Command::new("udevadm")
            .args(["info", "--query=property", "--name=/dev/tty"])
            .output();
        if out.is_err() {
            println!("udevadm not found; skipped");
            return;
        }
    }
    println!(
        "udevadm info --query=property (one tty): {:.2?} per call",
        t0.elapsed() / runs
    );
}

fn main() {
    bench_parser();
    bench_tracker(8);
    bench_tracker(64);
    bench_tracker(256);
    bench_udevadm();
}
