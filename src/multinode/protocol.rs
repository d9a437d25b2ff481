//! The lava-coordinator wire protocol (LAVA 2023.01), byte for byte.
//!
//! One request per TCP connection. Each side sends a frame: the body length as 8 upper-case
//! hex digits (`"%08X" % len`), then the JSON body as Python's `json.dumps` writes it. The
//! client half-closes after its frame; the server answers one frame (or nothing) and closes.
//! Requests are the dispatcher's `base_message` (`port`, `blocksize`, `poll_delay`, `host`,
//! `hostname`, `client_name`, `group_name`, `role`, in that order) updated with the request
//! keys; replies are `{"response": "ack"|"wait"|"nack"|"group_data", ...}`.

use super::pyjson::{self, Dict, Key, Value, dict};

/// Length of the frame header.
pub const HEADER_LEN: usize = 8;

/// The dispatcher refuses to send bodies longer than this (`JobError("Message was too long
/// to send!")`); labd's client does the same.
pub const CLIENT_MAX_BODY: usize = 0xFFFE;

/// A frame: header and body.
pub fn encode_frame(body: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(format!("{:08X}", body.len()).as_bytes());
    out.extend_from_slice(body.as_bytes());
    out
}

/// Why a received frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// lava-coordinator: `int(header, 16)` raised ("Invalid message").
    #[error("invalid header {0:?}")]
    BadHeader(String),
    #[error("header announces {announced} bytes, only {got} arrived")]
    ShortBody { announced: usize, got: usize },
    #[error("message of {0} bytes is larger than the limit")]
    TooLarge(usize),
    /// lava-coordinator: `json.loads` raised ("JSON error").
    #[error("JSON error: {0}")]
    Json(#[from] pyjson::ParseError),
}

/// The body length a header announces, read as lava-coordinator reads it: the bytes decoded
/// as text and passed to Python's `int(text, 16)` (so `" 0x1F"` is 31 and `"-1"` is -1; a
/// negative or zero length means an empty body).
pub fn parse_header(raw: &[u8]) -> Result<i128, FrameError> {
    let text = String::from_utf8_lossy(raw);
    match std::str::from_utf8(raw) {
        Ok(t) => pyjson::parse_py_int(t, 16).ok_or_else(|| FrameError::BadHeader(text.into())),
        Err(_) => Err(FrameError::BadHeader(text.into())),
    }
}

/// Decodes a whole frame held in memory (header, then exactly the announced body). This is
/// what the server does incrementally; it is the fuzzing entry point for frame decoding.
pub fn decode_frame(bytes: &[u8], max_body: usize) -> Result<Value, FrameError> {
    let head = &bytes[..bytes.len().min(HEADER_LEN)];
    let announced = parse_header(head)?;
    let want = usize::try_from(announced.max(0)).unwrap_or(usize::MAX);
    if want > max_body {
        return Err(FrameError::TooLarge(want));
    }
    let rest = &bytes[head.len()..];
    if rest.len() < want {
        return Err(FrameError::ShortBody {
            announced: want,
            got: rest.len(),
        });
    }
    Ok(pyjson::parse_bytes(&rest[..want])?)
}

/// What every request of one job carries (`MultinodeProtocol.base_message`).
#[derive(Debug, Clone)]
pub struct Envelope {
    /// `port`, `blocksize`, `poll_delay`: the values of the worker's coordinator settings as
    /// written there (usually ints), echoed in every request.
    pub port: Value,
    pub blocksize: Value,
    pub poll_delay: Value,
    /// `host`: the coordinator host name from the settings.
    pub host: String,
    /// `hostname`: this worker's host name.
    pub hostname: String,
    /// `client_name`: this job's id.
    pub client_name: String,
    /// `group_name`: the group's `target_group`.
    pub group_name: String,
    pub role: String,
}

/// One request, with its keys in the order the dispatcher adds them.
#[derive(Debug, Clone)]
pub enum Request {
    /// Registers and waits until the whole group has registered.
    GroupData {
        group_size: u32,
    },
    /// This node has finished; the group is deleted after the last one.
    ClearGroup {
        group_size: u32,
    },
    /// `message` is a dict in practice (`{}` when there is none).
    Send {
        message_id: String,
        message: Value,
    },
    Wait {
        message_id: String,
        node_id: String,
    },
    WaitAll {
        message_id: String,
        role: Option<String>,
    },
    Sync {
        message_id: String,
    },
    /// The delayed-start wait of a job whose role waits for `expect_role`'s `lava_start`
    /// (`waitrole` before `messageID`, as `MultinodeProtocol.set_up` builds it).
    DelayedStart {
        expect_role: String,
    },
}

