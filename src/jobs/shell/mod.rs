//! The lava-test-shell on the DUT: the helper scripts, the files of the overlay (`run.sh`,
//! `uuid`, `lava-test-runner.conf`, `environment`), and how to deliver them over a console.

mod delivery;
mod overlay;
mod scripts;

pub use delivery::{DeliveryError, DeliveryOptions, DeliveryPlan, plan_delivery};
pub use overlay::{
    OverlayFile, TestRunInfo, TestShellOverlay, environment_exports, run_sh, shlex_quote,
};
pub use scripts::{HELPERS, helper};
