//! The per-device hub: one task that owns the console's link to the board.
//!
//! It reads board output and hands every chunk to the journal, the scrollback and each
//! subscriber's queue (never waiting on any of them); it is the only writer to the board and
//! arbitrates who may write; when the link drops it journals a marker, tells subscribers, and
//! reopens with capped exponential backoff while subscribers stay attached.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

mod commands;
pub(crate) use commands::opened_is;
mod pacer;

use pacer::Pacer;

use crate::console::journal::Journal;
use crate::console::metrics::ConsoleMetrics;
use crate::console::queue::{ConsoleEvent, Scrollback, SubShared, Subscription};
use crate::console::source::{ConnReader, ConnWriter, Connection, ConsoleSource};
use crate::console::{ConsoleError, ConsoleStatus, ReconnectPolicy, SubscribeOptions};
use crate::ids::{ClientId, DeviceName};

/// Who is writing, for arbitration.
#[derive(Debug, Clone)]
pub(crate) enum WriteAs {
    /// An operator or telnet client; refused while a lease is held unless forced.
    Client { force: bool },
    /// The holder of lease `id`.
    Lease(u64),
}

pub(crate) enum Command {
    Subscribe {
        opts: SubscribeOptions,
        reply: oneshot::Sender<Subscription>,
    },
    Unsubscribe {
        id: u64,
    },
    Input {
        from: ClientId,
        data: Bytes,
        how: WriteAs,
        reply: oneshot::Sender<Result<(), ConsoleError>>,
    },
    Break {
        from: ClientId,
        how: WriteAs,
        reply: oneshot::Sender<Result<(), ConsoleError>>,
    },
    Acquire {
        owner: ClientId,
        reply: oneshot::Sender<Result<u64, ConsoleError>>,
    },
    Release {
        id: u64,
    },
    Scrollback {
        max: usize,
        reply: oneshot::Sender<Bytes>,
    },
    Reopen {
        path: Option<PathBuf>,
        /// Skip the reopen when the console is online with this node open: a hotplug event
        /// that lost the race to the console's own retry must not drop the fresh link.
        unless_open_on: Option<PathBuf>,
    },
    /// Discovery saw the adapter go away: a node it handed over earlier may be given to
    /// another adapter by the kernel, so it is never opened again.
    AdapterGone,
    Reconfigure {
        source: Arc<dyn ConsoleSource>,
    },
    Note {
        text: String,
    },
}

struct Online {
    reader: Box<dyn ConnReader>,
    writer: Box<dyn ConnWriter>,
}

struct Offline {
    /// When the link was lost; `None` before the first successful open.
    lost_at: Option<Instant>,
    started: Instant,
    attempt: u32,
    next_try: Instant,
    last_error: Option<String>,
}

enum Next {
    Online(Online),
    Offline(Offline),
    Stop,
}

pub(crate) struct Hub {
    pub(crate) device: DeviceName,
    pub(crate) source: Arc<dyn ConsoleSource>,
    pub(crate) path_override: Option<PathBuf>,
    pub(crate) cmd_rx: mpsc::UnboundedReceiver<Command>,
    pub(crate) cmd_tx: mpsc::UnboundedSender<Command>,
    pub(crate) subs: Vec<Arc<SubShared>>,
    pub(crate) scrollback: Scrollback,
    pub(crate) lease: Option<(u64, ClientId)>,
    pub(crate) next_id: u64,
    pub(crate) journal: Journal,
    pub(crate) status: watch::Sender<ConsoleStatus>,
    pub(crate) metrics: ConsoleMetrics,
    pub(crate) policy: ReconnectPolicy,
    pub(crate) input_limit: usize,
    pub(crate) shutdown: CancellationToken,
}

const READ_CHUNK: usize = 64 * 1024;
/// A read at least this large may have left more behind: read again before handing it out.
const DRAIN_AFTER: usize = 1024;

impl Hub {
    /// Runs until shutdown; hands back the journal so its final flush can happen off the
    /// executor.
    pub(crate) async fn run_and_return_journal(mut self) -> Journal {
        let span = tracing::info_span!("console", device = %self.device);
        async {
            self.journal
                .marker(&format!("console started: {}", self.source.describe()));
            tracing::info!(source = %self.source.describe(), "console starting");
            let now = Instant::now();
            let mut next = Next::Offline(Offline {
                lost_at: None,
                started: now,
                attempt: 0,
                next_try: now,
                last_error: None,
            });
            loop {
                next = match next {
                    Next::Online(on) => self.run_online(on).await,
                    Next::Offline(off) => self.run_offline(off).await,
                    Next::Stop => break,
                };
            }
            self.stop();
        }
        .instrument(span)
        .await;
        self.journal
    }

