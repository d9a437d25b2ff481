//! A simulated sysfs tree with USB-serial adapters plugged into an xHCI controller, laid out as
//! the kernel does (tty → usb-serial port → USB interface → USB device → hub → root hub → PCI),
//! with the attributes, `uevent` files, `subsystem`/`driver` links and binary `descriptors` that
//! udev's `usb_id` and `path_id` builtins read. Real `udevadm` then runs its real rules against it
//! (see [`super::sandbox`]).

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// A USB-serial adapter model: what its USB descriptors and driver say.
#[derive(Debug, Clone)]
pub struct UsbSerialAdapter {
    pub vendor_id: u16,
    pub product_id: u16,
    pub bcd_device: u16,
    pub bcd_usb: u16,
    pub manufacturer: Option<String>,
    pub product: Option<String>,
    pub serial: Option<String>,
    /// Kernel driver bound to the interfaces (`ftdi_sio`, `pl2303`, `ch341`).
    pub driver: String,
    /// Number of interfaces, one tty each.
    pub interfaces: u8,
    /// bInterfaceClass / SubClass / Protocol.
    pub interface_class: (u8, u8, u8),
    /// Interface string (FTDI chips repeat the product string), if any.
    pub interface_name: Option<String>,
    /// Link speed in Mbit/s (`12` full speed, `480` high speed).
    pub speed: u32,
    pub max_power_ma: u16,
}

impl UsbSerialAdapter {
    fn ftdi(product_id: u16, bcd: u16, product: &str, serial: Option<&str>, ifaces: u8) -> Self {
        Self {
            vendor_id: 0x0403,
            product_id,
            bcd_device: bcd,
            bcd_usb: 0x0200,
            manufacturer: Some("FTDI".into()),
            product: Some(product.into()),
            serial: serial.map(str::to_string),
            driver: "ftdi_sio".into(),
            interfaces: ifaces,
            interface_class: (0xff, 0xff, 0xff),
            interface_name: Some(product.into()),
            speed: if product_id == 0x6001 { 12 } else { 480 },
            max_power_ma: 90,
        }
    }

    /// FTDI FT232R: one UART, factory-programmed serial (full speed).
    pub fn ft232r(serial: &str) -> Self {
        Self::ftdi(0x6001, 0x0600, "FT232R USB UART", Some(serial), 1)
    }

    /// FTDI FT2232H: two UARTs (interfaces 00 and 01), one serial for both.
    pub fn ft2232h(serial: &str) -> Self {
        Self::ftdi(0x6010, 0x0700, "Dual RS232-HS", Some(serial), 2)
    }

    /// FTDI FT4232H: four UARTs (interfaces 00..03); `None` models a board with a blank EEPROM.
    pub fn ft4232h(serial: Option<&str>) -> Self {
        Self::ftdi(0x6011, 0x0800, "Quad RS232-HS", serial, 4)
    }

    /// Prolific PL2303: one UART, no iSerial.
    pub fn pl2303() -> Self {
        Self {
            vendor_id: 0x067b,
            product_id: 0x2303,
            bcd_device: 0x0300,
            bcd_usb: 0x0110,
            manufacturer: Some("Prolific Technology Inc.".into()),
            product: Some("USB-Serial Controller".into()),
            serial: None,
            driver: "pl2303".into(),
            interfaces: 1,
            interface_class: (0xff, 0x00, 0x00),
            interface_name: None,
            speed: 12,
            max_power_ma: 100,
        }
    }

    /// WCH CH340: one UART, no manufacturer string and no iSerial.
    pub fn ch340() -> Self {
        Self {
            vendor_id: 0x1a86,
            product_id: 0x7523,
            bcd_device: 0x0264,
            bcd_usb: 0x0110,
            manufacturer: None,
            product: Some("USB Serial".into()),
            serial: None,
            driver: "ch341".into(),
            interfaces: 1,
            interface_class: (0xff, 0x01, 0x02),
            interface_name: None,
            speed: 12,
            max_power_ma: 98,
        }
    }

