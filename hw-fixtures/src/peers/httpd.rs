//! An HTTP/1.1 (and https) file server for image tests, with fault injection: error statuses
//! (5xx, 429 with Retry-After), connections reset or closed mid-body, no Range support, no
//! validators, slow serving. It honours Range/If-Range, ETag/If-None-Match and
//! Last-Modified/If-Modified-Since, keeps connections alive, serves big files with sendfile, and
//! logs every request so tests can assert on what reached it (headers, status, bytes).

pub mod images;
pub mod tls;

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use tls::TestCa;

/// Faults injected into the responses for one path. Counted faults apply to the next requests.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Answer the next requests with these statuses, one each, before serving normally.
    pub fail_with: Vec<u16>,
    /// `Retry-After` seconds sent with injected failures.
    pub retry_after: Option<u64>,
    /// Reset the connection (RST) after this many body bytes, for the next `resets` responses.
    pub reset_after: Option<u64>,
    pub resets: u32,
    /// Close the connection cleanly after this many body bytes (short of Content-Length), for
    /// the next `closes` responses.
    pub close_after: Option<u64>,
    pub closes: u32,
    /// Ignore `Range` (always 200 with the whole body).
    pub no_range: bool,
    /// Send neither ETag nor Last-Modified, and ignore conditional requests.
    pub no_validators: bool,
    /// Serve the body at about this many bytes per second.
    pub rate: Option<u64>,
    /// Close-delimited body without Content-Length.
    pub no_content_length: bool,
    /// Wait this long before answering.
    pub delay: Option<Duration>,
}

#[derive(Clone)]
enum Body {
    Memory(Arc<[u8]>),
    File(Arc<PathBuf>, u64),
}

impl Body {
    fn len(&self) -> u64 {
        match self {
            Body::Memory(b) => b.len() as u64,
            Body::File(_, n) => *n,
        }
    }
}

#[derive(Clone)]
struct Resource {
    body: Body,
    etag: String,
    last_modified: String,
    faults: Faults,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct RequestLog {
    pub method: String,
    pub path: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub status: u16,
    /// Body bytes the server set out to send (fewer arrive when a fault cuts the connection).
    pub body_bytes: u64,
}

impl RequestLog {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    resources: Mutex<HashMap<String, Resource>>,
    log: Mutex<Vec<RequestLog>>,
    versions: AtomicU32,
}

/// The running server; stopped when dropped.
pub struct HttpServer {
    addr: SocketAddr,
    scheme: &'static str,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

impl HttpServer {
    /// Plain http on a free loopback port.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(None)
    }

    /// https with a certificate signed by `ca`.
    pub fn start_tls(ca: &TestCa) -> anyhow::Result<Self> {
        Self::start_with(Some(ca.server_config()?))
    }

    fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let stop = Arc::new(AtomicBool::new(false));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::Builder::new()
                .name("httpd-accept".into())
                .spawn(move || {
                    for conn in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(sock) = conn else { continue };
                        let state = state.clone();
                        let tls = tls.clone();
                        let _ = std::thread::Builder::new()
                            .name("httpd-conn".into())
                            .spawn(move || serve_connection(sock, tls, &state));
                    }
                })?
        };
        Ok(Self {
            addr,
            scheme,
            state,
            stop,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/path` (or https).
    pub fn url(&self, path: &str) -> String {
        format!(
            "{}://{}/{}",
            self.scheme,
            self.addr,
            path.trim_start_matches('/')
        )
    }

    fn put(&self, path: &str, body: Body) {
        let v = self.state.versions.fetch_add(1, Ordering::SeqCst) + 1;
        let res = Resource {
            etag: format!("\"{}-v{v}\"", body.len()),
            last_modified: format!("Mon, 01 Jan 2024 00:{:02}:{:02} GMT", (v / 60) % 60, v % 60),
            body,
            faults: Faults::default(),
        };
        let key = format!("/{}", path.trim_start_matches('/'));
        let mut map = self.state.resources.lock().unwrap();
        // Replacing content keeps the faults configured for the path.
        let faults = map.get(&key).map(|r| r.faults.clone()).unwrap_or_default();
        map.insert(key, Resource { faults, ..res });
    }

    /// Serves `body` at `path` (a new version: new ETag and Last-Modified).
    pub fn serve(&self, path: &str, body: impl Into<Arc<[u8]>>) {
        self.put(path, Body::Memory(body.into()));
    }

    /// Serves the file at `file` (read at request time; big files go out with sendfile).
    pub fn serve_file(&self, path: &str, file: impl Into<PathBuf>) -> anyhow::Result<()> {
        let file = file.into();
        let len = std::fs::metadata(&file)?.len();
        self.put(path, Body::File(Arc::new(file), len));
        Ok(())
    }

    /// Sets the faults of `path` (which must be served already).
    pub fn set_faults(&self, path: &str, faults: Faults) {
        let key = format!("/{}", path.trim_start_matches('/'));
        if let Some(r) = self.state.resources.lock().unwrap().get_mut(&key) {
            r.faults = faults;
        }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<RequestLog> {
        self.state.log.lock().unwrap().clone()
    }

    /// The requests for `path`.
    pub fn requests_to(&self, path: &str) -> Vec<RequestLog> {
        let key = format!("/{}", path.trim_start_matches('/'));
        self.requests()
            .into_iter()
            .filter(|r| r.path == key)
            .collect()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_connection(sock: TcpStream, tls: Option<Arc<rustls::ServerConfig>>, state: &State) {
    let _ = sock.set_read_timeout(Some(Duration::from_secs(60)));
    let _ = sock.set_nodelay(true);
    let stream = match tls {
        None => Stream::Plain(sock),
        Some(cfg) => match rustls::ServerConnection::new(cfg) {
            Ok(conn) => Stream::Tls(Box::new(rustls::StreamOwned::new(conn, sock))),
            Err(_) => return,
        },
    };
    let mut reader = BufReader::new(stream);
    loop {
        let Some((method, path, headers)) = read_head(&mut reader) else {
            return;
        };
        let log = RequestLog {
            method,
            path,
            headers,
            status: 0,
            body_bytes: 0,
        };
        let client_close = log
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let keep = respond(reader.get_mut(), state, log);
        if !keep || client_close {
            return;
        }
    }
}

type Head = (String, String, Vec<(String, String)>);

fn read_head(r: &mut BufReader<Stream>) -> Option<Head> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    // A proxy forwards absolute URIs; keep only the path.
    let path = match target.find("://") {
        Some(i) => target[i + 3..]
            .find('/')
            .map_or("/".to_string(), |p| target[i + 3 + p..].to_string()),
        None => target,
    };
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        if headers.len() > 100 {
            return None;
        }
    }
    Some((method, path, headers))
}

fn status_text(code: u16) -> &'static str {
    match code {
        200 => "OK",
        206 => "Partial Content",
        304 => "Not Modified",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Records a request before its response goes out, so a client that has the response can
/// rely on the log having it.
fn record(state: &State, log: &RequestLog) {
    state.log.lock().unwrap().push(log.clone());
}

fn simple(s: &mut Stream, state: &State, mut log: RequestLog, code: u16, extra: &str) -> bool {
    log.status = code;
    record(state, &log);
    let body = format!("{code} {}\n", status_text(code));
    let head = format!(
        "HTTP/1.1 {code} {}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n{extra}\r\n",
        status_text(code),
        body.len()
    );
    s.write_all(head.as_bytes()).is_ok() && s.write_all(body.as_bytes()).is_ok()
}

/// How a response body ends.
#[derive(Clone, Copy)]
enum Cut {
    None,
    Reset(u64),
    Close(u64),
}

/// Answers one request; false when the connection must close.
fn respond(s: &mut Stream, state: &State, mut log: RequestLog) -> bool {
    // Take this request's share of the faults under the lock.
    let (res, fail, cut) = {
        let mut map = state.resources.lock().unwrap();
        let Some(res) = map.get_mut(&log.path) else {
            drop(map);
            return simple(s, state, log, 404, "");
        };
        let fail = (!res.faults.fail_with.is_empty()).then(|| res.faults.fail_with.remove(0));
        let mut cut = Cut::None;
        if fail.is_none() && log.method == "GET" {
            if let (Some(n), true) = (res.faults.reset_after, res.faults.resets > 0) {
                res.faults.resets -= 1;
                cut = Cut::Reset(n);
            } else if let (Some(n), true) = (res.faults.close_after, res.faults.closes > 0) {
                res.faults.closes -= 1;
                cut = Cut::Close(n);
            }
        }
        (res.clone(), fail, cut)
    };
    let f = &res.faults;
    if let Some(d) = f.delay {
        std::thread::sleep(d);
    }
    if log.method != "GET" && log.method != "HEAD" {
        return simple(s, state, log, 405, "");
    }
    if let Some(code) = fail {
        let extra = f
            .retry_after
            .map_or_else(String::new, |r| format!("Retry-After: {r}\r\n"));
        return simple(s, state, log, code, &extra);
    }
    let validators = if f.no_validators {
        String::new()
    } else {
        format!(
            "ETag: {}\r\nLast-Modified: {}\r\n",
            res.etag, res.last_modified
        )
    };
    if !f.no_validators {
        let inm = log.header("if-none-match").map(|v| v == res.etag);
        let ims = log
            .header("if-modified-since")
            .map(|v| v == res.last_modified);
        if inm == Some(true) || (inm.is_none() && ims == Some(true)) {
            log.status = 304;
            record(state, &log);
            let head = format!("HTTP/1.1 304 Not Modified\r\n{validators}\r\n");
            return s.write_all(head.as_bytes()).is_ok();
        }
    }
    let len = res.body.len();
    let mut range = None;
    if !f.no_range {
        let if_range_ok = log
            .header("if-range")
            .is_none_or(|v| v == res.etag || v == res.last_modified);
        let asked = log
            .header("range")
            .filter(|_| if_range_ok)
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.split_once('-'));
        if let Some((a, b)) = asked {
            let start: u64 = a.parse().unwrap_or(0);
            let end: u64 = b.parse().unwrap_or(len.saturating_sub(1));
            if start >= len {
                let extra = format!("Content-Range: bytes */{len}\r\n");
                return simple(s, state, log, 416, &extra);
            }
            range = Some((start, end.min(len - 1)));
        }
    }
    let (status, start, count) = match range {
        Some((a, b)) => (206, a, b - a + 1),
        None => (200, 0, len),
    };
    let mut head = format!("HTTP/1.1 {status} {}\r\n", status_text(status));
    head.push_str("Content-Type: application/octet-stream\r\n");
    head.push_str(&validators);
    if !f.no_range {
        head.push_str("Accept-Ranges: bytes\r\n");
    }
    if let Some((a, b)) = range {
        head.push_str(&format!("Content-Range: bytes {a}-{b}/{len}\r\n"));
    }
    let keep = !f.no_content_length && !matches!(cut, Cut::Close(_));
    if !f.no_content_length {
        head.push_str(&format!("Content-Length: {count}\r\n"));
    }
    head.push_str(if keep {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    let limit = match cut {
        _ if log.method == "HEAD" => 0,
        Cut::None => count,
        Cut::Reset(n) | Cut::Close(n) => n.min(count),
    };
    log.status = status;
    log.body_bytes = limit;
    record(state, &log);
    if s.write_all(head.as_bytes()).is_err() {
        return false;
    }
    if log.method == "HEAD" {
        return keep;
    }
    let sent = send_body(s, &res.body, start, limit, f.rate);
    match cut {
        Cut::Reset(_) => {
            reset(s.tcp());
            false
        }
        Cut::Close(_) => {
            let _ = s.flush();
            let _ = s.tcp().shutdown(Shutdown::Both);
            false
        }
        Cut::None => keep && sent == count,
    }
}

/// Closes with RST instead of FIN (SO_LINGER 0), as a crashed peer or a middlebox does.
fn reset(sock: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads `linger` for the given size; the fd is open (we hold `sock`).
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    let _ = sock.shutdown(Shutdown::Read);
}

/// Writes `count` bytes of `body` from `start`; returns how many went out.
fn send_body(s: &mut Stream, body: &Body, start: u64, count: u64, rate: Option<u64>) -> u64 {
    const CHUNK: usize = 64 * 1024;
    let began = Instant::now();
    let mut sent = 0u64;
    let pace = |sent: u64| {
        if let Some(rate) = rate {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(began.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    };
    match body {
        Body::Memory(data) => {
            let data = &data[start as usize..(start + count) as usize];
            for piece in data.chunks(if rate.is_some() { 4096 } else { CHUNK }) {
                if s.write_all(piece).is_err() {
                    break;
                }
                sent += piece.len() as u64;
                pace(sent);
            }
        }
        Body::File(path, _) => {
            let Ok(file) = std::fs::File::open(path.as_ref()) else {
                return 0;
            };
            if let (Stream::Plain(sock), None) = (&*s, rate) {
                return sendfile(sock, &file, start, count);
            }
            let mut file = io::BufReader::with_capacity(CHUNK, file);
            if io::Seek::seek(&mut file, io::SeekFrom::Start(start)).is_err() {
                return 0;
            }
            let mut buf = vec![0u8; CHUNK];
            while sent < count {
                let want = (count - sent).min(CHUNK as u64) as usize;
                let Ok(n) = file.read(&mut buf[..want]) else {
                    break;
                };
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
                sent += n as u64;
                pace(sent);
            }
        }
    }
    let _ = s.flush();
    sent
}

fn sendfile(sock: &TcpStream, file: &std::fs::File, start: u64, count: u64) -> u64 {
    let mut offset = start as libc::off_t;
    let mut sent = 0u64;
    while sent < count {
        let want = (count - sent).min(1 << 30) as usize;
        // SAFETY: both fds are open for the duration of the call; `offset` is a valid pointer.
        let n = unsafe { libc::sendfile(sock.as_raw_fd(), file.as_raw_fd(), &mut offset, want) };
        if n <= 0 {
            break;
        }
        sent += n as u64;
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, req: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn ranges_validators_and_faults() {
        let srv = HttpServer::start().unwrap();
        srv.serve("a.bin", b"0123456789".to_vec());
        let r = get(
            srv.addr(),
            "GET /a.bin HTTP/1.1\r\nRange: bytes=4-\r\nConnection: close\r\n\r\n",
        );
        assert!(r.starts_with("HTTP/1.1 206 Partial Content\r\n"), "{r}");
        assert!(r.contains("Content-Range: bytes 4-9/10\r\n"));
        assert!(r.ends_with("\r\n\r\n456789"));
        let etag = "\"10-v1\"";
        let r = get(
            srv.addr(),
            &format!("GET /a.bin HTTP/1.1\r\nIf-None-Match: {etag}\r\nConnection: close\r\n\r\n"),
        );
        assert!(r.starts_with("HTTP/1.1 304 Not Modified\r\n"), "{r}");
        srv.set_faults(
            "a.bin",
            Faults {
                fail_with: vec![503],
                retry_after: Some(1),
                ..Faults::default()
            },
        );
        let r = get(
            srv.addr(),
            "GET /a.bin HTTP/1.1\r\nConnection: close\r\n\r\n",
        );
        assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{r}");
        assert!(r.contains("Retry-After: 1\r\n"));
        let r = get(
            srv.addr(),
            "GET /missing HTTP/1.1\r\nConnection: close\r\n\r\n",
        );
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"));
        let log = srv.requests_to("a.bin");
        assert_eq!(
            log.iter().map(|r| r.status).collect::<Vec<_>>(),
            vec![206, 304, 503]
        );
        assert_eq!(log[0].header("Range"), Some("bytes=4-"));
    }
}
