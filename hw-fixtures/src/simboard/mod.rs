//! A simulated board on a pseudo-terminal.
//!
//! On power-on it prints a U-Boot-like banner with an autoboot countdown that a keypress
//! interrupts, accepts a few bootloader commands at `=> `, prints a kernel log (or panics, or
//! never boots), then `login:` / `Password:` and, after login, relays a real `/bin/sh` running
//! on its own inner pty. See [`BoardScript`] for the knobs.
//!
//! Tests (and the PDU simulator, from any thread) control it through [`BoardControl`]:
//! `power_on`/`power_off` (power-off stops all output and kills the shell), `unplug`/`replug`
//! (the stable symlink disappears, then points at a brand-new pty, like a USB re-enumeration).
//! Everything the console sends to the board is recorded (`input`, `wait_for_input`).

mod firmware;
pub mod pty;
mod script;
mod shell;

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use pty::Pty;
pub use script::{BoardScript, BootloaderMode, KernelMode, Login};

/// Where the board's firmware is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Off,
    /// Banner and autoboot countdown.
    Bootloader,
    /// Waiting at `=> `.
    BootloaderPrompt,
    Kernel,
    Login,
    Shell,
    /// Panicked, never booted, or a silent board: waits for power-off.
    Halted,
}

pub(crate) enum Event {
    Input(Vec<u8>),
    ShellExited,
    PowerOff,
}

/// How long a write to the console may wait for the other end to read before the rest is
/// dropped (a real UART with nobody reading drops too).
const MAX_BLOCK: Duration = Duration::from_millis(1000);

struct Port {
    pty: Pty,
    stop: AtomicBool,
    reader: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct Power {
    on: bool,
    events: Option<Sender<Event>>,
    firmware: Option<JoinHandle<()>>,
    shell_pid: Option<i32>,
}

pub(crate) struct Inner {
    name: String,
    link: PathBuf,
    script: Mutex<BoardScript>,
    port: Mutex<Option<Arc<Port>>>,
    power: Mutex<Power>,
    /// Odd while powered; bumped on every power change, so stale threads go quiet.
    generation: AtomicU64,
    input: Mutex<Vec<u8>>,
    input_cond: Condvar,
    stage: Mutex<Stage>,
    stage_cond: Condvar,
    dropped: AtomicU64,
    emitted: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    pub(crate) fn script(&self) -> BoardScript {
        lock(&self.script).clone()
    }

    pub(crate) fn is_powered_gen(&self, generation: u64) -> bool {
        self.generation.load(Ordering::SeqCst) == generation
    }

    pub(crate) fn set_stage(&self, s: Stage) {
        *lock(&self.stage) = s;
        self.stage_cond.notify_all();
    }

    pub(crate) fn set_shell_pid(&self, pid: Option<i32>) {
        lock(&self.power).shell_pid = pid;
    }

    pub(crate) fn events_sender(&self) -> Option<Sender<Event>> {
        lock(&self.power).events.clone()
    }

    /// Writes to the console if still powered in `generation` and plugged in.
    pub(crate) fn emit(&self, generation: u64, data: &[u8]) {
        if !self.is_powered_gen(generation) {
            return;
        }
        self.write_port(data);
    }

    fn write_port(&self, data: &[u8]) -> usize {
        let Some(port) = lock(&self.port).clone() else {
            self.dropped.fetch_add(data.len() as u64, Ordering::Relaxed);
            return 0;
        };
        let n = pty::write_all_nb(port.pty.master.as_fd(), data, MAX_BLOCK).unwrap_or(0);
        self.emitted.fetch_add(n as u64, Ordering::Relaxed);
        self.dropped
            .fetch_add((data.len() - n) as u64, Ordering::Relaxed);
        n
    }

    fn plug(self: &Arc<Self>) -> std::io::Result<()> {
        let pty = Pty::open_raw()?;
        pty::replace_symlink(&pty.slave_path, &self.link)?;
        let port = Arc::new(Port {
            pty,
            stop: AtomicBool::new(false),
            reader: Mutex::new(None),
        });
        let inner = self.clone();
        let p = port.clone();
        let reader = std::thread::Builder::new()
            .name(format!("simboard-{}", self.name))
            .spawn(move || inner.read_port(&p))?;
        *lock(&port.reader) = Some(reader);
        *lock(&self.port) = Some(port);
        Ok(())
    }

    /// Records console input and hands it to the firmware while powered.
    fn read_port(&self, port: &Port) {
        let mut buf = [0u8; 4096];
        while !port.stop.load(Ordering::SeqCst) {
            match pty::wait_readable(port.pty.master.as_fd(), Duration::from_millis(50)) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(_) => break,
            }
            let n = match pty::read_some(port.pty.master.as_fd(), &mut buf) {
                Ok(0) => continue,
                Ok(n) => n,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            let data = buf[..n].to_vec();
            lock(&self.input).extend_from_slice(&data);
            self.input_cond.notify_all();
            if let Some(tx) = lock(&self.power).events.as_ref() {
                let _ = tx.send(Event::Input(data));
            }
        }
    }

    fn unplug(&self) {
        let port = lock(&self.port).take();
        if let Some(port) = port {
            let _ = std::fs::remove_file(&self.link);
            port.stop.store(true, Ordering::SeqCst);
            if let Some(t) = lock(&port.reader).take() {
                let _ = t.join();
            }
            // The pty closes when the last writer lets go of `port`.
        }
    }
}

/// Control of a simulated board, cloneable and usable from any thread.
#[derive(Clone)]
pub struct BoardControl {
    inner: Arc<Inner>,
}

impl BoardControl {
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The stable tty path (a symlink to the current pty), what an inventory's `tty` names.
    pub fn tty_path(&self) -> PathBuf {
        self.inner.link.clone()
    }

