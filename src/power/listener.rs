//! pdudaemon's API served by labd (`[power] pdudaemon_listen`), so LAVA device dictionaries that
//! call `curl .../power/control/reboot?...`, `pduclient -H` or plain `pduclient` drive labd's
//! queues unchanged.
//!
//! One port serves both of pdudaemon's protocols (pduclient always uses port 16421 for both):
//! a connection whose first bytes are an HTTP method goes to the HTTP API, anything else is read
//! as the legacy TCP message `HOSTNAME PORT REQUEST [DELAY]`.
//!
//! HTTP replies match pdudaemon 1.1.1 (aiohttp) byte for byte: 200 `OK - accepted request\n`
//! after the action completed, 500 `Invalid request\n` for an invalid request or a failed action,
//! 404 `404: Not Found` for other paths, 405 `405: Method Not Allowed` (with `Allow: GET,HEAD`)
//! for other methods, all `text/plain; charset=utf-8`. Legacy replies: `ack\n`, `nack\n`, or
//! `Unexpected data` for a malformed message.
//!
//! Stopping (daemon stop, or a reload that replaces the listener) never waits on a client: an
//! HTTP request may take minutes (a PDU queue, retries, `delay=`), so requests still in flight
//! after [`STOP_GRACE`] are answered 503 `Service Unavailable: labd's listener stopped; the
//! request goes on\n` and their connections closed. Their power operations run in their own
//! tasks and complete regardless (so does a legacy TCP request, whose connection is its own).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ids::DeviceName;

use super::service::{PowerOp, PowerRequest, PowerService};

const TEXT: &str = "text/plain; charset=utf-8";
const OK_BODY: &str = "OK - accepted request\n";
const INVALID_BODY: &str = "Invalid request\n";
const STOPPED_BODY: &str = "Service Unavailable: labd's listener stopped; the request goes on\n";

/// How long requests in flight may still complete once the listener is told to stop.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// Which outlet a request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlTarget {
    /// `hostname=` (a PDU) and `port=` (its outlet, as given: `08` stays `08`).
    Outlet { hostname: String, port: String },
    /// `alias=`: in labd, a device name.
    Alias(String),
}

/// A parsed pdudaemon request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlRequest {
    pub op: PowerOp,
    pub target: ControlTarget,
    /// Seconds: reboot off time, or (deprecated in pdudaemon) a pause before on/off.
    pub delay: Option<u64>,
}

/// Python's `int()` on a decimal string (surrounding blanks and a sign allowed), saturating.
fn py_int(s: &str) -> Option<i64> {
    let t = s.trim();
    let (neg, digits) = match t.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v = digits.parse::<i64>().unwrap_or(i64::MAX);
    Some(if neg { -v } else { v })
}

/// A delay in whole seconds; negative sleeps return at once, a day is the most honoured.
fn parse_delay(s: &str) -> Option<u64> {
    py_int(s).map(|v| v.clamp(0, 24 * 3600) as u64)
}

/// Parses `/power/control/ACTION?QUERY` as pdudaemon's `parse_http` + `process_request` do:
/// first value of each key wins, blank values are ignored, `alias` excludes `hostname`/`port`.
pub fn parse_http(action: &str, query: &str) -> Result<ControlRequest, &'static str> {
    let op = match action {
        "on" => PowerOp::On,
        "off" => PowerOp::Off,
        "reboot" => PowerOp::Reboot,
        _ => return Err("unknown request"),
    };
    let url = reqwest::Url::parse(&format!("http://x/?{query}")).map_err(|_| "bad query")?;
    let first = |key: &str| {
        url.query_pairs()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.into_owned())
    };
    let (alias, hostname, port, delay) = (
        first("alias"),
        first("hostname"),
        first("port"),
        first("delay"),
    );
    let delay = match delay {
        Some(d) => Some(parse_delay(&d).ok_or("delay is not an integer")?),
        None => None,
    };
    let target = match (alias, hostname, port) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err("alias together with hostname or port");
        }
        (Some(a), None, None) => ControlTarget::Alias(a),
        (None, Some(hostname), Some(port)) => ControlTarget::Outlet { hostname, port },
        _ => return Err("one of hostname, port, request was not set"),
    };
    Ok(ControlRequest { op, target, delay })
}

