//! Where the coordinator is and how to poll it.
//!
//! Two sources, as on a LAVA worker: the JSON file lava-coordinator and lava-dispatcher both
//! read (`/etc/lava-coordinator/lava-coordinator.conf`: `port`, `blocksize`, `poll_delay`,
//! `coordinator_hostname`), and the inventory's `[coordinator]` section, whose keys override it:
//!
//! ```toml
//! [coordinator]
//! conf_file = "/etc/lava-coordinator/lava-coordinator.conf"  # read first (default path)
//! host = "coord.lab"       # coordinator_hostname; if set without conf_file, no file is read
//! port = 3079
//! poll_delay = 1           # seconds between polls after "wait" ("500ms" allowed)
//! blocksize = 4096
//! io_timeout = "30s"       # cap on one connection attempt (LAVA 2023.01 has none)
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::error::CoordinatorError;
use super::pyjson::{self, Value};
use crate::inventory::{Diagnostics, DurationValue, Inventory};

/// The file lava-coordinator and the dispatcher read.
pub const LAVA_CONF: &str = "/etc/lava-coordinator/lava-coordinator.conf";

/// `[coordinator]` in the inventory.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    pub conf_file: Option<Spanned<PathBuf>>,
    pub host: Option<Spanned<String>>,
    pub port: Option<Spanned<u16>>,
    pub poll_delay: Option<Spanned<DurationValue>>,
    pub blocksize: Option<u32>,
    pub io_timeout: Option<DurationValue>,
}

/// lava-coordinator.conf as LAVA's `read_settings` reads it: JSON (Python's parser), each
/// key optional.
#[derive(Debug, Clone)]
pub struct LavaConf {
    pub path: PathBuf,
    pub port: Option<Value>,
    pub blocksize: Option<Value>,
    pub poll_delay: Option<Value>,
    pub coordinator_hostname: Option<Value>,
    text: String,
}

impl LavaConf {
    pub fn load(path: &Path) -> Result<LavaConf, CoordinatorError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| CoordinatorError::ConfigRead {
                path: path.to_path_buf(),
                source,
            })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<LavaConf, CoordinatorError> {
        let v = pyjson::parse(text).map_err(|e| {
            let (line, col) = line_col(text, e.offset);
            CoordinatorError::Config {
                path: path.to_path_buf(),
                key: format!("line {line} column {col}"),
                message: format!("invalid JSON: {}", e.what),
            }
        })?;
        let Value::Dict(d) = v else {
            return Err(CoordinatorError::Config {
                path: path.to_path_buf(),
                key: "line 1".into(),
                message: "expected a JSON object".into(),
            });
        };
        Ok(LavaConf {
            path: path.to_path_buf(),
            port: d.get_str("port").cloned(),
            blocksize: d.get_str("blocksize").cloned(),
            poll_delay: d.get_str("poll_delay").cloned(),
            coordinator_hostname: d.get_str("coordinator_hostname").cloned(),
            text: text.to_string(),
        })
    }

    /// An error about `key`, located at the line where the key is written.
    pub fn bad(&self, key: &str, message: impl Into<String>) -> CoordinatorError {
        let line = self
            .text
            .find(&format!("\"{key}\""))
            .map(|off| line_col(&self.text, off).0)
            .unwrap_or(1);
        CoordinatorError::Config {
            path: self.path.clone(),
            key: format!("line {line}: {key}"),
            message: message.into(),
        }
    }

    /// `port` as a TCP port (default 3079).
    pub fn port(&self) -> Result<u16, CoordinatorError> {
        match &self.port {
            None => Ok(3079),
            Some(Value::Int(p)) if (1..=65535).contains(p) => Ok(*p as u16),
            Some(other) => Err(self.bad(
                "port",
                format!(
                    "expected an integer 1-65535, found {}",
                    pyjson::dumps(other)
                ),
            )),
        }
    }

    /// `blocksize` (default 4096).
    pub fn blocksize(&self) -> Result<u64, CoordinatorError> {
        match &self.blocksize {
            None => Ok(4096),
            Some(Value::Int(b)) if *b > 0 => Ok(*b as u64),
            Some(other) => Err(self.bad(
                "blocksize",
                format!(
                    "expected a positive integer, found {}",
                    pyjson::dumps(other)
                ),
            )),
        }
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let col = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
    (line, col)
}

