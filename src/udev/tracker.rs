//! The hotplug state machine: which inventory device's adapter is present, and at which node.
//!
//! Fed with enumerated devices and udev events (live or replayed from recordings), it keeps one
//! entry per kernel device path and binds each inventory device to the newest matching adapter.
//! Replug races are handled by three rules:
//! - an event whose `SEQNUM` is not newer than the last one seen for that device path is stale
//!   and ignored (events delivered out of order, duplicates);
//! - when several present adapters match one device (a missed `remove`, then the replug appeared
//!   under another node), the newest by sequence number wins, and candidates whose sysfs path or
//!   node no longer resolve to the same device are dropped ([`Liveness`]);
//! - a new instance of an adapter at the same path (a replug whose `remove` was missed; udev gives
//!   it a new `USEC_INITIALIZED`) is announced again, so the console reopens instead of keeping a
//!   dead file descriptor.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use tracing::{debug, info, warn};

use super::config::UsbMatch;
use super::event::{Action, UdevEvent};
use super::identity::AdapterIdentity;
use super::metrics::UdevMetrics;
use crate::ids::DeviceName;

/// An inventory device whose adapter the tracker follows.
#[derive(Debug, Clone)]
pub struct Target {
    pub device: DeviceName,
    pub usb: UsbMatch,
}

impl Target {
    /// Every inventory device with a `[device.usb]`.
    pub fn from_inventory(inv: &crate::inventory::Inventory) -> Vec<Target> {
        inv.devices
            .iter()
            .filter_map(|d| {
                d.usb.as_ref().map(|u| Target {
                    device: d.name().clone(),
                    usb: u.clone(),
                })
            })
            .collect()
    }
}

/// What the daemon acts on: device X is now at `node`, or gone (`node == None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeChange {
    pub device: DeviceName,
    /// The tty node to open (`/dev/ttyUSB3`), not the link: the link may still point at the old
    /// node for a moment, the node from the event cannot.
    pub node: Option<PathBuf>,
    /// The adapter now bound, for logs and `labd status`.
    pub adapter: Option<AdapterIdentity>,
}

/// Checks whether an adapter the tracker believes present still exists; catches a missed
/// `remove`. Live: [`SysfsLiveness`]; replays of recordings: [`AssumeAlive`] or a test's own.
pub trait Liveness {
    fn is_alive(&self, adapter: &AdapterIdentity) -> bool;
}

/// For replays: recorded adapters exist until their recorded `remove`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AssumeAlive;

impl Liveness for AssumeAlive {
    fn is_alive(&self, _: &AdapterIdentity) -> bool {
        true
    }
}

/// Live check: the sysfs directory still exists and the node is still the same character device
/// (major:minor) — a node reused by another adapter fails the second test.
#[derive(Debug, Clone)]
pub struct SysfsLiveness {
    pub sys_root: PathBuf,
}

impl Default for SysfsLiveness {
    fn default() -> Self {
        Self {
            sys_root: PathBuf::from("/sys"),
        }
    }
}

impl Liveness for SysfsLiveness {
    fn is_alive(&self, a: &AdapterIdentity) -> bool {
        let sys = self.sys_root.join(a.devpath.trim_start_matches('/'));
        if !sys.exists() {
            return false;
        }
        match (&a.devnode, a.devnum) {
            (Some(node), Some((major, minor))) => node_has_devnum(node, major, minor),
            _ => true,
        }
    }
}

fn node_has_devnum(node: &Path, major: u32, minor: u32) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    match std::fs::metadata(node) {
        Ok(m) if m.file_type().is_char_device() => {
            let rdev = m.rdev();
            nix::sys::stat::major(rdev) as u32 == major
                && nix::sys::stat::minor(rdev) as u32 == minor
        }
        // No node (a recorded devpath on a test machine, a private /dev): sysfs decides.
        Err(_) => true,
        Ok(_) => false,
    }
}

#[derive(Debug, Clone)]
struct Adapter {
    identity: AdapterIdentity,
    /// SEQNUM of the event that last updated it; 0 for enumerated devices.
    seq: u64,
    /// Arrival order, to break ties between enumerated devices.
    order: u64,
    /// Changes when a new instance appears at this devpath (replug).
    instance: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Binding {
    devpath: String,
    instance: u64,
    node: PathBuf,
}

/// Per-device state, for `labd status` and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceStatus {
    pub device: DeviceName,
    pub node: Option<PathBuf>,
    /// Present adapters matching this device (normally 0 or 1; 2+ means duplicate serials).
    pub matching: usize,
}

