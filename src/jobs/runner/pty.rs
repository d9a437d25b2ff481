//! A program on a pseudo-terminal: what LAVA's `ShellCommand` (a pexpect spawn) is for a
//! connect command (`telnet localhost 7001`, `ssh ...`) or for qemu with `-nographic`, whose
//! serial console is its stdio.
//!
//! The program gets its own session (so it can be killed with everything it started) with the
//! pty as its controlling terminal, in raw mode (qemu and telnet set the modes they want).

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, ReadBuf};

/// A running program on a pty.
pub struct PtyProcess {
    child: tokio::process::Child,
    master: Arc<AsyncFd<OwnedFd>>,
    pid: Option<i32>,
    /// What was run, for messages.
    pub command: String,
}

/// The reading side of the pty master.
#[derive(Clone)]
pub struct PtyReader(Arc<AsyncFd<OwnedFd>>);

/// The writing side of the pty master.
#[derive(Clone)]
pub struct PtyWriter(Arc<AsyncFd<OwnedFd>>);

fn set_nonblocking(fd: impl AsFd) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = fcntl(fd.as_fd(), FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

impl PtyProcess {
    /// Starts `argv` on a new pty. `env` adds variables to labd's environment.
    pub fn spawn(argv: &[String], env: &[(String, String)]) -> io::Result<Self> {
        let Some((program, args)) = argv.split_first() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
        };
        let winsize = nix::pty::Winsize {
            ws_row: 24,
            ws_col: 200,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&winsize), None).map_err(io::Error::from)?;
        {
            use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
            let mut t = tcgetattr(pty.slave.as_fd()).map_err(io::Error::from)?;
            cfmakeraw(&mut t);
            tcsetattr(pty.slave.as_fd(), SetArg::TCSANOW, &t).map_err(io::Error::from)?;
        }
        set_nonblocking(pty.master.as_fd())?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::from(pty.slave.try_clone()?))
            .stdout(Stdio::from(pty.slave.try_clone()?))
            .stderr(Stdio::from(pty.slave))
            .kill_on_drop(true);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(io::Error::from)?;
                if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        let pid = child.id().map(|p| p as i32);
        // SAFETY: the `OwnedFd` owns the pty master for as long as the `AsyncFd` holds it.
        let master = unsafe { AsyncFd::register(pty.master) }.map_err(io::Error::from)?;
        Ok(Self {
            child,
            master: Arc::new(master),
            pid,
            command: argv.join(" "),
        })
    }

    pub fn reader(&self) -> PtyReader {
        PtyReader(self.master.clone())
    }

    pub fn writer(&self) -> PtyWriter {
        PtyWriter(self.master.clone())
    }

    /// The exit status if the program has ended.
    pub fn try_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `grace` for the program to end by itself, then kills its whole session.
    pub async fn stop(&mut self, grace: Duration) {
        if tokio::time::timeout(grace, self.child.wait()).await.is_ok() {
            self.kill_group();
            return;
        }
        self.kill_group();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }

    fn kill_group(&mut self) {
        if let Some(pid) = self.pid {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.start_kill();
    }
}

impl Drop for PtyProcess {
    fn drop(&mut self) {
        self.kill_group();
    }
}

impl AsyncRead for PtyReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let fd = guard.get_inner().as_raw_fd();
            match guard.try_io(|_| {
                // SAFETY: reading into an initialised slice of its own length.
                let n = unsafe { libc::read(fd, unfilled.as_mut_ptr().cast(), unfilled.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // The program (and every holder of the slave) is gone: end of stream.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl PtyWriter {
    /// Writes all of `data`.
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.0.writable().await?;
            let fd = guard.get_inner().as_raw_fd();
            match guard.try_io(|_| {
                // SAFETY: writing from a valid slice.
                let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}
