//! A udev event (or an enumerated device) in the form the tracker consumes, whether it came from
//! libudev or from a recorded dump.

use super::identity::AdapterIdentity;
use super::props::{PropertyRecord, RecordSource};

/// What happened to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Found by enumeration at start (no event, no sequence number).
    Present,
    Add,
    Change,
    Move,
    Bind,
    Unbind,
    Remove,
}

impl Action {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "add" => Self::Add,
            "change" => Self::Change,
            "move" => Self::Move,
            "bind" => Self::Bind,
            "unbind" => Self::Unbind,
            "remove" => Self::Remove,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Present => "present",
            Self::Add => "add",
            Self::Change => "change",
            Self::Move => "move",
            Self::Bind => "bind",
            Self::Unbind => "unbind",
            Self::Remove => "remove",
        }
    }
}

/// One event for the tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdevEvent {
    pub action: Action,
    /// udev's `SEQNUM` (the kernel uevent sequence number): strictly increasing per boot, so a
    /// lower number than one already seen for a device means the event is stale.
    pub seqnum: Option<u64>,
    /// For `move`: the device's previous path (`DEVPATH_OLD`).
    pub devpath_old: Option<String>,
    pub identity: AdapterIdentity,
}

/// Why a record is not an event the tracker can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("record at line {line} has no DEVPATH")]
    NoDevpath { line: usize },
    #[error("record at line {line} has an unknown ACTION {action:?}")]
    UnknownAction { line: usize, action: String },
    #[error("record at line {line} has a SEQNUM that is not a number: {seqnum:?}")]
    BadSeqnum { line: usize, seqnum: String },
    #[error(
        "record at line {line} is a KERNEL uevent; only UDEV records (after rule processing) carry the identity"
    )]
    KernelRecord { line: usize },
}

impl UdevEvent {
    /// The event a dump record describes; a database dump (no ACTION) is a present device.
    pub fn from_record(r: &PropertyRecord) -> Result<Self, EventError> {
        if r.source == RecordSource::Kernel {
            return Err(EventError::KernelRecord { line: r.line });
        }
        if r.get("DEVPATH").is_none_or(str::is_empty) {
            return Err(EventError::NoDevpath { line: r.line });
        }
        let action = match r.get("ACTION") {
            None => Action::Present,
            Some(a) => Action::parse(a).ok_or_else(|| EventError::UnknownAction {
                line: r.line,
                action: a.to_string(),
            })?,
        };
        let seqnum = match r.get("SEQNUM") {
            None => None,
            Some(s) => Some(s.parse().map_err(|_| EventError::BadSeqnum {
                line: r.line,
                seqnum: s.to_string(),
            })?),
        };
        Ok(Self {
            action,
            seqnum,
            devpath_old: r.get("DEVPATH_OLD").map(str::to_string),
            identity: AdapterIdentity::from_record(r),
        })
    }
}
