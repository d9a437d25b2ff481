//! What identifies a USB-serial adapter, built from udev properties (a recorded dump or libudev),
//! and the matcher against `[device.usb]` that the daemon, `labd devices` and the tests share.

use std::fmt::Write as _;
use std::path::PathBuf;

use super::config::UsbMatch;
use super::props::PropertyRecord;

/// One tty as udev describes it. Fields are `None` when udev did not report them (a CH340 has
/// no serial; a platform UART has no USB ids).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdapterIdentity {
    /// Kernel device path (`DEVPATH`), the key udev events are about.
    pub devpath: String,
    /// Device node (`DEVNAME`), e.g. `/dev/ttyUSB0`.
    pub devnode: Option<PathBuf>,
    pub subsystem: Option<String>,
    /// `ID_BUS` (`usb` for USB adapters).
    pub bus: Option<String>,
    /// `ID_VENDOR_ID`, lowercase hex.
    pub vendor_id: Option<String>,
    /// `ID_MODEL_ID`, lowercase hex.
    pub model_id: Option<String>,
    /// `ID_VENDOR` / `ID_MODEL`: names, for display.
    pub vendor: Option<String>,
    pub model: Option<String>,
    /// `ID_SERIAL_SHORT`: the adapter's iSerial; absent when it has none.
    pub serial_short: Option<String>,
    /// `ID_USB_INTERFACE_NUM` parsed from its two hex digits.
    pub interface_num: Option<u8>,
    /// `ID_USB_DRIVER`, e.g. `ftdi_sio`, `ch341`, `cdc_acm`.
    pub driver: Option<String>,
    /// `ID_PATH`: the physical port chain.
    pub id_path: Option<String>,
    /// The usb-serial `port_number` (from libudev, or the `-portN` by-path link of a dump).
    pub port_number: Option<u8>,
    /// `DEVLINKS`.
    pub devlinks: Vec<PathBuf>,
    /// `USEC_INITIALIZED`: when udev first saw this instance; a replug gets a new value.
    pub usec_initialized: Option<u64>,
    /// `MAJOR`/`MINOR` of the node.
    pub devnum: Option<(u32, u32)>,
}

/// Property helper: non-empty value.
fn prop<'a>(get: &impl Fn(&str) -> Option<&'a str>, key: &str) -> Option<String> {
    get(key).filter(|v| !v.is_empty()).map(str::to_string)
}

impl AdapterIdentity {
    /// Builds the identity from any property lookup (a dump record or a libudev device).
    pub fn from_properties<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Self {
        let usb_or = |usb_key: &str, key: &str| prop(&get, usb_key).or_else(|| prop(&get, key));
        let devlinks: Vec<PathBuf> = get("DEVLINKS")
            .map(|l| l.split_whitespace().map(PathBuf::from).collect())
            .unwrap_or_default();
        let id_path = prop(&get, "ID_PATH");
        let port_number = id_path
            .as_deref()
            .and_then(|p| port_from_links(p, &devlinks));
        let devnum = match (get("MAJOR"), get("MINOR")) {
            (Some(a), Some(b)) => a.parse().ok().zip(b.parse().ok()),
            _ => None,
        };
        Self {
            devpath: get("DEVPATH").unwrap_or_default().to_string(),
            devnode: prop(&get, "DEVNAME").map(PathBuf::from),
            subsystem: prop(&get, "SUBSYSTEM"),
            bus: prop(&get, "ID_BUS"),
            vendor_id: usb_or("ID_USB_VENDOR_ID", "ID_VENDOR_ID").map(|s| s.to_ascii_lowercase()),
            model_id: usb_or("ID_USB_MODEL_ID", "ID_MODEL_ID").map(|s| s.to_ascii_lowercase()),
            vendor: usb_or("ID_USB_VENDOR", "ID_VENDOR"),
            model: usb_or("ID_USB_MODEL", "ID_MODEL"),
            serial_short: usb_or("ID_USB_SERIAL_SHORT", "ID_SERIAL_SHORT"),
            interface_num: get("ID_USB_INTERFACE_NUM").and_then(|s| u8::from_str_radix(s, 16).ok()),
            driver: prop(&get, "ID_USB_DRIVER"),
            id_path,
            port_number,
            devlinks,
            usec_initialized: get("USEC_INITIALIZED").and_then(|s| s.parse().ok()),
            devnum,
        }
    }

    pub fn from_record(r: &PropertyRecord) -> Self {
        Self::from_properties(|k| r.get(k))
    }

    /// A tty on a USB bus: what `[device.usb]` can describe.
    pub fn is_usb_tty(&self) -> bool {
        self.subsystem.as_deref() == Some("tty") && self.bus.as_deref() == Some("usb")
    }

    /// Short label for logs: the node, or the devpath when there is none.
    pub fn label(&self) -> String {
        match &self.devnode {
            Some(n) => n.display().to_string(),
            None => self.devpath.clone(),
        }
    }

