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
mod tests {
    use super::*;

    fn board(name: &str, ty: &str) -> Candidate {
        Candidate {
            name: DeviceName::new(name).unwrap(),
            device_type: ty.into(),
            tags: Vec::new(),
        }
    }

    fn req(sub_id: u32, ty: &str) -> Requirement {
        Requirement {
            role: "r".into(),
            sub_id,
            device_type: ty.into(),
            tags: Vec::new(),
        }
    }

    const LONG: Option<Duration> = Some(Duration::from_secs(10));

    #[tokio::test]
    async fn waits_for_release_and_takes_all_at_once() {
        let boards = vec![board("bbb01", "bbb"), board("bbb02", "bbb")];
        let r = Reservations::new();
        let first = r
            .acquire("job 1", &[req(0, "bbb")], &boards, LONG, |_| {})
            .await
            .unwrap();
        assert!(r.is_taken(&first.allocation.devices[0]));
        let (r2, b2) = (r.clone(), boards.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let waiter = tokio::spawn(async move {
            r2.acquire("group 2", &[req(0, "bbb"), req(1, "bbb")], &b2, LONG, |d| {
                let _ = tx.send(d);
            })
            .await
            .map(|g| g.allocation.devices.len())
        });
        assert_eq!(rx.await.unwrap(), "busy: [bbb01 (job 1)]");
        // Nothing partial: the free board stays free while the group waits.
        assert!(!r.is_taken(&boards[1].name));
        assert_eq!(r.waiters(), ["group 2"]);
        drop(first);
        assert_eq!(waiter.await.unwrap().unwrap(), 2);
        assert!(boards.iter().all(|b| !r.is_taken(&b.name)));
        assert!(r.waiters().is_empty());
    }

    #[tokio::test]
    async fn a_timeout_names_the_busy_boards_and_leaves_the_queue() {
        let boards = vec![board("bbb01", "bbb")];
        let r = Reservations::new();
        let _held = r
            .hold("job 1", &boards[0].name, None, |_| {})
            .await
            .unwrap();
        let e = r
            .acquire(
                "group 2",
                &[req(0, "bbb")],
                &boards,
                Some(Duration::from_millis(30)),
                |_| {},
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("busy: [bbb01 (job 1)]"), "{e}");
        assert!(r.waiters().is_empty());
    }

    #[tokio::test]
    async fn later_waiters_do_not_overtake_earlier_ones_for_the_same_boards() {
        let boards = vec![board("a", "t"), board("b", "t"), board("c", "u")];
        let r = Reservations::new();
        let held_a = r
            .hold("job 1", &boards[0].name, None, |_| {})
            .await
            .unwrap();
        // A group wanting both `t` boards queues behind job 1.
        let (r2, b2) = (r.clone(), boards.clone());
        let group = tokio::spawn(async move {
            r2.acquire("group 2", &[req(0, "t"), req(1, "t")], &b2, LONG, |_| {})
                .await
                .unwrap()
        });
        while r.waiters().is_empty() {
            tokio::task::yield_now().await;
        }
        // A single job for the free `b` waits behind the group (which could use `b`)...
        let (r3, b) = (r.clone(), boards[1].name.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let single = tokio::spawn(async move {
            let h = r3
                .hold("job 3", &b, None, |d| {
                    let _ = tx.send(d);
                })
                .await
                .unwrap();
            drop(h);
        });
        assert_eq!(
            rx.await.unwrap(),
            "busy: []; queued behind: [group 2]".to_string()
        );
        // ...while one for an unrelated board goes on at once.
        let c = r
            .hold("job 4", &boards[2].name, None, |_| panic!("waited"))
            .await
            .unwrap();
        drop(c);
        drop(held_a);
        let g = group.await.unwrap();
        assert_eq!(g.allocation.devices.len(), 2);
        assert!(!single.is_finished());
        drop(g);
        single.await.unwrap();
        assert!(r.holders().is_empty());
    }

    #[tokio::test]
    async fn a_dropped_waiter_leaves_the_queue() {
        let boards = [board("a", "t")];
        let r = Reservations::new();
        let held = r
            .hold("job 1", &boards[0].name, None, |_| {})
            .await
            .unwrap();
        let r2 = r.clone();
        let b = boards[0].name.clone();
        let w = tokio::spawn(async move {
            let _ = r2.hold("job 2", &b, None, |_| {}).await;
        });
        while r.waiters().is_empty() {
            tokio::task::yield_now().await;
        }
        w.abort();
        let _ = w.await;
        assert!(r.waiters().is_empty());
        drop(held);
        assert!(r.holders().is_empty());
    }

    /// Two processes' reservations, as two instances over the same lock directory (another
    /// open file conflicts in this process as in another one).
    fn two_workers(dir: &std::path::Path) -> (Reservations, Reservations) {
        (
            Reservations::with_files(BoardFiles::for_state_dir(dir)),
            Reservations::with_files(BoardFiles::for_state_dir(dir)),
        )
    }

    #[tokio::test]
    async fn a_board_locked_by_another_process_is_waited_for_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let (p1, p2) = two_workers(dir.path());
        let boards = [board("a", "t")];
        let held = p1
            .hold("job 1", &boards[0].name, None, |_| {})
            .await
            .unwrap();
        let pid = std::process::id();
        let e = p2
            .hold(
                "job 2",
                &boards[0].name,
                Some(Duration::from_millis(300)),
                |_| {},
            )
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!("not free within 300ms: busy: [a (job 1 (pid {pid}))]")
        );
        assert!(p2.waiters().is_empty() && p2.holders().is_empty());
        let (p3, b) = (p2.clone(), boards[0].name.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let waiter = tokio::spawn(async move {
            p3.hold("job 3", &b, None, |d| {
                let _ = tx.send(d);
            })
            .await
            .map(|r| r.allocation.devices.len())
        });
        assert_eq!(rx.await.unwrap(), format!("busy: [a (job 1 (pid {pid}))]"));
        drop(held);
        assert_eq!(waiter.await.unwrap().unwrap(), 1);
    }

    #[tokio::test]
    async fn a_group_takes_a_free_board_of_its_type_or_none_while_others_lock_them() {
        let dir = tempfile::tempdir().unwrap();
        let (p1, p2) = two_workers(dir.path());
        let boards = vec![board("a", "t"), board("b", "t"), board("c", "u")];
        // The other process holds `a`: a group wanting one `t` goes to `b`.
        let a = p1
            .hold("job 1", &boards[0].name, None, |_| {})
            .await
            .unwrap();
        let g = p2
            .acquire("group 2", &[req(0, "t")], &boards, LONG, |_| {
                panic!("waited")
            })
            .await
            .unwrap();
        assert_eq!(g.allocation.devices, [boards[1].name.clone()]);
        drop(g);
        // A group wanting `c` and two `t`s waits, holding nothing, while `a` is held.
        let (p3, b3) = (p2.clone(), boards.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let group = tokio::spawn(async move {
            p3.acquire(
                "group 3",
                &[req(0, "t"), req(1, "t"), req(2, "u")],
                &b3,
                LONG,
                |d| {
                    let _ = tx.send(d);
                },
            )
            .await
            .map(|r| r.allocation.devices.len())
        });
        let pid = std::process::id();
        assert_eq!(rx.await.unwrap(), format!("busy: [a (job 1 (pid {pid}))]"));
        // Nothing partial: the first process can take `b` and `c` meanwhile (the group's
        // polls lock them only for an instant).
        for d in [&boards[1].name, &boards[2].name] {
            let h = p1
                .hold("job 4", d, Some(Duration::from_secs(5)), |_| {})
                .await
                .unwrap();
            drop(h);
        }
        drop(a);
        assert_eq!(group.await.unwrap().unwrap(), 3);
    }

    /// A master job is not held up by a local group waiting for a board the master job's
    /// sibling holds (the three would wait on each other), and on release it goes before
    /// local waiters.
    #[tokio::test]
    async fn master_jobs_go_before_local_waiters() {
        let boards = vec![board("a", "t"), board("b", "t")];
        let r = Reservations::new();
        let master_a = r
            .hold_with(
                "master job 1",
                &boards[0].name,
                None,
                Priority::Master,
                |_| {},
            )
            .await
            .unwrap();
        let (r2, b2) = (r.clone(), boards.clone());
        let group = tokio::spawn(async move {
            r2.acquire("group 2", &[req(0, "t"), req(1, "t")], &b2, LONG, |_| {})
                .await
                .unwrap()
        });
        while r.waiters().is_empty() {
            tokio::task::yield_now().await;
        }
        // The sibling's board is free: it is taken at once, the local group notwithstanding.
        let master_b = tokio::time::timeout(
            Duration::from_secs(5),
            r.hold_with(
                "master job 2",
                &boards[1].name,
                None,
                Priority::Master,
                |_| {},
            ),
        )
        .await
        .expect("a master job waited behind a local group")
        .unwrap();
        // A local single job queues for `a`, then a master job does: the master one is first.
        let (r3, a) = (r.clone(), boards[0].name.clone());
        let local = tokio::spawn(async move { r3.hold("job 3", &a, None, |_| {}).await.unwrap() });
        while r.waiters().len() < 2 {
            tokio::task::yield_now().await;
        }
        let (r4, a) = (r.clone(), boards[0].name.clone());
        let master = tokio::spawn(async move {
            r4.hold_with("master job 4", &a, None, Priority::Master, |_| {})
                .await
                .unwrap()
        });
        while r.waiters().len() < 3 {
            tokio::task::yield_now().await;
        }
        drop(master_a);
        let m4 = master.await.unwrap();
        assert_eq!(
            r.holders()[0],
            (boards[0].name.clone(), "master job 4".to_string())
        );
        assert!(!local.is_finished() && !group.is_finished());
        drop((m4, master_b));
        // Then the local waiters in their order: the group (earlier) before job 3.
        let g = group.await.unwrap();
        assert!(!local.is_finished());
        drop(g);
        drop(local.await.unwrap());
        assert!(r.waiters().is_empty());
    }
}
