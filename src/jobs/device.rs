//! The device configuration a LAVA server sends with a job: its device dictionary rendered
//! through the device-type template (`commands`, `actions.*.methods`, `constants`,
//! `character_delays`, `timeouts`). Device types vary a lot, so unknown keys are kept, not
//! refused; the parts labd uses are typed.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_norway::Value;

use super::model::{DefinitionError, OrderedMap, Scalar, StringList, Timeout};

const DOC: &str = "device configuration";

/// The rendered device dictionary.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct DeviceConfiguration {
    #[serde(default)]
    pub commands: DeviceCommands,
    #[serde(default)]
    pub constants: Constants,
    #[serde(default)]
    pub actions: DeviceActions,
    #[serde(default)]
    pub timeouts: DeviceTimeouts,
    #[serde(default)]
    pub character_delays: CharacterDelays,
    pub parameters: Option<Value>,
    pub environment: Option<Value>,
    pub device_info: Option<Value>,
    pub static_info: Option<Value>,
    pub storage_info: Option<Value>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

impl DeviceConfiguration {
    pub fn parse(text: &str) -> Result<Self, DefinitionError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_norway::from_str(text).map_err(|e| DefinitionError::from_yaml(DOC, &e))
    }

    /// The command that connects to the console: `commands.connect`, else the connection tagged
    /// `primary` (LAVA's `ConnectDevice.validate`). `Ok(None)` when there is none (QEMU).
    pub fn primary_connect(&self) -> Result<Option<String>, DefinitionError> {
        if let Some(c) = &self.commands.connect {
            return Ok(Some(c.clone()));
        }
        let primary: Vec<_> = self
            .commands
            .connections
            .iter()
            .filter(|(_, c)| c.tags.iter().any(|t| t == "primary"))
            .collect();
        match primary.as_slice() {
            [] if self.commands.connections.is_empty() => Ok(None),
            [] => Err(DefinitionError::at(
                DOC,
                "commands.connections",
                "no connection is tagged `primary`",
            )),
            [(_, c)] => Ok(Some(c.connect.clone())),
            _ => Err(DefinitionError::at(
                DOC,
                "commands.connections",
                "more than one connection is tagged `primary`",
            )),
        }
    }

    /// `actions.boot.methods.u-boot.parameters`.
    pub fn uboot(&self) -> Option<UBootParameters> {
        self.boot_method_parameters("u-boot")
    }

    /// `actions.boot.methods.qemu.parameters`.
    pub fn qemu(&self) -> Option<QemuParameters> {
        self.boot_method_parameters("qemu")
    }

    /// A named command set of a boot method (`actions.boot.methods.u-boot.ramdisk.commands`).
    pub fn boot_command_set(&self, method: &str, name: &str) -> Option<Vec<String>> {
        let m = self.actions.boot.methods.get(method)?.as_ref()?;
        let set = m.get(name)?.get("commands")?;
        serde_norway::from_value::<StringList>(set.clone())
            .ok()
            .map(|l| l.0)
    }

    /// Whether the device type offers a boot method (`minimal:` with no value counts).
    pub fn has_boot_method(&self, method: &str) -> bool {
        self.actions.boot.methods.contains_key(method)
    }

    fn boot_method_parameters<T: for<'de> Deserialize<'de>>(&self, method: &str) -> Option<T> {
        let m = self.actions.boot.methods.get(method)?.as_ref()?;
        let p = m.get("parameters")?;
        serde_norway::from_value(p.clone()).ok()
    }

    /// A constant for `section` (a bootloader or `posix`), or a top-level constant.
    pub fn constant(&self, key: &str, section: Option<&str>) -> Option<&Value> {
        match section {
            Some(s) => self.constants.other.get(s)?.get(key),
            None => self.constants.other.get(key),
        }
    }
}

/// `commands:` — how to reach and power the board. Each may be a string or a list.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct DeviceCommands {
    pub connect: Option<String>,
    #[serde(default)]
    pub connections: BTreeMap<String, ConnectionSpec>,
    pub hard_reset: Option<StringList>,
    pub soft_reboot: Option<StringList>,
    pub power_on: Option<StringList>,
    pub power_off: Option<StringList>,
    pub pre_power_command: Option<StringList>,
    pub pre_os_command: Option<StringList>,
    pub recovery_mode: Option<StringList>,
    pub recovery_exit: Option<StringList>,
    #[serde(default)]
    pub users: BTreeMap<String, UserCommand>,
    pub must_use_connection: Option<bool>,
}

/// `commands.connections.<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ConnectionSpec {
    pub connect: String,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `commands.users.<name>`: `do` and optional `undo` (LAVA's `user_commands`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UserCommand {
    #[serde(rename = "do")]
    pub do_: String,
    pub undo: Option<String>,
}

/// `constants:` — typed access to the common ones; everything is also in `other`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Constants {
    pub posix: PosixConstants,
    pub shutdown_message: Option<String>,
    pub kernel_start_message: Option<String>,
    pub default_shell_prompt: Option<String>,
    /// `spawn_maxread`, a string in the templates ("4092").
    pub spawn_maxread: Option<usize>,
    pub failure_retry: Option<u32>,
    pub boot_retry: Option<u32>,
    /// Every constant as rendered, including bootloader sections (`u-boot:`, `grub:`...).
    pub other: BTreeMap<String, Value>,
}

