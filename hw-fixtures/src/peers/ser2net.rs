//! The real ser2net 4.3.x (Debian bookworm), started on 127.0.0.1 with a generated YAML config.
//!
//! Readiness is checked in `/proc/net/tcp` rather than by connecting: a connection makes
//! ser2net open the device, which a test may not want yet.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{ChildGuard, require_program};

/// The accepter type of a ser2net port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepter {
    /// `tcp,…`: bytes pass through untouched.
    Raw,
    /// `telnet,tcp,…`.
    Telnet,
    /// `telnet(rfc2217),tcp,…`.
    Rfc2217,
}

/// One `connection:` of the generated config.
#[derive(Debug, Clone)]
pub struct Ser2netPort {
    /// The connection alias (required by ser2net).
    pub name: String,
    pub port: u16,
    pub device: PathBuf,
    pub accepter: Accepter,
    /// ser2net speed string, e.g. `115200n81`.
    pub speed: String,
    pub max_connections: u32,
    pub kickolduser: bool,
}

impl Ser2netPort {
    /// A telnet port on a free loopback port for `device`, 115200n81, one connection.
    pub fn telnet(name: &str, device: &Path) -> Self {
        Self {
            name: name.to_string(),
            port: crate::free_tcp_port(),
            device: device.to_path_buf(),
            accepter: Accepter::Telnet,
            speed: "115200n81".into(),
            max_connections: 1,
            kickolduser: false,
        }
    }
}

/// The YAML ser2net 4.3 reads (version 1 dialect: `connection:` repeated).
pub fn config_yaml(ports: &[Ser2netPort]) -> String {
    let mut out = String::from("%YAML 1.1\n---\n");
    for p in ports {
        let accepter = match p.accepter {
            Accepter::Raw => format!("tcp,127.0.0.1,{}", p.port),
            Accepter::Telnet => format!("telnet,tcp,127.0.0.1,{}", p.port),
            Accepter::Rfc2217 => format!("telnet(rfc2217),tcp,127.0.0.1,{}", p.port),
        };
        out.push_str(&format!(
            "connection: &{name}\n    accepter: {accepter}\n    enable: on\n    timeout: 0\n    connector: serialdev,{dev},{speed},local\n    options:\n      kickolduser: {kick}\n      max-connections: {max}\n\n",
            name = p.name,
            dev = p.device.display(),
            speed = p.speed,
            kick = p.kickolduser,
            max = p.max_connections,
        ));
    }
    out
}

/// A running ser2net; stopped (SIGTERM) when dropped.
pub struct Ser2net {
    child: Option<ChildGuard>,
    dir: PathBuf,
    ports: Vec<Ser2netPort>,
}

impl Ser2net {
    /// Writes `dir/ser2net.yaml` and starts ser2net on it, waiting until every port listens.
    pub fn start(dir: &Path, ports: Vec<Ser2netPort>) -> anyhow::Result<Self> {
        let mut s = Self {
            child: None,
            dir: dir.to_path_buf(),
            ports,
        };
        std::fs::write(s.config_path(), config_yaml(&s.ports))?;
        s.spawn()?;
        Ok(s)
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("ser2net.yaml")
    }

    pub fn ports(&self) -> &[Ser2netPort] {
        &self.ports
    }

    /// The TCP port of connection `name`.
    pub fn port(&self, name: &str) -> u16 {
        self.ports
            .iter()
            .find(|p| p.name == name)
            .map_or(0, |p| p.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let bin = require_program("ser2net")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("ser2net.log"))?;
        let child = Command::new(bin)
            .arg("-n")
            .arg("-u")
            .arg("-c")
            .arg(self.config_path())
            .arg("-P")
            .arg(self.dir.join("ser2net.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut guard = ChildGuard::new("ser2net", child);
        for p in &self.ports {
            if let Err(e) = wait_listening(p.port, Duration::from_secs(10)) {
                let log = std::fs::read_to_string(self.dir.join("ser2net.log")).unwrap_or_default();
                guard.stop(Duration::from_secs(1));
                anyhow::bail!("ser2net did not start: {e}\n{log}");
            }
        }
        self.child = Some(guard);
        Ok(())
    }

    /// Stops ser2net (SIGTERM); clients see their connection close.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.stop(Duration::from_secs(3));
        }
        for p in &self.ports {
            let _ = wait_not_listening(p.port, Duration::from_secs(5));
        }
    }

    /// Stops and starts it again on the same ports and config.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }
}

impl Drop for Ser2net {
    fn drop(&mut self) {
        self.stop();
    }
}

fn listening(port: u16) -> bool {
    let want = format!(":{port:04X} ");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|t| {
            t.lines().skip(1).any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.len() > 3 && format!("{} ", cols[1]).ends_with(&want) && cols[3] == "0A"
            })
        })
    })
}

/// Waits until something listens on TCP `port` (checked in /proc, without connecting).
pub fn wait_listening(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !listening(port) {
        if Instant::now() > deadline {
            anyhow::bail!("nothing listens on port {port} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Waits until nothing listens on TCP `port` any more.
pub fn wait_not_listening(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while listening(port) {
        if Instant::now() > deadline {
            anyhow::bail!("port {port} still listening after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}
