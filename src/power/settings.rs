//! Resolution of the inventory's power keys into per-driver settings. Used twice: by
//! `config::validate` (every problem becomes a diagnostic at its key's line) and by
//! `PowerService::new` (which only sees validated inventories).

use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use crate::ids::{DeviceName, PduName};

use super::config::{DevicePower, OutletValue, PduConfig, SnmpVersionValue};

/// One problem with a key, before it becomes a `file:line:col` diagnostic.
#[derive(Debug, Clone)]
pub struct Problem {
    pub span: Range<usize>,
    /// Key relative to its table (`outlet`, `community`...).
    pub key: String,
    pub message: String,
}

fn problem(span: Range<usize>, key: &str, message: impl Into<String>) -> Problem {
    Problem {
        span,
        key: key.to_string(),
        message: message.into(),
    }
}

/// How the generic layer treats one PDU: attempts, pacing, timeout.
#[derive(Debug, Clone, PartialEq)]
pub struct PduPolicy {
    pub retries: u32,
    pub retry_delay: Duration,
    pub timeout: Duration,
    pub native_reboot: bool,
}

impl PduPolicy {
    pub const DEFAULT_RETRIES: u32 = 3;
    pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(1);
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
}

impl Default for PduPolicy {
    fn default() -> Self {
        Self {
            retries: Self::DEFAULT_RETRIES,
            retry_delay: Self::DEFAULT_RETRY_DELAY,
            timeout: Self::DEFAULT_TIMEOUT,
            native_reboot: false,
        }
    }
}

/// A command line split into its argument vector once, at load time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandTemplate {
    pub source: String,
    pub argv: Vec<String>,
}

/// The `{...}` placeholders a command may use.
pub const PLACEHOLDERS: [&str; 3] = ["{outlet}", "{pdu}", "{device}"];

impl CommandTemplate {
    /// Splits like a POSIX shell (quotes, backslashes) but runs no shell: `$(...)`, `;` and
    /// `|` stay literal arguments unless the admin writes `sh -c` themselves.
    pub fn parse(source: &str) -> Result<Self, String> {
        let argv = shlex::split(source)
            .ok_or_else(|| format!("{source:?} has an unterminated quote or trailing backslash"))?;
        if argv.is_empty() {
            return Err("the command is empty".into());
        }
        Ok(Self {
            source: source.to_string(),
            argv,
        })
    }

    /// The argument vector with placeholders replaced, each argument on its own, so a value can
    /// never split into several arguments or reach a shell parser as code.
    pub fn render(&self, outlet: &str, pdu: &str, device: &str) -> Vec<String> {
        self.argv
            .iter()
            .map(|a| {
                a.replace("{outlet}", outlet)
                    .replace("{pdu}", pdu)
                    .replace("{device}", device)
            })
            .collect()
    }

    fn uses(&self, placeholder: &str) -> bool {
        self.argv.iter().any(|a| a.contains(placeholder))
    }
}

/// `command` driver: one command per action, any of them optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandSettings {
    pub on: Option<CommandTemplate>,
    pub off: Option<CommandTemplate>,
    pub reboot: Option<CommandTemplate>,
    pub state: Option<CommandTemplate>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnmpVersion {
    V1,
    V2c,
}

/// An OID with the outlet number substituted for its placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidTemplate {
    pub source: String,
}

impl OidTemplate {
    fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim().trim_start_matches('.');
        let placeholders = s.matches("{outlet}").count() + s.matches('*').count();
        if placeholders != 1 {
            return Err(format!(
                "OID {s:?} must contain exactly one {{outlet}} (or *) where the outlet number goes"
            ));
        }
        let probe = s.replace("{outlet}", "1").replace('*', "1");
        super::snmp::Oid::parse(&probe).map_err(|e| format!("OID {s:?}: {e}"))?;
        Ok(Self {
            source: s.to_string(),
        })
    }

    fn preset(s: &str) -> Self {
        Self {
            source: s.to_string(),
        }
    }

    /// The OID of `outlet`.
    pub fn for_outlet(&self, outlet: u32) -> Result<super::snmp::Oid, super::snmp::SnmpError> {
        let n = outlet.to_string();
        super::snmp::Oid::parse(&self.source.replace("{outlet}", &n).replace('*', &n))
    }
}

/// Which OIDs and values switch and read an outlet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidMap {
    pub control: OidTemplate,
    pub on_value: i64,
    pub off_value: i64,
    pub reboot_value: Option<i64>,
    /// `None`: the PDU cannot be read back.
    pub state: Option<(OidTemplate, i64, i64)>,
}

