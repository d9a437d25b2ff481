//! The `actions:` list: `deploy`, `boot` and `test` blocks (see `test.rs` for the test block).
//!
//! Each block is checked while it is deserialized, so serde_norway attaches the YAML location
//! and path (`actions[1].boot`) to every error: an unknown key, a LAVA method labd does not run,
//! a key that does not belong to the chosen method.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::test::TestAction;
use super::timeouts::Timeout;
use super::util::{OrderedMap, StringList};

/// Keys every LAVA action block accepts (`lava_common.schemas.action()`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActionCommon {
    pub namespace: Option<String>,
    pub connection_namespace: Option<String>,
    /// Multi-Node roles this block belongs to (submission form).
    pub role: Vec<String>,
    pub timeout: Option<Timeout>,
    /// Per-action-name overrides inside this block.
    pub timeouts: BTreeMap<String, Timeout>,
    pub failure_retry: Option<u32>,
    pub failure_retry_interval: Option<u32>,
    pub repeat: Option<u32>,
    /// Action-level protocol requests (e.g. a Multi-Node `lava-wait` before `execute-qemu`).
    pub protocols: Option<serde_norway::Value>,
}

/// Declares a block struct with LAVA's common action keys plus its own, with strict keys.
macro_rules! action_block {
    ($(#[$m:meta])* $raw:ident { $($(#[$fm:meta])* $f:ident : $t:ty,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $raw {
            namespace: Option<String>,
            #[serde(rename = "connection-namespace")]
            connection_namespace: Option<String>,
            /// A list in a submission; a string in the sub-jobs lava-server hands workers.
            #[serde(default)]
            role: super::util::StringList,
            timeout: Option<Timeout>,
            #[serde(default)]
            timeouts: BTreeMap<String, Timeout>,
            failure_retry: Option<u32>,
            failure_retry_interval: Option<u32>,
            repeat: Option<u32>,
            protocols: Option<serde_norway::Value>,
            $($(#[$fm])* $f: $t,)*
        }

        impl $raw {
            fn common(&self) -> ActionCommon {
                ActionCommon {
                    namespace: self.namespace.clone(),
                    connection_namespace: self.connection_namespace.clone(),
                    role: self.role.0.clone(),
                    timeout: self.timeout,
                    timeouts: self.timeouts.clone(),
                    failure_retry: self.failure_retry,
                    failure_retry_interval: self.failure_retry_interval,
                    repeat: self.repeat,
                    protocols: self.protocols.clone(),
                }
            }
        }
    };
}
pub(crate) use action_block;

/// One entry of `actions:`. A job has a handful, so the size spread between variants does not
/// matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Deploy(DeployAction),
    Boot(BootAction),
    Test(TestAction),
}

impl Action {
    /// `deploy`, `boot` or `test`.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Deploy(_) => "deploy",
            Action::Boot(_) => "boot",
            Action::Test(_) => "test",
        }
    }

    pub fn common(&self) -> &ActionCommon {
        match self {
            Action::Deploy(a) => &a.common,
            Action::Boot(a) => &a.common,
            Action::Test(a) => &a.common,
        }
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Action;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an action: a mapping with one key, deploy, boot or test")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Action, A::Error> {
                let Some(kind) = map.next_key::<String>()? else {
                    return Err(de::Error::custom(
                        "empty action: expected one of deploy, boot, test",
                    ));
                };
                let action = match kind.as_str() {
                    "deploy" => Action::Deploy(map.next_value()?),
                    "boot" => Action::Boot(map.next_value()?),
                    "test" => Action::Test(map.next_value()?),
                    "command" => {
                        return Err(de::Error::custom(
                            "action kind `command` (a lab command run on the worker) is not supported by labd; supported: deploy, boot, test",
                        ));
                    }
                    other => {
                        return Err(de::Error::custom(format!(
                            "unknown action kind `{other}`; supported: deploy, boot, test"
                        )));
                    }
                };
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "an action has exactly one kind, found `{kind}` and `{extra}`"
                    )));
                }
                Ok(action)
            }
        }
        d.deserialize_map(V)
    }
}

