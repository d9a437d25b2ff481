//! The journal thread: it owns the journal file's syncs and compactions, and (in
//! [`Durability::Power`] mode, or while a compaction runs) the appends too, answering each
//! request once its record is durable enough (see [`Durability`]).
//!
//! In [`Durability::Process`] mode a record only has to reach the OS before the reply, so the
//! serving thread writes it itself, under the state lock ([`Handle::append`]): one `write()`
//! instead of two thread hand-overs per request. The journal thread is told once per sync
//! window that the file is dirty and `fdatasync`s it within [`SYNC_INTERVAL`]. While it
//! rewrites the journal (compaction), records are queued to it instead and written, in order,
//! to the new file before direct writes resume.

use std::fs::File;
use std::io::Write;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::error;

use super::store::{Journal, encode_record};
use super::{Durability, LOG_TARGET};

/// Longest time a written record waits for its fdatasync in [`Durability::Process`] mode.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(50);

pub(super) enum JournalCmd {
    /// A record, and who waits for it.
    Append(Arc<[u8]>, Option<oneshot::Sender<()>>),
    /// Replace the journal with these records (compaction).
    Rewrite(Vec<Arc<[u8]>>),
    /// A direct write (at this time) made the file dirty since the last sync.
    Dirty(Instant),
}

/// The serving side's handle on the journal.
pub(super) struct Handle {
    tx: Sender<JournalCmd>,
    /// [`Durability::Process`] only: the file the serving thread writes to directly.
    direct: Option<Arc<Mutex<Direct>>>,
}

struct Direct {
    /// The journal file (`None` only if it could not be shared).
    file: Option<File>,
    /// A compaction runs: records go through the journal thread, in order, meanwhile.
    compacting: bool,
    /// Written since the journal thread last synced (it has been told).
    dirty: bool,
}

fn lock(d: &Mutex<Direct>) -> MutexGuard<'_, Direct> {
    d.lock().unwrap_or_else(|p| p.into_inner())
}

impl Handle {
    /// Journals one record. Called under the state lock, so records are in state order.
    /// Returns what the reply must wait for, if anything (a direct write is done on return).
    pub(super) fn append(&self, body: Arc<[u8]>) -> Option<oneshot::Receiver<()>> {
        if let Some(d) = &self.direct {
            let mut d = lock(d);
            let d = &mut *d;
            if let (Some(file), false) = (&mut d.file, d.compacting) {
                if let Err(e) = file.write_all(&encode_record(&body)) {
                    error!(target: LOG_TARGET,
                        "Journal append failed ({e}); this change will not survive a restart");
                }
                if !d.dirty {
                    d.dirty = true;
                    let _ = self.tx.send(JournalCmd::Dirty(Instant::now()));
                }
                return None;
            }
            // Compacting: queued while holding the lock the journal thread drains under.
            return self.queue(body);
        }
        self.queue(body)
    }

    fn queue(&self, body: Arc<[u8]>) -> Option<oneshot::Receiver<()>> {
        let (done_tx, done_rx) = oneshot::channel();
        let _ = self.tx.send(JournalCmd::Append(body, Some(done_tx)));
        Some(done_rx)
    }

    /// Asks for the journal to be replaced by `bodies` (called under the state lock). Ignored
    /// while a compaction is already running.
    pub(super) fn compact(&self, bodies: Vec<Arc<[u8]>>) {
        if let Some(d) = &self.direct {
            let mut d = lock(d);
            if d.compacting {
                return;
            }
            d.compacting = true;
        }
        let _ = self.tx.send(JournalCmd::Rewrite(bodies));
    }
}

pub(super) fn spawn(journal: Journal, durability: Durability) -> Handle {
    let (tx, rx) = std::sync::mpsc::channel::<JournalCmd>();
    let direct = match durability {
        Durability::Power => None,
        Durability::Process => {
            let file = journal
                .clone_file()
                .map_err(|e| {
                    error!(target: LOG_TARGET,
                        "cannot share the journal file ({e}); records go through the journal thread")
                })
                .ok();
            Some(Arc::new(Mutex::new(Direct {
                file,
                compacting: false,
                dirty: false,
            })))
        }
    };
    let d = direct.clone();
    let spawned = std::thread::Builder::new()
        .name("coordinator-journal".into())
        .spawn(move || run(journal, durability, &rx, d.as_deref()));
    if let Err(e) = spawned {
        error!(target: LOG_TARGET, "cannot start the journal thread: {e}");
    }
    Handle { tx, direct }
}

