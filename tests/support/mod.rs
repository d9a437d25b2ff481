//! Helpers shared by the console test binaries.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use labd::console::journal::reader::JournalReader;
use labd::console::journal::{Record, RecordKind};
use labd::console::{
    Console, ConsoleContext, ConsoleEvent, ConsoleSource, ConsoleSpec, ReconnectPolicy,
    Subscription,
};
use labd::ids::DeviceName;

pub fn dev(name: &str) -> DeviceName {
    DeviceName::new(name).unwrap()
}

/// Starts a console on `source` journaling under `dir/journal`, with quick reconnects.
pub fn start_console(dir: &Path, name: &str, source: Arc<dyn ConsoleSource>) -> Console {
    let mut spec = ConsoleSpec::new(source);
    spec.reconnect = ReconnectPolicy {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
    };
    let ctx = ConsoleContext {
        journal_dir: dir.join("journal"),
        journal: Default::default(),
    };
    Console::start(dev(name), spec, &ctx).unwrap()
}

/// Every record of a device's journal.
pub fn journal(dir: &Path, name: &str) -> Vec<Record> {
    JournalReader::open(&dir.join("journal"), &dev(name), None)
        .poll()
        .unwrap()
}

/// Board output in the journal, concatenated.
pub fn journal_output(dir: &Path, name: &str) -> Vec<u8> {
    journal(dir, name)
        .into_iter()
        .filter(|r| r.kind == RecordKind::Output)
        .flat_map(|r| r.data)
        .collect()
}

pub fn markers(dir: &Path, name: &str) -> Vec<String> {
    journal(dir, name)
        .into_iter()
        .filter(|r| r.kind == RecordKind::Marker)
        .map(|r| String::from_utf8_lossy(&r.data).into_owned())
        .collect()
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// Reads data events until `pred(all data so far)` holds; panics after `timeout` with what
/// was received. Non-data events are returned separately.
pub async fn read_until(
    sub: &mut Subscription,
    timeout: Duration,
    pred: impl Fn(&[u8]) -> bool,
) -> (Vec<u8>, Vec<ConsoleEvent>) {
    let mut data = Vec::new();
    let mut other = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while !pred(&data) {
        match tokio::time::timeout_at(deadline, sub.recv()).await {
            Ok(Some(ConsoleEvent::Data(d))) => data.extend_from_slice(&d),
            Ok(Some(ev)) => other.push(ev),
            Ok(None) => panic!("console stopped; got {:?}", String::from_utf8_lossy(&data)),
            Err(_) => panic!(
                "timed out; got {} bytes: {:?} and events {other:?}",
                data.len(),
                String::from_utf8_lossy(&data[data.len().saturating_sub(600)..])
            ),
        }
    }
    (data, other)
}

/// Waits for a non-data event matching `pred`, skipping data.
pub async fn wait_event(
    sub: &mut Subscription,
    timeout: Duration,
    pred: impl Fn(&ConsoleEvent) -> bool,
) -> ConsoleEvent {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, sub.recv()).await {
            Ok(Some(ev)) if pred(&ev) => return ev,
            Ok(Some(_)) => {}
            Ok(None) => panic!("console stopped"),
            Err(_) => panic!("timed out waiting for an event"),
        }
    }
}