/// APC Switched Rack PDU, `rPDUOutletControlOutletCommand` (PowerNet-MIB): SET 1 on, 2 off,
/// 3 reboot; a GET on the same object returns 1 on, 2 off.
pub const APC_RPDU_OUTLET_CTL: &str = "1.3.6.1.4.1.318.1.1.12.3.3.1.1.4.{outlet}";
/// APC MasterSwitch, `sPDUOutletCtl`: the same values; a GET of 4 means "unknown".
pub const APC_SPDU_OUTLET_CTL: &str = "1.3.6.1.4.1.318.1.1.4.4.2.1.3.{outlet}";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnmpSettings {
    pub host: String,
    pub port: u16,
    pub version: SnmpVersion,
    pub community: String,
    pub read_community: String,
    pub map: OidMap,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverSettings {
    Command(CommandSettings),
    /// `hostname` is the PDU's key in pdudaemon's `pdus`.
    Pdudaemon {
        url: String,
        hostname: String,
    },
    Snmp(SnmpSettings),
    Netio {
        url: String,
        username: String,
        password: String,
    },
    /// `url: None`: an in-process simulator attached when the service is built.
    Sim {
        url: Option<String>,
    },
}

/// A `[[pdu]]` resolved: what the generic layer and the driver factory need.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedPdu {
    pub name: PduName,
    pub driver: DriverSettings,
    pub policy: PduPolicy,
    pub outlets: Option<u32>,
    pub pdudaemon_hostnames: Vec<String>,
}

pub const DRIVERS: [&str; 5] = ["command", "pdudaemon", "snmp", "netio", "sim"];

/// Keys each driver takes, beyond the common ones.
fn driver_keys(driver: &str) -> &'static [&'static str] {
    match driver {
        "command" => &[
            "on_command",
            "off_command",
            "reboot_command",
            "state_command",
        ],
        "pdudaemon" => &["url", "hostname"],
        "snmp" => &[
            "host",
            "port",
            "version",
            "community",
            "read_community",
            "preset",
            "oid",
            "on_value",
            "off_value",
            "reboot_value",
            "state_oid",
            "state_on_value",
            "state_off_value",
        ],
        "netio" => &["url", "username", "password"],
        "sim" => &["url"],
        _ => &[],
    }
}

/// Drivers that address outlets by number (SNMP index, Netio output ID, simulator outlet).
pub fn numeric_outlets(driver: &str) -> bool {
    matches!(driver, "snmp" | "netio" | "sim")
}

fn present_driver_keys(p: &PduConfig) -> Vec<(&'static str, Range<usize>)> {
    let mut v = Vec::new();
    macro_rules! key {
        ($($f:ident),*) => {$(
            if let Some(x) = &p.$f { v.push((stringify!($f), x.span())); }
        )*};
    }
    key!(
        url,
        hostname,
        username,
        password,
        host,
        port,
        version,
        community,
        read_community,
        preset,
        oid,
        on_value,
        off_value,
        reboot_value,
        state_oid,
        state_on_value,
        state_off_value,
        on_command,
        off_command,
        reboot_command,
        state_command
    );
    v
}

fn required<'a>(
    f: &'a Option<Spanned<String>>,
    at: &Range<usize>,
    key: &str,
    driver: &str,
    out: &mut Vec<Problem>,
) -> Option<&'a str> {
    match f {
        Some(s) if !s.get_ref().trim().is_empty() => Some(s.get_ref().as_str()),
        Some(s) => {
            out.push(problem(s.span(), key, format!("{key} must not be empty")));
            None
        }
        None => {
            out.push(problem(
                at.clone(),
                key,
                format!("driver {driver:?} needs `{key}`"),
            ));
            None
        }
    }
}

fn http_url(s: &Spanned<String>, key: &str, out: &mut Vec<Problem>) -> Option<String> {
    let u = s.get_ref().trim().trim_end_matches('/');
    match reqwest::Url::parse(u) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => {
            Some(u.to_string())
        }
        _ => {
            out.push(problem(
                s.span(),
                key,
                format!("{u:?} is not an http:// or https:// URL with a host"),
            ));
            None
        }
    }
}

fn command(
    f: &Option<Spanned<String>>,
    key: &str,
    allowed: &[&str],
    out: &mut Vec<Problem>,
) -> Option<CommandTemplate> {
    let s = f.as_ref()?;
    match CommandTemplate::parse(s.get_ref()) {
        Ok(t) => {
            for ph in PLACEHOLDERS {
                if !allowed.contains(&ph) && t.uses(ph) {
                    out.push(problem(
                        s.span(),
                        key,
                        format!("{ph} cannot be used here (only {})", allowed.join(", ")),
                    ));
                }
            }
            Some(t)
        }
        Err(e) => {
            out.push(problem(s.span(), key, e));
            None
        }
    }
}

