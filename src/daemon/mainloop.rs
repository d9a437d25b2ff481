//! The daemon's main loop: signals (SIGTERM/SIGINT stop, SIGHUP reloads) and systemd's notify
//! protocol. `READY=1` once the services are started and every console has made its first
//! attempt to open; `STATUS=` whenever the number of consoles online changes; `RELOADING=1` …
//! `READY=1` around a reload (which runs as its own task, so the loop keeps pinging);
//! `STOPPING=1` at shutdown; `WATCHDOG=1` from this loop only, so a hung loop stops the pings.

use std::time::Duration;

use tokio::task::JoinHandle;

use super::summary::Summary;
use super::{DaemonError, RunningDaemon, Services};
use crate::systemd::{Notifier, Watchdog};

/// How long `READY=1` waits for the consoles' first open attempts.
const SETTLE: Duration = Duration::from_secs(3);

/// The main loop with its systemd connection.
pub struct MainLoop {
    notifier: Notifier,
    watchdog: Option<Watchdog>,
}

impl MainLoop {
    /// Talks to the systemd named by `NOTIFY_SOCKET` / `WATCHDOG_USEC` (nothing when unset).
    pub fn from_env() -> Self {
        let notifier = Notifier::from_env();
        let watchdog = Watchdog::from_env(&notifier);
        Self::new(notifier, watchdog)
    }

    pub fn new(notifier: Notifier, watchdog: Option<Watchdog>) -> Self {
        Self { notifier, watchdog }
    }

    fn notify(&self, what: &str, r: Result<(), crate::systemd::NotifyError>) {
        if let Err(e) = r {
            tracing::warn!(error = %e, "sd_notify {what} failed");
        }
    }

    /// Runs `daemon` until SIGTERM/SIGINT or its shutdown token, then stops it.
    pub async fn run(mut self, daemon: RunningDaemon) -> Result<(), DaemonError> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
        let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;
        let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signal)?;
        let services = daemon.services().clone();
        settle(&services, SETTLE).await;
        let mut summary = Summary::of(&services);
        let mut shown = summary.to_string();
        self.notify("READY", self.notifier.ready(&shown));
        tracing::info!(status = %shown, "ready");
        let period = Watchdog::period_or_idle(self.watchdog.as_ref());
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reload: Option<JoinHandle<Result<(), DaemonError>>> = None;
        let mut reload_again = false;
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break; }
                _ = int.recv() => { tracing::info!("SIGINT: stopping"); break; }
                _ = hup.recv() => {
                    if reload.is_some() {
                        // One more once the running reload is done: the file changed again.
                        reload_again = true;
                    } else {
                        reload = Some(self.start_reload(&services));
                    }
                }
                r = async { match reload.as_mut() { Some(t) => t.await, None => std::future::pending().await } }, if reload.is_some() => {
                    reload = None;
                    let refused = !matches!(r, Ok(Ok(())));
                    summary = Summary::of(&services);
                    shown = summary.to_string();
                    let text = if refused {
                        format!("{summary} (reload refused: the inventory has errors, see the log)")
                    } else {
                        summary.to_string()
                    };
                    self.notify("READY", self.notifier.ready(&text));
                    if reload_again {
                        reload_again = false;
                        reload = Some(self.start_reload(&services));
                    }
                }
                _ = tick.tick() => {
                    if let Some(w) = &mut self.watchdog {
                        if let Err(e) = w.tick() {
                            tracing::warn!(error = %e, "watchdog ping failed");
                        }
                    }
                }
                s = summary.changed(&services) => {
                    summary = s;
                    // Only what systemd shows: a console added by a reload before the
                    // inventory count changes would otherwise repeat the same line.
                    let text = summary.to_string();
                    if text != shown {
                        tracing::info!(status = %text, "status");
                        self.notify("STATUS", self.notifier.status(&text));
                        shown = text;
                    }
                }
                _ = services.shutdown.cancelled() => break,
            }
        }
        self.notify("STOPPING", self.notifier.stopping());
        if let Some(r) = reload.take() {
            r.abort();
        }
        daemon.stop().await;
        Ok(())
    }

    fn start_reload(
        &self,
        services: &std::sync::Arc<Services>,
    ) -> JoinHandle<Result<(), DaemonError>> {
        tracing::info!("SIGHUP: reloading the inventory");
        self.notify("RELOADING", self.notifier.reloading());
        let s = services.clone();
        tokio::spawn(async move { s.reload().await })
    }
}

/// Waits (at most `limit`) until every console is online or has failed its first attempt, so
/// the first `STATUS=` tells the truth.
async fn settle(services: &Services, limit: Duration) {
    let wait = async {
        for h in services.consoles.handles() {
            let mut w = h.watch_status();
            let _ = w.wait_for(|s| s.online || s.last_error.is_some()).await;
        }
    };
    let _ = tokio::time::timeout(limit, wait).await;
}
