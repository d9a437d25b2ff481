use std::path::Path;
use std::time::Duration;

use crate::inventory::{Diagnostic, Inventory};
use crate::power::settings::{self, DriverSettings};

const HEAD: &str = r#"[worker]
name = "w1"
state_dir = "/var/lib/labd"
"#;

const GOOD: &str = r#"[worker]
name = "w1"
state_dir = "/var/lib/labd"

[power]
pdudaemon_listen = "127.0.0.1:16421"
unhealthy_after = 2
reboot_delay = "2s"

[[pdu]]
name = "apc1"
driver = "snmp"
host = "10.0.0.5"
port = 1161
version = "1"
preset = "apc-rpdu"
pdudaemon_hostnames = ["10.0.0.5"]
retries = 2
retry_delay = "500ms"
timeout = 3

[[pdu]]
name = "relays"
driver = "command"
on_command = "relayctl --board {device} {outlet} on"
off_command = "relayctl --board {device} {outlet} off"

[[pdu]]
name = "pdud"
driver = "pdudaemon"
url = "http://localhost:16421/"
hostname = "pdu05"

[[device]]
name = "bbb01"
device_type = "beaglebone-black"
[device.power]
pdu = "apc1"
outlet = 3
reboot_delay = "10s"

[[device]]
name = "rpi02"
device_type = "rpi4"
[device.power]
pdu = "relays"
outlet = "K2"

[[device]]
name = "old03"
device_type = "x86"
[device.power]
power_on_command = "pduclient --daemon localhost --hostname pdu05 --port 08 --command on"
power_off_command = "pduclient --daemon localhost --hostname pdu05 --port 08 --command off"
hard_reset_command = "sh -c 'echo {device} >> /tmp/reset.log'"
"#;

fn diags(text: &str) -> Vec<Diagnostic> {
    match Inventory::parse(Path::new("inv.toml"), text) {
        Ok(_) => panic!("inventory was accepted:\n{text}"),
        Err(e) => e.diagnostics().to_vec(),
    }
}