/// Resolves one `[[pdu]]`, or lists every problem with it.
pub fn resolve_pdu(p: &PduConfig) -> Result<ResolvedPdu, Vec<Problem>> {
    let mut out = Vec::new();
    let driver = p.driver.get_ref().as_str();
    let at = p.name.span();
    if !DRIVERS.contains(&driver) {
        out.push(problem(
            p.driver.span(),
            "driver",
            format!("unknown driver {driver:?} (known: {})", DRIVERS.join(", ")),
        ));
        return Err(out);
    }
    let allowed = driver_keys(driver);
    for (key, span) in present_driver_keys(p) {
        if !allowed.contains(&key) {
            out.push(problem(
                span,
                key,
                format!("`{key}` does not apply to driver {driver:?}"),
            ));
        }
    }
    let settings = match driver {
        "command" => {
            let all = ["{outlet}", "{pdu}", "{device}"];
            let c = CommandSettings {
                on: command(&p.on_command, "on_command", &all, &mut out),
                off: command(&p.off_command, "off_command", &all, &mut out),
                reboot: command(&p.reboot_command, "reboot_command", &all, &mut out),
                state: command(&p.state_command, "state_command", &all, &mut out),
            };
            if p.on_command.is_none() || p.off_command.is_none() {
                out.push(problem(
                    at.clone(),
                    "on_command",
                    "driver \"command\" needs both `on_command` and `off_command`",
                ));
            }
            Some(DriverSettings::Command(c))
        }
        "pdudaemon" => {
            let url = required(&p.url, &at, "url", driver, &mut out)
                .and(p.url.as_ref())
                .and_then(|u| http_url(u, "url", &mut out));
            let hostname = p
                .hostname
                .as_ref()
                .map_or_else(|| p.name().as_str().to_string(), |h| h.get_ref().clone());
            url.map(|url| DriverSettings::Pdudaemon { url, hostname })
        }
        "netio" => {
            let url = required(&p.url, &at, "url", driver, &mut out)
                .and(p.url.as_ref())
                .and_then(|u| http_url(u, "url", &mut out));
            url.map(|url| DriverSettings::Netio {
                url,
                username: p
                    .username
                    .as_ref()
                    .map_or("admin".into(), |u| u.get_ref().clone()),
                password: p
                    .password
                    .as_ref()
                    .map_or("admin".into(), |u| u.get_ref().clone()),
            })
        }
        "sim" => {
            let url = p.url.as_ref().and_then(|u| http_url(u, "url", &mut out));
            Some(DriverSettings::Sim { url })
        }
        _ => resolve_snmp(p, &at, &mut out).map(DriverSettings::Snmp),
    };
    if let Some(n) = &p.outlets {
        if *n.get_ref() == 0 {
            out.push(problem(n.span(), "outlets", "outlets must be at least 1"));
        }
    }
    let mut policy = PduPolicy::default();
    if let Some(r) = &p.retries {
        policy.retries = *r.get_ref();
        if policy.retries > 20 {
            out.push(problem(
                r.span(),
                "retries",
                "retries above 20 would hold the PDU's queue for a very long time",
            ));
        }
    }
    if let Some(d) = &p.retry_delay {
        policy.retry_delay = d.get_ref().get();
    }
    if let Some(t) = &p.timeout {
        policy.timeout = t.get_ref().get();
        if policy.timeout.is_zero() {
            out.push(problem(t.span(), "timeout", "timeout must be more than 0"));
        }
    }
    if let Some(n) = &p.native_reboot {
        policy.native_reboot = *n.get_ref();
        let supported = match &settings {
            Some(DriverSettings::Command(c)) => c.reboot.is_some(),
            Some(DriverSettings::Snmp(s)) => s.map.reboot_value.is_some(),
            Some(DriverSettings::Pdudaemon { .. }) => true,
            _ => false,
        };
        if policy.native_reboot && !supported && out.is_empty() {
            out.push(problem(
                n.span(),
                "native_reboot",
                format!("driver {driver:?} with these settings has no native reboot (the command driver needs `reboot_command`, snmp a preset or `reboot_value`)"),
            ));
        }
    }
    match settings {
        Some(driver) if out.is_empty() => Ok(ResolvedPdu {
            name: p.name().clone(),
            driver,
            policy,
            outlets: p.outlets.as_ref().map(|n| *n.get_ref()),
            pdudaemon_hostnames: p
                .pdudaemon_hostnames
                .iter()
                .map(|h| h.get_ref().clone())
                .collect(),
        }),
        _ => Err(out),
    }
}