    /// The pty currently behind the symlink (`None` while unplugged).
    pub fn pty_path(&self) -> Option<PathBuf> {
        lock(&self.inner.port)
            .as_ref()
            .map(|p| p.pty.slave_path.clone())
    }

    /// The baud rate currently set on the tty (by labd, or ser2net through RFC 2217).
    pub fn tty_baud(&self) -> Option<u32> {
        let port = lock(&self.inner.port).clone()?;
        pty::baud_rate(port.pty.slave.as_fd()).ok().flatten()
    }

    pub fn is_powered(&self) -> bool {
        lock(&self.inner.power).on
    }

    pub fn is_plugged(&self) -> bool {
        lock(&self.inner.port).is_some()
    }

    /// Powers the board on (boots from the start); no-op if already on.
    pub fn power_on(&self) {
        let mut p = lock(&self.inner.power);
        if p.on {
            return;
        }
        if let Some(t) = p.firmware.take() {
            let _ = t.join();
        }
        let generation = self.inner.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let (tx, rx) = mpsc::channel();
        p.on = true;
        p.events = Some(tx);
        let inner = self.inner.clone();
        p.firmware = std::thread::Builder::new()
            .name(format!("simboard-fw-{}", self.inner.name))
            .spawn(move || {
                let mut ctx = firmware::Ctx {
                    inner,
                    generation,
                    events: rx,
                    pending: VecDeque::new(),
                    shell_exited: false,
                };
                let _ = firmware::run(&mut ctx);
            })
            .ok();
    }

    /// Cuts power: output stops at once, the shell (and everything it started) is killed.
    pub fn power_off(&self) {
        let (firmware, pid) = {
            let mut p = lock(&self.inner.power);
            if !p.on {
                return;
            }
            p.on = false;
            self.inner.generation.fetch_add(1, Ordering::SeqCst);
            if let Some(tx) = p.events.take() {
                let _ = tx.send(Event::PowerOff);
            }
            (p.firmware.take(), p.shell_pid.take())
        };
        if let Some(pid) = pid {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Some(t) = firmware {
            let _ = t.join();
        }
        self.inner.set_stage(Stage::Off);
    }

    /// Power-cycles the board.
    pub fn reset(&self) {
        self.power_off();
        self.power_on();
    }

    /// Pulls the USB cable: the symlink disappears and whoever has the tty open gets a hangup.
    /// The board keeps running; what it prints meanwhile is lost.
    pub fn unplug(&self) {
        self.inner.unplug();
    }

    /// Plugs the cable back: a new pty, the symlink points at it. No-op if plugged.
    pub fn replug(&self) -> std::io::Result<()> {
        if self.is_plugged() {
            return Ok(());
        }
        self.inner.plug()
    }

    /// Changes the script; applies from the next power-on.
    pub fn set_script(&self, script: BoardScript) {
        *lock(&self.inner.script) = script;
    }

    /// Writes bytes to the console as if the board printed them (only while powered and
    /// plugged). Returns how many were written (the rest were dropped: nobody read them).
    pub fn write_raw(&self, data: &[u8]) -> usize {
        if !self.is_powered() {
            return 0;
        }
        self.inner.write_port(data)
    }

    /// Everything the console has sent to the board so far.
    pub fn input(&self) -> Vec<u8> {
        lock(&self.inner.input).clone()
    }

    /// Forgets the recorded input.
    pub fn clear_input(&self) {
        lock(&self.inner.input).clear();
    }

    /// Waits until the recorded input contains `needle`.
    pub fn wait_for_input(&self, needle: &[u8], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut input = lock(&self.inner.input);
        loop {
            if input.windows(needle.len().max(1)).any(|w| w == needle) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            input = self
                .inner
                .input_cond
                .wait_timeout(input, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    pub fn stage(&self) -> Stage {
        *lock(&self.inner.stage)
    }

    /// Waits until the firmware reaches `stage`.
    pub fn wait_for_stage(&self, stage: Stage, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = lock(&self.inner.stage);
        while *s != stage {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self
                .inner
                .stage_cond
                .wait_timeout(s, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// Bytes the board printed that reached the pty / that were dropped (unplugged, nobody
    /// reading).
    pub fn output_counts(&self) -> (u64, u64) {
        (
            self.inner.emitted.load(Ordering::Relaxed),
            self.inner.dropped.load(Ordering::Relaxed),
        )
    }
}

/// A simulated board; dropping it powers it off and unplugs it.
pub struct SimBoard {
    control: BoardControl,
}

impl SimBoard {
    /// Creates a board, plugged in (its symlink `dir/name` exists) and powered off.
    pub fn spawn(name: &str, dir: &Path, script: BoardScript) -> std::io::Result<Self> {
        let inner = Arc::new(Inner {
            name: name.to_string(),
            link: dir.join(name),
            script: Mutex::new(script),
            port: Mutex::new(None),
            power: Mutex::new(Power::default()),
            generation: AtomicU64::new(0),
            input: Mutex::new(Vec::new()),
            input_cond: Condvar::new(),
            stage: Mutex::new(Stage::Off),
            stage_cond: Condvar::new(),
            dropped: AtomicU64::new(0),
            emitted: AtomicU64::new(0),
        });
        inner.plug()?;
        Ok(Self {
            control: BoardControl { inner },
        })
    }

    /// A cloneable controller (for a PDU simulator, another thread...).
    pub fn control(&self) -> BoardControl {
        self.control.clone()
    }
}

impl std::ops::Deref for SimBoard {
    type Target = BoardControl;
    fn deref(&self) -> &BoardControl {
        &self.control
    }
}

impl Drop for SimBoard {
    fn drop(&mut self) {
        self.control.power_off();
        self.control.unplug();
    }
}