/// How a client reaches and polls the coordinator.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// `coordinator_hostname`: where to connect, and `host` in every request.
    pub host: String,
    pub port: u16,
    /// Sent in every request as configured (the client reads replies in 4096-byte blocks).
    pub blocksize: u64,
    /// Sleep after a `wait` reply (and the first delay after a failed connect).
    pub poll_delay: Duration,
    /// `poll_delay` as it appears in requests (an int, as in the config file).
    pub poll_delay_value: Value,
    /// Cap on one connection attempt (connect, send, receive).
    pub io_timeout: Duration,
    /// Where these settings came from, for messages.
    pub source: String,
}

impl ClientSettings {
    /// LAVA's defaults when a key is absent: port 3079, blocksize 4096, poll_delay 1,
    /// coordinator_hostname "localhost".
    pub fn lava_defaults() -> Self {
        ClientSettings {
            host: "localhost".into(),
            port: 3079,
            blocksize: 4096,
            poll_delay: Duration::from_secs(1),
            poll_delay_value: Value::Int(1),
            io_timeout: Duration::from_secs(30),
            source: "LAVA defaults".into(),
        }
    }

    /// Reads lava-coordinator.conf as the dispatcher does.
    pub fn from_lava_conf(path: &Path) -> Result<Self, CoordinatorError> {
        let conf = LavaConf::load(path)?;
        let mut s = Self::lava_defaults();
        s.source = path.display().to_string();
        s.port = conf.port()?;
        s.blocksize = conf.blocksize()?;
        if let Some(v) = &conf.poll_delay {
            s.poll_delay = match v {
                Value::Int(i) if *i > 0 => Duration::from_secs(*i as u64),
                Value::Float(f) if *f > 0.0 && f.is_finite() => Duration::from_secs_f64(*f),
                other => {
                    return Err(conf.bad(
                        "poll_delay",
                        format!(
                            "expected a number of seconds > 0, found {}",
                            pyjson::dumps(other)
                        ),
                    ));
                }
            };
            s.poll_delay_value = v.clone();
        }
        if let Some(v) = &conf.coordinator_hostname {
            match v {
                Value::Str(h) if !h.is_empty() => s.host = h.clone(),
                other => {
                    return Err(conf.bad(
                        "coordinator_hostname",
                        format!("expected a host name, found {}", pyjson::dumps(other)),
                    ));
                }
            }
        }
        Ok(s)
    }

    /// The settings for jobs on this worker: the inventory's `[coordinator]` over the
    /// lava-coordinator.conf it names (or the standard one). Without a section and without
    /// the standard file this fails as LAVA does ("Missing coordinator configuration").
    pub fn resolve(section: Option<&CoordinatorConfig>) -> Result<Self, CoordinatorError> {
        let default_conf = Path::new(LAVA_CONF);
        let Some(sec) = section else {
            return Self::from_lava_conf(default_conf);
        };
        let mut s = match (&sec.conf_file, &sec.host) {
            (Some(f), _) => Self::from_lava_conf(f.get_ref())?,
            (None, Some(_)) => Self::lava_defaults(),
            (None, None) => Self::from_lava_conf(default_conf)?,
        };
        if sec.host.is_some() || sec.port.is_some() || sec.poll_delay.is_some() {
            s.source = format!("{} and the inventory [coordinator]", s.source);
        }
        if let Some(h) = &sec.host {
            s.host = h.get_ref().clone();
        }
        if let Some(p) = &sec.port {
            s.port = *p.get_ref();
        }
        if let Some(b) = sec.blocksize {
            s.blocksize = u64::from(b);
        }
        if let Some(d) = &sec.poll_delay {
            s.poll_delay = d.get_ref().get();
            s.poll_delay_value = duration_value(s.poll_delay);
        }
        if let Some(t) = sec.io_timeout {
            s.io_timeout = t.get();
        }
        Ok(s)
    }

    /// Settings for a coordinator at `host:port` (labd's own, in tests and `run-job`).
    pub fn at(host: impl Into<String>, port: u16, poll_delay: Duration) -> Self {
        ClientSettings {
            host: host.into(),
            port,
            poll_delay,
            poll_delay_value: duration_value(poll_delay),
            source: "explicit".into(),
            ..Self::lava_defaults()
        }
    }

