//! Replays the recorded udev dumps and event sequences of `hw-fixtures/udev/` through the
//! tracker the daemon uses (`labd::udev::Tracker`), against the example inventory: start-up
//! enumeration, replug, events out of order, a missed remove, an FT4232H, duplicate serials.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use labd::inventory::Inventory;
use labd::metrics::Registry;
use labd::udev::metrics::UdevMetrics;
use labd::udev::{
    AdapterIdentity, AssumeAlive, Liveness, NodeChange, Target, Tracker, UdevEvent, parse_dump,
};
use labd_hw_fixtures::simudev::fixtures_dir;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tracker_for(inv_text: Option<&str>) -> Tracker {
    let inv = match inv_text {
        None => Inventory::load(&repo().join("udev-rules/example-inventory.toml")).unwrap(),
        Some(t) => Inventory::parse(Path::new("inv.toml"), t).unwrap(),
    };
    let registry: &'static Registry = Box::leak(Box::default());
    Tracker::new(Target::from_inventory(&inv), UdevMetrics::new(registry))
}

fn events(file: &str) -> Vec<UdevEvent> {
    let text = std::fs::read_to_string(fixtures_dir().join("events").join(file)).unwrap();
    parse_dump(&text)
        .unwrap()
        .iter()
        .map(|r| UdevEvent::from_record(r).unwrap())
        .collect()
}

fn dump(name: &str) -> Vec<UdevEvent> {
    let text = std::fs::read_to_string(fixtures_dir().join(format!("{name}.properties"))).unwrap();
    parse_dump(&text)
        .unwrap()
        .iter()
        .map(|r| UdevEvent::from_record(r).unwrap())
        .collect()
}

fn replay(
    t: &mut Tracker,
    evs: Vec<UdevEvent>,
    live: &dyn Liveness,
) -> Vec<(String, Option<String>)> {
    evs.into_iter()
        .flat_map(|e| t.apply(e, live))
        .map(show)
        .collect()
}

fn show(c: NodeChange) -> (String, Option<String>) {
    (
        c.device.to_string(),
        c.node.map(|n| n.display().to_string()),
    )
}

fn on(d: &str, n: u32) -> (String, Option<String>) {
    (d.to_string(), Some(format!("/dev/ttyUSB{n}")))
}

fn off(d: &str) -> (String, Option<String>) {
    (d.to_string(), None)
}

fn node_of(t: &Tracker, device: &str) -> Option<String> {
    t.status()
        .into_iter()
        .find(|s| s.device.as_str() == device)
        .unwrap()
        .node
        .map(|n| n.display().to_string())
}

#[test]
fn start_up_enumeration_brings_every_device_online() {
    let mut t = tracker_for(None);
    let mut all = Vec::new();
    for name in [
        "ft232r",
        "ft2232h",
        "ft4232h",
        "pl2303-noserial",
        "ft232r-dupserial-a",
        "ft232r-dupserial-b",
        "ch340",
    ] {
        all.extend(dump(name));
    }
    assert!(
        all.iter().all(|e| e.seqnum.is_none()),
        "dumps carry no SEQNUM"
    );
    let mut changes: Vec<_> = replay(&mut t, all, &AssumeAlive);
    changes.extend(t.announce_all(&AssumeAlive).into_iter().map(show));
    let got: BTreeSet<_> = changes.into_iter().collect();
    let want: BTreeSet<_> = [
        on("bbb01", 0),
        on("rk3399-02", 1),
        on("rk3399-03", 2),
        on("imx8mp-04", 3),
        on("imx8mp-05", 5),
        on("sama5-06", 7),
        on("rpi3-07", 8),
        on("rpi3-08", 9),
        on("nanopi-09", 10),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);
    assert!(t.status().iter().all(|s| s.matching == 1));
    assert_eq!(
        t.adapters().count(),
        11,
        "every tty is tracked, matched or not"
    );
}

#[test]
fn replug_goes_offline_then_online_again() {
    let mut t = tracker_for(None);
    t.announce_all(&AssumeAlive);
    assert_eq!(
        replay(&mut t, events("replug.events"), &AssumeAlive),
        [on("bbb01", 0), off("bbb01"), on("bbb01", 0)]
    );
}

#[test]
fn add_delivered_before_the_older_remove() {
    let mut t = tracker_for(None);
    t.announce_all(&AssumeAlive);
    assert_eq!(
        replay(&mut t, events("out-of-order.events"), &AssumeAlive),
        [on("bbb01", 0), on("bbb01", 11)]
    );
    assert_eq!(node_of(&t, "bbb01").as_deref(), Some("/dev/ttyUSB11"));
}

