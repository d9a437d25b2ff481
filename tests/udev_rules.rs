//! `labd udev-rules`: the committed example stays in sync; the generated rules parse without a
//! complaint from the real udev and create exactly the links labd's own matcher predicts on the
//! simulated adapters (real `udevadm test` with the stock `60-serial.rules`); `--install` writes
//! atomically and drives udevadm (absent, failing without a udev daemon, and present).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use labd::inventory::Inventory;
use labd::udev::{AdapterIdentity, parse_dump, rules};
use labd_hw_fixtures::simudev::{self, SimSysfs, UdevRun, UdevSandbox, resolve_link};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn example() -> Inventory {
    Inventory::load(&repo().join("udev-rules/example-inventory.toml")).unwrap()
}

#[test]
fn example_rules_are_in_sync() {
    let text = rules::render(&example());
    let path = repo().join("udev-rules/99-labd.rules");
    if std::env::var_os("LABD_REGENERATE_FIXTURES").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        text,
        "{} is stale: run `labd udev-rules -c udev-rules/example-inventory.toml > udev-rules/99-labd.rules`",
        path.display()
    );
}

/// Plugs every recorded adapter into a simulated sysfs and lets real udev process them with
/// `rules_text` installed as 99-labd.rules.
fn udev_with_rules(rules_text: &str) -> (UdevRun, BTreeMap<String, String>) {
    let tmp = tempfile::tempdir().unwrap();
    let sys = SimSysfs::create(tmp.path().join("sys")).unwrap();
    let rules_dir = tmp.path().join("rules.d");
    std::fs::create_dir_all(&rules_dir).unwrap();
    std::fs::write(rules_dir.join("99-labd.rules"), rules_text).unwrap();
    let mut ttys = Vec::new();
    for rec in simudev::recorded_adapters() {
        ttys.extend(sys.plug(&rec.adapter, &rec.placement).unwrap());
    }
    let run = UdevSandbox::new(sys.root(), &rules_dir)
        .add_all(&ttys)
        .unwrap();
    // /dev/lab/<x> → /dev/ttyUSBn
    let links = run
        .links
        .iter()
        .filter(|(l, _)| l.starts_with("/dev/lab/") || l.starts_with("/dev/naive/"))
        .map(|(l, t)| (l.clone(), resolve_link(l, t)))
        .collect();
    (run, links)
}

/// Lines udev logged while *parsing* 99-labd.rules (syntax errors, unknown keys or groups).
fn parse_complaints(run: &UdevRun) -> Vec<String> {
    run.logs
        .values()
        .flat_map(|l| l.lines())
        .filter(|l| l.starts_with("/etc/udev/rules.d/99-labd.rules"))
        .map(str::to_string)
        .collect()
}

#[test]
fn generated_rules_create_the_links_labd_predicts() {
    let inv = example();
    let (run, links) = udev_with_rules(&rules::render(&inv));
    assert_eq!(parse_complaints(&run), Vec::<String>::new());
    let expected: BTreeMap<String, String> = [
        ("bbb01", 0),
        ("rk3399-02", 1),
        ("rk3399-03", 2),
        ("imx8mp-04", 3),
        ("imx8mp-05", 5),
        ("sama5-06", 7),
        ("rpi3-07", 8),
        ("rpi3-08", 9),
        ("nanopi-09", 10),
    ]
    .into_iter()
    .map(|(d, n)| (format!("/dev/lab/{d}"), format!("/dev/ttyUSB{n}")))
    .collect();
    assert_eq!(links, expected);

    // labd's matcher, fed the properties udev produced, agrees with udev on every pair.
    for (devpath, props) in &run.properties {
        let rec = &parse_dump(props).unwrap()[0];
        let id = AdapterIdentity::from_record(rec);
        assert!(id.is_usb_tty(), "{devpath}");
        for dev in &inv.devices {
            let usb = dev.usb.as_ref().unwrap();
            let udev_says = links.get(&format!("/dev/{}", usb.symlink()))
                == id
                    .devnode
                    .as_ref()
                    .map(|n| n.display().to_string())
                    .as_ref();
            assert_eq!(
                usb.matches(&id),
                udev_says,
                "labd and udev disagree about {} on {devpath}",
                dev.name()
            );
        }
    }

    // GROUP and MODE were applied by our rule (the CH340 goes to plugdev).
    let ch340 = run
        .logs
        .iter()
        .find(|(d, _)| d.ends_with("/ttyUSB10"))
        .map(|(_, l)| l)
        .unwrap();
    assert!(
        ch340.contains("99-labd.rules:30 GROUP 46") && ch340.contains("99-labd.rules:30 MODE 0660"),
        "{ch340}"
    );
}

#[test]
fn attrs_from_two_parent_levels_never_match() {
    // udev(7): all ATTRS of one rule must match on the same parent. The serial is on the USB
    // device and bInterfaceNumber on the interface, so this "obvious" rule matches nothing,
    // while the ENV form labd writes matches exactly interface 02.
    let naive = "SUBSYSTEM==\"tty\", ATTRS{serial}==\"FT4SJA9C\", ATTRS{bInterfaceNumber}==\"02\", SYMLINK+=\"naive/attrs\"\n\
                 SUBSYSTEM==\"tty\", ATTRS{serial}==\"FT4SJA9C\", ENV{ID_USB_INTERFACE_NUM}==\"02\", SYMLINK+=\"naive/env\"\n";
    let (run, links) = udev_with_rules(naive);
    assert_eq!(parse_complaints(&run), Vec::<String>::new());
    assert_eq!(
        links,
        BTreeMap::from([("/dev/naive/env".to_string(), "/dev/ttyUSB5".to_string())])
    );
}

