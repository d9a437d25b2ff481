use std::path::Path;

use super::*;

const GOOD: &str = r#"
[worker]
name = "worker1"
state_dir = "/var/lib/labd"

[[device]]
name = "bbb01"
device_type = "beaglebone-black"
tags = ["usb-otg"]
[device.console]
tty = "/dev/lab/bbb01"
baud = 115200
listen = 7101

[[device]]
name = "rpi02"
device_type = "rpi4"
[device.console]
ser2net = "localhost:7002"
rfc2217 = true
"#;

fn diags(text: &str) -> Vec<Diagnostic> {
    match Inventory::parse(Path::new("inv.toml"), text) {
        Ok(_) => panic!("inventory was accepted:\n{text}"),
        Err(e) => e.diagnostics().to_vec(),
    }
}

#[test]
fn good_inventory_parses() {
    let inv = Inventory::parse(Path::new("inv.toml"), GOOD).expect("valid");
    assert_eq!(inv.devices.len(), 2);
    let bbb = inv.device("bbb01").expect("bbb01");
    let console = bbb.console.as_ref().expect("console");
    assert_eq!(
        console.endpoint(),
        Some(crate::console::config::ConsoleEndpoint::Tty {
            path: "/dev/lab/bbb01".into()
        })
    );
    assert_eq!(console.line_settings().baud, 115200);
    let rpi = inv.device("rpi02").expect("rpi02");
    assert_eq!(
        rpi.console.as_ref().and_then(|c| c.endpoint()),
        Some(crate::console::config::ConsoleEndpoint::Ser2net {
            host: "localhost".into(),
            port: 7002,
            rfc2217: true
        })
    );
}

#[test]
fn unknown_key_is_reported_with_its_line() {
    let text = GOOD.replace("baud = 115200", "bauds = 115200");
    let d = diags(&text);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].line, 12);
    assert_eq!(d[0].key, "bauds");
    assert!(
        d[0].message.contains("unknown field `bauds`"),
        "{}",
        d[0].message
    );
    assert!(d[0].to_string().starts_with("inv.toml:12:"), "{}", d[0]);
}

#[test]
fn duplicate_device_names_point_at_the_second() {
    let text = GOOD.replace("name = \"rpi02\"", "name = \"bbb01\"");
    let d = diags(&text);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].line, 16);
    assert_eq!(d[0].key, "device.name");
    assert!(
        d[0].message.contains("first defined on line 7"),
        "{}",
        d[0].message
    );
}

#[test]
fn two_devices_on_one_tty_or_one_ser2net_port() {
    let text = format!(
        "{GOOD}\n[[device]]\nname = \"c\"\ndevice_type = \"x\"\n[device.console]\ntty = \"/dev/lab/bbb01\"\n\
         \n[[device]]\nname = \"d\"\ndevice_type = \"x\"\n[device.console]\nser2net = \"127.0.0.1:7002\"\n"
    );
    let d = diags(&text);
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!(d[0].key, "device.console.tty");
    assert!(
        d[0].message.contains("\"bbb01\" and \"c\""),
        "{}",
        d[0].message
    );
    assert_eq!(d[0].line, 26);
    assert_eq!(d[1].key, "device.console.ser2net");
    assert!(
        d[1].message.contains("\"rpi02\" and \"d\""),
        "{}",
        d[1].message
    );
    assert_eq!(d[1].line, 32);
}

#[test]
fn bad_line_settings() {
    let text = GOOD
        .replace(
            "baud = 115200",
            "baud = 115201\ndata_bits = 9\nstop_bits = 3",
        )
        .replace("rfc2217 = true", "rfc2217 = true\nparity = \"sometimes\"");
    let d = diags(&text);
    // serde stops at the first type error (parity), so only it is reported.
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].key, "parity");

    let text = GOOD.replace(
        "baud = 115200",
        "baud = 115201\ndata_bits = 9\nstop_bits = 3",
    );
    let d = diags(&text);
    let keys: Vec<_> = d.iter().map(|d| (d.key.as_str(), d.line)).collect();
    assert_eq!(
        keys,
        [
            ("device.console.baud", 12),
            ("device.console.data_bits", 13),
            ("device.console.stop_bits", 14)
        ]
    );
}

#[test]
fn console_needs_exactly_one_source() {
    let text = GOOD.replace(
        "ser2net = \"localhost:7002\"\nrfc2217 = true",
        "baud = 9600",
    );
    let d = diags(&text);
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].message.contains("neither tty nor ser2net"));

    let text = GOOD.replace("listen = 7101", "listen = 7101\nser2net = \"h:1\"");
    let d = diags(&text);
    assert!(d[0].message.contains("both tty and ser2net"), "{d:?}");
}

#[test]
fn listener_ports_must_not_clash() {
    let text = GOOD.replace("rfc2217 = true", "rfc2217 = true\nlisten = 7101");
    let d = diags(&text);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].key, "device.console.listen");
    assert_eq!(d[0].line, 21);
}

#[test]
fn syntax_error_names_the_line() {
    let text = GOOD.replace("tags = [\"usb-otg\"]", "tags = [\"usb-otg\"");
    let d = diags(&text);
    assert_eq!(d.len(), 1);
    assert!(d[0].line >= 9, "{d:?}");
}

#[test]
fn unsafe_device_names_are_refused() {
    let text = GOOD.replace("name = \"rpi02\"", "name = \"../../etc\"");
    let d = diags(&text);
    assert_eq!(d[0].line, 16, "{d:?}");
    assert!(d[0].message.contains("may only contain"), "{d:?}");
}

#[test]
fn fuzz_entry_point_survives_seeds() {
    let example = include_str!("../../udev-rules/example-inventory.toml");
    let mut seeds: Vec<Vec<u8>> = vec![
        GOOD.as_bytes().to_vec(),
        example.as_bytes().to_vec(),
        b"[worker]\nname = 1\n[[device]]\n".to_vec(),
        b"\xff\xfe[[device]]".to_vec(),
        "[worker]\nname = \"w\"\nstate_dir = \"/\u{e9}\"\n[[device]]\nname = \"\u{1F600}\"\n"
            .as_bytes()
            .to_vec(),
    ];
    // Every prefix of a real inventory (cut mid-key, mid-string, mid-table).
    for cut in (0..example.len()).step_by(97) {
        seeds.push(example.as_bytes()[..cut].to_vec());
    }
    for seed in seeds {
        fuzz_inventory(&seed);
    }
}
