//! `labd coordinator`: a drop-in for lava-coordinator 2023.01 that is concurrent and does not
//! die on bad input.
//!
//! - `state.rs`/`handlers.rs`: the group state machine, a faithful port of lava-coordinator's
//!   (same replies, same quirks), except that where lava-coordinator raises and dies, labd
//!   replies `nack` and changes nothing.
//! - `conn.rs`: one task per connection: read one frame with a deadline and a size limit,
//!   apply it, reply, close. A silent or slow client only holds its own task. A request that
//!   is all there when accepted is served without registering the socket with the event loop.
//! - `store.rs`: the write-ahead journal that lets groups survive a restart.
//! - `log.rs`: log lines in lava-coordinator's format.
//!
//! The state sits behind one mutex held for microseconds per request, never across network
//! I/O. A request that changes state is journaled under that mutex (so the journal order is
//! the state order): in the default durability mode written to the journal file right there
//! (fdatasync'd by the journal thread within 50 ms), in `power` mode queued to the journal
//! thread, the reply waiting for the fdatasync.

mod conn;
mod handlers;
mod journal;
#[cfg(test)]
mod live_tests;
pub mod log;
pub mod state;
pub mod store;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::error::CoordinatorError;
use super::pyjson::{Key, Value};
pub use state::{Coordinator, Crash, Outcome};

/// `tracing` target of every coordinator log line (lava-coordinator's logger name).
pub const LOG_TARGET: &str = "lava_coordinator";

/// Compact the journal once it is this large and mostly dead records.
const COMPACT_MIN_BYTES: u64 = 1 << 20;

/// While the journal is behind (a write failed), rewrite it from the live groups at most this
/// often (a full disk makes each attempt fail until space is freed).
const HEAL_INTERVAL: Duration = Duration::from_secs(1);

/// Server settings: lava-coordinator's (port, blocksize) plus labd's limits.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// lava-coordinator binds 0.0.0.0 whatever its config says; so does labd by default.
    pub bind: IpAddr,
    pub port: u16,
    /// Kept for logs and compatibility; labd reads frames whole whatever the block size.
    pub blocksize: u64,
    /// Where the journal lives; `None` keeps groups in memory only, like lava-coordinator.
    pub state_dir: Option<PathBuf>,
    /// A client must send its whole request within this time.
    pub read_timeout: Duration,
    /// A client must take the reply within this time.
    pub write_timeout: Duration,
    /// Larger requests get `nack` (lava-coordinator accepts up to 4 GiB).
    pub max_message: usize,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// New groups beyond this many are refused with `nack`.
    pub max_groups: Option<usize>,
    /// When a change is durable enough to answer.
    pub durability: Durability,
}

/// When the reply to a request that changed a group may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Durability {
    /// Once the journal record is written to the OS: it survives the coordinator crashing or
    /// being killed. The journal is fdatasync'd within 50 ms, so a power loss or kernel crash
    /// can cost at most the changes of those last 50 ms.
    #[default]
    Process,
    /// Once the record is fdatasync'd (one sync shared by the requests that arrive together).
    Power,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 3079,
            blocksize: 4096,
            state_dir: None,
            read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            max_message: 1 << 20,
            max_connections: 1024,
            max_groups: Some(100_000),
            durability: Durability::Process,
        }
    }
}

/// The journal records of one live group, in order since the group was created.
#[derive(Default)]
struct GroupRecords {
    bodies: Vec<Arc<[u8]>>,
    bytes: u64,
}

/// The state plus the bookkeeping that decides what the journal must keep.
struct Live {
    coord: Coordinator,
    records: HashMap<Key, GroupRecords>,
    live_bytes: u64,
    journal_bytes: u64,
    /// No rewrite for a journal that is behind before this time ([`HEAL_INTERVAL`]).
    next_heal: Option<std::time::Instant>,
}

/// Shared by every connection task.
pub(crate) struct Shared {
    live: Mutex<Live>,
    journal: Option<journal::Handle>,
    cfg: ServerConfig,
    metrics: Metrics,
}

/// Metric handles kept for the hot path (one atomic add per request).
pub(crate) struct Metrics {
    requests: Vec<(&'static str, crate::metrics::Counter)>,
    groups: crate::metrics::Gauge,
}

impl Metrics {
    const NAMES: [&'static str; 9] = [
        "group_data",
        "clear_group",
        "lava_send",
        "lava_wait",
        "lava_wait_all",
        "lava_sync",
        "aggregate",
        "complete",
        "other",
    ];

