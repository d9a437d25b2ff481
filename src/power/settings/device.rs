//! `[device.power]` resolution and outlet checks.

use std::ops::Range;

use crate::ids::{DeviceName, PduName};
use crate::power::config::{DevicePower, OutletValue, PduConfig};

use super::{CommandTemplate, Problem, command, numeric_outlets, problem};

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
