//! The boards in use on this worker. The daemon owns one [`Reservations`] for every kind of
//! job (a master job, a single `run-job`, each Multi-Node group), so a board is used by one
//! job at a time and a group sees every busy board.
//!
//! Rules:
//! - a group takes all its boards at once or none: no partial holds, so two groups waiting
//!   for overlapping boards can never deadlock holding half each;
//! - waiters are served first come, first served among those that want the same boards: a
//!   waiter may not take a board an earlier waiter could use, so a big group is not starved by
//!   a stream of small jobs (waiters for unrelated boards go on at once);
//! - master jobs go before every local waiter ([`Priority::Master`]): lava-server believes the
//!   board is free for them, and a local group queued for it must not hold up a Multi-Node
//!   sub-job whose siblings already run;
//! - a group the inventory can never hold is refused before it waits;
//! - with lock files ([`Reservations::with_files`]: the daemon's and every `labd run-job` in
//!   its own process) a board is also locked for other processes, all of a group's boards or
//!   none: boards locked elsewhere are looked at again every [`FILE_POLL`] (there is no
//!   first come, first served across processes, only within one).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::GroupError;
use super::allocate::{Allocation, Candidate, Requirement, check_feasible, try_allocate};
use crate::console::source::BoxFut;
use crate::ids::DeviceName;
use crate::jobs::runner::boardfiles::{BoardFiles, FileHold, TryLock};
use crate::jobs::runner::boards::{BoardError, BoardHold, BoardLocks, OnWait};

/// How often a waiter looks again at boards locked by other processes (their release wakes
/// nobody in this one).
pub const FILE_POLL: Duration = Duration::from_millis(200);

/// The boards reserved on this worker and the waiters for boards; cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct Reservations {
    inner: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Woken when a board is released or a waiter gives up.
    changed: Notify,
    /// The worker's board lock files, when boards are also locked for other processes.
    files: Option<BoardFiles>,
}

#[derive(Debug, Default)]
struct State {
    /// Reserved boards and who holds them (`group 900`, `job 77`).
    taken: BTreeMap<DeviceName, String>,
    /// Waiters in arrival order.
    waiting: Vec<Waiter>,
    next_ticket: u64,
}

#[derive(Debug)]
struct Waiter {
    ticket: u64,
    /// A job the LAVA master scheduled: served before local waiters (see [`Priority`]).
    first: bool,
    holder: String,
    /// Every board that could serve one of its requirements.
    wanted: BTreeSet<DeviceName>,
}

/// Whom a waiter yields to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Local jobs (`labd run-job`, groups): first come, first served among themselves, after
    /// every master job.
    Local,
    /// A job the LAVA master scheduled: lava-server believes the board is free for it (and its
    /// Multi-Node siblings may already be waiting for it at a sync), so it goes before local
    /// waiters. It still waits for a board a job holds.
    Master,
}

impl Waiter {
    /// True when this waiter goes before one of `priority` with ticket `mine` (`None`: not
    /// queued yet, so after everyone of its class).
    fn is_ahead_of(&self, mine: Option<u64>, priority: Priority) -> bool {
        let first = priority == Priority::Master;
        (self.first && !first) || (self.first == first && mine.is_none_or(|t| self.ticket < t))
    }
}

/// A place in the queue; leaving it (served, timed out or dropped) wakes the others.
struct Queued {
    ticket: u64,
    owner: Reservations,
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.owner
            .lock()
            .waiting
            .retain(|w| w.ticket != self.ticket);
        self.owner.inner.changed.notify_waiters();
    }
}