/// The state machine. Pure: no I/O except through [`Liveness`].
#[derive(Debug)]
pub struct Tracker {
    targets: Vec<Target>,
    adapters: BTreeMap<String, Adapter>,
    last_seq: HashMap<String, u64>,
    /// What was last announced per device; absent = never announced.
    announced: BTreeMap<DeviceName, Option<Binding>>,
    next_order: u64,
    next_instance: u64,
    /// Devices last seen with several matching adapters (warned once per episode).
    ambiguous: BTreeSet<DeviceName>,
    metrics: UdevMetrics,
}

impl Tracker {
    pub fn new(targets: Vec<Target>, metrics: UdevMetrics) -> Self {
        Self {
            targets,
            adapters: BTreeMap::new(),
            last_seq: HashMap::new(),
            announced: BTreeMap::new(),
            next_order: 0,
            next_instance: 0,
            ambiguous: BTreeSet::new(),
            metrics,
        }
    }

    /// Feeds one event; returns what changed for inventory devices. Devices are only announced
    /// once [`Self::announce_all`] has run (after the initial enumeration) or when they change.
    pub fn apply(&mut self, ev: UdevEvent, live: &dyn Liveness) -> Vec<NodeChange> {
        self.metrics.event(ev.action);
        if ev.identity.subsystem.as_deref() != Some("tty") || ev.identity.devpath.is_empty() {
            return Vec::new();
        }
        let devpath = ev.identity.devpath.clone();
        if let Some(seq) = ev.seqnum {
            if let Some(&last) = self.last_seq.get(&devpath) {
                if seq <= last {
                    self.metrics.stale.inc();
                    debug!(
                        devpath,
                        seq,
                        last,
                        action = ev.action.as_str(),
                        "stale udev event ignored"
                    );
                    return Vec::new();
                }
            }
            self.last_seq.insert(devpath.clone(), seq);
        }
        match ev.action {
            Action::Remove => {
                self.adapters.remove(&devpath);
            }
            Action::Move => {
                if let Some(old) = &ev.devpath_old {
                    self.adapters.remove(old);
                }
                self.upsert(ev);
            }
            Action::Unbind => {
                // The driver let go of the device; its tty is about to disappear.
                self.adapters.remove(&devpath);
            }
            Action::Present | Action::Add | Action::Change | Action::Bind => self.upsert(ev),
        }
        self.recompute(live, false)
    }

    fn upsert(&mut self, ev: UdevEvent) {
        let devpath = ev.identity.devpath.clone();
        let order = self.next_order;
        self.next_order += 1;
        let same_instance = self.adapters.get(&devpath).is_some_and(|prev| {
            match (prev.identity.usec_initialized, ev.identity.usec_initialized) {
                (Some(a), Some(b)) => a == b,
                // Without USEC_INITIALIZED only an add means a new instance, unless the device
                // is only known from a rescan (seq 0): then the add is the event catching up
                // with what the rescan already saw, and re-announcing it would make the console
                // reopen for nothing.
                _ => ev.action != Action::Add || prev.seq == 0,
            }
        });
        let instance = match self.adapters.get(&devpath) {
            Some(prev) if same_instance => prev.instance,
            _ => {
                self.next_instance += 1;
                self.next_instance
            }
        };
        // A re-enumeration (no SEQNUM) of a known instance keeps its place in the ordering, so
        // a rescan can never flip which of two candidates is the newest.
        let seq = match (ev.seqnum, self.adapters.get(&devpath)) {
            (Some(s), _) => s,
            (None, Some(prev)) if same_instance => prev.seq,
            (None, _) => 0,
        };
        let order = match self.adapters.get(&devpath) {
            Some(prev) if same_instance && ev.seqnum.is_none() => prev.order,
            _ => order,
        };
        self.adapters.insert(
            devpath,
            Adapter {
                identity: ev.identity,
                seq,
                order,
                instance,
            },
        );
    }

