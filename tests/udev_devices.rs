//! `labd devices` on the live path: libudev enumeration inside a udev sandbox (simulated sysfs,
//! udev database written by the real udevadm), and the sysfs fallback when there is no udev
//! database; plus the `--from-dump` path on the recorded dumps.

use std::path::PathBuf;
use std::process::Command;

use labd_hw_fixtures::simudev::{self, SimSysfs, UdevSandbox};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const EXPECTED_TABLE: &str = "\
NODE           ID         VENDOR                    MODEL                  SERIAL    IF  PORT  ID_PATH                         DEVICE
/dev/ttyUSB0   0403:6001  FTDI                      FT232R_USB_UART        A10K6L1B  00  0     pci-0000:00:14.0-usb-0:2:1.0    bbb01
/dev/ttyUSB1   0403:6010  FTDI                      Dual_RS232-HS          FT6XU1RB  00  0     pci-0000:00:14.0-usb-0:1.1:1.0  rk3399-02
/dev/ttyUSB2   0403:6010  FTDI                      Dual_RS232-HS          FT6XU1RB  01  0     pci-0000:00:14.0-usb-0:1.1:1.1  rk3399-03
/dev/ttyUSB3   0403:6011  FTDI                      Quad_RS232-HS          FT4SJA9C  00  0     pci-0000:00:14.0-usb-0:1.2:1.0  imx8mp-04
/dev/ttyUSB4   0403:6011  FTDI                      Quad_RS232-HS          FT4SJA9C  01  0     pci-0000:00:14.0-usb-0:1.2:1.1  -
/dev/ttyUSB5   0403:6011  FTDI                      Quad_RS232-HS          FT4SJA9C  02  0     pci-0000:00:14.0-usb-0:1.2:1.2  imx8mp-05
/dev/ttyUSB6   0403:6011  FTDI                      Quad_RS232-HS          FT4SJA9C  03  0     pci-0000:00:14.0-usb-0:1.2:1.3  -
/dev/ttyUSB7   067b:2303  Prolific_Technology_Inc.  USB-Serial_Controller  -         00  0     pci-0000:00:14.0-usb-0:1.3:1.0  sama5-06
/dev/ttyUSB8   0403:6001  FTDI                      FT232R_USB_UART        A50285BI  00  0     pci-0000:00:14.0-usb-0:1.4:1.0  rpi3-07
/dev/ttyUSB9   0403:6001  FTDI                      FT232R_USB_UART        A50285BI  00  0     pci-0000:00:14.0-usb-0:3:1.0    rpi3-08
/dev/ttyUSB10  1a86:7523  1a86                      USB_Serial             -         00  0     pci-0000:00:14.0-usb-0:4:1.0    nanopi-09

No inventory device matches these adapters; a [device.usb] for each:

# /dev/ttyUSB4 (FTDI Quad_RS232-HS)
[device.usb]
vendor = \"0403\"
product = \"6011\"
serial = \"FT4SJA9C\"
interface = 1
symlink = \"lab/NAME\"

# /dev/ttyUSB6 (FTDI Quad_RS232-HS)
[device.usb]
vendor = \"0403\"
product = \"6011\"
serial = \"FT4SJA9C\"
interface = 3
symlink = \"lab/NAME\"
";

/// Runs `labd devices` inside a sandbox; `process` = let udev process the adapters first.
fn devices_in_sandbox(process: bool) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let sys = SimSysfs::create(tmp.path().join("sys")).unwrap();
    let rules = tmp.path().join("rules.d");
    std::fs::create_dir_all(&rules).unwrap();
    let mut ttys = Vec::new();
    for rec in simudev::recorded_adapters() {
        ttys.extend(sys.plug(&rec.adapter, &rec.placement).unwrap());
    }
    let mut sandbox = UdevSandbox::new(sys.root(), &rules);
    sandbox.udev_control = process;
    let cmd = format!(
        "RUST_LOG=warn {} devices -c {}",
        env!("CARGO_BIN_EXE_labd"),
        repo().join("udev-rules/example-inventory.toml").display()
    );
    let run = sandbox
        .add_all_then(if process { &ttys } else { &[] }, &cmd)
        .unwrap();
    run.command_output
}

#[test]
fn live_enumeration_through_libudev_with_a_udev_database() {
    assert_eq!(
        devices_in_sandbox(true),
        format!("source: udev\n{EXPECTED_TABLE}")
    );
}

#[test]
fn live_enumeration_from_sysfs_without_a_udev_database() {
    // No udev daemon, no database: labd reads the same identity from sysfs attributes.
    assert_eq!(
        devices_in_sandbox(false),
        format!(
            "source: sysfs (no udev daemon runs here: identities are read from sysfs attributes; links from udev rules do not exist)\n{}",
            // The CH340 has no manufacturer string: usb_id falls back to the vendor id,
            // sysfs alone has no name for it.
            EXPECTED_TABLE.replace(
                "1a86                      USB_Serial",
                "-                         USB_Serial"
            )
        )
    );
}

#[test]
fn from_dump_suggests_a_path_match_for_shared_and_missing_serials() {
    let inv = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        inv.path(),
        "[worker]\nname = \"w\"\nstate_dir = \"/var/lib/labd\"\n",
    )
    .unwrap();
    let dir = simudev::fixtures_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_labd"))
        .args(["devices", "-c"])
        .arg(inv.path())
        .arg("--from-dump")
        .arg(dir.join("ft232r-dupserial-a.properties"))
        .arg(dir.join("ft232r-dupserial-b.properties"))
        .arg(dir.join("ch340.properties"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let snippets = stdout.split_once("a [device.usb] for each:\n").unwrap().1;
    assert_eq!(
        snippets,
        "
# /dev/ttyUSB8 (FTDI FT232R_USB_UART); its serial is shared with another adapter, so it is matched by port
[device.usb]
vendor = \"0403\"
product = \"6001\"
path = \"pci-0000:00:14.0-usb-0:1.4:1.0\"
symlink = \"lab/NAME\"

# /dev/ttyUSB9 (FTDI FT232R_USB_UART); its serial is shared with another adapter, so it is matched by port
[device.usb]
vendor = \"0403\"
product = \"6001\"
path = \"pci-0000:00:14.0-usb-0:3:1.0\"
symlink = \"lab/NAME\"

# /dev/ttyUSB10 (1a86 USB_Serial); it has no serial, so it is matched by port
[device.usb]
vendor = \"1a86\"
product = \"7523\"
path = \"pci-0000:00:14.0-usb-0:4:1.0\"
symlink = \"lab/NAME\"
"
    );
}

#[test]
fn from_dump_refuses_a_malformed_dump_with_its_line() {
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), "DEVPATH=/devices/x\nthis is not a property\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_labd"))
        .args(["devices", "-c"])
        .arg(repo().join("udev-rules/example-inventory.toml"))
        .arg("--from-dump")
        .arg(bad.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "labd: {}: line 2: expected KEY=value: \"this is not a property\"\n",
            bad.path().display()
        )
    );
}
