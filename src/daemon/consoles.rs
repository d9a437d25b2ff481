//! The console service: one console (and optional telnet listener) per inventory device,
//! kept in step with the inventory on reload.
//!
//! On reload, an unchanged device keeps its console, its journal and its attached clients; a
//! changed source is swapped in place (clients stay attached, the journal says so); a changed
//! listener is rebound; added devices start, removed ones stop. Removed devices and moved
//! listeners are stopped before anything binds (a port can pass from one device to another),
//! and a listener that could not bind is retried on the next reload.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::{DaemonError, Service, ServiceRun, Services};
use crate::console::config::{ConsoleEndpoint, LineSettings};
use crate::console::listener::TelnetListener;
use crate::console::metrics::ConsoleMetrics;
use crate::console::source::{BoxFut, from_endpoint};
use crate::console::{Console, ConsoleContext, ConsoleSpec};
use crate::ids::DeviceName;
use crate::inventory::{DeviceConfig, Inventory};

/// Starts and supervises every console of the inventory.
pub struct ConsoleService;

impl Service for ConsoleService {
    fn name(&self) -> &'static str {
        "consoles"
    }

    fn start(
        self: Box<Self>,
        services: Arc<Services>,
    ) -> BoxFut<'static, Result<ServiceRun, DaemonError>> {
        Box::pin(async move {
            let inv = services.inventory();
            let journal_dir = inv.worker.journal_dir();
            std::fs::create_dir_all(&journal_dir).map_err(|source| DaemonError::StateDir {
                path: journal_dir.clone(),
                source,
            })?;
            let mut set = ConsoleSet {
                services: services.clone(),
                ctx: ConsoleContext::from_worker(&inv.worker),
                entries: BTreeMap::new(),
            };
            set.apply(&inv).await;
            let set = Arc::new(tokio::sync::Mutex::new(set));
            let s = set.clone();
            services.on_reload("consoles", move |inv: Arc<Inventory>| {
                let s = s.clone();
                Box::pin(async move { s.lock().await.apply(&inv).await }) as BoxFut<'static, ()>
            });
            let run: ServiceRun = Box::pin(async move {
                services.shutdown.cancelled().await;
                set.lock().await.stop_all().await;
            });
            Ok(run)
        })
    }
}

/// What decides whether a console must be reconfigured.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    endpoint: ConsoleEndpoint,
    line: LineSettings,
}

struct Entry {
    console: Console,
    key: Key,
    /// The configured address; `listener` is `None` when it could not be bound.
    listen: Option<SocketAddr>,
    listener: Option<TelnetListener>,
}

struct ConsoleSet {
    services: Arc<Services>,
    ctx: ConsoleContext,
    entries: BTreeMap<DeviceName, Entry>,
}

fn wanted(inv: &Inventory, dev: &DeviceConfig) -> Option<(Key, Option<SocketAddr>)> {
    let c = dev.console.as_ref()?;
    let key = Key {
        endpoint: c.endpoint()?,
        line: c.line_settings(),
    };
    let listen = c.listen.as_ref().map(|p| {
        SocketAddr::new(
            c.listen_address
                .unwrap_or_else(|| inv.worker.listen_address()),
            *p.get_ref(),
        )
    });
    Some((key, listen))
}

impl ConsoleSet {
    async fn apply(&mut self, inv: &Inventory) {
        let wanted: Vec<(DeviceName, Key, Option<SocketAddr>)> = inv
            .devices
            .iter()
            .filter_map(|dev| wanted(inv, dev).map(|(k, l)| (dev.name().clone(), k, l)))
            .collect();
        // Removed devices stop first and listeners that move close before anything binds,
        // so a renamed device keeping its port, or two devices swapping ports, can bind.
        let gone: Vec<DeviceName> = self
            .entries
            .keys()
            .filter(|n| !wanted.iter().any(|(w, _, _)| w == *n))
            .cloned()
            .collect();
        for name in gone {
            if let Some(e) = self.entries.remove(&name) {
                tracing::info!(device = %name, "console removed by reload");
                self.services.consoles.remove(&name);
                stop_entry(e).await;
                ConsoleMetrics::remove(&name);
            }
        }
        let mut rebind = Vec::new();
        for (name, _, listen) in &wanted {
            if let Some(e) = self.entries.get_mut(name) {
                // A listener that could not bind is retried on every reload.
                if e.listen != *listen || (listen.is_some() && e.listener.is_none()) {
                    if let Some(l) = e.listener.take() {
                        l.stop().await;
                    }
                    rebind.push(name.clone());
                }
            }
        }
        for (name, key, listen) in wanted {
            match self.entries.get_mut(&name) {
                Some(e) => {
                    if e.key != key {
                        let source = from_endpoint(&key.endpoint, key.line);
                        tracing::info!(device = %name, source = %source.describe(), "console reconfigured by reload");
                        let _ = e.console.handle().reconfigure(source);
                        e.key = key;
                    }
                    if rebind.contains(&name) {
                        let (listener, error) = bind(&name, listen, &e.console).await;
                        e.listener = listener;
                        e.listen = listen;
                        self.services.consoles.set_listen(
                            &name,
                            e.listener.as_ref().map(|l| l.local_addr()),
                            error,
                        );
                    }
                }
                None => {
                    let spec = ConsoleSpec::new(from_endpoint(&key.endpoint, key.line));
                    let console = match Console::start(name.clone(), spec, &self.ctx) {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::error!(device = %name, error = %e, "cannot start the console");
                            continue;
                        }
                    };
                    let (listener, error) = bind(&name, listen, &console).await;
                    self.services.consoles.insert(
                        console.handle().clone(),
                        listener.as_ref().map(|l| l.local_addr()),
                    );
                    if error.is_some() {
                        self.services.consoles.set_listen(&name, None, error);
                    }
                    self.entries.insert(
                        name,
                        Entry {
                            console,
                            key,
                            listen,
                            listener,
                        },
                    );
                }
            }
        }
    }

    async fn stop_all(&mut self) {
        let entries = std::mem::take(&mut self.entries);
        let mut stops = Vec::new();
        for (name, e) in entries {
            self.services.consoles.remove(&name);
            stops.push(stop_entry(e));
        }
        futures::future::join_all(stops).await;
    }
}

async fn stop_entry(e: Entry) {
    if let Some(l) = e.listener {
        l.stop().await;
    }
    e.console.stop().await;
}

/// Binds the configured telnet listener; on failure, why (shown in status, retried on the
/// next reload).
async fn bind(
    name: &DeviceName,
    listen: Option<SocketAddr>,
    console: &Console,
) -> (Option<TelnetListener>, Option<String>) {
    let Some(addr) = listen else {
        return (None, None);
    };
    match TelnetListener::bind(addr, console.handle().clone()).await {
        Ok(l) => (Some(l), None),
        Err(e) => {
            tracing::error!(device = %name, %addr, error = %e, "cannot open the telnet listener; the console runs without it (retried on the next reload)");
            (None, Some(format!("{addr}: {e}")))
        }
    }
}