    /// Announces every device not yet announced (online or offline): call once after the
    /// initial enumeration so the daemon learns the state of every device.
    pub fn announce_all(&mut self, live: &dyn Liveness) -> Vec<NodeChange> {
        self.recompute(live, true)
    }

    /// Re-checks liveness without an event (a periodic safety net for missed removes).
    pub fn recheck(&mut self, live: &dyn Liveness) -> Vec<NodeChange> {
        self.recompute(live, false)
    }

    /// Replaces the followed devices (inventory reload); unchanged devices keep their binding.
    pub fn set_targets(&mut self, targets: Vec<Target>, live: &dyn Liveness) -> Vec<NodeChange> {
        let keep: Vec<&DeviceName> = targets.iter().map(|t| &t.device).collect();
        let gone: Vec<DeviceName> = self
            .announced
            .keys()
            .filter(|d| !keep.contains(d))
            .cloned()
            .collect();
        for d in &gone {
            self.announced.remove(d);
            self.metrics.forget(d);
        }
        self.targets = targets;
        self.recompute(live, true)
    }

    fn recompute(&mut self, live: &dyn Liveness, announce_unannounced: bool) -> Vec<NodeChange> {
        let mut changes = Vec::new();
        let mut dead: BTreeSet<String> = BTreeSet::new();
        for target in &self.targets {
            let mut candidates: Vec<&Adapter> = self
                .adapters
                .values()
                .filter(|a| a.identity.devnode.is_some() && target.usb.matches(&a.identity))
                .collect();
            candidates.sort_by_key(|a| std::cmp::Reverse((a.seq, a.order)));
            // Probe every candidate, not only the winner, so a stale entry left by a missed
            // remove is dropped and the count of matching adapters stays true.
            candidates.retain(|c| {
                let alive = live.is_alive(&c.identity);
                if !alive {
                    dead.insert(c.identity.devpath.clone());
                }
                alive
            });
            let chosen = candidates.first().copied();
            let matching = candidates.len();
            self.metrics.set_adapters(&target.device, matching);
            if matching <= 1 {
                self.ambiguous.remove(&target.device);
            } else if self.ambiguous.insert(target.device.clone()) {
                warn!(
                    device = %target.device,
                    adapters = ?candidates.iter().map(|c| c.identity.label()).collect::<Vec<_>>(),
                    "several present adapters match this device; using the newest (duplicate serials? match by `path`)"
                );
            }
            let binding = chosen.and_then(|a| {
                Some(Binding {
                    devpath: a.identity.devpath.clone(),
                    instance: a.instance,
                    node: a.identity.devnode.clone()?,
                })
            });
            let previous = self.announced.get(&target.device);
            let changed = match previous {
                None => announce_unannounced || binding.is_some(),
                Some(prev) => *prev != binding,
            };
            if !changed {
                continue;
            }
            match &binding {
                Some(b) => {
                    info!(device = %target.device, node = %b.node.display(), "adapter online")
                }
                None => info!(device = %target.device, "adapter offline"),
            }
            changes.push(NodeChange {
                device: target.device.clone(),
                node: binding.as_ref().map(|b| b.node.clone()),
                adapter: chosen.map(|a| a.identity.clone()),
            });
            self.announced.insert(target.device.clone(), binding);
        }
        for d in dead {
            warn!(
                devpath = d,
                "adapter vanished without a remove event; forgetting it"
            );
            self.adapters.remove(&d);
        }
        self.metrics.set_online(
            self.announced.values().filter(|b| b.is_some()).count(),
            self.adapters.len(),
        );
        changes
    }

    /// Current state of every followed device.
    pub fn status(&self) -> Vec<DeviceStatus> {
        self.targets
            .iter()
            .map(|t| DeviceStatus {
                device: t.device.clone(),
                node: self
                    .announced
                    .get(&t.device)
                    .and_then(|b| b.as_ref().map(|b| b.node.clone())),
                matching: self
                    .adapters
                    .values()
                    .filter(|a| t.usb.matches(&a.identity))
                    .count(),
            })
            .collect()
    }

    /// Every tty the tracker believes present.
    pub fn adapters(&self) -> impl Iterator<Item = &AdapterIdentity> {
        self.adapters.values().map(|a| &a.identity)
    }
}

#[cfg(test)]
mod tests;
