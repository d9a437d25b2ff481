//! `{"request": "attach"}`: an operator session on a console over the control socket.
//!
//! After the JSON reply the connection carries frames both ways (see [`super::frame`]). The
//! operator is named `op:<unix user>` from the socket's peer credentials; input is arbitrated
//! by the hub (read-only while a job holds the console, unless `force`).

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::frame::{self, FrameKind};
use super::server::{Conn, Handler, Request};
use super::{AttachReply, AttachRequest, ControlError};
use crate::console::{ConsoleError, ConsoleEvent, ConsoleRegistry, SubscribeOptions};
use crate::ids::ClientId;

/// A client whose socket accepts nothing for this long is disconnected.
const WRITE_STALL_LIMIT: Duration = Duration::from_secs(60);
/// Queue budget of an operator session.
const QUEUE_BYTES: usize = 1 << 20;

/// The `attach` handler over the consoles in `registry`.
pub fn handler(registry: Arc<ConsoleRegistry>) -> impl Handler {
    move |req: Request, conn: Conn| {
        let registry = registry.clone();
        async move { serve(registry, req, conn).await }
    }
}

fn encode_event(ev: ConsoleEvent, out: &mut BytesMut) {
    match ev {
        ConsoleEvent::Data(d) => frame::encode(FrameKind::Data, &d, out),
        ConsoleEvent::Missed(n) => frame::encode(FrameKind::Missed, &n.to_be_bytes(), out),
        ConsoleEvent::Lost { reason } => frame::encode(FrameKind::Lost, reason.as_bytes(), out),
        ConsoleEvent::Back { after, opened } => frame::encode(
            FrameKind::Back,
            format!("after {:.1} s: {opened}", after.as_secs_f64()).as_bytes(),
            out,
        ),
    }
}

fn notice(text: &str) -> BytesMut {
    let mut b = BytesMut::new();
    frame::encode(FrameKind::Notice, text.as_bytes(), &mut b);
    b
}

async fn serve(registry: Arc<ConsoleRegistry>, req: Request, mut conn: Conn) {
    let a: AttachRequest = match req.parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = conn.reply_error(&e).await;
            return;
        }
    };
    let Some(console) = registry.get(&a.device) else {
        let _ = conn
            .reply_error(&ControlError::Console(ConsoleError::UnknownDevice(
                a.device.clone(),
            )))
            .await;
        return;
    };
    let client = ClientId(format!("op:{}", req.peer.user));
    let sub = match console
        .subscribe(SubscribeOptions {
            name: format!("{client} pid {}", req.peer.pid.unwrap_or(0)),
            queue_bytes: QUEUE_BYTES,
            replay: a.replay.min(crate::console::DEFAULT_SCROLLBACK),
        })
        .await
    {
        Ok(s) => s,
        Err(e) => {
            let _ = conn.reply_error(&ControlError::Console(e)).await;
            return;
        }
    };
    let status = console.status();
    let reply = AttachReply {
        device: a.device.clone(),
        client: client.0.clone(),
        online: status.online,
        writer: status.writer.clone(),
    };
    let Ok(reply) = serde_json::to_value(reply) else {
        return;
    };
    if conn.reply_ok(reply).await.is_err() {
        return;
    }
    let mode = if a.read_only {
        "read-only"
    } else if a.force {
        "forcing"
    } else {
        "read-write"
    };
    console.note(&format!("operator attached: {client} ({mode})"));
    let span = tracing::info_span!("attach", device = %a.device, %client);
    span.in_scope(|| tracing::info!(mode, "operator attached"));

    let Conn { stream, leftover } = conn;
    let (mut rd, mut wr) = stream.into_split();
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel::<BytesMut>();
    let writer = async move {
        let mut sub = sub;
        let mut out = BytesMut::with_capacity(16 * 1024);
        loop {
            let mut closing = false;
            tokio::select! {
                biased;
                ctl = ctl_rx.recv() => match ctl {
                    Some(b) => out.extend_from_slice(&b),
                    // The reader is done (detach, EOF): send what is queued, then end.
                    None => closing = true,
                },
                ev = sub.recv() => match ev {
                    Some(ev) => encode_event(ev, &mut out),
                    None => closing = true,
                }
            }
            while out.len() < 64 * 1024 && !closing {
                match sub.try_recv() {
                    Some(ev) => encode_event(ev, &mut out),
                    None => break,
                }
            }
            match tokio::time::timeout(WRITE_STALL_LIMIT, wr.write_all(&out)).await {
                Ok(Ok(())) => out.clear(),
                Ok(Err(_)) => return,
                Err(_) => {
                    tracing::warn!("operator stopped reading; disconnecting");
                    return;
                }
            }
            if closing {
                return;
            }
        }
    };
    let console_r = console.clone();
    let client_r = client.clone();
    let reader = async move {
        let mut buf = leftover;
        let mut last_refusal: Option<String> = None;
        loop {
            let f = match frame::decode(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => match rd.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                },
                Err(e) => {
                    let _ = ctl_tx.send(notice(&format!("protocol error: {e}; session closed")));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    return;
                }
            };
            let result = match f.kind {
                FrameKind::Detach => return,
                FrameKind::Input if a.read_only => {
                    Err("read-only session: input ignored".to_string())
                }
                FrameKind::Input => console_r
                    .send_input(&client_r, f.payload, a.force)
                    .await
                    .map_err(|e| format!("{e}; input ignored")),
                FrameKind::Break if a.read_only => {
                    Err("read-only session: BREAK ignored".to_string())
                }
                FrameKind::Break => console_r
                    .send_break(&client_r, a.force)
                    .await
                    .map_err(|e| format!("{e}; BREAK not sent")),
                other => Err(format!("unexpected {other:?} frame from the client")),
            };
            match result {
                Ok(()) => last_refusal = None,
                Err(text) => {
                    if last_refusal.as_deref() != Some(text.as_str()) {
                        let _ = ctl_tx.send(notice(&text));
                        last_refusal = Some(text);
                    }
                }
            }
        }
    };
    let mut writer = Box::pin(writer);
    tokio::select! {
        _ = &mut writer => {}
        _ = reader => {
            // Let the writer deliver the last notices before the connection closes.
            let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
        }
    }
    console.note(&format!("operator detached: {client}"));
    span.in_scope(|| tracing::info!("operator detached"));
}
