//! The link to a LAVA master: lava-server 2023.01's worker HTTP API, spoken as lava-worker and
//! lava-run speak it (registration, ping, job fetch, RUNNING, log upload, FINISHED, cancel),
//! with an on-disk job table so neither a master outage nor a labd restart loses a result or a
//! log line.
//!
//! - `config`: the `[master]` inventory section.
//! - `wire`: form encoding and the parsers of the server's answers (fuzzed).
//! - `client`: one method per API call.
//! - `executor`: the [`JobExecutor`] trait the job runner implements.
//! - `store`, `logbuf`: the job table and each job's log buffer on disk.
//! - `jobtask`: per job: run, buffer and upload the log, record the outcome.
//! - `events`: lava-publisher's event websocket (ping at once when a job is scheduled).
//! - `link`: the worker loop, [`MasterLink::run`].
//!
//! This module never touches hardware: boards are the executor's business.

pub mod client;
pub mod config;
pub mod error;
pub mod events;
pub mod executor;
pub(crate) mod jobtask;
pub mod link;
pub mod logbuf;
pub mod metrics;
pub mod store;
pub mod wire;

pub use client::MasterClient;
pub use config::{MasterConfig, MasterSettings, TokenSource};
pub use error::MasterError;
pub use executor::{
    CANCELED_MESSAGE, JobExecutor, JobLogSink, JobOutcome, JobResult, MasterJob, OutcomeFuture,
    SinkReader,
};
pub use link::MasterLink;
pub use wire::{JobPayload, JobRef, PingAnswer};
