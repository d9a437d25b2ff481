//! `labd agent`: composes the services that own this worker's hardware and runs them until
//! SIGTERM; SIGHUP reloads the inventory.
//!
//! Every part of the daemon is a [`Service`]: started in order (a start-up error stops the
//! daemon before it serves anything), then run until shutdown, and stopped in reverse order.
//! Services share [`Services`]: the current inventory (with a change feed for reloads), the
//! console registry, the control-socket request handlers, the shutdown token. Built in:
//! consoles (and their telnet listeners), the control socket, the metrics endpoint. Later
//! services (power queue, udev watcher, sd_notify, pdudaemon listener, master link) plug in
//! with [`Daemon::with_service`] and register their control requests in
//! [`Services::control`].

mod consoles;
mod status;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use consoles::ConsoleService;

use crate::console::ConsoleRegistry;
use crate::console::source::BoxFut;
use crate::control::{ControlError, ControlServer, Handlers};
use crate::inventory::{Inventory, InventoryError};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error("state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("metrics endpoint {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{service}: {message}")]
    Service {
        service: &'static str,
        message: String,
    },
    #[error("cannot install the signal handlers: {0}")]
    Signal(#[source] std::io::Error),
}

/// What the daemon's services share.
pub struct Services {
    inventory_path: PathBuf,
    inventory: watch::Sender<Arc<Inventory>>,
    /// Running consoles by device.
    pub consoles: Arc<ConsoleRegistry>,
    /// Control-socket request kinds; register yours before the daemon starts serving.
    pub control: Arc<Handlers>,
    /// Cancelled when the daemon stops.
    pub shutdown: CancellationToken,
}

impl Services {
    /// The inventory in force.
    pub fn inventory(&self) -> Arc<Inventory> {
        self.inventory.borrow().clone()
    }

    /// A receiver that changes on every successful reload.
    pub fn inventory_updates(&self) -> watch::Receiver<Arc<Inventory>> {
        self.inventory.subscribe()
    }

    pub fn inventory_path(&self) -> &Path {
        &self.inventory_path
    }
}

/// The future a started service runs until shutdown.
pub type ServiceRun = BoxFut<'static, ()>;

/// A part of the daemon.
pub trait Service: Send + 'static {
    fn name(&self) -> &'static str;

    /// Gets ready (bind sockets, open consoles...) and returns the future that serves until
    /// `services.shutdown` is cancelled and then cleans up.
    fn start(
        self: Box<Self>,
        services: Arc<Services>,
    ) -> BoxFut<'static, Result<ServiceRun, DaemonError>>;
}

/// A daemon being assembled.
pub struct Daemon {
    services: Arc<Services>,
    extra: Vec<Box<dyn Service>>,
}

impl Daemon {
    /// A daemon for an inventory already loaded from `inventory_path`.
    pub fn new(inventory_path: &Path, inventory: Inventory) -> Self {
        let services = Arc::new(Services {
            inventory_path: inventory_path.to_path_buf(),
            inventory: watch::channel(Arc::new(inventory)).0,
            consoles: Arc::new(ConsoleRegistry::new()),
            control: Arc::new(Handlers::new()),
            shutdown: CancellationToken::new(),
        });
        Self {
            services,
            extra: Vec::new(),
        }
    }

    /// Loads the inventory and prepares a daemon for it.
    pub fn load(inventory_path: &Path) -> Result<Self, DaemonError> {
        Ok(Self::new(inventory_path, Inventory::load(inventory_path)?))
    }

    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// Adds a service, started after the consoles and the metrics endpoint and before the
    /// control socket opens.
    pub fn with_service(mut self, s: Box<dyn Service>) -> Self {
        self.extra.push(s);
        self
    }

    /// Starts everything; returns once the consoles are started and the control socket
    /// accepts connections.
    pub async fn start(self) -> Result<RunningDaemon, DaemonError> {
        let inv = self.services.inventory();
        let state = &inv.worker.state_dir;
        std::fs::create_dir_all(state).map_err(|source| DaemonError::StateDir {
            path: state.clone(),
            source,
        })?;
        status::register(&self.services);
        self.services.control.register(
            "attach",
            crate::control::attach::handler(self.services.consoles.clone()),
        );
        // The control socket comes last, so every request kind is registered (and every
        // service ready) before the first client is accepted; it is also the first to stop.
        let mut all: Vec<Box<dyn Service>> =
            vec![Box::new(ConsoleService), Box::new(MetricsService)];
        all.extend(self.extra);
        all.push(Box::new(ControlService));
        let mut running = RunningDaemon {
            services: self.services.clone(),
            tasks: Vec::new(),
        };
        for s in all {
            let name = s.name();
            match s.start(self.services.clone()).await {
                Ok(run) => running.tasks.push((name, tokio::spawn(run))),
                Err(e) => {
                    tracing::error!(service = name, error = %e, "service failed to start");
                    running.stop().await;
                    return Err(e);
                }
            }
        }
        tracing::info!(
            socket = %inv.worker.control_socket().display(),
            consoles = self.services.consoles.names().len(),
            pid = std::process::id(),
            "labd agent ready"
        );
        Ok(running)
    }
}

/// A started daemon.
pub struct RunningDaemon {
    services: Arc<Services>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl RunningDaemon {
    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// Re-reads the inventory file. A broken file is reported and the running configuration
    /// kept; a good one is handed to every service (consoles start/stop/reconfigure).
    pub fn reload(&self) -> Result<(), DaemonError> {
        let path = self.services.inventory_path.clone();
        match Inventory::load(&path) {
            Ok(inv) => {
                tracing::info!(inventory = %path.display(), "inventory reloaded");
                self.services.inventory.send_replace(Arc::new(inv));
                Ok(())
            }
            Err(e) => {
                tracing::error!(inventory = %path.display(), "reload refused, keeping the running configuration:\n{e}");
                Err(e.into())
            }
        }
    }

    /// Stops every service, last started first.
    pub async fn stop(mut self) {
        self.services.shutdown.cancel();
        while let Some((name, task)) = self.tasks.pop() {
            if let Err(e) = task.await {
                tracing::error!(service = name, error = %e, "service ended abnormally");
            }
        }
        tracing::info!("labd agent stopped");
    }

    /// Runs until SIGTERM or SIGINT (then stops cleanly); SIGHUP reloads the inventory.
    pub async fn run_until_signal(self) -> Result<(), DaemonError> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
        let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;
        let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signal)?;
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break; }
                _ = int.recv() => { tracing::info!("SIGINT: stopping"); break; }
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the inventory");
                    let _ = self.reload();
                }
                _ = self.services.shutdown.cancelled() => break,
            }
        }
        self.stop().await;
        Ok(())
    }
}

