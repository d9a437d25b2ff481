//! A console exported by ser2net on a `telnet` (or `telnet(rfc2217)`) accepter.
//!
//! labd is the telnet client: it answers ser2net's option negotiation (binary both ways), doubles
//! 0xFF on input and undoes the doubling on output, sends BREAK as `IAC BRK`, and with
//! `rfc2217 = true` sets the remote UART's line with COM-PORT-OPTION sub-negotiations.
//! ser2net reports some failures in-band (`Port already in use\r\n`,
//! `Device open failure: ...\r\n`, then close); those are connection failures, not board output.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::{BoxFut, ConnReader, ConnWriter, Connection, ConsoleSource, line_summary};
use crate::console::ConsoleError;
use crate::console::config::LineSettings;
use crate::console::rfc2217;
use crate::console::telnet::{self, Decoder, Negotiator, TelnetEvent, opt};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// ser2net greets a telnet client at once; a raw accepter sends nothing.
const FIRST_BYTES_WAIT: Duration = Duration::from_millis(500);
/// After the greeting, how long to wait for an in-band failure line and the close after it.
const SETTLE: Duration = Duration::from_millis(150);
const PROBE_MAX: Duration = Duration::from_millis(1500);

/// The two status lines ser2net sends instead of board output (observed with 4.3.11).
const STATUS_PREFIXES: [&[u8]; 2] = [b"Port already in use", b"Device open failure: "];

pub struct Ser2netSource {
    host: String,
    port: u16,
    /// Line settings to apply through RFC 2217, when enabled.
    rfc2217: Option<LineSettings>,
}

impl Ser2netSource {
    pub fn new(host: String, port: u16, rfc2217: Option<LineSettings>) -> Self {
        Self {
            host,
            port,
            rfc2217,
        }
    }
}

impl ConsoleSource for Ser2netSource {
    fn open(
        &self,
        _path: Option<std::path::PathBuf>,
    ) -> BoxFut<'static, Result<Connection, ConsoleError>> {
        let host = self.host.clone();
        let port = self.port;
        let line = self.rfc2217;
        Box::pin(async move { connect(host, port, line).await })
    }

    fn describe(&self) -> String {
        match &self.rfc2217 {
            Some(line) => format!(
                "ser2net {}:{} (telnet, rfc2217 {})",
                self.host,
                self.port,
                line_summary(line)
            ),
            None => format!("ser2net {}:{} (telnet)", self.host, self.port),
        }
    }
}

async fn connect(
    host: String,
    port: u16,
    line: Option<LineSettings>,
) -> Result<Connection, ConsoleError> {
    let endpoint = format!("ser2net {host}:{port}");
    let stream = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => return Err(ConsoleError::Connect { endpoint, source }),
        Err(_) => {
            return Err(ConsoleError::Timeout {
                endpoint,
                what: "connecting",
            });
        }
    };
    let _ = stream.set_nodelay(true);
    let opened = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| format!("{host}:{port}"));
    let (rh, wh) = stream.into_split();
    let outbox = Arc::new(Mutex::new(BytesMut::new()));
    let mut reader = Ser2netReader {
        half: rh,
        raw: BytesMut::with_capacity(16 * 1024),
        decoder: Decoder::new(),
        negotiator: Negotiator::ser2net_client(line.is_some()),
        events: Vec::new(),
        initial: BytesMut::new(),
        outbox: outbox.clone(),
        line,
        warned_rfc2217: false,
        endpoint: endpoint.clone(),
    };
    if let Some(line) = &line {
        let mut out = lock(&outbox);
        reader.negotiator.offer_local(opt::COM_PORT, &mut out);
        rfc2217::line_settings_requests(line, &mut out);
    }
    reader.probe().await?;
    Ok(Connection {
        reader: Box::new(reader),
        writer: Box::new(Ser2netWriter {
            half: wh,
            buf: BytesMut::new(),
            outbox,
            endpoint,
        }),
        opened,
    })
}

fn lock(m: &Mutex<BytesMut>) -> std::sync::MutexGuard<'_, BytesMut> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Ser2netReader {
    half: OwnedReadHalf,
    raw: BytesMut,
    decoder: Decoder,
    negotiator: Negotiator,
    events: Vec<TelnetEvent>,
    /// Board output that arrived during the probe, handed out by the first `read`.
    initial: BytesMut,
    /// Negotiation answers for the writer half to send.
    outbox: Arc<Mutex<BytesMut>>,
    line: Option<LineSettings>,
    warned_rfc2217: bool,
    endpoint: String,
}

/// Whether `data` is (the start of) one of ser2net's status lines.
fn looks_like_status(data: &[u8]) -> bool {
    STATUS_PREFIXES
        .iter()
        .any(|p| p.starts_with(data) || data.starts_with(p))
}

impl Ser2netReader {
    /// Reads raw bytes; 0 means the other end closed.
    async fn read_raw(&mut self) -> std::io::Result<usize> {
        self.raw.reserve(16 * 1024);
        self.half.read_buf(&mut self.raw).await
    }

