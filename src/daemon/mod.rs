//! `labd agent`: composes the services that own this worker's hardware and runs them until
//! SIGTERM; SIGHUP reloads the inventory.
//!
//! Every part of the daemon is a [`Service`]: started in order (a start-up error stops the
//! daemon before it serves anything), then run until shutdown, and stopped in reverse order.
//! Services share [`Services`]: the current inventory (with a change feed for reloads), the
//! console registry, the power layer, the control-socket request handlers, the shutdown token.
//! Built in, in start order: consoles (and their telnet listeners), the metrics endpoint,
//! discovery (udev or path watching; reopens consoles on replug), power (PDU queues, the
//! control socket's `power` request, the pdudaemon-compatible listener), jobs (the `run-job`
//! request and the master link, on one runner), the services added with
//! [`Daemon::with_service`], and last the control socket.
//!
//! The main loop ([`RunningDaemon::run_until_signal`]) handles signals and talks to systemd
//! (`READY=1`, `STATUS=`, `WATCHDOG=1`, `RELOADING=1`, `STOPPING=1`).

mod consoles;
pub mod discovery;
mod jobs;
mod mainloop;
mod power;
pub mod simlab;
mod status;
mod summary;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use consoles::ConsoleService;
pub use mainloop::MainLoop;
pub use summary::Summary;

use crate::console::ConsoleRegistry;
use crate::console::source::BoxFut;
use crate::control::{ControlError, ControlServer, Handlers};
use crate::ids::PduName;
use crate::inventory::{Inventory, InventoryError};
use crate::power::PowerError;
use crate::power::control::PowerControl;

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
    #[error("power: {0}")]
    Power(#[from] PowerError),
    #[error("{service}: {message}")]
    Service {
        service: &'static str,
        message: String,
    },
    #[error("cannot install the signal handlers: {0}")]
    Signal(#[source] std::io::Error),
}

/// What a service does with a reloaded inventory; the reload completes when every one returned.
pub type ReloadFn = Arc<dyn Fn(Arc<Inventory>) -> BoxFut<'static, ()> + Send + Sync>;
type StatusFn = Arc<dyn Fn() -> Value + Send + Sync>;

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
    power: Arc<PowerControl>,
    reloads: Mutex<Vec<(&'static str, ReloadFn)>>,
    status_parts: Mutex<Vec<(&'static str, StatusFn)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Services {
    /// The inventory in force.
    pub fn inventory(&self) -> Arc<Inventory> {
        self.inventory.borrow().clone()
    }

    /// A receiver that changes on every successful reload (after the services registered
    /// with [`Self::on_reload`] have applied it).
    pub fn inventory_updates(&self) -> watch::Receiver<Arc<Inventory>> {
        self.inventory.subscribe()
    }

    pub fn inventory_path(&self) -> &Path {
        &self.inventory_path
    }

    /// The daemon's power layer: `services.power().request(&device, PowerRequest::new(op)
    /// .events(tx)).await`. Every power request of the daemon goes through it, so the job
    /// runner, `labd power` and the pdudaemon-compatible listener share one queue per PDU.
    pub fn power(&self) -> &Arc<PowerControl> {
        &self.power
    }

    /// Runs `f` with every reloaded inventory (SIGHUP), in registration order, after the
    /// services registered before; the reload is reported done when all have returned.
    pub fn on_reload(
        &self,
        name: &'static str,
        f: impl Fn(Arc<Inventory>) -> BoxFut<'static, ()> + Send + Sync + 'static,
    ) {
        lock(&self.reloads).push((name, Arc::new(f)));
    }

    /// Adds a field `name` to the control socket's `status` reply.
    pub fn add_status(&self, name: &'static str, f: impl Fn() -> Value + Send + Sync + 'static) {
        lock(&self.status_parts).push((name, Arc::new(f)));
    }

    fn status_parts(&self) -> Vec<(&'static str, Value)> {
        let parts = lock(&self.status_parts).clone();
        parts.into_iter().map(|(n, f)| (n, f())).collect()
    }

    /// Re-reads the inventory file. A broken file is reported and the running configuration
    /// kept; a good one is applied by every service (consoles start, stop or reconfigure,
    /// discovery follows the new devices, power keeps or rebuilds its queues).
    pub async fn reload(&self) -> Result<(), DaemonError> {
        let path = self.inventory_path.clone();
        let p = path.clone();
        let loaded = tokio::task::spawn_blocking(move || Inventory::load(&p))
            .await
            .map_err(|e| DaemonError::Service {
                service: "reload",
                message: e.to_string(),
            })?;
        let inv = match loaded {
            Ok(inv) => Arc::new(inv),
            Err(e) => {
                tracing::error!(inventory = %path.display(), "reload refused, keeping the running configuration:\n{e}");
                return Err(e.into());
            }
        };
        let handlers = lock(&self.reloads).clone();
        for (name, f) in handlers {
            tracing::debug!(service = name, "applying the reloaded inventory");
            f(inv.clone()).await;
        }
        self.inventory.send_replace(inv);
        tracing::info!(inventory = %path.display(), "inventory reloaded");
        Ok(())
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
            power: Arc::new(PowerControl::new()),
            reloads: Mutex::new(Vec::new()),
            status_parts: Mutex::new(Vec::new()),
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

    /// Adds a service, started after the built-in ones and before the control socket opens.
    pub fn with_service(mut self, s: Box<dyn Service>) -> Self {
        self.extra.push(s);
        self
    }

    /// Drives the `sim` PDU `pdu` (a `[[pdu]]` with `driver = "sim"` and no `url`) through an
    /// in-process simulator whose outlets power simulated boards (`labd demo`, tests).
    pub fn with_sim_pdu(self, pdu: PduName, sim: labd_hw_fixtures::simpdu::SimPdu) -> Self {
        self.services.power.attach_sim(pdu, sim);
        self
    }

    /// Starts everything; returns once the consoles are started, discovery has applied the
    /// initial enumeration, and the control socket accepts connections.
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
        let mut all: Vec<Box<dyn Service>> = vec![
            Box::new(ConsoleService),
            Box::new(MetricsService),
            Box::new(discovery::DiscoveryService),
            Box::new(power::PowerDaemonService),
            Box::new(jobs::JobsService),
        ];
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

    /// Re-reads the inventory (see [`Services::reload`]).
    pub async fn reload(&self) -> Result<(), DaemonError> {
        self.services.reload().await
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

    /// Runs until SIGTERM or SIGINT (then stops cleanly); SIGHUP reloads the inventory. Talks
    /// to systemd when `NOTIFY_SOCKET` is set (see [`MainLoop`]).
    pub async fn run_until_signal(self) -> Result<(), DaemonError> {
        MainLoop::from_env().run(self).await
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