/// The control socket in `state_dir`.
struct ControlService;

impl Service for ControlService {
    fn name(&self) -> &'static str {
        "control"
    }

    fn start(
        self: Box<Self>,
        services: Arc<Services>,
    ) -> BoxFut<'static, Result<ServiceRun, DaemonError>> {
        Box::pin(async move {
            let inv = services.inventory();
            let server = ControlServer::bind(
                &inv.worker.control_socket(),
                inv.worker.socket_group.as_deref(),
                services.control.clone(),
            )
            .await?;
            let run: ServiceRun = Box::pin(async move {
                services.shutdown.cancelled().await;
                server.stop().await;
            });
            Ok(run)
        })
    }
}

/// `[metrics] listen`: the Prometheus endpoint.
struct MetricsService;

impl Service for MetricsService {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn start(
        self: Box<Self>,
        services: Arc<Services>,
    ) -> BoxFut<'static, Result<ServiceRun, DaemonError>> {
        Box::pin(async move {
            let addr = services.inventory().metrics.as_ref().and_then(|m| m.listen);
            let Some(addr) = addr else {
                return Ok(Box::pin(async {}) as ServiceRun);
            };
            let (bound, task) = crate::metrics::serve(addr, services.shutdown.child_token())
                .await
                .map_err(|source| DaemonError::Metrics { addr, source })?;
            tracing::info!(%bound, "metrics endpoint ready");
            let run: ServiceRun = Box::pin(async move {
                let _ = task.await;
            });
            Ok(run)
        })
    }
}
