//! Small helpers every harness needs: free loopback ports, waiting for readiness, finding the
//! real programs that `.ci/install-deps` installs.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A TCP port on 127.0.0.1 that was free a moment ago. Tests run in parallel, so never hard-code
/// ports; a tiny race remains between this call and the program binding it.
pub fn free_tcp_port() -> u16 {
    // Binding port 0 always yields a port; failure here means loopback itself is broken.
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp 127.0.0.1:0");
    s.local_addr().expect("local_addr").port()
}

/// Polls until `addr` accepts a TCP connection (which is closed at once).
pub fn wait_for_tcp(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("nothing listens on {addr} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls until `path` exists.
pub fn wait_for_path(path: &Path, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        if Instant::now() > deadline {
            anyhow::bail!("{} did not appear within {timeout:?}", path.display());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// The path of a program installed by `.ci/install-deps`, or an error that says how to get it.
/// Tests fail (they do not skip) when a real peer is missing: CI must have it.
pub fn require_program(name: &str) -> anyhow::Result<PathBuf> {
    let search = std::env::var_os("PATH").unwrap_or_default();
    let extra = [Path::new("/usr/sbin"), Path::new("/sbin")];
    for dir in std::env::split_paths(&search).chain(extra.iter().map(|p| p.to_path_buf())) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    anyhow::bail!(
        "{name} is not installed; run .ci/install-deps (as root) to install the real peers"
    )
}

/// The Python venv holding the PyPI peers (pdudaemon, snmpsim): `$LABD_VENV` or `/opt/labd-venv`.
pub fn venv_dir() -> PathBuf {
    std::env::var_os("LABD_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/labd-venv"))
}

/// A program inside the venv, or an error that says how to get it.
pub fn require_venv_program(name: &str) -> anyhow::Result<PathBuf> {
    let p = venv_dir().join("bin").join(name);
    if p.is_file() {
        Ok(p)
    } else {
        anyhow::bail!(
            "{} is missing; run .ci/install-deps to create the venv with the PyPI peers",
            p.display()
        )
    }
}

/// A child process that is killed (SIGTERM, then SIGKILL) and reaped when dropped, so a failing
/// test never leaves a peer running.
pub struct ChildGuard {
    child: Option<std::process::Child>,
    name: String,
}

impl ChildGuard {
    pub fn new(name: impl Into<String>, child: std::process::Child) -> Self {
        Self {
            child: Some(child),
            name: name.into(),
        }
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends SIGTERM and waits up to `grace` before SIGKILL.
    pub fn stop(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => break,
            }
        }
        let _ = child.kill();
        child.wait().ok()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}
