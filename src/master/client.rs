//! The HTTP client of lava-server's worker API, sending what lava-worker and lava-run send:
//! the same paths, query, headers (`User-Agent: lava-worker <version>` for the worker's calls,
//! `lava <version>` for log uploads as lava-run's sender does, `LAVA-Token`, and python-requests'
//! `Accept-Encoding`, `Accept`, `Connection`) and form bodies byte for byte.

use std::io::Read as _;
use std::time::Duration;

use super::config::MasterSettings;
use super::error::MasterError;
use super::executor::JobOutcome;
use super::wire::{self, JobPayload, PingAnswer, URL_JOBS, URL_WORKERS};
use crate::ids::{JobId, WorkerName};

/// A client bound to one master and one worker name.
#[derive(Debug, Clone)]
pub struct MasterClient {
    http: reqwest::Client,
    base: String,
    name: WorkerName,
    version: String,
}

/// A raw answer: status and (decoded) body.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

enum Agent {
    /// lava-worker's own calls.
    Worker,
    /// lava-run's log sender.
    Run,
}

impl MasterClient {
    pub fn new(settings: &MasterSettings) -> Result<Self, MasterError> {
        let http = reqwest::Client::builder()
            .timeout(settings.http_timeout)
            .connect_timeout(settings.http_timeout.min(Duration::from_secs(30)))
            .http1_title_case_headers()
            .http1_only()
            .build()
            .map_err(MasterError::Client)?;
        Ok(Self {
            http,
            base: settings.url.trim_end_matches('/').to_string(),
            name: settings.name.clone(),
            version: settings.version.clone(),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn name(&self) -> &WorkerName {
        &self.name
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    fn job_url(&self, id: &JobId) -> String {
        format!("{}{URL_JOBS}{id}/", self.base)
    }

    async fn exchange(
        &self,
        stage: &str,
        url: &str,
        agent: Agent,
        token: Option<&str>,
        form: Option<String>,
    ) -> Result<Answer, MasterError> {
        let ua = match agent {
            Agent::Worker => format!("lava-worker {}", self.version),
            Agent::Run => format!("lava {}", self.version),
        };
        let mut req = match &form {
            Some(_) => self.http.post(url),
            None => self.http.get(url),
        };
        req = req
            .header("User-Agent", ua)
            .header("Accept-Encoding", "gzip, deflate")
            .header("Accept", "*/*")
            .header("Connection", "keep-alive");
        if let Some(t) = token {
            req = req.header("LAVA-Token", t);
        }
        if let Some(body) = form {
            req = req
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body);
        }
        let unreachable = |source| MasterError::Unreachable {
            stage: stage.to_string(),
            url: url.to_string(),
            source,
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status().as_u16();
        let encoding = resp
            .headers()
            .get("content-encoding")
            .and_then(|v| v.to_str().ok())
            .map(|s| s.trim().to_ascii_lowercase());
        let raw = resp.bytes().await.map_err(unreachable)?;
        let body = decode_body(encoding.as_deref(), &raw).unwrap_or_else(|| raw.to_vec());
        Ok(Answer { status, body })
    }

    fn refused(&self, stage: &str, url: &str, a: &Answer) -> MasterError {
        let message = wire::error_text(&a.body);
        if a.status == 409 {
            return MasterError::VersionMismatch {
                stage: stage.to_string(),
                ours: self.version.clone(),
                message,
            };
        }
        MasterError::Status {
            stage: stage.to_string(),
            url: url.to_string(),
            status: a.status,
            message,
        }
    }

    fn bad(stage: &str, url: &str, source: wire::WireError) -> MasterError {
        MasterError::BadAnswer {
            stage: stage.to_string(),
            url: url.to_string(),
            source,
        }
    }

    /// `POST /scheduler/internal/v1/workers/` with `name=<name>`: auto-registration (allowed
    /// from the server's `WORKER_AUTO_REGISTER_NETMASK`). Returns the new worker token.
    pub async fn register(&self) -> Result<String, MasterError> {
        let url = format!("{}{URL_WORKERS}", self.base);
        let stage = "register";
        let form = wire::form_encode(&[("name", self.name.as_str())]);
        let a = self
            .exchange(stage, &url, Agent::Worker, None, Some(form))
            .await?;
        if a.status != 200 {
            return Err(self.refused(stage, &url, &a));
        }
        wire::parse_register_answer(&a.body).map_err(|e| Self::bad(stage, &url, e))
    }

    /// `GET /scheduler/internal/v1/workers/<name>/?version=<version>` with the worker token.
    pub async fn ping(&self, token: &str) -> Result<PingAnswer, MasterError> {
        let url = format!(
            "{}{URL_WORKERS}{}/?version={}",
            self.base,
            self.name,
            wire::quote_plus(&self.version)
        );
        let stage = "ping";
        let a = self
            .exchange(stage, &url, Agent::Worker, Some(token), None)
            .await?;
        if a.status != 200 {
            return Err(self.refused(stage, &url, &a));
        }
        wire::parse_ping_answer(&a.body).map_err(|e| Self::bad(stage, &url, e))
    }

    /// `GET /scheduler/internal/v1/jobs/<id>/` with the job token.
    pub async fn get_job(&self, id: &JobId, token: &str) -> Result<JobPayload, MasterError> {
        let url = self.job_url(id);
        let stage = format!("job {id}: fetch");
        let a = self
            .exchange(&stage, &url, Agent::Worker, Some(token), None)
            .await?;
        if a.status != 200 {
            return Err(self.refused(&stage, &url, &a));
        }
        wire::parse_job_payload(&a.body).map_err(|e| Self::bad(&stage, &url, e))
    }

    /// `POST /scheduler/internal/v1/jobs/<id>/` with `state=RUNNING`.
    pub async fn set_running(&self, id: &JobId, token: &str) -> Result<(), MasterError> {
        let url = self.job_url(id);
        let stage = format!("job {id}: RUNNING");
        let form = wire::form_encode(&[("state", "RUNNING")]);
        let a = self
            .exchange(&stage, &url, Agent::Worker, Some(token), Some(form))
            .await?;
        if a.status != 200 {
            return Err(self.refused(&stage, &url, &a));
        }
        Ok(())
    }

    /// `POST /scheduler/internal/v1/jobs/<id>/logs/` with `lines` and `index` (the number of
    /// lines the server already acknowledged). Returns the server's `line_count`: how many
    /// records of this batch it now holds.
    pub async fn upload_logs<S: AsRef<str>>(
        &self,
        id: &JobId,
        token: &str,
        records: &[S],
        index: u64,
    ) -> Result<u64, MasterError> {
        let url = format!("{}logs/", self.job_url(id));
        let stage = format!("job {id}: log upload at index {index}");
        let form = wire::form_encode(&[
            ("lines", &wire::log_lines_value(records)),
            ("index", &index.to_string()),
        ]);
        let a = self
            .exchange(&stage, &url, Agent::Run, Some(token), Some(form))
            .await?;
        if a.status != 200 {
            return Err(self.refused(&stage, &url, &a));
        }
        wire::parse_line_count(&a.body).map_err(|e| Self::bad(&stage, &url, e))
    }

    /// `POST /scheduler/internal/v1/jobs/<id>/` with `state=FINISHED`, `result`, `error_type`,
    /// `errors`, `description`, in lava-worker's order.
    pub async fn finish(
        &self,
        id: &JobId,
        token: &str,
        outcome: &JobOutcome,
    ) -> Result<(), MasterError> {
        let url = self.job_url(id);
        let stage = format!("job {id}: FINISHED");
        let form = wire::form_encode(&outcome.finish_fields());
        let a = self
            .exchange(&stage, &url, Agent::Worker, Some(token), Some(form))
            .await?;
        if a.status != 200 {
            return Err(self.refused(&stage, &url, &a));
        }
        Ok(())
    }
}

/// Undoes `Content-Encoding: gzip`/`deflate` (we announce both, as python-requests does).
fn decode_body(encoding: Option<&str>, raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match encoding? {
        "gzip" | "x-gzip" => flate2::read::GzDecoder::new(raw)
            .read_to_end(&mut out)
            .ok()?,
        "deflate" => match flate2::read::ZlibDecoder::new(raw).read_to_end(&mut out) {
            Ok(n) => n,
            Err(_) => {
                out.clear();
                flate2::read::DeflateDecoder::new(raw)
                    .read_to_end(&mut out)
                    .ok()?
            }
        },
        _ => return None,
    };
    Some(out)
}
