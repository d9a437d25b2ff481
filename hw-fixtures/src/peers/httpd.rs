//! An HTTP/1.1 (and https) file server for image tests, with fault injection: error statuses
//! (5xx, 429 with Retry-After), connections reset or closed mid-body, no Range support, no
//! validators, slow serving. It honours Range/If-Range, ETag/If-None-Match and
//! Last-Modified/If-Modified-Since, keeps connections alive, serves big files with sendfile, and
//! logs every request so tests can assert on what reached it (headers, status, bytes).

pub mod images;
mod serve;
pub mod tls;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

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
                            .spawn(move || serve::serve_connection(sock, tls, &state));
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