impl Request {
    /// The `request` name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Request::GroupData { .. } => "group_data",
            Request::ClearGroup { .. } => "clear_group",
            Request::Send { .. } => "lava_send",
            Request::Wait { .. } => "lava_wait",
            Request::WaitAll { .. } | Request::DelayedStart { .. } => "lava_wait_all",
            Request::Sync { .. } => "lava_sync",
        }
    }

    /// The messageID, if the request has one.
    pub fn message_id(&self) -> Option<&str> {
        match self {
            Request::Send { message_id, .. }
            | Request::Wait { message_id, .. }
            | Request::WaitAll { message_id, .. }
            | Request::Sync { message_id } => Some(message_id),
            Request::DelayedStart { .. } => Some("lava_start"),
            Request::GroupData { .. } | Request::ClearGroup { .. } => None,
        }
    }
}

impl Envelope {
    /// The request body exactly as `json.dumps(deepcopy(base_message).update(msg))`.
    pub fn body(&self, req: &Request) -> String {
        let s = |v: &str| Value::str(v);
        let mut d: Dict = [
            ("port", self.port.clone()),
            ("blocksize", self.blocksize.clone()),
            ("poll_delay", self.poll_delay.clone()),
            ("host", s(&self.host)),
            ("hostname", s(&self.hostname)),
            ("client_name", s(&self.client_name)),
            ("group_name", s(&self.group_name)),
            ("role", s(&self.role)),
            ("request", s(req.name())),
        ]
        .into_iter()
        .map(|(k, v)| (Key::from(k), v))
        .collect();
        let mut put = |k: &str, v: Value| d.insert(Key::from(k), v);
        match req {
            Request::GroupData { group_size } | Request::ClearGroup { group_size } => {
                put("group_size", Value::Int(i64::from(*group_size)))
            }
            Request::Send {
                message_id,
                message,
            } => {
                put("messageID", s(message_id));
                put("message", message.clone());
            }
            Request::Wait {
                message_id,
                node_id,
            } => {
                put("messageID", s(message_id));
                put("nodeID", s(node_id));
            }
            Request::WaitAll { message_id, role } => {
                put("messageID", s(message_id));
                if let Some(r) = role.as_deref().filter(|r| !r.is_empty()) {
                    put("waitrole", s(r));
                }
            }
            Request::Sync { message_id } => put("messageID", s(message_id)),
            Request::DelayedStart { expect_role } => {
                put("waitrole", s(expect_role));
                put("messageID", s("lava_start"));
            }
        }
        pyjson::dumps(&Value::Dict(d))
    }
}

/// A coordinator reply.
#[derive(Debug, Clone)]
pub enum Reply {
    /// `{"response": "ack"}`, or with `"message"`.
    Ack(Option<Value>),
    Wait,
    Nack,
    /// `{"response": "group_data", "roles": {client_name: role, ...}}`.
    GroupData(Dict),
}

impl Reply {
    /// The reply body as lava-coordinator writes it.
    pub fn body(&self) -> String {
        let s = |v: &str| Value::str(v);
        let v = match self {
            Reply::Ack(None) => dict([("response", s("ack"))]),
            Reply::Ack(Some(m)) => dict([("response", s("ack")), ("message", m.clone())]),
            Reply::Wait => dict([("response", s("wait"))]),
            Reply::Nack => dict([("response", s("nack"))]),
            Reply::GroupData(roles) => dict([
                ("response", s("group_data")),
                ("roles", Value::Dict(roles.clone())),
            ]),
        };
        pyjson::dumps(&v)
    }

