//! Multi-Node: everything a LAVA Multi-Node group needs besides the boards.
//!
//! - [`protocol`]: the lava-coordinator wire format (8 hex digits + JSON), byte for byte.
//! - [`pyjson`]: JSON as Python reads and writes it, so frames and replies match LAVA's exactly.
//! - [`server`]: `labd coordinator`, a concurrent, crash-safe drop-in for lava-coordinator.
//! - [`client`]: what a job uses to register its group and send/wait/sync, with LAVA's poll
//!   semantics and timeouts.
//! - [`dut`]: the DUT side: the `lava-send`/`lava-wait`/... helper scripts and the console
//!   requests they print, turned into coordinator calls and console replies.
//! - [`config`]: where the coordinator is (inventory `[coordinator]`, lava-coordinator.conf).
//!
//! Nothing here touches a board: the job runner wires [`dut`] to the console.

pub mod client;
pub mod config;
pub mod dut;
pub mod error;
#[doc(hidden)]
pub mod fuzz;
pub mod group;
pub mod protocol;
pub mod pyjson;
pub mod server;

pub use client::{CoordinatorClient, NodeIdentity};
pub use config::{ClientSettings, CoordinatorConfig};
pub use error::CoordinatorError;
