//! The runner's edge to the worker's board reservations. Every job holds its board for its
//! whole run (a `run-job` request, a master job, each sub-job of a Multi-Node group, a
//! `labd run-job` in its own process), so two jobs never share a board and a group never
//! starts on a board in use. `multinode::group::reserve::Reservations` implements it, within
//! one process and, with lock files ([`super::boardfiles`]), across processes.

use std::path::PathBuf;
use std::time::Duration;

use crate::console::source::BoxFut;
use crate::ids::DeviceName;

/// A held board; dropping it releases the board.
pub type BoardHold = Box<dyn Send + Sync>;

/// Called once when a hold has to wait, with what it waits for.
pub type OnWait<'a> = Box<dyn FnOnce(String) + Send + 'a>;

/// Why boards could not be held.
#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    /// The boards stayed busy for the whole wait; `detail` names them and their holders.
    #[error("not free within {}: {detail}", humantime::format_duration(*waited))]
    BusyTimeout { waited: Duration, detail: String },
    /// The boards can never be held (a request no board can serve).
    #[error("cannot be held: {0}")]
    Refused(String),
    /// A board's lock file cannot be created or locked.
    #[error("board lock file {}: {source}", path.display())]
    LockFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reserves boards for single jobs.
pub trait BoardLocks: Send + Sync {
    /// Waits (first come, first served with the other waiters of this process for the same
    /// board) until `device` is free, then holds it for `holder` (`job 77`, shown to whoever
    /// waits behind) until the returned value is dropped. Gives up after `patience` (`None`:
    /// no limit) with [`BoardError::BusyTimeout`]. Dropping the future gives up the wait.
    fn hold<'a>(
        &'a self,
        holder: String,
        device: DeviceName,
        patience: Option<Duration>,
        on_wait: OnWait<'a>,
    ) -> BoxFut<'a, Result<BoardHold, BoardError>>;

    /// [`Self::hold`] for a job the LAVA master scheduled: it waits for a board a job holds,
    /// but goes before local waiters (lava-server believes the board is free for it, and its
    /// Multi-Node siblings may be waiting for it already).
    fn hold_for_master<'a>(
        &'a self,
        holder: String,
        device: DeviceName,
        patience: Option<Duration>,
        on_wait: OnWait<'a>,
    ) -> BoxFut<'a, Result<BoardHold, BoardError>> {
        self.hold(holder, device, patience, on_wait)
    }
}
