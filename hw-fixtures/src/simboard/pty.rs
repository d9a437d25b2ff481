//! Pseudo-terminal pairs standing in for UARTs.
//!
//! The "board" holds the master; the slave's path plays the role of `/dev/ttyUSB0`. The slave
//! is put in raw mode and one slave descriptor is kept open, so nothing the board writes is
//! echoed back by the line discipline before labd (or ser2net) opens the tty, and the master
//! never sees EIO while nobody has the slave open.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};

/// A pty pair: `master` is the board's end, `slave_path` the tty others open.
pub struct Pty {
    pub master: OwnedFd,
    /// Kept open for the pair's lifetime (see the module doc).
    pub slave: OwnedFd,
    pub slave_path: PathBuf,
}

impl Pty {
    /// Opens a pair with the slave in raw mode and the master non-blocking.
    pub fn open_raw() -> io::Result<Self> {
        let r = nix::pty::openpty(None, None).map_err(io::Error::from)?;
        set_cloexec(r.master.as_fd())?;
        set_cloexec(r.slave.as_fd())?;
        make_raw(r.slave.as_fd())?;
        set_nonblocking(r.master.as_fd())?;
        let slave_path = nix::unistd::ttyname(r.slave.as_fd()).map_err(io::Error::from)?;
        Ok(Self {
            master: r.master,
            slave: r.slave,
            slave_path,
        })
    }
}

/// Raw mode (no echo, no line editing, no CR/NL translation) on a tty descriptor.
pub fn make_raw(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut t = tcgetattr(fd).map_err(io::Error::from)?;
    cfmakeraw(&mut t);
    tcsetattr(fd, SetArg::TCSANOW, &t).map_err(io::Error::from)
}

/// openpty(3) does not set close-on-exec: without it every program a test starts afterwards
/// (ser2net!) would inherit the board's master and the "cable" could never be pulled.
pub fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    fcntl(fd, FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC)).map_err(io::Error::from)?;
    Ok(())
}

pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

/// Points `link` at `target`, replacing any previous link atomically.
pub fn replace_symlink(target: &Path, link: &Path) -> io::Result<()> {
    let tmp = link.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, link)
}

/// Waits until `fd` is readable (or hung up) for at most `timeout`; `Ok(false)` on timeout.
pub fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    wait(fd, PollFlags::POLLIN, timeout)
}

fn wait(fd: BorrowedFd<'_>, what: PollFlags, timeout: Duration) -> io::Result<bool> {
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    let mut fds = [PollFd::new(fd, what)];
    match poll(
        &mut fds,
        PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
    ) {
        Ok(0) => Ok(false),
        Ok(_) => Ok(true),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Reads what is available from a non-blocking descriptor (0 bytes = nothing now).
pub fn read_some(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    match nix::unistd::read(fd, buf) {
        Ok(n) => Ok(n),
        Err(nix::errno::Errno::EAGAIN) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// Writes all of `data` to a non-blocking descriptor, waiting for room; gives up after
/// `max_block` without progress and returns how many bytes were written.
pub fn write_all_nb(fd: BorrowedFd<'_>, data: &[u8], max_block: Duration) -> io::Result<usize> {
    let mut done = 0;
    let mut last_progress = Instant::now();
    while done < data.len() {
        match nix::unistd::write(fd, &data[done..]) {
            Ok(n) => {
                done += n;
                last_progress = Instant::now();
            }
            Err(nix::errno::Errno::EAGAIN) => {
                let left = max_block.saturating_sub(last_progress.elapsed());
                if left.is_zero() {
                    break;
                }
                wait(fd, PollFlags::POLLOUT, left.min(Duration::from_millis(50)))?;
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(done)
}

/// The output baud rate set on a tty (what labd or ser2net configured), for the common rates.
pub fn baud_rate(fd: BorrowedFd<'_>) -> io::Result<Option<u32>> {
    use nix::sys::termios::BaudRate as B;
    let t = tcgetattr(fd).map_err(io::Error::from)?;
    Ok(Some(match nix::sys::termios::cfgetospeed(&t) {
        B::B1200 => 1200,
        B::B2400 => 2400,
        B::B4800 => 4800,
        B::B9600 => 9600,
        B::B19200 => 19200,
        B::B38400 => 38400,
        B::B57600 => 57600,
        B::B115200 => 115200,
        B::B230400 => 230400,
        B::B460800 => 460800,
        B::B921600 => 921600,
        _ => return Ok(None),
    }))
}
