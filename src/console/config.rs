//! `[device.console]` and `[worker.journal]`: where a board's console is and how to journal it.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use crate::inventory::{ByteSize, Diagnostics, Inventory};

/// Baud rates a Linux tty accepts (the termios `Bnnn` constants).
pub const STANDARD_BAUDS: &[u32] = &[
    50, 75, 110, 134, 150, 200, 300, 600, 1200, 1800, 2400, 4800, 9600, 19200, 38400, 57600,
    115200, 230400, 460800, 500000, 576000, 921600, 1000000, 1152000, 1500000, 2000000, 2500000,
    3000000, 3500000, 4000000,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    #[default]
    None,
    Odd,
    Even,
    Mark,
    Space,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FlowControl {
    #[default]
    None,
    /// XON/XOFF.
    Software,
    /// RTS/CTS.
    Hardware,
}

/// Line settings of a UART, applied locally (tty) or remotely (RFC 2217).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineSettings {
    pub baud: u32,
    pub data_bits: u8,
    pub parity: Parity,
    pub stop_bits: u8,
    pub flow_control: FlowControl,
}

impl Default for LineSettings {
    fn default() -> Self {
        Self {
            baud: 115_200,
            data_bits: 8,
            parity: Parity::None,
            stop_bits: 1,
            flow_control: FlowControl::None,
        }
    }
}

/// `[device.console]` as written in the inventory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Local serial device, normally a udev symlink such as `/dev/lab/bbb01`.
    pub tty: Option<Spanned<PathBuf>>,
    /// A ser2net telnet port, `host:port`.
    pub ser2net: Option<Spanned<String>>,
    /// Set the line settings through RFC 2217 (ser2net `telnet(rfc2217)` accepters).
    #[serde(default)]
    pub rfc2217: Option<Spanned<bool>>,
    pub baud: Option<Spanned<u32>>,
    pub data_bits: Option<Spanned<u8>>,
    #[serde(default)]
    pub parity: Parity,
    pub stop_bits: Option<Spanned<u8>>,
    #[serde(default)]
    pub flow_control: FlowControl,
    /// TCP port of labd's own telnet listener for this console (`telnet localhost PORT`).
    pub listen: Option<Spanned<u16>>,
    /// Address of that listener; defaults to `[worker] listen_address`, itself loopback.
    pub listen_address: Option<IpAddr>,
}

/// Where the bytes of a console come from, resolved from [`ConsoleConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleEndpoint {
    Tty {
        path: PathBuf,
    },
    Ser2net {
        host: String,
        port: u16,
        rfc2217: bool,
    },
}

impl ConsoleConfig {
    pub fn line_settings(&self) -> LineSettings {
        let d = LineSettings::default();
        LineSettings {
            baud: self.baud.as_ref().map_or(d.baud, |b| *b.get_ref()),
            data_bits: self
                .data_bits
                .as_ref()
                .map_or(d.data_bits, |b| *b.get_ref()),
            parity: self.parity,
            stop_bits: self
                .stop_bits
                .as_ref()
                .map_or(d.stop_bits, |b| *b.get_ref()),
            flow_control: self.flow_control,
        }
    }

    /// The endpoint; `None` only for an inventory that failed validation.
    pub fn endpoint(&self) -> Option<ConsoleEndpoint> {
        match (&self.tty, &self.ser2net) {
            (Some(tty), None) => Some(ConsoleEndpoint::Tty {
                path: tty.get_ref().clone(),
            }),
            (None, Some(addr)) => {
                let (host, port) = split_host_port(addr.get_ref()).ok()?;
                Some(ConsoleEndpoint::Ser2net {
                    host,
                    port,
                    rfc2217: self.rfc2217.as_ref().is_some_and(|r| *r.get_ref()),
                })
            }
            _ => None,
        }
    }
}

/// Splits `host:port` (or `[v6]:port`).
pub fn split_host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not host:port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{s:?}: port {port:?} is not a number from 1 to 65535"))?;
    if port == 0 {
        return Err(format!("{s:?}: port 0 is not a port"));
    }
    Ok((host.to_string(), port))
}

/// `[worker.journal]`: per-device journal rotation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    /// Rotate a device's journal file when it reaches this size.
    #[serde(default = "JournalConfig::default_max_file_size")]
    pub max_file_size: ByteSize,
    /// Rotated files kept per device (older ones are deleted).
    #[serde(default = "JournalConfig::default_keep_files")]
    pub keep_files: u32,
}

impl JournalConfig {
    fn default_max_file_size() -> ByteSize {
        ByteSize(16 << 20)
    }
    fn default_keep_files() -> u32 {
        8
    }
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            max_file_size: Self::default_max_file_size(),
            keep_files: Self::default_keep_files(),
        }
    }
}

