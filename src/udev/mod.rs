//! Stable device names and discovery: adapter identity from udev properties, matching against
//! `[device.usb]`, rule generation, and the hotplug tracker that tells the console layer where a
//! board's adapter is now.
//!
//! Never opens a tty: it only says "device X is now at /dev/ttyUSBn (or gone)".

pub mod config;
pub mod event;
pub mod identity;
pub mod metrics;
pub mod props;
pub mod tracker;

pub use event::{Action, UdevEvent};
pub use identity::AdapterIdentity;
pub use props::{DumpError, PropertyRecord, parse_dump};
pub use tracker::{AssumeAlive, Liveness, NodeChange, SysfsLiveness, Target, Tracker};
