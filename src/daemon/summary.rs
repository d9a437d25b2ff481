//! The one-line summary systemd shows (`STATUS=`): devices in the inventory and consoles online,
//! and a future that resolves when it changes (a console going on- or offline, a console added
//! or removed by a reload), so the status is pushed on change rather than polled.

use std::fmt;

use futures::FutureExt;

use super::Services;

/// What `systemctl status labd` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Devices in the inventory.
    pub devices: usize,
    /// Devices with a console.
    pub consoles: usize,
    /// Consoles whose link to the board is up.
    pub online: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} device{}, {} online",
            self.devices,
            if self.devices == 1 { "" } else { "s" },
            self.online
        )
    }
}

impl Summary {
    /// The summary now.
    pub fn of(services: &Services) -> Self {
        let statuses = services.consoles.statuses();
        Self {
            devices: services.inventory().devices.len(),
            consoles: statuses.len(),
            online: statuses.iter().filter(|s| s.online).count(),
        }
    }

    /// Resolves with the new summary once it differs from `self`. Cancel-safe: it only
    /// subscribes to change feeds.
    pub async fn changed(self, services: &Services) -> Self {
        loop {
            // Subscribe first, then read, so no change between the two is missed.
            let mut registry = services.consoles.changes();
            let mut inventory = services.inventory_updates();
            let mut watches: Vec<_> = services
                .consoles
                .handles()
                .iter()
                .map(|h| h.watch_status())
                .collect();
            let now = Self {
                devices: inventory.borrow_and_update().devices.len(),
                consoles: watches.len(),
                online: watches
                    .iter_mut()
                    .map(|w| w.borrow_and_update().online)
                    .filter(|on| *on)
                    .count(),
            };
            if now != self {
                return now;
            }
            let any_console = async {
                if watches.is_empty() {
                    return std::future::pending().await;
                }
                let futs = watches.iter_mut().map(|w| {
                    async move {
                        // A stopped console's feed is closed: wait for the registry instead.
                        if w.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                    .boxed()
                });
                futures::future::select_all(futs).await;
            };
            tokio::select! {
                _ = registry.recv() => {}
                _ = inventory.changed() => {}
                _ = any_console => {}
            }
        }
    }
}