/// Parses a legacy TCP message as pdudaemon's `parse_tcp` does: stripped, split on single
/// spaces into 3 or 4 fields; `port` and `delay` go through `int()` (`08` becomes `8`).
pub fn parse_tcp(data: &[u8]) -> Result<ControlRequest, &'static str> {
    let text = std::str::from_utf8(data).map_err(|_| "not UTF-8")?;
    let fields: Vec<&str> = text.trim().split(' ').collect();
    if !(3..=4).contains(&fields.len()) {
        return Err("Unexpected data");
    }
    let port = py_int(fields[1])
        .filter(|p| *p >= 0)
        .ok_or("Unexpected data")?;
    let delay = match fields.get(3) {
        Some(d) => Some(parse_delay(d).ok_or("Unexpected data")?),
        None => None,
    };
    let op = match fields[2] {
        "on" => PowerOp::On,
        "off" => PowerOp::Off,
        "reboot" => PowerOp::Reboot,
        _ => return Err("unknown request"),
    };
    Ok(ControlRequest {
        op,
        target: ControlTarget::Outlet {
            hostname: fields[0].to_string(),
            port: port.to_string(),
        },
        delay,
    })
}

/// The fuzz target's entry point: neither parser may panic on any input.
pub fn fuzz_parse(data: &[u8]) {
    let _ = parse_tcp(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let (action, query) = s.split_once('?').unwrap_or((s, ""));
        let _ = parse_http(action, query);
    }
}

/// Runs a parsed request through the service's queues; `true` when it completed.
pub async fn execute(service: &PowerService, req: &ControlRequest) -> bool {
    let mut pr = PowerRequest::new(req.op);
    if let Some(d) = req.delay {
        pr = pr.delay(Duration::from_secs(d));
    }
    let result = match &req.target {
        ControlTarget::Alias(a) => match DeviceName::new(a.clone()) {
            Ok(d) => service.request(&d, pr).await,
            Err(_) => return false,
        },
        ControlTarget::Outlet { hostname, port } => match service.pdu_for_hostname(hostname) {
            Some(pdu) => service.request_outlet(&pdu, port, pr).await,
            None => {
                tracing::info!(hostname, "pdudaemon request for an unknown PDU");
                return false;
            }
        },
    };
    match result {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!("pdudaemon request failed: {e}");
            false
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, TEXT)], body).into_response()
}

/// The HTTP handlers' state: the service, and the signal to give up on requests in flight.
#[derive(Clone)]
struct Http {
    service: PowerService,
    abandon: CancellationToken,
}

async fn control(State(s): State<Http>, uri: axum::http::Uri, RawQuery(q): RawQuery) -> Response {
    let action = uri.path().rsplit('/').next().unwrap_or("");
    tracing::info!(path = %uri, "pdudaemon HTTP request");
    let ok = match parse_http(action, q.as_deref().unwrap_or("")) {
        Ok(req) => tokio::select! {
            ok = execute(&s.service, &req) => ok,
            _ = s.abandon.cancelled() => {
                tracing::warn!(path = %uri, "the listener stopped: answering 503 (the power operation goes on)");
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::CONTENT_TYPE, TEXT), (header::CONNECTION, "close")],
                    STOPPED_BODY,
                )
                    .into_response();
            }
        },
        Err(why) => {
            tracing::info!(path = %uri, "invalid pdudaemon request: {why}");
            false
        }
    };
    if ok {
        text(StatusCode::OK, OK_BODY)
    } else {
        text(StatusCode::INTERNAL_SERVER_ERROR, INVALID_BODY)
    }
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "404: Not Found")
}

async fn not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::CONTENT_TYPE, TEXT), (header::ALLOW, "GET,HEAD")],
        "405: Method Not Allowed",
    )
        .into_response()
}

/// The HTTP API as a router (for tests or embedding).
pub fn router(service: PowerService) -> Router {
    router_until(service, CancellationToken::new())
}

/// The router whose requests in flight give up (503) once `abandon` is cancelled.
fn router_until(service: PowerService, abandon: CancellationToken) -> Router {
    let route = || get(control).fallback(not_allowed);
    Router::new()
        .route("/power/control/on", route())
        .route("/power/control/off", route())
        .route("/power/control/reboot", route())
        .fallback(not_found)
        .with_state(Http { service, abandon })
}

/// Handles one legacy TCP connection: one read, one reply, close.
async fn legacy(service: PowerService, mut stream: TcpStream, peer: SocketAddr) {
    let mut buf = vec![0u8; 16384];
    let n = match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf)).await {
        Ok(Ok(n)) => n,
        _ => return,
    };
    let reply: &[u8] = match parse_tcp(&buf[..n]) {
        Ok(req) => {
            tracing::info!(%peer, request = %String::from_utf8_lossy(&buf[..n]).trim(), "pdudaemon TCP request");
            if execute(&service, &req).await {
                b"ack\n"
            } else {
                b"nack\n"
            }
        }
        Err("unknown request") => b"nack\n",
        Err(why) => {
            tracing::info!(%peer, "malformed pdudaemon TCP request: {why}");
            b"Unexpected data"
        }
    };
    let _ = stream.write_all(reply).await;
    let _ = stream.shutdown().await;
}

