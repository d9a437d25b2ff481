//! udev metrics: adapters present per inventory device, hotplug events by action, stale events
//! dropped, devices online.

use crate::ids::DeviceName;
use crate::metrics::{Counter, Gauge, Registry};

use super::event::Action;

const ADAPTERS: &str = "labd_udev_adapters";
const ADAPTERS_HELP: &str = "Present USB-serial adapters matching the device's [device.usb] (1 normal, 0 unplugged, 2+ duplicate identity).";
const EVENTS: &str = "labd_udev_events_total";
const EVENTS_HELP: &str =
    "udev tty events seen, by action (present = found by enumeration or path watching).";

/// Handles into a registry ([`crate::metrics::global`] in the daemon).
#[derive(Debug, Clone)]
pub struct UdevMetrics {
    registry: &'static Registry,
    pub stale: Counter,
    online: Gauge,
    present: Gauge,
    /// Per-device gauges, so an event does not take the registry lock once per device.
    adapters: std::collections::HashMap<DeviceName, Gauge>,
}

impl UdevMetrics {
    pub fn new(registry: &'static Registry) -> Self {
        Self {
            registry,
            stale: registry.counter(
                "labd_udev_stale_events_total",
                "udev events ignored because a newer SEQNUM was already seen for that device path.",
                &[],
            ),
            online: registry.gauge(
                "labd_udev_devices_online",
                "Inventory devices whose USB-serial adapter is present.",
                &[],
            ),
            present: registry.gauge(
                "labd_udev_ttys_present",
                "USB and other ttys udev reports present (matched or not).",
                &[],
            ),
            adapters: std::collections::HashMap::new(),
        }
    }

    /// The process-wide registry.
    pub fn global() -> Self {
        Self::new(crate::metrics::global())
    }

    pub fn event(&self, action: Action) {
        self.registry
            .counter(EVENTS, EVENTS_HELP, &[("action", action.as_str())])
            .inc();
    }

    pub fn set_adapters(&mut self, device: &DeviceName, n: usize) {
        let registry = self.registry;
        self.adapters
            .entry(device.clone())
            .or_insert_with(|| {
                registry.gauge(ADAPTERS, ADAPTERS_HELP, &[("device", device.as_str())])
            })
            .set(n as i64);
    }

    pub fn set_online(&self, online: usize, present: usize) {
        self.online.set(online as i64);
        self.present.set(present as i64);
    }

    /// Drops a device's series (removed from the inventory on reload).
    pub fn forget(&mut self, device: &DeviceName) {
        self.adapters.remove(device);
        self.registry
            .remove(ADAPTERS, &[("device", device.as_str())]);
    }
}
