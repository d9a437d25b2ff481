//! The real pdudaemon 1.1.1 (from the venv) on a free loopback port, with `localcmdline` PDUs
//! that append `NAME on|off port=N` lines to an actions file, or any PDUs the caller configures.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{ChildGuard, free_tcp_port, require_venv_program, wait_for_tcp};

/// A running pdudaemon.
pub struct Pdudaemon {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: ChildGuard,
}

/// `"NAME": {"driver": "localcmdline", ...}` writing to `actions`.
pub fn localcmdline_pdu(name: &str, actions: &Path, retries: u32) -> serde_json::Value {
    let a = actions.display();
    serde_json::json!({
        "driver": "localcmdline",
        "cmd_on": format!("echo \"{name} on port=%s\" >> {a}"),
        "cmd_off": format!("echo \"{name} off port=%s\" >> {a}"),
        "retries": retries,
        "retrydelay": 1
    })
}

impl Pdudaemon {
    /// Starts pdudaemon with `listener` (`"http"` or `"tcp"`), the given `pdus` object and
    /// `aliases` object; returns once it accepts connections.
    pub fn start(
        listener: &str,
        pdus: serde_json::Value,
        aliases: serde_json::Value,
    ) -> anyhow::Result<Self> {
        let exe = require_venv_program("pdudaemon")?;
        let dir = tempfile::tempdir()?;
        let port = free_tcp_port();
        let conf = serde_json::json!({
            "daemon": {"hostname": "127.0.0.1", "port": port, "logging_level": "DEBUG", "listener": listener},
            "pdus": pdus,
            "aliases": aliases,
        });
        let conf_path = dir.path().join("pdudaemon.conf");
        std::fs::write(&conf_path, serde_json::to_vec_pretty(&conf)?)?;
        let child = Command::new(exe)
            .arg("--conf")
            .arg(&conf_path)
            .arg("--loglevel")
            .arg("DEBUG")
            .arg("--logfile")
            .arg(dir.path().join("pdudaemon.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut child = ChildGuard::new("pdudaemon", child);
        if let Err(e) = wait_for_tcp(([127, 0, 0, 1], port).into(), Duration::from_secs(20)) {
            let log = std::fs::read_to_string(dir.path().join("pdudaemon.log")).unwrap_or_default();
            child.stop(Duration::from_secs(1));
            anyhow::bail!("pdudaemon did not start: {e}\n{log}");
        }
        Ok(Self { port, dir, child })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("pdudaemon.log")
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_running()
    }
}

/// Lines of an actions file, without the trailing newline ("" file → empty).
pub fn read_actions(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The real `pduclient` (installed into the venv by `.ci/install-deps` from pdudaemon's sdist).
pub fn pduclient() -> anyhow::Result<PathBuf> {
    require_venv_program("pduclient")
}
