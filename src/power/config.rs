//! Inventory sections owned by `power`: `[[pdu]]`, `[device.power]` and `[power]`.
//!
//! Driver settings are plain optional keys on `[[pdu]]` (not a serde-tagged enum), so every key
//! keeps its `Spanned` position and a problem is reported at its own line. Which keys a driver
//! takes, and what they mean, is resolved in [`super::settings`].

use std::fmt;

use serde::{Deserialize, Deserializer, de};
use toml::Spanned;

use crate::ids::{DeviceName, PduName};
use crate::inventory::{Diagnostics, DurationValue, Inventory};

use super::settings::{self, DeviceTarget};

/// `[[pdu]]`: one power distribution unit (or a set of commands acting like one).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PduConfig {
    pub name: Spanned<PduName>,
    /// `command`, `pdudaemon`, `snmp`, `netio` or `sim`.
    pub driver: Spanned<String>,
    /// Extra attempts after a failed one (default 3).
    pub retries: Option<Spanned<u32>>,
    /// First pause between attempts; doubled each time, with jitter (default 1 s).
    pub retry_delay: Option<Spanned<DurationValue>>,
    /// Limit for one attempt, verification included (default 10 s).
    pub timeout: Option<Spanned<DurationValue>>,
    /// Number of outlets; outlets outside `1..=outlets` are refused when set.
    pub outlets: Option<Spanned<u32>>,
    /// Use the PDU's own reboot command instead of off, delay, on.
    pub native_reboot: Option<Spanned<bool>>,
    /// Extra names under which the pdudaemon-compatible listener knows this PDU (the `hostname=`
    /// that existing device dictionaries send, often an IP address).
    #[serde(default)]
    pub pdudaemon_hostnames: Vec<Spanned<String>>,

    /// HTTP base URL (`pdudaemon`, `netio`, `sim`).
    pub url: Option<Spanned<String>>,
    /// The PDU's name in pdudaemon's own configuration (`pdudaemon`; default: `name`).
    pub hostname: Option<Spanned<String>>,
    /// HTTP basic authentication (`netio`).
    pub username: Option<Spanned<String>>,
    pub password: Option<Spanned<String>>,

    /// SNMP agent address and UDP port (`snmp`; port default 161).
    pub host: Option<Spanned<String>>,
    pub port: Option<Spanned<u16>>,
    /// SNMP version: `"1"` or `"2c"` (default `"2c"`).
    pub version: Option<Spanned<SnmpVersionValue>>,
    /// Write community (default `private`) and read community (default: the write community).
    pub community: Option<Spanned<String>>,
    pub read_community: Option<Spanned<String>>,
    /// `apc-rpdu`, `apc-spdu` or `generic`.
    pub preset: Option<Spanned<String>>,
    /// Generic mapping: control OID with `{outlet}` (or pdudaemon's `*`) for the outlet number.
    pub oid: Option<Spanned<String>>,
    pub on_value: Option<Spanned<i64>>,
    pub off_value: Option<Spanned<i64>>,
    pub reboot_value: Option<Spanned<i64>>,
    /// Where the state is read (default: `oid`) and what it reads as on and off.
    pub state_oid: Option<Spanned<String>>,
    pub state_on_value: Option<Spanned<i64>>,
    pub state_off_value: Option<Spanned<i64>>,

    /// `command` driver: argument vectors with `{outlet}`, `{pdu}`, `{device}` placeholders.
    pub on_command: Option<Spanned<String>>,
    pub off_command: Option<Spanned<String>>,
    pub reboot_command: Option<Spanned<String>>,
    /// Prints `on`/`off` (or `1`/`0`) on stdout.
    pub state_command: Option<Spanned<String>>,
}

impl PduConfig {
    pub fn name(&self) -> &PduName {
        self.name.get_ref()
    }
}

/// SNMP protocol version as written: `"1"`, `"2c"`, `1` or `2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnmpVersionValue {
    V1,
    V2c,
}

