//! A board run by this process alone (`labd run-job` without a daemon, tests): its console
//! started in-process from the inventory (journaled like the daemon journals it), its power
//! through a [`PowerService`] of the inventory, images through a process-wide
//! [`ImageService`].

use std::sync::Arc;

use crate::console::{Console, ConsoleContext, ConsoleError, ConsoleRegistry, ConsoleSpec};
use crate::images::ImageService;
use crate::inventory::Inventory;
use crate::power::{PowerError, PowerService};

use super::{DeviceSetup, RunEnv, ServiceFetcher};

/// Why a board could not be set up for a job.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("no device {device:?} in the inventory (devices: {known})")]
    UnknownDevice { device: String, known: String },
    #[error("device {device}: cannot start its console: {source}")]
    Console {
        device: String,
        #[source]
        source: ConsoleError,
    },
    #[error("cannot start power control: {0}")]
    Power(#[from] PowerError),
    #[error("cannot start the images service: {0}")]
    Images(String),
    /// The daemon cannot give the board (no console running...).
    #[error("{0}")]
    Daemon(String),
}

/// One inventory device with its console running in this process.
pub struct LocalBoard {
    console: Option<Console>,
    pub setup: DeviceSetup,
    pub env: RunEnv,
}

impl LocalBoard {
    /// Starts the console of `device` and prepares the job environment. `power` replaces the
    /// inventory's power service (tests attach simulated PDUs); `images` shares a service.
    pub async fn start(
        inv: Arc<Inventory>,
        device: &str,
        power: Option<PowerService>,
        images: Option<ImageService>,
    ) -> Result<Self, SetupError> {
        let Some(dev) = inv.device(device) else {
            let known: Vec<&str> = inv.devices.iter().map(|d| d.name().as_str()).collect();
            return Err(SetupError::UnknownDevice {
                device: device.to_string(),
                known: known.join(", "),
            });
        };
        let power = match (power, &dev.power) {
            (Some(p), _) => Some(p),
            (None, Some(_)) => Some(PowerService::new(&inv)?),
            (None, None) => None,
        };
        let images = match images {
            Some(s) => s,
            None => {
                let settings = crate::images::ImageSettings::from_inventory(&inv)
                    .map_err(SetupError::Images)?;
                ImageService::new(settings)
                    .await
                    .map_err(|e| SetupError::Images(e.to_string()))?
            }
        };
        let registry = Arc::new(ConsoleRegistry::new());
        let console = match ConsoleSpec::from_device(dev) {
            Some(spec) => {
                let ctx = ConsoleContext::from_worker(&inv.worker);
                let c = Console::start(dev.name().clone(), spec, &ctx).map_err(|source| {
                    SetupError::Console {
                        device: device.to_string(),
                        source,
                    }
                })?;
                registry.insert(c.handle().clone(), None);
                Some(c)
            }
            None => None,
        };
        let setup = DeviceSetup::from_inventory(
            dev,
            console.as_ref().map(|c| c.handle().clone()),
            power.as_ref(),
        );
        let env = RunEnv {
            consoles: Some(registry),
            inventory: Some(inv.clone()),
            power,
            images: Some(Arc::new(ServiceFetcher::new(images))),
            multinode: None,
            dispatcher_ip: None,
        };
        Ok(Self {
            console,
            setup,
            env,
        })
    }

    /// Stops the console (its journal written and closed).
    pub async fn stop(mut self) {
        if let Some(c) = self.console.take() {
            c.stop().await;
        }
    }
}
