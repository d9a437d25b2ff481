//! `labd coordinator`: a drop-in for lava-coordinator 2023.01 that is concurrent and does not
//! die on bad input.
//!
//! - `state.rs`/`handlers.rs`: the group state machine, a faithful port of lava-coordinator's
//!   (same replies, same quirks), except that where lava-coordinator raises and dies, labd
//!   replies `nack` and changes nothing.
//! - `conn.rs`: one task per connection: read one frame with a deadline and a size limit,
//!   apply it, reply, close. A silent or slow client only holds its own task.
//! - `store.rs`: the write-ahead journal that lets groups survive a restart.
//! - `log.rs`: log lines in lava-coordinator's format.
//!
//! The state sits behind one mutex held for microseconds per request, never across I/O. A
//! request that changes state is queued to the journal thread under that mutex (so the journal
//! order is the state order) and its reply waits for the fsync.

mod conn;
mod handlers;
pub mod log;
pub mod state;
pub mod store;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::error::CoordinatorError;
use super::pyjson::{Key, Value};
pub use state::{Coordinator, Crash, Outcome};

/// `tracing` target of every coordinator log line (lava-coordinator's logger name).
pub const LOG_TARGET: &str = "lava_coordinator";

/// Compact the journal once it is this large and mostly dead records.
const COMPACT_MIN_BYTES: u64 = 1 << 20;

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
}

enum JournalCmd {
    Append(Arc<[u8]>, Option<oneshot::Sender<()>>),
    Rewrite(Vec<Arc<[u8]>>),
}

/// Shared by every connection task.
pub(crate) struct Shared {
    live: Mutex<Live>,
    journal: Option<std::sync::mpsc::Sender<JournalCmd>>,
    cfg: ServerConfig,
}

/// A running coordinator.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Recovers the journal (if any), binds and starts serving.
    pub async fn start(cfg: ServerConfig) -> Result<Server, CoordinatorError> {
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
                Some(spawn_journal_thread(journal))
            }
        };
        let groups = live.coord.group_count();
        Ok((
            Arc::new(Shared {
                live: Mutex::new(live),
                journal,
                cfg,
            }),
            groups,
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies one request; waits until a state change is durable before returning.
    pub(crate) async fn apply(&self, request: &Value, raw: &[u8]) -> Outcome {
        let (outcome, durable) = {
            let mut live = self.lock();
            let outcome = live.coord.handle(request);
            let mut durable = None;
            if outcome.changed.is_some() {
                let body: Arc<[u8]> = raw.into();
                live.track(&outcome, body.clone());
                if let Some(tx) = &self.journal {
                    let (done_tx, done_rx) = oneshot::channel();
                    live.journal_bytes += body.len() as u64 + 19;
                    let _ = tx.send(JournalCmd::Append(body, Some(done_tx)));
                    durable = Some(done_rx);
                    if live.journal_bytes > COMPACT_MIN_BYTES
                        && live.journal_bytes > 4 * live.live_bytes
                    {
                        let _ = tx.send(JournalCmd::Rewrite(live.all_bodies()));
                        live.journal_bytes = live.live_bytes;
                    }
                }
            }
            let groups = live.coord.group_count();
            crate::metrics::global()
                .gauge("labd_coordinator_groups", "Live Multi-Node groups.", &[])
                .set(groups as i64);
            (outcome, durable)
        };
        if let Some(rx) = durable {
            // The journal thread answers after fdatasync; if it died, the error is logged there.
            let _ = rx.await;
        }
        outcome
    }
}

impl Live {
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

/// The journal thread: appends, one fdatasync per batch of queued requests, then answers.
fn spawn_journal_thread(mut journal: store::Journal) -> std::sync::mpsc::Sender<JournalCmd> {
    let (tx, rx) = std::sync::mpsc::channel::<JournalCmd>();
    let spawned = std::thread::Builder::new()
        .name("coordinator-journal".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut waiting = Vec::new();
                let mut next = Some(first);
                while let Some(cmd) = next.take().or_else(|| rx.try_recv().ok()) {
                    match cmd {
                        JournalCmd::Append(body, done) => {
                            if let Err(e) = journal.append(&body) {
                                error!(target: LOG_TARGET,
                                    "Journal append failed ({e}); this change will not survive a restart");
                            }
                            waiting.extend(done);
                        }
                        JournalCmd::Rewrite(bodies) => {
                            flush(&mut journal, &mut waiting);
                            if let Err(e) = journal.rewrite(bodies.iter().map(|b| &b[..])) {
                                error!(target: LOG_TARGET, "Journal compaction failed: {e}");
                            }
                        }
                    }
                }
                flush(&mut journal, &mut waiting);
            }
        });
    if let Err(e) = spawned {
        error!(target: LOG_TARGET, "cannot start the journal thread: {e}");
    }
    tx
}

fn flush(journal: &mut store::Journal, waiting: &mut Vec<oneshot::Sender<()>>) {
    if let Err(e) = journal.sync() {
        error!(target: LOG_TARGET, "Journal sync failed ({e}); recent changes may not survive a restart");
    }
    for w in waiting.drain(..) {
        let _ = w.send(());
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, cancel: CancellationToken) {
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
            a = listener.accept() => a,
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
