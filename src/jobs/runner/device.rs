//! The board a job runs on, whichever way it was described: an inventory device (`labd
//! run-job`: `[device.console]`, `[device.power]`, `[device.boot]`) or the device configuration a
//! master sends (its `commands.connect` and power commands, honoured as LAVA does).
//!
//! A master's `connect` of `telnet localhost PORT` (or `127.0.0.1`, `::1`) where PORT is one of
//! labd's own console listeners is recognised: the job then uses that console directly (job
//! subscription and writer lease, no telnet process) and, when the inventory powers that
//! device, labd's power service.

use std::net::SocketAddr;

use crate::console::{ConsoleHandle, ConsoleRegistry};
use crate::ids::DeviceName;
use crate::inventory::{DeviceConfig, Inventory};
use crate::jobs::device::DeviceConfiguration;
use crate::jobs::model::AutoLogin;
use crate::power::PowerService;

use super::power::BoardPower;

/// How the job reaches the board's console.
#[derive(Clone)]
pub enum ConsoleAccess {
    /// A labd console.
    Hub(ConsoleHandle),
    /// A command run on a pty (LAVA's `ConnectDevice`).
    Command(String),
    /// None (a qemu device: its console is qemu's stdio).
    None,
}

/// Everything the runner needs to know about the board.
#[derive(Clone)]
pub struct DeviceSetup {
    /// The inventory device, when known.
    pub name: Option<DeviceName>,
    pub config: DeviceConfiguration,
    pub console: ConsoleAccess,
    pub power: BoardPower,
    /// Prompts used when a boot block has none (`[device.boot] prompts`).
    pub default_prompts: Vec<String>,
    /// Auto-login used when a boot block has none (`[device.boot.login]`).
    pub default_login: Option<AutoLogin>,
    /// Whose constants (error messages, interrupt) apply to `u-boot` boots.
    pub bootloader: String,
}

impl DeviceSetup {
    /// An inventory device for `labd run-job` (or a run-job request to the daemon).
    pub fn from_inventory(
        dev: &DeviceConfig,
        console: Option<ConsoleHandle>,
        power: Option<&PowerService>,
    ) -> Self {
        let boot = dev.boot.clone().unwrap_or_default();
        let mut config = boot.to_device_configuration();
        let commands = match &dev.power {
            Some(p) => {
                let text = |c: &Option<toml::Spanned<String>>| {
                    c.as_ref()
                        .map(|s| crate::jobs::model::StringList(vec![s.get_ref().clone()]))
                };
                crate::jobs::device::DeviceCommands {
                    power_on: text(&p.power_on_command),
                    power_off: text(&p.power_off_command),
                    hard_reset: text(&p.hard_reset_command),
                    ..Default::default()
                }
            }
            None => Default::default(),
        };
        config.commands = commands.clone();
        let power = match (power, &dev.power) {
            (Some(service), Some(_)) => BoardPower::Service {
                power: service.clone(),
                device: dev.name().clone(),
                commands: Default::default(),
            },
            _ => BoardPower::Commands(commands),
        };
        Self {
            name: Some(dev.name().clone()),
            config,
            console: console.map_or(ConsoleAccess::None, ConsoleAccess::Hub),
            power,
            default_prompts: boot.prompts(),
            default_login: boot.login.as_ref().map(|l| AutoLogin {
                login_prompt: l.login_prompt.clone(),
                username: l.username.clone(),
                password_prompt: l.password_prompt.clone(),
                password: l.password.clone(),
                login_commands: l.login_commands.clone(),
            }),
            bootloader: boot.bootloader_name().to_string(),
        }
    }

    /// A device configuration from a master. `consoles`/`inventory`/`power` are the daemon's,
    /// used when the connect command points at one of labd's listeners.
    pub fn from_master(
        config: DeviceConfiguration,
        consoles: Option<&ConsoleRegistry>,
        inventory: Option<&Inventory>,
        power: Option<&PowerService>,
    ) -> Result<Self, crate::jobs::model::DefinitionError> {
        let connect = config.primary_connect()?;
        let mut setup = Self {
            name: None,
            power: BoardPower::Commands(config.commands.clone()),
            console: match &connect {
                Some(c) => ConsoleAccess::Command(c.clone()),
                None => ConsoleAccess::None,
            },
            config,
            default_prompts: Vec::new(),
            default_login: None,
            bootloader: "u-boot".into(),
        };
        let (Some(cmd), Some(consoles)) = (connect.as_deref(), consoles) else {
            return Ok(setup);
        };
        let Some(port) = local_telnet_port(cmd) else {
            return Ok(setup);
        };
        let own = consoles.statuses().into_iter().find(|s| {
            s.listen
                .as_deref()
                .and_then(|a| a.parse::<SocketAddr>().ok())
                .is_some_and(|a| a.port() == port)
        });
        let Some(status) = own else {
            return Ok(setup);
        };
        let Some(handle) = consoles.get(status.device.as_str()) else {
            return Ok(setup);
        };
        tracing::info!(device = %status.device, port, "master job uses labd's console directly");
        setup.console = ConsoleAccess::Hub(handle);
        setup.name = Some(status.device.clone());
        let powered = inventory
            .and_then(|inv| inv.device(status.device.as_str()))
            .is_some_and(|d| d.power.is_some());
        if let (true, Some(p)) = (powered, power) {
            setup.power = BoardPower::Service {
                power: p.clone(),
                device: status.device.clone(),
                commands: setup.config.commands.clone(),
            };
        }
        Ok(setup)
    }
}

/// The port of `telnet localhost PORT` (also `127.0.0.1`, `::1`, `localhost:PORT`-less forms
/// only), else `None`.
pub fn local_telnet_port(cmd: &str) -> Option<u16> {
    let args = shlex::split(cmd)?;
    let [prog, host, port] = args.as_slice() else {
        return None;
    };
    let prog = prog.rsplit('/').next().unwrap_or(prog);
    if prog != "telnet" {
        return None;
    }
    if !matches!(host.as_str(), "localhost" | "127.0.0.1" | "::1" | "[::1]") {
        return None;
    }
    port.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telnet_to_localhost() {
        assert_eq!(local_telnet_port("telnet localhost 7101"), Some(7101));
        assert_eq!(
            local_telnet_port("/usr/bin/telnet 127.0.0.1 7001"),
            Some(7001)
        );
        assert_eq!(local_telnet_port("telnet 10.0.0.2 7001"), None);
        assert_eq!(local_telnet_port("ssh localhost 7001"), None);
        assert_eq!(local_telnet_port("telnet localhost"), None);
        assert_eq!(local_telnet_port("telnet localhost x"), None);
    }
}