/// The decision on a connection's first bytes: `Some(true)` HTTP, `Some(false)` legacy,
/// `None` not enough bytes yet.
pub fn looks_like_http(b: &[u8]) -> Option<bool> {
    const METHODS: [&[u8]; 9] = [
        b"GET ",
        b"HEAD ",
        b"POST ",
        b"PUT ",
        b"DELETE ",
        b"OPTIONS ",
        b"PATCH ",
        b"TRACE ",
        b"CONNECT ",
    ];
    let mut undecided = false;
    for m in METHODS {
        if b.starts_with(m) {
            return Some(true);
        }
        if m.starts_with(b) {
            undecided = true;
        }
    }
    if undecided { None } else { Some(false) }
}

/// Hands HTTP connections to axum after the protocol sniff.
struct HttpConns {
    rx: mpsc::Receiver<(TcpStream, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for HttpConns {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

async fn classify(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 8];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            _ => return false,
        };
        if n == 0 {
            return false;
        }
        match looks_like_http(&buf[..n]) {
            Some(http) => return http,
            None if n == buf.len() => return false,
            None => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// Serves pdudaemon's HTTP and legacy TCP APIs on `listener` until `stop` is cancelled, then
/// returns within about 2 × [`STOP_GRACE`] whatever the clients do.
pub async fn serve(
    listener: TcpListener,
    service: PowerService,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    tracing::info!(%local, "pdudaemon-compatible listener ready");
    let (tx, rx) = mpsc::channel(64);
    let abandon = CancellationToken::new();
    let app = router_until(service.clone(), abandon.clone());
    let http_stop = stop.clone();
    let mut http = tokio::spawn(async move {
        let _ = axum::serve(HttpConns { rx, local }, app)
            .with_graceful_shutdown(http_stop.cancelled_owned())
            .await;
    });
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("pdudaemon listener accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let tx = tx.clone();
        let service = service.clone();
        tokio::spawn(async move {
            if classify(&stream).await {
                let _ = tx.send((stream, peer)).await;
            } else {
                legacy(service, stream, peer).await;
            }
        });
    }
    drop(tx);
    // Graceful shutdown waits for every connection; a request in flight can take minutes.
    if tokio::time::timeout(STOP_GRACE, &mut http).await.is_err() {
        abandon.cancel();
        if tokio::time::timeout(STOP_GRACE, &mut http).await.is_err() {
            tracing::warn!(%local, "pdudaemon listener: connections still open after the stop; no longer waiting for them");
            http.abort();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_queries_parse_like_pdudaemon() {
        let r = parse_http("reboot", "hostname=pdu05&port=08&delay=10").unwrap();
        assert_eq!(r.op, PowerOp::Reboot);
        assert_eq!(
            r.target,
            ControlTarget::Outlet {
                hostname: "pdu05".into(),
                port: "08".into()
            }
        );
        assert_eq!(r.delay, Some(10));
        assert_eq!(
            parse_http("on", "alias=bbb01").unwrap().target,
            ControlTarget::Alias("bbb01".into())
        );
        assert_eq!(
            parse_http("on", "hostname=a&hostname=b&port=1&port=")
                .unwrap()
                .target,
            ControlTarget::Outlet {
                hostname: "a".into(),
                port: "1".into()
            }
        );
        assert!(parse_http("on", "alias=x&port=1").is_err());
        assert!(parse_http("on", "hostname=a").is_err());
        assert!(parse_http("on", "hostname=a&port=").is_err());
        assert!(parse_http("on", "hostname=a&port=1&delay=x").is_err());
        assert!(parse_http("toggle", "hostname=a&port=1").is_err());
    }

    #[test]
    fn tcp_messages_parse_like_pdudaemon() {
        let r = parse_tcp(b"pdu05 08 reboot 3\n").unwrap();
        assert_eq!(
            r.target,
            ControlTarget::Outlet {
                hostname: "pdu05".into(),
                port: "8".into()
            }
        );
        assert_eq!(r.delay, Some(3));
        assert_eq!(parse_tcp(b"pdu05  8 on"), Err("Unexpected data"));
        assert_eq!(parse_tcp(b"pdu05 x on"), Err("Unexpected data"));
        assert_eq!(parse_tcp(b"pdu05 1 dance"), Err("unknown request"));
        for seed in [
            &b""[..],
            b"\xff\xfe",
            b"GET /power/control/on?alias=%zz",
            b"a 99999999999999999999 on",
        ] {
            fuzz_parse(seed);
        }
    }

    #[test]
    fn sniffing() {
        assert_eq!(looks_like_http(b"GET /power"), Some(true));
        assert_eq!(looks_like_http(b"GE"), None);
        assert_eq!(looks_like_http(b"pdu05 1 on"), Some(false));
        assert_eq!(looks_like_http(b"GETTY 1 on"), Some(false));
    }
}
