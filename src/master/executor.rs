//! The edge between the master link and whatever runs a job: the [`JobExecutor`] trait.
//!
//! The master link fetches a job, hands it to the executor with a [`JobLogSink`] and a
//! cancellation token, and reports the [`JobOutcome`] the executor returns. The executor knows
//! nothing about HTTP, tokens or retries; the link knows nothing about boards. The job runner in
//! `src/jobs/` implements this trait.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::ids::JobId;

/// The message lava-run logs (lvl `exception`) when a job is canceled.
pub const CANCELED_MESSAGE: &str = "The job was canceled";

/// A job as the master handed it out, ready to run.
#[derive(Debug, Clone)]
pub struct MasterJob {
    pub id: JobId,
    /// The per-job token (the runner rarely needs it; Multi-Node sub-jobs might).
    pub token: String,
    /// Job definition YAML, as the server sends it (with `compatibility` added).
    pub definition: String,
    /// Rendered device dictionary YAML: `commands`, `actions`, `constants`...
    pub device: String,
    /// The worker's dispatcher.yaml, or empty.
    pub dispatcher: String,
    /// env.yaml (`purge`, `removes`, `overrides`), or empty.
    pub env: String,
    /// env-dut.yaml, or empty.
    pub env_dut: String,
    /// A directory owned by this job (under the state dir) for its scratch files.
    pub work_dir: PathBuf,
}

/// `result` of lava-run's result.yaml.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobResult {
    Pass,
    Fail,
}

/// What a finished job reports in its FINISHED call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOutcome {
    pub result: JobResult,
    /// LAVA error type: "" for a pass; `Job`, `Test`, `Infrastructure`, `Bug`, `Configuration`,
    /// `LAVATimeout`, `Canceled`... (lava-server treats Bug, Configuration and Infrastructure as
    /// infrastructure errors, which affect the device's health).
    pub error_type: String,
    /// What lava-run would have written on stderr; becomes the job's failure comment.
    pub errors: String,
    /// description.yaml: the pipeline description.
    pub description: String,
}

impl JobOutcome {
    /// A job that completed.
    pub fn complete(description: impl Into<String>) -> Self {
        Self {
            result: JobResult::Pass,
            error_type: String::new(),
            errors: String::new(),
            description: description.into(),
        }
    }

    /// A job that failed with `error_type` (e.g. `Job` for a boot that never saw its prompt).
    pub fn incomplete(error_type: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            result: JobResult::Fail,
            error_type: error_type.into(),
            errors: String::new(),
            description: description.into(),
        }
    }

    /// A job that stopped because the master canceled it.
    pub fn canceled(description: impl Into<String>) -> Self {
        Self::incomplete("Canceled", description)
    }

    /// The FINISHED form fields in lava-worker's order. A failure without an error type is
    /// reported as `Bug`, as lava-worker does.
    pub fn finish_fields(&self) -> [(&'static str, &str); 5] {
        let (result, error_type) = match self.result {
            JobResult::Pass => ("pass", self.error_type.as_str()),
            JobResult::Fail if self.error_type.is_empty() => ("fail", "Bug"),
            JobResult::Fail => ("fail", self.error_type.as_str()),
        };
        [
            ("state", "FINISHED"),
            ("result", result),
            ("error_type", error_type),
            ("errors", &self.errors),
            ("description", &self.description),
        ]
    }

    /// The health lava-server will record: `complete`, `incomplete` or `canceled` (used as the
    /// metrics label).
    pub fn health(&self) -> &'static str {
        match self.result {
            JobResult::Pass => "complete",
            JobResult::Fail if self.error_type == "Canceled" => "canceled",
            JobResult::Fail => "incomplete",
        }
    }
}

pub(crate) enum LogMsg {
    Line(String),
    /// Flush, fsync, answer, and stop accepting lines.
    Close(oneshot::Sender<()>),
}

/// Where a running job writes its log: already formatted LAVA log lines (one YAML mapping per
/// line, as `src/jobs/` writes them). Lines are stored on disk (fsync'd in batches) before
/// they are uploaded, so neither a master outage nor a labd restart loses them. Cheap to clone;
/// never blocks.
#[derive(Debug, Clone)]
pub struct JobLogSink {
    tx: mpsc::UnboundedSender<LogMsg>,
}

impl std::fmt::Debug for LogMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Line(l) => write!(f, "Line({l:?})"),
            Self::Close(_) => f.write_str("Close"),
        }
    }
}

impl JobLogSink {
    pub(crate) fn new(tx: mpsc::UnboundedSender<LogMsg>) -> Self {
        Self { tx }
    }

    /// A sink not connected to a master, and the reader of its lines (to run a master job's
    /// executor on its own: tests, tools).
    pub fn detached() -> (Self, SinkReader) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, SinkReader { rx })
    }

    /// Appends one log line (without its trailing newline). A line break inside the line would
    /// split the record on the wire, so it is escaped as `\n`. Returns false once the job's log
    /// is closed (the job is over); the line is then dropped.
    pub fn line(&self, line: impl Into<String>) -> bool {
        let mut line = line.into();
        if line.contains(['\n', '\r']) {
            line = line.replace('\r', "\\r").replace('\n', "\\n");
        }
        self.tx.send(LogMsg::Line(line)).is_ok()
    }

    /// Appends several lines in order.
    pub fn lines<I, S>(&self, lines: I) -> bool
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        lines.into_iter().all(|l| self.line(l))
    }
}

/// Reads the lines of a [`JobLogSink::detached`] sink.
#[derive(Debug)]
pub struct SinkReader {
    rx: mpsc::UnboundedReceiver<LogMsg>,
}

impl SinkReader {
    /// The lines written since the last call.
    pub fn lines(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(m) = self.rx.try_recv() {
            if let LogMsg::Line(l) = m {
                out.push(l);
            }
        }
        out
    }
}

/// A boxed future returned by [`JobExecutor::run`], so the trait stays object-safe.
pub type OutcomeFuture = Pin<Box<dyn Future<Output = JobOutcome> + Send + 'static>>;

/// Runs jobs for the master link. Implemented by the job runner (`src/jobs/`).
///
/// Contract:
/// - `run` returns when the job is over, with its outcome; every line it wants in the job log
///   has been given to `log` by then (later lines are dropped).
/// - When `cancel` fires, the runner stops its actions, powers the board off, logs
///   [`CANCELED_MESSAGE`] at level `exception` and returns [`JobOutcome::canceled`]. If it has
///   not returned 120 s later (lava-worker's `FINISH_MAX_DURATION`), the link drops the future
///   and reports the job Canceled itself.
/// - The future must not block the executor thread (blocking work goes to `spawn_blocking`).
pub trait JobExecutor: Send + Sync + 'static {
    fn run(&self, job: MasterJob, log: JobLogSink, cancel: CancellationToken) -> OutcomeFuture;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_fields_follow_lava_worker() {
        let o = JobOutcome::complete("d");
        assert_eq!(
            o.finish_fields(),
            [
                ("state", "FINISHED"),
                ("result", "pass"),
                ("error_type", ""),
                ("errors", ""),
                ("description", "d")
            ]
        );
        let mut f = JobOutcome::incomplete("", "");
        assert_eq!(f.finish_fields()[2], ("error_type", "Bug"));
        f.error_type = "Job".into();
        assert_eq!(f.health(), "incomplete");
        assert_eq!(JobOutcome::canceled("").health(), "canceled");
        assert_eq!(
            JobOutcome::canceled("").finish_fields()[2],
            ("error_type", "Canceled")
        );
    }
}
