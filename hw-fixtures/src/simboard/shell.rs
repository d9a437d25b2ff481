//! After login: a real shell on its own inner pty, relayed to the board's console.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use super::firmware::{Ctx, Off};
use super::pty::{read_some, set_nonblocking, wait_readable, write_all_nb};
use super::{Event, Inner};

fn spawn(shell: &Path, prompt: &str) -> std::io::Result<(Child, OwnedFd)> {
    let pty = nix::pty::openpty(None, None).map_err(std::io::Error::from)?;
    set_nonblocking(pty.master.as_fd())?;
    super::pty::set_cloexec(pty.master.as_fd())?;
    let slave = pty.slave;
    let mut cmd = Command::new(shell);
    cmd.arg("-i")
        .env_clear()
        .env("PS1", prompt)
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", std::env::temp_dir())
        .env("TERM", "vt100")
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave));
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    Ok((child, pty.master))
}

fn kill(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs the shell until it exits (`Ok`) or the board loses power (`Err(Off)`, shell killed).
pub(crate) fn run(ctx: &mut Ctx, shell: &Path, prompt: &str) -> Result<(), Off> {
    let (mut child, master) = match spawn(shell, prompt) {
        Ok(x) => x,
        Err(e) => {
            ctx.emit(format!("-sh: cannot start {}: {e}\r\n", shell.display()).as_bytes())?;
            // Behave like a getty that keeps failing: wait, then let the caller retry.
            return ctx.sleep(Duration::from_secs(1));
        }
    };
    ctx.inner.set_shell_pid(Some(child.id() as i32));
    let master = Arc::new(master);
    let relay = {
        let inner: Arc<Inner> = ctx.inner.clone();
        let master = master.clone();
        let generation = ctx.generation;
        let events = ctx.inner.events_sender();
        std::thread::Builder::new()
            .name("simboard-shell".into())
            .spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    if !inner.is_powered_gen(generation) {
                        break;
                    }
                    match wait_readable(master.as_fd(), Duration::from_millis(100)) {
                        Ok(false) => continue,
                        Ok(true) => {}
                        Err(_) => break,
                    }
                    match read_some(master.as_fd(), &mut buf) {
                        Ok(0) => continue,
                        Ok(n) => inner.emit(generation, &buf[..n]),
                        Err(_) => break, // EIO: the shell and its children are gone
                    }
                }
                if let Some(tx) = events {
                    let _ = tx.send(Event::ShellExited);
                }
            })
            .ok()
    };
    ctx.shell_exited = false;
    let result = loop {
        if !ctx.pending.is_empty() {
            let data: Vec<u8> = ctx.pending.drain(..).collect();
            let _ = write_all_nb(master.as_fd(), &data, Duration::from_secs(1));
        }
        if ctx.shell_exited {
            break Ok(());
        }
        if let Err(off) = ctx.pump(Duration::from_secs(3600)) {
            break Err(off);
        }
    };
    kill(&mut child);
    ctx.inner.set_shell_pid(None);
    if let Some(r) = relay {
        let _ = r.join();
    }
    result
}
