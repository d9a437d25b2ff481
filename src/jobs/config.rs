//! `[device.boot]`: what a device dictionary would say about booting a board, for jobs run with
//! `labd run-job` (no server renders a device configuration then). It converts into the same
//! [`DeviceConfiguration`] a server would send, so the runner has one path.
//!
//! ```toml
//! [device.boot]
//! methods = ["minimal", "u-boot"]        # boot methods jobs may use (default: all three)
//! bootloader_prompt = "=>"
//! interrupt_prompt = "Hit any key to stop autoboot"
//! interrupt_char = " "
//! boot_message = "Starting kernel"
//! prompts = ["/ # "]                      # used when a job's boot block has none
//! character_delays = { boot = 5, test = 0 }   # milliseconds between characters
//! [device.boot.login]                     # used when a job's boot block has no auto_login
//! login_prompt = "login:"
//! username = "root"
//! [device.boot.commands]                  # named u-boot command sets (`commands: ramdisk`)
//! ramdisk = ["setenv bootargs console=ttyS0", "bootm 0x82000000"]
//! [device.boot.qemu]
//! command = "qemu-system-x86_64"
//! options = ["-nographic", "-m 256", "-monitor none"]
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::device::{CharacterDelays, DeviceConfiguration};
use super::expect::Pattern;
use super::model::BootMethod;
use crate::inventory::{Diagnostics, Inventory};

/// `[device.boot]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DeviceBoot {
    /// Boot methods jobs may use on this board: `minimal`, `u-boot`, `qemu`.
    pub methods: Option<Spanned<Vec<String>>>,
    /// Which bootloader's constants (error messages) apply; `u-boot` by default.
    pub bootloader: Option<Spanned<String>>,
    pub bootloader_prompt: Option<Spanned<String>>,
    pub interrupt_prompt: Option<Spanned<String>>,
    pub interrupt_char: Option<Spanned<String>>,
    /// What shows that the bootloader handed over to the kernel.
    pub boot_message: Option<Spanned<String>>,
    pub kernel_start_message: Option<Spanned<String>>,
    /// Default shell prompts (regular expressions).
    #[serde(default)]
    pub prompts: Vec<Spanned<String>>,
    pub login: Option<BootLogin>,
    #[serde(default)]
    pub character_delays: BootCharacterDelays,
    /// Named u-boot command sets.
    #[serde(default)]
    pub commands: BTreeMap<String, Vec<String>>,
    pub qemu: Option<BootQemu>,
    /// `lava_test_results_dir` with `%s` for the job id (default `/lava-%s`).
    pub results_dir: Option<Spanned<String>>,
}

/// `[device.boot.login]`: auto-login defaults, with the same keys as a job's `auto_login:`
/// (one type, so the two cannot drift apart).
pub type BootLogin = super::model::AutoLogin;

/// `character_delays`, milliseconds.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BootCharacterDelays {
    #[serde(default)]
    pub boot: u64,
    #[serde(default)]
    pub test: u64,
}

/// `[device.boot.qemu]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BootQemu {
    pub command: Spanned<String>,
    #[serde(default)]
    pub options: Vec<String>,
    #[serde(default)]
    pub extra: Vec<String>,
}

impl DeviceBoot {
    /// The boot methods this board offers.
    pub fn methods(&self) -> Vec<String> {
        match &self.methods {
            Some(m) => m.get_ref().clone(),
            None if self.qemu.is_some() => vec!["minimal".into(), "qemu".into()],
            None => vec!["minimal".into(), "u-boot".into()],
        }
    }

    /// The device configuration a LAVA server would render for this board: LAVA's default
    /// constants with this section's values, boot methods and parameters, character delays.
    /// `commands` (connect, power) are the runner's business: labd drives its own console and
    /// power for inventory devices.
    pub fn to_device_configuration(&self) -> DeviceConfiguration {
        use serde_norway::{Mapping, Value};
        let s = |v: &str| Value::String(v.to_string());
        let mut dev = super::patterns::default_device_configuration();
        let mut methods: BTreeMap<String, Option<Value>> = BTreeMap::new();
        for m in self.methods() {
            let mut block = Mapping::new();
            if m == "u-boot" {
                let mut p = Mapping::new();
                if let Some(v) = &self.bootloader_prompt {
                    p.insert(s("bootloader_prompt"), s(v.get_ref()));
                }
                if let Some(v) = &self.interrupt_prompt {
                    p.insert(s("interrupt_prompt"), s(v.get_ref()));
                }
                if let Some(v) = &self.interrupt_char {
                    p.insert(s("interrupt_char"), s(v.get_ref()));
                }
                if let Some(v) = &self.boot_message {
                    p.insert(s("boot_message"), s(v.get_ref()));
                }
                block.insert(s("parameters"), Value::Mapping(p));
                for (name, cmds) in &self.commands {
                    let mut set = Mapping::new();
                    set.insert(
                        s("commands"),
                        Value::Sequence(cmds.iter().map(|c| s(c)).collect()),
                    );
                    block.insert(s(name), Value::Mapping(set));
                }
            }
            if m == "qemu" {
                if let Some(q) = &self.qemu {
                    let mut p = Mapping::new();
                    p.insert(s("command"), s(q.command.get_ref()));
                    p.insert(
                        s("options"),
                        Value::Sequence(q.options.iter().map(|o| s(o)).collect()),
                    );
                    if !q.extra.is_empty() {
                        p.insert(
                            s("extra"),
                            Value::Sequence(q.extra.iter().map(|o| s(o)).collect()),
                        );
                    }
                    block.insert(s("parameters"), Value::Mapping(p));
                }
            }
            methods.insert(
                m.clone(),
                if block.is_empty() {
                    None
                } else {
                    Some(Value::Mapping(block))
                },
            );
        }
        dev.actions.boot.methods = methods;
        if let Some(v) = &self.kernel_start_message {
            dev.constants.kernel_start_message = Some(v.get_ref().clone());
        }
        if let Some(v) = &self.results_dir {
            dev.constants.posix.lava_test_results_dir = v.get_ref().clone();
        }
        dev.character_delays = CharacterDelays {
            boot: self.character_delays.boot,
            test: self.character_delays.test,
        };
        dev
    }