    /// Reads a reply body the way the dispatcher does: JSON with a `response` key; any
    /// response other than `wait` ends the poll.
    pub fn parse(body: &str) -> Result<Reply, String> {
        let v = pyjson::parse(body).map_err(|e| format!("not JSON ({e})"))?;
        let Value::Dict(d) = v else {
            return Err("not a JSON object".into());
        };
        let response = d
            .get_str("response")
            .ok_or("no \"response\" key")?
            .as_str()
            .ok_or("\"response\" is not a string")?;
        Ok(match response {
            "wait" => Reply::Wait,
            "nack" => Reply::Nack,
            "ack" => Reply::Ack(d.get_str("message").cloned()),
            "group_data" => match d.get_str("roles") {
                Some(Value::Dict(roles)) => Reply::GroupData(roles.clone()),
                _ => return Err("group_data reply without a \"roles\" object".into()),
            },
            other => return Err(format!("unknown response {other:?}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(client: &str, role: &str) -> Envelope {
        Envelope {
            port: Value::Int(3079),
            blocksize: Value::Int(4096),
            poll_delay: Value::Int(1),
            host: "127.0.0.1".into(),
            hostname: format!("worker-{client}"),
            client_name: client.into(),
            group_name: "peers-demo-e51ceaa8".into(),
            role: role.into(),
        }
    }

    /// Frames from /work/shared/reference/coordinator-transcript.txt (lava-coordinator 2023.01).
    #[test]
    fn requests_match_the_transcript() {
        let a = env("100.0", "server");
        let b = env("100.1", "client");
        let f = |e: &Envelope, r: Request| String::from_utf8(encode_frame(&e.body(&r))).unwrap();
        assert_eq!(
            f(&a, Request::GroupData { group_size: 2 }),
            r#"000000DC{"port": 3079, "blocksize": 4096, "poll_delay": 1, "host": "127.0.0.1", "hostname": "worker-100.0", "client_name": "100.0", "group_name": "peers-demo-e51ceaa8", "role": "server", "request": "group_data", "group_size": 2}"#
        );
        assert_eq!(
            f(
                &b,
                Request::Wait {
                    message_id: "ipaddr".into(),
                    node_id: "100.1".into()
                }
            ),
            r#"000000F4{"port": 3079, "blocksize": 4096, "poll_delay": 1, "host": "127.0.0.1", "hostname": "worker-100.1", "client_name": "100.1", "group_name": "peers-demo-e51ceaa8", "role": "client", "request": "lava_wait", "messageID": "ipaddr", "nodeID": "100.1"}"#
        );
        let msg = pyjson::parse(r#"{"ipaddr": "127.0.0.1", "port": "5000"}"#).unwrap();
        assert_eq!(
            f(
                &a,
                Request::Send {
                    message_id: "ipaddr".into(),
                    message: msg
                }
            ),
            r#"00000115{"port": 3079, "blocksize": 4096, "poll_delay": 1, "host": "127.0.0.1", "hostname": "worker-100.0", "client_name": "100.0", "group_name": "peers-demo-e51ceaa8", "role": "server", "request": "lava_send", "messageID": "ipaddr", "message": {"ipaddr": "127.0.0.1", "port": "5000"}}"#
        );
        assert_eq!(
            f(
                &a,
                Request::Sync {
                    message_id: "booted".into()
                }
            ),
            r#"000000E1{"port": 3079, "blocksize": 4096, "poll_delay": 1, "host": "127.0.0.1", "hostname": "worker-100.0", "client_name": "100.0", "group_name": "peers-demo-e51ceaa8", "role": "server", "request": "lava_sync", "messageID": "booted"}"#
        );
        assert_eq!(
            f(
                &a,
                Request::WaitAll {
                    message_id: "ready".into(),
                    role: None
                }
            ),
            r#"000000E4{"port": 3079, "blocksize": 4096, "poll_delay": 1, "host": "127.0.0.1", "hostname": "worker-100.0", "client_name": "100.0", "group_name": "peers-demo-e51ceaa8", "role": "server", "request": "lava_wait_all", "messageID": "ready"}"#
        );
        assert_eq!(
            f(&b, Request::ClearGroup { group_size: 2 }),
            r#"000000DD{"port": 3079, "blocksize": 4096, "poll_delay": 1, "host": "127.0.0.1", "hostname": "worker-100.1", "client_name": "100.1", "group_name": "peers-demo-e51ceaa8", "role": "client", "request": "clear_group", "group_size": 2}"#
        );
        assert!(
            a.body(&Request::DelayedStart {
                expect_role: "host".into()
            })
            .ends_with(
                r#""request": "lava_wait_all", "waitrole": "host", "messageID": "lava_start"}"#
            )
        );
    }

    #[test]
    fn replies_match_the_transcript() {
        let fr = |r: Reply| String::from_utf8(encode_frame(&r.body())).unwrap();
        assert_eq!(fr(Reply::Wait), r#"00000014{"response": "wait"}"#);
        assert_eq!(fr(Reply::Ack(None)), r#"00000013{"response": "ack"}"#);
        assert_eq!(fr(Reply::Nack), r#"00000014{"response": "nack"}"#);
        assert_eq!(
            fr(Reply::Ack(Some(Value::str("booted")))),
            r#"00000028{"response": "ack", "message": "booted"}"#
        );
        let roles: Dict = [("100.0", "server"), ("100.1", "client")]
            .into_iter()
            .map(|(k, v)| (Key::from(k), Value::str(v)))
            .collect();
        assert_eq!(
            fr(Reply::GroupData(roles)),
            r#"0000004B{"response": "group_data", "roles": {"100.0": "server", "100.1": "client"}}"#
        );
    }

    #[test]
    fn frames_decode_like_lava_coordinator() {
        assert!(matches!(
            decode_frame(b"00000002{}", 100),
            Ok(Value::Dict(d)) if d.is_empty()
        ));
        assert!(matches!(
            decode_frame(b"zzzzzzzz{}", 100),
            Err(FrameError::BadHeader(_))
        ));
        assert!(matches!(
            decode_frame(b"", 100),
            Err(FrameError::BadHeader(_))
        ));
        assert!(matches!(
            decode_frame(b"00000000", 100),
            Err(FrameError::Json(_))
        ));
        assert!(matches!(
            decode_frame(b"00000010{}", 100),
            Err(FrameError::ShortBody { .. })
        ));
        assert!(matches!(
            decode_frame(b"FFFFFFFF", 100),
            Err(FrameError::TooLarge(_))
        ));
        assert_eq!(parse_header(b" 0x1F   ").unwrap(), 31);
    }
}