    /// The `descriptors` sysfs file: device, configuration, interface and endpoint descriptors.
    fn descriptors(&self) -> Vec<u8> {
        let has = |s: &Option<String>, idx: u8| if s.is_some() { idx } else { 0 };
        let mut d = vec![18, 1];
        d.extend_from_slice(&self.bcd_usb.to_le_bytes());
        d.extend_from_slice(&[0, 0, 0, if self.speed >= 480 { 64 } else { 8 }]);
        d.extend_from_slice(&self.vendor_id.to_le_bytes());
        d.extend_from_slice(&self.product_id.to_le_bytes());
        d.extend_from_slice(&self.bcd_device.to_le_bytes());
        d.extend_from_slice(&[
            has(&self.manufacturer, 1),
            has(&self.product, 2),
            has(&self.serial, 3),
            1,
        ]);
        let n_if = self.interfaces as usize;
        let total = 9 + n_if * (9 + 7 + 7);
        d.extend_from_slice(&[9, 2]);
        d.extend_from_slice(&(total as u16).to_le_bytes());
        d.extend_from_slice(&[self.interfaces, 1, 0, 0x80, (self.max_power_ma / 2) as u8]);
        let (class, sub, proto) = self.interface_class;
        let mps: u16 = if self.speed >= 480 { 512 } else { 64 };
        for i in 0..self.interfaces {
            d.extend_from_slice(&[9, 4, i, 0, 2, class, sub, proto, 2]);
            for ep in [0x81 + 2 * i, 0x02 + 2 * i] {
                d.extend_from_slice(&[7, 5, ep, 2]);
                d.extend_from_slice(&mps.to_le_bytes());
                d.push(0);
            }
        }
        d
    }
}

/// Where an adapter is plugged and which tty numbers the kernel gives it.
#[derive(Debug, Clone)]
pub struct Placement {
    /// USB port chain as the kernel names the device: `1-2` (root port 2), `1-1.4` (port 4 of
    /// the hub on root port 1). Only `1-<n>` and `1-1.<n>` exist in this tree.
    pub port: String,
    /// ttyUSB number of the first interface; the others follow.
    pub first_tty: u32,
    /// USB device number on the bus.
    pub devnum: u32,
}

const PCI: &str = "devices/pci0000:00";
const XHCI: &str = "devices/pci0000:00/0000:00:14.0";
const ROOT_HUB: &str = "devices/pci0000:00/0000:00:14.0/usb1";

/// The simulated sysfs, rooted at a directory that a test bind-mounts over `/sys`.
#[derive(Debug)]
pub struct SimSysfs {
    root: PathBuf,
}

fn write(path: &Path, contents: impl AsRef<[u8]>) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, contents)
}

fn rel_link(from_dir: &Path, name: &str, to: &Path) -> io::Result<()> {
    fs::create_dir_all(from_dir)?;
    let depth = from_dir
        .strip_prefix(common_root(from_dir, to))
        .map(|p| p.components().count())
        .unwrap_or(0);
    let mut target = PathBuf::new();
    for _ in 0..depth {
        target.push("..");
    }
    target.push(to.strip_prefix(common_root(from_dir, to)).unwrap_or(to));
    let link = from_dir.join(name);
    let _ = fs::remove_file(&link);
    symlink(target, link)
}

fn common_root<'a>(a: &'a Path, b: &Path) -> &'a Path {
    let mut root = a;
    while !b.starts_with(root) {
        root = match root.parent() {
            Some(p) => p,
            None => return a,
        };
    }
    root
}

impl SimSysfs {
    /// Creates the controller, the root hub and a 4-port hub on root port 1.
    pub fn create(root: impl Into<PathBuf>) -> io::Result<Self> {
        let s = Self { root: root.into() };
        for d in [
            "bus/pci/drivers/xhci_hcd",
            "bus/usb/drivers/usb",
            "bus/usb/drivers/hub",
            "bus/usb-serial/drivers",
            "class/tty",
            "dev/char",
        ] {
            fs::create_dir_all(s.root.join(d))?;
        }
        write(&s.root.join(PCI).join("uevent"), "")?;
        s.attrs(
            XHCI,
            &[
                ("vendor", "0x8086"),
                ("device", "0xa36d"),
                ("class", "0x0c0330"),
                (
                    "uevent",
                    "DRIVER=xhci_hcd\nPCI_CLASS=C0330\nPCI_ID=8086:A36D\nPCI_SUBSYS_ID=1028:0869\nPCI_SLOT_NAME=0000:00:14.0\nMODALIAS=pci:v00008086d0000A36Dsv00001028sd00000869bc0Csc03i30\n",
                ),
            ],
        )?;
        s.link(XHCI, "subsystem", "bus/pci")?;
        s.link(XHCI, "driver", "bus/pci/drivers/xhci_hcd")?;
        s.usb_device(
            ROOT_HUB,
            "usb1",
            &UsbDeviceAttrs {
                vendor: 0x1d6b,
                product: 0x0002,
                bcd: 0x0601,
                manufacturer: Some("Linux 6.1.0-13-amd64 xhci-hcd"),
                product_name: Some("xHCI Host Controller"),
                serial: Some("0000:00:14.0"),
                devnum: 1,
                speed: 480,
                class: "09",
            },
        )?;
        let hub = format!("{ROOT_HUB}/1-1");
        s.usb_device(
            &hub,
            "1-1",
            &UsbDeviceAttrs {
                vendor: 0x05e3,
                product: 0x0610,
                bcd: 0x9226,
                manufacturer: Some("GenesysLogic"),
                product_name: Some("USB2.1 Hub"),
                serial: None,
                devnum: 2,
                speed: 480,
                class: "09",
            },
        )?;
        Ok(s)
    }

