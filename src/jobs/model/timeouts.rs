//! Timeouts as LAVA writes them: `{minutes: 5}`, `{seconds: 40}`, with an optional `skip`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// `ACTION_TIMEOUT`: what LAVA uses when a timeout adds up to zero.
pub const DEFAULT_ACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// One timeout block. LAVA's schema allows one unit key; `Timeout.parse` adds up all of them,
/// and so does labd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawTimeout")]
pub struct Timeout {
    pub duration: Duration,
    /// `skip: true`: when this action block times out the job goes on with the next block.
    pub skip: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeout {
    days: Option<u64>,
    hours: Option<u64>,
    minutes: Option<u64>,
    seconds: Option<u64>,
    #[serde(default)]
    skip: bool,
}

impl TryFrom<RawTimeout> for Timeout {
    type Error = String;
    fn try_from(r: RawTimeout) -> Result<Self, String> {
        if r.days.is_none() && r.hours.is_none() && r.minutes.is_none() && r.seconds.is_none() {
            return Err("a timeout needs one of days, hours, minutes or seconds".into());
        }
        let secs = r
            .days
            .unwrap_or(0)
            .checked_mul(86_400)
            .and_then(|d| d.checked_add(r.hours.unwrap_or(0).checked_mul(3_600)?))
            .and_then(|d| d.checked_add(r.minutes.unwrap_or(0).checked_mul(60)?))
            .and_then(|d| d.checked_add(r.seconds.unwrap_or(0)))
            .ok_or("timeout is too large")?;
        let duration = if secs == 0 {
            DEFAULT_ACTION_TIMEOUT
        } else {
            Duration::from_secs(secs)
        };
        Ok(Timeout {
            duration,
            skip: r.skip,
        })
    }
}

impl Timeout {
    pub fn from_secs(secs: u64) -> Self {
        Self {
            duration: Duration::from_secs(secs),
            skip: false,
        }
    }

    pub fn secs(&self) -> u64 {
        self.duration.as_secs()
    }
}

impl fmt::Display for Timeout {
    /// LAVA's `seconds_to_str` form used in "start: 1 deployimages (timeout 00:02:00)".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&seconds_to_str(self.duration.as_secs_f64()))
    }
}

/// `lava_dispatcher.utils.strings.seconds_to_str`: `HH:MM:SS` of the rounded seconds.
pub fn seconds_to_str(secs: f64) -> String {
    let total = secs.max(0.0).round_ties_even() as u64;
    format!(
        "{:02}:{:02}:{:02}",
        total / 3600,
        (total % 3600) / 60,
        total % 60
    )
}

/// The job's top-level `timeouts:` block.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobTimeouts {
    pub job: Timeout,
    /// Default for every action.
    pub action: Option<Timeout>,
    /// Overrides by action name (`lava-test-shell`, `auto-login-action`, `u-boot-interrupt`...).
    #[serde(default)]
    pub actions: BTreeMap<String, Timeout>,
    /// Default for each wait on a connection.
    pub connection: Option<Timeout>,
    #[serde(default)]
    pub connections: BTreeMap<String, Timeout>,
    /// Accepted (a server-side queue timeout) and ignored.
    pub queue: Option<Timeout>,
}

impl JobTimeouts {
    /// The timeout of the action named `name`, resolved as lava-dispatcher's
    /// `Pipeline.add_action` does (each later source wins): the action's own `default`, the
    /// global `action` (job, else device), the per-name `actions` entry (job, else device), the
    /// action block's `timeout`, the block's per-name `timeouts` entry.
    pub fn action_timeout(
        &self,
        name: &str,
        default: Duration,
        block: Option<&Timeout>,
        block_overrides: Option<&BTreeMap<String, Timeout>>,
        device: Option<&crate::jobs::device::DeviceTimeouts>,
    ) -> Timeout {
        let mut t = Timeout {
            duration: default,
            skip: false,
        };
        if let Some(x) = self.action.or_else(|| device.and_then(|d| d.action)) {
            t = x;
        }
        if let Some(x) = self
            .actions
            .get(name)
            .or_else(|| device.and_then(|d| d.actions.get(name)))
        {
            t = *x;
        }
        if let Some(x) = block {
            t = *x;
        }
        if let Some(x) = block_overrides.and_then(|o| o.get(name)) {
            t = *x;
        }
        t
    }

    /// The per-wait timeout on a connection for action `name`: the action's `default`, the
    /// global `connection`, the per-name `connections` entry (job, else device, each).
    pub fn connection_timeout(
        &self,
        name: &str,
        default: Duration,
        device: Option<&crate::jobs::device::DeviceTimeouts>,
    ) -> Timeout {
        let mut t = Timeout {
            duration: default,
            skip: false,
        };
        if let Some(x) = self
            .connection
            .or_else(|| device.and_then(|d| d.connection))
        {
            t = x;
        }
        if let Some(x) = self
            .connections
            .get(name)
            .or_else(|| device.and_then(|d| d.connections.get(name)))
        {
            t = *x;
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_add_up() {
        let t: Timeout = serde_norway::from_str("{minutes: 2}").unwrap();
        assert_eq!(t.secs(), 120);
        let t: Timeout = serde_norway::from_str("{hours: 1, seconds: 5, skip: true}").unwrap();
        assert_eq!(t.secs(), 3605);
        assert!(t.skip);
        let t: Timeout = serde_norway::from_str("{seconds: 0}").unwrap();
        assert_eq!(t.secs(), 30);
        assert!(serde_norway::from_str::<Timeout>("{weeks: 1}").is_err());
        assert!(serde_norway::from_str::<Timeout>("{skip: true}").is_err());
        assert_eq!(seconds_to_str(33.4), "00:00:33");
        assert_eq!(seconds_to_str(171.0), "00:02:51");
        assert_eq!(seconds_to_str(32.5), "00:00:32");
    }
}