/// Declares an enum parsed from a LAVA keyword, telling apart "LAVA has it, labd does not" from
/// "nobody knows this word".
macro_rules! lava_keyword {
    ($(#[$m:meta])* $name:ident, $what:literal, [$($var:ident = $s:literal),*], lava_only = [$($lava:literal),*]) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($var),* }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$var => $s),* }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                // The check runs inside `visit_str` so serde_norway locates the error at the
                // scalar itself (path `...method`).
                struct V;
                impl Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "a {}", $what)
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<$name, E> {
                        let supported = [$($s),*].join(", ");
                        match s {
                            $($s => Ok($name::$var),)*
                            $($lava)|* => Err(E::custom(format!(
                                "{} `{}` exists in LAVA but is not supported by labd (supported: {})",
                                $what, s, supported
                            ))),
                            _ => Err(E::custom(format!(
                                "unknown {} `{}` (supported: {})", $what, s, supported
                            ))),
                        }
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

lava_keyword!(
    /// `deploy: to:`.
    DeployTo, "deploy target", [Downloads = "downloads", Tmpfs = "tmpfs"],
    lava_only = ["nfs", "overlay", "usb", "sata", "flasher", "fastboot", "ssh", "lxc", "uuu",
        "recovery", "docker", "nbd", "iso-installer", "musca", "mps", "vemsd", "uboot-ums",
        "tftp", "avh", "removeable"]
);

lava_keyword!(
    /// `boot: method:`.
    BootMethod, "boot method", [Minimal = "minimal", UBoot = "u-boot", Qemu = "qemu"],
    lava_only = ["qemu-nfs", "qemu-iso", "barebox", "bootloader", "cmsis-dap", "depthcharge",
        "dfu", "docker", "fastboot", "fvp", "gdb", "grub", "grub-efi", "ipxe", "jlink", "kexec",
        "lxc", "monitor", "musca", "new_connection", "openocd", "pyocd", "recovery", "schroot",
        "ssh", "uefi", "uefi-menu", "uuu", "avh"]
);

/// `compression:` of an image (validation accepts these; labd decompresses them all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Bz2,
    Gz,
    Xz,
    Zip,
    Zstd,
}

/// One entry of `images:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    pub url: String,
    pub headers: Option<BTreeMap<String, String>>,
    pub compression: Option<Compression>,
    /// `tar`: unpack into a directory named after the image label.
    pub archive: Option<String>,
    pub md5sum: Option<String>,
    pub sha256sum: Option<String>,
    pub sha512sum: Option<String>,
    /// QEMU argument with `{label}` replaced by the downloaded path.
    pub image_arg: Option<String>,
    pub format: Option<String>,
    pub partition: Option<i64>,
    pub sparse: Option<bool>,
    /// Overlays into a cpio/ext4/tar image: accepted, not applied by labd yet.
    pub overlays: Option<serde_norway::Value>,
}

/// A `deploy` block.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployAction {
    pub common: ActionCommon,
    pub to: DeployTo,
    /// In the order written: LAVA downloads them in that order.
    pub images: OrderedMap<ImageSpec>,
    pub os: Option<String>,
}

action_block!(RawDeploy {
    to: DeployTo,
    #[serde(default)]
    images: OrderedMap<ImageSpec>,
    os: Option<String>,
    /// Accepted as LAVA's schema has them; labd does not use them.
    #[allow(dead_code)]
    authorize: Option<String>,
    postprocess: Option<serde_norway::Value>,
    #[allow(dead_code)]
    uefi: Option<serde_norway::Value>,
    #[allow(dead_code)]
    #[serde(rename = "type")]
    kind: Option<String>,
});

impl<'de> Deserialize<'de> for DeployAction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawDeploy::deserialize(d)?;
        let err = |m: &str| Err(de::Error::custom(format!("deploy to {}: {m}", raw.to)));
        if raw.images.is_empty() {
            return err("`images` is empty or missing");
        }
        if raw.postprocess.is_some() {
            return err("`postprocess` (docker post-processing) is not supported by labd");
        }
        if raw.to == DeployTo::Downloads {
            for (label, img) in raw.images.iter() {
                if img.image_arg.is_some() {
                    return Err(de::Error::custom(format!(
                        "images.{label}.image_arg: only `to: tmpfs` (QEMU) images take an image_arg"
                    )));
                }
            }
        }
        Ok(DeployAction {
            common: raw.common(),
            to: raw.to,
            images: raw.images,
            os: raw.os,
        })
    }
}

/// `auto_login:` of a boot block.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoLogin {
    pub login_prompt: String,
    pub username: String,
    pub password_prompt: Option<String>,
    pub password: Option<String>,
    #[serde(default)]
    pub login_commands: Vec<String>,
}

/// `transfer_overlay:` (how a minimal boot fetches the overlay on the DUT).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferOverlay {
    pub download_command: String,
    pub unpack_command: String,
    pub transfer_method: Option<String>,
}

/// `parameters:` of a boot block.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootParameters {
    #[serde(rename = "kernel-start-message")]
    pub kernel_start_message: Option<String>,
    #[serde(rename = "shutdown-message")]
    pub shutdown_message: Option<String>,
}

