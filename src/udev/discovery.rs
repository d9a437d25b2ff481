//! The daemon's hook: one dedicated thread that enumerates ttys, follows the udev monitor (its
//! socket is `!Send`, so it never leaves that thread) and watches configured paths, and sends
//! "device X is now at /dev/ttyUSBn (or gone)" over a tokio channel. The console layer reacts
//! to each [`NodeChange`] at once (`reopen_now(change.node)`), not on its next backoff tick.
//!
//! Where no udev daemon runs, it says so once and watches the configured paths instead.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::UdevError;
use super::event::Action;
use super::live;
use super::metrics::UdevMetrics;
use super::pathwatch::PathWatch;
use super::tracker::{NodeChange, SysfsLiveness, Target, Tracker};
use crate::ids::DeviceName;
use crate::inventory::Inventory;

/// How adapters are followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// udev if a udev daemon runs, path watching otherwise.
    Auto,
    /// libudev enumeration and monitor (plus path watching for non-USB consoles).
    Udev,
    /// Poll the configured paths only.
    PathWatch,
}

/// What to follow.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    /// Devices with a `[device.usb]`, followed through udev.
    pub targets: Vec<Target>,
    /// Every device's tty path (console `tty`, else its udev link), for path watching.
    pub paths: Vec<(DeviceName, PathBuf)>,
    /// Path polling period; also the period of the udev liveness re-check.
    pub poll_interval: Duration,
    /// udev mode: re-enumerate this often, the safety net for an `add` the monitor missed
    /// (socket overrun); known adapters are not re-announced.
    pub rescan_interval: Duration,
    pub mode: Mode,
}

impl DiscoveryConfig {
    /// Everything the inventory describes, in [`Mode::Auto`].
    pub fn from_inventory(inv: &Inventory) -> Self {
        let paths = inv
            .devices
            .iter()
            .filter_map(|d| {
                let tty = d
                    .console
                    .as_ref()
                    .and_then(|c| c.tty.as_ref().map(|t| t.get_ref().clone()))
                    .or_else(|| d.usb.as_ref().map(|u| u.link_path()))?;
                Some((d.name().clone(), tty))
            })
            .collect();
        Self {
            targets: Target::from_inventory(inv),
            paths,
            poll_interval: Duration::from_millis(250),
            rescan_interval: Duration::from_secs(10),
            mode: Mode::Auto,
        }
    }
}

/// Where a device's tty is now, as the discovery thread last announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    pub node: Option<PathBuf>,
    /// `"udev"` or `"path"`: which mechanism follows this device.
    pub via: &'static str,
}

enum Command {
    Reload(Box<DiscoveryConfig>),
}

/// Owns the discovery thread. Dropping it stops the thread (its wake pipe closes).
pub struct Discovery {
    /// The mechanism actually in use (never `Auto`).
    pub mode: Mode,
    status: Arc<Mutex<BTreeMap<DeviceName, DeviceNode>>>,
    commands: std::sync::mpsc::Sender<Command>,
    wake: Option<OwnedFd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Capacity of the change channel; the thread waits (udev buffers events meanwhile) when the
/// daemon falls this far behind.
pub const CHANNEL_CAPACITY: usize = 256;

/// What [`Discovery::start`] returns.
pub struct Started {
    pub discovery: Discovery,
    /// Every followed device's state after the initial enumeration (online with its node, or
    /// offline): open the consoles accordingly, then send READY=1.
    pub initial: Vec<NodeChange>,
    /// Every later change, as it happens.
    pub changes: mpsc::Receiver<NodeChange>,
}

impl Discovery {
    /// Starts the thread and waits for the initial enumeration (a few milliseconds of blocking
    /// sysfs reads: call it from `spawn_blocking` or before the main loop starts).
    pub fn start(cfg: DiscoveryConfig) -> Result<Started, UdevError> {
        Self::start_with(cfg, UdevMetrics::global())
    }

