//! One coordinator connection: read one frame (with a deadline and a size limit), apply it,
//! answer, close. Malformed input is logged and answered as lava-coordinator answers it (a
//! closed connection for a bad header or bad JSON, `nack` for a bad request), and an oversized
//! frame gets `nack` without its body being read.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::{LOG_TARGET as T, Shared};
use crate::multinode::protocol::{self, FrameError, HEADER_LEN, Reply};
use crate::multinode::pyjson::{self, Value};

/// After refusing an oversized frame, read and discard at most this much so the peer sees the
/// `nack` rather than a reset.
const DRAIN_LIMIT: usize = 1 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(1);

enum ReadError {
    Frame(FrameError, Vec<u8>),
    Io(std::io::Error),
}

pub(super) async fn serve(shared: &Shared, mut stream: TcpStream, peer: SocketAddr) {
    let cfg = &shared.cfg;
    let read = tokio::time::timeout(cfg.read_timeout, read_frame(&mut stream, cfg.max_message));
    let (request, raw) = match read.await {
        Err(_) => {
            warn!(target: T, "Timed out after {:?} waiting for a request from {}",
                cfg.read_timeout, peer.ip());
            refused("timeout");
            return;
        }
        Ok(Err(ReadError::Io(e))) => {
            debug!(target: T, "Connection from {} failed: {e}", peer.ip());
            refused("io");
            return;
        }
        Ok(Err(ReadError::Frame(e, data))) => {
            handle_bad_frame(cfg, &mut stream, peer, e, &data).await;
            return;
        }
        Ok(Ok(v)) => v,
    };
    let outcome = shared.apply(&request, &raw).await;
    let name = match &request {
        Value::Dict(d) => d
            .get_str("request")
            .and_then(Value::as_str)
            .unwrap_or("none"),
        _ => "none",
    };
    shared.metrics.request(name).inc();
    if outcome.crash.is_some() {
        refused("would_crash_lava");
    }
    if let Some(reply) = outcome.reply {
        send_reply(&mut stream, &reply, cfg.write_timeout, peer).await;
    }
}

async fn handle_bad_frame(
    cfg: &super::ServerConfig,
    stream: &mut TcpStream,
    peer: SocketAddr,
    e: FrameError,
    data: &[u8],
) {
    match e {
        FrameError::BadHeader(h) => {
            warn!(target: T, "Invalid message: {} from {}", h, peer.ip());
            refused("bad_header");
        }
        FrameError::ShortBody { announced, got } => {
            warn!(target: T, "Invalid message: header announced {} bytes, got {} from {}",
                announced, got, peer.ip());
            refused("short_body");
        }
        FrameError::TooLarge(n) => {
            warn!(target: T, "Message of {} bytes from {} exceeds the limit of {}; nack",
                n, peer.ip(), cfg.max_message);
            refused("too_large");
            send_reply(stream, &Reply::Nack, cfg.write_timeout, peer).await;
            let mut sink = [0u8; 8192];
            let mut drained = 0;
            let _ = tokio::time::timeout(DRAIN_TIME, async {
                while drained < DRAIN_LIMIT {
                    match stream.read(&mut sink).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => drained += n,
                    }
                }
            })
            .await;
        }
        FrameError::Json(_) => {
            let text = String::from_utf8_lossy(data);
            let head: String = text.chars().take(100).collect();
            warn!(target: T, "JSON error for '{}'", head);
            refused("bad_json");
        }
    }
}

/// Refusals are rare: the registry lookup is fine here.
fn refused(reason: &'static str) {
    crate::metrics::global()
        .counter(
            "labd_coordinator_refused_total",
            "Coordinator connections refused or closed without a reply, by reason.",
            &[("reason", reason)],
        )
        .inc();
}

/// Reads the header (8 bytes, or fewer if the peer half-closes) and exactly the body it
/// announces (usually all in one `read`).
async fn read_frame(
    stream: &mut TcpStream,
    max_message: usize,
) -> Result<(Value, Vec<u8>), ReadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut eof = false;
    while buf.len() < HEADER_LEN && !eof {
        eof = stream.read_buf(&mut buf).await.map_err(ReadError::Io)? == 0;
    }
    let head_len = buf.len().min(HEADER_LEN);
    let announced =
        protocol::parse_header(&buf[..head_len]).map_err(|e| ReadError::Frame(e, vec![]))?;
    let want = usize::try_from(announced.max(0)).unwrap_or(usize::MAX);
    if want > max_message {
        return Err(ReadError::Frame(FrameError::TooLarge(want), vec![]));
    }
    let total = HEADER_LEN + want;
    buf.reserve(total.saturating_sub(buf.len()));
    while buf.len() < total && !eof {
        eof = stream.read_buf(&mut buf).await.map_err(ReadError::Io)? == 0;
    }
    if buf.len() < total {
        let got = buf.len().saturating_sub(HEADER_LEN);
        return Err(ReadError::Frame(
            FrameError::ShortBody {
                announced: want,
                got,
            },
            vec![],
        ));
    }
    // A lying header that announces less than was sent: only the announced bytes count.
    buf.truncate(total);
    let body = buf.split_off(HEADER_LEN);
    match pyjson::parse_bytes(&body) {
        Ok(v) => Ok((v, body)),
        Err(e) => Err(ReadError::Frame(FrameError::Json(e), body)),
    }
}

async fn send_reply(stream: &mut TcpStream, reply: &Reply, limit: Duration, peer: SocketAddr) {
    let frame = protocol::encode_frame(&reply.body());
    let write = async {
        write_all_more(stream, &frame).await?;
        stream.shutdown().await
    };
    match tokio::time::timeout(limit, write).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(target: T, "Reply to {} failed: {e}", peer.ip()),
        Err(_) => warn!(target: T, "Timed out sending a reply to {}", peer.ip()),
    }
}

/// `write_all` with `MSG_MORE`: the kernel holds the reply until the `shutdown` that follows,
/// so the reply and the FIN leave in one segment instead of two (one loopback round of the TCP
/// stack less per request; the bytes on the wire are the same).
async fn write_all_more(stream: &TcpStream, mut buf: &[u8]) -> std::io::Result<()> {
    use nix::sys::socket::{MsgFlags, send};
    use std::os::fd::AsRawFd;
    while !buf.is_empty() {
        stream.writable().await?;
        let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
            send(
                stream.as_raw_fd(),
                buf,
                MsgFlags::from_bits_retain(libc::MSG_MORE) | MsgFlags::MSG_NOSIGNAL,
            )
            .map_err(std::io::Error::from)
        });
        match sent {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = buf.get(n..).unwrap_or_default(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
