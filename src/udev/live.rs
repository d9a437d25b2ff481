//! libudev access: enumerate the ttys present and turn a libudev device (enumerated or from a
//! monitor event) into the same [`PropertyRecord`] a recorded dump gives, so live and replayed
//! devices go through one code path.
//!
//! Blocking (reads sysfs and the udev database): call from a dedicated thread or
//! `spawn_blocking`, never on the async executor.

use std::collections::BTreeMap;
use std::path::Path;

use super::UdevError;
use super::event::UdevEvent;
use super::identity::AdapterIdentity;
use super::props::{PropertyRecord, RecordSource};

/// The control socket systemd-udevd creates; libudev itself uses it to decide whether a udev
/// daemon runs (without one, a monitor would silently receive nothing).
pub const UDEV_CONTROL: &str = "/run/udev/control";

/// Whether a udev daemon runs on this machine.
pub fn udev_daemon_running() -> bool {
    Path::new(UDEV_CONTROL).exists()
}

fn os(s: &std::ffi::OsStr) -> String {
    s.to_string_lossy().into_owned()
}

/// The record for a libudev device: its udev properties when udev has processed it; otherwise
/// (no udev database, e.g. a container with passed-through adapters) what `usb_id` and
/// `path_id` would have derived, read from sysfs attributes.
pub fn record_from_device(dev: &udev::Device, source: RecordSource) -> PropertyRecord {
    let mut props: BTreeMap<String, String> = dev
        .properties()
        .map(|p| (os(p.name()), os(p.value())))
        .collect();
    if !props.contains_key("ID_BUS") {
        fill_from_sysfs(dev, &mut props);
    }
    // `.ID_PORT` is not exported; the usb-serial parent has it.
    if let Ok(Some(port)) = dev.parent_with_subsystem("usb-serial") {
        if let Some(n) = port.attribute_value("port_number") {
            props.insert("LABD_PORT_NUMBER".into(), os(n).trim().to_string());
        }
    }
    PropertyRecord {
        line: 0,
        source,
        props,
    }
}

/// `udev_replace_chars` in spirit: keep what udev keeps in `ID_SERIAL_SHORT`, replace the rest.
fn udev_safe(s: &str) -> String {
    s.trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "#+-.:=@_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn fill_from_sysfs(dev: &udev::Device, props: &mut BTreeMap<String, String>) {
    let attr = |d: &udev::Device, a: &str| d.attribute_value(a).map(|v| os(v).trim().to_string());
    let Ok(Some(iface)) = dev.parent_with_subsystem_devtype("usb", "usb_interface") else {
        return;
    };
    let Ok(Some(usb)) = dev.parent_with_subsystem_devtype("usb", "usb_device") else {
        return;
    };
    props.insert("ID_BUS".into(), "usb".into());
    if let Some(v) = attr(&usb, "idVendor") {
        props.insert("ID_VENDOR_ID".into(), v);
    }
    if let Some(v) = attr(&usb, "idProduct") {
        props.insert("ID_MODEL_ID".into(), v);
    }
    if let Some(v) = attr(&usb, "manufacturer") {
        props.insert("ID_VENDOR".into(), udev_safe(&v));
    }
    if let Some(v) = attr(&usb, "product") {
        props.insert("ID_MODEL".into(), udev_safe(&v));
    }
    if let Some(v) = attr(&usb, "serial").filter(|s| !s.is_empty()) {
        props.insert("ID_SERIAL_SHORT".into(), udev_safe(&v));
    }
    if let Some(v) = attr(&iface, "bInterfaceNumber") {
        props.insert("ID_USB_INTERFACE_NUM".into(), v);
    }
    if let Some(d) = iface.driver() {
        props.insert("ID_USB_DRIVER".into(), os(d));
    }
    if let Some(p) = usb_id_path(&iface) {
        props.insert("ID_PATH".into(), p);
    }
}

/// `path_id` for the common case of a USB interface under a PCI (or platform) controller:
/// `pci-0000:00:14.0-usb-0:1.2:1.0`.
fn usb_id_path(iface: &udev::Device) -> Option<String> {
    let sysname = os(iface.sysname());
    let (_, port) = sysname.split_once('-')?;
    let mut path = format!("usb-0:{port}");
    let mut cur = iface.parent();
    while let Some(d) = cur {
        let subsystem = d.subsystem().map(os);
        match subsystem.as_deref() {
            Some("usb") => {}
            Some("pci") => {
                path = format!("pci-{}-{path}", os(d.sysname()));
                return Some(path);
            }
            Some("platform") => {
                path = format!("platform-{}-{path}", os(d.sysname()));
                return Some(path);
            }
            _ => {}
        }
        cur = d.parent();
    }
    Some(path)
}

/// The identity of a libudev device.
pub fn identity_from_device(dev: &udev::Device) -> AdapterIdentity {
    identity_from_record(&record_from_device(dev, RecordSource::Database))
}

/// Identity from a record built by [`record_from_device`] (port number included).
pub fn identity_from_record(r: &PropertyRecord) -> AdapterIdentity {
    let mut id = AdapterIdentity::from_record(r);
    if let Some(n) = r.get("LABD_PORT_NUMBER").and_then(|n| n.parse().ok()) {
        id.port_number = Some(n);
    }
    id
}

/// Every tty present, as enumeration events (no sequence number).
pub fn enumerate_ttys() -> Result<Vec<UdevEvent>, UdevError> {
    let err = |context| move |source| UdevError::Libudev { context, source };
    let mut e = udev::Enumerator::new().map_err(err("creating an enumerator"))?;
    e.match_subsystem("tty")
        .map_err(err("filtering the tty subsystem"))?;
    let devices = e.scan_devices().map_err(err("scanning devices"))?;
    Ok(devices
        .filter_map(|d| {
            let rec = record_from_device(&d, RecordSource::Database);
            let mut ev = UdevEvent::from_record(&rec).ok()?;
            ev.identity = identity_from_record(&rec);
            Some(ev)
        })
        .collect())
}

/// The event for a monitor event's device (ACTION and SEQNUM are among its properties).
pub fn event_from_device(dev: &udev::Device) -> Option<UdevEvent> {
    let rec = record_from_device(dev, RecordSource::Udev);
    let mut ev = UdevEvent::from_record(&rec).ok()?;
    ev.identity = identity_from_record(&rec);
    Some(ev)
}
