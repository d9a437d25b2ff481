//! Running a whole Multi-Node group on this worker, without a LAVA server (`labd run-job` on
//! a submission, in its own process or in the daemon; `labd demo`): split it per role, reserve
//! inventory boards for every sub-job at once, start a coordinator unless one is configured,
//! and run all sub-jobs concurrently with the job runner, each with its own console, power
//! and Multi-Node session. A failing essential role cancels the rest ([`super::essential`]).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::GroupError;
use super::allocate::{Candidate, check_feasible};
use super::board::Board;
pub use super::board::slave_data;
use super::essential::EssentialWatch;
use super::plan::GroupPlan;
use super::reserve::Reservations;
use super::split::parse_submission;
use crate::ids::DeviceName;
use crate::images::ImageService;
use crate::inventory::Inventory;
use crate::jobs::runner::{JobLog, JobReport, JobRequest, RunEnv, SetupError, run_job};
use crate::multinode::config::ClientSettings;
use crate::multinode::error::CoordinatorError;
use crate::multinode::hook::LabdMultinode;
use crate::multinode::server::{Server, ServerConfig};
use crate::power::PowerService;

/// Why a group could not be started (a sub-job that fails is a result, not this error).
#[derive(Debug, thiserror::Error)]
pub enum GroupRunError {
    #[error(transparent)]
    Group(#[from] GroupError),
    #[error("coordinator: {0}")]
    Coordinator(#[from] CoordinatorError),
    #[error("role {role} (job {job_id}) on {device}: {source}")]
    Setup {
        role: String,
        job_id: String,
        device: DeviceName,
        #[source]
        source: SetupError,
    },
    #[error("role {role}: {message}")]
    SubJob { role: String, message: String },
    /// Canceled (Ctrl-C, the client went away) before the boards were free.
    #[error("canceled while waiting for boards")]
    CanceledWaiting,
    /// A sub-job's work directory cannot be made (disk full, permissions, a file in the
    /// way): found before any board is opened.
    #[error("role {role} (job {job_id}): cannot create its work directory {path}: {source}")]
    WorkDir {
        role: String,
        job_id: String,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Receives every log line of every sub-job: `(role, job id, line)`.
pub type GroupLines = Arc<dyn Fn(&str, &str, &str) + Send + Sync>;

/// Told what a group waits for when its boards are busy.
pub type WaitNotice = Arc<dyn Fn(&str) + Send + Sync>;

/// How to run a group.
#[derive(Clone)]
pub struct GroupOptions {
    /// Sub-job ids are `base_id + sub_id` (see [`sub_job_id`]).
    pub base_id: String,
    /// Replaces the inventory's power service (tests and the demo attach simulated PDUs).
    pub power: Option<PowerService>,
    pub images: Option<ImageService>,
    /// Where the coordinator is; `None`: the inventory's `[coordinator]` if there is one,
    /// else a coordinator started in this process on a free loopback port.
    pub coordinator: Option<ClientSettings>,
    /// Poll delay for the in-process coordinator's clients.
    pub poll_delay: Duration,
    /// Boards shared with every other job of this process (the daemon's, in the daemon).
    pub reservations: Reservations,
    /// How long to wait for busy boards (`None`: until they are free or `cancel`).
    pub patience: Option<Duration>,
    pub lines: Option<GroupLines>,
    /// Called once if the group has to wait for busy boards, with what it waits for.
    pub on_wait: Option<WaitNotice>,
    /// In the daemon: its consoles, power and images (the boards' consoles are the
    /// daemon's); `None`: each board's console is started in this process.
    pub daemon: Option<RunEnv>,
    pub cancel: CancellationToken,
}

impl GroupOptions {
    pub fn new(base_id: impl Into<String>) -> Self {
        GroupOptions {
            base_id: base_id.into(),
            power: None,
            images: None,
            coordinator: None,
            poll_delay: Duration::from_millis(500),
            reservations: Reservations::new(),
            patience: None,
            lines: None,
            on_wait: None,
            daemon: None,
            cancel: CancellationToken::new(),
        }
    }
}

/// One finished sub-job.
#[derive(Debug)]
pub struct SubJobEnd {
    pub role: String,
    pub job_id: String,
    pub device: DeviceName,
    pub report: JobReport,
    /// Why the group canceled it (an essential role failed).
    pub canceled_by: Option<String>,
}

/// A sub-job's id: `base + sub_id` when the base is a number (lava-server gives every sub-job
/// its own integer id, and the DUT helpers' cache format expects digits), else
/// `<base>.<sub_id>`.
pub fn sub_job_id(base: &str, sub_id: u32) -> String {
    match base.parse::<u64>() {
        Ok(n) => n.saturating_add(u64::from(sub_id)).to_string(),
        Err(_) => format!("{base}.{sub_id}"),
    }
}

/// True when `text` is a Multi-Node submission (`protocols: lava-multinode: roles:` with
/// role requests) rather than a single job.
pub fn is_group_text(text: &str) -> bool {
    parse_submission(text).is_ok_and(|v| super::split::is_multinode_submission(&v))
}

/// Parses and places a submission without running it: refuses at once a submission that is
/// not a valid group or that the inventory can never hold.
pub fn check_group(inv: &Inventory, submission: &str) -> Result<GroupPlan, GroupError> {
    let value = parse_submission(submission)?;
    let plan = GroupPlan::from_submission(&value, "check")?;
    check_feasible(&plan.requirements, &Candidate::from_inventory(&inv.devices))?;
    Ok(plan)
}

/// Runs the group `submission` on `inv`'s boards; returns every sub-job's end, in sub_id order.
pub async fn run_group(
    inv: Arc<Inventory>,
    submission: &str,
    opts: GroupOptions,
) -> Result<Vec<SubJobEnd>, GroupRunError> {
    let value = parse_submission(submission)?;
    let target_group = uuid::Uuid::new_v4().to_string();
    let mut plan = GroupPlan::from_submission(&value, &target_group)?;
    let ids: Vec<String> = plan
        .jobs
        .iter()
        .map(|j| sub_job_id(&opts.base_id, j.sub_id))
        .collect();
    plan.assign_ids(&ids);
    // Everything that can fail per sub-job is done before any board is opened or any
    // sub-job spawned: a group never returns while some of its sub-jobs still run.
    let definitions = plan
        .jobs
        .iter()
        .map(|j| j.runner_yaml())
        .collect::<Result<Vec<String>, GroupError>>()?;
    let boards = Candidate::from_inventory(&inv.devices);
    let on_wait = opts.on_wait.clone();
    let holder = format!("group {}", opts.base_id);
    let acquire = opts.reservations.acquire(
        &holder,
        &plan.requirements,
        &boards,
        opts.patience,
        move |detail| {
            tracing::info!(%detail, "the group waits for busy boards");
            if let Some(f) = on_wait {
                f(&detail);
            }
        },
    );
    let reserved = tokio::select! {
        r = acquire => r?,
        _ = opts.cancel.cancelled() => return Err(GroupRunError::CanceledWaiting),
    };
    // Every spawned sub-job holds the reservation until it has stopped its board, so the
    // boards go to the next job only once no sub-job of this group can touch them, whatever
    // happens to this future.
    let reserved = Arc::new(reserved);
    let mut work_dirs = Vec::with_capacity(ids.len());
    for (job, id) in plan.jobs.iter().zip(&ids) {
        let path = inv.worker.state_dir.join("jobs").join(id);
        if let Err(source) = tokio::fs::create_dir_all(&path).await {
            return Err(GroupRunError::WorkDir {
                role: job.role.clone(),
                job_id: id.clone(),
                path,
                source,
            });
        }
        work_dirs.push(path);
    }

    let (settings, server) = match (&opts.coordinator, &inv.coordinator) {
        (Some(s), _) => (s.clone(), None),
        (None, Some(section)) => (ClientSettings::resolve(Some(section))?, None),
        (None, None) => {
            let server = Server::start(ServerConfig {
                bind: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                port: 0,
                ..ServerConfig::default()
            })
            .await?;
            let port = server.local_addr().port();
            (
                ClientSettings::at("127.0.0.1", port, opts.poll_delay),
                Some(server),
            )
        }
    };
    tracing::info!(group = %target_group, coordinator = %format!("{}:{}", settings.host, settings.port), "group starting");

    let mut mn = LabdMultinode::new(settings, inv.worker.name.as_str());
    for (i, id) in ids.iter().enumerate() {
        if plan.is_slave(i) {
            mn = mn.with_slave(
                id.clone(),
                slave_data(&inv, &reserved.allocation.devices[i]),
            );
        }
    }
    let factory = mn.into_factory();
    let images = match (&opts.images, &opts.daemon) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(_)) => None,
        (None, None) => {
            let settings = crate::images::ImageSettings::from_inventory(&inv).map_err(|e| {
                GroupRunError::SubJob {
                    role: "*".into(),
                    message: format!("images: {e}"),
                }
            })?;
            Some(
                ImageService::new(settings)
                    .await
                    .map_err(|e| GroupRunError::SubJob {
                        role: "*".into(),
                        message: format!("images: {e}"),
                    })?,
            )
        }
    };

    // Open every board first: a board that cannot start fails the group before any job runs.
    let mut started: Vec<(Board, String, String, DeviceName)> = Vec::new();
    for (i, job) in plan.jobs.iter().enumerate() {
        let device = reserved.allocation.devices[i].clone();
        let board = match Board::open(&inv, &device, &opts, &images).await {
            Ok(b) => b,
            Err(source) => {
                for (b, ..) in started {
                    b.stop().await;
                }
                return Err(GroupRunError::Setup {
                    role: job.role.clone(),
                    job_id: ids[i].clone(),
                    device,
                    source,
                });
            }
        };
        started.push((board, job.role.clone(), ids[i].clone(), device));
    }

    let n = started.len();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, SubJobEnd)>();
    // Dropping this future (its caller gone) cancels every sub-job; they still end normally.
    let group_cancel = opts.cancel.child_token();
    let _cancel_on_drop = group_cancel.clone().drop_guard();
    let mut cancels: Vec<CancellationToken> = Vec::new();
    let (mut logs, mut names) = (Vec::new(), Vec::new());
    // Nothing below may fail until every sub-job is spawned.
    let prepared = started.into_iter().zip(definitions).zip(work_dirs);
    for (i, (((mut board, role, id, device), definition), work_dir)) in prepared.enumerate() {
        let stream = opts.lines.clone().map(|f| {
            let (r, i) = (role.clone(), id.clone());
            Box::new(move |l: &str| f(&r, &i, l)) as crate::jobs::runner::LineStream
        });
        let log = JobLog::new(Some(&work_dir.join("output.yaml")), stream);
        let cancel = group_cancel.child_token();
        let (env, setup) = board.parts();
        env.multinode = Some(factory.clone());
        let req = JobRequest {
            id: id.clone(),
            definition,
            device: setup,
            work_dir,
            log: log.clone(),
            cancel: cancel.clone(),
        };
        cancels.push(cancel);
        logs.push(log);
        names.push(format!("{role} (job {id}) on {device}"));
        let span = tracing::info_span!("subjob", role = %role, id = %id, device = %device);
        let tx = tx.clone();
        let hold = Arc::clone(&reserved);
        tokio::spawn(
            async move {
                let report = match &board {
                    Board::Local(l) => run_job(&l.env, req).await,
                    Board::Daemon { env, .. } => run_job(env, req).await,
                };
                board.stop().await;
                drop(hold);
                let _ = tx.send((
                    i,
                    SubJobEnd {
                        role,
                        job_id: id,
                        device,
                        report,
                        canceled_by: None,
                    },
                ));
            }
            .instrument(span),
        );
    }
    drop(tx);
    let essential = (0..n).map(|i| plan.is_essential(i)).collect();
    let mut watch = EssentialWatch::new(essential, cancels, logs);
    let mut ends: Vec<Option<SubJobEnd>> = (0..n).map(|_| None).collect();
    while let Some((i, end)) = rx.recv().await {
        watch.ended(i, &names[i], end.report.health);
        ends[i] = Some(end);
    }
    drop(reserved);
    if let Some(s) = server {
        s.shutdown().await;
    }
    let mut out = Vec::new();
    for (i, end) in ends.into_iter().enumerate() {
        let Some(mut end) = end else {
            return Err(GroupRunError::SubJob {
                role: plan.jobs[i].role.clone(),
                message: "the sub-job's task failed".into(),
            });
        };
        watch.apply(i, &mut end.report);
        end.canceled_by = watch.reason(i).map(str::to_string);
        out.push(end);
    }
    Ok(out)
}
