//! HTTP(S) transfers: the request with retries (connection errors, timeouts, and the statuses
//! LAVA's urllib3 retries), and the body pushed into the pipeline with `Range` resumes when the
//! connection drops mid-transfer.

use std::time::Duration;

use bytes::{Buf, Bytes};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Response, StatusCode, Url};
use tokio::sync::mpsc;

use super::config::RetryPolicy;
use super::error::{FetchError, chain};
use super::metrics::ImageMetrics;
use super::pipeline::Counters;

/// Statuses retried with backoff: python-requests' `status_forcelist` in LAVA's
/// `requests_retry()` (lava-protocols.md section 8).
pub const RETRY_STATUSES: [u16; 14] = [
    408, 413, 425, 429, 500, 502, 503, 504, 507, 420, 430, 509, 529, 598,
];

/// What identifies one version of a resource, for revalidation and `If-Range`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl Validators {
    pub fn of(resp: &Response) -> Self {
        let get = |h: header::HeaderName| {
            resp.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        Self {
            etag: get(header::ETAG),
            last_modified: get(header::LAST_MODIFIED),
        }
    }

    /// Headers of a conditional GET (`If-None-Match`, `If-Modified-Since`).
    pub fn conditional(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = self
            .etag
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            h.insert(header::IF_NONE_MATCH, v);
        }
        if let Some(v) = self
            .last_modified
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            h.insert(header::IF_MODIFIED_SINCE, v);
        }
        h
    }

    /// The `If-Range` value: a strong ETag, else the date.
    fn if_range(&self) -> Option<HeaderValue> {
        self.etag
            .as_deref()
            .filter(|e| !e.starts_with("W/"))
            .or(self.last_modified.as_deref())
            .and_then(|v| HeaderValue::from_str(v).ok())
    }
}

/// One URL's transfers.
pub(crate) struct Http<'a> {
    pub client: &'a reqwest::Client,
    pub url: &'a Url,
    pub proxy: Option<&'a Url>,
    pub policy: RetryPolicy,
    pub metrics: &'a ImageMetrics,
}

/// How a streamed body ended.
#[derive(Debug)]
pub(crate) struct Streamed {
    pub attempts: u32,
    pub resumes: u32,
}

/// Why streaming stopped early.
#[derive(Debug)]
pub(crate) enum StreamError {
    Fetch(FetchError),
    /// The pipeline stopped reading (it failed, and will say why).
    Aborted,
}

enum Drained {
    Complete,
    Broken(String),
    Aborted,
}

fn is_tls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<rustls::Error>() {
            return true;
        }
        // io::Error::source() skips the error it wraps; step into it instead.
        cur = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    false
}