fn run(
    mut journal: Journal,
    durability: Durability,
    rx: &Receiver<JournalCmd>,
    direct: Option<&Mutex<Direct>>,
) {
    let mut dirty_since: Option<Instant> = None;
    loop {
        let first = match dirty_since {
            None => match rx.recv() {
                Ok(c) => c,
                Err(_) => return,
            },
            Some(t) => {
                let left = SYNC_INTERVAL.saturating_sub(t.elapsed());
                match rx.recv_timeout(left) {
                    Ok(c) => c,
                    Err(RecvTimeoutError::Timeout) => {
                        sync(&mut journal, direct);
                        dirty_since = None;
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        sync(&mut journal, direct);
                        return;
                    }
                }
            }
        };
        // Take everything queued: one write each, at most one sync for the batch.
        let mut waiting = Vec::new();
        let mut next = Some(first);
        while let Some(cmd) = next.take().or_else(|| rx.try_recv().ok()) {
            match cmd {
                JournalCmd::Append(body, done) => {
                    append(&mut journal, &body);
                    waiting.extend(done);
                    dirty_since.get_or_insert_with(Instant::now);
                }
                JournalCmd::Dirty(at) => {
                    dirty_since.get_or_insert(at);
                }
                JournalCmd::Rewrite(bodies) => {
                    if let Err(e) = journal.rewrite(bodies.iter().map(|b| &b[..])) {
                        error!(target: LOG_TARGET, "Journal compaction failed: {e}");
                    }
                    // The rewrite synced everything it holds.
                    dirty_since = None;
                    if let Some(d) = direct {
                        resume_direct(&mut journal, rx, d, &mut waiting, &mut dirty_since);
                    }
                }
            }
        }
        let must_sync = match durability {
            Durability::Power => true,
            Durability::Process => dirty_since.is_some_and(|t| t.elapsed() >= SYNC_INTERVAL),
        };
        if must_sync && dirty_since.is_some() {
            sync(&mut journal, direct);
            dirty_since = None;
        }
        for w in waiting {
            let _ = w.send(());
        }
    }
}

/// After a compaction: writes the records queued meanwhile to the new file, then lets the
/// serving thread write directly again. Holding the lock keeps new records out of the queue
/// while it drains, so the file stays in state order.
fn resume_direct(
    journal: &mut Journal,
    rx: &Receiver<JournalCmd>,
    direct: &Mutex<Direct>,
    waiting: &mut Vec<oneshot::Sender<()>>,
    dirty_since: &mut Option<Instant>,
) {
    let mut d = lock(direct);
    while let Ok(cmd) = rx.try_recv() {
        match cmd {
            JournalCmd::Append(body, done) => {
                append(journal, &body);
                waiting.extend(done);
                dirty_since.get_or_insert_with(Instant::now);
            }
            // Writes to the replaced file: what is live of them is in the new one, synced.
            JournalCmd::Dirty(_) => {}
            // Not sent while a compaction runs.
            JournalCmd::Rewrite(_) => {}
        }
    }
    match journal.clone_file() {
        Ok(f) => d.file = Some(f),
        Err(e) => error!(target: LOG_TARGET,
            "cannot share the journal file ({e}); records go through the journal thread"),
    }
    d.compacting = false;
    d.dirty = dirty_since.is_some();
}

fn append(journal: &mut Journal, body: &[u8]) {
    if let Err(e) = journal.append(body) {
        error!(target: LOG_TARGET,
            "Journal append failed ({e}); this change will not survive a restart");
    }
}

/// Syncs the file; direct writes after the flag is cleared start a new sync window.
fn sync(journal: &mut Journal, direct: Option<&Mutex<Direct>>) {
    if let Some(d) = direct {
        lock(d).dirty = false;
    }
    if let Err(e) = journal.sync() {
        error!(target: LOG_TARGET,
            "Journal sync failed ({e}); recent changes may not survive a power loss");
    }
}