impl<'de> Deserialize<'de> for Constants {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let other: BTreeMap<String, Value> =
            Option::<BTreeMap<String, Value>>::deserialize(d)?.unwrap_or_default();
        let text = |k: &str| -> Option<String> {
            match other.get(k)? {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        };
        let num =
            |k: &str| -> Result<Option<u32>, D::Error> {
                match other.get(k) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::Number(n)) => n
                        .as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .map(Some)
                        .ok_or_else(|| D::Error::custom(format!("{k}: expected a small integer"))),
                    Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
                    Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| {
                        D::Error::custom(format!("{k}: expected an integer, got {s:?}"))
                    }),
                    Some(_) => Err(D::Error::custom(format!("{k}: expected an integer"))),
                }
            };
        let posix = match other.get("posix") {
            Some(v) => serde_norway::from_value(v.clone())
                .map_err(|e| D::Error::custom(format!("posix: {e}")))?,
            None => PosixConstants::default(),
        };
        Ok(Constants {
            posix,
            shutdown_message: text("shutdown-message"),
            kernel_start_message: text("kernel-start-message"),
            default_shell_prompt: text("default-shell-prompt"),
            spawn_maxread: text("spawn_maxread").and_then(|s| s.trim().parse().ok()),
            failure_retry: num("failure_retry")?,
            boot_retry: num("boot_retry")?,
            other,
        })
    }
}

impl Constants {
    /// The constants of a bootloader section (`u-boot`, `barebox`, `grub`, `ipxe`...).
    pub fn bootloader(&self, name: &str) -> Option<BootloaderConstants> {
        serde_norway::from_value(self.other.get(name)?.clone()).ok()
    }
}

/// `constants.posix`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PosixConstants {
    #[serde(default = "PosixConstants::sh")]
    pub lava_test_sh_cmd: String,
    /// With `%s` for the job id.
    #[serde(default = "PosixConstants::dir")]
    pub lava_test_results_dir: String,
    #[serde(default = "PosixConstants::shell_file")]
    pub lava_test_shell_file: String,
}

impl PosixConstants {
    fn sh() -> String {
        "/bin/sh".into()
    }
    fn dir() -> String {
        "/lava-%s".into()
    }
    fn shell_file() -> String {
        "~/.bashrc".into()
    }

    /// `lava_test_results_dir % job_id`.
    pub fn results_dir(&self, job_id: &str) -> String {
        self.lava_test_results_dir.replacen("%s", job_id, 1)
    }
}

impl Default for PosixConstants {
    fn default() -> Self {
        Self {
            lava_test_sh_cmd: Self::sh(),
            lava_test_results_dir: Self::dir(),
            lava_test_shell_file: Self::shell_file(),
        }
    }
}

/// A bootloader section of `constants`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct BootloaderConstants {
    #[serde(rename = "interrupt-prompt")]
    pub interrupt_prompt: Option<String>,
    #[serde(rename = "interrupt-character")]
    pub interrupt_character: Option<Scalar>,
    #[serde(default)]
    pub interrupt_ctrl_list: Vec<String>,
    #[serde(rename = "interrupt-newline")]
    pub interrupt_newline: Option<bool>,
    #[serde(rename = "final-message")]
    pub final_message: Option<String>,
    #[serde(rename = "error-messages", default)]
    pub error_messages: Vec<String>,
    #[serde(rename = "dfu-download")]
    pub dfu_download: Option<String>,
}

/// `actions:` — deploy and boot methods the device type offers.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct DeviceActions {
    #[serde(default)]
    pub deploy: DeviceActionMethods,
    #[serde(default)]
    pub boot: DeviceActionMethods,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct DeviceActionMethods {
    #[serde(default)]
    pub connections: BTreeMap<String, Option<Value>>,
    /// Method name → its block (often empty: `minimal:`).
    #[serde(default)]
    pub methods: BTreeMap<String, Option<Value>>,
}

/// `actions.boot.methods.u-boot.parameters`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct UBootParameters {
    pub bootloader_prompt: Option<String>,
    pub interrupt_prompt: Option<String>,
    pub interrupt_char: Option<Scalar>,
    pub needs_interrupt: Option<bool>,
    /// What marks the kernel starting (default: the `u-boot` final message).
    pub boot_message: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// `actions.boot.methods.qemu.parameters`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct QemuParameters {
    /// `qemu-system-x86_64`.
    pub command: Option<String>,
    /// Each entry may hold several arguments (`-net nic,... -net user`).
    #[serde(default)]
    pub options: Vec<String>,
    pub extra: Option<StringList>,
    pub boot_options: Option<OrderedMap<Value>>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// `character_delays:` in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub struct CharacterDelays {
    #[serde(default)]
    pub boot: u64,
    #[serde(default)]
    pub test: u64,
}

/// `timeouts:` of the device type (defaults under the job's own).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct DeviceTimeouts {
    pub action: Option<Timeout>,
    #[serde(default)]
    pub actions: BTreeMap<String, Timeout>,
    pub connection: Option<Timeout>,
    #[serde(default)]
    pub connections: BTreeMap<String, Timeout>,
}

#[cfg(test)]
#[path = "device_tests.rs"]
mod tests;
