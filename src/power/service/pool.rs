//! Units that outlive one [`PowerService`](super::PowerService): an inventory reload builds a
//! new service, but a job started before it keeps the old one for its whole run, a detached
//! request (its caller cancelled) keeps running on its old unit, and the pdudaemon listener's
//! connections hold the service they started with. All of them must still take turns at a PDU.
//!
//! A PDU whose resolved settings did not change keeps its very [`Unit`] (queue, health, last
//! known states). A PDU whose settings changed gets a new unit (new driver, policy, health) on
//! the same [`Lane`] (queue and outlet locks), so its first request waits for the old unit's
//! running ones. Entries are weak: a PDU removed from the inventory is forgotten once no service
//! and no running request holds it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::super::exec::{Lane, Unit};
use super::super::settings::{DeviceCommands, ResolvedPdu};

/// Everything a unit is built from besides its driver object: equal settings, same unit.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum UnitConfig {
    Pdu(ResolvedPdu),
    Commands(DeviceCommands),
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct UnitKey {
    pub config: UnitConfig,
    pub unhealthy_after: u32,
    pub max_retry_delay: Duration,
}

struct Entry {
    key: UnitKey,
    unit: Weak<Unit>,
    lane: Weak<Lane>,
}

/// The units of every service built with it, by label (PDU name or `commands:DEVICE`). Cheap
/// to clone; [`PowerControl`](super::super::control::PowerControl) keeps one for the daemon.
#[derive(Clone, Default)]
pub struct UnitPool {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

impl std::fmt::Debug for UnitPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("UnitPool")
            .field("labels", &e.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl UnitPool {
    pub fn new() -> Self {
        Self::default()
    }

    /// The unit for `label`: the existing one when its settings equal `key`, else one made by
    /// `make` on the label's lane (the old unit's, if any is still alive).
    pub(super) fn unit<E>(
        &self,
        label: &str,
        key: UnitKey,
        make: impl FnOnce(Arc<Lane>) -> Result<Unit, E>,
    ) -> Result<Arc<Unit>, E> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, e| e.lane.strong_count() > 0);
        let lane = match entries.get(label) {
            Some(e) => {
                if e.key == key {
                    if let Some(unit) = e.unit.upgrade() {
                        return Ok(unit);
                    }
                }
                e.lane.upgrade()
            }
            None => None,
        }
        .unwrap_or_default();
        let unit = Arc::new(make(lane.clone())?);
        entries.insert(
            label.to_string(),
            Entry {
                key,
                unit: Arc::downgrade(&unit),
                lane: Arc::downgrade(&lane),
            },
        );
        Ok(unit)
    }

    /// Labels with a live unit or lane (tests, status).
    pub fn len(&self) -> usize {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .values()
            .filter(|e| e.lane.strong_count() > 0)
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
