//! Resolution of the inventory's power keys into per-driver settings. Used twice: by
//! `config::validate` (every problem becomes a diagnostic at its key's line) and by
//! `PowerService::new` (which only sees validated inventories).

use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use crate::ids::PduName;

use super::config::PduConfig;

mod device;
mod snmp;

pub use device::{
    DeviceCommands, DeviceTarget, check_outlet, check_outlet_text, outlet_key, resolve_device,
};
pub use snmp::{
    APC_RPDU_OUTLET_CTL, APC_SPDU_OUTLET_CTL, OidMap, OidTemplate, SnmpSettings, SnmpVersion,
};

/// One problem with a key, before it becomes a `file:line:col` diagnostic.
#[derive(Debug, Clone)]
pub struct Problem {
    pub span: Range<usize>,
    /// Key relative to its table (`outlet`, `community`...).
    pub key: String,
    pub message: String,
}

pub(super) fn problem(span: Range<usize>, key: &str, message: impl Into<String>) -> Problem {
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

pub(super) fn required<'a>(
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

pub(super) fn command(
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
        _ => snmp::resolve_snmp(p, &at, &mut out).map(DriverSettings::Snmp),
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
