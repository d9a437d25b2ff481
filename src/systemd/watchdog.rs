//! The service watchdog: systemd sets `WATCHDOG_USEC` (and `WATCHDOG_PID`) from `WatchdogSec=`
//! and kills the service when no `WATCHDOG=1` arrives in time. The pings are sent from the
//! daemon's main loop (never from a free-running timer task), so they stop when that loop hangs.

use std::time::{Duration, Instant};

use super::notify::{Notifier, NotifyError};

/// The watchdog interval from the values of `WATCHDOG_USEC` and `WATCHDOG_PID`, for process
/// `pid`: `None` when unset, malformed, zero, or meant for another process.
pub fn watchdog_interval_from(
    usec: Option<&str>,
    pid: Option<&str>,
    my_pid: u32,
) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    if let Some(p) = pid {
        let p: u32 = p.trim().parse().ok()?;
        if p != my_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

/// The watchdog interval systemd gave this process, if any.
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

/// Sends `WATCHDOG=1` at most every half interval (as sd_watchdog_enabled(3) recommends), when
/// ticked by the main loop.
#[derive(Debug)]
pub struct Watchdog {
    notifier: Notifier,
    interval: Duration,
    last: Option<Instant>,
}

/// Timer period for a daemon without a watchdog (the branch never does anything useful).
const IDLE: Duration = Duration::from_secs(3600);

impl Watchdog {
    pub fn new(notifier: Notifier, interval: Duration) -> Self {
        Self {
            notifier,
            interval,
            last: None,
        }
    }

    /// A watchdog when systemd asked for one and is listening.
    pub fn from_env(notifier: &Notifier) -> Option<Self> {
        if !notifier.is_enabled() {
            return None;
        }
        watchdog_interval().map(|i| Self::new(notifier.clone(), i))
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// How often the main loop should call [`Self::tick`]: half the interval.
    pub fn period(&self) -> Duration {
        self.interval / 2
    }

    /// [`Self::period`], or a long idle period when there is no watchdog.
    pub fn period_or_idle(w: Option<&Self>) -> Duration {
        w.map_or(IDLE, Self::period)
    }

    /// Called from the main loop: pings if a period has passed since the last ping. Returns
    /// whether it pinged.
    pub fn tick(&mut self) -> Result<bool, NotifyError> {
        let now = Instant::now();
        // A little slack so a timer firing exactly on the period is not skipped.
        let due = self
            .last
            .is_none_or(|l| now.duration_since(l) + self.period() / 10 >= self.period());
        if !due {
            return Ok(false);
        }
        self.notifier.watchdog()?;
        self.last = Some(now);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_from_environment_values() {
        let me = 4242;
        assert_eq!(
            watchdog_interval_from(Some("30000000"), None, me),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("4242"), me),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("1"), me),
            None
        );
        assert_eq!(watchdog_interval_from(Some("0"), None, me), None);
        assert_eq!(watchdog_interval_from(Some("soon"), None, me), None);
        assert_eq!(watchdog_interval_from(Some("1000"), Some("x"), me), None);
        assert_eq!(watchdog_interval_from(None, Some("4242"), me), None);
    }
}
