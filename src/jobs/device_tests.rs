use super::*;

/// The device configuration lava-server 2023.01 rendered for `qemu01` in the transcript
/// (comments and all), cut after the parts labd reads.
fn transcript_device() -> String {
    let consts = crate::jobs::patterns::DEFAULT_CONSTANTS_YAML;
    format!(
        "{consts}parameters:\n  # interfaces or device_ip or device_mac\n\n  pass: # sata_uuid_sd_uuid_usb_uuid\n\n\n\navailable_architectures:\n- arm64\n- amd64\n\nactions:\n  deploy:\n    connections:\n      serial:\n      lxc:\n    methods:\n      nfs:\n      lxc:\n      image:\n        parameters:\n          guest:\n            size: 512  # in Mb\n            interface: ide\n            driveid: lavatest\n  boot:\n    connections:\n      serial:\n      ssh:\n      lxc:\n    methods:\n      minimal:\n      qemu:\n        parameters:\n          command:\n            qemu-system-x86_64\n          # used by installers to relate to the empty target device\n          boot_options:\n            {{root: /dev/sda1,\n             console: 'ttyS0,115200',\n             boot_order: c}}\n          options:\n          - -nographic\n          - -net nic,model=virtio,macaddr=52:54:00:12:34:59 -net user,restrict=on\n          - -m 256\n          - -monitor none\ntimeouts:\n  actions:\n    apply-overlay-image:\n      minutes: 2\n    auto-login-action:\n      minutes: 2\n    lava-test-shell:\n      minutes: 3\n    power-off:\n      seconds: 10\n  connections:\n    lava-test-shell:\n      seconds: 10\n"
    )
}

#[test]
fn qemu_device_from_the_transcript() {
    let dev = DeviceConfiguration::parse(&transcript_device()).unwrap();
    let q = dev.qemu().unwrap();
    assert_eq!(q.command.as_deref(), Some("qemu-system-x86_64"));
    assert_eq!(
        q.options[1],
        "-net nic,model=virtio,macaddr=52:54:00:12:34:59 -net user,restrict=on"
    );
    let bo = q.boot_options.unwrap();
    assert_eq!(
        bo.keys().collect::<Vec<_>>(),
        ["root", "console", "boot_order"]
    );
    assert!(dev.has_boot_method("minimal"));
    assert!(dev.uboot().is_none());
    assert_eq!(dev.primary_connect().unwrap(), None);
    assert_eq!(dev.timeouts.actions["power-off"].secs(), 10);
    assert_eq!(dev.timeouts.connections["lava-test-shell"].secs(), 10);
    assert_eq!(dev.character_delays, CharacterDelays::default());
    assert_eq!(
        dev.constants.default_shell_prompt.as_deref(),
        Some("lava-test: # ")
    );
    assert!(dev.other.contains_key("available_architectures"));
}

const BBB: &str = r#"
commands:
  connections:
    uart0:
      connect: telnet localhost 6000
      tags: [primary, telnet]
    uart1:
      connect: telnet localhost 6001
  hard_reset: /usr/bin/pduclient --daemon localhost --hostname pdu --command reboot --port 08
  power_off: [/usr/bin/pduclient --daemon localhost --hostname pdu --command off --port 08]
  power_on: /usr/bin/pduclient --daemon localhost --hostname pdu --command on --port 08
  soft_reboot: [reboot, reboot -n]
  users:
    do_something: {do: echo on, undo: echo off}
character_delays:
      boot: 10
      test: 5
constants:
  u-boot:
    interrupt-prompt: 'Hit any key to stop autoboot'
    interrupt-character: ' '
    error-messages: ['Resetting CPU']
  failure_retry: 3
actions:
  boot:
    methods:
      minimal:
      u-boot:
        parameters:
          bootloader_prompt: =>
          interrupt_prompt: Hit any key to stop autoboot
          interrupt_char: ""
          needs_interrupt: True
          boot_message: Booting Linux
        ramdisk:
          commands:
          - setenv autoload no
          - bootz {KERNEL_ADDR} {RAMDISK_ADDR} {DTB_ADDR}
"#;