    fn new() -> Self {
        let reg = crate::metrics::global();
        Metrics {
            requests: Self::NAMES
                .iter()
                .map(|n| {
                    let c = reg.counter(
                        "labd_coordinator_requests_total",
                        "Coordinator requests by request name.",
                        &[("request", n)],
                    );
                    (*n, c)
                })
                .collect(),
            groups: reg.gauge("labd_coordinator_groups", "Live Multi-Node groups.", &[]),
        }
    }

    /// The counter of a request name (`other` for anything unknown).
    pub(crate) fn request(&self, name: &str) -> &crate::metrics::Counter {
        let i = Self::NAMES.iter().position(|n| *n == name).unwrap_or(8);
        &self.requests[i].1
    }
}

/// A running coordinator.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Descriptors kept free for everything but connections: stdio, the listener, the event loop,
/// the log file, the lock file, the journal and its shared handle, and a rewrite's temporary
/// file and directory.
const FD_RESERVE: u64 = 32;

/// Connections served at once within a soft descriptor limit of `soft`: `requested`, or fewer
/// so that [`FD_RESERVE`] descriptors stay free. Connections beyond the limit would make
/// `accept` fail with EMFILE (handled, but spinning on it), and worse, could take the
/// descriptor a journal rewrite or sync needs.
fn connection_cap(requested: usize, soft: u64) -> usize {
    let fit = usize::try_from(soft.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX);
    requested.min(fit).max(1)
}

/// `cfg` with `max_connections` capped to the process's soft RLIMIT_NOFILE (with a warning).
fn fit_fd_limit(mut cfg: ServerConfig) -> ServerConfig {
    use nix::sys::resource::{Resource, getrlimit};
    let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return cfg;
    };
    let cap = connection_cap(cfg.max_connections, soft);
    if cap < cfg.max_connections {
        warn!(target: LOG_TARGET,
            "The open file limit (RLIMIT_NOFILE {}) is too low for {} connections; serving at most {} at once (raise it, e.g. LimitNOFILE= in the systemd unit)",
            soft, cfg.max_connections, cap);
        cfg.max_connections = cap;
    }
    cfg
}

