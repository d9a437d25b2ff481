use std::path::{Path, PathBuf};

use super::*;
use crate::metrics::Registry;

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

fn tracker(serials: &[&str]) -> Tracker {
    let targets = serials
        .iter()
        .map(|s| Target {
            device: DeviceName::new(format!("dev-{s}")).unwrap(),
            usb: usb(s),
        })
        .collect();
    let reg: &'static Registry = Box::leak(Box::default());
    Tracker::new(targets, UdevMetrics::new(reg))
}

fn ev(action: Action, seq: Option<u64>, serial: &str, n: u32, usec: u64) -> UdevEvent {
    UdevEvent {
        action,
        seqnum: seq,
        devpath_old: None,
        identity: AdapterIdentity {
            devpath: format!("/devices/usb1/1-{n}/1-{n}:1.0/ttyUSB{n}/tty/ttyUSB{n}"),
            devnode: Some(PathBuf::from(format!("/dev/ttyUSB{n}"))),
            subsystem: Some("tty".into()),
            bus: Some("usb".into()),
            vendor_id: Some("0403".into()),
            model_id: Some("6001".into()),
            serial_short: Some(serial.into()),
            interface_num: Some(0),
            usec_initialized: Some(usec),
            devnum: Some((188, n)),
            ..Default::default()
        },
    }
}

fn nodes(changes: &[NodeChange]) -> Vec<(String, Option<String>)> {
    changes
        .iter()
        .map(|c| {
            (
                c.device.to_string(),
                c.node.as_ref().map(|n| n.display().to_string()),
            )
        })
        .collect()
}

fn on(dev: &str, node: &str) -> (String, Option<String>) {
    (dev.to_string(), Some(node.to_string()))
}

fn off(dev: &str) -> (String, Option<String>) {
    (dev.to_string(), None)
}

#[test]
fn enumeration_then_announce_reports_every_device() {
    let mut t = tracker(&["A1", "B2"]);
    assert!(
        !t.apply(ev(Action::Present, None, "A1", 0, 10), &AssumeAlive)
            .is_empty()
    );
    let all = t.announce_all(&AssumeAlive);
    assert_eq!(nodes(&all), [off("dev-B2")]);
}

#[test]
fn out_of_order_remove_is_ignored() {
    let mut t = tracker(&["A1"]);
    t.announce_all(&AssumeAlive);
    assert_eq!(
        nodes(&t.apply(ev(Action::Add, Some(12), "A1", 0, 20), &AssumeAlive)),
        [on("dev-A1", "/dev/ttyUSB0")]
    );
    // The remove of the previous plug (seq 11) arrives late.
    assert!(
        t.apply(ev(Action::Remove, Some(11), "A1", 0, 10), &AssumeAlive)
            .is_empty()
    );
    assert_eq!(
        t.status()[0].node.as_deref(),
        Some(Path::new("/dev/ttyUSB0"))
    );
}

#[test]
fn missed_remove_then_replug_on_another_node_moves_the_device() {
    let mut t = tracker(&["A1"]);
    t.apply(ev(Action::Add, Some(5), "A1", 0, 10), &AssumeAlive);
    // remove seq 6 never arrives; the replug shows up as ttyUSB1.
    assert_eq!(
        nodes(&t.apply(ev(Action::Add, Some(7), "A1", 1, 30), &AssumeAlive)),
        [on("dev-A1", "/dev/ttyUSB1")]
    );
    // The late remove of the old node does not take the device offline.
    assert!(
        t.apply(ev(Action::Remove, Some(6), "A1", 0, 10), &AssumeAlive)
            .is_empty()
    );
    assert_eq!(t.status()[0].matching, 1);
}

#[test]
fn missed_remove_then_replug_on_the_same_node_is_announced_again() {
    let mut t = tracker(&["A1"]);
    t.apply(ev(Action::Add, Some(5), "A1", 0, 10), &AssumeAlive);
    assert_eq!(
        nodes(&t.apply(ev(Action::Add, Some(9), "A1", 0, 99), &AssumeAlive)),
        [on("dev-A1", "/dev/ttyUSB0")]
    );
    // A change event for the same instance is not a reason to reopen.
    assert!(
        t.apply(ev(Action::Change, Some(10), "A1", 0, 99), &AssumeAlive)
            .is_empty()
    );
}

