//! The daemon's side of the control socket: accept, read one request line, dispatch by kind.

use std::collections::HashMap;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::BytesMut;
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{ControlError, MAX_REQUEST};
use crate::console::source::BoxFut;

/// How long a client may take to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is on the other end (from `SO_PEERCRED`).
#[derive(Debug, Clone)]
pub struct Peer {
    pub uid: u32,
    pub pid: Option<i32>,
    /// The user name, or the uid as text when it has none.
    pub user: String,
}

/// One parsed request.
#[derive(Debug, Clone)]
pub struct Request {
    /// The `request` field.
    pub kind: String,
    /// The whole JSON object (handlers deserialize their own fields from it).
    pub body: Value,
    pub peer: Peer,
}

impl Request {
    /// The body as a handler's request type; a malformed body is a `BadRequest`.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, ControlError> {
        serde_json::from_value(self.body.clone())
            .map_err(|e| ControlError::BadRequest(format!("{}: {e}", self.kind)))
    }
}

/// A client connection after its request line: reply, then (optionally) stream.
pub struct Conn {
    pub stream: UnixStream,
    /// Bytes the client sent after its request line (the start of a stream).
    pub leftover: BytesMut,
}

impl Conn {
    /// Writes `{"ok": true, ...fields}` (fields from `value`, an object).
    pub async fn reply_ok(&mut self, value: Value) -> std::io::Result<()> {
        let mut obj = match value {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            other => {
                let mut m = Map::new();
                m.insert("result".into(), other);
                m
            }
        };
        obj.insert("ok".into(), Value::Bool(true));
        self.write_line(&Value::Object(obj)).await
    }

    /// Writes `{"ok": false, "error": "..."}`.
    pub async fn reply_error(&mut self, err: &ControlError) -> std::io::Result<()> {
        let v = serde_json::json!({"ok": false, "error": err.to_string()});
        self.write_line(&v).await
    }

    async fn write_line(&mut self, v: &Value) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(v).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.stream.write_all(&line).await
    }
}

/// Serves one request kind.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: Request, conn: Conn) -> BoxFut<'static, ()>;
}

impl<F, Fut> Handler for F
where
    F: Fn(Request, Conn) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    fn handle(&self, req: Request, conn: Conn) -> BoxFut<'static, ()> {
        Box::pin(self(req, conn))
    }
}

/// Adapts a request/response function into a [`Handler`]: `Ok(v)` becomes
/// `{"ok": true, ...v}`, `Err(e)` an error reply.
pub fn simple<F, Fut>(f: F) -> impl Handler
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, ControlError>> + Send + 'static,
{
    let f = Arc::new(f);
    move |req: Request, mut conn: Conn| {
        let f = f.clone();
        async move {
            let r = f(req).await;
            let _ = match r {
                Ok(v) => conn.reply_ok(v).await,
                Err(e) => conn.reply_error(&e).await,
            };
        }
    }
}

/// Request kinds and their handlers. Other domains register theirs at daemon start-up.
#[derive(Default)]
pub struct Handlers {
    map: RwLock<HashMap<String, Arc<dyn Handler>>>,
}

impl Handlers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the handler of `kind`.
    pub fn register(&self, kind: &str, handler: impl Handler) {
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(kind.to_string(), Arc::new(handler));
    }

    fn get(&self, kind: &str) -> Option<Arc<dyn Handler>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(kind)
            .cloned()
    }

    /// The registered kinds, sorted (for error messages).
    pub fn kinds(&self) -> Vec<String> {
        let mut k: Vec<String> = self
            .map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        k.sort();
        k
    }
}

/// Parses a request line into its kind and body.
pub fn parse_request_line(line: &[u8]) -> Result<(String, Value), ControlError> {
    let v: Value = serde_json::from_slice(line)
        .map_err(|e| ControlError::BadRequest(format!("not JSON: {e}")))?;
    let kind = v
        .get("request")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ControlError::BadRequest("expected an object with a string \"request\" field".into())
        })?
        .to_string();
    Ok((kind, v))
}

