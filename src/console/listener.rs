//! A per-device telnet listener that speaks like ser2net's `telnet` accepter, so a LAVA device
//! dictionary's `connection_command: telnet localhost PORT` works against labd unchanged.
//!
//! Differences from ser2net, on purpose: any number of clients, each with its own queue (a
//! stalled client never stalls the others); clients stay connected while the board's tty is
//! replugged or ser2net restarts; input is refused while a job holds the console. Lost/back
//! events are not injected into the byte stream (a LAVA job parses it); a client that fell
//! behind gets one `[labd: N bytes missed]` line.

use std::net::SocketAddr;
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
                    Some(b) => out.extend_from_slice(&b),
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
            if !answers.is_empty() && ctl_tx.send(answers).is_err() {
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
                        let _ = ctl_tx.send(note);
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

fn encode_event(ev: ConsoleEvent, out: &mut BytesMut) {
    match ev {
        ConsoleEvent::Data(d) => telnet::escape_into(&d, out),
        ConsoleEvent::Missed(n) => {
            out.extend_from_slice(format!("\r\n[labd: {n} bytes missed]\r\n").as_bytes())
        }
        ConsoleEvent::Lost { .. } | ConsoleEvent::Back { .. } => {}
    }
}