/// A `boot` block.
#[derive(Debug, Clone, PartialEq)]
pub struct BootAction {
    pub common: ActionCommon,
    pub method: BootMethod,
    /// u-boot: a named command set of the device (`actions.boot.methods.u-boot.<name>`) when
    /// one string, literal commands when a list.
    pub commands: Option<BootCommands>,
    /// Shell prompts to wait for after boot (and login).
    pub prompts: Vec<String>,
    pub auto_login: Option<AutoLogin>,
    pub parameters: BootParameters,
    pub soft_reboot: Vec<String>,
    /// minimal: run the device's `pre_power_command` / `pre_os_command`, reset the board.
    pub pre_power_command: Option<bool>,
    pub pre_os_command: Option<bool>,
    pub reset: Option<bool>,
    pub transfer_overlay: Option<TransferOverlay>,
    pub use_bootscript: Option<bool>,
    pub media: Option<String>,
    pub connection: Option<String>,
}

/// The `commands:` of a u-boot block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootCommands {
    /// Name of a command set in the device configuration (e.g. `ramdisk`, `nfs`).
    Named(String),
    Literal(Vec<String>),
}

action_block!(RawBoot {
    method: BootMethod,
    commands: Option<serde_norway::Value>,
    prompts: Option<StringList>,
    auto_login: Option<AutoLogin>,
    #[serde(default)]
    parameters: BootParameters,
    soft_reboot: Option<StringList>,
    pre_power_command: Option<bool>,
    pre_os_command: Option<bool>,
    reset: Option<bool>,
    transfer_overlay: Option<TransferOverlay>,
    use_bootscript: Option<bool>,
    media: Option<String>,
    connection: Option<String>,
    docker: Option<serde_norway::Value>,
});

impl<'de> Deserialize<'de> for BootAction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawBoot::deserialize(d)?;
        let m = raw.method;
        let not_for = |key: &str| {
            Err(de::Error::custom(format!(
                "`{key}` does not apply to boot method `{m}`"
            )))
        };
        let commands = match &raw.commands {
            None => None,
            Some(serde_norway::Value::String(s)) => Some(BootCommands::Named(s.clone())),
            Some(v @ serde_norway::Value::Sequence(_)) => {
                let list: StringList = serde_norway::from_value(v.clone())
                    .map_err(|e| de::Error::custom(format!("commands: {e}")))?;
                Some(BootCommands::Literal(list.0))
            }
            Some(_) => {
                return Err(de::Error::custom(
                    "commands: expected a command set name or a list of commands",
                ));
            }
        };
        match m {
            BootMethod::UBoot if commands.is_none() => {
                return Err(de::Error::custom(
                    "boot method `u-boot` needs `commands` (a list, or a command set name)",
                ));
            }
            BootMethod::UBoot => {}
            _ if commands.is_some() => return not_for("commands"),
            _ => {}
        }
        if m != BootMethod::UBoot && raw.use_bootscript.is_some() {
            return not_for("use_bootscript");
        }
        if m != BootMethod::Minimal {
            if raw.pre_power_command.is_some() {
                return not_for("pre_power_command");
            }
            if raw.pre_os_command.is_some() {
                return not_for("pre_os_command");
            }
            if raw.reset.is_some() {
                return not_for("reset");
            }
        }
        if m != BootMethod::Qemu {
            if raw.media.is_some() {
                return not_for("media");
            }
            if raw.connection.is_some() {
                return not_for("connection");
            }
        } else {
            if let Some(media) = raw.media.as_deref().filter(|x| *x != "tmpfs") {
                return Err(de::Error::custom(format!(
                    "media: qemu boots only `tmpfs` media, not `{media}`"
                )));
            }
            if let Some(c) = raw.connection.as_deref().filter(|x| *x != "serial") {
                return Err(de::Error::custom(format!(
                    "connection: qemu boots only with a `serial` connection, not `{c}`"
                )));
            }
            if raw.docker.is_some() {
                return Err(de::Error::custom(
                    "docker: running qemu inside docker is not supported by labd",
                ));
            }
        }
        if let Some(al) = &raw.auto_login {
            if al.login_prompt.is_empty() {
                return Err(de::Error::custom(
                    "auto_login.login_prompt must not be empty",
                ));
            }
            if al.password_prompt.is_some() != al.password.is_some() {
                return Err(de::Error::custom(
                    "auto_login: password_prompt and password go together",
                ));
            }
        }
        let prompts = raw.prompts.clone().unwrap_or_default().0;
        if prompts.iter().any(String::is_empty) {
            return Err(de::Error::custom("prompts: a prompt must not be empty"));
        }
        Ok(BootAction {
            common: raw.common(),
            method: m,
            commands,
            prompts,
            auto_login: raw.auto_login,
            parameters: raw.parameters,
            soft_reboot: raw.soft_reboot.unwrap_or_default().0,
            pre_power_command: raw.pre_power_command,
            pre_os_command: raw.pre_os_command,
            reset: raw.reset,
            transfer_overlay: raw.transfer_overlay,
            use_bootscript: raw.use_bootscript,
            media: raw.media,
            connection: raw.connection,
        })
    }
}
