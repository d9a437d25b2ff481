//! The API the rest of labd uses to reach a console: [`Console`] owns the hub task,
//! [`ConsoleHandle`] is the cheap cloneable way in, [`WriterLease`] is a job's exclusive right
//! to type.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::hub::{Command, Hub, WriteAs};
use super::journal::{Flusher, Journal};
use super::metrics::ConsoleMetrics;
use super::queue::{Scrollback, Subscription};
use super::{
    ConsoleContext, ConsoleError, ConsoleSource, ConsoleSpec, ConsoleStatus, SubscribeOptions,
};
use crate::ids::{ClientId, DeviceName};

/// A running console. Dropping it stops the hub (subscribers see the end of their stream).
pub struct Console {
    handle: ConsoleHandle,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Console {
    /// Opens the journal and starts the hub. Must be called inside a tokio runtime. The console
    /// starts offline and opens its source at once, retrying with backoff.
    pub fn start(
        device: DeviceName,
        spec: ConsoleSpec,
        ctx: &ConsoleContext,
    ) -> Result<Self, ConsoleError> {
        let metrics = ConsoleMetrics::new(&device);
        let journal = Journal::open(
            &ctx.journal_dir,
            &device,
            &ctx.journal,
            metrics.journal_bytes.clone(),
        )
        .map_err(|source| ConsoleError::Open {
            endpoint: format!(
                "journal {}",
                super::journal::device_dir(&ctx.journal_dir, &device).display()
            ),
            source,
        })?;
        let flusher = journal.flusher();
        let journal_path = journal.path().to_path_buf();
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (status_tx, status_rx) = watch::channel(ConsoleStatus {
            device: device.clone(),
            source: spec.source.describe(),
            online: false,
            opened: None,
            since: std::time::SystemTime::now(),
            last_error: None,
            clients: 0,
            writer: None,
            bytes_in: 0,
            bytes_out: 0,
            reconnects: 0,
            listen: None,
            listen_error: None,
        });
        metrics.online.set(0);
        let cancel = CancellationToken::new();
        let hub = Hub {
            device: device.clone(),
            source: spec.source,
            path_override: None,
            cmd_rx,
            cmd_tx: cmd_tx.clone(),
            subs: Vec::new(),
            scrollback: Scrollback::new(spec.scrollback),
            lease: None,
            next_id: 0,
            journal,
            status: status_tx,
            metrics: metrics.clone(),
            policy: spec.reconnect,
            input_limit: spec.input_limit,
            shutdown: cancel.clone(),
        };
        // The hub owns the journal, whose drop joins the writer thread: run that last part off
        // the executor.
        let task = tokio::spawn(async move {
            let journal_owner = hub.run_and_return_journal().await;
            let _ = tokio::task::spawn_blocking(move || drop(journal_owner)).await;
        });
        Ok(Self {
            handle: ConsoleHandle {
                inner: Arc::new(Inner {
                    device,
                    cmd: cmd_tx,
                    status: status_rx,
                    metrics,
                    flusher,
                    journal_path,
                }),
            },
            cancel,
            task: Some(task),
        })
    }

    pub fn handle(&self) -> &ConsoleHandle {
        &self.handle
    }

    /// Stops the hub and waits until the journal is written and closed.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

struct Inner {
    device: DeviceName,
    cmd: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<ConsoleStatus>,
    metrics: ConsoleMetrics,
    flusher: Flusher,
    journal_path: PathBuf,
}

/// A cloneable way to reach one console's hub.
#[derive(Clone)]
pub struct ConsoleHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ConsoleHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleHandle")
            .field("device", &self.inner.device)
            .finish()
    }
}

impl ConsoleHandle {
    pub fn device(&self) -> &DeviceName {
        &self.inner.device
    }

    fn stopped(&self) -> ConsoleError {
        ConsoleError::Stopped {
            device: self.inner.device.clone(),
        }
    }

