//! `[device.ser2net]`: export a board's UART through ser2net, and the checks that keep the
//! generated configuration runnable (ports unique, one owner per tty, console pointing at the
//! export).

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use crate::console::config::{LineSettings, split_host_port};
use crate::inventory::{DeviceConfig, Diagnostics, Inventory};

/// What ser2net speaks on the TCP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Ser2netProtocol {
    /// Raw TCP: bytes pass unchanged.
    Raw,
    /// Telnet (what `telnet host port` and LAVA's `connection_command` expect).
    #[default]
    Telnet,
    /// Telnet with RFC 2217, so a client can set the baud rate.
    Rfc2217,
}

/// Default simultaneous clients: LAVA plus one human, as LAVA's admin docs recommend.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 2;

/// `[device.ser2net]` as written in the inventory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ser2netExport {
    /// TCP port ser2net listens on.
    pub port: Spanned<u16>,
    /// IPv4 address to bind; unset = all addresses (IPv4 and IPv6), as ser2net does.
    pub address: Option<Spanned<Ipv4Addr>>,
    #[serde(default)]
    pub protocol: Ser2netProtocol,
    /// Device to open; defaults to the `[device.usb]` link (`/dev/<symlink>`).
    pub tty: Option<Spanned<PathBuf>>,
    /// Simultaneous clients (ser2net `max-connections`), default 2.
    pub max_connections: Option<Spanned<u32>>,
    /// A new client at the limit kicks the old ones instead of being refused (default true:
    /// a dead LAVA connection must not lock the port).
    pub kickolduser: Option<bool>,
    /// Seconds without traffic before ser2net drops a client (0 = never, the default).
    #[serde(default)]
    pub timeout: u32,
}

impl Ser2netExport {
    pub fn port(&self) -> u16 {
        *self.port.get_ref()
    }

    pub fn max_connections(&self) -> u32 {
        self.max_connections
            .as_ref()
            .map_or(DEFAULT_MAX_CONNECTIONS, |m| *m.get_ref())
    }

    pub fn kickolduser(&self) -> bool {
        self.kickolduser.unwrap_or(true)
    }
}

/// One export resolved against the rest of the device's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedExport {
    pub device: String,
    pub port: u16,
    pub address: Option<Ipv4Addr>,
    pub protocol: Ser2netProtocol,
    pub tty: PathBuf,
    pub line: LineSettings,
    pub max_connections: u32,
    pub kickolduser: bool,
    pub timeout: u32,
}

/// The tty an export opens: `tty`, else the udev link of `[device.usb]`.
fn export_tty(dev: &DeviceConfig, export: &Ser2netExport) -> Option<PathBuf> {
    export
        .tty
        .as_ref()
        .map(|t| t.get_ref().clone())
        .or_else(|| dev.usb.as_ref().map(|u| u.link_path()))
}

/// Every device with a `[device.ser2net]`, in inventory order. Assumes a validated inventory
/// (devices whose tty cannot be resolved are skipped).
pub fn exports(inv: &Inventory) -> Vec<ResolvedExport> {
    inv.devices
        .iter()
        .filter_map(|dev| {
            let export = dev.ser2net.as_ref()?;
            Some(ResolvedExport {
                device: dev.name().to_string(),
                port: export.port(),
                address: export.address.as_ref().map(|a| *a.get_ref()),
                protocol: export.protocol,
                tty: export_tty(dev, export)?,
                line: dev
                    .console
                    .as_ref()
                    .map(|c| c.line_settings())
                    .unwrap_or_default(),
                max_connections: export.max_connections(),
                kickolduser: export.kickolduser(),
                timeout: export.timeout,
            })
        })
        .collect()
}

/// Characters a device path may use in both ser2net dialects (no spaces, commas or quotes,
/// which would split gensio strings or YAML scalars).
fn tty_path_ok(p: &str) -> bool {
    p.starts_with('/')
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:+".contains(c))
}

fn is_local(host: &str) -> bool {
    matches!(
        host.to_ascii_lowercase().as_str(),
        "localhost" | "127.0.0.1" | "::1"
    )
}

/// Two binds clash when the ports are equal and either binds all addresses or both the same.
fn binds_clash(a: (Option<Ipv4Addr>, u16), b: (Option<Ipv4Addr>, u16)) -> bool {
    a.1 == b.1 && (a.0.is_none() || b.0.is_none() || a.0 == b.0)
}