    /// A `[device.usb]` snippet that matches this adapter and no other of its kind: by serial
    /// (plus interface for multi-port chips) when it has one, by `path` otherwise.
    /// `serial_unique` says whether no other present adapter shares its serial.
    pub fn suggest_snippet_with(&self, link: &str, serial_unique: bool) -> String {
        let mut s = String::from("[device.usb]\n");
        let _ = writeln!(
            s,
            "vendor = \"{}\"",
            self.vendor_id.as_deref().unwrap_or("????")
        );
        let _ = writeln!(
            s,
            "product = \"{}\"",
            self.model_id.as_deref().unwrap_or("????")
        );
        let serial_ok = self
            .serial_short
            .as_deref()
            .is_some_and(|s| !s.is_empty() && serial_unique);
        match (&self.serial_short, &self.id_path) {
            (Some(serial), _) if serial_ok => {
                let _ = writeln!(s, "serial = \"{serial}\"");
                if self.is_multi_interface() {
                    if let Some(i) = self.interface_num {
                        let _ = writeln!(s, "interface = {i}");
                    }
                }
            }
            (_, Some(path)) => {
                let _ = writeln!(s, "path = \"{path}\"");
            }
            _ => {}
        }
        if self.port_number.is_some_and(|p| p > 0) {
            if let Some(p) = self.port_number {
                let _ = writeln!(s, "port_number = {p}");
            }
        }
        let _ = writeln!(s, "symlink = \"{link}\"");
        s
    }

    /// [`Self::suggest_snippet_with`] for an adapter whose serial is not known to be shared.
    pub fn suggest_snippet(&self, link: &str) -> String {
        self.suggest_snippet_with(link, true)
    }

    /// FTDI multi-port chips (and anything that reports an interface other than 00) need the
    /// interface to tell their ttys apart.
    fn is_multi_interface(&self) -> bool {
        matches!(
            (self.vendor_id.as_deref(), self.model_id.as_deref()),
            (Some("0403"), Some("6010" | "6011"))
        ) || self.interface_num.is_some_and(|i| i > 0)
    }
}

/// `serial/by-path/<ID_PATH>-portN` from `60-serial.rules` carries the usb-serial port number,
/// which is not exported as a property.
fn port_from_links(id_path: &str, links: &[PathBuf]) -> Option<u8> {
    let prefix = format!("/dev/serial/by-path/{id_path}-port");
    links.iter().find_map(|l| {
        l.to_str()?
            .strip_prefix(prefix.as_str())
            .and_then(|n| n.parse().ok())
    })
}

impl UsbMatch {
    /// Whether `id` is the adapter this `[device.usb]` describes. The same semantics as the
    /// generated udev rule: every configured key must equal what udev reports.
    pub fn matches(&self, id: &AdapterIdentity) -> bool {
        if !id.is_usb_tty() {
            return false;
        }
        // Case-insensitive without allocating: this runs devices × adapters times per event.
        let same = |a: Option<&str>, b: &str| a.is_some_and(|a| a.eq_ignore_ascii_case(b));
        if !same(id.vendor_id.as_deref(), self.vendor.get_ref())
            || !same(id.model_id.as_deref(), self.product.get_ref())
        {
            return false;
        }
        if let Some(serial) = self.serial() {
            if id.serial_short.as_deref() != Some(serial) {
                return false;
            }
        }
        if let Some(path) = self.id_path() {
            if id.id_path.as_deref() != Some(path) {
                return false;
            }
        }
        if let Some(i) = self.interface() {
            if id.interface_num != Some(i) {
                return false;
            }
        }
        if let Some(p) = self.port_number() {
            if id.port_number != Some(p) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::udev::props::parse_dump;

    const FT232R: &str = "DEVPATH=/devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/ttyUSB0/tty/ttyUSB0\n\
DEVNAME=/dev/ttyUSB0\nMAJOR=188\nMINOR=0\nSUBSYSTEM=tty\nUSEC_INITIALIZED=6143227139\nID_BUS=usb\n\
ID_VENDOR_ID=0403\nID_MODEL_ID=6001\nID_SERIAL_SHORT=A10K6L1B\nID_USB_INTERFACE_NUM=00\nID_USB_DRIVER=ftdi_sio\n\
ID_PATH=pci-0000:00:14.0-usb-0:2:1.0\n\
DEVLINKS=/dev/serial/by-path/pci-0000:00:14.0-usb-0:2:1.0-port0 /dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10K6L1B-if00-port0\n";

    #[test]
    fn identity_from_a_dump() {
        let r = &parse_dump(FT232R).unwrap()[0];
        let id = AdapterIdentity::from_record(r);
        assert!(id.is_usb_tty());
        assert_eq!(id.vendor_id.as_deref(), Some("0403"));
        assert_eq!(id.serial_short.as_deref(), Some("A10K6L1B"));
        assert_eq!(id.interface_num, Some(0));
        assert_eq!(id.port_number, Some(0));
        assert_eq!(id.devnum, Some((188, 0)));
        assert_eq!(id.usec_initialized, Some(6143227139));
        assert_eq!(
            id.suggest_snippet("lab/x"),
            "[device.usb]\nvendor = \"0403\"\nproduct = \"6001\"\nserial = \"A10K6L1B\"\nsymlink = \"lab/x\"\n"
        );
        assert_eq!(
            id.suggest_snippet_with("lab/x", false),
            "[device.usb]\nvendor = \"0403\"\nproduct = \"6001\"\npath = \"pci-0000:00:14.0-usb-0:2:1.0\"\nsymlink = \"lab/x\"\n"
        );
    }
}
