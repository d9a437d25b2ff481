//! The journal thread: it owns the journal file, appends the records the state machine queues
//! (in state order), answers each request once its record is durable enough (see
//! [`Durability`]), syncs, and rewrites the file when asked to compact it.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::error;

use super::store::Journal;
use super::{Durability, LOG_TARGET};

/// Longest time a written record waits for its fdatasync in [`Durability::Process`] mode.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(50);

pub(super) enum JournalCmd {
    /// A record, and who waits for it.
    Append(Arc<[u8]>, Option<oneshot::Sender<()>>),
    /// Replace the journal with these records (compaction).
    Rewrite(Vec<Arc<[u8]>>),
}

pub(super) fn spawn(journal: Journal, durability: Durability) -> Sender<JournalCmd> {
    let (tx, rx) = std::sync::mpsc::channel::<JournalCmd>();
    let spawned = std::thread::Builder::new()
        .name("coordinator-journal".into())
        .spawn(move || run(journal, durability, &rx));
    if let Err(e) = spawned {
        error!(target: LOG_TARGET, "cannot start the journal thread: {e}");
    }
    tx
}

fn run(mut journal: Journal, durability: Durability, rx: &Receiver<JournalCmd>) {
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
                        sync(&mut journal);
                        dirty_since = None;
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        sync(&mut journal);
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
                    if let Err(e) = journal.append(&body) {
                        error!(target: LOG_TARGET,
                            "Journal append failed ({e}); this change will not survive a restart");
                    }
                    waiting.extend(done);
                    dirty_since.get_or_insert_with(Instant::now);
                }
                JournalCmd::Rewrite(bodies) => {
                    if let Err(e) = journal.rewrite(bodies.iter().map(|b| &b[..])) {
                        error!(target: LOG_TARGET, "Journal compaction failed: {e}");
                    }
                    // The rewrite synced everything it holds.
                    dirty_since = None;
                }
            }
        }
        let must_sync = match durability {
            Durability::Power => true,
            Durability::Process => dirty_since.is_some_and(|t| t.elapsed() >= SYNC_INTERVAL),
        };
        if must_sync && dirty_since.is_some() {
            sync(&mut journal);
            dirty_since = None;
        }
        for w in waiting {
            let _ = w.send(());
        }
    }
}

fn sync(journal: &mut Journal) {
    if let Err(e) = journal.sync() {
        error!(target: LOG_TARGET,
            "Journal sync failed ({e}); recent changes may not survive a power loss");
    }
}