impl Reservations {
    /// Reservations of this process only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reservations that also lock each board's file in `files` while it is held, and wait
    /// for boards whose file another process holds.
    pub fn with_files(files: BoardFiles) -> Self {
        Self {
            inner: Arc::new(Shared {
                files: Some(files),
                ..Shared::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when the board is reserved.
    pub fn is_taken(&self, name: &DeviceName) -> bool {
        self.lock().taken.contains_key(name)
    }

    /// Reserved boards and their holders (for `labd status`).
    pub fn holders(&self) -> Vec<(DeviceName, String)> {
        let st = self.lock();
        st.taken
            .iter()
            .map(|(d, h)| (d.clone(), h.clone()))
            .collect()
    }

    /// Who waits for boards, in arrival order.
    pub fn waiters(&self) -> Vec<String> {
        self.lock()
            .waiting
            .iter()
            .map(|w| w.holder.clone())
            .collect()
    }

    /// Reserves boards for the whole group (`reqs[i]` gets `allocation.devices[i]`) for
    /// `holder`: at once if they are free, else waits in the queue up to `patience` (`None`:
    /// until served or the future is dropped). `on_wait` is called once, when it first has to
    /// wait, with the boards it waits for. Refuses at once a group the boards can never hold.
    pub async fn acquire(
        &self,
        holder: &str,
        reqs: &[Requirement],
        boards: &[Candidate],
        patience: Option<Duration>,
        on_wait: impl FnOnce(String),
    ) -> Result<Reserved, GroupError> {
        self.acquire_with(holder, reqs, boards, patience, Priority::Local, on_wait)
            .await
    }

    /// [`Self::acquire`] with a place in the queue given by `priority`.
    pub async fn acquire_with(
        &self,
        holder: &str,
        reqs: &[Requirement],
        boards: &[Candidate],
        patience: Option<Duration>,
        priority: Priority,
        on_wait: impl FnOnce(String),
    ) -> Result<Reserved, GroupError> {
        check_feasible(reqs, boards)?;
        let wanted: BTreeSet<DeviceName> = boards
            .iter()
            .filter(|b| reqs.iter().any(|r| b.fits(r)))
            .map(|b| b.name.clone())
            .collect();
        let deadline = patience.and_then(|p| tokio::time::Instant::now().checked_add(p));
        let mut queued: Option<Queued> = None;
        let mut on_wait = Some(on_wait);
        // Boards whose lock file another process held at this look, with the holder.
        let mut outside: BTreeMap<DeviceName, String> = BTreeMap::new();
        loop {
            // Registered before looking, so a release between the look and the wait wakes us.
            let changed = self.inner.changed.notified();
            let (placed, detail) = {
                let mut st = self.lock();
                let mine = queued.as_ref().map(|q| q.ticket);
                let ahead: BTreeSet<&DeviceName> = st
                    .waiting
                    .iter()
                    .filter(|w| w.is_ahead_of(mine, priority))
                    .flat_map(|w| w.wanted.iter())
                    .collect();
                let placed = try_allocate(reqs, boards, |n| {
                    st.taken.contains_key(n) || ahead.contains(n) || outside.contains_key(n)
                })?;
                if let Some(allocation) = placed {
                    for d in &allocation.devices {
                        st.taken.insert(d.clone(), holder.to_string());
                    }
                    (Some(allocation), String::new())
                } else {
                    let detail = wait_detail(&st, &wanted, mine, priority, &outside);
                    if queued.is_none() {
                        let ticket = st.next_ticket;
                        st.next_ticket += 1;
                        st.waiting.push(Waiter {
                            ticket,
                            first: priority == Priority::Master,
                            holder: holder.to_string(),
                            wanted: wanted.clone(),
                        });
                        queued = Some(Queued {
                            ticket,
                            owner: self.clone(),
                        });
                    }
                    (None, detail)
                }
            };
            if let Some(allocation) = placed {
                // Held in this process from here: dropping `r` (an error, the future
                // dropped) gives the boards back.
                let mut r = Reserved {
                    allocation,
                    files: Vec::new(),
                    owner: self.clone(),
                    quiet: false,
                };
                match self.lock_files(&r.allocation.devices, holder).await {
                    Ok(TryLock::Held(files)) => {
                        r.files = files;
                        // Leaving the queue wakes those behind (boards we wanted but did not
                        // take).
                        drop(queued);
                        return Ok(r);
                    }
                    Ok(TryLock::Busy(busy)) => {
                        // Given back without waking the others: they look again at their next
                        // poll (a wake-up now would have two waiters for a board held
                        // elsewhere fail in turns without pause). Then place the group
                        // without the boards held elsewhere, or wait.
                        r.quiet = true;
                        drop(r);
                        outside.extend(busy);
                        continue;
                    }
                    Err(e) => return Err(GroupError::Boards(e)),
                }
            }
            if let Some(f) = on_wait.take() {
                f(detail.clone());
            }
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                return Err(GroupError::Boards(BoardError::BusyTimeout {
                    waited: patience.unwrap_or_default(),
                    detail,
                }));
            }
            // Boards held elsewhere are looked at again after the poll.
            let poll = self.inner.files.is_some();
            outside.clear();
            tokio::select! {
                _ = changed => {}
                _ = sleep_until_some(deadline) => {}
                _ = tokio::time::sleep(FILE_POLL), if poll => {}
            }
        }
    }

    /// Locks the boards' files too, when this worker has them.
    async fn lock_files(
        &self,
        devices: &[DeviceName],
        holder: &str,
    ) -> Result<TryLock, BoardError> {
        match &self.inner.files {
            None => Ok(TryLock::Held(Vec::new())),
            Some(f) => {
                f.try_lock_all_async(devices.to_vec(), holder.to_string())
                    .await
            }
        }
    }

    /// Holds one board for a single job, waiting up to `patience` (`None`: no limit) in the
    /// same queue as groups.
    pub async fn hold(
        &self,
        holder: &str,
        device: &DeviceName,
        patience: Option<Duration>,
        on_wait: impl FnOnce(String),
    ) -> Result<Reserved, BoardError> {
        self.hold_with(holder, device, patience, Priority::Local, on_wait)
            .await
    }

    /// [`Self::hold`] with a place in the queue given by `priority`.
    pub async fn hold_with(
        &self,
        holder: &str,
        device: &DeviceName,
        patience: Option<Duration>,
        priority: Priority,
        on_wait: impl FnOnce(String),
    ) -> Result<Reserved, BoardError> {
        // The board alone, with a requirement only it meets: always feasible.
        let board = Candidate {
            name: device.clone(),
            device_type: String::new(),
            tags: Vec::new(),
        };
        let req = Requirement {
            role: holder.to_string(),
            sub_id: 0,
            device_type: String::new(),
            tags: Vec::new(),
        };
        match self
            .acquire_with(holder, &[req], &[board], patience, priority, on_wait)
            .await
        {
            Ok(r) => Ok(r),
            Err(GroupError::Boards(e)) => Err(e),
            // Unreachable (one board, one requirement it meets).
            Err(e) => Err(BoardError::Refused(e.to_string())),
        }
    }
}

/// Sleeps until `deadline`, or for ever without one.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// What a waiter waits for: its boards held by others (in this process, else by another
/// process: `outside`), and earlier waiters for them.
fn wait_detail(
    st: &State,
    wanted: &BTreeSet<DeviceName>,
    mine: Option<u64>,
    priority: Priority,
    outside: &BTreeMap<DeviceName, String>,
) -> String {
    let busy: Vec<String> = wanted
        .iter()
        .filter_map(|d| {
            st.taken
                .get(d)
                .or_else(|| outside.get(d))
                .map(|h| format!("{d} ({h})"))
        })
        .collect();
    let ahead: Vec<&str> = st
        .waiting
        .iter()
        .filter(|w| w.is_ahead_of(mine, priority))
        .filter(|w| !w.wanted.is_disjoint(wanted))
        .map(|w| w.holder.as_str())
        .collect();
    let mut t = format!("busy: [{}]", busy.join(", "));
    if !ahead.is_empty() {
        t.push_str(&format!("; queued behind: [{}]", ahead.join(", ")));
    }
    t
}

impl BoardLocks for Reservations {
    fn hold<'a>(
        &'a self,
        holder: String,
        device: DeviceName,
        patience: Option<Duration>,
        on_wait: OnWait<'a>,
    ) -> BoxFut<'a, Result<BoardHold, BoardError>> {
        Box::pin(async move {
            let r = Reservations::hold(self, &holder, &device, patience, on_wait).await?;
            Ok(Box::new(r) as BoardHold)
        })
    }

    fn hold_for_master<'a>(
        &'a self,
        holder: String,
        device: DeviceName,
        patience: Option<Duration>,
        on_wait: OnWait<'a>,
    ) -> BoxFut<'a, Result<BoardHold, BoardError>> {
        Box::pin(async move {
            let r = self
                .hold_with(&holder, &device, patience, Priority::Master, on_wait)
                .await?;
            Ok(Box::new(r) as BoardHold)
        })
    }
}

/// Boards held for a group or a job; released (and waiters woken) on drop.
#[derive(Debug)]
pub struct Reserved {
    pub allocation: Allocation,
    /// The boards' lock files (empty without [`Reservations::with_files`]).
    files: Vec<FileHold>,
    owner: Reservations,
    /// Released without waking the waiters (see [`Reservations::acquire`]).
    quiet: bool,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        // The files first: a waiter of this process woken below finds them free.
        self.files.clear();
        let mut st = self.owner.lock();
        for d in &self.allocation.devices {
            st.taken.remove(d);
        }
        drop(st);
        if !self.quiet {
            self.owner.inner.changed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests;
