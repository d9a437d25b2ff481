//! The coordinator client a Multi-Node job uses, with lava-dispatcher's poll semantics
//! (`MultinodeProtocol.poll`): a new TCP connection per request, the frame sent whole and the
//! write side shut, one reply read; `wait` (or a connection closed without a reply) means sleep
//! `poll_delay` and ask again, until the call's timeout.
//!
//! Timeouts as LAVA applies them: system calls (`group_data` at the start, `clear_group` at the
//! end, the delayed-start wait) use 90 s (`LAVA_MULTINODE_SYSTEM_TIMEOUT`), or the role's
//! `timeout` for a delayed start; API calls from the test shell use the protocol block's
//! `timeout` (30 s until one is set). Unlike LAVA 2023.01, which retries an unreachable
//! coordinator forever, labd retries with a growing delay (LAVA's `+2 s` per failure) only
//! within the call's timeout, and caps each connection attempt at `io_timeout`.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::config::ClientSettings;
use super::error::{Call, CoordinatorError};
use super::protocol::{self, CLIENT_MAX_BODY, Envelope, HEADER_LEN, Reply, Request};
use super::pyjson::{Dict, Key, Value, py_str};

/// `LAVA_MULTINODE_SYSTEM_TIMEOUT`.
pub const SYSTEM_TIMEOUT: Duration = Duration::from_secs(90);
/// LAVA's default action timeout, used for API calls until the protocol block sets one.
pub const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest delay between attempts to reach an unreachable coordinator.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Largest reply accepted.
const MAX_REPLY: usize = 64 << 20;

/// Who this node is in its group.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    /// `client_name`: the job id.
    pub job_id: String,
    /// `group_name`: the group's `target_group`.
    pub group: String,
    pub role: String,
    pub group_size: u32,
    /// `hostname`: this worker's host name.
    pub hostname: String,
}

/// A Multi-Node job's connection to its coordinator.
#[derive(Debug, Clone)]
pub struct CoordinatorClient {
    settings: ClientSettings,
    envelope: Envelope,
    group_size: u32,
    system_timeout: Duration,
    api_timeout: Duration,
}

/// The group's members, `(client_name, role)` in the coordinator's order.
pub type Roles = Vec<(String, String)>;

impl CoordinatorClient {
    pub fn new(settings: ClientSettings, node: NodeIdentity) -> Self {
        let envelope = Envelope {
            port: Value::Int(i64::from(settings.port)),
            blocksize: Value::Int(settings.blocksize as i64),
            poll_delay: settings.poll_delay_value.clone(),
            host: settings.host.clone(),
            hostname: node.hostname,
            client_name: node.job_id,
            group_name: node.group,
            role: node.role,
        };
        CoordinatorClient {
            settings,
            envelope,
            group_size: node.group_size,
            system_timeout: SYSTEM_TIMEOUT,
            api_timeout: DEFAULT_API_TIMEOUT,
        }
    }

    /// The protocol block's `timeout`: used by every later API call.
    pub fn set_api_timeout(&mut self, t: Duration) {
        self.api_timeout = t;
    }

    pub fn set_system_timeout(&mut self, t: Duration) {
        self.system_timeout = t;
    }

    pub fn api_timeout(&self) -> Duration {
        self.api_timeout
    }

    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// Registers this node and waits (system timeout) until the whole group has.
    pub async fn group_data(&self) -> Result<Roles, CoordinatorError> {
        let req = Request::GroupData {
            group_size: self.group_size,
        };
        match self.call(&req, self.system_timeout).await? {
            Reply::GroupData(roles) => Ok(roles
                .iter()
                .map(|(k, v)| (py_str(&k.to_value()), py_str(v)))
                .collect()),
            other => Err(self.bad_reply(&req, format!("expected group_data, got {other:?}"))),
        }
    }

    /// Tells the coordinator this node is done (system timeout).
    pub async fn clear_group(&self) -> Result<(), CoordinatorError> {
        let req = Request::ClearGroup {
            group_size: self.group_size,
        };
        self.call(&req, self.system_timeout).await.map(drop)
    }

