//! The discovery service: follows the boards' adapters (libudev, or the configured paths where no
//! udev daemon runs) and reopens a console at once when its adapter comes back, instead of on
//! the console's next backoff tick. A console keeps its own reconnect loop either way; this
//! only shortens the outage.
//!
//! - tty consoles: udev gives the new device node (`/dev/ttyUSB4`), which is opened directly
//!   (the link may still point at the old node for a moment); path watching re-opens the
//!   configured path. When the adapter goes away the console forgets that node (the kernel
//!   hands the name to the next adapter plugged in, maybe another board's) and retries the
//!   configured path until udev announces the adapter again.
//! - ser2net consoles whose tty is on this machine (`[device.ser2net]` or `[device.usb]`):
//!   reconnect now, so ser2net opens the device again.
//!
//! SIGHUP: the discovery thread follows the new inventory (unchanged devices keep their state).

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::{DaemonError, Service, ServiceRun, Services};
use crate::console::config::ConsoleEndpoint;
use crate::console::source::BoxFut;
use crate::ids::DeviceName;
use crate::inventory::Inventory;
use crate::udev::{Discovery, DiscoveryConfig, Mode, NodeChange, Started};

/// What discovery follows for an inventory: every console tty and `[device.usb]` link, plus
/// the ttys that a local ser2net exports for a ser2net console.
pub fn discovery_config(inv: &Inventory) -> DiscoveryConfig {
    let mut cfg = DiscoveryConfig::from_inventory(inv);
    for e in crate::ser2net::config::exports(inv) {
        let Ok(dev) = DeviceName::new(e.device.as_str()) else {
            continue;
        };
        if !cfg.paths.iter().any(|(d, _)| d == &dev) {
            cfg.paths.push((dev, e.tty));
        }
    }
    cfg
}

/// Starts discovery (blocking: the initial enumeration) off the executor. Falls back to path
/// watching when the udev monitor cannot be set up, so a udev problem never stops the daemon.
async fn start_discovery(cfg: DiscoveryConfig) -> Result<Started, DaemonError> {
    let c = cfg.clone();
    let first = tokio::task::spawn_blocking(move || Discovery::start(c))
        .await
        .map_err(|e| service_error(e.to_string()))?;
    match first {
        Ok(s) => Ok(s),
        Err(e) if cfg.mode != Mode::PathWatch => {
            tracing::warn!(error = %e, "udev discovery failed; following the configured tty paths instead");
            let mut c = cfg;
            c.mode = Mode::PathWatch;
            tokio::task::spawn_blocking(move || Discovery::start(c))
                .await
                .map_err(|e| service_error(e.to_string()))?
                .map_err(|e| service_error(e.to_string()))
        }
        Err(e) => Err(service_error(e.to_string())),
    }
}

fn service_error(message: String) -> DaemonError {
    DaemonError::Service {
        service: "discovery",
        message,
    }
}

