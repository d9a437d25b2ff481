//! Debian's lava-coordinator 2023.01, unmodified, on a free loopback port.
//!
//! The packaged daemon binds 0.0.0.0 whatever its config says, so it is started through
//! `lava/lava_coordinator_launcher.py`, which patches its `socket` to bind 127.0.0.1 and then
//! runs it as `/usr/bin/lava-coordinator` does (real-peers.md section 3). Readiness is its own
//! "Ready to accept new connections" log line, or (at WARN/ERROR levels) its listening socket
//! in /proc/net/tcp: a probe connection would block it (it is single-threaded).
//!
//! [`run_model`] feeds requests to the real `LavaCoordinator` class in-process through
//! `lava/coordinator_model.py`, for differential tests that go beyond what the single-threaded
//! daemon survives.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::util::{ChildGuard, free_tcp_port, require_program};

/// A running lava-coordinator.
pub struct LavaCoordinator {
    guard: ChildGuard,
    port: u16,
    dir: tempfile::TempDir,
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("lava")
        .join(name)
}

impl LavaCoordinator {
    /// Starts it on 127.0.0.1 with a free port and DEBUG logging; waits until it is ready.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with_level("DEBUG")
    }

    /// Same, with `--loglevel level` (DEBUG, INFO, WARN, ERROR).
    pub fn start_with_level(level: &str) -> anyhow::Result<Self> {
        require_program("lava-coordinator")?;
        let dir = tempfile::tempdir()?;
        let port = free_tcp_port();
        let conf = dir.path().join("lava-coordinator.conf");
        std::fs::write(
            &conf,
            format!(
                "{{\n    \"port\": {port},\n    \"blocksize\": 4096,\n    \"poll_delay\": 1,\n    \"coordinator_hostname\": \"127.0.0.1\"\n}}\n"
            ),
        )?;
        let log = dir.path().join("lava-coordinator.log");
        let child = Command::new("/usr/bin/python3")
            .arg(data("lava_coordinator_launcher.py"))
            .arg("--config")
            .arg(&conf)
            .arg("--logfile")
            .arg(&log)
            .args(["--loglevel", level, "--bind", "127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting lava-coordinator through the loopback launcher")?;
        let mut me = LavaCoordinator {
            guard: ChildGuard::new("lava-coordinator", child),
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if me.log().contains("Ready to accept new connections") || listening(port) {
                return Ok(me);
            }
            if !me.guard.is_running() {
                anyhow::bail!("lava-coordinator exited at start:\n{}", me.log());
            }
            if Instant::now() > deadline {
                anyhow::bail!("lava-coordinator not ready after 20 s:\n{}", me.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The lava-coordinator.conf it was started with (`coordinator_hostname` 127.0.0.1), which
    /// clients can read too.
    pub fn conf_path(&self) -> PathBuf {
        self.dir.path().join("lava-coordinator.conf")
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("lava-coordinator.log")).unwrap_or_default()
    }

    /// Process id (for resource measurements).
    pub fn pid(&self) -> u32 {
        self.guard.id()
    }

    /// Whether the process still runs (a malformed request can kill it).
    pub fn is_running(&mut self) -> bool {
        self.guard.is_running()
    }
}

/// Whether something listens on 127.0.0.1:`port`, read from /proc/net/tcp: a probe
/// connection would block the single-threaded daemon (and log a warning).
fn listening(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1] == want && f[3] == "0A"
        })
}

/// What the real `LavaCoordinator` class did with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelOutcome {
    /// The bytes it sent (header and body; empty when it closed without a reply).
    Reply(String),
    /// `json.loads` refused the body ("JSON error": the daemon closes without a reply).
    JsonError,
    /// The daemon would have died with this exception (the model then restarts empty).
    Crash(String),
    /// Answer to a `#RESET` line: every group forgotten.
    Reset,
}

/// Feeds `requests` (JSON body texts, no newlines, or `#RESET`) to the real class.
pub fn run_model(requests: &[String]) -> anyhow::Result<Vec<ModelOutcome>> {
    require_program("lava-coordinator")?;
    let mut child = Command::new("/usr/bin/python3")
        .arg(data("coordinator_model.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting coordinator_model.py")?;
    for r in requests {
        anyhow::ensure!(!r.contains('\n'), "requests must be single lines");
    }
    let mut stdin = child.stdin.take().context("model stdin")?;
    let input = requests.join("\n") + "\n";
    // Write from another thread: the model answers while it reads.
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output()?;
    let _ = writer.join();
    let text = String::from_utf8(out.stdout)?;
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)?;
            Ok(if v.get("reset").is_some() {
                ModelOutcome::Reset
            } else if let Some(c) = v.get("crash") {
                ModelOutcome::Crash(c.as_str().unwrap_or_default().to_string())
            } else if v.get("json_error").is_some() {
                ModelOutcome::JsonError
            } else {
                ModelOutcome::Reply(v["reply"].as_str().unwrap_or_default().to_string())
            })
        })
        .collect()
}

/// The frames of `lava/coordinator-transcript.txt` (captured from lava-coordinator 2023.01):
/// `(request, reply)` pairs in order, reply empty when none was captured.
pub fn transcript() -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(data("coordinator-transcript.txt"))?;
    let mut pairs: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let frame = |prefix: &str| {
            line.strip_prefix(prefix)
                .and_then(|rest| rest.split_once(" bytes: "))
                .map(|(_, f)| f.to_string())
        };
        if let Some(req) = frame("C>S ") {
            pairs.push((req, String::new()));
        } else if let Some(rep) = frame("S>C ") {
            let last = pairs.last_mut().context("reply before any request")?;
            last.1 = rep;
        }
    }
    Ok(pairs)
}