/// Console checks: exactly one endpoint, sane line settings, no two devices on one tty, ser2net
/// port or listener port.
pub fn validate(inv: &Inventory, diags: &mut Diagnostics) {
    let src = &inv.source;
    let mut ttys: Vec<(String, &str, std::ops::Range<usize>)> = Vec::new();
    let mut remotes: Vec<((String, u16), &str, std::ops::Range<usize>)> = Vec::new();
    let mut listens: Vec<(u16, &str)> = Vec::new();
    for dev in &inv.devices {
        let name = dev.name.get_ref().as_str();
        let Some(console) = &dev.console else {
            continue;
        };
        let at = dev.name.span();
        match (&console.tty, &console.ser2net) {
            (Some(_), Some(s)) => diags.push(src.diag(
                s.span(),
                "device.console.ser2net",
                format!("device {name:?} sets both tty and ser2net; a console has one source"),
            )),
            (None, None) => diags.push(src.diag(
                at.clone(),
                "device.console",
                format!("device {name:?} has a [device.console] with neither tty nor ser2net"),
            )),
            _ => {}
        }
        if let Some(tty) = &console.tty {
            let path = tty.get_ref();
            if !path.is_absolute() {
                diags.push(src.diag(
                    tty.span(),
                    "device.console.tty",
                    format!("device {name:?}: tty {path:?} must be an absolute path"),
                ));
            }
            let key = path.to_string_lossy().into_owned();
            if let Some((_, other, _)) = ttys.iter().find(|(k, _, _)| *k == key) {
                diags.push(src.diag(
                    tty.span(),
                    "device.console.tty",
                    format!("devices {other:?} and {name:?} both use tty {key:?}"),
                ));
            }
            ttys.push((key, name, tty.span()));
            if let Some(r) = &console.rfc2217 {
                diags.push(src.diag(
                    r.span(),
                    "device.console.rfc2217",
                    format!(
                        "device {name:?}: rfc2217 applies to ser2net consoles, not to a local tty"
                    ),
                ));
            }
        }
        if let Some(addr) = &console.ser2net {
            match split_host_port(addr.get_ref()) {
                Ok((host, port)) => {
                    let host_key = normalise_host(&host);
                    let key = (host_key, port);
                    if let Some((_, other, _)) = remotes.iter().find(|(k, _, _)| *k == key) {
                        diags.push(src.diag(
                            addr.span(),
                            "device.console.ser2net",
                            format!(
                                "devices {other:?} and {name:?} both use ser2net port {}",
                                addr.get_ref()
                            ),
                        ));
                    }
                    remotes.push((key, name, addr.span()));
                }
                Err(e) => diags.push(src.diag(
                    addr.span(),
                    "device.console.ser2net",
                    format!("device {name:?}: {e}"),
                )),
            }
        }
        if let Some(b) = &console.baud {
            if !STANDARD_BAUDS.contains(b.get_ref()) {
                diags.push(src.diag(
                    b.span(),
                    "device.console.baud",
                    format!(
                        "device {name:?}: {} is not a baud rate a tty supports (e.g. 9600, 115200, 1500000)",
                        b.get_ref()
                    ),
                ));
            }
        }
        if let Some(d) = &console.data_bits {
            if !(5..=8).contains(d.get_ref()) {
                diags.push(src.diag(
                    d.span(),
                    "device.console.data_bits",
                    format!("device {name:?}: data_bits must be 5, 6, 7 or 8"),
                ));
            }
        }
        if let Some(s) = &console.stop_bits {
            if !matches!(s.get_ref(), 1 | 2) {
                diags.push(src.diag(
                    s.span(),
                    "device.console.stop_bits",
                    format!("device {name:?}: stop_bits must be 1 or 2"),
                ));
            }
        }
        if let Some(l) = &console.listen {
            let port = *l.get_ref();
            if port == 0 {
                diags.push(src.diag(
                    l.span(),
                    "device.console.listen",
                    format!("device {name:?}: listen port 0 is not a port"),
                ));
            } else if let Some((_, other)) = listens.iter().find(|(p, _)| *p == port) {
                diags.push(src.diag(
                    l.span(),
                    "device.console.listen",
                    format!("devices {other:?} and {name:?} both listen on port {port}"),
                ));
            }
            listens.push((port, name));
        }
    }
}

fn normalise_host(host: &str) -> String {
    let h = host.to_ascii_lowercase();
    match h.as_str() {
        "localhost" | "127.0.0.1" | "::1" => "localhost".into(),
        _ => h,
    }
}