#[test]
fn serial_board() {
    let dev = DeviceConfiguration::parse(BBB).unwrap();
    assert_eq!(
        dev.primary_connect().unwrap().as_deref(),
        Some("telnet localhost 6000")
    );
    assert_eq!(dev.commands.power_off.as_ref().unwrap().0.len(), 1);
    assert_eq!(
        dev.commands.soft_reboot.as_ref().unwrap().0,
        ["reboot", "reboot -n"]
    );
    assert_eq!(
        dev.commands.users["do_something"].undo.as_deref(),
        Some("echo off")
    );
    assert_eq!(dev.character_delays, CharacterDelays { boot: 10, test: 5 });
    let ub = dev.uboot().unwrap();
    assert_eq!(ub.bootloader_prompt.as_deref(), Some("=>"));
    assert_eq!(ub.interrupt_char.unwrap().0, "");
    assert_eq!(ub.needs_interrupt, Some(true));
    assert_eq!(
        dev.boot_command_set("u-boot", "ramdisk").unwrap()[1],
        "bootz {KERNEL_ADDR} {RAMDISK_ADDR} {DTB_ADDR}"
    );
    assert_eq!(dev.constants.failure_retry, Some(3));
    assert_eq!(dev.constants.posix, PosixConstants::default());

    let two = BBB.replace("tags: [primary, telnet]", "tags: [telnet]");
    let e = DeviceConfiguration::parse(&two)
        .unwrap()
        .primary_connect()
        .unwrap_err();
    assert!(
        e.to_string().contains("no connection is tagged `primary`"),
        "{e}"
    );
    let e = DeviceConfiguration::parse("character_delays: {boot: fast}\n").unwrap_err();
    assert_eq!(e.path, "character_delays.boot");
    assert_eq!(e.line, Some(1));
}

#[test]
fn inventory_boot_section_becomes_a_device_configuration() {
    let text = r#"
[worker]
name = "w"
state_dir = "/var/lib/labd"

[[device]]
name = "bbb01"
device_type = "beaglebone-black"
[device.boot]
bootloader_prompt = "=>"
interrupt_prompt = "Hit any key to stop autoboot"
interrupt_char = " "
prompts = ["/ # "]
character_delays = { boot = 5 }
[device.boot.login]
login_prompt = "login:"
username = "root"
[device.boot.commands]
ramdisk = ["setenv bootargs console=ttyS0", "bootm 0x82000000"]

[[device]]
name = "qemu01"
device_type = "qemu"
[device.boot]
methods = ["qemu"]
[device.boot.qemu]
command = "qemu-system-x86_64"
options = ["-nographic", "-m 256"]
"#;
    let inv = crate::inventory::Inventory::parse(std::path::Path::new("inv.toml"), text).unwrap();
    let bbb = inv.device("bbb01").unwrap().boot.as_ref().unwrap();
    let dev = bbb.to_device_configuration();
    assert_eq!(
        dev.uboot().unwrap().bootloader_prompt.as_deref(),
        Some("=>")
    );
    assert_eq!(
        dev.boot_command_set("u-boot", "ramdisk").unwrap()[1],
        "bootm 0x82000000"
    );
    assert!(dev.has_boot_method("minimal"));
    assert_eq!(dev.character_delays.boot, 5);
    // LAVA's default constants come along (bootloader error messages, kernel start message).
    assert_eq!(
        dev.constants
            .bootloader("u-boot")
            .unwrap()
            .error_messages
            .len(),
        16
    );
    assert_eq!(bbb.login.as_ref().unwrap().username, "root");
    let q = inv
        .device("qemu01")
        .unwrap()
        .boot
        .as_ref()
        .unwrap()
        .to_device_configuration();
    assert_eq!(q.qemu().unwrap().options, ["-nographic", "-m 256"]);
    assert!(!q.has_boot_method("u-boot"));

    let bad = text
        .replace("methods = [\"qemu\"]", "methods = [\"qemu\", \"grub\"]")
        .replace("prompts = [\"/ # \"]", "prompts = [\"(\"]")
        .replace("interrupt_char = \" \"", "interrupt_char = \"ab\"");
    let e = crate::inventory::Inventory::parse(std::path::Path::new("inv.toml"), &bad).unwrap_err();
    let msgs: Vec<String> = e.diagnostics().iter().map(ToString::to_string).collect();
    assert!(
        msgs.iter()
            .any(|m| m.contains("device.boot.methods") && m.contains("\"grub\"")),
        "{msgs:#?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("inv.toml:13:") && m.contains("device.boot.prompts")),
        "{msgs:#?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("device.boot.interrupt_char")),
        "{msgs:#?}"
    );
    let typo = text.replace("bootloader_prompt", "bootloader_prompts");
    let e =
        crate::inventory::Inventory::parse(std::path::Path::new("inv.toml"), &typo).unwrap_err();
    assert!(e.to_string().contains("bootloader_prompts"), "{e}");
}
