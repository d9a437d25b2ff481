//! The registry of running consoles by device name: what the control socket, the job runner,
//! udev hotplug and metrics look consoles up in, with a change feed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::RwLock;

use tokio::sync::broadcast;

use super::{ConsoleHandle, ConsoleStatus};
use crate::ids::DeviceName;

/// A console appeared or went away (inventory load or reload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryChange {
    Added(DeviceName),
    Removed(DeviceName),
}

#[derive(Clone)]
struct Entry {
    handle: ConsoleHandle,
    listen: Option<SocketAddr>,
    listen_error: Option<String>,
}

/// Running consoles by device. The daemon's console service fills it; anyone may look up.
pub struct ConsoleRegistry {
    map: RwLock<BTreeMap<DeviceName, Entry>>,
    changes: broadcast::Sender<RegistryChange>,
}

impl Default for ConsoleRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl ConsoleRegistry {
    pub fn new() -> Self {
        Self {
            map: RwLock::new(BTreeMap::new()),
            changes: broadcast::channel(64).0,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<DeviceName, Entry>> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<DeviceName, Entry>> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The console of `device`, if it runs.
    pub fn get(&self, device: &str) -> Option<ConsoleHandle> {
        self.read()
            .iter()
            .find(|(k, _)| k.as_str() == device)
            .map(|(_, e)| e.handle.clone())
    }

    pub fn names(&self) -> Vec<DeviceName> {
        self.read().keys().cloned().collect()
    }

    pub fn handles(&self) -> Vec<ConsoleHandle> {
        self.read().values().map(|e| e.handle.clone()).collect()
    }

    /// Status of every console (with its telnet listener address), by device name.
    pub fn statuses(&self) -> Vec<ConsoleStatus> {
        self.read()
            .values()
            .map(|e| {
                let mut s = e.handle.status();
                s.listen = e.listen.map(|a| a.to_string());
                s.listen_error = e.listen_error.clone();
                s
            })
            .collect()
    }

    /// Added/Removed notifications from now on.
    pub fn changes(&self) -> broadcast::Receiver<RegistryChange> {
        self.changes.subscribe()
    }

    pub fn insert(&self, handle: ConsoleHandle, listen: Option<SocketAddr>) {
        let name = handle.device().clone();
        let replaced = self
            .write()
            .insert(
                name.clone(),
                Entry {
                    handle,
                    listen,
                    listen_error: None,
                },
            )
            .is_some();
        if !replaced {
            let _ = self.changes.send(RegistryChange::Added(name));
        }
    }

    /// Updates the telnet listener address shown for `device`, and why the configured one
    /// does not run.
    pub fn set_listen(
        &self,
        device: &DeviceName,
        listen: Option<SocketAddr>,
        error: Option<String>,
    ) {
        if let Some(e) = self.write().get_mut(device) {
            e.listen = listen;
            e.listen_error = error;
        }
    }

    pub fn remove(&self, device: &DeviceName) -> Option<ConsoleHandle> {
        let e = self.write().remove(device)?;
        let _ = self.changes.send(RegistryChange::Removed(device.clone()));
        Some(e.handle)
    }
}
