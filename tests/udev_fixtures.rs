//! The recorded property dumps in `hw-fixtures/udev/` are what the real udev (this machine's
//! `udevadm`, its `60-serial.rules`, `usb_id`, `path_id` and hwdb) reports for the simulated
//! adapters. This test re-runs udev and compares; `LABD_REGENERATE_FIXTURES=1` rewrites them.

use std::collections::BTreeMap;

use labd_hw_fixtures::simudev::{self, SimSysfs, UdevSandbox};

/// Properties that change on every run (timestamps).
const VOLATILE: &[&str] = &["USEC_INITIALIZED"];

/// Drops volatile properties and sorts DEVLINKS (udev keeps links in a hash set, so their
/// order changes from run to run).
fn normalise(dump: &str) -> Vec<String> {
    dump.lines()
        .filter(|l| !VOLATILE.iter().any(|k| l.starts_with(&format!("{k}="))))
        .map(|l| match l.strip_prefix("DEVLINKS=") {
            Some(links) => {
                let mut v: Vec<&str> = links.split(' ').collect();
                v.sort_unstable();
                format!("DEVLINKS={}", v.join(" "))
            }
            None => l.to_string(),
        })
        .collect()
}

#[test]
fn recorded_dumps_match_real_udev() {
    let tmp = tempfile::tempdir().unwrap();
    let sys = SimSysfs::create(tmp.path().join("sys")).unwrap();
    let rules = tmp.path().join("rules.d");
    std::fs::create_dir_all(&rules).unwrap();
    let mut order = Vec::new();
    let mut by_name: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for rec in simudev::recorded_adapters() {
        let ttys = sys.plug(&rec.adapter, &rec.placement).unwrap();
        order.extend(ttys.clone());
        by_name.insert(rec.name, ttys);
    }
    let run = UdevSandbox::new(sys.root(), &rules)
        .add_all(&order)
        .unwrap();
    // A replugged FT232R (same port, next tty number) in a second world.
    let tmp2 = tempfile::tempdir().unwrap();
    let sys2 = SimSysfs::create(tmp2.path().join("sys")).unwrap();
    let re = simudev::replugged_ft232r();
    let re_ttys = sys2.plug(&re.adapter, &re.placement).unwrap();
    let run2 = UdevSandbox::new(sys2.root(), &rules)
        .add_all(&re_ttys)
        .unwrap();
    by_name.insert(re.name, re_ttys);

    let dir = simudev::fixtures_dir();
    let regenerate = std::env::var_os("LABD_REGENERATE_FIXTURES").is_some();
    let mut mismatches = Vec::new();
    for (name, ttys) in &by_name {
        let mut text = String::new();
        for (i, t) in ttys.iter().enumerate() {
            let props = run
                .properties
                .get(t)
                .or_else(|| run2.properties.get(t))
                .unwrap_or_else(|| panic!("no properties for {t}: {:#?}", run.logs.get(t)));
            if i > 0 {
                text.push('\n');
            }
            text.push_str(props);
        }
        let path = dir.join(format!("{name}.properties"));
        if regenerate {
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let recorded =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if normalise(&recorded) != normalise(&text) {
            mismatches.push(format!(
                "{}:\n--- recorded\n{recorded}\n--- udev now\n{text}",
                path.display()
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    if regenerate {
        write_event_sequences();
    }
}

/// One step of a recorded event sequence: `action` of the `tty`-th tty of fixture `name`.
struct Step {
    name: &'static str,
    tty: usize,
    action: &'static str,
    seqnum: u64,
    /// Added to USEC_INITIALIZED: a replug is a new instance with a later value.
    usec_shift: u64,
}

const fn step(name: &'static str, tty: usize, action: &'static str, seqnum: u64) -> Step {
    Step {
        name,
        tty,
        action,
        seqnum,
        usec_shift: 0,
    }
}

/// The event sequences under `hw-fixtures/udev/events/`, in the order udev delivered them.
fn scenarios() -> Vec<(&'static str, &'static str, Vec<Step>)> {
    vec![
        (
            "replug.events",
            "FT232R unplugged and plugged back into the same port; it gets ttyUSB0 again",
            vec![
                step("ft232r", 0, "add", 4711),
                step("ft232r", 0, "remove", 4718),
                Step {
                    usec_shift: 9_512_337,
                    ..step("ft232r", 0, "add", 4725)
                },
            ],
        ),
        (
            "out-of-order.events",
            "FT232R replugged while ttyUSB0 was held open: the new ttyUSB11 add is delivered before the old remove",
            vec![
                step("ft232r", 0, "add", 4711),
                step("ft232r-replugged", 0, "add", 4725),
                step("ft232r", 0, "remove", 4718),
            ],
        ),
        (
            "missed-remove.events",
            "FT232R replugged; the monitor missed the remove of ttyUSB0 (socket overrun)",
            vec![
                step("ft232r", 0, "add", 4711),
                step("ft232r-replugged", 0, "add", 4725),
            ],
        ),
        (
            "stale-remove-same-node.events",
            "FT232R replugged into the same port and node; the old remove arrives after the new add",
            vec![
                step("ft232r", 0, "add", 4711),
                Step {
                    usec_shift: 9_512_337,
                    ..step("ft232r", 0, "add", 4725)
                },
                step("ft232r", 0, "remove", 4718),
            ],
        ),
        (
            "ft4232h.events",
            "FT4232H plugged in (four interfaces) and unplugged",
            vec![
                step("ft4232h", 0, "add", 5001),
                step("ft4232h", 1, "add", 5004),
                step("ft4232h", 2, "add", 5007),
                step("ft4232h", 3, "add", 5010),
                step("ft4232h", 0, "remove", 5020),
                step("ft4232h", 1, "remove", 5021),
                step("ft4232h", 2, "remove", 5022),
                step("ft4232h", 3, "remove", 5023),
            ],
        ),
        (
            "dupserial.events",
            "Two FT232R clones with the same serial A50285BI plugged one after the other",
            vec![
                step("ft232r-dupserial-a", 0, "add", 6001),
                step("ft232r-dupserial-b", 0, "add", 6009),
            ],
        ),
    ]
}

/// The order `udevadm monitor --udev --property` prints an event's properties in.
const HEAD_KEYS: &[&str] = &[
    "DEVPATH",
    "SUBSYSTEM",
    "DEVNAME",
    "SEQNUM",
    "USEC_INITIALIZED",
];
const TAIL_KEYS: &[&str] = &["MAJOR", "MINOR", "DEVLINKS", "TAGS", "CURRENT_TAGS"];

fn render_event(dump: &str, s: &Step) -> String {
    let props: Vec<(&str, &str)> = dump.lines().filter_map(|l| l.split_once('=')).collect();
    let get = |k: &str| props.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    let usec: u64 = get("USEC_INITIALIZED").unwrap().parse::<u64>().unwrap() + s.usec_shift;
    let devpath = get("DEVPATH").unwrap();
    // The header's timestamp is CLOCK_MONOTONIC when udev finished the event.
    let t = usec + s.seqnum * 37;
    let mut out = format!(
        "UDEV  [{}.{:06}] {:<8} {} (tty)\nACTION={}\n",
        t / 1_000_000,
        t % 1_000_000,
        s.action,
        devpath,
        s.action
    );
    for k in HEAD_KEYS {
        let v = match *k {
            "SEQNUM" => s.seqnum.to_string(),
            "USEC_INITIALIZED" => usec.to_string(),
            _ => get(k).unwrap().to_string(),
        };
        out.push_str(&format!("{k}={v}\n"));
    }
    for (k, v) in &props {
        if !HEAD_KEYS.contains(k) && !TAIL_KEYS.contains(k) {
            out.push_str(&format!("{k}={v}\n"));
        }
    }
    for k in TAIL_KEYS {
        if let Some(v) = get(k) {
            out.push_str(&format!("{k}={v}\n"));
        }
    }
    out.push('\n');
    out
}

fn render_sequences() -> Vec<(std::path::PathBuf, String)> {
    let dir = simudev::fixtures_dir();
    let mut out = Vec::new();
    for (file, about, steps) in scenarios() {
        let mut text =
            format!("# {about}\n# udevadm monitor --udev --property --subsystem-match=tty\n\n");
        for s in &steps {
            let dump = std::fs::read_to_string(dir.join(format!("{}.properties", s.name))).unwrap();
            let record = dump.split("\n\n").nth(s.tty).unwrap();
            text.push_str(&render_event(record, s));
        }
        out.push((dir.join("events").join(file), text));
    }
    out
}

fn write_event_sequences() {
    std::fs::create_dir_all(simudev::fixtures_dir().join("events")).unwrap();
    for (path, text) in render_sequences() {
        std::fs::write(&path, &text).unwrap();
    }
}

/// Event files are derived from the dumps (same identity, plus ACTION/SEQNUM as the monitor
/// prints them); this keeps them in sync.
#[test]
fn recorded_event_sequences_are_derived_from_the_dumps() {
    if std::env::var_os("LABD_REGENERATE_FIXTURES").is_some() {
        return; // rewritten by recorded_dumps_match_real_udev, after the dumps
    }
    for (path, text) in render_sequences() {
        let recorded =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            recorded,
            text,
            "{} is out of date; LABD_REGENERATE_FIXTURES=1",
            path.display()
        );
    }
}