    fn stop(&mut self) {
        self.journal.marker("console stopped");
        for s in self.subs.drain(..) {
            s.close();
        }
        self.metrics.online.set(0);
        self.metrics.clients.set(0);
        self.status.send_modify(|s| {
            s.online = false;
            s.clients = 0;
        });
        tracing::info!("console stopped");
    }

    async fn run_online(&mut self, mut on: Online) -> Next {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let token = self.shutdown.clone();
        let cancelled = token.cancelled();
        tokio::pin!(cancelled);
        let mut pacer = Pacer::default();
        // One timer for the whole session, re-armed when reads are held back (creating one per
        // loop turn would register and cancel a timer on every read).
        let hold_timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(hold_timer);
        loop {
            if buf.capacity() < 4096 {
                buf.reserve(READ_CHUNK);
            }
            let pending = on.writer.pending();
            let hold = pacer.hold_until;
            tokio::select! {
                biased;
                _ = &mut cancelled => return Next::Stop,
                cmd = self.cmd_rx.recv() => match cmd {
                    Some(cmd) => {
                        if matches!(cmd, Command::Input { .. } | Command::Break { .. }) {
                            pacer.input();
                        }
                        if let Some(next) = self.handle_online(cmd, &mut on) {
                            return next;
                        }
                    }
                    None => return Next::Stop,
                },
                _ = &mut hold_timer, if hold.is_some() => pacer.hold_ended(),
                r = on.reader.read(&mut buf), if hold.is_none() => match r {
                    Ok(()) => {
                        // Bulk output: take what is already waiting (a pty or tty hands out
                        // at most 4 KiB per read) so the journal and each subscriber see one
                        // large chunk instead of many small ones. A small read emptied the
                        // buffer: no need to ask again.
                        let mut more = 0;
                        let mut last = buf.len();
                        while last >= DRAIN_AFTER && buf.len() < READ_CHUNK && more < 16 {
                            more += 1;
                            let before = buf.len();
                            match on.reader.try_read(&mut buf) {
                                Some(Ok(())) => last = buf.len() - before,
                                Some(Err(e)) => {
                                    if !buf.is_empty() {
                                        self.on_output(buf.split().freeze());
                                    }
                                    return self.lost(e.to_string());
                                }
                                None => break,
                            }
                        }
                        if !buf.is_empty() {
                            let held = pacer.hold_until;
                            if let Some(t) = pacer.after_read(buf.len()) {
                                if held.is_none() {
                                    on.reader.pause();
                                }
                                hold_timer.as_mut().reset(t);
                            }
                            self.on_output(buf.split().freeze());
                        }
                    }
                    Err(e) => return self.lost(e.to_string()),
                },
                r = on.writer.flush_some(), if pending => {
                    if let Err(e) = r {
                        return self.lost(e.to_string());
                    }
                }
            }
        }
    }

