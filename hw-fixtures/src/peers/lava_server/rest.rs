//! The REST API (v0.2) side of the lava-server harness: submit, follow and cancel jobs, read
//! their logs and test cases, all with the admin token.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use super::{ADMIN_TOKEN, LavaServer};

impl LavaServer {
    /// A worker's `state` ("Online"/"Offline") through the REST API.
    pub fn worker_state(&self, name: &str) -> anyhow::Result<String> {
        let v = self.get_json(&format!("/api/v0.2/workers/{name}/"))?;
        Ok(v["state"].as_str().unwrap_or_default().to_string())
    }

    /// Submits a job definition through the REST API; returns its id.
    pub fn submit(&self, definition: &str) -> anyhow::Result<u64> {
        let body = serde_json::json!({ "definition": definition }).to_string();
        let (status, text) = self.http("POST", "/api/v0.2/jobs/", Some(&body))?;
        if status != 201 {
            bail!("job submission answered {status}: {text}");
        }
        let v: Value = serde_json::from_str(&text)?;
        v["job_ids"][0].as_u64().context("no job id")
    }

    /// `GET /api/v0.2/jobs/<id>/`.
    pub fn job(&self, id: u64) -> anyhow::Result<Value> {
        self.get_json(&format!("/api/v0.2/jobs/{id}/"))
    }

    /// `GET /api/v0.2/jobs/<id>/cancel/`.
    pub fn cancel(&self, id: u64) -> anyhow::Result<()> {
        let (status, text) = self.http("GET", &format!("/api/v0.2/jobs/{id}/cancel/"), None)?;
        if status != 200 {
            bail!("cancel answered {status}: {text}");
        }
        Ok(())
    }

    /// The job log as the server stores it (`GET /api/v0.2/jobs/<id>/logs/`).
    pub fn job_log(&self, id: u64) -> anyhow::Result<String> {
        let (status, text) = self.http("GET", &format!("/api/v0.2/jobs/{id}/logs/"), None)?;
        if status != 200 {
            bail!("logs answered {status}: {text}");
        }
        Ok(text)
    }

    /// Test cases the server recorded from `lvl: results` lines (`/api/v0.2/jobs/<id>/tests/`).
    pub fn job_tests(&self, id: u64) -> anyhow::Result<Value> {
        self.get_json(&format!("/api/v0.2/jobs/{id}/tests/"))
    }

    fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let (status, text) = self.http("GET", path, None)?;
        if status != 200 {
            bail!("GET {path} answered {status}: {text}");
        }
        Ok(serde_json::from_str(&text)?)
    }

    /// One HTTP/1.1 request to gunicorn with the admin token.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        json: Option<&str>,
    ) -> anyhow::Result<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.http_port))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let body = json.unwrap_or("");
        let ct = if json.is_some() {
            "Content-Type: application/json\r\n"
        } else {
            ""
        };
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Token {ADMIN_TOKEN}\r\nAccept: */*\r\nConnection: close\r\n{ct}Content-Length: {}\r\n\r\n{body}",
            self.http_port,
            body.len()
        )?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .context("no HTTP header end")?;
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("no HTTP status")?;
        let mut body = raw[split + 4..].to_vec();
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body = dechunk(&body);
        }
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = data.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&data[..i])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || data.len() < i + 2 + size {
            break;
        }
        out.extend_from_slice(&data[i + 2..i + 2 + size]);
        data = &data[(i + 4 + size).min(data.len())..];
    }
    out
}
