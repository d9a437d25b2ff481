//! `command`: runs the admin's programs as argument vectors (no shell unless they write
//! `sh -c`), with `{outlet}`, `{pdu}` and `{device}` substituted per argument. Names and outlets
//! are restricted to `[A-Za-z0-9._-]`, so even inside an `sh -c` script they cannot inject code.
//! Output goes to the daemon log and back to the caller for the job log.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::power::driver::{
    DriverError, DriverErrorKind, DriverFuture, DriverReply, OutletState, OutletTarget, PowerDriver,
};
use crate::power::settings::CommandTemplate;

/// Lines kept per command run; the rest is counted, not stored.
const MAX_LINES: usize = 200;

#[derive(Debug, Clone, Default)]
pub struct CommandDriver {
    pub on: Option<CommandTemplate>,
    pub off: Option<CommandTemplate>,
    pub reboot: Option<CommandTemplate>,
    pub state: Option<CommandTemplate>,
}

/// Kills the command's whole process group if the run is abandoned (timeout, cancellation),
/// so a stuck `ssh` or `snmpset` does not outlive its request.
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

async fn collect<R: AsyncRead + Unpin>(
    r: R,
    tag: &'static str,
    argv0: String,
) -> (Vec<String>, usize) {
    let mut lines = BufReader::new(r).lines();
    let mut kept = Vec::new();
    let mut dropped = 0;
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => {
                tracing::debug!(target: "labd::power::command", command = %argv0, stream = tag, "{line}");
                if kept.len() < MAX_LINES {
                    kept.push(line);
                } else {
                    dropped += 1;
                }
            }
            Ok(None) => break,
            Err(e) => {
                kept.push(format!("[{tag} unreadable: {e}]"));
                break;
            }
        }
    }
    (kept, dropped)
}

/// Runs one argument vector; `Ok` holds its stdout lines when it exits 0.
pub async fn run(argv: &[String]) -> Result<(Vec<String>, DriverReply), DriverError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(DriverError::new(DriverErrorKind::Refused, "empty command"));
    };
    let shown = shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_else(|_| argv.join(" "));
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            DriverError::new(
                DriverErrorKind::Unreachable,
                format!("cannot run {shown}: {e}"),
            )
        })?;
    let mut guard = GroupGuard(child.id().map(|p| p as i32));
    let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(DriverError::new(
            DriverErrorKind::Unreachable,
            "command pipes missing",
        ));
    };
    let name = program.clone();
    let ((out_lines, out_dropped), (err_lines, err_dropped), status) = tokio::join!(
        collect(out, "stdout", name.clone()),
        collect(err, "stderr", name),
        child.wait()
    );
    guard.0 = None;
    let mut transcript = vec![format!("$ {shown}")];
    transcript.extend(out_lines.iter().cloned());
    transcript.extend(err_lines);
    if out_dropped + err_dropped > 0 {
        transcript.push(format!(
            "[{} more lines not kept]",
            out_dropped + err_dropped
        ));
    }
    let status = status.map_err(|e| {
        DriverError::new(
            DriverErrorKind::Unreachable,
            format!("waiting for {shown}: {e}"),
        )
    })?;
    if status.success() {
        Ok((out_lines, DriverReply { transcript }))
    } else {
        let mut e = DriverError::new(
            DriverErrorKind::Refused,
            format!("{shown} failed ({status})"),
        );
        e.output = transcript;
        Err(e)
    }
}

impl CommandDriver {
    fn argv(&self, t: &CommandTemplate, target: &OutletTarget) -> Vec<String> {
        let device = target.device.as_ref().map_or("", |d| d.as_str());
        let pdu = target.pdu.as_ref().map_or("", |p| p.as_str());
        t.render(&target.outlet, pdu, device)
    }
}

impl PowerDriver for CommandDriver {
    fn kind(&self) -> &'static str {
        "command"
    }

    fn set<'a>(&'a self, target: &'a OutletTarget, on: bool) -> DriverFuture<'a, DriverReply> {
        Box::pin(async move {
            let t = if on { &self.on } else { &self.off };
            let t = t.as_ref().ok_or_else(|| {
                DriverError::unsupported(if on {
                    "switch on (no on command)"
                } else {
                    "switch off (no off command)"
                })
            })?;
            run(&self.argv(t, target)).await.map(|(_, r)| r)
        })
    }

    fn can_read(&self) -> bool {
        self.state.is_some()
    }

    fn get<'a>(&'a self, target: &'a OutletTarget) -> DriverFuture<'a, (OutletState, DriverReply)> {
        Box::pin(async move {
            let t = self
                .state
                .as_ref()
                .ok_or_else(|| DriverError::unsupported("read state (no state_command)"))?;
            let (stdout, reply) = run(&self.argv(t, target)).await?;
            let text = stdout.join("\n").trim().to_ascii_lowercase();
            let state = match text.as_str() {
                "on" | "1" | "true" => OutletState::On,
                "off" | "0" | "false" => OutletState::Off,
                other => {
                    let mut e = DriverError::new(
                        DriverErrorKind::BadReply,
                        format!("state command printed {other:?}, expected on/off/1/0"),
                    );
                    e.output = reply.transcript;
                    return Err(e);
                }
            };
            Ok((state, reply))
        })
    }

    fn can_reboot(&self) -> bool {
        self.reboot.is_some()
    }

    fn reboot<'a>(
        &'a self,
        target: &'a OutletTarget,
        _delay: Duration,
    ) -> DriverFuture<'a, DriverReply> {
        Box::pin(async move {
            let t = self
                .reboot
                .as_ref()
                .ok_or_else(|| DriverError::unsupported("reboot natively (no reboot command)"))?;
            run(&self.argv(t, target)).await.map(|(_, r)| r)
        })
    }
}
