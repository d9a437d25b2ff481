//! The edge of the console layer: where a board's bytes come from.
//!
//! A [`ConsoleSource`] knows how to (re)open one console; each open yields a [`Connection`]
//! split into a reader and a writer half so the hub can read board output while input is still
//! being written. Implementations: [`TtySource`] (a local UART: tokio-serial sets the line, reads
//! and writes go through the raw descriptor) and
//! [`Ser2netSource`] (a ser2net telnet port, optionally setting the line through RFC 2217).

mod ser2net;
mod tty;
mod ttyfd;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use bytes::BytesMut;

pub use ser2net::Ser2netSource;
pub use tty::TtySource;

use super::ConsoleError;
use super::config::{ConsoleEndpoint, LineSettings};

/// A boxed, sendable future (object-safe async trait methods).
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How to reach one console. Called once at start and again after every loss.
pub trait ConsoleSource: Send + Sync + 'static {
    /// Opens the console. `path` overrides the configured tty node for this open and later
    /// retries (udev hotplug hands over the node of a re-added adapter); sources without a path
    /// ignore it.
    fn open(&self, path: Option<PathBuf>) -> BoxFut<'static, Result<Connection, ConsoleError>>;

    /// One line for logs, status and journal markers, e.g. `tty /dev/lab/bbb01 115200 8N1`.
    fn describe(&self) -> String;
}

/// An open console.
pub struct Connection {
    pub reader: Box<dyn ConnReader>,
    pub writer: Box<dyn ConnWriter>,
    /// The node or address actually opened (shown by `labd status`).
    pub opened: String,
}

/// The receiving half of a connection.
pub trait ConnReader: Send {
    /// Waits for board output and appends it to `out` (possibly nothing, e.g. after a telnet
    /// negotiation). An error means the link is lost. Must be cancel-safe: dropping the future
    /// loses no byte.
    fn read<'a>(&'a mut self, out: &'a mut BytesMut) -> BoxFut<'a, Result<(), ConsoleError>>;

    /// Like [`ConnReader::read`] but only takes what is already there: `None` when that is
    /// nothing. Sources that can should override it so an empty poll costs no reactor
    /// registration.
    fn try_read(&mut self, out: &mut BytesMut) -> Option<Result<(), ConsoleError>> {
        use futures::FutureExt;
        self.read(out).now_or_never()
    }

    /// The hub will not read for a while (it is pacing a streaming board): a source may stop
    /// watching for readiness so the board's output wakes nobody until the next read.
    fn pause(&mut self) {}
}

/// The sending half of a connection. Input is queued synchronously (already encoded for the
/// wire) and written by [`ConnWriter::flush_some`], so the hub never blocks on a slow UART.
pub trait ConnWriter: Send {
    /// Queues bytes for the board.
    fn queue(&mut self, data: &[u8]);
    /// Queues a serial BREAK (in order with the data).
    fn queue_break(&mut self);
    /// Bytes (or a BREAK) are waiting to be written.
    fn pending(&self) -> bool;
    /// Bytes waiting, for the input backlog limit.
    fn pending_len(&self) -> usize;
    /// Writes some of what is queued. Must be cancel-safe.
    fn flush_some(&mut self) -> BoxFut<'_, Result<(), ConsoleError>>;
}

/// Builds the source for an inventory endpoint.
pub fn from_endpoint(
    endpoint: &ConsoleEndpoint,
    line: LineSettings,
) -> std::sync::Arc<dyn ConsoleSource> {
    match endpoint {
        ConsoleEndpoint::Tty { path } => std::sync::Arc::new(TtySource::new(path.clone(), line)),
        ConsoleEndpoint::Ser2net {
            host,
            port,
            rfc2217,
        } => std::sync::Arc::new(Ser2netSource::new(
            host.clone(),
            *port,
            rfc2217.then_some(line),
        )),
    }
}

/// `8N1`-style summary of line settings.
pub fn line_summary(line: &LineSettings) -> String {
    use super::config::{FlowControl, Parity};
    let p = match line.parity {
        Parity::None => 'N',
        Parity::Odd => 'O',
        Parity::Even => 'E',
        Parity::Mark => 'M',
        Parity::Space => 'S',
    };
    let flow = match line.flow_control {
        FlowControl::None => "",
        FlowControl::Software => " xonxoff",
        FlowControl::Hardware => " rtscts",
    };
    format!(
        "{} {}{}{}{flow}",
        line.baud, line.data_bits, p, line.stop_bits
    )
}
