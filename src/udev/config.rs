//! `[device.usb]`: how udev recognises a board's USB-serial adapter and which stable link it
//! gets. Validation here catches what would otherwise fail silently on the rack: two devices
//! whose rules match the same adapter, two rules creating one link, a console reading a tty that
//! is not its adapter's link.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::inventory::{DeviceConfig, Diagnostics, Inventory, SourceMap};

/// Group the generated rules give the tty when `[device.usb] group` is not set; the labd unit
/// runs with `SupplementaryGroups=dialout`.
pub const DEFAULT_GROUP: &str = "dialout";
/// Mode the generated rules give the tty when `[device.usb] mode` is not set.
pub const DEFAULT_MODE: &str = "0660";

/// `[device.usb]` as written in the inventory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsbMatch {
    /// USB vendor id, four hex digits as `lsusb` prints them (`0403` for FTDI).
    pub vendor: Spanned<String>,
    /// USB product id, four hex digits (`6001` for an FT232R).
    pub product: Spanned<String>,
    /// The adapter's iSerial (udev `ID_SERIAL_SHORT`, sysfs `serial`).
    pub serial: Option<Spanned<String>>,
    /// USB interface number (`bInterfaceNumber`) of multi-port chips (FT2232/FT4232: 0..3).
    pub interface: Option<Spanned<u8>>,
    /// The physical port (udev `ID_PATH`), for adapters without or with duplicate serials.
    pub path: Option<Spanned<String>>,
    /// usb-serial `port_number`, for chips exposing several ttys on one interface.
    pub port_number: Option<Spanned<u8>>,
    /// Link to create under `/dev`, e.g. `rack-usb02` or `lab/bbb01`.
    pub symlink: Spanned<String>,
    /// Group of the tty node (default `dialout`).
    pub group: Option<Spanned<String>>,
    /// Mode of the tty node, octal (default `0660`).
    pub mode: Option<Spanned<String>>,
}

impl UsbMatch {
    /// Vendor id as udev spells it (lowercase hex).
    pub fn vendor_id(&self) -> String {
        self.vendor.get_ref().to_ascii_lowercase()
    }

    /// Product id as udev spells it (lowercase hex).
    pub fn product_id(&self) -> String {
        self.product.get_ref().to_ascii_lowercase()
    }

    pub fn serial(&self) -> Option<&str> {
        self.serial.as_ref().map(|s| s.get_ref().as_str())
    }

    pub fn interface(&self) -> Option<u8> {
        self.interface.as_ref().map(|i| *i.get_ref())
    }

    pub fn id_path(&self) -> Option<&str> {
        self.path.as_ref().map(|p| p.get_ref().as_str())
    }

    pub fn port_number(&self) -> Option<u8> {
        self.port_number.as_ref().map(|p| *p.get_ref())
    }

    /// The link name relative to `/dev`.
    pub fn symlink(&self) -> &str {
        self.symlink.get_ref()
    }

    /// `/dev/<symlink>`: what a console's `tty` must be.
    pub fn link_path(&self) -> PathBuf {
        Path::new("/dev").join(self.symlink())
    }

    pub fn group(&self) -> &str {
        self.group.as_ref().map_or(DEFAULT_GROUP, |g| g.get_ref())
    }

    pub fn mode(&self) -> &str {
        self.mode.as_ref().map_or(DEFAULT_MODE, |m| m.get_ref())
    }

    /// Short human description of what this match selects, for messages.
    pub fn describe(&self) -> String {
        let mut s = format!("{}:{}", self.vendor_id(), self.product_id());
        if let Some(serial) = self.serial() {
            s.push_str(&format!(" serial {serial:?}"));
        }
        if let Some(path) = self.id_path() {
            s.push_str(&format!(" path {path:?}"));
        }
        if let Some(i) = self.interface() {
            s.push_str(&format!(" interface {i:02x}"));
        }
        if let Some(p) = self.port_number() {
            s.push_str(&format!(" port_number {p}"));
        }
        s
    }

