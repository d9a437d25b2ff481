//! Helpers for the daemon integration tests: the real `labd agent` with extra environment, a
//! simulated PDU served over HTTP whose outlets power simulated boards, an operator session
//! that records every frame with its arrival time, and running the `labd` CLI.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use labd::control::frame::FrameKind;
use labd::control::{AttachRequest, ControlClient};
use labd_hw_fixtures::simboard::SimBoard;
use labd_hw_fixtures::simpdu::SimPdu;
use labd_hw_fixtures::simpdu::http::SimPduServer;

/// The real `labd agent` on `dir/inventory.toml`, with `env` added; returns once it answers.
pub async fn start_agent(dir: &Path, inventory_text: &str, env: &[(&str, String)]) -> Agent {
    let inventory = dir.join("inventory.toml");
    std::fs::write(&inventory, inventory_text).unwrap();
    let log = dir.join("agent.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_labd"));
    cmd.args(["agent", "-c"])
        .arg(&inventory)
        .env("RUST_LOG", "debug")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdout(std::fs::File::create(dir.join("agent.out")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let agent = Agent {
        child: labd_hw_fixtures::ChildGuard::new("labd agent", child),
        socket: dir.join("state").join("labd.sock"),
        inventory,
        log,
    };
    let client = agent.client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if client
            .request(serde_json::json!({"request": "ping"}))
            .await
            .is_ok()
        {
            break;
        }
        if Instant::now() > deadline {
            panic!("labd agent did not come up:\n{}", agent.log_text());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    agent
}

pub struct Agent {
    pub child: labd_hw_fixtures::ChildGuard,
    pub inventory: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Agent {
    pub fn client(&self) -> ControlClient {
        ControlClient::new(&self.socket)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), sig).unwrap();
    }

    pub async fn status(&self) -> serde_json::Value {
        self.client()
            .request(serde_json::json!({"request": "status"}))
            .await
            .unwrap()
    }

    /// Runs `labd ARGS -c <inventory>` to completion (off the runtime).
    pub async fn labd(&self, args: &[&str]) -> Output {
        let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        a.push("-c".into());
        a.push(self.inventory.display().to_string());
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_labd"))
                .args(&a)
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    }
}

pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A simulated PDU reached over HTTP (`driver = "sim"`, `url = ...`), like a real PDU.
pub struct HttpPdu {
    pub pdu: SimPdu,
    pub server: SimPduServer,
}

impl HttpPdu {
    pub async fn start(name: &str, outlets: u32) -> Self {
        let pdu = SimPdu::new(name, outlets);
        let server = SimPduServer::start(pdu.clone()).await.unwrap();
        Self { pdu, server }
    }

    /// Outlet `n` powers `board` from now on.
    pub fn wire(&self, n: u32, board: &SimBoard) {
        labd::daemon::simlab::wire_outlet(&self.pdu, n, board.control());
    }

    /// The `[[pdu]]` section.
    pub fn section(&self, extra: &str) -> String {
        format!(
            "[[pdu]]\nname = \"{}\"\ndriver = \"sim\"\nurl = \"{}\"\n{extra}\n",
            self.pdu.name(),
            self.server.url()
        )
    }

    /// When outlet `n` last switched to `on`, after `since`.
    pub fn switched(&self, n: u32, on: bool, since: Instant) -> Option<Instant> {
        self.pdu
            .events()
            .into_iter()
            .rev()
            .find(|e| e.outlet == n && e.on == on && e.at >= since)
            .map(|e| e.at)
    }
}

/// `[worker]` with `state_dir = dir/state`.
pub fn worker(dir: &Path) -> String {
    format!(
        "[worker]\nname = \"w1\"\nstate_dir = \"{}\"\n\n",
        dir.join("state").display()
    )
}

/// A `[[device]]` with a tty console (and optionally power on `pdu` outlet `outlet`).
pub fn device(name: &str, tty: &Path, power: Option<(&str, u32)>) -> String {
    let mut t = format!(
        "[[device]]\nname = \"{name}\"\ndevice_type = \"sim\"\n[device.console]\ntty = \"{}\"\n",
        tty.display()
    );
    if let Some((pdu, outlet)) = power {
        t.push_str(&format!(
            "[device.power]\npdu = \"{pdu}\"\noutlet = {outlet}\n"
        ));
    }
    t.push('\n');
    t
}

/// One frame as the operator received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub kind: FrameKind,
    pub payload: Vec<u8>,
}

/// An operator attached through the control socket; a task records every frame.
pub struct Operator {
    pub frames: Arc<Mutex<Vec<Seen>>>,
    pub writer: labd::control::client::AttachWriter,
    task: tokio::task::JoinHandle<()>,
}

