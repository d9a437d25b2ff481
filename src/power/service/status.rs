//! What `status` shows: every PDU's health and outlets, every device's power and whether it can
//! be powered now.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use crate::ids::DeviceName;
use crate::power::driver::OutletState;
use crate::power::error::TargetName;
use crate::power::exec::Unit;

use super::PowerService;

#[derive(Debug, Clone, Serialize)]
pub struct OutletStatus {
    pub outlet: String,
    pub device: Option<DeviceName>,
    pub state: Option<OutletState>,
    pub verified: bool,
    pub updated: Option<SystemTime>,
    pub last_op: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PduStatus {
    pub name: String,
    pub driver: &'static str,
    pub healthy: bool,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub can_read: bool,
    pub outlets: Vec<OutletStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DevicePowerStatus {
    pub device: DeviceName,
    pub target: TargetName,
    pub state: Option<OutletState>,
    pub verified: bool,
    /// False while the PDU behind the device is unhealthy.
    pub can_power: bool,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PowerStatus {
    pub pdus: Vec<PduStatus>,
    pub devices: Vec<DevicePowerStatus>,
}

impl PowerService {
    /// Every PDU and device, with health and last known states.
    pub fn status(&self) -> PowerStatus {
        let mut by_outlet: HashMap<(String, String), DeviceName> = HashMap::new();
        for (d, e) in &self.inner.devices {
            by_outlet.insert((e.unit.label.clone(), e.outlet.clone()), d.clone());
        }
        let mut pdus = Vec::new();
        let mut units: Vec<&Arc<Unit>> = self.inner.units.values().collect();
        let command_units: Vec<&Arc<Unit>> = self
            .inner
            .devices
            .values()
            .map(|e| &e.unit)
            .filter(|u| u.target_pdu.is_none())
            .collect();
        units.extend(command_units);
        for u in units {
            let h = u.health();
            pdus.push(PduStatus {
                name: u.label.clone(),
                driver: u.driver.kind(),
                healthy: !h.unhealthy,
                consecutive_failures: h.consecutive_failures,
                last_error: h.last_error,
                can_read: u.driver.can_read(),
                outlets: u
                    .records()
                    .into_iter()
                    .map(|(o, r)| OutletStatus {
                        device: by_outlet.get(&(u.label.clone(), o.clone())).cloned(),
                        outlet: o,
                        state: r.state,
                        verified: r.verified,
                        updated: r.updated,
                        last_op: r.last_op,
                        last_error: r.last_error,
                    })
                    .collect(),
            });
        }
        let devices = self
            .inner
            .devices
            .keys()
            .filter_map(|d| self.device_status(d))
            .collect();
        PowerStatus { pdus, devices }
    }

    /// One device's power as last known, and whether it can be powered now.
    pub fn device_status(&self, device: &DeviceName) -> Option<DevicePowerStatus> {
        let e = self.inner.devices.get(device)?;
        let h = e.unit.health();
        let r = e.unit.record(&e.outlet);
        let target = TargetName {
            pdu: e.unit.target_pdu.clone(),
            outlet: e.unit.target_pdu.as_ref().map(|_| e.outlet.clone()),
            device: Some(device.clone()),
        };
        Some(DevicePowerStatus {
            device: device.clone(),
            target,
            state: r.state,
            verified: r.verified,
            can_power: !h.unhealthy,
            reason: h.unhealthy.then(|| {
                format!(
                    "{} is unhealthy after {} failed requests in a row; last: {}",
                    e.unit.label,
                    h.consecutive_failures,
                    h.last_error.as_deref().unwrap_or("?")
                )
            }),
        })
    }
}