#[test]
fn udev_reports_a_broken_rule() {
    // The syntax check above is real: udev does complain about what it cannot parse.
    let (run, _) = udev_with_rules(
        "SUBSYSTEM==\"tty\", ATTRS{idVendor}==\"0403\", SYMLNK+=\"lab/x\"\nSUBSYSTEM==\"tty\", GROUP=\"no-such-group-labd\"\n",
    );
    let complaints = parse_complaints(&run);
    assert!(
        complaints
            .iter()
            .any(|l| l.contains(":1 Invalid key 'SYMLNK'"))
            && complaints
                .iter()
                .any(|l| l.contains(":2") && l.contains("no-such-group-labd")),
        "{complaints:#?}"
    );
}

fn labd(args: &[&str], path_env: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_labd"))
        .args(args)
        .env("PATH", path_env)
        .env_remove("LABD_CONFIG")
        .output()
        .unwrap()
}

fn install_args<'a>(root: &'a Path, inv: &'a str) -> Vec<&'a str> {
    vec![
        "udev-rules",
        "-c",
        inv,
        "--install",
        "--root",
        root.to_str().unwrap(),
    ]
}

#[test]
fn install_without_udevadm() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let empty_path = tmp.path().join("bin");
    std::fs::create_dir_all(&empty_path).unwrap();
    let inv = repo().join("udev-rules/example-inventory.toml");
    let out = labd(
        &install_args(&root, inv.to_str().unwrap()),
        empty_path.to_str().unwrap(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = root.join("etc/udev/rules.d/99-labd.rules");
    assert_eq!(
        stdout,
        format!(
            "installed {}\nudevadm not found; the rules apply when udev next starts or the adapters are replugged\n",
            file.display()
        )
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        rules::render(&example())
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o644
    );
    // Nothing but the rules file is left behind (the temporary file was renamed).
    let names: Vec<_> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["99-labd.rules"]);
}

#[test]
fn install_with_real_udevadm_and_no_udev_daemon() {
    // This machine has udevadm but no systemd-udevd: the rules are installed and labd says
    // plainly that udev was not reloaded, with udevadm's own error.
    let udevadm = labd_hw_fixtures::require_program("udevadm").unwrap();
    assert!(
        !Path::new("/run/udev/control").exists(),
        "this test expects a machine without a running udev daemon"
    );
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let inv = repo().join("udev-rules/example-inventory.toml");
    let out = labd(
        &install_args(&root, inv.to_str().unwrap()),
        udevadm.parent().unwrap().to_str().unwrap(),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = root.join("etc/udev/rules.d/99-labd.rules");
    assert!(file.is_file());
    assert!(
        stderr.contains(&format!(
            "rules installed at {}, but udev was not reloaded (is systemd-udevd running?)",
            file.display()
        )) && stderr.contains("control --reload-rules` failed")
            && stderr.contains("Failed to send reload request"),
        "{stderr}"
    );
}

#[test]
fn install_runs_reload_then_trigger() {
    // A stand-in udevadm that records its arguments: checks the commands and their order.
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = tmp.path().join("udevadm.log");
    let script = format!("#!/bin/sh\necho \"$*\" >> {}\n", log.display());
    let fake = bin.join("udevadm");
    std::fs::write(&fake, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = tmp.path().join("root");
    let inv = repo().join("udev-rules/example-inventory.toml");
    let path_env = format!("{}:/usr/bin:/bin", bin.display());
    let mut args = install_args(&root, inv.to_str().unwrap());
    args.extend(["--name", "70-lab.rules"]);
    let out = labd(&args, &path_env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(root.join("etc/udev/rules.d/70-lab.rules").is_file());
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "control --reload-rules\ntrigger --action=change --subsystem-match=tty\n"
    );
    // A name sorting before 60-serial.rules is refused: the ENV keys would not be set yet.
    let mut args = install_args(&root, inv.to_str().unwrap());
    args.extend(["--name", "50-lab.rules"]);
    let out = labd(&args, &path_env);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("must sort after 60-serial.rules"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn invalid_inventory_names_file_line_and_both_devices() {
    let tmp = tempfile::tempdir().unwrap();
    let inv = std::fs::read_to_string(repo().join("udev-rules/example-inventory.toml"))
        .unwrap()
        .replace("symlink = \"lab/rk3399-03\"", "symlink = \"lab/rk3399-02\"");
    let path = tmp.path().join("inv.toml");
    std::fs::write(&path, inv).unwrap();
    let out = labd(
        &["udev-rules", "-c", path.to_str().unwrap()],
        "/usr/bin:/bin",
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:48:11: device.usb.symlink: devices \"rk3399-02\" (line 25) and \"rk3399-03\" both want the link /dev/lab/rk3399-02",
            path.display()
        )),
        "{stderr}"
    );
}
