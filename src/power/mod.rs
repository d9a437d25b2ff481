//! Power control: the [`PowerDriver`] trait at the hardware edge and its drivers (command,
//! pdudaemon, snmp, netio, sim), the generic layer above them ([`PowerService`]: one queue per
//! PDU, retries with backoff and jitter, per-attempt timeout, read-back verification, health,
//! last known outlet states, metrics) and the pdudaemon-compatible listener.
//!
//! Invariants: requests to one PDU are strictly sequential, different PDUs run in parallel;
//! nothing here knows about jobs (a job passes an event sender to get its log lines).

pub mod config;
pub mod control;
pub mod driver;
pub mod drivers;
pub mod error;
mod exec;
pub mod listener;
mod metrics;
pub mod service;
pub mod settings;
pub mod snmp;

pub use driver::{DriverError, DriverErrorKind, OutletState, OutletTarget, PowerDriver};
pub use error::{PowerError, TargetName};
pub use service::{
    DevicePowerStatus, OutletStatus, PduStatus, PowerOp, PowerOutcome, PowerRequest, PowerService,
    PowerServiceBuilder, PowerStatus, UnitPool,
};
