//! The master link's [`JobExecutor`]: a job from a LAVA server runs on the runner with the
//! device configuration the server rendered. Its `commands.connect` and power commands are
//! honoured as lava-dispatcher honours them; a `telnet localhost PORT` to one of labd's own
//! console listeners uses that console directly (see [`DeviceSetup::from_master`]).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::boards::BoardLocks;
use super::{DeviceSetup, Health, JobLog, JobReport, JobRequest, RunEnv, run_job};
use crate::jobs::device::DeviceConfiguration;
use crate::master::{JobExecutor, JobLogSink, JobOutcome, MasterJob, OutcomeFuture};

/// Runs master jobs. `env` gives the daemon's current consoles, inventory, power and images at
/// each job start.
#[derive(Clone)]
pub struct RunnerExecutor {
    env: Arc<dyn Fn() -> RunEnv + Send + Sync>,
    boards: Option<Arc<dyn BoardLocks>>,
}

impl RunnerExecutor {
    pub fn new(env: impl Fn() -> RunEnv + Send + Sync + 'static) -> Self {
        Self {
            env: Arc::new(env),
            boards: None,
        }
    }

    /// A job on an inventory board holds it while it runs (waiting first if a local job or
    /// group has it), so a Multi-Node group of `labd run-job` never takes it meanwhile.
    pub fn with_boards(mut self, boards: Arc<dyn BoardLocks>) -> Self {
        self.boards = Some(boards);
        self
    }
}

/// What lava-server records for a finished job.
pub fn outcome(report: &JobReport) -> JobOutcome {
    let description = report.description.clone();
    match (report.health, &report.error) {
        (Health::Complete, _) => JobOutcome::complete(description),
        (Health::Canceled, _) => JobOutcome::canceled(description),
        (Health::Incomplete, e) => {
            let mut o =
                JobOutcome::incomplete(e.as_ref().map_or("Bug", |e| e.kind.as_str()), description);
            o.errors = e.as_ref().map(|e| e.message.clone()).unwrap_or_default();
            o
        }
    }
}

impl JobExecutor for RunnerExecutor {
    fn run(&self, job: MasterJob, sink: JobLogSink, cancel: CancellationToken) -> OutcomeFuture {
        let env = (self.env)();
        let boards = self.boards.clone();
        Box::pin(async move {
            let s = sink.clone();
            let log = JobLog::new(
                None,
                Some(Box::new(move |l: &str| {
                    s.line(l);
                })),
            );
            let config = match DeviceConfiguration::parse(&job.device) {
                Ok(c) => c,
                Err(e) => {
                    log.error(format!("Invalid device configuration: {e}"));
                    let mut o = JobOutcome::incomplete("Configuration", "");
                    o.errors = format!("Invalid device configuration: {e}");
                    return o;
                }
            };
            let setup = match DeviceSetup::from_master(
                config,
                env.consoles.as_deref(),
                env.inventory.as_deref(),
                env.power.as_ref(),
            ) {
                Ok(s) => s,
                Err(e) => {
                    log.error(format!("Invalid device configuration: {e}"));
                    let mut o = JobOutcome::incomplete("Configuration", "");
                    o.errors = format!("Invalid device configuration: {e}");
                    return o;
                }
            };
            let _hold = match (&boards, setup.name.clone()) {
                (Some(b), Some(name)) => {
                    let l = log.clone();
                    let on_wait = Box::new(move |d: String| {
                        l.info(format!(
                            "Waiting for the board, in use on this worker ({d})"
                        ));
                    });
                    let hold = b.hold_for_master(
                        format!("master job {}", job.id.as_str()),
                        name,
                        None,
                        on_wait,
                    );
                    tokio::select! {
                        h = hold => match h {
                            Ok(h) => Some(h),
                            Err(e) => {
                                log.error(format!("Cannot hold the board: {e}"));
                                let mut o = JobOutcome::incomplete("Infrastructure", "");
                                o.errors = format!("Cannot hold the board: {e}");
                                return o;
                            }
                        },
                        _ = cancel.cancelled() => {
                            log.error("The job was canceled while waiting for its board");
                            return JobOutcome::canceled(String::new());
                        }
                    }
                }
                _ => None,
            };
            let req = JobRequest {
                id: job.id.as_str().to_string(),
                definition: job.definition,
                device: setup,
                work_dir: job.work_dir,
                log,
                cancel,
            };
            let report = run_job(&env, req).await;
            outcome(&report)
        })
    }
}