    /// Whether one adapter could match both `self` and `other`: every key either unset on one
    /// side (a wildcard) or equal. Such a pair makes two rules fight over one tty.
    pub fn overlaps(&self, other: &UsbMatch) -> bool {
        fn compatible<T: PartialEq>(a: Option<T>, b: Option<T>) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
        }
        self.vendor_id() == other.vendor_id()
            && self.product_id() == other.product_id()
            && compatible(self.serial(), other.serial())
            && compatible(self.id_path(), other.id_path())
            && compatible(self.interface(), other.interface())
            && compatible(self.port_number(), other.port_number())
            // A serial-only match and a path-only match may be the same adapter, or not; only
            // flag them when both sides pin the same kind of identity.
            && (self.serial().is_some() == other.serial().is_some()
                || self.id_path().is_some() == other.id_path().is_some())
    }
}

/// Characters udev keeps unchanged in `ID_SERIAL_SHORT` (`udev_replace_chars` keeps
/// alphanumerics and these), none of which is special in a rule's glob match.
const SERIAL_EXTRA: &str = "#+-.:=@_";

fn is_hex4(s: &str) -> bool {
    s.len() == 4 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// Checks the syntax of one `[device.usb]`; returns nothing, pushes diagnostics.
fn check_fields(src: &SourceMap, name: &str, usb: &UsbMatch, diags: &mut Diagnostics) {
    for (key, value) in [("vendor", &usb.vendor), ("product", &usb.product)] {
        if !is_hex4(value.get_ref()) {
            diags.push(src.diag(
                value.span(),
                format!("device.usb.{key}"),
                format!(
                    "device {name:?}: {key} {:?} is not a USB id; write the four hex digits lsusb shows, e.g. \"0403\"",
                    value.get_ref()
                ),
            ));
        }
    }
    if let Some(serial) = &usb.serial {
        let s = serial.get_ref();
        let ok = !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || SERIAL_EXTRA.contains(c));
        if !ok {
            diags.push(src.diag(
                serial.span(),
                "device.usb.serial",
                format!(
                    "device {name:?}: serial {s:?} must be non-empty and use only letters, digits and {SERIAL_EXTRA:?} (what udev reports in ID_SERIAL_SHORT); match such an adapter by `path`"
                ),
            ));
        }
    }
    if let Some(path) = &usb.path {
        let p = path.get_ref();
        let ok = !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:+".contains(c));
        if !ok {
            diags.push(src.diag(
                path.span(),
                "device.usb.path",
                format!(
                    "device {name:?}: path {p:?} is not a udev ID_PATH (e.g. \"pci-0000:00:14.0-usb-0:1.4:1.0\"; `labd devices` prints it)"
                ),
            ));
        } else if let (Some(iface), Some(path_iface)) = (&usb.interface, id_path_interface(p)) {
            if *iface.get_ref() != path_iface {
                diags.push(src.diag(
                    iface.span(),
                    "device.usb.interface",
                    format!(
                        "device {name:?}: interface {} contradicts path {p:?}, which ends in interface {path_iface}",
                        iface.get_ref()
                    ),
                ));
            }
        }
    }
    if usb.serial.is_none() && usb.path.is_none() {
        diags.push(src.diag(
            usb.symlink.span(),
            "device.usb",
            format!(
                "device {name:?}: [device.usb] needs `serial` or `path`, otherwise every {}:{} adapter would get this link",
                usb.vendor_id(),
                usb.product_id()
            ),
        ));
    }
    let link = usb.symlink.get_ref();
    let link_ok = !link.is_empty()
        && !link.starts_with('/')
        && !link.ends_with('/')
        && link
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
        && link
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.+/".contains(c));
    if !link_ok {
        diags.push(src.diag(
            usb.symlink.span(),
            "device.usb.symlink",
            format!(
                "device {name:?}: symlink {link:?} must be a name relative to /dev such as \"rack-usb02\" or \"lab/bbb01\" (letters, digits, '-', '_', '.', '+', '/')"
            ),
        ));
    } else if link.starts_with("serial/")
        || link.starts_with("char/")
        || !link.contains('/') && link.starts_with("tty")
    {
        diags.push(src.diag(
            usb.symlink.span(),
            "device.usb.symlink",
            format!(
                "device {name:?}: symlink {link:?} would collide with names the kernel or systemd's rules create; pick e.g. \"lab/{name}\""
            ),
        ));
    }
    if let Some(group) = &usb.group {
        let g = group.get_ref();
        let ok = !g.is_empty()
            && g.len() <= 32
            && g.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c));
        if !ok {
            diags.push(src.diag(
                group.span(),
                "device.usb.group",
                format!("device {name:?}: group {g:?} is not a group name"),
            ));
        }
    }
    if let Some(mode) = &usb.mode {
        let m = mode.get_ref();
        let ok = (3..=4).contains(&m.len()) && m.chars().all(|c| ('0'..='7').contains(&c));
        if !ok {
            diags.push(src.diag(
                mode.span(),
                "device.usb.mode",
                format!("device {name:?}: mode {m:?} must be octal, e.g. \"0660\""),
            ));
        }
    }
}

