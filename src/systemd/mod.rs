//! systemd integration: `sd_notify` (READY, STATUS, RELOADING, STOPPING, WATCHDOG) over
//! `NOTIFY_SOCKET`, and a watchdog fed from the daemon's main loop, so a hung loop stops the
//! pings and systemd restarts the service (`WatchdogSec=` in `systemd/labd.service`).
//!
//! How the daemon uses it:
//! ```no_run
//! # async fn daemon() {
//! use labd::systemd::{Notifier, Watchdog};
//! let notifier = Notifier::from_env();
//! let mut watchdog = Watchdog::from_env(&notifier);
//! // ... initial udev enumeration, consoles started ...
//! let _ = notifier.ready("9 devices, 7 online");
//! let mut tick = tokio::time::interval(Watchdog::period_or_idle(watchdog.as_ref()));
//! loop {
//!     tokio::select! {
//!         _ = tick.tick() => { if let Some(w) = &mut watchdog { let _ = w.tick(); } }
//!         // ... the daemon's other branches ...
//!     }
//! }
//! # }
//! ```

mod notify;
mod watchdog;

pub use notify::{Notifier, NotifyError};
pub use watchdog::{Watchdog, watchdog_interval, watchdog_interval_from};