    fn send(&self, cmd: Command) -> Result<(), ConsoleError> {
        self.inner.cmd.send(cmd).map_err(|_| self.stopped())
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ConsoleError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx))?;
        rx.await.map_err(|_| self.stopped())
    }

    /// Attaches a subscriber. Replay (if asked) and live data are gap-free and never overlap.
    /// While the console is offline the stream starts with `Lost`.
    pub async fn subscribe(&self, opts: SubscribeOptions) -> Result<Subscription, ConsoleError> {
        self.ask(|reply| Command::Subscribe { opts, reply }).await
    }

    /// Sends input as client `from`. Refused while a job holds the writer lease, unless
    /// `force` (journaled as forced); refused while offline.
    pub async fn send_input(
        &self,
        from: &ClientId,
        data: impl Into<Bytes>,
        force: bool,
    ) -> Result<(), ConsoleError> {
        let data = data.into();
        self.ask(|reply| Command::Input {
            from: from.clone(),
            data,
            how: WriteAs::Client { force },
            reply,
        })
        .await?
    }

    /// Sends a serial BREAK as client `from` (same arbitration as input).
    pub async fn send_break(&self, from: &ClientId, force: bool) -> Result<(), ConsoleError> {
        self.ask(|reply| Command::Break {
            from: from.clone(),
            how: WriteAs::Client { force },
            reply,
        })
        .await?
    }

    /// Takes the exclusive writer lease (for a job). Operators become read-only until the
    /// lease is dropped, unless they force.
    pub async fn acquire_writer(&self, owner: ClientId) -> Result<WriterLease, ConsoleError> {
        let id = self
            .ask(|reply| Command::Acquire {
                owner: owner.clone(),
                reply,
            })
            .await??;
        Ok(WriterLease {
            handle: self.clone(),
            id,
            owner,
        })
    }

    /// The last `max` bytes of board output (at most the scrollback size).
    pub async fn scrollback(&self, max: usize) -> Result<Bytes, ConsoleError> {
        self.ask(|reply| Command::Scrollback { max, reply }).await
    }

    /// Current state, including byte counters.
    pub fn status(&self) -> ConsoleStatus {
        let mut s = self.inner.status.borrow().clone();
        s.bytes_in = self.inner.metrics.bytes_in.get();
        s.bytes_out = self.inner.metrics.bytes_out.get();
        s.reconnects = self.inner.metrics.reconnects.get();
        s
    }

    /// A receiver that changes whenever online state, clients or the lease change.
    pub fn watch_status(&self) -> watch::Receiver<ConsoleStatus> {
        self.inner.status.clone()
    }

    /// Reopens the console now instead of at the next backoff tick; `new_path` (a tty node
    /// handed over by udev hotplug) is used for this and later opens, `None` returns to the
    /// configured path. If the console is online it is closed and reopened.
    pub async fn reopen_now(&self, new_path: Option<PathBuf>) -> Result<(), ConsoleError> {
        self.send(Command::Reopen {
            path: new_path,
            unless_open_on: None,
        })
    }

    /// Like [`reopen_now`](Self::reopen_now) for an adapter that (re)appeared at `node`, but a
    /// console already online on `node` is left alone. The hub decides, so this cannot race
    /// the console's own retry that may have opened `node` a moment earlier.
    pub async fn reopen_unless_open_on(
        &self,
        new_path: Option<PathBuf>,
        node: PathBuf,
    ) -> Result<(), ConsoleError> {
        self.send(Command::Reopen {
            path: new_path,
            unless_open_on: Some(node),
        })
    }

    /// Discovery saw the adapter removed: the node it handed over with
    /// [`reopen_now`](Self::reopen_now) is forgotten (the kernel may give that name to
    /// another board's adapter); the configured path is retried until the adapter is back.
    pub fn adapter_gone(&self) -> Result<(), ConsoleError> {
        self.send(Command::AdapterGone)
    }

    /// Replaces the source (inventory reload); subscribers stay attached.
    pub fn reconfigure(&self, source: Arc<dyn ConsoleSource>) -> Result<(), ConsoleError> {
        self.send(Command::Reconfigure { source })
    }

    /// Journals a labd event for this console (an operator attached, a job started...).
    pub fn note(&self, text: &str) {
        let _ = self.send(Command::Note {
            text: text.to_string(),
        });
    }

    /// Waits until everything journaled so far is on disk.
    pub async fn flush_journal(&self) {
        let f = self.inner.flusher.clone();
        let _ = tokio::task::spawn_blocking(move || f.flush_blocking()).await;
    }

    /// The device's current journal file.
    pub fn journal_path(&self) -> &std::path::Path {
        &self.inner.journal_path
    }
}

/// A job's exclusive right to write to a console; released when dropped.
pub struct WriterLease {
    handle: ConsoleHandle,
    id: u64,
    owner: ClientId,
}

impl WriterLease {
    pub fn owner(&self) -> &ClientId {
        &self.owner
    }

    pub fn console(&self) -> &ConsoleHandle {
        &self.handle
    }

    /// Sends input as the lease holder.
    pub async fn send(&self, data: impl Into<Bytes>) -> Result<(), ConsoleError> {
        let data = data.into();
        self.handle
            .ask(|reply| Command::Input {
                from: self.owner.clone(),
                data,
                how: WriteAs::Lease(self.id),
                reply,
            })
            .await?
    }

    /// Sends a serial BREAK as the lease holder.
    pub async fn send_break(&self) -> Result<(), ConsoleError> {
        self.handle
            .ask(|reply| Command::Break {
                from: self.owner.clone(),
                how: WriteAs::Lease(self.id),
                reply,
            })
            .await?
    }
}

impl Drop for WriterLease {
    fn drop(&mut self) {
        let _ = self.handle.send(Command::Release { id: self.id });
    }
}
