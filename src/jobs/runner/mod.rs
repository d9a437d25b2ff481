//! The job runner: runs a validated LAVA job on a board, writing LAVA's log.
//!
//! `run_job` validates, runs the top-level action blocks (deploy, boot, test) as LAVA's
//! pipeline does (levels, `start:`/`end:` lines, results records, per-action timeouts inside
//! the job timeout, `failure_retry`), then always finalises (power off, read what the console
//! still says, close the connection) and writes the job's result record. Cancellation stops
//! the innermost action at once and is reported `Canceled`.
//!
//! Hardware is reached only through the console layer ([`connection`]), the power service or
//! the device's power commands ([`power`]) and the images service ([`images`]).

pub mod action;
pub mod boardfiles;
pub mod boards;
pub mod connection;
pub mod device;
pub mod executor;
pub mod images;
pub mod images_service;
pub mod joblog;
pub mod local;
pub mod multinode;
pub mod power;
pub mod pty;
pub mod reply_stream;
pub mod service;
pub mod summary;
mod validate;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use action::{Act, Pipeline, Spec};
pub use boardfiles::BoardFiles;
pub use boards::{BoardError, BoardHold, BoardLocks};
pub use connection::Connection;
pub use device::{ConsoleAccess, DeviceSetup};
pub use executor::RunnerExecutor;
pub use images::{FetchFailure, FetchedImage, ImageFetch, ImageFetcher};
pub use images_service::ServiceFetcher;
pub use joblog::{JobLog, LineStream};
pub use local::{LocalBoard, SetupError};
pub use multinode::{MultinodeFactory, MultinodeProtocol, MultinodeRequest};
pub use power::{BoardPower, PowerStep};

use crate::console::ConsoleRegistry;
use crate::inventory::Inventory;
use crate::jobs::error::{LavaError, LavaErrorType};
use crate::jobs::log::LogValue;
use crate::jobs::model::{Action, JobDefinition, TestKind};
use crate::jobs::shell::TestShellOverlay;
use crate::power::PowerService;

/// What every job on this worker shares: the daemon's consoles, power and images (or those a
/// `labd run-job` process started), and the Multi-Node client.
#[derive(Clone, Default)]
pub struct RunEnv {
    pub consoles: Option<Arc<ConsoleRegistry>>,
    pub inventory: Option<Arc<Inventory>>,
    pub power: Option<PowerService>,
    pub images: Option<Arc<dyn ImageFetcher>>,
    pub multinode: Option<Arc<dyn MultinodeFactory>>,
    /// `LAVA_DISPATCHER_IP` exported on the DUT.
    pub dispatcher_ip: Option<String>,
}

/// One job to run.
pub struct JobRequest {
    /// The job id (`LAVA_JOB_ID`, `/lava-<id>` on the DUT).
    pub id: String,
    /// The job definition YAML.
    pub definition: String,
    pub device: DeviceSetup,
    /// The job's own directory; images go to `<work_dir>/tmp` (removed at the end).
    pub work_dir: PathBuf,
    pub log: JobLog,
    pub cancel: CancellationToken,
}

/// How the job ended, as lava-server records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Complete,
    Incomplete,
    Canceled,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Complete => "complete",
            Health::Incomplete => "incomplete",
            Health::Canceled => "canceled",
        }
    }
}

/// What a finished job reports.
#[derive(Debug, Clone)]
pub struct JobReport {
    pub health: Health,
    /// The error that ended the job (`error_msg`, `error_type`).
    pub error: Option<LavaError>,
    /// Every `results` record written, in order.
    pub results: Vec<LogValue>,
    /// `description.yaml`: the actions that ran.
    pub description: String,
    pub duration: Duration,
}

/// What the actions share while the job runs.
pub struct Ctx<'a> {
    pub pipe: Pipeline,
    pub log: JobLog,
    pub job: &'a JobDefinition,
    pub job_id: &'a str,
    pub device: &'a DeviceSetup,
    pub env: &'a RunEnv,
    /// Downloads go here (LAVA's per-job tmp directory).
    pub tmp_dir: PathBuf,
}

/// An image a deploy action placed on the worker.
#[derive(Debug, Clone)]
pub struct Deployed {
    pub label: String,
    pub path: PathBuf,
    pub image_arg: Option<String>,
    /// The download directory (removed at the end).
    pub dir: PathBuf,
}