impl Operator {
    pub async fn attach(agent: &Agent, device: &str) -> Self {
        let (_, session) = agent
            .client()
            .attach(&AttachRequest {
                device: device.into(),
                read_only: false,
                force: false,
                replay: 0,
            })
            .await
            .unwrap();
        let frames = Arc::new(Mutex::new(Vec::new()));
        let f = frames.clone();
        let mut reader = session.reader;
        let task = tokio::spawn(async move {
            while let Ok(Some(fr)) = reader.next().await {
                f.lock().unwrap().push(Seen {
                    at: Instant::now(),
                    kind: fr.kind,
                    payload: fr.payload.to_vec(),
                });
            }
        });
        Self {
            frames,
            writer: session.writer,
            task,
        }
    }

    pub fn frames(&self) -> Vec<Seen> {
        self.frames.lock().unwrap().clone()
    }

    /// Board output received after `since`, concatenated.
    pub fn data_since(&self, since: Instant) -> Vec<u8> {
        self.frames()
            .into_iter()
            .filter(|s| s.kind == FrameKind::Data && s.at >= since)
            .flat_map(|s| s.payload)
            .collect()
    }

    /// Waits until the output received after `since` contains `needle`; returns when the frame
    /// completing it arrived.
    pub async fn wait_for(&self, needle: &[u8], since: Instant, timeout: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            let mut acc = Vec::new();
            for s in self.frames() {
                if s.kind != FrameKind::Data || s.at < since {
                    continue;
                }
                acc.extend_from_slice(&s.payload);
                if contains(&acc, needle) {
                    return s.at;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {:?}; got {:?}",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(&acc[acc.len().saturating_sub(800)..])
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for a frame of `kind` after `since`; returns it.
    pub async fn wait_kind(&self, kind: FrameKind, since: Instant, timeout: Duration) -> Seen {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self
                .frames()
                .into_iter()
                .find(|s| s.kind == kind && s.at >= since)
            {
                return s;
            }
            assert!(Instant::now() < deadline, "no {kind:?} frame");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn type_line(&mut self, line: &str) {
        self.writer
            .input(format!("{line}\r").as_bytes())
            .await
            .unwrap();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// Every position of `needle` in `hay`.
pub fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// `GET url` with the real curl; returns (status line + headers, body).
pub async fn curl(url: &str) -> (String, String) {
    let curl = labd_hw_fixtures::require_program("curl").unwrap();
    let url = url.to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(curl)
            .args(["-sS", "-i", "--max-time", "60", &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let all = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = all.split_once("\r\n\r\n").unwrap_or((&all, ""));
    (head.to_string(), body.to_string())
}

/// Scrapes `/metrics` on 127.0.0.1:`port`.
pub async fn scrape(port: u16) -> String {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        c.read_to_string(&mut body).unwrap();
        body
    })
    .await
    .unwrap()
}

/// The value of the series `name{labels}` exactly as rendered (`labels` like
/// `device="b1"`; empty for none).
pub fn metric(text: &str, name: &str, labels: &str) -> Option<f64> {
    let key = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .find(|l| l.starts_with(&key))
        .and_then(|l| l[key.len()..].trim().parse().ok())
}

/// Polls `cond` until true or panics with `what`.
pub async fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A datagram socket standing in for systemd's `NOTIFY_SOCKET`: a task records every message
/// with its arrival time.
pub struct NotifySocket {
    pub path: PathBuf,
    pub messages: Arc<Mutex<Vec<(Instant, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl NotifySocket {
    pub fn bind(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        let sock = tokio::net::UnixDatagram::bind(&path).unwrap();
        let messages: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let m = messages.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf).await {
                let text = String::from_utf8(buf[..n].to_vec()).expect("sd_notify is UTF-8");
                m.lock().unwrap().push((Instant::now(), text));
            }
        });
        Self {
            path,
            messages,
            task,
        }
    }

    /// `NOTIFY_SOCKET` for the agent.
    pub fn env(&self) -> (&'static str, String) {
        ("NOTIFY_SOCKET", self.path.display().to_string())
    }

    pub fn all(&self) -> Vec<(Instant, String)> {
        self.messages.lock().unwrap().clone()
    }

    /// Every message but the watchdog pings, in order.
    pub fn states(&self) -> Vec<String> {
        self.all()
            .into_iter()
            .map(|(_, m)| m)
            .filter(|m| m != "WATCHDOG=1")
            .collect()
    }

    /// Waits for a message (not a ping) after the first `skip` such messages that satisfies
    /// `pred`; returns its index among them.
    pub async fn wait_state(
        &self,
        skip: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let states = self.states();
            if let Some(i) = states.iter().skip(skip).position(|m| pred(m)) {
                return skip + i;
            }
            assert!(
                Instant::now() < deadline,
                "no such notify message; got {states:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.task.abort();
    }
}
