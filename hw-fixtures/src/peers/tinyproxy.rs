//! The real tinyproxy (Debian's `tinyproxy` 1.11) on a free loopback port, logging every
//! request it forwards, so tests can prove a download went through the proxy.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{ChildGuard, free_tcp_port, require_program, wait_for_tcp};

/// A running tinyproxy; stopped when dropped.
pub struct Tinyproxy {
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
    _child: ChildGuard,
}

impl Tinyproxy {
    /// Starts tinyproxy in the foreground (`-d`) with a private configuration: loopback only,
    /// `LogLevel Info` (which logs each request line), CONNECT allowed to any port.
    pub fn start() -> anyhow::Result<Self> {
        let prog = require_program("tinyproxy")?;
        let dir = tempfile::tempdir()?;
        let port = free_tcp_port();
        let log = dir.path().join("tinyproxy.log");
        let conf = dir.path().join("tinyproxy.conf");
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 60\nLogFile \"{}\"\nLogLevel Info\n\
                 MaxClients 100\nViaProxyName \"labd-test-proxy\"\n",
                log.display()
            ),
        )?;
        let child = Command::new(prog)
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let child = ChildGuard::new("tinyproxy", child);
        wait_for_tcp(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(10),
        )?;
        Ok(Self {
            port,
            log,
            _dir: dir,
            _child: child,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`, for `[images] proxy` or `http_proxy`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The request lines tinyproxy logged (`GET http://... HTTP/1.1`, `CONNECT host:port ...`).
    pub fn requests(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| l.split_once("]: Request (file descriptor "))
            .filter_map(|(_, rest)| rest.split_once("): ").map(|(_, r)| r.to_string()))
            .collect()
    }

    /// Waits until a logged request line contains `needle` (tinyproxy writes its log lazily).
    pub fn wait_for_request(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.requests().iter().any(|r| r.contains(needle)) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
