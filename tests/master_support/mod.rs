//! Shared by the master-link tests: a TEST EXECUTOR (not the job runner: it touches no board,
//! it only emits real LAVA-format log lines and returns an outcome, so the link can be tested
//! before the runner exists; the runner replaces it through the same `JobExecutor` trait), and
//! helpers to run the link.

#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use labd::ids::WorkerName;
use labd::master::{
    CANCELED_MESSAGE, JobExecutor, JobLogSink, JobOutcome, MasterJob, MasterLink, MasterSettings,
    OutcomeFuture, TokenSource,
};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What the test executor does with a job.
#[derive(Debug, Clone)]
pub enum Script {
    /// Emit `lines` lines, then return `outcome`.
    Finish { lines: usize, outcome: JobOutcome },
    /// Emit `before` lines, wait until the test opens the gate, emit `after` lines, return
    /// `outcome`.
    Gated {
        before: usize,
        after: usize,
        outcome: JobOutcome,
    },
    /// Emit `lines` lines, then wait for the cancel and answer it as the runner must.
    UntilCanceled { lines: usize },
    /// Emit `lines` lines, then never return (a job labd is killed under).
    Forever { lines: usize },
}

/// TEST EXECUTOR: emits LAVA log lines as `src/jobs/` will write them and follows a script.
pub struct TestExecutor {
    pub script: Script,
    pub gate: Arc<Notify>,
    /// Every job it was given, and every line it emitted, in order.
    pub jobs: Mutex<Vec<MasterJob>>,
    pub emitted: Arc<Mutex<Vec<String>>>,
}

impl TestExecutor {
    pub fn new(script: Script) -> Arc<Self> {
        Arc::new(Self {
            script,
            gate: Arc::new(Notify::new()),
            jobs: Mutex::new(Vec::new()),
            emitted: Arc::new(Mutex::new(Vec::new())),
        })
    }

    pub fn emitted(&self) -> Vec<String> {
        self.emitted.lock().unwrap().clone()
    }
}

/// `{"dt": "<now>", "lvl": <lvl>, "msg": "<msg>"}` with a plain ASCII message, as LAVA's log
/// writer dumps it.
pub fn lava_line(lvl: &str, msg: &str) -> String {
    let dt = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f");
    format!("{{\"dt\": \"{dt}\", \"lvl\": \"{lvl}\", \"msg\": \"{msg}\"}}")
}

fn emit(sink: &JobLogSink, emitted: &Mutex<Vec<String>>, job: &str, from: usize, n: usize) {
    for i in from..from + n {
        let line = match i {
            0 => lava_line("info", "lava-dispatcher, installed at version: 2023.01"),
            1 => {
                let dt = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f");
                format!(
                    "{{\"dt\": \"{dt}\", \"lvl\": \"results\", \"msg\": {{\"case\": \"validate\", \"definition\": \"lava\", \"result\": \"pass\"}}}}"
                )
            }
            _ => lava_line(
                "target",
                &format!("[    {i}.000000] job {job} test executor line {i}"),
            ),
        };
        emitted.lock().unwrap().push(line.clone());
        assert!(sink.line(line));
    }
}

impl JobExecutor for TestExecutor {
    fn run(&self, job: MasterJob, log: JobLogSink, cancel: CancellationToken) -> OutcomeFuture {
        self.jobs.lock().unwrap().push(job.clone());
        let script = self.script.clone();
        let gate = self.gate.clone();
        let emitted = self.emitted.clone();
        let id = job.id.to_string();
        Box::pin(async move {
            match script {
                Script::Finish { lines, outcome } => {
                    emit(&log, &emitted, &id, 0, lines);
                    outcome
                }
                Script::Gated {
                    before,
                    after,
                    outcome,
                } => {
                    emit(&log, &emitted, &id, 0, before);
                    gate.notified().await;
                    emit(&log, &emitted, &id, before, after);
                    outcome
                }
                Script::UntilCanceled { lines } => {
                    emit(&log, &emitted, &id, 0, lines);
                    cancel.cancelled().await;
                    let l = lava_line("exception", CANCELED_MESSAGE);
                    emitted.lock().unwrap().push(l.clone());
                    log.line(l);
                    JobOutcome::canceled("compatibility: 4\npipeline: []\n")
                }
                Script::Forever { lines } => {
                    emit(&log, &emitted, &id, 0, lines);
                    std::future::pending::<()>().await;
                    unreachable!()
                }
            }
        })
    }
}

/// Settings for a link to `url` with short intervals, so tests run in seconds.
pub fn settings(url: &str, name: &str, token: TokenSource) -> MasterSettings {
    let mut s = MasterSettings::new(url, WorkerName::new(name).unwrap(), token);
    s.ping_interval = Duration::from_millis(500);
    s.job_log_interval = Duration::from_millis(300);
    s.http_timeout = Duration::from_secs(10);
    s
}

/// A running link; `stop` shuts it down (as labd's shutdown or a crash would).
pub struct Running {
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), labd::master::MasterError>>,
}

impl Running {
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

pub fn start_link(
    settings: MasterSettings,
    executor: Arc<dyn JobExecutor>,
    state_dir: &Path,
) -> Running {
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(MasterLink::run(
        settings,
        executor,
        state_dir.to_path_buf(),
        shutdown.clone(),
    ));
    Running { shutdown, task }
}

/// Polls `pred` every 20 ms until it holds, or panics after `timeout` saying what was awaited.
pub async fn wait_until(timeout: Duration, what: &str, mut pred: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !pred() {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_test_writer()
        .try_init();
}

// Helpers for tests against the lava-server double.

use labd_hw_fixtures::lava_master::MasterDouble;

pub const DEVICE: &str =
    "commands:\n  connect: telnet localhost 7101\n  power_on: pduclient --port 1 on\n";

pub fn definition(name: &str) -> String {
    format!(
        "actions: []\ncompatibility: 0\ndevice_type: qemu\njob_name: {name}\npriority: medium\nvisibility: public\n"
    )
}

pub fn assert_clean(d: &MasterDouble) {
    let v = d.violations();
    assert!(
        v.is_empty(),
        "requests differ from lava-worker's:\n{}",
        v.join("\n")
    );
}

pub fn state_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

pub fn pings(d: &MasterDouble) -> Vec<labd_hw_fixtures::lava_master::Recorded> {
    d.requests()
        .into_iter()
        .filter(|r| r.request.method == "GET" && r.request.path.contains("/workers/"))
        .collect()
}