/// What changes while the job runs.
#[derive(Default)]
pub struct State {
    pub conn: Option<Connection>,
    /// The connection is a qemu process (finalised with `poweroff`).
    pub qemu: bool,
    pub images: Vec<Deployed>,
    /// The test-shell files of every stage.
    pub overlay: Option<TestShellOverlay>,
    /// The overlay is on the DUT since the last boot.
    pub delivered: bool,
    /// Stage number of each test block with definitions, by action index.
    pub stages: BTreeMap<usize, usize>,
    pub multinode: Option<Box<dyn MultinodeProtocol>>,
    /// `{name}` values carried between interactive steps.
    pub substitutions: BTreeMap<String, String>,
    /// The running test shell (kept here so a timeout can still close its run).
    pub session: Option<crate::jobs::signals::TestShellSession>,
}

impl JobReport {
    fn new(health: Health, error: Option<LavaError>, log: &JobLog, started: Instant) -> Self {
        Self {
            health,
            error,
            results: log.collected_results(),
            description: log.description(),
            duration: started.elapsed(),
        }
    }
}

fn version_line() -> String {
    format!(
        "lava-dispatcher, installed at version: 2023.01 (labd {})",
        env!("CARGO_PKG_VERSION")
    )
}

/// Runs one job to its end. Never panics on bad input: a definition that does not parse or
/// validate ends the job Incomplete with a `Job` error, as lava-run does.
pub async fn run_job(env: &RunEnv, req: JobRequest) -> JobReport {
    let started = Instant::now();
    let log = req.log.clone();
    let metrics = crate::jobs::metrics::JobMetrics::start(req.device.name.as_ref());
    let span = tracing::info_span!("job", id = %req.id, device = ?req.device.name);
    let report = {
        let _enter = span.enter();
        tracing::info!("job starting");
        drop(_enter);
        tracing::Instrument::instrument(run_inner(env, &req, started), span.clone()).await
    };
    log.flush().await;
    metrics.finish(report.health);
    tracing::info!(parent: &span, health = report.health.as_str(), "job finished");
    report
}

async fn run_inner(env: &RunEnv, req: &JobRequest, started: Instant) -> JobReport {
    let log = req.log.clone();
    log.info(version_line());
    log.info("start: 0 validate");
    log.info(format!(
        "Start time: {} (UTC)",
        chrono::Utc::now().format("%Y-%m-%d %H:%M:%S%.6f+00:00")
    ));
    let validated = validate::validate(env, req, &log).await;
    let job = match validated {
        Ok(job) => job,
        Err(e) => return finish_job(&log, Some(e), started, None).await,
    };
    let job_deadline = started + job.timeouts.job.duration;
    let pipe = Pipeline {
        log: log.clone(),
        cancel: req.cancel.clone(),
        timeouts: job.timeouts.clone(),
        device_timeouts: req.device.config.timeouts.clone(),
    };
    let ctx = Ctx {
        pipe,
        log: log.clone(),
        job: &job,
        job_id: &req.id,
        device: &req.device,
        env,
        tmp_dir: req.work_dir.join("tmp"),
    };
    let mut st = State::default();
    match validate::prepare(&ctx, &mut st) {
        Ok(()) => {}
        Err(e) => return finish_job(&log, Some(e), started, None).await,
    }
    let root = Act::root(job_deadline);
    let mut error = None;
    if let Some(mn) = st.multinode.as_mut() {
        if let Err(e) = mn.set_up(&log).await {
            error = Some(e);
        }
    }
    if error.is_none() {
        error = run_actions(&ctx, &mut st, &root).await.err();
    }
    let finalize_level = job.actions.len() + 1;
    if error.is_none() {
        // A successful pipeline ends with its `finalize` action block.
        let spec = Spec::new("finalize", None);
        root.skip_level_to(finalize_level - 1);
        let r = action::action!(ctx.pipe, &root, spec, |act| {
            finalize_steps(&ctx, &mut st, &act).await;
            Ok::<(), LavaError>(())
        });
        if let Err(e) = r {
            error = Some(e);
        }
        log.info("Cleaning after the job");
    } else {
        // After a failure lava-run's cleanup runs the finalize pipeline without its frame.
        log.info("Cleaning after the job");
        let fin = Act::detached(format!("{finalize_level}"), "finalize", job_deadline);
        finalize_steps(&ctx, &mut st, &fin).await;
    }
    if let Some(mn) = st.multinode.as_mut() {
        mn.finalise(&log).await;
    }
    cleanup_files(&ctx, &st.images).await;
    finish_job(&log, error, started, Some(&ctx.tmp_dir)).await
}