/// The sysfs path of ttyUSB0 is gone: what `SysfsLiveness` reports after a missed remove.
struct Gone(&'static str);

impl Liveness for Gone {
    fn is_alive(&self, a: &AdapterIdentity) -> bool {
        !a.devpath.ends_with(self.0)
    }
}

#[test]
fn missed_remove_does_not_leave_the_console_on_the_stale_node() {
    let mut t = tracker_for(None);
    t.announce_all(&AssumeAlive);
    let mut evs = events("missed-remove.events").into_iter();
    assert_eq!(
        replay(&mut t, evs.next().into_iter().collect(), &AssumeAlive),
        [on("bbb01", 0)]
    );
    // Unplugged (remove missed) and replugged: ttyUSB0's sysfs path no longer exists.
    assert_eq!(
        replay(&mut t, evs.collect(), &Gone("/tty/ttyUSB0")),
        [on("bbb01", 11)]
    );
    // The stale ttyUSB0 entry was dropped when the newer adapter won.
    let bbb = t
        .status()
        .into_iter()
        .find(|s| s.device.as_str() == "bbb01")
        .unwrap();
    assert_eq!(bbb.matching, 1);
    // Even without a liveness signal, the newer SEQNUM wins.
    let mut t = tracker_for(None);
    assert_eq!(
        replay(&mut t, events("missed-remove.events"), &AssumeAlive),
        [on("bbb01", 0), on("bbb01", 11)]
    );
}

#[test]
fn same_node_replug_is_announced_and_the_late_remove_ignored() {
    let mut t = tracker_for(None);
    t.announce_all(&AssumeAlive);
    // The second add is a new instance (new USEC_INITIALIZED) on the same node: the console
    // must reopen even though the path did not change.
    assert_eq!(
        replay(
            &mut t,
            events("stale-remove-same-node.events"),
            &AssumeAlive
        ),
        [on("bbb01", 0), on("bbb01", 0)]
    );
    assert_eq!(node_of(&t, "bbb01").as_deref(), Some("/dev/ttyUSB0"));
}

#[test]
fn every_delivery_order_of_a_replug_ends_on_the_new_node() {
    for file in ["out-of-order.events", "replug.events"] {
        let evs = events(file);
        let final_node = {
            let mut t = tracker_for(None);
            replay(&mut t, evs.clone(), &AssumeAlive);
            node_of(&t, "bbb01")
        };
        for perm in permutations(evs.len()) {
            let mut t = tracker_for(None);
            replay(
                &mut t,
                perm.iter().map(|&i| evs[i].clone()).collect(),
                &AssumeAlive,
            );
            assert_eq!(
                node_of(&t, "bbb01"),
                final_node,
                "{file} delivered as {perm:?}"
            );
        }
    }
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for i in 0..=p.len() {
            let mut q = p.clone();
            q.insert(i, n - 1);
            out.push(q);
        }
    }
    out
}

#[test]
fn ft4232h_interfaces_map_to_their_devices() {
    let mut t = tracker_for(None);
    t.announce_all(&AssumeAlive);
    assert_eq!(
        replay(&mut t, events("ft4232h.events"), &AssumeAlive),
        [
            on("imx8mp-04", 3),
            on("imx8mp-05", 5),
            off("imx8mp-04"),
            off("imx8mp-05")
        ]
    );
}

#[test]
fn duplicate_serials_are_told_apart_by_path() {
    let mut t = tracker_for(None);
    t.announce_all(&AssumeAlive);
    assert_eq!(
        replay(&mut t, events("dupserial.events"), &AssumeAlive),
        [on("rpi3-07", 8), on("rpi3-08", 9)]
    );
}

#[test]
fn duplicate_serials_matched_by_serial_pick_the_newest_and_say_so() {
    let inv = "[worker]\nname = \"w\"\nstate_dir = \"/s\"\n[[device]]\nname = \"rpi\"\ndevice_type = \"x\"\n\
               [device.usb]\nvendor = \"0403\"\nproduct = \"6001\"\nserial = \"A50285BI\"\nsymlink = \"lab/rpi\"\n";
    let mut t = tracker_for(Some(inv));
    t.announce_all(&AssumeAlive);
    assert_eq!(
        replay(&mut t, events("dupserial.events"), &AssumeAlive),
        [on("rpi", 8), on("rpi", 9)]
    );
    assert_eq!(t.status()[0].matching, 2);
}

#[test]
fn kernel_records_and_bad_records_are_refused_not_applied() {
    let text = "KERNEL[1.0] add /devices/x/tty/ttyUSB0 (tty)\nACTION=add\nSEQNUM=1\n\n\
                UDEV  [1.1] add /devices/x/tty/ttyUSB0 (tty)\nACTION=explode\n\n\
                UDEV  [1.2] add /devices/x/tty/ttyUSB0 (tty)\nSEQNUM=x1\n";
    let recs = parse_dump(text).unwrap();
    let errs: Vec<String> = recs
        .iter()
        .map(|r| UdevEvent::from_record(r).unwrap_err().to_string())
        .collect();
    assert_eq!(
        errs,
        [
            "record at line 1 is a KERNEL uevent; only UDEV records (after rule processing) carry the identity",
            "record at line 5 has an unknown ACTION \"explode\"",
            "record at line 8 has a SEQNUM that is not a number: \"x1\""
        ]
    );
}