/// ser2net checks: a resolvable tty no one else opens, unique ports, console consistency.
pub fn validate(inv: &Inventory, diags: &mut Diagnostics) {
    let src = &inv.source;
    let mut seen: Vec<(&str, Option<Ipv4Addr>, u16)> = Vec::new();
    // labd's own telnet listeners bind loopback unless configured otherwise.
    let listens: Vec<(&str, Option<Ipv4Addr>, u16)> = inv
        .devices
        .iter()
        .filter_map(|d| {
            let c = d.console.as_ref()?;
            let port = *c.listen.as_ref()?.get_ref();
            let addr = match c.listen_address.unwrap_or(inv.worker.listen_address()) {
                std::net::IpAddr::V4(a) if !a.is_unspecified() => Some(a),
                _ => None,
            };
            Some((d.name().as_str(), addr, port))
        })
        .collect();
    for dev in &inv.devices {
        let Some(export) = &dev.ser2net else { continue };
        let name = dev.name().as_str();
        let port = export.port();
        let addr = export.address.as_ref().map(|a| *a.get_ref());
        if port == 0 {
            diags.push(src.diag(
                export.port.span(),
                "device.ser2net.port",
                format!("device {name:?}: port 0 is not a port"),
            ));
        }
        if let Some((other, _, _)) = seen
            .iter()
            .find(|(_, a, p)| binds_clash((*a, *p), (addr, port)))
        {
            diags.push(src.diag(
                export.port.span(),
                "device.ser2net.port",
                format!("devices {other:?} and {name:?} are both exported on ser2net port {port}"),
            ));
        }
        if let Some((other, _, _)) = listens
            .iter()
            .find(|(_, a, p)| binds_clash((*a, *p), (addr, port)))
        {
            diags.push(src.diag(
                export.port.span(),
                "device.ser2net.port",
                format!(
                    "device {name:?}: ser2net port {port} is also labd's console listener of device {other:?}"
                ),
            ));
        }
        seen.push((name, addr, port));
        if let Some(m) = &export.max_connections {
            if *m.get_ref() == 0 {
                diags.push(src.diag(
                    m.span(),
                    "device.ser2net.max_connections",
                    format!("device {name:?}: max_connections must be at least 1"),
                ));
            }
        }
        match export_tty(dev, export) {
            None => diags.push(src.diag(
                export.port.span(),
                "device.ser2net",
                format!(
                    "device {name:?}: [device.ser2net] needs `tty`, or a [device.usb] whose link it exports"
                ),
            )),
            Some(tty) => {
                let shown = tty.to_string_lossy();
                if !tty_path_ok(&shown) {
                    let span = export
                        .tty
                        .as_ref()
                        .map_or(export.port.span(), |t| t.span());
                    diags.push(src.diag(
                        span,
                        "device.ser2net.tty",
                        format!(
                            "device {name:?}: tty {shown:?} must be an absolute path of letters, digits and '/._-:+'"
                        ),
                    ));
                }
            }
        }
        let Some(console) = &dev.console else {
            continue;
        };
        if let Some(tty) = &console.tty {
            diags.push(src.diag(
                tty.span(),
                "device.console.tty",
                format!(
                    "device {name:?}: labd's console and ser2net would both open the tty; point the console at the export (ser2net = \"localhost:{port}\")"
                ),
            ));
        }
        if let Some(remote) = &console.ser2net {
            if let Ok((host, console_port)) = split_host_port(remote.get_ref()) {
                if is_local(&host) && console_port != port {
                    diags.push(src.diag(
                        remote.span(),
                        "device.console.ser2net",
                        format!(
                            "device {name:?}: console reads local ser2net port {console_port} but the device is exported on port {port}"
                        ),
                    ));
                }
                let wants_2217 = console.rfc2217.as_ref().is_some_and(|r| *r.get_ref());
                if is_local(&host) && wants_2217 && export.protocol != Ser2netProtocol::Rfc2217 {
                    diags.push(src.diag(
                        remote.span(),
                        "device.console.rfc2217",
                        format!(
                            "device {name:?}: console uses RFC 2217 but the export's protocol is not \"rfc2217\""
                        ),
                    ));
                }
                if is_local(&host) && export.protocol == Ser2netProtocol::Raw {
                    diags.push(src.diag(
                        remote.span(),
                        "device.ser2net.protocol",
                        format!(
                            "device {name:?}: labd's ser2net console speaks telnet; export it with protocol \"telnet\" or \"rfc2217\""
                        ),
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