    /// `host:port`, for messages.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Whole seconds as an int (what LAVA sends), otherwise a float.
fn duration_value(d: Duration) -> Value {
    if d.subsec_nanos() == 0 {
        Value::Int(d.as_secs() as i64)
    } else {
        Value::Float(d.as_secs_f64())
    }
}

/// Cross-checks of `[coordinator]`.
pub fn validate(inv: &Inventory, diags: &mut Diagnostics) {
    let Some(sec) = &inv.coordinator else { return };
    let src = &inv.source;
    if let Some(h) = &sec.host
        && h.get_ref().trim().is_empty()
    {
        diags.push(src.diag(h.span(), "coordinator.host", "host must not be empty"));
    }
    if let Some(p) = &sec.port
        && *p.get_ref() == 0
    {
        diags.push(src.diag(p.span(), "coordinator.port", "port must be 1-65535"));
    }
    if let Some(d) = &sec.poll_delay
        && d.get_ref().get().is_zero()
    {
        diags.push(src.diag(d.span(), "coordinator.poll_delay", "poll_delay must be > 0"));
    }
    if let Some(f) = &sec.conf_file {
        let path = f.get_ref();
        if !path.is_absolute() {
            diags.push(src.diag(
                f.span(),
                "coordinator.conf_file",
                format!("{path:?} must be an absolute path"),
            ));
        } else if let Err(e) = ClientSettings::from_lava_conf(path) {
            diags.push(src.diag(f.span(), "coordinator.conf_file", e.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_debian_default_conf() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.conf");
        std::fs::write(
            &p,
            "{\n    \"port\": 3079,\n    \"blocksize\": 4096,\n    \"poll_delay\": 3,\n    \"coordinator_hostname\": \"localhost\"\n}\n",
        )
        .unwrap();
        let s = ClientSettings::from_lava_conf(&p).unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.blocksize),
            ("localhost", 3079, 4096)
        );
        assert_eq!(s.poll_delay, Duration::from_secs(3));
        assert!(matches!(s.poll_delay_value, Value::Int(3)));
    }

    #[test]
    fn bad_values_name_file_line_and_key() {
        let p = Path::new("/etc/x.conf");
        let c = LavaConf::parse(p, "{\n  \"port\": \"many\"\n}").unwrap();
        let e = c.port().unwrap_err().to_string();
        assert_eq!(
            e,
            "/etc/x.conf: line 2: port: expected an integer 1-65535, found \"many\""
        );
        let e = LavaConf::parse(p, "{\n  \"port\": 30,\n}")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/etc/x.conf: line 3 column 1: invalid JSON"),
            "{e}"
        );
    }

    #[test]
    fn inventory_section_is_checked_with_lines() {
        let text = "[worker]\nname = \"w\"\nstate_dir = \"/var/lib/labd\"\n\n[coordinator]\nhost = \"\"\nport = 0\npoll_delay = 0\nconf_file = \"relative.conf\"\n";
        let err = crate::inventory::Inventory::parse(Path::new("inv.toml"), text).unwrap_err();
        let lines: Vec<String> = err.diagnostics().iter().map(|d| d.to_string()).collect();
        assert_eq!(
            lines,
            [
                "inv.toml:6:8: coordinator.host: host must not be empty",
                "inv.toml:7:8: coordinator.port: port must be 1-65535",
                "inv.toml:8:14: coordinator.poll_delay: poll_delay must be > 0",
                "inv.toml:9:13: coordinator.conf_file: \"relative.conf\" must be an absolute path",
            ]
        );
        let ok = "[worker]\nname = \"w\"\nstate_dir = \"/x\"\n[coordinator]\nhost = \"c\"\n";
        let inv = crate::inventory::Inventory::parse(Path::new("inv.toml"), ok).unwrap();
        let s = ClientSettings::resolve(inv.coordinator.as_ref()).unwrap();
        assert_eq!(s.addr(), "c:3079");
    }

    #[test]
    fn inventory_section_overrides_the_file() {
        let sec: CoordinatorConfig =
            toml::from_str("host = \"127.0.0.1\"\nport = 4000\npoll_delay = \"250ms\"").unwrap();
        let s = ClientSettings::resolve(Some(&sec)).unwrap();
        assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 4000));
        assert_eq!(s.poll_delay, Duration::from_millis(250));
        assert_eq!(pyjson::dumps(&s.poll_delay_value), "0.25");
    }
}
