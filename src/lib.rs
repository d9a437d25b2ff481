//! labd: the agent that owns a board-farm worker's hardware and runs LAVA jobs on it.
//!
//! See ARCHITECTURE.md for the map. Each hardware concern is a module with a small trait at its
//! edge; the daemon and the job runner speak only to those traits.

pub mod cli;
pub mod console;
pub mod control;
pub mod daemon;
pub mod ids;
pub mod images;
pub mod inventory;
pub mod jobs;
pub mod master;
pub mod metrics;
pub mod multinode;
pub mod power;
pub mod ser2net;
pub mod systemd;
pub mod udev;
