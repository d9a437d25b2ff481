//! LAVA job formats: the parts of running a LAVA V2 job that do not touch hardware.
//!
//! - [`model`]: job definitions as a server sends them, parsed and validated;
//! - [`device`]: the device configuration a server renders from a device dictionary;
//! - [`config`]: the `[device.boot]` inventory section (the same facts for `labd run-job`);
//! - [`log`]: LAVA's log line format (writer, parser, target-line logger);
//! - [`shell`]: the DUT-side test-shell helpers, generated `run.sh`, and console delivery;
//! - [`signals`]: test-shell signals, interactive tests and monitors → results;
//! - [`patterns`]: boot failure patterns (bootloaders, kernel, login);
//! - [`expect`]: pexpect-compatible waiting on console streams;
//! - [`error`]: LAVA's error types.
//!
//! The runner ([`runner`], [`actions`]) composes these with the console, power and images
//! modules: [`runner::run_job`] runs a job on a board; [`executor`] runs master jobs,
//! [`service`] `labd run-job` requests in the daemon.

pub mod actions;
pub mod config;
pub mod device;
pub mod error;
pub mod expect;
pub mod log;
pub mod metrics;
pub mod model;
pub mod patterns;
pub mod runner;
pub mod shell;
pub mod signals;

pub use error::{JobsError, LavaError, LavaErrorType};
pub use model::{DefinitionError, JobDefinition};
