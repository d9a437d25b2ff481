//! The inventory: one TOML file that describes the worker, its boards and its PDUs.
//!
//! Owns parsing and cross-device validation; each domain (console, udev, power, images, jobs,
//! master, multinode, metrics) owns the types of its own section and adds its own checks through
//! a `validate` hook, so the whole file is checked before labd starts anything. Every problem is
//! reported with file, line, column and key.

mod diag;
mod units;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

pub use diag::{Diagnostic, Diagnostics, InventoryError, SourceMap};
pub use units::{ByteSize, DurationValue};

use crate::console::config::{ConsoleConfig, JournalConfig};
use crate::ids::{DeviceName, WorkerName};

/// `[worker]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    pub name: WorkerName,
    /// Journals, the control socket and job data live here.
    pub state_dir: PathBuf,
    /// Group that owns the control socket (mode 0660), so operators in it can attach.
    pub socket_group: Option<String>,
    /// Default bind address of console telnet listeners (loopback unless set).
    pub listen_address: Option<IpAddr>,
    #[serde(default)]
    pub journal: JournalConfig,
}

impl WorkerConfig {
    pub fn listen_address(&self) -> IpAddr {
        self.listen_address
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// The daemon's control socket; `labd console`, `labd power` and friends connect here.
    pub fn control_socket(&self) -> PathBuf {
        self.state_dir.join("labd.sock")
    }

    pub fn journal_dir(&self) -> PathBuf {
        self.state_dir.join("journal")
    }
}

/// `[[device]]`: one board wired to this worker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    pub name: Spanned<DeviceName>,
    pub device_type: Spanned<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub console: Option<ConsoleConfig>,
    /// How udev recognises the board's USB-serial adapter.
    pub usb: Option<crate::udev::config::UsbMatch>,
    /// Export of the board's UART through ser2net (`labd ser2net-config`).
    pub ser2net: Option<crate::ser2net::config::Ser2netExport>,
    /// How the board is powered.
    pub power: Option<crate::power::config::DevicePower>,
    /// Boot settings for jobs run with `labd run-job` (bootloader, prompts, qemu).
    pub boot: Option<crate::jobs::config::DeviceBoot>,
}

impl DeviceConfig {
    pub fn name(&self) -> &DeviceName {
        self.name.get_ref()
    }

    pub fn device_type(&self) -> &str {
        self.device_type.get_ref()
    }
}

/// The file as parsed, before validation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct InventoryFile {
    worker: WorkerConfig,
    metrics: Option<crate::metrics::config::MetricsConfig>,
    images: Option<crate::images::config::ImagesConfig>,
    power: Option<crate::power::config::PowerSettings>,
    coordinator: Option<crate::multinode::config::CoordinatorConfig>,
    master: Option<crate::master::config::MasterConfig>,
    #[serde(default, rename = "pdu")]
    pdus: Vec<crate::power::config::PduConfig>,
    #[serde(default, rename = "device")]
    devices: Vec<DeviceConfig>,
}

/// A validated inventory. It keeps its source so later checks can still point at lines.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub source: SourceMap,
    pub worker: WorkerConfig,
    pub metrics: Option<crate::metrics::config::MetricsConfig>,
    pub images: Option<crate::images::config::ImagesConfig>,
    pub power: Option<crate::power::config::PowerSettings>,
    pub coordinator: Option<crate::multinode::config::CoordinatorConfig>,
    pub master: Option<crate::master::config::MasterConfig>,
    pub pdus: Vec<crate::power::config::PduConfig>,
    pub devices: Vec<DeviceConfig>,
}

impl Inventory {
    /// Reads and validates the inventory at `path`.
    pub fn load(path: &Path) -> Result<Self, InventoryError> {
        let text = std::fs::read_to_string(path).map_err(|source| InventoryError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates inventory text; `path` is only used in diagnostics.
    pub fn parse(path: &Path, text: &str) -> Result<Self, InventoryError> {
        let source = SourceMap::new(path, text);
        let file: InventoryFile = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let (line, _) = source.line_col(span.start);
            let key = source.key_on_line(line).unwrap_or_default();
            InventoryError::Invalid(vec![source.diag(span, key, e.message().trim())])
        })?;
        let inv = Inventory {
            source,
            worker: file.worker,
            metrics: file.metrics,
            images: file.images,
            power: file.power,
            coordinator: file.coordinator,
            master: file.master,
            pdus: file.pdus,
            devices: file.devices,
        };
        let mut diags = Diagnostics::default();
        inv.validate(&mut diags);
        if diags.is_empty() {
            Ok(inv)
        } else {
            Err(InventoryError::Invalid(diags.into_vec()))
        }
    }

    fn validate(&self, diags: &mut Diagnostics) {
        let mut seen: Vec<&Spanned<DeviceName>> = Vec::new();
        for dev in &self.devices {
            if let Some(first) = seen.iter().find(|n| n.get_ref() == dev.name.get_ref()) {
                let (line, _) = self.source.line_col(first.span().start);
                diags.push(self.source.diag(
                    dev.name.span(),
                    "device.name",
                    format!(
                        "duplicate device name {:?} (first defined on line {line})",
                        dev.name.get_ref().as_str()
                    ),
                ));
            }
            seen.push(&dev.name);
            if dev.device_type.get_ref().trim().is_empty() {
                diags.push(self.source.diag(
                    dev.device_type.span(),
                    "device.device_type",
                    "device_type must not be empty",
                ));
            }
        }
        if !self.worker.state_dir.is_absolute() {
            diags.push(self.source.diag(
                0..0,
                "worker.state_dir",
                format!(
                    "state_dir {:?} must be an absolute path",
                    self.worker.state_dir
                ),
            ));
        }
        crate::console::config::validate(self, diags);
        crate::udev::config::validate(self, diags);
        crate::ser2net::config::validate(self, diags);
        crate::power::config::validate(self, diags);
        crate::images::config::validate(self, diags);
        crate::jobs::config::validate(self, diags);
        crate::master::config::validate(self, diags);
        crate::multinode::config::validate(self, diags);
        crate::metrics::config::validate(self, diags);
    }

    pub fn device(&self, name: &str) -> Option<&DeviceConfig> {
        self.devices
            .iter()
            .find(|d| d.name.get_ref().as_str() == name)
    }
}

/// The fuzzing entry point: arbitrary bytes as an inventory never panic, and every diagnostic
/// renders (line and column lookups stay inside the text, whatever the spans).
pub fn fuzz_inventory(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Inventory::parse(Path::new("fuzz.toml"), text) {
        let _ = e.to_string();
    }
}

#[cfg(test)]
mod tests;
