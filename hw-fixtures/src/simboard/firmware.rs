//! The board's "firmware": runs on its own thread for one power cycle, printing through the
//! current pty and reading what the console sends. Every wait returns `Err(Off)` as soon as the
//! board loses power, so power-off stops all output at once.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::script::{BootloaderMode, KernelMode};
use super::{Event, Inner, Stage, shell};

/// The board lost power (or is being dropped).
#[derive(Debug)]
pub(crate) struct Off;

pub(crate) struct Ctx {
    pub(crate) inner: Arc<Inner>,
    pub(crate) generation: u64,
    pub(crate) events: Receiver<Event>,
    pub(crate) pending: VecDeque<u8>,
    pub(crate) shell_exited: bool,
}

type R<T> = Result<T, Off>;

impl Ctx {
    fn alive(&self) -> R<()> {
        if self.inner.is_powered_gen(self.generation) {
            Ok(())
        } else {
            Err(Off)
        }
    }

    pub(crate) fn emit(&self, data: &[u8]) -> R<()> {
        self.alive()?;
        self.inner.emit(self.generation, data);
        Ok(())
    }

    fn say(&self, s: &str) -> R<()> {
        self.emit(s.as_bytes())
    }

    fn line(&mut self, s: &str) -> R<()> {
        self.say(s)?;
        self.say("\r\n")?;
        let d = self.inner.script().line_delay;
        if !d.is_zero() {
            self.sleep(d)?;
        }
        Ok(())
    }

    /// Waits for one event for at most `timeout`; input goes to `pending`.
    pub(crate) fn pump(&mut self, timeout: Duration) -> R<()> {
        match self.events.recv_timeout(timeout) {
            Ok(Event::Input(b)) => self.pending.extend(b),
            Ok(Event::ShellExited) => self.shell_exited = true,
            Ok(Event::PowerOff) | Err(RecvTimeoutError::Disconnected) => return Err(Off),
            Err(RecvTimeoutError::Timeout) => {}
        }
        self.alive()
    }

    /// Sleeps, still collecting input (a keypress during the countdown counts).
    pub(crate) fn sleep(&mut self, d: Duration) -> R<()> {
        let until = Instant::now() + d;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return self.alive();
            }
            self.pump(left)?;
        }
    }

    /// Waits until power-off.
    fn halt(&mut self) -> R<()> {
        self.inner.set_stage(Stage::Halted);
        loop {
            self.pending.clear();
            self.pump(Duration::from_secs(3600))?;
        }
    }

    fn getc(&mut self) -> R<u8> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Ok(b);
            }
            self.pump(Duration::from_secs(3600))?;
        }
    }

    /// Reads a line with echo (or without, for passwords), handling backspace; CR, LF or CR LF
    /// end it.
    fn read_line(&mut self, echo: bool) -> R<String> {
        let mut line = Vec::new();
        loop {
            match self.getc()? {
                b'\r' | b'\n' => {
                    if let Some(b'\n') | Some(0) = self.pending.front() {
                        self.pending.pop_front();
                    }
                    if echo {
                        self.say("\r\n")?;
                    }
                    return Ok(String::from_utf8_lossy(&line).into_owned());
                }
                0x7f | 0x08 => {
                    if line.pop().is_some() && echo {
                        self.say("\x08 \x08")?;
                    }
                }
                0x03 => {
                    line.clear();
                    if echo {
                        self.say("^C\r\n")?;
                    }
                    return Ok(String::new());
                }
                b => {
                    line.push(b);
                    if echo {
                        self.emit(&[b])?;
                    }
                }
            }
        }
    }
}

enum Next {
    Boot,
    Reset,
}

/// One power cycle.
pub(crate) fn run(ctx: &mut Ctx) -> R<()> {
    if ctx.inner.script().silent {
        ctx.inner.set_stage(Stage::Halted);
        loop {
            ctx.pending.clear();
            ctx.pump(Duration::from_secs(3600))?;
        }
    }
    loop {
        match bootloader(ctx)? {
            Next::Reset => continue,
            Next::Boot => {
                kernel(ctx)?;
                userspace(ctx)?;
            }
        }
    }
}

