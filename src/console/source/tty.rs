//! A local UART (normally a udev symlink such as `/dev/lab/bbb01`), opened with tokio-serial in
//! raw mode with the configured line settings.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::path::PathBuf;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::Instant;
use tokio_serial::SerialStream;

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
    let stream = SerialStream::open(&builder).map_err(|e| ConsoleError::Open {
        endpoint: endpoint.clone(),
        source: e.into(),
    })?;
    let fd = stream.as_raw_fd();
    if matches!(line.parity, Parity::Mark | Parity::Space) {
        set_stick_parity(fd, line.parity == Parity::Mark).map_err(|e| ConsoleError::Serial {
            endpoint: endpoint.clone(),
            message: format!("mark/space parity: {e}"),
        })?;
    }
    let opened = match std::fs::canonicalize(&path) {
        Ok(real) if real != path => format!("{} -> {}", path.display(), real.display()),
        _ => path.display().to_string(),
    };
    let (r, w) = tokio::io::split(stream);
    Ok(Connection {
        reader: Box::new(TtyReader {
            half: r,
            scratch: vec![0u8; READ_SIZE].into_boxed_slice(),
            endpoint: endpoint.clone(),
        }),
        writer: Box::new(TtyWriter {
            half: w,
            fd,
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
    // SAFETY: `fd` belongs to the SerialStream opened just above and outlives this call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let mut t = tcgetattr(fd)?;
    t.control_flags |= ControlFlags::PARENB | ControlFlags::CMSPAR;
    t.control_flags.set(ControlFlags::PARODD, mark);
    tcsetattr(fd, SetArg::TCSANOW, &t)
}

struct TtyReader {
    half: ReadHalf<SerialStream>,
    scratch: Box<[u8]>,
    endpoint: String,
}

/// Largest single read from a tty.
const READ_SIZE: usize = 64 * 1024;

impl ConnReader for TtyReader {
    fn read<'a>(&'a mut self, out: &'a mut BytesMut) -> BoxFut<'a, Result<(), ConsoleError>> {
        Box::pin(async move {
            // Read into an already-initialised scratch buffer: tokio-serial's `poll_read`
            // zero-fills whatever unfilled space it is given, which for a large `BytesMut`
            // costs more than the read itself.
            match self.half.read(&mut self.scratch).await {
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
        })
    }
}

enum Op {
    Data(BytesMut),
    Break,
}

struct TtyWriter {
    half: WriteHalf<SerialStream>,
    /// The tty's descriptor, kept for the BREAK ioctls; valid as long as `half` lives.
    fd: RawFd,
    ops: VecDeque<Op>,
    queued: usize,
    break_until: Option<Instant>,
    endpoint: String,
}

impl TtyWriter {
    fn set_break(&self, on: bool) -> std::io::Result<()> {
        let req = if on { libc::TIOCSBRK } else { libc::TIOCCBRK };
        // SAFETY: plain ioctl without arguments on a descriptor this writer keeps open.
        let rc = unsafe { libc::ioctl(self.fd, req) };
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
                    let n = self.half.write(buf).await.map_err(io_err)?;
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
