use std::path::Path;

use crate::inventory::{Diagnostic, Inventory};

const HEAD: &str = r#"[worker]
name = "w1"
state_dir = "/var/lib/labd"
"#;

fn device(name: &str, usb: &str, tty: Option<&str>) -> String {
    let mut s = format!("\n[[device]]\nname = \"{name}\"\ndevice_type = \"bbb\"\n");
    if let Some(tty) = tty {
        s.push_str(&format!("[device.console]\ntty = \"{tty}\"\n"));
    }
    s.push_str("[device.usb]\n");
    s.push_str(usb);
    s
}

fn parse(text: &str) -> Result<Inventory, Vec<Diagnostic>> {
    Inventory::parse(Path::new("inv.toml"), text).map_err(|e| e.diagnostics().to_vec())
}

fn diags(text: &str) -> Vec<Diagnostic> {
    match parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(d) => d,
    }
}

#[test]
fn canonical_ftdi_entry_parses() {
    let text = format!(
        "{HEAD}{}",
        device(
            "bbb01",
            "vendor = \"0403\"\nproduct = \"6001\"\nserial = \"A10K6L1B\"\nsymlink = \"lab/bbb01\"\n",
            Some("/dev/lab/bbb01")
        )
    );
    let inv = parse(&text).expect("valid");
    let usb = inv.devices[0].usb.as_ref().expect("usb");
    assert_eq!(usb.vendor_id(), "0403");
    assert_eq!(usb.serial(), Some("A10K6L1B"));
    assert_eq!(usb.link_path(), Path::new("/dev/lab/bbb01"));
    assert_eq!(usb.group(), "dialout");
    assert_eq!(usb.mode(), "0660");
}

#[test]
fn bad_ids_and_names_point_at_their_keys() {
    let text = format!(
        "{HEAD}{}",
        device(
            "a",
            "vendor = \"FTDI\"\nproduct = \"6001\"\nserial = \"has space\"\nsymlink = \"../etc/x\"\nmode = \"0999\"\n",
            None
        )
    );
    let d = diags(&text);
    let keys: Vec<_> = d.iter().map(|d| (d.key.as_str(), d.line)).collect();
    assert_eq!(
        keys,
        [
            ("device.usb.vendor", 9),
            ("device.usb.serial", 11),
            ("device.usb.symlink", 12),
            ("device.usb.mode", 13)
        ],
        "{d:#?}"
    );
    assert!(
        d[0].message.contains("\"FTDI\" is not a USB id"),
        "{}",
        d[0]
    );
}

#[test]
fn needs_serial_or_path() {
    let text = format!(
        "{HEAD}{}",
        device(
            "a",
            "vendor = \"1a86\"\nproduct = \"7523\"\nsymlink = \"lab/a\"\n",
            None
        )
    );
    let d = diags(&text);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].key, "device.usb");
    assert!(
        d[0].message.contains("needs `serial` or `path`"),
        "{}",
        d[0]
    );
}

#[test]
fn duplicate_serial_names_both_devices() {
    let usb = |link: &str| {
        format!(
            "vendor = \"0403\"\nproduct = \"6001\"\nserial = \"ST167570\"\nsymlink = \"{link}\"\n"
        )
    };
    let text = format!(
        "{HEAD}{}{}",
        device("first", &usb("rack-usb01"), None),
        device("second", &usb("rack-usb02"), None)
    );
    let d = diags(&text);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].key, "device.usb.serial");
    assert_eq!(d[0].line, 20);
    assert!(
        d[0].message.contains("devices \"first\" (line 6")
            && d[0].message.contains("and \"second\""),
        "{}",
        d[0]
    );
}

#[test]
fn interfaces_of_one_chip_do_not_clash_but_a_wildcard_does() {
    let usb = |iface: Option<u8>, link: &str| {
        let mut s = "vendor = \"0403\"\nproduct = \"6011\"\nserial = \"FT4ABCDE\"\n".to_string();
        if let Some(i) = iface {
            s.push_str(&format!("interface = {i}\n"));
        }
        s.push_str(&format!("symlink = \"{link}\"\n"));
        s
    };
    let ok = format!(
        "{HEAD}{}{}",
        device("p0", &usb(Some(0), "q0"), None),
        device("p1", &usb(Some(1), "q1"), None)
    );
    parse(&ok).expect("two interfaces of one FT4232H are distinct");
    let bad = format!("{ok}{}", device("all", &usb(None, "qall"), None));
    let d = diags(&bad);
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(d[0].message.contains("\"p0\""), "{}", d[0]);
    assert!(d[1].message.contains("\"p1\""), "{}", d[1]);
}

#[test]
fn duplicate_symlink_names_both_devices() {
    let text = format!(
        "{HEAD}{}{}",
        device(
            "a",
            "vendor = \"0403\"\nproduct = \"6001\"\nserial = \"A1\"\nsymlink = \"lab/x\"\n",
            None
        ),
        device(
            "b",
            "vendor = \"0403\"\nproduct = \"6001\"\nserial = \"B2\"\nsymlink = \"lab/x\"\n",
            None
        )
    );
    let d = diags(&text);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].key, "device.usb.symlink");
    assert!(
        d[0].message
            .contains("devices \"a\" (line 6) and \"b\" both want the link /dev/lab/x"),
        "{}",
        d[0]
    );
}

#[test]
fn console_tty_must_be_the_adapter_link() {
    let a = "vendor = \"0403\"\nproduct = \"6001\"\nserial = \"A1\"\nsymlink = \"lab/a\"\n";
    let b = "vendor = \"0403\"\nproduct = \"6001\"\nserial = \"B2\"\nsymlink = \"lab/b\"\n";
    let text = format!(
        "{HEAD}{}{}",
        device("a", a, Some("/dev/ttyUSB0")),
        device("b", b, Some("/dev/lab/a"))
    );
    let d = diags(&text);
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!(d[0].key, "device.console.tty");
    assert!(
        d[0].message
            .contains("\"/dev/ttyUSB0\" is not the link \"/dev/lab/a\""),
        "{}",
        d[0]
    );
    assert!(
        d[1].message.contains(
            "device \"b\": console tty \"/dev/lab/a\" is the link of device \"a\"'s adapter"
        ),
        "{}",
        d[1]
    );
}

#[test]
fn path_and_interface_must_agree() {
    let usb = "vendor = \"0403\"\nproduct = \"6011\"\npath = \"pci-0000:00:14.0-usb-0:1.3:1.2\"\ninterface = 1\nsymlink = \"lab/x\"\n";
    let d = diags(&format!("{HEAD}{}", device("x", usb, None)));
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].message.contains("ends in interface 2"), "{}", d[0]);
    assert_eq!(
        super::id_path_interface("pci-0000:00:14.0-usb-0:1.3:1.10"),
        Some(10)
    );
    assert_eq!(
        super::id_path_interface("platform-xhci-hcd.1.auto-usb-0:1:1.0"),
        Some(0)
    );
    assert_eq!(super::id_path_interface("pci-0000:00:1f.3"), None);
}

#[test]
fn unknown_usb_key_is_refused_with_its_line() {
    let usb = "vendor = \"0403\"\nproduct = \"6001\"\nserail = \"A1\"\nsymlink = \"lab/x\"\n";
    let d = diags(&format!("{HEAD}{}", device("x", usb, None)));
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].key, "serail");
    assert_eq!(d[0].line, 11);
}