fn bootloader(ctx: &mut Ctx) -> R<Next> {
    let s = ctx.inner.script();
    ctx.inner.set_stage(Stage::Bootloader);
    ctx.pending.clear();
    ctx.line("")?;
    ctx.line("U-Boot SPL 2024.01-sim (Jan 08 2024 - 12:00:00 +0000)")?;
    ctx.line("Trying to boot from MMC1")?;
    ctx.line("")?;
    ctx.line("")?;
    ctx.line("U-Boot 2024.01-sim (Jan 08 2024 - 12:00:00 +0000)")?;
    ctx.line("")?;
    ctx.line("CPU  : labd simulated SoC")?;
    ctx.line(&format!("Model: labd simulated board ({})", s.hostname))?;
    ctx.line("DRAM:  1 GiB")?;
    ctx.line("MMC:   mmc@1c0f000: 0")?;
    ctx.line("In:    serial")?;
    ctx.line("Out:   serial")?;
    ctx.line("Err:   serial")?;
    ctx.line("Net:   eth0: ethernet@1c30000")?;
    let mut env = BTreeMap::new();
    env.insert("bootdelay".to_string(), s.autoboot_secs.to_string());
    env.insert("bootcmd".to_string(), "run mmcboot".to_string());
    env.insert(
        "bootargs".to_string(),
        "console=ttyS0,115200 root=/dev/mmcblk0p2 rw".to_string(),
    );
    let mut interrupted = false;
    if s.autoboot_secs > 0 {
        ctx.pending.clear();
        ctx.say(&format!(
            "Hit any key to stop autoboot: {:2} ",
            s.autoboot_secs
        ))?;
        let mut left = s.autoboot_secs;
        while left > 0 {
            ctx.sleep(s.autoboot_tick)?;
            if !ctx.pending.is_empty() {
                ctx.pending.clear();
                interrupted = true;
                break;
            }
            left -= 1;
            ctx.say(&format!("\x08\x08\x08{left:2} "))?;
        }
        ctx.say("\r\n")?;
    }
    if !interrupted {
        // When bootcmd fails, U-Boot falls back to its prompt.
        if let Some(next) = boot(ctx)? {
            return Ok(next);
        }
    }
    prompt(ctx, &mut env)
}

/// Runs the boot command; `None` when the bootloader fails.
fn boot(ctx: &mut Ctx) -> R<Option<Next>> {
    let s = ctx.inner.script();
    ctx.line("switch to partitions #0, OK")?;
    ctx.line("mmc0 is current device")?;
    ctx.line("Scanning mmc 0:1...")?;
    match &s.bootloader {
        BootloaderMode::Error(msg) => {
            for l in msg.lines() {
                ctx.line(l)?;
            }
            Ok(None)
        }
        BootloaderMode::Boots => {
            ctx.line("## Booting kernel from Legacy Image at 82000000 ...")?;
            ctx.line("   Image Name:   Linux-6.1.0-sim")?;
            ctx.line("   Verifying Checksum ... OK")?;
            ctx.line("## Flattened Device Tree blob at 88000000")?;
            ctx.line("   Loading Kernel Image")?;
            ctx.line("")?;
            ctx.line("Starting kernel ...")?;
            ctx.line("")?;
            Ok(Some(Next::Boot))
        }
    }
}

