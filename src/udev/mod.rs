//! Stable device names and discovery: adapter identity from udev properties, matching against
//! `[device.usb]`, rule generation, and the hotplug tracker that tells the console layer where a
//! board's adapter is now.
//!
//! Never opens a tty: it only says "device X is now at /dev/ttyUSBn (or gone)".

pub mod config;
pub mod discovery;
pub mod event;
pub mod identity;
pub mod live;
pub mod metrics;
pub mod pathwatch;
pub mod props;
pub mod report;
pub mod rules;
pub mod tracker;

pub use discovery::{DeviceNode, Discovery, DiscoveryConfig, Mode, Started};
pub use event::{Action, UdevEvent};
pub use identity::AdapterIdentity;
pub use props::{DumpError, PropertyRecord, parse_dump};
pub use tracker::{AssumeAlive, Liveness, NodeChange, SysfsLiveness, Target, Tracker};

use std::path::PathBuf;

/// Errors of the udev domain, with what an admin needs to act on them.
#[derive(Debug, thiserror::Error)]
pub enum UdevError {
    #[error("cannot write udev rules {path}: {source}")]
    WriteRules {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Udevadm {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("libudev: {context}: {source}")]
    Libudev {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the {what} thread: {source}")]
    Thread {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}