fn resolve_snmp(p: &PduConfig, at: &Range<usize>, out: &mut Vec<Problem>) -> Option<SnmpSettings> {
    let host = required(&p.host, at, "host", "snmp", out).map(str::to_string);
    let preset = p
        .preset
        .as_ref()
        .map_or("generic", |s| s.get_ref().as_str());
    let map = match preset {
        "apc-rpdu" | "apc-spdu" => {
            for (key, span) in [
                ("oid", p.oid.as_ref().map(|x| x.span())),
                ("on_value", p.on_value.as_ref().map(|x| x.span())),
                ("off_value", p.off_value.as_ref().map(|x| x.span())),
                ("reboot_value", p.reboot_value.as_ref().map(|x| x.span())),
                ("state_oid", p.state_oid.as_ref().map(|x| x.span())),
                (
                    "state_on_value",
                    p.state_on_value.as_ref().map(|x| x.span()),
                ),
                (
                    "state_off_value",
                    p.state_off_value.as_ref().map(|x| x.span()),
                ),
            ] {
                if let Some(span) = span {
                    out.push(problem(
                        span,
                        key,
                        format!("preset {preset:?} sets `{key}`; use preset \"generic\" for a custom mapping"),
                    ));
                }
            }
            let oid = OidTemplate::preset(if preset == "apc-rpdu" {
                APC_RPDU_OUTLET_CTL
            } else {
                APC_SPDU_OUTLET_CTL
            });
            Some(OidMap {
                control: oid.clone(),
                on_value: 1,
                off_value: 2,
                reboot_value: Some(3),
                state: Some((oid, 1, 2)),
            })
        }
        "generic" => {
            let control = match &p.oid {
                Some(o) => match OidTemplate::parse(o.get_ref()) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        out.push(problem(o.span(), "oid", e));
                        None
                    }
                },
                None => {
                    out.push(problem(
                        at.clone(),
                        "oid",
                        "snmp without a preset needs `oid`, `on_value` and `off_value` (or preset = \"apc-rpdu\" / \"apc-spdu\")",
                    ));
                    None
                }
            };
            let value = |v: &Option<Spanned<i64>>, key: &str, out: &mut Vec<Problem>| match v {
                Some(v) => Some(*v.get_ref()),
                None => {
                    out.push(problem(
                        at.clone(),
                        key,
                        format!("snmp preset \"generic\" needs `{key}`"),
                    ));
                    None
                }
            };
            let on = value(&p.on_value, "on_value", out);
            let off = value(&p.off_value, "off_value", out);
            let state = match &p.state_oid {
                Some(o) => match OidTemplate::parse(o.get_ref()) {
                    Ok(t) => Some((
                        t,
                        p.state_on_value
                            .as_ref()
                            .map_or(on.unwrap_or(1), |v| *v.get_ref()),
                        p.state_off_value
                            .as_ref()
                            .map_or(off.unwrap_or(2), |v| *v.get_ref()),
                    )),
                    Err(e) => {
                        out.push(problem(o.span(), "state_oid", e));
                        None
                    }
                },
                None => {
                    for (key, v) in [
                        ("state_on_value", &p.state_on_value),
                        ("state_off_value", &p.state_off_value),
                    ] {
                        if let Some(v) = v {
                            out.push(problem(v.span(), key, format!("`{key}` needs `state_oid`")));
                        }
                    }
                    None
                }
            };
            match (control, on, off) {
                (Some(control), Some(on_value), Some(off_value)) => Some(OidMap {
                    control,
                    on_value,
                    off_value,
                    reboot_value: p.reboot_value.as_ref().map(|v| *v.get_ref()),
                    state,
                }),
                _ => None,
            }
        }
        other => {
            if let Some(s) = &p.preset {
                out.push(problem(
                    s.span(),
                    "preset",
                    format!("unknown SNMP preset {other:?} (known: apc-rpdu, apc-spdu, generic)"),
                ));
            }
            None
        }
    };
    if let Some(port) = &p.port {
        if *port.get_ref() == 0 {
            out.push(problem(port.span(), "port", "port 0 is not a port"));
        }
    }
    let community = p
        .community
        .as_ref()
        .map_or("private".to_string(), |c| c.get_ref().clone());
    let read_community = p
        .read_community
        .as_ref()
        .map_or(community.clone(), |c| c.get_ref().clone());
    Some(SnmpSettings {
        host: host?,
        port: p.port.as_ref().map_or(161, |x| *x.get_ref()),
        version: match p.version.as_ref().map(|v| *v.get_ref()) {
            Some(SnmpVersionValue::V1) => SnmpVersion::V1,
            _ => SnmpVersion::V2c,
        },
        community,
        read_community,
        map: map?,
    })
}

