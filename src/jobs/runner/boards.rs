//! The runner's edge to the worker's board reservations. In the daemon every job holds its
//! board for its whole run (a `run-job` request, a master job, each sub-job of a Multi-Node
//! group), so two jobs never share a board and a group never starts on a board in use.
//! `multinode::group::reserve::Reservations` implements it.

use crate::console::source::BoxFut;
use crate::ids::DeviceName;

/// A held board; dropping it releases the board.
pub type BoardHold = Box<dyn Send + Sync>;

/// Called once when a hold has to wait, with what it waits for.
pub type OnWait<'a> = Box<dyn FnOnce(String) + Send + 'a>;

/// Reserves boards for single jobs.
pub trait BoardLocks: Send + Sync {
    /// Waits (first come, first served with the other waiters for the same board) until
    /// `device` is free, then holds it for `holder` (`job 77`, shown to whoever waits behind)
    /// until the returned value is dropped. Dropping the future gives up the wait.
    fn hold<'a>(
        &'a self,
        holder: String,
        device: DeviceName,
        on_wait: OnWait<'a>,
    ) -> BoxFut<'a, BoardHold>;
}