    /// Delayed start: waits until the first job of `expect_role` has sent `lava_start`
    /// (`timeout` is the role's protocol timeout, else the system timeout).
    pub async fn wait_for_start(
        &self,
        expect_role: &str,
        timeout: Option<Duration>,
    ) -> Result<(), CoordinatorError> {
        let req = Request::DelayedStart {
            expect_role: expect_role.to_string(),
        };
        self.call(&req, timeout.unwrap_or(self.system_timeout))
            .await
            .map(drop)
    }

    /// Releases the jobs waiting for this role (`lava-send lava_start`).
    pub async fn lava_start(&self) -> Result<(), CoordinatorError> {
        self.lava_send("lava_start", Dict::new()).await
    }

    /// Sends `message` (key/value data) under `message_id` to the whole group.
    pub async fn lava_send(&self, message_id: &str, message: Dict) -> Result<(), CoordinatorError> {
        let req = Request::Send {
            message_id: message_id.to_string(),
            message: Value::Dict(message),
        };
        self.call(&req, self.api_timeout).await.map(drop)
    }

    /// Waits until some node has sent `message_id`; returns `{sender: {key: value}}`.
    pub async fn lava_wait(&self, message_id: &str) -> Result<Value, CoordinatorError> {
        let req = Request::Wait {
            message_id: message_id.to_string(),
            node_id: self.envelope.client_name.clone(),
        };
        self.ack_message(&req).await
    }

    /// Waits until every node (or, with LAVA's quirk, see the server docs, every node of
    /// `role`) has sent `message_id`; returns `{sender: {key: value}, ...}`.
    pub async fn lava_wait_all(
        &self,
        message_id: &str,
        role: Option<&str>,
    ) -> Result<Value, CoordinatorError> {
        let req = Request::WaitAll {
            message_id: message_id.to_string(),
            role: role.map(str::to_string),
        };
        self.ack_message(&req).await
    }

    /// Waits until every node has reached `message_id`.
    pub async fn lava_sync(&self, message_id: &str) -> Result<Value, CoordinatorError> {
        let req = Request::Sync {
            message_id: message_id.to_string(),
        };
        self.ack_message(&req).await
    }

    async fn ack_message(&self, req: &Request) -> Result<Value, CoordinatorError> {
        match self.call(req, self.api_timeout).await? {
            Reply::Ack(m) => Ok(m.unwrap_or(Value::Str("ack".into()))),
            other => Err(self.bad_reply(req, format!("expected ack, got {other:?}"))),
        }
    }

    /// One request, polled until a reply other than `wait`; `nack` is an error.
    pub async fn call(&self, req: &Request, timeout: Duration) -> Result<Reply, CoordinatorError> {
        match self.poll(req, timeout).await? {
            Reply::Nack => Err(CoordinatorError::Nack {
                call: self.call_ctx(req),
            }),
            r => Ok(r),
        }
    }

    /// One request, polled until a reply other than `wait` (which may be `nack`).
    pub async fn poll(&self, req: &Request, timeout: Duration) -> Result<Reply, CoordinatorError> {
        use tracing::Instrument;
        let span = tracing::debug_span!(
            "coordinator",
            job = %self.envelope.client_name,
            group = %self.envelope.group_name,
            request = req.name(),
            message_id = req.message_id().unwrap_or(""),
        );
        self.poll_inner(req, timeout).instrument(span).await
    }

