//! The real snmpsim 1.2.2 (from the venv) serving an APC PowerNet-MIB outlet model on a free
//! loopback UDP port: `hw-fixtures/snmpsim/data/{public,private}.snmprec` and the variation
//! module `hw-fixtures/snmpsim/modules/apcoutlet.py`, which logs every accepted SET.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{ChildGuard, free_udp_port, require_program, require_venv_program};

/// The fixture directory shipped with this crate.
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("snmpsim")
}

/// A running snmpsim command responder.
pub struct Snmpsim {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: ChildGuard,
}

impl Snmpsim {
    /// Starts snmpsim with the APC data set; returns once an `snmpget` of sysName answers.
    pub fn start() -> anyhow::Result<Self> {
        let exe = require_venv_program("snmpsim-command-responder")?;
        let snmpget = require_program("snmpget")?;
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data)?;
        for f in ["public.snmprec", "private.snmprec"] {
            std::fs::copy(fixture_dir().join("data").join(f), data.join(f))?;
        }
        let port = free_udp_port();
        let log = dir.path().join("outlets.log");
        let child = Command::new(exe)
            .env("SNMPSIM_ALLOW_ROOT", "true")
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!(
                "--cache-dir={}",
                dir.path().join("cache").display()
            ))
            .arg(format!(
                "--variation-modules-dir={}",
                fixture_dir().join("modules").display()
            ))
            .arg(format!(
                "--variation-module-options=apcoutlet:log:{}",
                log.display()
            ))
            .arg(format!("--agent-udpv4-endpoint=127.0.0.1:{port}"))
            .arg(format!(
                "--logging-method=file:{}",
                dir.path().join("snmpsim.log").display()
            ))
            .arg("--log-level=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut child = ChildGuard::new("snmpsim", child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new(&snmpget)
                .args(["-v1", "-c", "public", "-t", "0.2", "-r", "0"])
                .arg(format!("127.0.0.1:{port}"))
                .arg("1.3.6.1.2.1.1.5.0")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                break;
            }
            if Instant::now() > deadline || !child.is_running() {
                let log =
                    std::fs::read_to_string(dir.path().join("snmpsim.log")).unwrap_or_default();
                child.stop(Duration::from_secs(1));
                anyhow::bail!("snmpsim did not answer on udp 127.0.0.1:{port}:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Self { port, dir, child })
    }

    /// The SET log: lines like `1795319788.192 outlet=3 kind=rctl value=2 -> off`.
    pub fn set_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("outlets.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_running()
    }
}
