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

/// The first read of a request (most fit in it).
const FIRST_READ: usize = 1024;

/// Most bytes one read asks for. The buffer grows by what actually arrives, never by what the
/// header announces: a client that announces 1 MiB and sends nothing costs next to nothing.
const READ_CHUNK: usize = 64 * 1024;

/// How much to read next into `buf`: up to the first read's size until the header is known,
/// then what is still missing of the announced frame, at most [`READ_CHUNK`].
fn next_read(buf: &[u8]) -> usize {
    let announced = buf
        .get(..HEADER_LEN)
        .and_then(|h| protocol::parse_header(h).ok())
        .and_then(|a| usize::try_from(a.max(0)).ok());
    match announced {
        Some(want) => HEADER_LEN
            .saturating_add(want)
            .saturating_sub(buf.len())
            .clamp(1, READ_CHUNK),
        None => FIRST_READ.saturating_sub(buf.len()).max(1),
    }
}

enum ReadError {
    Frame(FrameError, Vec<u8>),
    Io(std::io::Error),
}

/// Serves one accepted connection (a blocking-mode socket straight from `accept`).
///
/// The whole request has usually arrived by the time the connection is accepted; it is then
/// read, answered and closed with non-blocking calls, without registering the socket with the
/// event loop. Only a request (or a reply) that does not fit that moment goes through the
/// runtime, with the read and write deadlines. Either way the bytes exchanged are the same.
pub(super) async fn serve(shared: &Shared, std: std::net::TcpStream, peer: SocketAddr) {
    let cfg = &shared.cfg;
    let (read, mut conn) = match read_now(&std, cfg.max_message) {
        Err(e) => (Err(ReadError::Io(e)), Conn::Std(std)),
        Ok(Ok(decided)) => (decided, Conn::Std(std)),
        Ok(Err((buf, eof))) => {
            let mut stream = match register(std) {
                Ok(s) => s,
                Err(e) => {
                    debug!(target: T, "Connection from {} failed: {e}", peer.ip());
                    refused("io");
                    return;
                }
            };
            // Boxed, as the other slow paths: the spawned future stays small (it is moved
            // into its task for every connection).
            let read = Box::pin(tokio::time::timeout(
                cfg.read_timeout,
                read_frame(&mut stream, buf, eof, cfg.max_message),
            ));
            match read.await {
                Err(_) => {
                    warn!(target: T, "Timed out after {:?} waiting for a request from {}",
                        cfg.read_timeout, peer.ip());
                    refused("timeout");
                    return;
                }
                Ok(r) => (r, Conn::Tokio(stream)),
            }
        }
    };
    let (request, raw) = match read {
        Err(ReadError::Io(e)) => {
            debug!(target: T, "Connection from {} failed: {e}", peer.ip());
            refused("io");
            return;
        }
        Err(ReadError::Frame(e, data)) => {
            match conn.into_tokio() {
                Ok(mut stream) => {
                    Box::pin(handle_bad_frame(cfg, &mut stream, peer, e, &data)).await
                }
                Err(io) => debug!(target: T, "Connection from {} failed: {io}", peer.ip()),
            }
            return;
        }
        Ok(v) => v,
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
        let frame = protocol::encode_frame(&reply.body());
        let sent = match &conn {
            Conn::Std(std) => match send_now(std, &frame) {
                Ok(n) if n == frame.len() => {
                    if let Err(e) = std.shutdown(std::net::Shutdown::Write) {
                        debug!(target: T, "Reply to {} failed: {e}", peer.ip());
                    }
                    return;
                }
                Ok(n) => n,
                Err(e) => {
                    debug!(target: T, "Reply to {} failed: {e}", peer.ip());
                    return;
                }
            },
            Conn::Tokio(_) => 0,
        };
        conn = match conn.into_tokio() {
            Ok(stream) => Conn::Tokio(stream),
            Err(e) => {
                debug!(target: T, "Reply to {} failed: {e}", peer.ip());
                return;
            }
        };
        if let Conn::Tokio(stream) = &mut conn {
            let rest = frame.get(sent..).unwrap_or_default();
            Box::pin(send_frame(stream, rest, cfg.write_timeout, peer)).await;
        }
    }
}

/// The connection as accepted, or registered with the runtime once it had to wait.
enum Conn {
    Std(std::net::TcpStream),
    Tokio(TcpStream),
}

impl Conn {
    fn into_tokio(self) -> std::io::Result<TcpStream> {
        match self {
            Conn::Std(std) => register(std),
            Conn::Tokio(s) => Ok(s),
        }
    }
}

/// Hands the socket to the runtime, to wait on it.
fn register(std: std::net::TcpStream) -> std::io::Result<TcpStream> {
    std.set_nonblocking(true)?;
    TcpStream::from_std(std)
}

/// What [`read_now`] got: a decided frame, or the bytes so far (and whether the peer has
/// half-closed) to go on with through the runtime.
type Now = Result<Result<(Value, Vec<u8>), ReadError>, (Vec<u8>, bool)>;