    async fn poll_inner(
        &self,
        req: &Request,
        timeout: Duration,
    ) -> Result<Reply, CoordinatorError> {
        let body = self.envelope.body(req);
        if body.len() > CLIENT_MAX_BODY {
            return Err(CoordinatorError::TooLong {
                call: self.call_ctx(req),
                len: body.len(),
                limit: CLIENT_MAX_BODY,
            });
        }
        let frame = protocol::encode_frame(&body);
        let start = Instant::now();
        let deadline = start + timeout;
        let poll_delay = self.settings.poll_delay;
        let mut backoff = poll_delay;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            let limit = self
                .settings
                .io_timeout
                .min(left.max(Duration::from_millis(1)));
            let (pause, last_failure) =
                match tokio::time::timeout(limit, self.exchange(&frame)).await {
                    Ok(Ok(Some(text))) => match Reply::parse(&text) {
                        Ok(Reply::Wait) => {
                            backoff = poll_delay;
                            (poll_delay, None)
                        }
                        Ok(reply) => {
                            debug!(request = req.name(), attempts, "coordinator replied");
                            return Ok(reply);
                        }
                        Err(detail) => return Err(self.bad_reply(req, detail)),
                    },
                    // Closed without a reply: the dispatcher treats it as "wait".
                    Ok(Ok(None)) => (poll_delay, None),
                    Ok(Err(e)) => {
                        let b = backoff;
                        backoff = (backoff + Duration::from_secs(2)).min(MAX_BACKOFF);
                        (b, Some(e.to_string()))
                    }
                    Err(_) => {
                        let b = backoff;
                        backoff = (backoff + Duration::from_secs(2)).min(MAX_BACKOFF);
                        (b, Some(format!("no reply within {limit:?}")))
                    }
                };
            if let Some(f) = &last_failure {
                warn!(
                    request = req.name(),
                    attempt = attempts,
                    "coordinator {}: {f}",
                    self.settings.addr()
                );
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.gave_up(req, attempts, start.elapsed(), last_failure));
            }
            tokio::time::sleep(pause.min(left)).await;
            if Instant::now() >= deadline {
                return Err(self.gave_up(req, attempts, start.elapsed(), last_failure));
            }
        }
    }

    /// Connect, send the frame, half-close, read one reply frame. `None`: closed without one.
    async fn exchange(&self, frame: &[u8]) -> std::io::Result<Option<String>> {
        let mut s = TcpStream::connect((self.settings.host.as_str(), self.settings.port)).await?;
        let _ = s.set_nodelay(true);
        s.write_all(frame).await?;
        s.shutdown().await?;
        let mut head = [0u8; HEADER_LEN];
        let mut got = 0;
        while got < HEADER_LEN {
            match s.read(&mut head[got..]).await? {
                0 => break,
                n => got += n,
            }
        }
        if got == 0 {
            return Ok(None);
        }
        let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
        let len = protocol::parse_header(&head[..got]).map_err(|e| bad(e.to_string()))?;
        let len = usize::try_from(len.max(0)).unwrap_or(usize::MAX);
        if len > MAX_REPLY {
            return Err(bad(format!("reply of {len} bytes is too large")));
        }
        let mut body = Vec::with_capacity(len);
        (&mut s).take(len as u64).read_to_end(&mut body).await?;
        String::from_utf8(body)
            .map(Some)
            .map_err(|_| bad("reply is not UTF-8".into()))
    }

    fn bad_reply(&self, req: &Request, detail: String) -> CoordinatorError {
        CoordinatorError::BadReply {
            call: self.call_ctx(req),
            detail,
        }
    }

    fn gave_up(
        &self,
        req: &Request,
        attempts: u32,
        waited: Duration,
        last_failure: Option<String>,
    ) -> CoordinatorError {
        let call = self.call_ctx(req);
        match last_failure {
            Some(last) => CoordinatorError::Unreachable {
                call,
                attempts,
                waited,
                last,
            },
            None => CoordinatorError::Timeout {
                call,
                attempts,
                waited,
            },
        }
    }

    /// The context of an error about `req`.
    fn call_ctx(&self, req: &Request) -> Box<Call> {
        Box::new(Call {
            addr: self.settings.addr(),
            group: self.envelope.group_name.clone(),
            request: req.name(),
            message_id: req.message_id().map(str::to_string),
        })
    }
}

/// Builds a `lava_send` message from `key=value` pairs.
pub fn message_from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Dict {
    pairs
        .into_iter()
        .map(|(k, v)| (Key::from(k), Value::str(v)))
        .collect()
}