    pub fn start_with(cfg: DiscoveryConfig, metrics: UdevMetrics) -> Result<Started, UdevError> {
        let mode = match cfg.mode {
            Mode::Auto if live::udev_daemon_running() => Mode::Udev,
            Mode::Auto => {
                warn!(
                    control = live::UDEV_CONTROL,
                    "no udev daemon runs here; following the configured tty paths instead of udev events"
                );
                Mode::PathWatch
            }
            m => m,
        };
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (cmd_tx, cmd_rx) = std::sync::mpsc::channel();
        // Close-on-exec: a child spawned later (a board's shell, qemu, a power command) must not
        // inherit the write end, or closing ours would never wake the thread to stop.
        let (wake_rx, wake_tx) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| UdevError::Thread {
                what: "discovery",
                source: e.into(),
            })?;
        let status = Arc::new(Mutex::new(BTreeMap::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let worker = Worker {
            mode,
            tx,
            commands: cmd_rx,
            wake: wake_rx,
            status: status.clone(),
            metrics,
            via_udev: Default::default(),
        };
        let thread = std::thread::Builder::new()
            .name("labd-udev".into())
            .spawn(move || worker.run(cfg, ready_tx))
            .map_err(|source| UdevError::Thread {
                what: "discovery",
                source,
            })?;
        // Set-up errors (a monitor socket that cannot be created) surface here, not in a log.
        let initial = match ready_rx.recv() {
            Ok(Ok(initial)) => initial,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                return Err(UdevError::Thread {
                    what: "discovery",
                    source: std::io::Error::other("thread ended during start-up"),
                });
            }
        };
        Ok(Started {
            discovery: Self {
                mode,
                status,
                commands: cmd_tx,
                wake: Some(wake_tx),
                thread: Some(thread),
            },
            initial,
            changes: rx,
        })
    }

    /// Follows a new inventory (SIGHUP): unchanged devices keep their state, added ones are
    /// announced, removed ones are forgotten.
    pub fn reload(&self, cfg: DiscoveryConfig) {
        if self.commands.send(Command::Reload(Box::new(cfg))).is_ok() {
            self.poke();
        }
    }

    fn poke(&self) {
        if let Some(w) = &self.wake {
            let _ = nix::unistd::write(w, &[1]);
        }
    }

    /// The last announced node of every followed device.
    pub fn status(&self) -> BTreeMap<DeviceName, DeviceNode> {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Stops the thread and waits for it (it wakes at once).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.wake.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Worker {
    mode: Mode,
    tx: mpsc::Sender<NodeChange>,
    commands: std::sync::mpsc::Receiver<Command>,
    wake: OwnedFd,
    status: Arc<Mutex<BTreeMap<DeviceName, DeviceNode>>>,
    metrics: UdevMetrics,
    /// Devices followed through udev (the rest through their paths).
    via_udev: std::collections::BTreeSet<DeviceName>,
}

/// The paths the path watcher follows: all of them without udev, else only devices udev does
/// not follow (non-USB consoles).
fn watched_paths(mode: Mode, cfg: &DiscoveryConfig) -> Vec<(DeviceName, PathBuf)> {
    cfg.paths
        .iter()
        .filter(|(d, _)| mode == Mode::PathWatch || !cfg.targets.iter().any(|t| &t.device == d))
        .cloned()
        .collect()
}

impl Worker {
    fn run(
        mut self,
        cfg: DiscoveryConfig,
        ready: std::sync::mpsc::Sender<Result<Vec<NodeChange>, UdevError>>,
    ) {
        let udev_mode = self.mode == Mode::Udev;
        // The monitor is created before enumerating, so nothing between the two is lost.
        let socket = if udev_mode {
            let s = udev::MonitorBuilder::new()
                .and_then(|b| b.match_subsystem("tty"))
                .and_then(|b| b.listen());
            match s {
                Ok(s) => Some(s),
                Err(source) => {
                    let _ = ready.send(Err(UdevError::Libudev {
                        context: "creating the udev monitor",
                        source,
                    }));
                    return;
                }
            }
        } else {
            None
        };
        if udev_mode {
            self.via_udev = cfg.targets.iter().map(|t| t.device.clone()).collect();
        }
        let mut tracker = Tracker::new(
            if udev_mode {
                cfg.targets.clone()
            } else {
                Vec::new()
            },
            self.metrics.clone(),
        );
        let live = SysfsLiveness::default();
        let mut paths = PathWatch::new(watched_paths(self.mode, &cfg));
        let mut interval = cfg.poll_interval;
        let mut rescan = cfg.rescan_interval;
        let mut last_scan = std::time::Instant::now();
        let mut initial = Vec::new();
        if udev_mode {
            match live::enumerate_ttys() {
                Ok(events) => {
                    for e in events {
                        initial.extend(tracker.apply(e, &live));
                    }
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            }
            initial.extend(tracker.announce_all(&live));
        }
        initial.extend(self.path_changes(&mut paths));
        self.record(&initial);
        info!(
            mode = ?self.mode,
            devices = cfg.paths.len().max(cfg.targets.len()),
            "device discovery started"
        );
        if ready.send(Ok(initial)).is_err() {
            return;
        }
        loop {
            let mut fds = vec![PollFd::new(self.wake.as_fd(), PollFlags::POLLIN)];
            if let Some(s) = &socket {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
            }
            let timeout = PollTimeout::try_from(interval).unwrap_or(PollTimeout::MAX);
            let ready_n = match poll(&mut fds, timeout) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    warn!(error = %e, "poll failed in the discovery thread; stopping it");
                    return;
                }
            };
            let wake = fds[0].revents().unwrap_or(PollFlags::empty());
            let udev_ready = fds
                .get(1)
                .and_then(|f| f.revents())
                .is_some_and(|r| r.contains(PollFlags::POLLIN));
            if wake.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                debug!("discovery stopped");
                return;
            }
            if wake.contains(PollFlags::POLLIN) {
                let mut buf = [0u8; 64];
                let _ = nix::unistd::read(&self.wake, &mut buf);
                while let Ok(Command::Reload(new)) = self.commands.try_recv() {
                    interval = new.poll_interval;
                    rescan = new.rescan_interval;
                    if udev_mode {
                        self.via_udev = new.targets.iter().map(|t| t.device.clone()).collect();
                    }
                    paths.set_paths(watched_paths(self.mode, &new));
                    let mut changes = if udev_mode {
                        tracker.set_targets(new.targets.clone(), &live)
                    } else {
                        Vec::new()
                    };
                    self.forget_removed(&new);
                    changes.extend(self.path_changes(&mut paths));
                    if !self.send_all(changes) {
                        return;
                    }
                }
            }
            let mut changes = Vec::new();
            if let Some(s) = &socket {
                if udev_ready {
                    for ev in s.iter() {
                        if let Some(e) = live::event_from_device(&ev) {
                            debug!(action = e.action.as_str(), seq = ?e.seqnum, devpath = e.identity.devpath, "udev event");
                            changes.extend(tracker.apply(e, &live));
                        }
                    }
                } else if ready_n == 0 {
                    changes.extend(tracker.recheck(&live));
                }
                if last_scan.elapsed() >= rescan {
                    last_scan = std::time::Instant::now();
                    match live::enumerate_ttys() {
                        Ok(events) => {
                            for e in events {
                                changes.extend(tracker.apply(e, &live));
                            }
                        }
                        Err(e) => warn!(error = %e, "periodic re-enumeration failed"),
                    }
                }
            }
            if !self.send_all(changes) {
                return;
            }
            let path_changes = self.path_changes(&mut paths);
            if !self.send_all(path_changes) {
                return;
            }
        }
    }