fn retry_after(resp: &Response) -> Option<Duration> {
    resp.headers()
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

impl Http<'_> {
    fn url_str(&self) -> String {
        self.url.to_string()
    }

    /// The error for a request that got no response, and whether to try again.
    fn send_error(&self, e: &reqwest::Error, attempts: u32) -> (bool, FetchError) {
        // reqwest's own text ("error sending request for url (...)") repeats the URL; the
        // cause says what happened.
        let message = match std::error::Error::source(e) {
            Some(cause) => chain(cause),
            None => chain(e),
        };
        if e.is_builder() {
            return (
                false,
                FetchError::BadRequest {
                    url: self.url_str(),
                    reason: message,
                },
            );
        }
        if is_tls_error(e) {
            // A certificate problem does not fix itself by retrying.
            return (
                false,
                FetchError::Connect {
                    url: self.url_str(),
                    message: format!("TLS: {message}"),
                    attempts,
                },
            );
        }
        let error = match self.proxy {
            Some(proxy) if e.is_connect() => FetchError::Proxy {
                url: self.url_str(),
                proxy: proxy.to_string(),
                message,
                attempts,
            },
            _ => FetchError::Connect {
                url: self.url_str(),
                message: if e.is_timeout() {
                    format!("no response in time ({message})")
                } else {
                    message
                },
                attempts,
            },
        };
        (true, error)
    }

    fn status_error(&self, status: StatusCode, attempts: u32) -> FetchError {
        FetchError::HttpStatus {
            url: self.url_str(),
            status: status.to_string(),
            code: status.as_u16(),
            via: self
                .proxy
                .map_or_else(String::new, |p| format!(" (via proxy {p})")),
            attempts,
        }
    }

    /// A GET with `headers`, retried as LAVA retries. Returns a 2xx or 304 response and the
    /// number of attempts it took.
    pub async fn open(&self, headers: HeaderMap) -> Result<(Response, u32), FetchError> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let sent = self
                .client
                .get(self.url.clone())
                .headers(headers.clone())
                .send()
                .await;
            let (error, wait) = match sent {
                Ok(resp) => {
                    let status = resp.status();
                    if status.is_success() || status == StatusCode::NOT_MODIFIED {
                        return Ok((resp, attempt));
                    }
                    let error = self.status_error(status, attempt);
                    if !RETRY_STATUSES.contains(&status.as_u16()) {
                        return Err(error);
                    }
                    (error, retry_after(&resp))
                }
                Err(e) => {
                    let (retry, error) = self.send_error(&e, attempt);
                    if !retry {
                        return Err(error);
                    }
                    (error, None)
                }
            };
            if attempt > self.policy.retries {
                return Err(error);
            }
            let delay = wait.map_or_else(|| self.policy.delay(attempt), |w| w.min(self.policy.max));
            tracing::warn!(url = %self.url, attempt, "{error}; retrying in {delay:.1?}");
            tokio::time::sleep(delay).await;
        }
    }

    /// Pushes the body of `first` (a 200) into `tx`; when the connection breaks, asks for the
    /// rest with `Range` and continues. `first_attempts` is what opening it took.
    pub async fn stream(
        &self,
        first: Response,
        first_attempts: u32,
        tx: &mpsc::Sender<Bytes>,
        counters: &Counters,
    ) -> Result<Streamed, StreamError> {
        let total = first.content_length();
        let validators = Validators::of(&first);
        let mut resp = first;
        let mut offset = 0u64;
        let mut skip = 0u64;
        let mut attempts = first_attempts;
        let mut resumes = 0u32;
        let mut streak = 0u32;
        let mut failed_at = None;
        loop {
            let message = match self.drain(resp, tx, counters, &mut offset, &mut skip).await {
                Drained::Aborted => return Err(StreamError::Aborted),
                Drained::Complete => match total {
                    Some(t) if offset < t => "the connection closed early".to_string(),
                    Some(t) if offset > t => {
                        return Err(StreamError::Fetch(self.transfer_error(
                            format!("the server sent more than its Content-Length of {t}"),
                            offset,
                            total,
                            attempts,
                        )));
                    }
                    _ => {
                        return Ok(Streamed { attempts, resumes });
                    }
                },
                Drained::Broken(m) => m,
            };
            // Progress since the last failure starts a new streak of retries.
            streak = if failed_at.is_some_and(|f| offset > f) {
                1
            } else {
                streak + 1
            };
            failed_at = Some(offset);
            if streak > self.policy.retries {
                return Err(StreamError::Fetch(
                    self.transfer_error(message, offset, total, attempts),
                ));
            }
            let delay = self.policy.delay(streak);
            tracing::warn!(url = %self.url, offset, "transfer broke ({message}); resuming in {delay:.1?}");
            tokio::select! {
                _ = tx.closed() => return Err(StreamError::Aborted),
                _ = tokio::time::sleep(delay) => {}
            }
            let mut headers = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes={offset}-")) {
                headers.insert(header::RANGE, v);
            }
            if let Some(v) = validators.if_range() {
                headers.insert(header::IF_RANGE, v);
            }
            let (next, n) = self.open(headers).await.map_err(StreamError::Fetch)?;
            attempts += n;
            resumes += 1;
            match next.status() {
                StatusCode::PARTIAL_CONTENT => {
                    let start = next
                        .headers()
                        .get(header::CONTENT_RANGE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("bytes "))
                        .and_then(|v| v.split('-').next())
                        .and_then(|v| v.parse::<u64>().ok());
                    if start != Some(offset) {
                        return Err(StreamError::Fetch(self.transfer_error(
                            format!(
                                "asked to resume at {offset} but the server answered {start:?}"
                            ),
                            offset,
                            total,
                            attempts,
                        )));
                    }
                }
                StatusCode::OK => {
                    // No range support (or If-Range said the file changed): the whole file again.
                    let now = Validators::of(&next);
                    if now != validators || next.content_length() != total {
                        return Err(StreamError::Fetch(self.transfer_error(
                            "the file changed on the server during the download".into(),
                            offset,
                            total,
                            attempts,
                        )));
                    }
                    tracing::info!(url = %self.url, "server ignores Range; skipping {offset} bytes");
                    skip = offset;
                }
                other => {
                    return Err(StreamError::Fetch(self.status_error(other, attempts)));
                }
            }
            resp = next;
        }
    }

    fn transfer_error(
        &self,
        message: String,
        received: u64,
        expected: Option<u64>,
        attempts: u32,
    ) -> FetchError {
        FetchError::Transfer {
            url: self.url_str(),
            message,
            received,
            expected,
            attempts,
        }
    }

    async fn drain(
        &self,
        mut resp: Response,
        tx: &mpsc::Sender<Bytes>,
        counters: &Counters,
        offset: &mut u64,
        skip: &mut u64,
    ) -> Drained {
        loop {
            let next = tokio::select! {
                biased;
                _ = tx.closed() => return Drained::Aborted,
                c = resp.chunk() => c,
            };
            match next {
                Ok(Some(mut chunk)) => {
                    let len = chunk.len() as u64;
                    counters
                        .downloaded
                        .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
                    self.metrics.downloaded_bytes.inc_by(len);
                    if *skip > 0 {
                        let s = (*skip).min(len);
                        chunk.advance(s as usize);
                        *skip -= s;
                        if chunk.is_empty() {
                            continue;
                        }
                    }
                    *offset += chunk.len() as u64;
                    if tx.send(chunk).await.is_err() {
                        return Drained::Aborted;
                    }
                }
                Ok(None) => return Drained::Complete,
                Err(e) => return Drained::Broken(chain(&e)),
            }
        }
    }
}