/// Reads what has already arrived, without waiting, until [`frame_status`] decides.
fn read_now(std: &std::net::TcpStream, max_message: usize) -> std::io::Result<Now> {
    use std::os::fd::AsRawFd;
    let mut buf: Vec<u8> = Vec::new();
    let mut eof = false;
    loop {
        let room = next_read(&buf);
        match recv_spare(std.as_raw_fd(), &mut buf, room) {
            Ok(0) => eof = true,
            Ok(_) => {}
            Err(nix::errno::Errno::EAGAIN) => {
                // Waiting for the rest: hold only what arrived.
                buf.shrink_to(buf.len());
                return Ok(Err((buf, eof)));
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        if let Some(decided) = frame_status(&mut buf, eof, max_message) {
            return Ok(Ok(decided));
        }
    }
}

/// `recv(MSG_DONTWAIT)` of at most `room` bytes into `buf`'s spare capacity. Only the bytes
/// received are written (the spare capacity is not zero-filled first), so memory the peer
/// only announced is never touched.
fn recv_spare(fd: std::os::fd::RawFd, buf: &mut Vec<u8>, room: usize) -> nix::Result<usize> {
    buf.reserve(room);
    let spare = buf.spare_capacity_mut();
    let room = room.min(spare.len());
    // SAFETY: `spare` is memory `buf` owns, at least `room` bytes long; recv writes at most
    // `room` bytes into it and nothing reads it before it is written.
    let got = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), room, libc::MSG_DONTWAIT) };
    let got = usize::try_from(got).map_err(|_| nix::errno::Errno::last())?;
    // SAFETY: recv initialised the first `got` (<= `room`) bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + got) };
    Ok(got)
}

/// Sends without waiting, with `MSG_MORE` (see [`write_all_more`]); returns how much went.
fn send_now(std: &std::net::TcpStream, frame: &[u8]) -> std::io::Result<usize> {
    use nix::sys::socket::{MsgFlags, send};
    use std::os::fd::AsRawFd;
    let flags = MsgFlags::from_bits_retain(libc::MSG_MORE)
        | MsgFlags::MSG_NOSIGNAL
        | MsgFlags::MSG_DONTWAIT;
    let mut sent = 0;
    while sent < frame.len() {
        match send(
            std.as_raw_fd(),
            frame.get(sent..).unwrap_or_default(),
            flags,
        ) {
            Ok(0) => break,
            Ok(n) => sent += n,
            Err(nix::errno::Errno::EAGAIN) => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(sent)
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

/// Whether `buf` (with `eof`: the peer has half-closed) decides the request: `None` while
/// more bytes are needed. A frame is the header (8 bytes, or fewer if the peer half-closes)
/// and exactly the body it announces.
fn frame_status(
    buf: &mut Vec<u8>,
    eof: bool,
    max_message: usize,
) -> Option<Result<(Value, Vec<u8>), ReadError>> {
    if buf.len() < HEADER_LEN && !eof {
        return None;
    }
    let head_len = buf.len().min(HEADER_LEN);
    let announced = match protocol::parse_header(&buf[..head_len]) {
        Ok(a) => a,
        Err(e) => return Some(Err(ReadError::Frame(e, vec![]))),
    };
    let want = usize::try_from(announced.max(0)).unwrap_or(usize::MAX);
    if want > max_message {
        return Some(Err(ReadError::Frame(FrameError::TooLarge(want), vec![])));
    }
    let total = HEADER_LEN + want;
    if buf.len() < total && !eof {
        return None;
    }
    if buf.len() < total {
        let got = buf.len().saturating_sub(HEADER_LEN);
        return Some(Err(ReadError::Frame(
            FrameError::ShortBody {
                announced: want,
                got,
            },
            vec![],
        )));
    }
    // A lying header that announces less than was sent: only the announced bytes count.
    buf.truncate(total);
    let body = buf.split_off(HEADER_LEN);
    Some(match pyjson::parse_bytes(&body) {
        Ok(v) => Ok((v, body)),
        Err(e) => Err(ReadError::Frame(FrameError::Json(e), body)),
    })
}

/// Reads until [`frame_status`] decides (usually all in one `read`).
async fn read_frame(
    stream: &mut TcpStream,
    mut buf: Vec<u8>,
    mut eof: bool,
    max_message: usize,
) -> Result<(Value, Vec<u8>), ReadError> {
    loop {
        if let Some(decided) = frame_status(&mut buf, eof, max_message) {
            return decided;
        }
        // Room is made once bytes are there (a silent peer holds only what it sent), and
        // `try_read_buf` writes into the spare capacity only what arrived.
        stream.readable().await.map_err(ReadError::Io)?;
        buf.reserve(next_read(&buf));
        match stream.try_read_buf(&mut buf) {
            Ok(n) => eof = n == 0,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
}

async fn send_reply(stream: &mut TcpStream, reply: &Reply, limit: Duration, peer: SocketAddr) {
    let frame = protocol::encode_frame(&reply.body());
    send_frame(stream, &frame, limit, peer).await;
}

/// Sends (the rest of) a reply frame and half-closes, within `limit`.
async fn send_frame(stream: &mut TcpStream, frame: &[u8], limit: Duration, peer: SocketAddr) {
    let write = async {
        write_all_more(stream, frame).await?;
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
