//! The boards of a group's sub-jobs: opened in this process (`LocalBoard`: the console started
//! here) or the daemon's (its console hub and power queue), and what a master board needs to
//! know to boot a slave board.

use std::sync::Arc;

use crate::ids::DeviceName;
use crate::images::ImageService;
use crate::inventory::Inventory;
use crate::jobs::runner::{DeviceSetup, LocalBoard, RunEnv, SetupError};

/// What a master board needs to boot a slave board, from the inventory: its name, console,
/// and how to switch it on (its PDU outlet, and the PDU's HTTP API when it has one).
pub fn slave_data(inv: &Inventory, device: &DeviceName) -> Vec<(String, String)> {
    let mut data = vec![("device".to_string(), device.as_str().to_string())];
    let Some(dev) = inv.device(device.as_str()) else {
        return data;
    };
    if let Some(tty) = dev.console.as_ref().and_then(|c| c.tty.as_ref()) {
        data.push(("console".into(), tty.get_ref().display().to_string()));
    }
    if let Some(p) = &dev.power {
        if let Some(pdu) = &p.pdu {
            data.push(("pdu".into(), pdu.get_ref().as_str().to_string()));
            let url = inv
                .pdus
                .iter()
                .find(|c| c.name.get_ref() == pdu.get_ref())
                .and_then(|c| c.url.as_ref());
            if let Some(url) = url {
                data.push(("pdu_url".into(), url.get_ref().clone()));
            }
        }
        if let Some(o) = &p.outlet {
            data.push(("outlet".into(), o.get_ref().0.clone()));
        }
    }
    data
}

/// A sub-job's board: started by this process, or the daemon's.
pub(super) enum Board {
    Local(LocalBoard),
    Daemon { env: RunEnv, setup: DeviceSetup },
}

impl Board {
    pub(super) async fn open(
        inv: &Arc<Inventory>,
        device: &DeviceName,
        opts: &super::run::GroupOptions,
        images: &Option<ImageService>,
    ) -> Result<Self, SetupError> {
        match &opts.daemon {
            Some(env) => {
                let setup = crate::jobs::runner::service::device_setup(env, device.as_str())
                    .map_err(SetupError::Daemon)?;
                Ok(Board::Daemon {
                    env: env.clone(),
                    setup,
                })
            }
            None => Ok(Board::Local(
                LocalBoard::start(
                    inv.clone(),
                    device.as_str(),
                    opts.power.clone(),
                    images.clone(),
                )
                .await?,
            )),
        }
    }

    pub(super) fn parts(&mut self) -> (&mut RunEnv, DeviceSetup) {
        match self {
            Board::Local(l) => (&mut l.env, l.setup.clone()),
            Board::Daemon { env, setup } => (env, setup.clone()),
        }
    }

    pub(super) async fn stop(self) {
        if let Board::Local(l) = self {
            l.stop().await;
        }
    }
}
