//! A per-device telnet listener that speaks like ser2net's `telnet` accepter, so a LAVA device
//! dictionary's `connection_command: telnet localhost PORT` works against labd unchanged.
//!
//! Differences from ser2net, on purpose: any number of clients, each with its own queue (a
//! stalled client never stalls the others); clients stay connected while the board's tty is
//! replugged or ser2net restarts; input is refused while a job holds the console. Lost/back
//! events are not injected into the byte stream (a LAVA job parses it); a client that fell
//! behind gets one `[labd: N bytes missed]` line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::telnet::{self, Decoder, Negotiator, SER2NET_GREETING, TelnetEvent};
use super::{ConsoleError, ConsoleEvent, ConsoleHandle, SubscribeOptions};
use crate::ids::ClientId;

/// A client whose socket accepts nothing for this long is disconnected.
const WRITE_STALL_LIMIT: Duration = Duration::from_secs(60);

/// Negotiation answers and notices waiting for the writer. A client that keeps sending
/// requests (`IAC WILL 200`, each answered with `IAC DONT 200`) and never reads would
/// otherwise grow the queue for as long as the writer waits on its socket.
const CTL_QUEUE_LIMIT: usize = 64 * 1024;

/// A running listener; dropping it stops accepting and disconnects its clients.
pub struct TelnetListener {
    addr: SocketAddr,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl TelnetListener {
    /// Binds `addr` and serves `console` on it.
    pub async fn bind(addr: SocketAddr, console: ConsoleHandle) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        let span = tracing::info_span!("telnet", device = %console.device(), %addr);
        let task = tokio::spawn(
            async move {
                tracing::info!("telnet listener ready");
                loop {
                    tokio::select! {
                        _ = c.cancelled() => break,
                        r = listener.accept() => match r {
                            Ok((stream, peer)) => {
                                let console = console.clone();
                                let child = c.child_token();
                                tokio::spawn(
                                    serve_client(stream, peer, console, child)
                                        .instrument(tracing::info_span!("client", %peer)),
                                );
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "accept failed");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                }
            }
            .instrument(span),
        );
        Ok(Self {
            addr,
            cancel,
            task: Some(task),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, disconnects clients and waits for the accept loop to end.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for TelnetListener {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn serve_client(
    stream: TcpStream,
    peer: SocketAddr,
    console: ConsoleHandle,
    cancel: CancellationToken,
) {
    let client = ClientId(format!("telnet:{peer}"));
    let _ = stream.set_nodelay(true);
    let sub = match console
        .subscribe(SubscribeOptions::telnet(client.0.clone()))
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot attach telnet client");
            return;
        }
    };
    tracing::info!("telnet client connected");
    let (mut rd, mut wr) = stream.into_split();
    // Wire bytes the reader side needs sent (negotiation answers, notices).
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel::<BytesMut>();
    // Bytes in `ctl_tx` not yet taken by the writer, bounded by CTL_QUEUE_LIMIT.
    let ctl_queued = Arc::new(AtomicUsize::new(0));
    let ctl_taken = ctl_queued.clone();
    let ctl = CtlQueue {
        tx: ctl_tx,
        queued: ctl_queued,
    };
    let writer_cancel = cancel.clone();
    let writer = async move {
        let mut sub = sub;
        let mut out = BytesMut::with_capacity(16 * 1024);
        out.extend_from_slice(&SER2NET_GREETING);
        loop {
            if !out.is_empty() {
                match tokio::time::timeout(WRITE_STALL_LIMIT, wr.write_all(&out)).await {
                    Ok(Ok(())) => out.clear(),
                    Ok(Err(_)) => return,
                    Err(_) => {
                        tracing::warn!("telnet client stopped reading; disconnecting it");
                        return;
                    }
                }
            }
            tokio::select! {
                _ = writer_cancel.cancelled() => return,
                ctl = ctl_rx.recv() => match ctl {
                    Some(b) => {
                        ctl_taken.fetch_sub(b.len(), Ordering::Relaxed);
                        out.extend_from_slice(&b);
                    }
                    None => return,
                },
                ev = sub.recv() => match ev {
                    Some(ev) => encode_event(ev, &mut out),
                    None => return,
                }
            }
            // Take what else is queued, so a backlog goes out in large writes.
            while out.len() < 64 * 1024 {
                match sub.try_recv() {
                    Some(ev) => encode_event(ev, &mut out),
                    None => break,
                }
            }
        }
    };
    let reader = async move {
        let mut buf = BytesMut::with_capacity(4096);
        let mut decoder = Decoder::new();
        let mut negotiator = Negotiator::ser2net_server();
        let mut events = Vec::new();
        let mut data = BytesMut::new();
        let mut told_refused = false;
        loop {
            buf.clear();
            match rd.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            decoder.decode(&buf, &mut data, &mut events);
            let mut answers = BytesMut::new();
            for e in events.drain(..) {
                match e {
                    TelnetEvent::Negotiate { verb, option } => {
                        negotiator.handle(verb, option, &mut answers)
                    }
                    TelnetEvent::Command(telnet::BRK) => {
                        if let Err(e) = console.send_break(&client, false).await {
                            tracing::debug!(error = %e, "BREAK from telnet client refused");
                        }
                    }
                    _ => {}
                }
            }
            if !answers.is_empty() && !ctl.send(answers) {
                return;
            }
            if data.is_empty() {
                continue;
            }
            let input = data.split().freeze();
            match console.send_input(&client, input, false).await {
                Ok(()) => told_refused = false,
                Err(e @ ConsoleError::HeldByJob { .. }) | Err(e @ ConsoleError::Offline { .. }) => {
                    if !told_refused {
                        told_refused = true;
                        let mut note = BytesMut::new();
                        note.extend_from_slice(
                            format!("\r\n[labd: {e}; input ignored]\r\n").as_bytes(),
                        );
                        if !ctl.send(note) {
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "telnet input refused");
                }
            }
        }
    };
    tokio::select! {
        _ = writer => {}
        _ = reader => {}
        _ = cancel.cancelled() => {}
    }
    tracing::info!("telnet client disconnected");
}

/// The reader's side of the queue of wire bytes for the writer.
struct CtlQueue {
    tx: mpsc::UnboundedSender<BytesMut>,
    queued: Arc<AtomicUsize>,
}

impl CtlQueue {
    /// Queues `b`; false when the client must be disconnected (the writer is gone, or the
    /// client sent requests faster than it read the answers, past CTL_QUEUE_LIMIT).
    fn send(&self, b: BytesMut) -> bool {
        let n = b.len();
        if self.queued.load(Ordering::Relaxed) + n > CTL_QUEUE_LIMIT {
            tracing::warn!(
                limit = CTL_QUEUE_LIMIT,
                "telnet client sends negotiation requests without reading the answers; disconnecting it"
            );
            return false;
        }
        self.queued.fetch_add(n, Ordering::Relaxed);
        self.tx.send(b).is_ok()
    }
}

fn encode_event(ev: ConsoleEvent, out: &mut BytesMut) {
    match ev {
        ConsoleEvent::Data(d) => telnet::escape_into(&d, out),
        ConsoleEvent::Missed(n) => {
            out.extend_from_slice(format!("\r\n[labd: {n} bytes missed]\r\n").as_bytes())
        }
        ConsoleEvent::Lost { .. } | ConsoleEvent::Back { .. } => {}
    }
}
