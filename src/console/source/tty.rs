//! A local UART (normally a udev symlink such as `/dev/lab/bbb01`), opened and configured by
//! tokio-serial (raw mode, the configured line settings), then read and written through its raw
//! descriptor ([`super::ttyfd`]).

use std::collections::VecDeque;
use std::os::fd::{BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::time::Instant;

use super::ttyfd::{TtyFd, TtyFdReader, TtyFdWriter};
use super::{BoxFut, ConnReader, ConnWriter, Connection, ConsoleSource, line_summary};
use crate::console::ConsoleError;
use crate::console::config::{FlowControl, LineSettings, Parity};

/// How long a BREAK holds the line low (what `tcsendbreak(fd, 0)` does on Linux).
const BREAK_DURATION: Duration = Duration::from_millis(250);

pub struct TtySource {
    path: PathBuf,
    line: LineSettings,
}

impl TtySource {
    pub fn new(path: PathBuf, line: LineSettings) -> Self {
        Self { path, line }
    }
}

impl ConsoleSource for TtySource {
    fn open(&self, path: Option<PathBuf>) -> BoxFut<'static, Result<Connection, ConsoleError>> {
        let path = path.unwrap_or_else(|| self.path.clone());
        let line = self.line;
        Box::pin(async move { open_tty(path, line) })
    }

    fn describe(&self) -> String {
        format!("tty {} {}", self.path.display(), line_summary(&self.line))
    }
}

fn open_tty(path: PathBuf, line: LineSettings) -> Result<Connection, ConsoleError> {
    let endpoint = format!("tty {}", path.display());
    let builder = tokio_serial::new(path.to_string_lossy(), line.baud)
        .data_bits(match line.data_bits {
            5 => tokio_serial::DataBits::Five,
            6 => tokio_serial::DataBits::Six,
            7 => tokio_serial::DataBits::Seven,
            _ => tokio_serial::DataBits::Eight,
        })
        .parity(match line.parity {
            Parity::None | Parity::Mark | Parity::Space => tokio_serial::Parity::None,
            Parity::Odd => tokio_serial::Parity::Odd,
            Parity::Even => tokio_serial::Parity::Even,
        })
        .stop_bits(if line.stop_bits == 2 {
            tokio_serial::StopBits::Two
        } else {
            tokio_serial::StopBits::One
        })
        .flow_control(match line.flow_control {
            FlowControl::None => tokio_serial::FlowControl::None,
            FlowControl::Software => tokio_serial::FlowControl::Software,
            FlowControl::Hardware => tokio_serial::FlowControl::Hardware,
        });
    let open_err = |source: std::io::Error| ConsoleError::Open {
        endpoint: endpoint.clone(),
        source,
    };
    let port = builder.open_native().map_err(|e| open_err(e.into()))?;
    // SAFETY: `into_raw_fd` hands over the descriptor serialport opened; nothing else owns it.
    let fd = TtyFd::new(unsafe { OwnedFd::from_raw_fd(port.into_raw_fd()) }).map_err(open_err)?;
    if matches!(line.parity, Parity::Mark | Parity::Space) {
        set_stick_parity(fd.raw(), line.parity == Parity::Mark).map_err(|e| {
            ConsoleError::Serial {
                endpoint: endpoint.clone(),
                message: format!("mark/space parity: {e}"),
            }
        })?;
    }
    let opened = match std::fs::canonicalize(&path) {
        Ok(real) if real != path => format!("{} -> {}", path.display(), real.display()),
        _ => path.display().to_string(),
    };
    let writer = TtyFdWriter::new(fd.clone()).map_err(open_err)?;
    Ok(Connection {
        reader: Box::new(TtyReader {
            fd: TtyFdReader::new(fd),
            scratch: vec![0u8; READ_SIZE].into_boxed_slice(),
            endpoint: endpoint.clone(),
        }),
        writer: Box::new(TtyWriter {
            fd: writer,
            ops: VecDeque::new(),
            queued: 0,
            break_until: None,
            endpoint,
        }),
        opened,
    })
}