    async fn run_offline(&mut self, mut off: Offline) -> Next {
        let mut opening: Option<
            crate::console::source::BoxFut<'static, Result<Connection, ConsoleError>>,
        > = None;
        loop {
            let sleep = tokio::time::sleep_until(off.next_try);
            let in_flight = opening.is_some();
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Next::Stop,
                cmd = self.cmd_rx.recv() => match cmd {
                    Some(Command::Reopen { path, .. }) => {
                        self.path_override = path;
                        opening = None;
                        off.next_try = Instant::now();
                    }
                    Some(Command::Reconfigure { source }) => {
                        self.reconfigured(source);
                        opening = None;
                        off.next_try = Instant::now();
                    }
                    Some(Command::AdapterGone) => {
                        if self.forget_node() {
                            // An open of the old node may be under way: drop it.
                            opening = None;
                        }
                    }
                    Some(cmd) => self.handle_common(cmd, None),
                    None => return Next::Stop,
                },
                _ = sleep, if !in_flight => {
                    opening = Some(self.source.open(self.path_override.clone()));
                }
                r = async { match opening.as_mut() { Some(f) => f.await, None => std::future::pending().await } }, if in_flight => {
                    opening = None;
                    match r {
                        Ok(conn) => return self.back(conn, &off),
                        Err(e) => {
                            let text = e.to_string();
                            if off.last_error.as_deref() != Some(text.as_str()) {
                                // Each distinct reason once, so the journal explains an outage.
                                self.journal.marker(&format!("console unavailable: {text}"));
                                tracing::warn!(error = %text, "console cannot be opened; retrying with backoff");
                                self.status.send_modify(|s| s.last_error = Some(text.clone()));
                                off.last_error = Some(text);
                            } else {
                                tracing::debug!(error = %text, attempt = off.attempt, "console still unavailable");
                            }
                            off.attempt += 1;
                            off.next_try = Instant::now() + self.policy.delay(off.attempt);
                        }
                    }
                }
            }
        }
    }

    fn on_output(&mut self, data: Bytes) {
        self.metrics.bytes_in.inc_by(data.len() as u64);
        self.journal.output(&data);
        self.scrollback.push(&data);
        let mut gone = false;
        for s in &self.subs {
            if s.is_gone() {
                gone = true;
                continue;
            }
            let dropped = s.push_data(&data);
            if dropped > 0 {
                self.metrics.dropped.inc_by(dropped);
            }
        }
        if gone {
            self.prune();
        }
    }

    fn prune(&mut self) {
        let before = self.subs.len();
        self.subs.retain(|s| !s.is_gone());
        if self.subs.len() != before {
            self.publish_clients();
        }
    }

    fn publish_clients(&mut self) {
        let n = self.subs.len();
        self.metrics.clients.set(n as i64);
        self.status.send_modify(|s| s.clients = n);
    }

    fn broadcast(&mut self, ev: ConsoleEvent) {
        for s in &self.subs {
            s.push_control(ev.clone());
        }
    }

    /// Forgets the node handed over by discovery; the configured path is opened from now on
    /// until discovery hands over a new one. Returns whether there was one.
    pub(crate) fn forget_node(&mut self) -> bool {
        match self.path_override.take() {
            Some(p) => {
                tracing::info!(node = %p.display(), "adapter gone: its node will not be reopened");
                true
            }
            None => false,
        }
    }

    fn lost(&mut self, reason: String) -> Next {
        tracing::warn!(%reason, "console lost; will reopen");
        // A kernel node (`/dev/ttyUSB3`) names whichever adapter the kernel enumerates there
        // next, maybe another board's: retry the configured (stable) path until discovery
        // announces where this adapter is.
        self.forget_node();
        self.journal.marker(&format!("console lost: {reason}"));
        self.metrics.online.set(0);
        self.status.send_modify(|s| {
            s.online = false;
            s.since = SystemTime::now();
            s.last_error = Some(reason.clone());
        });
        self.broadcast(ConsoleEvent::Lost {
            reason: reason.clone(),
        });
        let now = Instant::now();
        Next::Offline(Offline {
            lost_at: Some(now),
            started: now,
            attempt: 0,
            next_try: now + self.policy.initial,
            last_error: Some(reason),
        })
    }

    fn back(&mut self, conn: Connection, off: &Offline) -> Next {
        let opened = conn.opened.clone();
        self.metrics.online.set(1);
        self.status.send_modify(|s| {
            s.online = true;
            s.opened = Some(opened.clone());
            s.since = SystemTime::now();
            s.last_error = None;
        });
        match off.lost_at {
            Some(t) => {
                let after = t.elapsed();
                self.journal.marker(&format!(
                    "console back after {:.1} s: {opened}",
                    after.as_secs_f64()
                ));
                tracing::info!(%opened, after_s = after.as_secs_f64(), "console back");
                self.metrics.reconnects.inc();
                self.broadcast(ConsoleEvent::Back {
                    after,
                    opened: opened.clone(),
                });
            }
            None => {
                let waited = off.started.elapsed();
                let note = if off.attempt > 0 {
                    format!(" after {:.1} s", waited.as_secs_f64())
                } else {
                    String::new()
                };
                self.journal
                    .marker(&format!("console open{note}: {opened}"));
                tracing::info!(%opened, "console open");
                // Subscribers that attached before the first open were told it was not open.
                self.broadcast(ConsoleEvent::Back {
                    after: waited,
                    opened: opened.clone(),
                });
            }
        }
        Next::Online(Online {
            reader: conn.reader,
            writer: conn.writer,
        })
    }

    fn reconfigured(&mut self, source: Arc<dyn ConsoleSource>) {
        let desc = source.describe();
        self.journal
            .marker(&format!("console reconfigured: {desc}"));
        tracing::info!(source = %desc, "console reconfigured");
        self.source = source;
        self.path_override = None;
        self.status.send_modify(|s| s.source = desc);
    }
}

impl ReconnectPolicy {
    /// Delay before attempt `n` (1-based) of a reopen sequence.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
        self.initial.saturating_mul(factor).min(self.max)
    }
}