    /// A tree created earlier (e.g. seen at `/sys` inside the sandbox), to plug and unplug.
    pub fn open(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn attrs(&self, dir: &str, attrs: &[(&str, &str)]) -> io::Result<()> {
        for (k, v) in attrs {
            let text = if *k == "uevent" || v.ends_with('\n') {
                (*v).to_string()
            } else {
                format!("{v}\n")
            };
            write(&self.root.join(dir).join(k), text)?;
        }
        Ok(())
    }

    fn link(&self, dir: &str, name: &str, target: &str) -> io::Result<()> {
        rel_link(&self.root.join(dir), name, &self.root.join(target))
    }

    fn usb_device(&self, dir: &str, sysname: &str, a: &UsbDeviceAttrs<'_>) -> io::Result<()> {
        let busnum = 1;
        let minor = (busnum - 1) * 128 + a.devnum - 1;
        let devpath = sysname.split_once('-').map_or("0", |(_, p)| p);
        let uevent = format!(
            "MAJOR=189\nMINOR={minor}\nDEVNAME=bus/usb/{busnum:03}/{:03}\nDEVTYPE=usb_device\nDRIVER=usb\nPRODUCT={:x}/{:x}/{:x}\nTYPE={}/0/{}\nBUSNUM={busnum:03}\nDEVNUM={:03}\n",
            a.devnum,
            a.vendor,
            a.product,
            a.bcd,
            u8::from_str_radix(a.class, 16).unwrap_or(0),
            if a.class == "09" { 1 } else { 0 },
            a.devnum
        );
        let vendor = format!("{:04x}", a.vendor);
        let product = format!("{:04x}", a.product);
        let bcd = format!("{:04x}", a.bcd);
        let busnum_s = busnum.to_string();
        let devnum_s = a.devnum.to_string();
        let speed = a.speed.to_string();
        let mut attrs = vec![
            ("uevent", uevent.as_str()),
            ("idVendor", vendor.as_str()),
            ("idProduct", product.as_str()),
            ("bcdDevice", bcd.as_str()),
            ("bDeviceClass", a.class),
            ("bDeviceSubClass", "00"),
            ("bDeviceProtocol", "00"),
            ("bNumConfigurations", "1"),
            ("bConfigurationValue", "1"),
            ("busnum", busnum_s.as_str()),
            ("devnum", devnum_s.as_str()),
            ("devpath", devpath),
            ("speed", speed.as_str()),
            ("removable", "unknown"),
        ];
        if let Some(m) = a.manufacturer {
            attrs.push(("manufacturer", m));
        }
        if let Some(p) = a.product_name {
            attrs.push(("product", p));
        }
        if let Some(s) = a.serial {
            attrs.push(("serial", s));
        }
        self.attrs(dir, &attrs)?;
        self.link(dir, "subsystem", "bus/usb")?;
        self.link(dir, "driver", "bus/usb/drivers/usb")?;
        self.link("dev/char", &format!("189:{minor}"), dir)?;
        Ok(())
    }

    fn device_dir(port: &str) -> String {
        match port.strip_prefix("1-1.") {
            Some(_) => format!("{ROOT_HUB}/1-1/{port}"),
            None => format!("{ROOT_HUB}/{port}"),
        }
    }

    /// Plugs `adapter` in at `at`; returns the kernel device paths (`/devices/...`) of its ttys.
    pub fn plug(&self, adapter: &UsbSerialAdapter, at: &Placement) -> io::Result<Vec<String>> {
        let dev = Self::device_dir(&at.port);
        let mut desc_attrs = UsbDeviceAttrs {
            vendor: adapter.vendor_id,
            product: adapter.product_id,
            bcd: adapter.bcd_device,
            manufacturer: adapter.manufacturer.as_deref(),
            product_name: adapter.product.as_deref(),
            serial: adapter.serial.as_deref(),
            devnum: at.devnum,
            speed: adapter.speed,
            class: "00",
        };
        desc_attrs.class = "00";
        self.usb_device(&dev, &at.port, &desc_attrs)?;
        let n_if = adapter.interfaces.to_string();
        self.attrs(&dev, &[("bNumInterfaces", &format!("{n_if:>2}"))])?;
        write(
            &self.root.join(&dev).join("descriptors"),
            adapter.descriptors(),
        )?;
        fs::create_dir_all(self.root.join("bus/usb/drivers").join(&adapter.driver))?;
        fs::create_dir_all(
            self.root
                .join("bus/usb-serial/drivers")
                .join(&adapter.driver),
        )?;
        let (class, sub, proto) = adapter.interface_class;
        let mut ttys = Vec::new();
        for i in 0..adapter.interfaces {
            let iface = format!("{dev}/{}:1.{i}", at.port);
            let modalias = format!(
                "usb:v{:04X}p{:04X}d{:04X}dc00dsc00dp00ic{class:02X}isc{sub:02X}ip{proto:02X}in{i:02X}",
                adapter.vendor_id, adapter.product_id, adapter.bcd_device
            );
            let uevent = format!(
                "DEVTYPE=usb_interface\nDRIVER={}\nPRODUCT={:x}/{:x}/{:x}\nTYPE=0/0/0\nINTERFACE={class}/{sub}/{proto}\nMODALIAS={modalias}\n",
                adapter.driver, adapter.vendor_id, adapter.product_id, adapter.bcd_device
            );
            let num = format!("{i:02x}");
            let c = format!("{class:02x}");
            let s = format!("{sub:02x}");
            let p = format!("{proto:02x}");
            let mut attrs = vec![
                ("uevent", uevent.as_str()),
                ("bInterfaceNumber", num.as_str()),
                ("bAlternateSetting", " 0"),
                ("bNumEndpoints", "02"),
                ("bInterfaceClass", c.as_str()),
                ("bInterfaceSubClass", s.as_str()),
                ("bInterfaceProtocol", p.as_str()),
                ("modalias", modalias.as_str()),
            ];
            if let Some(name) = &adapter.interface_name {
                attrs.push(("interface", name));
            }
            self.attrs(&iface, &attrs)?;
            self.link(&iface, "subsystem", "bus/usb")?;
            self.link(
                &iface,
                "driver",
                &format!("bus/usb/drivers/{}", adapter.driver),
            )?;
            let n = at.first_tty + u32::from(i);
            let port = format!("{iface}/ttyUSB{n}");
            self.attrs(
                &port,
                &[
                    ("uevent", &format!("DRIVER={}\n", adapter.driver)),
                    ("port_number", "0"),
                ],
            )?;
            self.link(&port, "subsystem", "bus/usb-serial")?;
            self.link(
                &port,
                "driver",
                &format!("bus/usb-serial/drivers/{}", adapter.driver),
            )?;
            let tty = format!("{port}/tty/ttyUSB{n}");
            self.attrs(
                &tty,
                &[
                    (
                        "uevent",
                        &format!("MAJOR=188\nMINOR={n}\nDEVNAME=ttyUSB{n}\n"),
                    ),
                    ("dev", &format!("188:{n}")),
                ],
            )?;
            self.link(&tty, "subsystem", "class/tty")?;
            self.link("class/tty", &format!("ttyUSB{n}"), &tty)?;
            self.link("dev/char", &format!("188:{n}"), &tty)?;
            ttys.push(format!("/{tty}"));
        }
        Ok(ttys)
    }

    /// Removes the adapter at `port` (and its ttys) from the tree.
    pub fn unplug(&self, port: &str) -> io::Result<()> {
        let dev = self.root.join(Self::device_dir(port));
        for entry in ["class/tty", "dev/char"] {
            for e in fs::read_dir(self.root.join(entry))? {
                let e = e?;
                let inside = fs::canonicalize(e.path())
                    .is_ok_and(|t| t.starts_with(fs::canonicalize(&dev).unwrap_or(dev.clone())));
                if inside {
                    fs::remove_file(e.path())?;
                }
            }
        }
        fs::remove_dir_all(dev)
    }
}

struct UsbDeviceAttrs<'a> {
    vendor: u16,
    product: u16,
    bcd: u16,
    manufacturer: Option<&'a str>,
    product_name: Option<&'a str>,
    serial: Option<&'a str>,
    devnum: u32,
    speed: u32,
    class: &'a str,
}
