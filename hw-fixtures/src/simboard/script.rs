//! What a simulated board does after power-on: its boot script and failure modes.

use std::path::PathBuf;
use std::time::Duration;

/// What the bootloader does when asked to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootloaderMode {
    /// Loads the kernel and starts it.
    Boots,
    /// Prints this error (e.g. `Wrong Image Format for bootm command`) and returns to the
    /// prompt, as U-Boot does when `bootcmd` fails.
    Error(String),
}

/// What the kernel does once started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelMode {
    /// Prints its log and reaches the login prompt.
    Boots,
    /// Prints part of its log, then `Kernel panic - not syncing: <message>` and hangs.
    Panic(String),
    /// Prints nothing after `Starting kernel ...` (a bad DTB, wrong console...).
    NeverBoots,
}

/// A user the login prompt accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    pub password: String,
}

/// The behaviour of a simulated board. Start from [`BoardScript::uboot_linux`] (a U-Boot board
/// booting Linux to a login prompt) or [`BoardScript::silent`] (prints nothing; tests inject
/// bytes with `write_raw`) and adjust fields.
#[derive(Debug, Clone)]
pub struct BoardScript {
    /// Prints nothing and ignores input (input is still recorded).
    pub silent: bool,
    /// Used in the banner, kernel log and login prompt.
    pub hostname: String,
    /// Seconds of the `Hit any key to stop autoboot` countdown (0 boots at once).
    pub autoboot_secs: u32,
    /// Length of one countdown "second" (shorter in tests).
    pub autoboot_tick: Duration,
    /// The bootloader prompt, `=> ` like U-Boot.
    pub bootloader_prompt: String,
    pub bootloader: BootloaderMode,
    pub kernel: KernelMode,
    /// Kernel log lines (without timestamps), printed after `Starting kernel ...`.
    pub kernel_log: Vec<String>,
    /// `None`: no login prompt, the shell starts at once (autologin).
    pub login: Option<Login>,
    /// `PS1` of the shell.
    pub shell_prompt: String,
    /// The real shell run after login.
    pub shell: PathBuf,
    /// Pause between printed lines (makes boots visible in the demo; 0 in tests).
    pub line_delay: Duration,
}

impl BoardScript {
    /// A U-Boot board booting Linux to `login:` (user `root`, password `root`) and a shell.
    pub fn uboot_linux(hostname: &str) -> Self {
        Self {
            silent: false,
            hostname: hostname.to_string(),
            autoboot_secs: 3,
            autoboot_tick: Duration::from_secs(1),
            bootloader_prompt: "=> ".into(),
            bootloader: BootloaderMode::Boots,
            kernel: KernelMode::Boots,
            kernel_log: default_kernel_log(hostname),
            login: Some(Login {
                user: "root".into(),
                password: "root".into(),
            }),
            shell_prompt: format!("root@{hostname}:~# "),
            shell: PathBuf::from("/bin/sh"),
            line_delay: Duration::from_millis(40),
        }
    }

    /// A board that prints nothing; tests drive its output byte by byte.
    pub fn silent() -> Self {
        Self {
            silent: true,
            ..Self::uboot_linux("sim")
        }
    }

    /// The same script without pauses and with a 100 ms countdown tick, for tests.
    pub fn fast(mut self) -> Self {
        self.line_delay = Duration::ZERO;
        self.autoboot_tick = Duration::from_millis(100);
        self
    }
}

fn default_kernel_log(host: &str) -> Vec<String> {
    [
        "Booting Linux on physical CPU 0x0000000000 [0x410fd083]".to_string(),
        format!(
            "Linux version 6.1.0-sim (labd@{host}) (gcc (Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT"
        ),
        "Machine model: labd simulated board".into(),
        "Memory: 1024MB = 1GB total".into(),
        "Serial: 8250/16550 driver, 4 ports, IRQ sharing enabled".into(),
        "printk: console [ttyS0] enabled".into(),
        "mmc0: new high speed SDHC card at address aaaa".into(),
        "EXT4-fs (mmcblk0p2): mounted filesystem with ordered data mode".into(),
        "Freeing unused kernel memory: 1024K".into(),
        "Run /sbin/init as init process".into(),
    ]
    .to_vec()
}
