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
//!
//! If a record cannot be written (disk full), the partial record is cut off again and the
//! journal is *behind*: no record is written after that (the file stays a clean prefix of the
//! state's history) until the server has it rewritten from the live groups, which brings back
//! every change since, the failed one included ([`Handle::is_behind`]).

use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{error, info};

use super::store::{Journal, encode_record, write_whole};
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
    /// A record could not be written: none are until a rewrite succeeds (shared with the
    /// journal thread, which sets it for its own failed appends and clears it).
    behind: Arc<AtomicBool>,
}

struct Direct {
    /// The journal file (`None` if it could not be shared: records then go through the
    /// journal thread until the next rewrite shares the new file).
    file: Option<File>,
    /// The file's length: where a failed write is cut back to.
    len: u64,
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
                if self.behind.load(Ordering::SeqCst) {
                    // In memory only; the rewrite that ends this brings it back.
                    return None;
                }
                let record = encode_record(&body);
                match write_whole(file, d.len, &record) {
                    Ok(()) => d.len += record.len() as u64,
                    Err(e) => {
                        fell_behind(&self.behind, &e);
                        return None;
                    }
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

    /// Whether the journal misses changes (a write failed) and must be rewritten from the live
    /// groups before records are written again.
    pub(super) fn is_behind(&self) -> bool {
        self.behind.load(Ordering::SeqCst)
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
            let mut d = Direct {
                file: None,
                len: 0,
                compacting: false,
                dirty: false,
            };
            share(&journal, &mut d);
            Some(Arc::new(Mutex::new(d)))
        }
    };
    let behind = Arc::new(AtomicBool::new(false));
    let (d, b) = (direct.clone(), behind.clone());
    let spawned = std::thread::Builder::new()
        .name("coordinator-journal".into())
        .spawn(move || run(journal, durability, &rx, d.as_deref(), &b));
    if let Err(e) = spawned {
        error!(target: LOG_TARGET, "cannot start the journal thread: {e}");
    }
    Handle { tx, direct, behind }
}

/// Gives the serving thread its own handle on the journal's current file, or none (records
/// then go through the journal thread): never a handle on a file a rewrite has replaced.
fn share(journal: &Journal, d: &mut Direct) {
    d.file = None;
    match journal
        .clone_file()
        .and_then(|f| Ok((f.metadata()?.len(), f)))
    {
        Ok((len, f)) => {
            d.len = len;
            d.file = Some(f);
        }
        Err(e) => error!(target: LOG_TARGET,
            "cannot share the journal file ({e}); records go through the journal thread"),
    }
}

/// A record could not be written: logged once, and no record is written until a rewrite.
fn fell_behind(behind: &AtomicBool, e: &std::io::Error) {
    if !behind.swap(true, Ordering::SeqCst) {
        error!(target: LOG_TARGET,
            "Journal append failed ({e}); changes are kept in memory only until the journal is rewritten");
    }
}

fn run(
    mut journal: Journal,
    durability: Durability,
    rx: &Receiver<JournalCmd>,
    direct: Option<&Mutex<Direct>>,
    behind: &AtomicBool,
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
                    append(&mut journal, &body, behind);
                    waiting.extend(done);
                    dirty_since.get_or_insert_with(Instant::now);
                }
                JournalCmd::Dirty(at) => {
                    dirty_since.get_or_insert(at);
                }
                JournalCmd::Rewrite(bodies) => {
                    match journal.rewrite(bodies.iter().map(|b| &b[..])) {
                        Ok(()) => {
                            if behind.swap(false, Ordering::SeqCst) {
                                info!(target: LOG_TARGET,
                                    "Journal rewritten from the live groups; changes are journaled again");
                            }
                        }
                        Err(e) if behind.load(Ordering::SeqCst) => error!(target: LOG_TARGET,
                            "Journal rewrite failed ({e}); changes are still kept in memory only"),
                        Err(e) => error!(target: LOG_TARGET, "Journal compaction failed: {e}"),
                    }
                    // The rewrite synced everything it holds, but perhaps not its rename.
                    dirty_since = journal.dir_unsynced().then(Instant::now);
                    if let Some(d) = direct {
                        resume_direct(&mut journal, rx, d, &mut waiting, &mut dirty_since, behind);
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
    behind: &AtomicBool,
) {
    let mut d = lock(direct);
    while let Ok(cmd) = rx.try_recv() {
        match cmd {
            JournalCmd::Append(body, done) => {
                append(journal, &body, behind);
                waiting.extend(done);
                dirty_since.get_or_insert_with(Instant::now);
            }
            // Writes to the replaced file: what is live of them is in the new one, synced.
            JournalCmd::Dirty(_) => {}
            // Not sent while a compaction runs.
            JournalCmd::Rewrite(_) => {}
        }
    }
    // The old handle may be on the replaced file: shared anew, or dropped.
    share(journal, &mut d);
    d.compacting = false;
    d.dirty = dirty_since.is_some();
}

/// The journal thread's append; skipped while the journal is behind (see [`fell_behind`]).
fn append(journal: &mut Journal, body: &[u8], behind: &AtomicBool) {
    if behind.load(Ordering::SeqCst) {
        return;
    }
    if let Err(e) = journal.append(body) {
        fell_behind(behind, &e);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::multinode::server::store::{Faults, decode_records};

    fn body(s: &str) -> Arc<[u8]> {
        Arc::from(s.as_bytes())
    }

    fn wait(done: Option<oneshot::Receiver<()>>) {
        if let Some(rx) = done {
            rx.blocking_recv().unwrap();
        }
    }

    /// In `process` durability: appends a and b, arms a fault, compacts to [a, b], appends c
    /// (queued while the compaction runs) and d, and returns the records in the file at the
    /// journal's path (what a restart would read).
    fn compact_with(arm: impl FnOnce(&Faults)) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path()).unwrap();
        let path = journal.path();
        let faults = journal.faults.clone();
        let h = spawn(journal, Durability::Process);
        assert!(h.append(body("a")).is_none(), "written directly");
        wait(h.append(body("b")));
        arm(&faults);
        h.compact(vec![body("a"), body("b")]);
        wait(h.append(body("c")));
        wait(h.append(body("d")));
        let (records, _) = decode_records(&std::fs::read(&path).unwrap());
        records
            .into_iter()
            .map(|r| String::from_utf8(r).unwrap())
            .collect()
    }

    #[test]
    fn records_after_a_compaction_whose_directory_sync_failed_reach_the_journal() {
        let on_disk = compact_with(|f| f.dir_sync.store(true, Ordering::SeqCst));
        assert_eq!(on_disk, ["a", "b", "c", "d"]);
    }

    #[test]
    fn records_after_a_compaction_reach_the_journal_when_the_file_cannot_be_shared() {
        let on_disk = compact_with(|f| f.clone.store(true, Ordering::SeqCst));
        assert_eq!(on_disk, ["a", "b", "c", "d"]);
    }
}