/// The listening control socket; removed when stopped.
pub struct ControlServer {
    path: PathBuf,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl ControlServer {
    /// Binds `path` (mode 0660, group `group` if given) and serves `handlers` on it. A stale
    /// socket is replaced; a live one (another daemon) is an error.
    pub async fn bind(
        path: &Path,
        group: Option<&str>,
        handlers: Arc<Handlers>,
    ) -> Result<Self, ControlError> {
        let sock_err = |source| ControlError::Socket {
            path: path.to_path_buf(),
            source,
        };
        if path.exists() {
            if UnixStream::connect(path).await.is_ok() {
                return Err(ControlError::AlreadyRunning(path.to_path_buf()));
            }
            std::fs::remove_file(path).map_err(sock_err)?;
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(sock_err)?;
        }
        let gid = match group {
            Some(g) => Some(
                nix::unistd::Group::from_name(g)
                    .ok()
                    .flatten()
                    .ok_or_else(|| ControlError::NoSuchGroup(g.to_string()))?
                    .gid,
            ),
            None => None,
        };
        let listener = UnixListener::bind(path).map_err(sock_err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(sock_err)?;
        if let Some(gid) = gid {
            nix::unistd::chown(path, None, Some(gid))
                .map_err(|e| sock_err(std::io::Error::from(e)))?;
        }
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        let span = tracing::info_span!("control", socket = %path.display());
        let task = tokio::spawn(
            async move {
                tracing::info!("control socket ready");
                loop {
                    tokio::select! {
                        _ = c.cancelled() => break,
                        r = listener.accept() => match r {
                            Ok((stream, _)) => {
                                let h = handlers.clone();
                                tokio::spawn(serve(stream, h).in_current_span());
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
            path: path.to_path_buf(),
            cancel,
            task: Some(task),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting and removes the socket file. Running sessions end with their console.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn peer_of(stream: &UnixStream) -> Peer {
    match stream.peer_cred() {
        Ok(c) => {
            let uid = c.uid();
            let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .map_or_else(|| uid.to_string(), |u| u.name);
            Peer {
                uid,
                pid: c.pid(),
                user,
            }
        }
        Err(_) => Peer {
            uid: u32::MAX,
            pid: None,
            user: "unknown".into(),
        },
    }
}

/// Reads the request line (bounded in size and time) and hands the connection to its handler.
async fn serve(mut stream: UnixStream, handlers: Arc<Handlers>) {
    let peer = peer_of(&stream);
    let mut buf = BytesMut::with_capacity(1024);
    let line = tokio::time::timeout(REQUEST_TIMEOUT, async {
        loop {
            if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line = buf.split_to(nl + 1);
                return Ok(line);
            }
            if buf.len() > MAX_REQUEST {
                return Err(ControlError::TooLong);
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) => {
                    return Err(ControlError::BadRequest(
                        "connection closed before a request".into(),
                    ));
                }
                Ok(_) => {}
                Err(e) => return Err(ControlError::Io(e)),
            }
        }
    })
    .await;
    let mut conn = Conn {
        stream,
        leftover: BytesMut::new(),
    };
    let line = match line {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => {
            tracing::debug!(user = %peer.user, error = %e, "bad control request");
            let _ = conn.reply_error(&e).await;
            return;
        }
        Err(_) => {
            let _ = conn
                .reply_error(&ControlError::BadRequest("no request within 10 s".into()))
                .await;
            return;
        }
    };
    conn.leftover = buf;
    let (kind, body) = match parse_request_line(&line) {
        Ok(x) => x,
        Err(e) => {
            tracing::debug!(user = %peer.user, error = %e, "bad control request");
            let _ = conn.reply_error(&e).await;
            return;
        }
    };
    let Some(handler) = handlers.get(&kind) else {
        let e = ControlError::UnknownRequest(kind.clone());
        tracing::debug!(user = %peer.user, error = %e, "unknown control request");
        let _ = conn
            .reply_error(&ControlError::BadRequest(format!(
                "{e}; known: {}",
                handlers.kinds().join(", ")
            )))
            .await;
        return;
    };
    tracing::debug!(user = %peer.user, request = %kind, "control request");
    handler.handle(Request { kind, body, peer }, conn).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        assert_eq!(
            parse_request_line(b"{\"request\":\"status\"}\n").unwrap().0,
            "status"
        );
        for bad in [
            &b"nope"[..],
            b"{}",
            b"{\"request\":1}",
            b"[1,2]",
            b"\xff\xfe",
        ] {
            assert!(parse_request_line(bad).is_err(), "{bad:?}");
        }
    }
}
