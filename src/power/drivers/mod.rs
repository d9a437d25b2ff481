//! PDU backends, one per file; each implements [`super::driver::PowerDriver`] and nothing more.

pub mod command;
pub mod http;
pub mod sim;
pub mod snmp;

use std::sync::Arc;

use super::driver::{DriverError, PowerDriver};
use super::settings::DriverSettings;

/// Builds the driver for resolved settings. A `sim` PDU without `url` needs an in-process
/// simulator, which only the caller can supply (`PowerService::builder().attach_sim`).
pub fn build(settings: &DriverSettings) -> Result<Arc<dyn PowerDriver>, DriverError> {
    Ok(match settings {
        DriverSettings::Command(c) => Arc::new(command::CommandDriver {
            on: c.on.clone(),
            off: c.off.clone(),
            reboot: c.reboot.clone(),
            state: c.state.clone(),
        }),
        DriverSettings::Pdudaemon { url, hostname } => {
            Arc::new(http::PdudaemonDriver::new(url, hostname)?)
        }
        DriverSettings::Snmp(s) => Arc::new(snmp::SnmpDriver::new(s.clone())),
        DriverSettings::Netio {
            url,
            username,
            password,
        } => Arc::new(http::NetioDriver::new(url, username, password)?),
        DriverSettings::Sim { url: Some(url) } => Arc::new(http::SimHttpDriver::new(url)?),
        DriverSettings::Sim { url: None } => {
            return Err(DriverError::new(
                super::driver::DriverErrorKind::Unsupported,
                "a sim PDU without `url` needs an in-process simulator attached",
            ));
        }
    })
}
