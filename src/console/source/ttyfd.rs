//! Reading and writing a local tty through its raw descriptor (tokio-serial only configures
//! the line; see ARCHITECTURE.md, "Consoles").
//!
//! The reader registers the descriptor with tokio's reactor only while it actually waits for
//! data: when the hub paces a streaming board ([`TtyFdReader::pause`]) the registration is
//! dropped, so the chunks the UART delivers during the hold wake nobody — with tokio-serial
//! every chunk woke the reactor (64 consoles at 115200 baud: ~2600 wake-ups a second).
//! The writer has its own duplicate of the descriptor registered for writability only, so
//! board output never wakes it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The tty's descriptor (non-blocking). Dropped last: gives up the exclusive open the way
/// serialport's own port does.
pub(super) struct TtyFd(OwnedFd);

impl TtyFd {
    /// Takes over a descriptor opened (and configured) by serialport; makes it non-blocking.
    pub(super) fn new(fd: OwnedFd) -> io::Result<Arc<Self>> {
        let flags = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL)?);
        fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        Ok(Arc::new(Self(fd)))
    }

    pub(super) fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl AsFd for TtyFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Drop for TtyFd {
    fn drop(&mut self) {
        // SAFETY: plain ioctl without arguments on the descriptor this value owns.
        unsafe { libc::ioctl(self.0.as_raw_fd(), libc::TIOCNXCL) };
    }
}

/// A descriptor number for [`AsyncFd`]; the owner keeps the descriptor open longer than the
/// registration (see the field order of the reader and the writer).
struct Raw(RawFd);

impl AsRawFd for Raw {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

fn retry_eintr<T>(mut f: impl FnMut() -> nix::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(Errno::EINTR) => continue,
            r => return r.map_err(io::Error::from),
        }
    }
}

pub(super) struct TtyFdReader {
    /// Present only while the reader waits for data (declared before `fd`: dropped first).
    registration: Option<AsyncFd<Raw>>,
    fd: Arc<TtyFd>,
}

impl TtyFdReader {
    pub(super) fn new(fd: Arc<TtyFd>) -> Self {
        Self {
            registration: None,
            fd,
        }
    }

    /// Reads what is there now; `Ok(None)` when nothing is. Never registers.
    pub(super) fn try_read(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match retry_eintr(|| nix::unistd::read(self.fd.as_fd(), buf)) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Waits for data and reads it (0 = end of file). Cancel-safe: bytes are only taken by the
    /// synchronous read.
    pub(super) async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(n) = self.try_read(buf)? {
                return Ok(n);
            }
            let reg = match &mut self.registration {
                Some(r) => r,
                None => {
                    // SAFETY: `self.fd` keeps the descriptor open for as long as the
                    // registration lives (the field order drops the registration first).
                    let r = unsafe {
                        AsyncFd::register_with_interest(Raw(self.fd.raw()), Interest::READABLE)
                    }
                    .map_err(io::Error::from)?;
                    self.registration.insert(r)
                }
            };
            // Registration reports data that arrived before it (epoll checks the current
            // state on add), so nothing is missed between the failed read and here.
            let mut guard = reg.readable().await?;
            guard.clear_ready();
        }
    }

    /// The caller will not read for a while: stop watching the descriptor.
    pub(super) fn pause(&mut self) {
        self.registration = None;
    }
}

pub(super) struct TtyFdWriter {
    /// A duplicate of the tty's descriptor, registered for writability only (declared before
    /// `fd`: dropped first).
    afd: AsyncFd<OwnedFd>,
    fd: Arc<TtyFd>,
}

impl TtyFdWriter {
    pub(super) fn new(fd: Arc<TtyFd>) -> io::Result<Self> {
        let dup = fd.0.try_clone()?;
        // SAFETY: the `OwnedFd` inside owns the duplicate for the registration's lifetime.
        let afd = unsafe { AsyncFd::register_with_interest(dup, Interest::WRITABLE) }
            .map_err(io::Error::from)?;
        Ok(Self { afd, fd })
    }

    /// Writes some of `data`; waits while the tty's output buffer is full. Cancel-safe.
    pub(super) async fn write(&self, data: &[u8]) -> io::Result<usize> {
        match retry_eintr(|| nix::unistd::write(self.afd.get_ref(), data)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            r => return r,
        }
        loop {
            let mut guard = self.afd.writable().await?;
            match guard.try_io(|afd| retry_eintr(|| nix::unistd::write(afd.get_ref(), data))) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// The tty's descriptor, for ioctls.
    pub(super) fn raw(&self) -> RawFd {
        self.fd.raw()
    }
}
