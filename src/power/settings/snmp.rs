//! SNMP driver settings: presets (APC PowerNet MIB) and the generic OID mapping.

use std::ops::Range;

use toml::Spanned;

use super::{Problem, problem, required};
use crate::power::config::{PduConfig, SnmpVersionValue};

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
        crate::power::snmp::Oid::parse(&probe).map_err(|e| format!("OID {s:?}: {e}"))?;
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
    pub fn for_outlet(
        &self,
        outlet: u32,
    ) -> Result<crate::power::snmp::Oid, crate::power::snmp::SnmpError> {
        let n = outlet.to_string();
        crate::power::snmp::Oid::parse(&self.source.replace("{outlet}", &n).replace('*', &n))
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

pub(super) fn resolve_snmp(
    p: &PduConfig,
    at: &Range<usize>,
    out: &mut Vec<Problem>,
) -> Option<SnmpSettings> {
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
