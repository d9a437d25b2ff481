//! The CLI's side of the control socket.

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::frame::{self, Frame, FrameKind};
use super::{AttachReply, AttachRequest, ControlError, MAX_REQUEST};

/// Talks to the daemon at a socket path.
#[derive(Debug, Clone)]
pub struct ControlClient {
    path: PathBuf,
}

impl ControlClient {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn connect(&self) -> Result<UnixStream, ControlError> {
        UnixStream::connect(&self.path)
            .await
            .map_err(|source| ControlError::Connect {
                path: self.path.clone(),
                source,
            })
    }

    /// Sends `request` (a JSON object with a `request` field) and returns the reply object;
    /// an `{"ok": false}` reply becomes [`ControlError::Remote`].
    pub async fn request(&self, request: Value) -> Result<Value, ControlError> {
        let mut stream = self.connect().await?;
        let (v, _) = exchange(&mut stream, &request).await?;
        Ok(v)
    }

    /// Opens an attach session.
    pub async fn attach(
        &self,
        req: &AttachRequest,
    ) -> Result<(AttachReply, AttachSession), ControlError> {
        let mut stream = self.connect().await?;
        let mut body =
            serde_json::to_value(req).map_err(|e| ControlError::BadRequest(e.to_string()))?;
        if let Value::Object(m) = &mut body {
            m.insert("request".into(), Value::String("attach".into()));
        }
        let (v, leftover) = exchange(&mut stream, &body).await?;
        let reply: AttachReply =
            serde_json::from_value(v).map_err(|e| ControlError::BadReply(e.to_string()))?;
        let (r, w) = stream.into_split();
        Ok((
            reply,
            AttachSession {
                reader: AttachReader {
                    half: r,
                    buf: leftover,
                },
                writer: AttachWriter { half: w },
            },
        ))
    }
}

/// Writes the request line, reads the reply line; returns it and any bytes after it.
async fn exchange(
    stream: &mut UnixStream,
    request: &Value,
) -> Result<(Value, BytesMut), ControlError> {
    let mut line =
        serde_json::to_vec(request).map_err(|e| ControlError::BadRequest(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).await?;
    let mut buf = BytesMut::with_capacity(4096);
    let reply = loop {
        if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            break buf.split_to(nl + 1);
        }
        if buf.len() > 16 * MAX_REQUEST {
            return Err(ControlError::BadReply("reply line too long".into()));
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(ControlError::BadReply(
                "the daemon closed the connection".into(),
            ));
        }
    };
    let v: Value =
        serde_json::from_slice(&reply).map_err(|e| ControlError::BadReply(e.to_string()))?;
    match v.get("ok").and_then(Value::as_bool) {
        Some(true) => Ok((v, buf)),
        Some(false) => Err(ControlError::Remote(
            v.get("error")
                .and_then(Value::as_str)
                .unwrap_or("unknown error")
                .to_string(),
        )),
        None => Err(ControlError::BadReply(format!("no \"ok\" field in {v}"))),
    }
}

/// An attach session, split so output can be read while input is written.
pub struct AttachSession {
    pub reader: AttachReader,
    pub writer: AttachWriter,
}

pub struct AttachReader {
    half: OwnedReadHalf,
    buf: BytesMut,
}

impl AttachReader {
    /// The next frame from the daemon; `None` when the session ended. Cancel-safe.
    pub async fn next(&mut self) -> Result<Option<Frame>, ControlError> {
        loop {
            if let Some(f) = frame::decode(&mut self.buf)? {
                return Ok(Some(f));
            }
            if self.half.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }
}

pub struct AttachWriter {
    half: OwnedWriteHalf,
}

impl AttachWriter {
    async fn send(&mut self, kind: FrameKind, payload: &[u8]) -> Result<(), ControlError> {
        let mut out = BytesMut::new();
        frame::encode(kind, payload, &mut out);
        self.half.write_all(&out).await?;
        Ok(())
    }

    pub async fn input(&mut self, data: &[u8]) -> Result<(), ControlError> {
        for chunk in data.chunks(frame::MAX_FRAME) {
            self.send(FrameKind::Input, chunk).await?;
        }
        Ok(())
    }

    pub async fn send_break(&mut self) -> Result<(), ControlError> {
        self.send(FrameKind::Break, &[]).await
    }

    pub async fn detach(&mut self) -> Result<(), ControlError> {
        self.send(FrameKind::Detach, &[]).await?;
        let _ = self.half.shutdown().await;
        Ok(())
    }
}

/// Text of a `Lost`/`Back`/`Notice` frame.
pub fn frame_text(payload: &Bytes) -> String {
    String::from_utf8_lossy(payload).into_owned()
}