#[test]
fn duplicate_delivery_is_ignored() {
    let mut t = tracker(&["A1"]);
    t.apply(ev(Action::Add, Some(5), "A1", 0, 10), &AssumeAlive);
    assert!(
        t.apply(ev(Action::Add, Some(5), "A1", 0, 10), &AssumeAlive)
            .is_empty()
    );
}

struct DeadNodes(Vec<&'static str>);
impl Liveness for DeadNodes {
    fn is_alive(&self, a: &AdapterIdentity) -> bool {
        !self
            .0
            .iter()
            .any(|n| a.devnode.as_deref() == Some(Path::new(n)))
    }
}

#[test]
fn liveness_drops_a_vanished_adapter() {
    let mut t = tracker(&["A1"]);
    t.apply(ev(Action::Add, Some(5), "A1", 0, 10), &AssumeAlive);
    // The remove was missed; a recheck finds the sysfs path gone.
    assert_eq!(
        nodes(&t.recheck(&DeadNodes(vec!["/dev/ttyUSB0"]))),
        [off("dev-A1")]
    );
    assert_eq!(t.adapters().count(), 0);
}

#[test]
fn metrics_follow_the_state() {
    let reg: &'static Registry = Box::leak(Box::default());
    let mut t = Tracker::new(
        vec![Target {
            device: DeviceName::new("dev-A1").unwrap(),
            usb: usb("A1"),
        }],
        UdevMetrics::new(reg),
    );
    t.apply(ev(Action::Add, Some(5), "A1", 0, 10), &AssumeAlive);
    t.apply(ev(Action::Add, Some(6), "A1", 1, 11), &AssumeAlive);
    t.apply(ev(Action::Remove, Some(4), "A1", 0, 10), &AssumeAlive);
    let text = reg.render();
    for line in [
        "labd_udev_adapters{device=\"dev-A1\"} 2",
        "labd_udev_events_total{action=\"add\"} 2",
        "labd_udev_events_total{action=\"remove\"} 1",
        "labd_udev_stale_events_total 1",
        "labd_udev_devices_online 1",
        "labd_udev_ttys_present 2",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }
    t.apply(ev(Action::Remove, Some(7), "A1", 0, 10), &AssumeAlive);
    t.apply(ev(Action::Remove, Some(8), "A1", 1, 11), &AssumeAlive);
    let text = reg.render();
    assert!(
        text.contains("labd_udev_adapters{device=\"dev-A1\"} 0\n"),
        "{text}"
    );
    assert!(text.contains("labd_udev_devices_online 0\n"), "{text}");
}

#[test]
fn rescan_never_flips_the_newest_candidate() {
    let mut t = tracker(&["A1"]);
    t.apply(ev(Action::Add, Some(5), "A1", 0, 10), &AssumeAlive);
    t.apply(ev(Action::Add, Some(9), "A1", 1, 20), &AssumeAlive);
    assert_eq!(
        t.status()[0].node.as_deref(),
        Some(Path::new("/dev/ttyUSB1"))
    );
    // A periodic re-enumeration lists both again, the newer first, without SEQNUM.
    for (n, usec) in [(1, 20), (0, 10)] {
        assert!(
            t.apply(ev(Action::Present, None, "A1", n, usec), &AssumeAlive)
                .is_empty()
        );
    }
    assert_eq!(
        t.status()[0].node.as_deref(),
        Some(Path::new("/dev/ttyUSB1"))
    );
}

#[test]
fn add_event_after_a_rescan_saw_the_replug_is_not_a_new_instance() {
    // Under load the periodic rescan can see a replugged adapter before udev's add event is
    // delivered; the late add (here without USEC_INITIALIZED) must not announce it again.
    let mut t = tracker(&["A1"]);
    t.apply(ev(Action::Add, Some(5), "A1", 0, 10), &AssumeAlive);
    t.apply(ev(Action::Remove, Some(6), "A1", 0, 10), &AssumeAlive);
    let seen = t.apply(ev(Action::Present, None, "A1", 11, 30), &AssumeAlive);
    assert_eq!(nodes(&seen), [on("dev-A1", "/dev/ttyUSB11")]);
    let mut late = ev(Action::Add, Some(9), "A1", 11, 30);
    late.identity.usec_initialized = None;
    assert!(t.apply(late, &AssumeAlive).is_empty());
}
