//! The one thread that writes every device's journal batches.
//!
//! A thread per device woke once per batch window each (64 streaming consoles: 640 context
//! switches a second, a third of the agent's CPU); one thread for all of them wakes once per
//! window in total. Appends never wait for it: they wake it only when it sleeps with nothing
//! pending anywhere, or when a batch is urgent (a flush, a stop, a large backlog).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use super::{BATCH_WINDOW, RETRY_TOTAL, RetryBudget, Shared, Writer};

/// A device's journal as the writer thread holds it.
pub(super) struct Entry {
    pub(super) shared: Arc<Shared>,
    pub(super) writer: Writer,
}

#[derive(Default)]
struct PoolState {
    /// An append found the thread idle, or something is urgent: look at every device.
    pending: bool,
    /// Write at once, without waiting for the batch window.
    urgent: bool,
    /// Journals opened since the thread last looked.
    incoming: Vec<Entry>,
}

pub(super) struct Pool {
    state: Mutex<PoolState>,
    cond: Condvar,
    /// The thread sleeps until woken (nothing was pending at its last look).
    idle: AtomicBool,
    /// The thread has ended (it panicked): journals must not wait for it.
    dead: AtomicBool,
}

impl Pool {
    /// The process-wide pool; its thread starts with the first journal.
    pub(super) fn get() -> std::io::Result<&'static Pool> {
        static POOL: OnceLock<Pool> = OnceLock::new();
        static STARTED: OnceLock<std::io::Result<()>> = OnceLock::new();
        let pool = POOL.get_or_init(|| Pool {
            state: Mutex::new(PoolState::default()),
            cond: Condvar::new(),
            idle: AtomicBool::new(false),
            dead: AtomicBool::new(false),
        });
        let started = STARTED.get_or_init(|| {
            std::thread::Builder::new()
                .name("journal".into())
                .spawn(move || {
                    let guard = DeadOnDrop(pool);
                    pool.run();
                    drop(guard);
                })
                .map(drop)
        });
        match started {
            Ok(()) => Ok(pool),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn add(&self, entry: Entry) {
        let mut ps = self.lock();
        ps.incoming.push(entry);
        ps.pending = true;
        self.cond.notify_one();
    }

    /// After an append that made a device's buffer non-empty: wake the thread if it sleeps.
    /// Call without holding the device's lock.
    pub(super) fn appended(&self) {
        if self.idle.load(Ordering::SeqCst) {
            self.wake(false);
        }
    }

    /// Wakes the thread; `urgent` skips the batch window.
    pub(super) fn wake(&self, urgent: bool) {
        let mut ps = self.lock();
        ps.pending = true;
        ps.urgent |= urgent;
        self.cond.notify_one();
    }

    pub(super) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    fn run(&self) {
        let mut entries: Vec<Entry> = Vec::new();
        let mut streaming = false;
        let mut budget = RetryBudget::new(RETRY_TOTAL);
        // The earliest time a journal wants its refused data retried.
        let mut next_retry: Option<Instant> = None;
        loop {
            {
                if !streaming {
                    // Announce the sleep before the last look at the devices: an append after
                    // that look sees `idle` and wakes us (the device lock orders the two).
                    self.idle.store(true, Ordering::SeqCst);
                    let waiting = entries.iter().any(|e| {
                        let st = e.shared.lock();
                        !st.buf.is_empty() || st.urgent()
                    });
                    let mut ps = self.lock();
                    while !waiting && !ps.pending {
                        match next_retry {
                            None => ps = self.cond.wait(ps).unwrap_or_else(|p| p.into_inner()),
                            Some(t) => {
                                let now = Instant::now();
                                if now >= t {
                                    break;
                                }
                                ps = self
                                    .cond
                                    .wait_timeout(ps, t - now)
                                    .unwrap_or_else(|p| p.into_inner())
                                    .0;
                            }
                        }
                    }
                    self.idle.store(false, Ordering::SeqCst);
                    drop(ps);
                }
                // Let a batch window accumulate unless something is urgent.
                let deadline = Instant::now() + BATCH_WINDOW;
                let mut ps = self.lock();
                loop {
                    let now = Instant::now();
                    if ps.urgent || now >= deadline {
                        break;
                    }
                    ps = self
                        .cond
                        .wait_timeout(ps, deadline - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                ps.pending = false;
                ps.urgent = false;
                entries.append(&mut ps.incoming);
            }
            streaming = false;
            next_retry = None;
            entries.retain_mut(|e| {
                let pass = e.writer.write_pending(&e.shared, &mut budget);
                streaming |= pass.wrote;
                if let Some(t) = pass.retry_at {
                    next_retry = Some(next_retry.map_or(t, |n| n.min(t)));
                }
                !pass.done
            });
        }
    }
}

/// Marks the pool dead if its thread ends (it only ends by panicking) and wakes every journal
/// waiting for it.
struct DeadOnDrop(&'static Pool);

impl Drop for DeadOnDrop {
    fn drop(&mut self) {
        self.0.dead.store(true, Ordering::SeqCst);
        tracing::error!("the console journal writer thread ended; journals stop being written");
    }
}
