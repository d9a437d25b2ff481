//! Runs the real `udevadm` (its real rules, `usb_id`, `path_id` and hwdb) against a
//! [`super::SimSysfs`] inside a private mount namespace: the simulated tree is bind-mounted over
//! `/sys`, fresh tmpfs over `/dev` and `/run`, and a chosen rules directory over
//! `/etc/udev/rules.d`. Nothing outside the namespace is touched; the links udev creates land in
//! the private `/dev` and are listed back.
//!
//! Needs root (CAP_SYS_ADMIN for `unshare -m`), `unshare` and `udevadm`.
//! `SYSTEMD_DEVICE_VERIFY_SYSFS=0` lets sd-device accept a tree that is not a real sysfs mount.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::util::require_program;

/// What one sandbox run produced.
#[derive(Debug, Clone, Default)]
pub struct UdevRun {
    /// Per tty devpath: the `udevadm info --query=property` output after its `add`.
    pub properties: BTreeMap<String, String>,
    /// Per tty devpath: the `udevadm test` log (which rule set what).
    pub logs: BTreeMap<String, String>,
    /// Links udev created in the private `/dev`: link path → target as written.
    pub links: BTreeMap<String, String>,
    /// Output (stdout and stderr) of the command run afterwards in the sandbox, if any.
    pub command_output: String,
}

/// A sandbox: the simulated sysfs root and the rules directory to use (empty dir = stock rules
/// only).
#[derive(Debug, Clone)]
pub struct UdevSandbox {
    pub sys_root: PathBuf,
    pub rules_dir: PathBuf,
    /// Create `/run/udev/control` so programs (and libudev) believe a udev daemon runs.
    pub udev_control: bool,
    /// Also a private network namespace, so [`super::UdevBroadcaster`] events reach only the
    /// sandbox's listeners.
    pub net_namespace: bool,
}

const MARK: &str = "=====labd-sandbox";

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl UdevSandbox {
    pub fn new(sys_root: impl Into<PathBuf>, rules_dir: impl Into<PathBuf>) -> Self {
        Self {
            sys_root: sys_root.into(),
            rules_dir: rules_dir.into(),
            udev_control: false,
            net_namespace: false,
        }
    }

    /// [`Self::add_all`], then runs `command` (a shell command line) inside the sandbox, with
    /// the simulated `/sys`, the udev database and the links in place.
    pub fn add_all_then(&self, devpaths: &[String], command: &str) -> anyhow::Result<UdevRun> {
        self.run(devpaths, Some(command))
    }

    /// Runs `udevadm test --action=add` on each tty in order (they share one `/dev` and udev
    /// database, like devices added one after the other), then dumps properties and links.
    pub fn add_all(&self, devpaths: &[String]) -> anyhow::Result<UdevRun> {
        self.run(devpaths, None)
    }

    fn run(&self, devpaths: &[String], command: Option<&str>) -> anyhow::Result<UdevRun> {
        let unshare = require_program("unshare")?;
        let udevadm = require_program("udevadm")?;
        let mut script = String::from("set -e\n");
        let _ = writeln!(
            script,
            "mount --bind {} /sys\nmount -t tmpfs tmpfs /dev\nmknod -m 666 /dev/null c 1 3\nmount -t tmpfs tmpfs /run\nmount --bind {} /etc/udev/rules.d",
            shell_quote(&self.sys_root.display().to_string()),
            shell_quote(&self.rules_dir.display().to_string())
        );
        let _ = writeln!(
            script,
            "export SYSTEMD_DEVICE_VERIFY_SYSFS=0 SYSTEMD_LOG_LEVEL=debug"
        );
        let udevadm = shell_quote(&udevadm.display().to_string());
        for d in devpaths {
            let sys = shell_quote(&format!("/sys{d}"));
            let _ = writeln!(script, "echo '{MARK} log {d}'");
            let _ = writeln!(script, "{udevadm} test --action=add {sys} 2>&1 || true");
            let _ = writeln!(script, "echo '{MARK} props {d}'");
            let _ = writeln!(script, "{udevadm} info --query=property --path={sys}");
        }
        if self.udev_control {
            let _ = writeln!(script, "mkdir -p /run/udev && : > /run/udev/control");
        }
        if let Some(cmd) = command {
            let _ = writeln!(script, "echo '{MARK} command'");
            let _ = writeln!(script, "({cmd}) 2>&1 || echo \"exit status $?\"");
        }
        let _ = writeln!(script, "echo '{MARK} links'");
        let _ = writeln!(script, "find /dev -type l -printf '%p %l\\n'");
        let mut cmd = Command::new(&unshare);
        cmd.args(["-m", "--propagation", "private"]);
        if self.net_namespace {
            cmd.arg("-n");
        }
        let out = cmd
            .args(["sh", "-c", &script])
            .output()
            .context("running unshare")?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            anyhow::bail!(
                "udev sandbox failed ({}); needs root for `unshare -m`:\n{}\n{}",
                out.status,
                stdout,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(parse_output(&stdout))
    }
}

fn parse_output(stdout: &str) -> UdevRun {
    let mut run = UdevRun::default();
    let mut section: Option<(String, String)> = None;
    let mut buf = String::new();
    let finish = |section: &Option<(String, String)>, buf: &mut String, run: &mut UdevRun| {
        if let Some((kind, key)) = section {
            match kind.as_str() {
                "log" => {
                    run.logs.insert(key.clone(), std::mem::take(buf));
                }
                "props" => {
                    run.properties.insert(key.clone(), std::mem::take(buf));
                }
                "command" => run.command_output = std::mem::take(buf),
                "links" => {
                    for l in buf.lines() {
                        if let Some((p, t)) = l.split_once(' ') {
                            run.links.insert(p.to_string(), t.to_string());
                        }
                    }
                    buf.clear();
                }
                _ => buf.clear(),
            }
        }
    };
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix(MARK) {
            finish(&section, &mut buf, &mut run);
            let rest = rest.trim();
            let (kind, key) = rest.split_once(' ').unwrap_or((rest, ""));
            section = Some((kind.to_string(), key.to_string()));
            continue;
        }
        buf.push_str(line);
        buf.push('\n');
    }
    finish(&section, &mut buf, &mut run);
    run
}

/// Where the link points, resolved against its directory (`../../ttyUSB0` → `/dev/ttyUSB0`).
pub fn resolve_link(link: &str, target: &str) -> String {
    let base = Path::new(link).parent().unwrap_or(Path::new("/"));
    let mut out = PathBuf::new();
    for c in base.join(target).components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out.display().to_string()
}