/// The interface number at the end of a USB `ID_PATH` (`…-usb-0:1.4:1.2` → 2), if it has one.
pub fn id_path_interface(path: &str) -> Option<u8> {
    let usb = path.rsplit_once("-usb-")?.1;
    let (_, conf_iface) = usb.rsplit_once(':')?;
    let (_, iface) = conf_iface.split_once('.')?;
    iface.parse().ok()
}

fn line_of(src: &SourceMap, span: &Range<usize>) -> usize {
    src.line_col(span.start).0
}

/// Cross-checks of `[device.usb]` against the rest of the inventory: overlapping matches,
/// duplicate links, consoles that do not read their adapter's link.
pub fn validate(inv: &Inventory, diags: &mut Diagnostics) {
    let src = &inv.source;
    let with_usb: Vec<(&DeviceConfig, &UsbMatch)> = inv
        .devices
        .iter()
        .filter_map(|d| d.usb.as_ref().map(|u| (d, u)))
        .collect();
    for (dev, usb) in &with_usb {
        check_fields(src, dev.name().as_str(), usb, diags);
    }
    for (i, (dev, usb)) in with_usb.iter().enumerate() {
        let name = dev.name().as_str();
        for (other_dev, other) in &with_usb[..i] {
            let other_name = other_dev.name().as_str();
            if other.symlink() == usb.symlink() {
                diags.push(src.diag(
                    usb.symlink.span(),
                    "device.usb.symlink",
                    format!(
                        "devices {other_name:?} (line {}) and {name:?} both want the link /dev/{}",
                        line_of(src, &other_dev.name.span()),
                        usb.symlink()
                    ),
                ));
            }
            if other.overlaps(usb) {
                let at = usb
                    .serial
                    .as_ref()
                    .map(|s| s.span())
                    .or_else(|| usb.path.as_ref().map(|p| p.span()))
                    .unwrap_or_else(|| usb.vendor.span());
                let key = if usb.serial.is_some() {
                    "device.usb.serial"
                } else {
                    "device.usb.path"
                };
                diags.push(src.diag(
                    at,
                    key,
                    format!(
                        "devices {other_name:?} (line {}, {}) and {name:?} ({}) would match the same adapter; \
                         add `interface` or `port_number` to tell its ports apart, or match by `path`",
                        line_of(src, &other_dev.name.span()),
                        other.describe(),
                        usb.describe()
                    ),
                ));
            }
        }
    }
    // A console tty must be its own adapter's link, and must not be someone else's.
    for dev in &inv.devices {
        let name = dev.name().as_str();
        let Some(tty) = dev.console.as_ref().and_then(|c| c.tty.as_ref()) else {
            continue;
        };
        let tty_path = tty.get_ref();
        let owner = with_usb
            .iter()
            .find(|(_, u)| u.link_path() == *tty_path || Path::new(u.symlink()) == tty_path);
        match (&dev.usb, owner) {
            (Some(usb), Some((owner_dev, _))) if owner_dev.name() != dev.name() => {
                diags.push(src.diag(
                    tty.span(),
                    "device.console.tty",
                    format!(
                        "device {name:?}: console tty {:?} is the link of device {:?}'s adapter, not of its own ({})",
                        tty_path,
                        owner_dev.name().as_str(),
                        usb.link_path().display()
                    ),
                ));
            }
            (Some(usb), None) => {
                diags.push(src.diag(
                    tty.span(),
                    "device.console.tty",
                    format!(
                        "device {name:?}: console tty {:?} is not the link {:?} that its [device.usb] creates",
                        tty_path,
                        usb.link_path()
                    ),
                ));
            }
            (None, Some((owner_dev, _))) => {
                diags.push(src.diag(
                    tty.span(),
                    "device.console.tty",
                    format!(
                        "device {name:?}: console tty {:?} is the link of device {:?}'s adapter",
                        tty_path,
                        owner_dev.name().as_str()
                    ),
                ));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
