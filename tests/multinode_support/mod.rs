//! Shared by the multinode_* integration tests: `labd coordinator` as a real process, raw
//! frame exchanges, and client construction.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use labd::multinode::client::message_from_pairs;
use labd::multinode::{ClientSettings, CoordinatorClient, NodeIdentity};
use labd_hw_fixtures::{ChildGuard, free_tcp_port};

/// `labd coordinator` started from the built binary on 127.0.0.1 and a free port.
pub struct LabdCoordinator {
    guard: Option<ChildGuard>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    extra: Vec<String>,
    /// The journal's directory (`state` in the temporary directory unless chosen).
    pub state: PathBuf,
    /// RLIMIT_NOFILE (soft and hard) of the process, if lowered.
    nofile: Option<u64>,
}

impl LabdCoordinator {
    /// With a journal in its temporary directory; `extra` are more command-line options.
    pub fn start(extra: &[&str]) -> Self {
        Self::start_with(extra, None, None)
    }

    /// As [`LabdCoordinator::start`], with the journal in `state` if given, and the open file
    /// limit lowered to `nofile` if given.
    pub fn start_with(extra: &[&str], state: Option<&Path>, nofile: Option<u64>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_tcp_port();
        std::fs::write(
            dir.path().join("lava-coordinator.conf"),
            format!(
                "{{\"port\": {port}, \"blocksize\": 4096, \"poll_delay\": 1, \"coordinator_hostname\": \"127.0.0.1\"}}"
            ),
        )
        .unwrap();
        let state = state.map_or_else(|| dir.path().join("state"), Path::to_path_buf);
        let mut me = LabdCoordinator {
            guard: None,
            port,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            state,
            nofile,
        };
        me.spawn();
        me
    }

    fn spawn(&mut self) {
        let log = self.log_path();
        let before = std::fs::read_to_string(&log).unwrap_or_default().len();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_labd"));
        if let Some(n) = self.nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: only setrlimit (async-signal-safe) runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, n, n)
                        .map_err(std::io::Error::from)
                });
            }
        }
        let child = cmd
            .arg("coordinator")
            .arg("--config")
            .arg(self.dir.path().join("lava-coordinator.conf"))
            .arg("--logfile")
            .arg(&log)
            .args(["--loglevel", "DEBUG", "--bind", "127.0.0.1"])
            .arg("--state-dir")
            .arg(&self.state)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.guard = Some(ChildGuard::new("labd coordinator", child));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text[before.min(text.len())..].contains("Ready to accept new connections") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "labd coordinator not ready:\n{text}"
            );
            assert!(
                self.guard.as_mut().unwrap().is_running(),
                "labd coordinator exited:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("coordinator.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The log once it holds every needle (the coordinator writes its log out every 20 ms),
    /// or as it is after 3 s.
    pub fn log_with(&self, needles: &[&str]) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            let log = self.log();
            if needles.iter().all(|n| log.contains(n)) || std::time::Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The process id of the running coordinator.
    pub fn pid(&self) -> u32 {
        self.guard.as_ref().map_or(0, |g| g.id())
    }

    /// SIGSTOP or SIGCONT.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), sig).unwrap();
    }

    pub fn is_running(&mut self) -> bool {
        self.guard.as_mut().is_some_and(|g| g.is_running())
    }

    /// SIGKILL (a crash: nothing is flushed on the way out), then start again on the same
    /// port and state directory.
    pub fn crash_and_restart(&mut self) {
        if let Some(mut g) = self.guard.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(g.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            g.stop(Duration::from_secs(5));
        }
        self.spawn();
    }
}

/// `"%08X" % len` + body.
pub fn frame(body: &str) -> Vec<u8> {
    labd::multinode::protocol::encode_frame(body)
}

/// One connection: send `bytes`, half-close, read everything until the peer closes.
pub fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(bytes).unwrap();
    let _ = s.shutdown(Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

pub fn exchange_str(addr: SocketAddr, bytes: &[u8]) -> String {
    String::from_utf8(exchange(addr, bytes)).unwrap()
}

/// Client settings for a coordinator on 127.0.0.1:`port`.
pub fn settings(port: u16, poll_delay: Duration) -> ClientSettings {
    ClientSettings::at("127.0.0.1", port, poll_delay)
}

pub fn client(
    settings: &ClientSettings,
    job_id: &str,
    group: &str,
    role: &str,
    size: u32,
) -> CoordinatorClient {
    let mut c = CoordinatorClient::new(
        settings.clone(),
        NodeIdentity {
            job_id: job_id.into(),
            group: group.into(),
            role: role.into(),
            group_size: size,
            hostname: format!("worker-{job_id}"),
        },
    );
    c.set_api_timeout(Duration::from_secs(20));
    c.set_system_timeout(Duration::from_secs(20));
    c
}

/// A two-node group doing send/wait/sync/clear through labd's client: proof that the
/// coordinator still serves everyone.
pub async fn healthy_group(port: u16, group: &str) -> Duration {
    let s = settings(port, Duration::from_millis(20));
    let a = client(&s, "1", group, "server", 2);
    let b = client(&s, "2", group, "client", 2);
    let t = Instant::now();
    let ((), rb) = tokio::join!(
        async {
            a.group_data().await.unwrap();
            a.lava_send("ip", message_from_pairs([("ip", "10.0.0.1")]))
                .await
                .unwrap();
            a.lava_sync("done").await.unwrap();
            a.clear_group().await.unwrap();
        },
        async {
            b.group_data().await.unwrap();
            let m = b.lava_wait("ip").await.unwrap();
            b.lava_sync("done").await.unwrap();
            b.clear_group().await.unwrap();
            m
        }
    );
    assert_eq!(
        labd::multinode::pyjson::dumps(&rb),
        r#"{"1": {"ip": "10.0.0.1"}}"#
    );
    t.elapsed()
}

/// Reads the whole file (for journal checks).
pub fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}
