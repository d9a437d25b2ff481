//! Serving one connection: parse requests, apply the path's faults, answer with ranges,
//! validators and conditional responses, send bodies (sendfile for big plain files).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Body, RequestLog, State, Stream};

pub(super) fn serve_connection(
    sock: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: &State,
) {
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