    /// The bootloader whose constants apply (`u-boot` unless set).
    pub fn bootloader_name(&self) -> &str {
        self.bootloader
            .as_ref()
            .map_or("u-boot", |b| b.get_ref().as_str())
    }

    /// Prompts as plain strings.
    pub fn prompts(&self) -> Vec<String> {
        self.prompts.iter().map(|p| p.get_ref().clone()).collect()
    }
}

/// Cross-checks of `[device.boot]`: known methods, valid regular expressions, a one-character
/// interrupt, a qemu command when qemu is offered.
pub fn validate(inv: &Inventory, diags: &mut Diagnostics) {
    let src = &inv.source;
    for dev in &inv.devices {
        let Some(boot) = &dev.boot else {
            continue;
        };
        let name = dev.name().as_str();
        if let Some(m) = &boot.methods {
            for method in m.get_ref() {
                let ok = serde_norway::from_str::<BootMethod>(method).is_ok();
                if !ok {
                    diags.push(src.diag(
                        m.span(),
                        "device.boot.methods",
                        format!("device {name:?}: unknown boot method {method:?} (labd runs minimal, u-boot, qemu)"),
                    ));
                }
            }
            if m.get_ref().iter().any(|x| x == "qemu") && boot.qemu.is_none() {
                diags.push(src.diag(
                    m.span(),
                    "device.boot.methods",
                    format!("device {name:?}: method qemu needs a [device.boot.qemu] command"),
                ));
            }
        }
        let regexes = boot
            .prompts
            .iter()
            .map(|p| ("device.boot.prompts", p))
            .chain(
                boot.bootloader_prompt
                    .iter()
                    .map(|p| ("device.boot.bootloader_prompt", p)),
            )
            .chain(
                boot.interrupt_prompt
                    .iter()
                    .map(|p| ("device.boot.interrupt_prompt", p)),
            )
            .chain(
                boot.boot_message
                    .iter()
                    .map(|p| ("device.boot.boot_message", p)),
            )
            .chain(
                boot.kernel_start_message
                    .iter()
                    .map(|p| ("device.boot.kernel_start_message", p)),
            );
        for (key, p) in regexes {
            if p.get_ref().is_empty() {
                diags.push(src.diag(p.span(), key, format!("device {name:?}: must not be empty")));
            } else if let Err(e) = Pattern::new(p.get_ref()) {
                diags.push(src.diag(
                    p.span(),
                    key,
                    format!("device {name:?}: invalid regular expression: {e}"),
                ));
            }
        }
        if let Some(b) = &boot.bootloader {
            let known = [
                "u-boot",
                "barebox",
                "grub",
                "grub-efi",
                "ipxe",
                "depthcharge",
            ];
            if !known.contains(&b.get_ref().as_str()) {
                diags.push(src.diag(
                    b.span(),
                    "device.boot.bootloader",
                    format!(
                        "device {name:?}: unknown bootloader {:?} (LAVA's constants cover {})",
                        b.get_ref(),
                        known.join(", ")
                    ),
                ));
            }
        }
        if let Some(c) = &boot.interrupt_char {
            if c.get_ref().chars().count() > 1 {
                diags.push(src.diag(
                    c.span(),
                    "device.boot.interrupt_char",
                    format!("device {name:?}: interrupt_char is one character (or empty for a bare newline)"),
                ));
            }
        }
        if let Some(q) = &boot.qemu {
            if q.command.get_ref().trim().is_empty() {
                diags.push(src.diag(
                    q.command.span(),
                    "device.boot.qemu.command",
                    format!("device {name:?}: qemu command must not be empty"),
                ));
            }
        }
        if let Some(d) = &boot.results_dir {
            if !d.get_ref().starts_with('/') || d.get_ref().matches("%s").count() != 1 {
                diags.push(src.diag(
                    d.span(),
                    "device.boot.results_dir",
                    format!("device {name:?}: results_dir must be an absolute path containing one %s (the job id)"),
                ));
            }
        }
    }
}