fn one(text: &str) -> Diagnostic {
    let d = diags(text);
    assert_eq!(d.len(), 1, "{d:#?}");
    d.into_iter().next().unwrap()
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn good_inventory_resolves() {
    let inv = Inventory::parse(Path::new("inv.toml"), GOOD).expect("valid");
    let ps = inv.power.as_ref().unwrap();
    assert_eq!(ps.unhealthy_after(), 2);
    assert_eq!(ps.reboot_delay(), Duration::from_secs(2));
    assert_eq!(ps.pdudaemon_listen().unwrap().port(), 16421);
    let apc = settings::resolve_pdu(&inv.pdus[0]).unwrap();
    assert_eq!(apc.policy.retries, 2);
    assert_eq!(apc.policy.retry_delay, Duration::from_millis(500));
    assert_eq!(apc.policy.timeout, Duration::from_secs(3));
    let DriverSettings::Snmp(s) = &apc.driver else {
        panic!()
    };
    assert_eq!((s.port, s.community.as_str()), (1161, "private"));
    assert_eq!(
        s.map.control.for_outlet(3).unwrap().to_string(),
        "1.3.6.1.4.1.318.1.1.12.3.3.1.1.4.3"
    );
    let relays = settings::resolve_pdu(&inv.pdus[1]).unwrap();
    let DriverSettings::Command(c) = &relays.driver else {
        panic!()
    };
    assert_eq!(
        c.on.as_ref().unwrap().render("K2", "relays", "rpi02"),
        ["relayctl", "--board", "rpi02", "K2", "on"]
    );
    let pdud = settings::resolve_pdu(&inv.pdus[2]).unwrap();
    assert_eq!(
        pdud.driver,
        DriverSettings::Pdudaemon {
            url: "http://localhost:16421".into(),
            hostname: "pdu05".into()
        }
    );
}

#[test]
fn placeholders_stay_single_arguments() {
    let t =
        settings::CommandTemplate::parse("sh -c 'echo {device}; echo done' --x={outlet}").unwrap();
    assert_eq!(
        t.render("1; rm -rf /", "p", "d"),
        ["sh", "-c", "echo d; echo done", "--x=1; rm -rf /"]
    );
    assert!(settings::CommandTemplate::parse("echo 'unterminated").is_err());
}

#[test]
fn unknown_pdu_points_at_the_key() {
    let text = GOOD.replace("pdu = \"apc1\"", "pdu = \"apc9\"");
    let d = one(&text);
    assert_eq!(
        (d.line, d.key.as_str()),
        (line_of(&text, "pdu = \"apc9\""), "device.power.pdu")
    );
    assert!(
        d.message
            .contains("unknown PDU \"apc9\" (defined: apc1, relays, pdud)"),
        "{}",
        d.message
    );
}

#[test]
fn duplicate_pdu_names() {
    let text = GOOD
        .replace("name = \"relays\"", "name = \"apc1\"")
        .replace("pdu = \"relays\"", "pdu = \"pdud\"");
    let d = one(&text);
    assert_eq!(d.key, "pdu.name");
    let second = text
        .lines()
        .enumerate()
        .filter(|(_, l)| *l == "name = \"apc1\"")
        .nth(1)
        .unwrap()
        .0
        + 1;
    assert_eq!(d.line, second);
    assert!(
        d.message
            .contains("duplicate PDU name \"apc1\" (first defined on line 11)"),
        "{}",
        d.message
    );
}

#[test]
fn two_devices_on_one_outlet_compare_numbers_by_value() {
    let text = GOOD.replace(
        "pdu = \"relays\"\noutlet = \"K2\"",
        "pdu = \"apc1\"\noutlet = \"03\"",
    );
    let d = one(&text);
    assert_eq!(
        (d.line, d.key.as_str()),
        (line_of(&text, "outlet = \"03\""), "device.power.outlet")
    );
    assert_eq!(
        d.message,
        "devices \"bbb01\" and \"rpi02\" are both on outlet 03 of PDU \"apc1\""
    );
}

#[test]
fn missing_outlet() {
    let text = GOOD.replace("outlet = \"K2\"\n", "");
    let d = one(&text);
    assert_eq!(
        (d.line, d.key.as_str()),
        (line_of(&text, "pdu = \"relays\""), "device.power.outlet")
    );
    assert!(d.message.contains("`outlet` is missing"), "{}", d.message);
}

#[test]
fn unknown_driver() {
    let text = GOOD.replace("driver = \"pdudaemon\"", "driver = \"apc7952\"");
    let d = one(&text);
    assert_eq!(
        (d.line, d.key.as_str()),
        (line_of(&text, "apc7952"), "pdu.driver")
    );
    assert_eq!(
        d.message,
        "unknown driver \"apc7952\" (known: command, pdudaemon, snmp, netio, sim)"
    );
}

#[test]
fn bad_driver_settings_each_at_their_line() {
    let text = GOOD
        .replace(
            "preset = \"apc-rpdu\"",
            "preset = \"apc-rpdu\"\non_value = 5\nurl = \"http://x\"",
        )
        .replace(
            "url = \"http://localhost:16421/\"",
            "url = \"localhost:16421\"",
        );
    let d = diags(&text);
    let got: Vec<(usize, &str)> = d.iter().map(|d| (d.line, d.key.as_str())).collect();
    assert_eq!(
        got,
        [
            (line_of(&text, "on_value = 5"), "pdu.on_value"),
            (line_of(&text, "url = \"http://x\""), "pdu.url"),
            (line_of(&text, "url = \"localhost:16421\""), "pdu.url"),
        ],
        "{d:#?}"
    );
    assert!(
        d[0].message.contains("preset \"apc-rpdu\" sets `on_value`"),
        "{}",
        d[0].message
    );
    assert_eq!(d[1].message, "`url` does not apply to driver \"snmp\"");
    assert!(
        d[2].message.contains("not an http:// or https:// URL"),
        "{}",
        d[2].message
    );
}

#[test]
fn snmp_outlets_are_numbers_within_the_pdu() {
    let text = format!(
        "{HEAD}[[pdu]]\nname = \"p\"\ndriver = \"snmp\"\nhost = \"h\"\npreset = \"apc-spdu\"\noutlets = 8\n\
         [[device]]\nname = \"a\"\ndevice_type = \"t\"\n[device.power]\npdu = \"p\"\noutlet = \"A1\"\n\
         [[device]]\nname = \"b\"\ndevice_type = \"t\"\n[device.power]\npdu = \"p\"\noutlet = 9\n"
    );
    let d = diags(&text);
    assert_eq!(d.len(), 2, "{d:#?}");
    assert!(
        d[0].message.contains("\"A1\" is not an outlet number"),
        "{}",
        d[0].message
    );
    assert!(
        d[1].message.contains("outlet 9 is not in 1..=8"),
        "{}",
        d[1].message
    );
}

#[test]
fn generic_snmp_needs_its_mapping_and_commands_need_both() {
    let text = format!(
        "{HEAD}[[pdu]]\nname = \"p\"\ndriver = \"snmp\"\nhost = \"h\"\noid = \"1.3.6.1.4.1.9.9.{{outlet}}\"\non_value = 1\n\
         [[pdu]]\nname = \"c\"\ndriver = \"command\"\non_command = \"x {{outlet}}\"\n"
    );
    let d = diags(&text);
    let msgs: Vec<&str> = d.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(
        msgs,
        [
            "snmp preset \"generic\" needs `off_value`",
            "driver \"command\" needs both `on_command` and `off_command`"
        ]
    );
    let bad_oid = format!(
        "{HEAD}[[pdu]]\nname = \"p\"\ndriver = \"snmp\"\nhost = \"h\"\noid = \"1.3.6.x\"\non_value = 1\noff_value = 0\n"
    );
    assert!(one(&bad_oid).message.contains("exactly one {outlet}"));
}

#[test]
fn device_commands_only_know_device() {
    let text = GOOD.replace("echo {device} >>", "echo {outlet} >>");
    let d = one(&text);
    assert_eq!(d.key, "device.power.hard_reset_command");
    assert!(
        d.message
            .contains("{outlet} cannot be used here (only {device})"),
        "{}",
        d.message
    );
    let both = GOOD.replace(
        "[device.power]\npower_on_command",
        "[device.power]\npdu = \"relays\"\npower_on_command",
    );
    assert!(
        diags(&both)[0]
            .message
            .contains("sets both `pdu` and power commands")
    );
}

#[test]
fn listener_address_and_threshold() {
    let text = GOOD
        .replace("\"127.0.0.1:16421\"", "\"localhost\"")
        .replace("unhealthy_after = 2", "unhealthy_after = 0");
    let d = diags(&text);
    assert_eq!(d.len(), 2, "{d:#?}");
    assert_eq!(d[0].key, "power.pdudaemon_listen");
    assert_eq!(d[1].key, "power.unhealthy_after");
}

#[test]
fn snmp_version_and_unknown_keys_come_from_the_parser() {
    let text = GOOD.replace("version = \"1\"", "version = \"3\"");
    let d = one(&text);
    assert_eq!(d.line, line_of(&text, "version = \"3\""));
    assert!(d.message.contains("v3 is not implemented"), "{}", d.message);
    let text = GOOD.replace("reboot_delay = \"10s\"", "reboot_dleay = \"10s\"");
    assert_eq!(one(&text).key, "reboot_dleay");
}