/// Tells the device's console where its adapter is now. `initial`: the state at start-up,
/// where a console already online is left alone.
async fn apply(services: &Services, change: &NodeChange, initial: bool) {
    let dev = change.device.as_str();
    let Some(console) = services.consoles.get(dev) else {
        if change.node.is_none() {
            tracing::info!(device = dev, "adapter gone");
        }
        return;
    };
    let Some(node) = &change.node else {
        tracing::info!(device = dev, "adapter gone");
        // The kernel may give its node to the next adapter plugged in: the console must not
        // open it again.
        if let Err(e) = console.adapter_gone() {
            tracing::debug!(device = dev, error = %e, "adapter-gone notice not delivered");
        }
        return;
    };
    let inv = services.inventory();
    let Some(endpoint) = inv
        .device(dev)
        .and_then(|d| d.console.as_ref())
        .and_then(|c| c.endpoint())
    else {
        return;
    };
    let status = console.status();
    if initial && status.online {
        return;
    }
    let is_tty = matches!(endpoint, ConsoleEndpoint::Tty { .. });
    if is_tty && status.online && crate::console::opened_is(status.opened.as_deref(), node) {
        // The console's own retry got there first (or the change repeats what it already
        // uses): reopening would only drop a healthy link and the bytes in flight.
        tracing::debug!(device = dev, node = %node.display(), "console already open on this node; not reopening");
        return;
    }
    let path = match endpoint {
        // udev's node is authoritative; a path-watched link is simply opened again.
        ConsoleEndpoint::Tty { .. } if change.adapter.is_some() => Some(node.clone()),
        ConsoleEndpoint::Tty { .. } | ConsoleEndpoint::Ser2net { .. } => None,
    };
    tracing::info!(
        device = dev,
        node = %node.display(),
        "adapter present: reopening the console now"
    );
    crate::metrics::global()
        .counter(
            "labd_console_hotplug_reopens_total",
            "Console reopens triggered by discovery (an adapter came back), ahead of the backoff.",
            &[("device", dev)],
        )
        .inc();
    let sent = if is_tty {
        console.reopen_unless_open_on(path, node.clone()).await
    } else {
        console.reopen_now(path).await
    };
    if let Err(e) = sent {
        tracing::debug!(device = dev, error = %e, "reopen request not delivered");
    }
}

/// Follows adapters for the daemon's whole life.
pub(super) struct DiscoveryService;

impl Service for DiscoveryService {
    fn name(&self) -> &'static str {
        "discovery"
    }

    fn start(
        self: Box<Self>,
        services: Arc<Services>,
    ) -> BoxFut<'static, Result<ServiceRun, DaemonError>> {
        Box::pin(async move {
            let Started {
                discovery,
                initial,
                mut changes,
            } = start_discovery(discovery_config(&services.inventory())).await?;
            let mode = discovery.mode;
            tracing::info!(?mode, devices = initial.len(), "discovery ready");
            for c in &initial {
                apply(&services, c, true).await;
            }
            let discovery = Arc::new(Mutex::new(Some(discovery)));
            let d = discovery.clone();
            services.on_reload("discovery", move |inv: Arc<Inventory>| {
                let d = d.clone();
                Box::pin(async move {
                    if let Some(disc) = d.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                        disc.reload(discovery_config(&inv));
                    }
                }) as BoxFut<'static, ()>
            });
            let d = discovery.clone();
            services.add_status("discovery", move || {
                let guard = d.lock().unwrap_or_else(|p| p.into_inner());
                let Some(disc) = guard.as_ref() else {
                    return serde_json::Value::Null;
                };
                let devices: serde_json::Map<String, serde_json::Value> = disc
                    .status()
                    .into_iter()
                    .map(|(dev, n)| {
                        (
                            dev.to_string(),
                            serde_json::json!({"node": n.node, "via": n.via}),
                        )
                    })
                    .collect();
                serde_json::json!({"mode": mode_name(disc.mode), "devices": devices})
            });
            let run: ServiceRun = Box::pin(async move {
                follow(&services, &mut changes).await;
                let disc = discovery.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(disc) = disc {
                    // Joining the thread is quick (its wake pipe closes) but blocking.
                    let _ = tokio::task::spawn_blocking(move || disc.stop()).await;
                }
            });
            Ok(run)
        })
    }
}

async fn follow(services: &Arc<Services>, changes: &mut mpsc::Receiver<NodeChange>) {
    loop {
        tokio::select! {
            _ = services.shutdown.cancelled() => return,
            c = changes.recv() => match c {
                Some(c) => apply(services, &c, false).await,
                None => {
                    tracing::warn!("the discovery thread ended; consoles reopen on their own backoff");
                    services.shutdown.cancelled().await;
                    return;
                }
            }
        }
    }
}

pub fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Auto => "auto",
        Mode::Udev => "udev",
        Mode::PathWatch => "path",
    }
}