fn prompt(ctx: &mut Ctx, env: &mut BTreeMap<String, String>) -> R<Next> {
    let s = ctx.inner.script();
    loop {
        ctx.inner.set_stage(Stage::BootloaderPrompt);
        ctx.say(&s.bootloader_prompt)?;
        let line = ctx.read_line(true)?;
        let mut words = line.split_whitespace();
        let Some(cmd) = words.next() else { continue };
        let args: Vec<&str> = words.collect();
        match cmd {
            "boot" | "bootm" | "bootz" | "booti" => {
                if let Some(next) = boot(ctx)? {
                    return Ok(next);
                }
            }
            "run" if args.first() == Some(&"bootcmd") => {
                if let Some(next) = boot(ctx)? {
                    return Ok(next);
                }
            }
            "reset" => {
                ctx.line("resetting ...")?;
                return Ok(Next::Reset);
            }
            "setenv" => match args.split_first() {
                Some((name, [])) => {
                    env.remove(*name);
                }
                Some((name, value)) => {
                    env.insert(name.to_string(), value.join(" "));
                }
                None => ctx.line("Usage: setenv name [value ...]")?,
            },
            "printenv" => {
                if args.is_empty() {
                    for (k, v) in env.iter() {
                        ctx.line(&format!("{k}={v}"))?;
                    }
                    ctx.line("")?;
                    ctx.line(&format!("Environment size: {}/8188 bytes", env.len() * 32))?;
                } else {
                    for name in args {
                        match env.get(name) {
                            Some(v) => ctx.line(&format!("{name}={v}"))?,
                            None => ctx.line(&format!("## Error: \"{name}\" not defined"))?,
                        }
                    }
                }
            }
            "echo" => ctx.line(&args.join(" "))?,
            "version" => ctx.line("U-Boot 2024.01-sim (Jan 08 2024 - 12:00:00 +0000)")?,
            "help" => {
                for l in [
                    "boot      - boot default, i.e., run 'bootcmd'",
                    "bootm     - boot application image from memory",
                    "echo      - echo args to console",
                    "printenv  - print environment variables",
                    "reset     - Perform RESET of the CPU",
                    "setenv    - set environment variables",
                    "version   - print monitor, compiler and linker version",
                ] {
                    ctx.line(l)?;
                }
            }
            other => ctx.line(&format!("Unknown command '{other}' - try 'help'"))?,
        }
    }
}

fn kernel(ctx: &mut Ctx) -> R<()> {
    let s = ctx.inner.script();
    ctx.inner.set_stage(Stage::Kernel);
    if s.kernel == KernelMode::NeverBoots {
        return ctx.halt();
    }
    let panic_at = match &s.kernel {
        KernelMode::Panic(_) => s.kernel_log.len().min(6),
        _ => s.kernel_log.len(),
    };
    let mut t = 0.0f64;
    for (i, l) in s.kernel_log.iter().enumerate().take(panic_at) {
        ctx.line(&format!("[{t:12.6}] {l}"))?;
        t += if i < 4 { 0.0 } else { 0.1234 };
    }
    if let KernelMode::Panic(msg) = &s.kernel {
        ctx.line(&format!(
            "[{:12.6}] Kernel panic - not syncing: {msg}",
            t + 0.2
        ))?;
        ctx.line(&format!(
            "[{:12.6}] ---[ end Kernel panic - not syncing: {msg} ]---",
            t + 0.2
        ))?;
        return ctx.halt();
    }
    ctx.line("")?;
    ctx.line("Welcome to Debian GNU/Linux 12 (bookworm)!")?;
    ctx.line("")?;
    Ok(())
}

/// Login prompt, then a real shell; back to the login prompt when the shell exits.
fn userspace(ctx: &mut Ctx) -> R<()> {
    let s = ctx.inner.script();
    loop {
        if let Some(login) = &s.login {
            ctx.inner.set_stage(Stage::Login);
            ctx.line("")?;
            ctx.line(&format!("Debian GNU/Linux 12 {} ttyS0", s.hostname))?;
            ctx.line("")?;
            loop {
                ctx.say(&format!("{} login: ", s.hostname))?;
                let user = ctx.read_line(true)?;
                if user.is_empty() {
                    continue;
                }
                ctx.say("Password: ")?;
                let password = ctx.read_line(false)?;
                ctx.say("\r\n")?;
                if user == login.user && password == login.password {
                    break;
                }
                ctx.sleep(Duration::from_millis(200))?;
                ctx.line("Login incorrect")?;
            }
            ctx.line(&format!(
                "Linux {} 6.1.0-sim #1 SMP PREEMPT armv7l",
                s.hostname
            ))?;
            ctx.line("")?;
        }
        ctx.inner.set_stage(Stage::Shell);
        shell::run(ctx, &s.shell, &s.shell_prompt)?;
        if s.login.is_none() {
            ctx.line("")?;
        }
    }
}