    fn path_changes(&mut self, paths: &mut PathWatch) -> Vec<NodeChange> {
        let changes = paths.poll();
        for c in &changes {
            self.metrics
                .set_adapters(&c.device, usize::from(c.node.is_some()));
            self.metrics.event(if c.node.is_some() {
                Action::Add
            } else {
                Action::Remove
            });
            match &c.node {
                Some(n) => info!(device = %c.device, node = %n.display(), "tty path present"),
                None => info!(device = %c.device, "tty path gone"),
            }
        }
        changes
    }

    fn forget_removed(&mut self, cfg: &DiscoveryConfig) {
        let metrics = &mut self.metrics;
        if let Ok(mut s) = self.status.lock() {
            s.retain(|d, _| {
                let keep = cfg.paths.iter().any(|(p, _)| p == d)
                    || cfg.targets.iter().any(|t| &t.device == d);
                if !keep {
                    metrics.forget(d);
                }
                keep
            });
        }
    }

    /// Updates the status map with `changes`.
    fn record(&self, changes: &[NodeChange]) {
        for c in changes {
            if let Ok(mut s) = self.status.lock() {
                let via = if self.via_udev.contains(&c.device) {
                    "udev"
                } else {
                    "path"
                };
                s.insert(
                    c.device.clone(),
                    DeviceNode {
                        node: c.node.clone(),
                        via,
                    },
                );
            }
        }
    }

    /// Records and sends changes; false when the daemon dropped the receiver.
    fn send_all(&self, changes: Vec<NodeChange>) -> bool {
        self.record(&changes);
        for c in changes {
            if !self.send_one(c) {
                return false;
            }
        }
        true
    }

    /// Sends one change, waiting while the channel is full but never past a stop request (so
    /// dropping the handle cannot deadlock on a daemon that stopped reading).
    fn send_one(&self, mut c: NodeChange) -> bool {
        loop {
            match self.tx.try_send(c) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    debug!("change receiver dropped; discovery thread ends");
                    return false;
                }
                Err(mpsc::error::TrySendError::Full(back)) => {
                    c = back;
                    let mut fds = [PollFd::new(self.wake.as_fd(), PollFlags::POLLIN)];
                    let _ = poll(&mut fds, PollTimeout::from(20u8));
                    let r = fds[0].revents().unwrap_or(PollFlags::empty());
                    if r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                        return false;
                    }
                    if r.contains(PollFlags::POLLIN) {
                        // A pending command; it is handled once this change is out.
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        }
    }
}
