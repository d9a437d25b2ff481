//! Following configured tty paths without udev: where no udev daemon runs (containers), or for
//! consoles that are not USB adapters. A path is present when it resolves to a character
//! device; it has *changed* when the link was recreated or now resolves to another node, even
//! if no poll ever saw it missing (the path-watching equivalent of a missed `remove`).

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::ids::DeviceName;

use super::tracker::NodeChange;

/// What identifies the node a path leads to at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// The resolved node (`/dev/pts/3`, `/dev/ttyUSB0`).
    pub node: PathBuf,
    /// Device number of the node.
    pub rdev: u64,
    /// Inode and change time of the path itself (the link when it is one): a recreated link
    /// differs even when it points at the same name.
    pub link_ino: u64,
    pub link_ctime: (i64, i64),
}

/// The fingerprint of `path`, or `None` when it does not lead to a character device.
pub fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let link = std::fs::symlink_metadata(path).ok()?;
    let node = std::fs::canonicalize(path).ok()?;
    let meta = std::fs::metadata(&node).ok()?;
    if !meta.file_type().is_char_device() {
        return None;
    }
    Some(Fingerprint {
        node,
        rdev: meta.rdev(),
        link_ino: link.ino(),
        link_ctime: (link.ctime(), link.ctime_nsec()),
    })
}

/// The watched paths and what was last announced for each.
#[derive(Debug, Default)]
pub struct PathWatch {
    watches: BTreeMap<DeviceName, (PathBuf, Option<Option<Fingerprint>>)>,
}

impl PathWatch {
    pub fn new(paths: Vec<(DeviceName, PathBuf)>) -> Self {
        Self {
            watches: paths.into_iter().map(|(d, p)| (d, (p, None))).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.watches.is_empty()
    }

    /// Replaces the watched paths; a device whose path is unchanged keeps its state.
    pub fn set_paths(&mut self, paths: Vec<(DeviceName, PathBuf)>) {
        let mut old = std::mem::take(&mut self.watches);
        for (d, p) in paths {
            let state = match old.remove(&d) {
                Some((old_path, state)) if old_path == p => state,
                _ => None,
            };
            self.watches.insert(d, (p, state));
        }
    }

    /// Checks every path; returns the changes since the last poll (every device on the first).
    pub fn poll(&mut self) -> Vec<NodeChange> {
        let mut changes = Vec::new();
        for (device, (path, last)) in &mut self.watches {
            let now = fingerprint(path);
            if last.as_ref() == Some(&now) {
                continue;
            }
            changes.push(NodeChange {
                device: device.clone(),
                node: now.as_ref().map(|f| f.node.clone()),
                adapter: None,
            });
            *last = Some(now);
        }
        changes
    }

    /// Devices watched and whether their path is present, for status.
    pub fn present(&self) -> impl Iterator<Item = (&DeviceName, Option<&Path>)> {
        self.watches.iter().map(|(d, (_, state))| {
            (
                d,
                state
                    .as_ref()
                    .and_then(|s| s.as_ref().map(|f| f.node.as_path())),
            )
        })
    }
}