    /// Decodes `raw` into `out`, answering negotiation through the outbox.
    fn decode(&mut self, out: &mut BytesMut) {
        self.decoder.decode(&self.raw, out, &mut self.events);
        self.raw.clear();
        if self.events.is_empty() {
            return;
        }
        let mut answers = BytesMut::new();
        for e in std::mem::take(&mut self.events) {
            match e {
                TelnetEvent::Negotiate { verb, option } => {
                    self.negotiator.handle(verb, option, &mut answers);
                    if option == opt::COM_PORT
                        && self.line.is_some()
                        && self.negotiator.local_refused(opt::COM_PORT)
                        && !self.warned_rfc2217
                    {
                        self.warned_rfc2217 = true;
                        tracing::warn!(endpoint = %self.endpoint,
                            "the ser2net port does not accept RFC 2217 (use a telnet(rfc2217) accepter); line settings not applied");
                    }
                }
                TelnetEvent::Subnegotiation { option, data } if option == opt::COM_PORT => {
                    self.check_rfc2217_reply(&data);
                }
                other => {
                    tracing::trace!(endpoint = %self.endpoint, event = ?other, "telnet command ignored")
                }
            }
        }
        if !answers.is_empty() {
            lock(&self.outbox).extend_from_slice(&answers);
        }
    }

    fn check_rfc2217_reply(&self, data: &[u8]) {
        let Some(line) = &self.line else { return };
        match rfc2217::parse_reply(data) {
            Some(rfc2217::Reply::Baud(b)) if b != line.baud => {
                tracing::warn!(endpoint = %self.endpoint, requested = line.baud, got = b, "ser2net did not take the baud rate");
            }
            Some(rfc2217::Reply::DataSize(d)) if d != line.data_bits => {
                tracing::warn!(endpoint = %self.endpoint, requested = line.data_bits, got = d, "ser2net did not take the data size");
            }
            reply => tracing::debug!(endpoint = %self.endpoint, ?reply, "RFC 2217 reply"),
        }
    }

    /// Waits briefly after connecting to tell ser2net's in-band failures from a working port.
    async fn probe(&mut self) -> Result<(), ConsoleError> {
        let start = tokio::time::Instant::now();
        let mut got_any = false;
        let mut data = BytesMut::new();
        loop {
            let wait = if got_any { SETTLE } else { FIRST_BYTES_WAIT };
            let left = PROBE_MAX.saturating_sub(start.elapsed());
            match tokio::time::timeout(wait.min(left), self.read_raw()).await {
                Err(_) => break,
                Ok(Err(source)) => {
                    return Err(ConsoleError::Io {
                        endpoint: self.endpoint.clone(),
                        source,
                    });
                }
                Ok(Ok(0)) => {
                    let text = String::from_utf8_lossy(&data);
                    let text = text.trim_end();
                    return Err(if looks_like_status(&data) && !text.is_empty() {
                        ConsoleError::Refused {
                            endpoint: self.endpoint.clone(),
                            message: text.to_string(),
                        }
                    } else {
                        ConsoleError::Closed {
                            endpoint: self.endpoint.clone(),
                        }
                    });
                }
                Ok(Ok(_)) => {
                    got_any = true;
                    self.decode(&mut data);
                    if !data.is_empty() && !looks_like_status(&data) {
                        break;
                    }
                }
            }
        }
        self.initial = data;
        Ok(())
    }
}

impl ConnReader for Ser2netReader {
    fn read<'a>(&'a mut self, out: &'a mut BytesMut) -> BoxFut<'a, Result<(), ConsoleError>> {
        Box::pin(async move {
            if !self.initial.is_empty() {
                out.extend_from_slice(&self.initial.split());
                return Ok(());
            }
            match self.read_raw().await {
                Ok(0) => Err(ConsoleError::Closed {
                    endpoint: self.endpoint.clone(),
                }),
                Ok(_) => {
                    self.decode(out);
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

struct Ser2netWriter {
    half: OwnedWriteHalf,
    /// Wire bytes (escaped input, commands, negotiation answers) not yet written.
    buf: BytesMut,
    outbox: Arc<Mutex<BytesMut>>,
    endpoint: String,
}

impl Ser2netWriter {
    fn take_outbox(&mut self) {
        let mut o = lock(&self.outbox);
        if !o.is_empty() {
            self.buf.extend_from_slice(&o);
            o.clear();
        }
    }
}

impl ConnWriter for Ser2netWriter {
    fn queue(&mut self, data: &[u8]) {
        self.take_outbox();
        telnet::escape_into(data, &mut self.buf);
    }

    fn queue_break(&mut self) {
        self.take_outbox();
        self.buf.extend_from_slice(&[telnet::IAC, telnet::BRK]);
    }

    fn pending(&self) -> bool {
        !self.buf.is_empty() || !lock(&self.outbox).is_empty()
    }

    fn pending_len(&self) -> usize {
        self.buf.len()
    }

    fn flush_some(&mut self) -> BoxFut<'_, Result<(), ConsoleError>> {
        Box::pin(async move {
            self.take_outbox();
            if self.buf.is_empty() {
                return Ok(());
            }
            match self.half.write(&self.buf).await {
                Ok(n) => {
                    self.buf.advance(n);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_recognised() {
        assert!(looks_like_status(b"Port already in use\r\n"));
        assert!(looks_like_status(b"Port alr"));
        assert!(looks_like_status(
            b"Device open failure: Value or file not found\r\n"
        ));
        assert!(!looks_like_status(b"U-Boot 2024.01"));
        assert!(!looks_like_status(b"Port 22 open"));
    }
}