impl<'de> Deserialize<'de> for SnmpVersionValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = SnmpVersionValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"1\" or \"2c\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                match v {
                    1 => Ok(SnmpVersionValue::V1),
                    2 => Ok(SnmpVersionValue::V2c),
                    _ => Err(E::custom(format!(
                        "SNMP version {v} is not supported (use \"1\" or \"2c\")"
                    ))),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                match v.to_ascii_lowercase().as_str() {
                    "1" | "v1" => Ok(SnmpVersionValue::V1),
                    "2c" | "v2c" | "2" => Ok(SnmpVersionValue::V2c),
                    _ => Err(E::custom(format!(
                        "SNMP version {v:?} is not supported (use \"1\" or \"2c\"; v3 is not implemented)"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// An outlet as written: a number (`3`) or a string (`"08"`, `"A1"`). Numeric strings compare
/// by value, so `"08"` and `8` are the same outlet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OutletValue(pub String);

impl OutletValue {
    /// The outlet number, when it is one.
    pub fn number(&self) -> Option<u32> {
        if self.0.is_empty() || !self.0.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        self.0.parse().ok()
    }
}

impl<'de> Deserialize<'de> for OutletValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = OutletValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an outlet number or name")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                if v < 0 {
                    return Err(E::custom("an outlet number cannot be negative"));
                }
                Ok(OutletValue(v.to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(OutletValue(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `[device.power]`: either an outlet of a `[[pdu]]`, or LAVA-style commands.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicePower {
    pub pdu: Option<Spanned<PduName>>,
    pub outlet: Option<Spanned<OutletValue>>,
    /// Off-to-on pause of a reboot for this board (default `[power] reboot_delay`).
    pub reboot_delay: Option<Spanned<DurationValue>>,
    /// As in a LAVA device dictionary; `{device}` is replaced by the device name.
    pub power_on_command: Option<Spanned<String>>,
    pub power_off_command: Option<Spanned<String>>,
    pub hard_reset_command: Option<Spanned<String>>,
}

/// `[power]`: worker-wide settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerSettings {
    /// Serve pdudaemon's HTTP API (and its legacy TCP protocol) here, e.g. `"127.0.0.1:16421"`.
    pub pdudaemon_listen: Option<Spanned<String>>,
    /// Failed requests in a row after which a PDU is reported unhealthy (default 3).
    pub unhealthy_after: Option<Spanned<u32>>,
    /// Default off-to-on pause of a reboot (default 5 s, as pdudaemon).
    pub reboot_delay: Option<Spanned<DurationValue>>,
    /// Upper bound of the exponential backoff between attempts (default 30 s).
    pub max_retry_delay: Option<Spanned<DurationValue>>,
}

impl PowerSettings {
    pub const DEFAULT_UNHEALTHY_AFTER: u32 = 3;
    pub const DEFAULT_REBOOT_DELAY: std::time::Duration = std::time::Duration::from_secs(5);
    pub const DEFAULT_MAX_RETRY_DELAY: std::time::Duration = std::time::Duration::from_secs(30);

    pub fn unhealthy_after(&self) -> u32 {
        self.unhealthy_after
            .as_ref()
            .map_or(Self::DEFAULT_UNHEALTHY_AFTER, |v| *v.get_ref())
            .max(1)
    }

    pub fn reboot_delay(&self) -> std::time::Duration {
        self.reboot_delay
            .as_ref()
            .map_or(Self::DEFAULT_REBOOT_DELAY, |v| v.get_ref().get())
    }

    pub fn max_retry_delay(&self) -> std::time::Duration {
        self.max_retry_delay
            .as_ref()
            .map_or(Self::DEFAULT_MAX_RETRY_DELAY, |v| v.get_ref().get())
    }

    /// The listener address; `None` when unset (or invalid, which validation reports).
    pub fn pdudaemon_listen(&self) -> Option<std::net::SocketAddr> {
        self.pdudaemon_listen
            .as_ref()
            .and_then(|s| s.get_ref().parse().ok())
    }
}

/// Cross-checks: PDU names unique, drivers known with their settings, every device's power
/// pointing at a known PDU outlet that no other device uses, or at well-formed commands.
pub fn validate(inv: &Inventory, diags: &mut Diagnostics) {
    let src = &inv.source;
    let mut seen: Vec<&Spanned<PduName>> = Vec::new();
    for pdu in &inv.pdus {
        if let Some(first) = seen.iter().find(|n| n.get_ref() == pdu.name.get_ref()) {
            let (line, _) = src.line_col(first.span().start);
            diags.push(src.diag(
                pdu.name.span(),
                "pdu.name",
                format!(
                    "duplicate PDU name {:?} (first defined on line {line})",
                    pdu.name.get_ref().as_str()
                ),
            ));
        }
        seen.push(&pdu.name);
        if let Err(problems) = settings::resolve_pdu(pdu) {
            for p in problems {
                diags.push(src.diag(p.span, format!("pdu.{}", p.key), p.message));
            }
        }
    }
    let mut hostnames: Vec<(String, &PduName)> = Vec::new();
    for pdu in &inv.pdus {
        let names = std::iter::once((pdu.name.get_ref().as_str().to_string(), pdu.name.span()))
            .chain(
                pdu.pdudaemon_hostnames
                    .iter()
                    .map(|h| (h.get_ref().clone(), h.span())),
            );
        for (h, span) in names {
            if let Some((_, other)) = hostnames.iter().find(|(n, _)| *n == h) {
                if *other != pdu.name.get_ref() {
                    diags.push(src.diag(
                        span,
                        "pdu.pdudaemon_hostnames",
                        format!(
                            "pdudaemon hostname {h:?} is used by PDUs {:?} and {:?}",
                            other.as_str(),
                            pdu.name.get_ref().as_str()
                        ),
                    ));
                }
            }
            hostnames.push((h, pdu.name.get_ref()));
        }
    }
    let mut taken: Vec<(&PduName, OutletValue, &DeviceName)> = Vec::new();
    for dev in &inv.devices {
        let Some(power) = &dev.power else { continue };
        match settings::resolve_device(dev.name(), dev.name.span(), power, &inv.pdus) {
            Err(problems) => {
                for p in problems {
                    diags.push(src.diag(p.span, format!("device.power.{}", p.key), p.message));
                }
            }
            Ok(DeviceTarget::Outlet { pdu, outlet }) => {
                let key = settings::outlet_key(&outlet);
                if let Some((_, _, other)) = taken
                    .iter()
                    .find(|(p, o, _)| **p == pdu && settings::outlet_key(o) == key)
                {
                    let span = power.outlet.as_ref().map_or(dev.name.span(), |o| o.span());
                    diags.push(src.diag(
                        span,
                        "device.power.outlet",
                        format!(
                            "devices {:?} and {:?} are both on outlet {} of PDU {:?}",
                            other.as_str(),
                            dev.name().as_str(),
                            outlet.0,
                            pdu.as_str()
                        ),
                    ));
                }
                if let Some(p) = inv.pdus.iter().find(|p| p.name() == &pdu) {
                    taken.push((p.name(), outlet, dev.name()));
                }
            }
            Ok(DeviceTarget::Commands(_)) => {}
        }
    }
    if let Some(settings) = &inv.power {
        if let Some(listen) = &settings.pdudaemon_listen {
            if listen.get_ref().parse::<std::net::SocketAddr>().is_err() {
                diags.push(src.diag(
                    listen.span(),
                    "power.pdudaemon_listen",
                    format!(
                        "{:?} is not an address:port such as \"127.0.0.1:16421\"",
                        listen.get_ref()
                    ),
                ));
            }
        }
        if let Some(n) = &settings.unhealthy_after {
            if *n.get_ref() == 0 {
                diags.push(src.diag(
                    n.span(),
                    "power.unhealthy_after",
                    "unhealthy_after must be at least 1",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests;