/// The top-level action blocks, in order.
async fn run_actions(ctx: &Ctx<'_>, st: &mut State, root: &Act) -> Result<(), LavaError> {
    for (index, action) in ctx.job.actions.iter().enumerate() {
        let r = match action {
            Action::Deploy(d) => crate::jobs::actions::deploy::run(ctx, st, root, d).await,
            Action::Boot(b) => crate::jobs::actions::boot::run(ctx, st, root, b).await,
            Action::Test(t) => crate::jobs::actions::test::run(ctx, st, root, index, t).await,
        };
        if let Err(e) = r {
            let skip = action.common().timeout.is_some_and(|t| t.skip);
            if e.kind == LavaErrorType::LavaTimeout && skip {
                ctx.log.warning(format!(
                    "skip_timeout is set for {} - continuing to next action block.",
                    top_level_name(ctx, action)
                ));
                continue;
            }
            if e.kind == LavaErrorType::LavaTimeout {
                return Err(LavaError::new(LavaErrorType::Test, e.message));
            }
            return Err(e);
        }
    }
    Ok(())
}

fn top_level_name(ctx: &Ctx<'_>, action: &Action) -> &'static str {
    match action {
        Action::Deploy(d) => crate::jobs::actions::deploy::block_name(d),
        Action::Boot(b) => crate::jobs::actions::boot::block_name(ctx, b),
        Action::Test(t) => match t.kind {
            TestKind::Definitions(_) => "lava-test-retry",
            TestKind::Interactive(_) => "lava-test-interactive-retry",
            TestKind::Monitors(_) => "lava-test-monitor-retry",
        },
    }
}

/// LAVA's `FinalizeAction` pipeline: `power-off`, then `read-feedback` (which also closes the
/// connection).
async fn finalize_steps(ctx: &Ctx<'_>, st: &mut State, parent: &Act) {
    // Finalising must run even after a cancel: its own frames ignore the token.
    let pipe = Pipeline {
        cancel: CancellationToken::new(),
        ..ctx.pipe.clone()
    };
    let spec = Spec::new("power-off", None)
        .kind(LavaErrorType::Infrastructure)
        .default_timeout(Duration::from_secs(10));
    let r = action::action!(pipe, parent, spec, |act| {
        let _ = &act;
        if ctx.device.power.has(PowerStep::PowerOff) {
            ctx.device.power.run(PowerStep::PowerOff, &ctx.log).await?;
            act.set_results(LogValue::map().with("status", "success"));
        }
        Ok::<(), LavaError>(())
    });
    if let Err(e) = r {
        ctx.log
            .error(format!("Failed to run 'finalize': {}", e.message));
    }
    let spec = Spec::new("read-feedback", None);
    let _ = action::action!(pipe, parent, spec, |act| {
        let _ = &act;
        match st.conn.as_mut() {
            Some(conn) if conn.connected => {
                let deadline = Instant::now() + Duration::from_secs(1);
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let n = conn.listen_feedback(left, "common").await;
                    if n > 1 {
                        ctx.log
                            .debug("Listened to connection for namespace 'common' for up to 1s");
                    }
                    if n == 0 || left.is_zero() {
                        break;
                    }
                }
                ctx.log.info("Finalising connection for namespace 'common'");
                conn.finalise(st.qemu).await;
            }
            _ => ctx.log.debug("No connection for namespace common"),
        }
        Ok::<(), LavaError>(())
    });
    st.conn = None;
}

/// Removes the job's downloads (takes the images, not the whole `State`, whose Multi-Node
/// protocol is not `Sync`: the job future must stay `Send`).
async fn cleanup_files(ctx: &Ctx<'_>, images: &[Deployed]) {
    for d in images {
        ctx.log.debug(format!(
            "Cleaning up download directory: {}",
            d.dir.display()
        ));
    }
    let dir = ctx.tmp_dir.clone();
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
}

/// The last lines of every job: the error's help line or "Job finished correctly", then the
/// job's results record.
async fn finish_job(
    log: &JobLog,
    error: Option<LavaError>,
    started: Instant,
    tmp_dir: Option<&std::path::Path>,
) -> JobReport {
    if let Some(d) = tmp_dir {
        log.info(format!("Root tmp directory removed at {}", d.display()));
    }
    match &error {
        None => log.info("Job finished correctly"),
        Some(e) => log.error(e.kind.help()),
    }
    log.results(crate::jobs::signals::job_result(error.as_ref()));
    let health = match &error {
        None => Health::Complete,
        Some(e) if e.kind == LavaErrorType::Canceled => Health::Canceled,
        Some(_) => Health::Incomplete,
    };
    JobReport::new(health, error, log, started)
}