/// Polls `cond` until true or panics with `what`.
pub async fn eventually(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            panic!("timed out: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs blocking fixture code off the runtime.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// All 256 byte values three times, 0xFF runs included.
pub fn every_byte() -> Vec<u8> {
    let mut v: Vec<u8> = (0..=255u8).collect();
    v.extend((0..=255u8).rev());
    v.extend([0xff, 0xff, 0xff, 0x00, b'\r', 0x00, b'\r', b'\n', 0xff]);
    v
}

pub fn temp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

pub fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Expect-style reading of a subscription: `expect` consumes up to the end of a match and
/// keeps the rest for the next call.
pub struct Expect {
    pub sub: Subscription,
    buf: Vec<u8>,
    pub events: Vec<ConsoleEvent>,
}

impl Expect {
    pub fn new(sub: Subscription) -> Self {
        Self {
            sub,
            buf: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Everything up to and including `needle`.
    pub async fn expect(&mut self, needle: &[u8], timeout: Duration) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(p) = self.buf.windows(needle.len()).position(|w| w == needle) {
                let rest = self.buf.split_off(p + needle.len());
                return std::mem::replace(&mut self.buf, rest);
            }
            match tokio::time::timeout_at(deadline, self.sub.recv()).await {
                Ok(Some(ConsoleEvent::Data(d))) => self.buf.extend_from_slice(&d),
                Ok(Some(ev)) => self.events.push(ev),
                Ok(None) => panic!(
                    "console stopped waiting for {:?}",
                    String::from_utf8_lossy(needle)
                ),
                Err(_) => panic!(
                    "timed out waiting for {:?}; have {:?}",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(&self.buf[self.buf.len().saturating_sub(600)..])
                ),
            }
        }
    }

    /// Drops what is queued and buffered.
    pub fn drain(&mut self) {
        while self.sub.try_recv().is_some() {}
        self.buf.clear();
    }
}

/// `[worker]` plus one `[[device]]` per `(name, tty, listen port)`.
pub fn inventory(state_dir: &Path, devices: &[(&str, PathBuf, Option<u16>)]) -> String {
    let mut t = format!(
        "[worker]\nname = \"w1\"\nstate_dir = \"{}\"\n\n",
        state_dir.display()
    );
    for (name, tty, listen) in devices {
        t.push_str(&format!(
            "[[device]]\nname = \"{name}\"\ndevice_type = \"sim\"\n[device.console]\ntty = \"{}\"\n",
            tty.display()
        ));
        if let Some(p) = listen {
            t.push_str(&format!("listen = {p}\n"));
        }
        t.push('\n');
    }
    t
}

/// The real `labd agent` binary, stopped (SIGTERM) when dropped.
pub struct Agent {
    pub child: labd_hw_fixtures::ChildGuard,
    pub inventory: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Agent {
    /// Writes `dir/inventory.toml` and starts the daemon on it; returns once it answers.
    pub async fn start(dir: &Path, inventory_text: &str) -> Agent {
        let inventory = dir.join("inventory.toml");
        std::fs::write(&inventory, inventory_text).unwrap();
        let log = dir.join("agent.log");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_labd"))
            .args(["agent", "-c"])
            .arg(&inventory)
            .env("RUST_LOG", "debug")
            .stdout(std::fs::File::create(dir.join("agent.out")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let agent = Agent {
            child: labd_hw_fixtures::ChildGuard::new("labd agent", child),
            socket: dir.join("state").join("labd.sock"),
            inventory,
            log,
        };
        let client = labd::control::ControlClient::new(&agent.socket);
        let deadline = Instant::now() + Duration::from_secs(20);
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

    pub fn client(&self) -> labd::control::ControlClient {
        labd::control::ControlClient::new(&self.socket)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    pub async fn status(&self) -> labd::control::StatusReply {
        let v = self
            .client()
            .request(serde_json::json!({"request": "status"}))
            .await
            .unwrap();
        serde_json::from_value(v).unwrap()
    }
}

/// A program running on a pseudo-terminal (for `labd console`, `telnet`).
pub struct OnPty {
    pub child: labd_hw_fixtures::ChildGuard,
    master: std::os::fd::OwnedFd,
    pub seen: Vec<u8>,
}

impl OnPty {
    pub fn spawn(cmd: &mut std::process::Command) -> OnPty {
        use std::os::fd::AsFd;
        let pty = labd_hw_fixtures::simboard::Pty::open_raw().unwrap();
        // A terminal as a user has it: cooked, echoing; the program puts it in raw mode itself.
        let mut t = nix::sys::termios::tcgetattr(pty.slave.as_fd()).unwrap();
        t.local_flags |=
            nix::sys::termios::LocalFlags::ICANON | nix::sys::termios::LocalFlags::ECHO;
        nix::sys::termios::tcsetattr(pty.slave.as_fd(), nix::sys::termios::SetArg::TCSANOW, &t)
            .unwrap();
        let child = cmd
            .stdin(std::process::Stdio::from(pty.slave.try_clone().unwrap()))
            .stdout(std::process::Stdio::from(pty.slave.try_clone().unwrap()))
            .stderr(std::process::Stdio::from(pty.slave.try_clone().unwrap()))
            .spawn()
            .unwrap();
        OnPty {
            child: labd_hw_fixtures::ChildGuard::new("on pty", child),
            master: pty.master,
            seen: Vec::new(),
        }
    }

    pub fn write(&self, data: &[u8]) {
        use std::os::fd::AsFd;
        labd_hw_fixtures::simboard::pty::write_all_nb(
            self.master.as_fd(),
            data,
            Duration::from_secs(5),
        )
        .unwrap();
    }

    /// Reads until `needle` has been seen (anywhere since start); returns everything so far.
    pub fn expect(&mut self, needle: &[u8], timeout: Duration) -> Vec<u8> {
        if !self.try_expect(needle, timeout) {
            panic!(
                "timed out waiting for {:?}; terminal shows {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(&self.seen)
            );
        }
        self.seen.clone()
    }

    /// [`Self::expect`] that says whether `needle` came within `timeout`.
    pub fn try_expect(&mut self, needle: &[u8], timeout: Duration) -> bool {
        use std::os::fd::AsFd;
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while !contains(&self.seen, needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let _ = labd_hw_fixtures::simboard::pty::wait_readable(
                self.master.as_fd(),
                left.min(Duration::from_millis(100)),
            );
            match labd_hw_fixtures::simboard::pty::read_some(self.master.as_fd(), &mut buf) {
                Ok(n) => self.seen.extend_from_slice(&buf[..n]),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        true
    }

    /// Waits for the program to exit; returns its status.
    pub fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.child.is_running() {
                return self.child.stop(Duration::from_millis(10));
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