/// LAVA-style per-device commands: `{device}` is the only placeholder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceCommands {
    pub on: Option<CommandTemplate>,
    pub off: Option<CommandTemplate>,
    pub reset: Option<CommandTemplate>,
}

/// Where a device's power goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceTarget {
    Outlet { pdu: PduName, outlet: OutletValue },
    Commands(DeviceCommands),
}

/// Outlets travel into URLs, command arguments and SNMP indexes: a safe alphabet only.
pub fn check_outlet_text(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !s.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "outlet {s:?} may only contain letters, digits, '.', '_' and '-' (at most 32, not starting with '-')"
        ))
    }
}

/// Checks an outlet against its PDU's driver and outlet count.
pub fn check_outlet(driver: &str, outlets: Option<u32>, o: &OutletValue) -> Result<(), String> {
    check_outlet_text(&o.0)?;
    if numeric_outlets(driver) {
        match o.number() {
            Some(n) if n >= 1 => {}
            _ => {
                return Err(format!(
                    "driver {driver:?} numbers outlets from 1; {:?} is not an outlet number",
                    o.0
                ));
            }
        }
    }
    if let (Some(max), Some(n)) = (outlets, o.number()) {
        if n == 0 || n > max {
            return Err(format!(
                "outlet {n} is not in 1..={max} (the PDU's `outlets`)"
            ));
        }
    }
    Ok(())
}

/// The identity of an outlet for "two devices on one outlet": numbers by value.
pub fn outlet_key(o: &OutletValue) -> String {
    o.number().map_or_else(|| o.0.clone(), |n| n.to_string())
}

/// Resolves one `[device.power]` against the PDUs.
pub fn resolve_device(
    device: &DeviceName,
    at: Range<usize>,
    p: &DevicePower,
    pdus: &[PduConfig],
) -> Result<DeviceTarget, Vec<Problem>> {
    let mut out = Vec::new();
    let commands = [
        &p.power_on_command,
        &p.power_off_command,
        &p.hard_reset_command,
    ];
    let has_commands = commands.iter().any(|c| c.is_some());
    let name = device.as_str();
    if let Some(pdu) = &p.pdu {
        if has_commands {
            out.push(problem(
                pdu.span(),
                "pdu",
                format!("device {name:?} sets both `pdu` and power commands; use one or the other"),
            ));
        }
        let Some(cfg) = pdus.iter().find(|c| c.name() == pdu.get_ref()) else {
            let known: Vec<&str> = pdus.iter().map(|c| c.name().as_str()).collect();
            out.push(problem(
                pdu.span(),
                "pdu",
                format!(
                    "device {name:?}: unknown PDU {:?} (defined: {})",
                    pdu.get_ref().as_str(),
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
            return Err(out);
        };
        let Some(outlet) = &p.outlet else {
            out.push(problem(
                pdu.span(),
                "outlet",
                format!(
                    "device {name:?}: `outlet` is missing (which outlet of PDU {:?})",
                    pdu.get_ref().as_str()
                ),
            ));
            return Err(out);
        };
        if let Err(e) = check_outlet(
            cfg.driver.get_ref(),
            cfg.outlets.as_ref().map(|n| *n.get_ref()),
            outlet.get_ref(),
        ) {
            out.push(problem(
                outlet.span(),
                "outlet",
                format!("device {name:?}: {e}"),
            ));
        }
        return if out.is_empty() {
            Ok(DeviceTarget::Outlet {
                pdu: pdu.get_ref().clone(),
                outlet: outlet.get_ref().clone(),
            })
        } else {
            Err(out)
        };
    }
    if let Some(o) = &p.outlet {
        out.push(problem(
            o.span(),
            "outlet",
            format!("device {name:?}: `outlet` needs `pdu`"),
        ));
    }
    if !has_commands {
        out.push(problem(
            at,
            "pdu",
            format!("device {name:?}: [device.power] needs `pdu` and `outlet`, or power commands"),
        ));
        return Err(out);
    }
    let only_device = ["{device}"];
    let c = DeviceCommands {
        on: command(
            &p.power_on_command,
            "power_on_command",
            &only_device,
            &mut out,
        ),
        off: command(
            &p.power_off_command,
            "power_off_command",
            &only_device,
            &mut out,
        ),
        reset: command(
            &p.hard_reset_command,
            "hard_reset_command",
            &only_device,
            &mut out,
        ),
    };
    if out.is_empty() {
        Ok(DeviceTarget::Commands(c))
    } else {
        Err(out)
    }
}
