//! Simulated udev world for tests: a sysfs tree with USB-serial adapters ([`SimSysfs`]) that the
//! real `udevadm` processes with its real rules inside a private mount namespace
//! ([`UdevSandbox`]), so rules and property dumps are checked against udev itself rather than
//! against our own idea of it.

pub mod netlink;
pub mod sandbox;
pub mod sysfs;

pub use netlink::UdevBroadcaster;
pub use sandbox::{UdevRun, UdevSandbox, resolve_link};
pub use sysfs::{Placement, SimSysfs, UsbSerialAdapter};

/// `hw-fixtures/udev/`: the recorded property dumps.
pub fn fixtures_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("udev")
}

/// One recorded adapter: its fixture file name (`<name>.properties`), model and placement.
#[derive(Debug, Clone)]
pub struct RecordedAdapter {
    pub name: &'static str,
    pub adapter: UsbSerialAdapter,
    pub placement: Placement,
}

fn at(port: &str, first_tty: u32, devnum: u32) -> Placement {
    Placement {
        port: port.to_string(),
        first_tty,
        devnum,
    }
}

/// The adapters behind `hw-fixtures/udev/*.properties`: a single FT232R, an FT2232H and an
/// FT4232H (several interfaces), a PL2303 without a serial, two FT232R clones sharing the
/// serial `A50285BI` (common on counterfeit chips), and a CH340.
pub fn recorded_adapters() -> Vec<RecordedAdapter> {
    vec![
        RecordedAdapter {
            name: "ft232r",
            adapter: UsbSerialAdapter::ft232r("A10K6L1B"),
            placement: at("1-2", 0, 5),
        },
        RecordedAdapter {
            name: "ft2232h",
            adapter: UsbSerialAdapter::ft2232h("FT6XU1RB"),
            placement: at("1-1.1", 1, 6),
        },
        RecordedAdapter {
            name: "ft4232h",
            adapter: UsbSerialAdapter::ft4232h(Some("FT4SJA9C")),
            placement: at("1-1.2", 3, 7),
        },
        RecordedAdapter {
            name: "pl2303-noserial",
            adapter: UsbSerialAdapter::pl2303(),
            placement: at("1-1.3", 7, 8),
        },
        RecordedAdapter {
            name: "ft232r-dupserial-a",
            adapter: UsbSerialAdapter::ft232r("A50285BI"),
            placement: at("1-1.4", 8, 9),
        },
        RecordedAdapter {
            name: "ft232r-dupserial-b",
            adapter: UsbSerialAdapter::ft232r("A50285BI"),
            placement: at("1-3", 9, 10),
        },
        RecordedAdapter {
            name: "ch340",
            adapter: UsbSerialAdapter::ch340(),
            placement: at("1-4", 10, 11),
        },
    ]
}

/// The FT232R of [`recorded_adapters`] after a replug: same port, new USB device number, and
/// the kernel handed out the next free tty (`ttyUSB11`), as happens when the old node was
/// still held open.
pub fn replugged_ft232r() -> RecordedAdapter {
    RecordedAdapter {
        name: "ft232r-replugged",
        adapter: UsbSerialAdapter::ft232r("A10K6L1B"),
        placement: at("1-2", 11, 12),
    }
}