impl Server {
    /// Recovers the journal (if any), binds and starts serving.
    pub async fn start(cfg: ServerConfig) -> Result<Server, CoordinatorError> {
        let cfg = fit_fd_limit(cfg);
        // Reading and rewriting the journal is blocking file work.
        let c = cfg.clone();
        let (shared, recovered) = tokio::task::spawn_blocking(move || Shared::new(c))
            .await
            .map_err(|e| CoordinatorError::Store {
                path: cfg.state_dir.clone().unwrap_or_default(),
                what: "journal recovery stopped".into(),
                source: std::io::Error::other(e.to_string()),
            })??;
        let addr = SocketAddr::new(cfg.bind, cfg.port);
        info!(target: LOG_TARGET, "[BTSP] binding to {}:{}", cfg.bind, cfg.port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| CoordinatorError::Bind {
                addr: addr.to_string(),
                source,
            })?;
        let addr = listener.local_addr().unwrap_or(addr);
        // Accepted through the std socket: connections start unregistered (see `conn::serve`).
        let bind_error = |source| CoordinatorError::Bind {
            addr: addr.to_string(),
            source,
        };
        let listener = listener.into_std().map_err(bind_error)?;
        // SAFETY: the std listener owns its descriptor, which stays open and the same until
        // the AsyncFd (its only owner) is dropped.
        let listener =
            unsafe { AsyncFd::register_with_interest(listener, tokio::io::Interest::READABLE) }
                .map_err(|e| bind_error(std::io::Error::from(e)))?;
        if recovered > 0 {
            info!(target: LOG_TARGET, "Recovered {} groups from the journal", recovered);
        }
        info!(target: LOG_TARGET, "Ready to accept new connections");
        let cancel = CancellationToken::new();
        let task = tokio::spawn(accept_loop(listener, shared.clone(), cancel.clone()));
        Ok(Server {
            addr,
            shared,
            cancel,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Names of the live groups.
    pub fn groups(&self) -> Vec<String> {
        self.shared.lock().coord.group_names()
    }

    /// Stops accepting; requests in flight finish.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

impl Shared {
    fn new(cfg: ServerConfig) -> Result<(Arc<Shared>, usize), CoordinatorError> {
        let mut live = Live {
            coord: Coordinator::new(cfg.max_groups),
            records: HashMap::new(),
            live_bytes: 0,
            journal_bytes: 0,
            next_heal: None,
        };
        let journal = match &cfg.state_dir {
            None => None,
            Some(dir) => {
                let (mut journal, rec) = store::Journal::open(dir)?;
                if let Some(n) = rec.truncated {
                    warn!(target: LOG_TARGET,
                        "Journal {}: cut {} bytes of an unfinished record", journal.path().display(), n);
                }
                // Replay quietly: these requests were logged when they first arrived.
                tracing::dispatcher::with_default(&tracing::Dispatch::none(), || {
                    for body in rec.records {
                        match super::pyjson::parse_bytes(&body) {
                            Ok(v) => {
                                let out = live.coord.handle(&v);
                                live.track(&out, body.into());
                            }
                            Err(_) => continue,
                        }
                    }
                });
                let bodies = live.all_bodies();
                journal
                    .rewrite(bodies.iter().map(|b| &b[..]))
                    .map_err(|source| CoordinatorError::Store {
                        path: journal.path(),
                        what: "cannot rewrite the journal".into(),
                        source,
                    })?;
                live.journal_bytes = journal.size();
                Some(journal::spawn(journal, cfg.durability))
            }
        };
        let groups = live.coord.group_count();
        Ok((
            Arc::new(Shared {
                live: Mutex::new(live),
                journal,
                cfg,
                metrics: Metrics::new(),
            }),
            groups,
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies one request; waits until a state change is durable enough (see [`Durability`])
    /// before returning.
    pub(crate) async fn apply(&self, request: &Value, raw: &[u8]) -> Outcome {
        let (outcome, durable) = {
            let mut live = self.lock();
            let outcome = live.coord.handle(request);
            let mut durable = None;
            if outcome.changed.is_some() {
                let body: Arc<[u8]> = raw.into();
                live.track(&outcome, body.clone());
                if let Some(journal) = &self.journal {
                    live.journal_bytes += body.len() as u64 + 19;
                    durable = journal.append(body);
                    // A journal that missed a change is rewritten from the live groups, which
                    // hold every change (the missed ones too).
                    let heal = journal.is_behind() && live.heal_due();
                    if heal
                        || (live.journal_bytes > COMPACT_MIN_BYTES
                            && live.journal_bytes > 4 * live.live_bytes)
                    {
                        journal.compact(live.all_bodies());
                        live.journal_bytes = live.live_bytes;
                    }
                }
            }
            self.metrics.groups.set(live.coord.group_count() as i64);
            (outcome, durable)
        };
        if let Some(rx) = durable {
            // The journal thread answers once the record is durable enough; if it died, the
            // error is logged there.
            let _ = rx.await;
        }
        outcome
    }
}

impl Live {
    /// Whether a rewrite of a journal that is behind may start now (at most once per
    /// [`HEAL_INTERVAL`]).
    fn heal_due(&mut self) -> bool {
        let now = std::time::Instant::now();
        if self.next_heal.is_some_and(|t| now < t) {
            return false;
        }
        self.next_heal = Some(now + HEAL_INTERVAL);
        true
    }

    /// Keeps the journal record of a changed group, drops a deleted group's records.
    fn track(&mut self, out: &Outcome, body: Arc<[u8]>) {
        let Some(g) = &out.changed else { return };
        if out.deleted {
            if let Some(r) = self.records.remove(g) {
                self.live_bytes -= r.bytes;
            }
            return;
        }
        let r = self.records.entry(g.clone()).or_default();
        r.bytes += body.len() as u64 + 19;
        self.live_bytes += body.len() as u64 + 19;
        r.bodies.push(body);
    }

    fn all_bodies(&self) -> Vec<Arc<[u8]>> {
        self.records
            .values()
            .flat_map(|r| r.bodies.iter().cloned())
            .collect()
    }
}

/// Accepts one connection: a socket in blocking mode, not registered with the event loop.
async fn accept(
    listener: &AsyncFd<std::net::TcpListener>,
) -> std::io::Result<(std::net::TcpStream, SocketAddr)> {
    loop {
        let mut ready = listener.readable().await?;
        if let Ok(accepted) = ready.try_io(|l| l.get_ref().accept()) {
            return accepted;
        }
    }
}

async fn accept_loop(
    listener: AsyncFd<std::net::TcpListener>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(shared.cfg.max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => return,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            a = accept(&listener) => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    conn::serve(&shared, stream, peer).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(target: LOG_TARGET, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