/// serialport has no mark/space parity; set CMSPAR directly.
fn set_stick_parity(fd: RawFd, mark: bool) -> nix::Result<()> {
    use nix::sys::termios::{ControlFlags, SetArg, tcgetattr, tcsetattr};
    // SAFETY: `fd` belongs to the TtyFd opened just above and outlives this call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let mut t = tcgetattr(fd)?;
    t.control_flags |= ControlFlags::PARENB | ControlFlags::CMSPAR;
    t.control_flags.set(ControlFlags::PARODD, mark);
    tcsetattr(fd, SetArg::TCSANOW, &t)
}

struct TtyReader {
    fd: TtyFdReader,
    scratch: Box<[u8]>,
    endpoint: String,
}

/// Largest single read from a tty.
const READ_SIZE: usize = 64 * 1024;

impl TtyReader {
    fn took(&mut self, r: std::io::Result<usize>, out: &mut BytesMut) -> Result<(), ConsoleError> {
        match r {
            Ok(0) => Err(ConsoleError::Closed {
                endpoint: self.endpoint.clone(),
            }),
            Ok(n) => {
                out.extend_from_slice(&self.scratch[..n]);
                Ok(())
            }
            Err(source) => Err(ConsoleError::Io {
                endpoint: self.endpoint.clone(),
                source,
            }),
        }
    }
}

impl ConnReader for TtyReader {
    fn read<'a>(&'a mut self, out: &'a mut BytesMut) -> BoxFut<'a, Result<(), ConsoleError>> {
        Box::pin(async move {
            // Read into an already-initialised scratch buffer rather than the spare capacity of
            // a large `BytesMut` (which would have to be zero-filled first).
            let r = self.fd.read(&mut self.scratch).await;
            self.took(r, out)
        })
    }

    fn try_read(&mut self, out: &mut BytesMut) -> Option<Result<(), ConsoleError>> {
        let r = self.fd.try_read(&mut self.scratch).transpose()?;
        Some(self.took(r, out))
    }

    fn pause(&mut self) {
        self.fd.pause();
    }
}

enum Op {
    Data(BytesMut),
    Break,
}

struct TtyWriter {
    fd: TtyFdWriter,
    ops: VecDeque<Op>,
    queued: usize,
    break_until: Option<Instant>,
    endpoint: String,
}

impl TtyWriter {
    fn set_break(&self, on: bool) -> std::io::Result<()> {
        let req = if on { libc::TIOCSBRK } else { libc::TIOCCBRK };
        // SAFETY: plain ioctl without arguments on a descriptor this writer keeps open.
        let rc = unsafe { libc::ioctl(self.fd.raw(), req) };
        if rc < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

impl ConnWriter for TtyWriter {
    fn queue(&mut self, data: &[u8]) {
        self.queued += data.len();
        if let Some(Op::Data(last)) = self.ops.back_mut() {
            last.extend_from_slice(data);
        } else {
            self.ops.push_back(Op::Data(BytesMut::from(data)));
        }
    }

    fn queue_break(&mut self) {
        self.ops.push_back(Op::Break);
    }

    fn pending(&self) -> bool {
        !self.ops.is_empty()
    }

    fn pending_len(&self) -> usize {
        self.queued
    }

    fn flush_some(&mut self) -> BoxFut<'_, Result<(), ConsoleError>> {
        Box::pin(async move {
            let io_err = |source| ConsoleError::Io {
                endpoint: self.endpoint.clone(),
                source,
            };
            match self.ops.front_mut() {
                None => Ok(()),
                Some(Op::Data(buf)) => {
                    let n = self.fd.write(buf).await.map_err(io_err)?;
                    buf.advance(n);
                    self.queued -= n;
                    if buf.is_empty() {
                        self.ops.pop_front();
                    }
                    Ok(())
                }
                Some(Op::Break) => {
                    let until = match self.break_until {
                        Some(t) => t,
                        None => {
                            self.set_break(true).map_err(io_err)?;
                            let t = Instant::now() + BREAK_DURATION;
                            self.break_until = Some(t);
                            t
                        }
                    };
                    tokio::time::sleep_until(until).await;
                    self.break_until = None;
                    self.ops.pop_front();
                    self.set_break(false).map_err(io_err)
                }
            }
        })
    }
}

impl Drop for TtyWriter {
    fn drop(&mut self) {
        if self.break_until.is_some() {
            let _ = self.set_break(false);
        }
    }
}
