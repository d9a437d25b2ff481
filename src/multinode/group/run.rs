//! Running a whole Multi-Node group on this worker, without a LAVA server (`labd run-job` on
//! a submission, `labd demo`): split it per role, place every sub-job on an inventory board,
//! start a coordinator unless one is configured, and run all sub-jobs concurrently with the
//! job runner, each with its own console, power and Multi-Node session.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::GroupError;
use super::allocate::{Candidate, Reservations};
use super::plan::GroupPlan;
use super::split::parse_submission;
use crate::ids::DeviceName;
use crate::images::ImageService;
use crate::inventory::Inventory;
use crate::jobs::runner::{JobLog, JobReport, JobRequest, LocalBoard, SetupError, run_job};
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
    #[error("cannot create {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Receives every log line of every sub-job: `(role, job id, line)`.
pub type GroupLines = Arc<dyn Fn(&str, &str, &str) + Send + Sync>;

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
    /// Boards shared with other groups of this process.
    pub reservations: Reservations,
    /// How long to wait for busy boards.
    pub patience: Duration,
    pub lines: Option<GroupLines>,
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
            patience: Duration::from_secs(3600),
            lines: None,
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
}

/// What a master board needs to boot a slave board, from the inventory: its name, console,
/// and how to switch it on (its PDU outlet, and the PDU's HTTP API when it has one).
pub fn slave_data(inv: &Inventory, device: &DeviceName) -> Vec<(String, String)> {
    let mut data = vec![("device".to_string(), device.as_str().to_string())];
    let Some(dev) = inv.device(device.as_str()) else {
        return data;
    };
    if let Some(tty) = dev.console.as_ref().and_then(|c| c.tty.as_ref()) {
        data.push(("console".into(), tty.get_ref().display().to_string()));
    }
    if let Some(p) = &dev.power {
        if let Some(pdu) = &p.pdu {
            data.push(("pdu".into(), pdu.get_ref().as_str().to_string()));
            let url = inv
                .pdus
                .iter()
                .find(|c| c.name.get_ref() == pdu.get_ref())
                .and_then(|c| c.url.as_ref());
            if let Some(url) = url {
                data.push(("pdu_url".into(), url.get_ref().clone()));
            }
        }
        if let Some(o) = &p.outlet {
            data.push(("outlet".into(), o.get_ref().0.clone()));
        }
    }
    data
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

/// Runs the group `submission` on `inv`'s boards; returns every sub-job's end, in sub_id order.
pub async fn run_group(
    inv: Arc<Inventory>,
    submission: &str,
    opts: GroupOptions,
) -> Result<Vec<SubJobEnd>, GroupRunError> {
    let value = parse_submission(submission)?;
    let target_group = uuid::Uuid::new_v4().to_string();
    let mut plan = GroupPlan::from_submission(&value, &target_group)?;
    let boards = Candidate::from_inventory(&inv.devices);
    let reserved = opts
        .reservations
        .acquire(
            &plan.requirements,
            &boards,
            |_| false,
            Duration::from_secs(1),
            opts.patience,
        )
        .await?;
    let ids: Vec<String> = plan
        .jobs
        .iter()
        .map(|j| sub_job_id(&opts.base_id, j.sub_id))
        .collect();
    plan.assign_ids(&ids);

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
    let images = match &opts.images {
        Some(s) => Some(s.clone()),
        None => {
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

    // Start every board first: a board that cannot start fails the group before any job runs.
    let mut started: Vec<(LocalBoard, String, String, String, DeviceName)> = Vec::new();
    for (i, job) in plan.jobs.iter().enumerate() {
        let device = reserved.allocation.devices[i].clone();
        let fail = |source| GroupRunError::Setup {
            role: job.role.clone(),
            job_id: ids[i].clone(),
            device: device.clone(),
            source,
        };
        let local = match LocalBoard::start(
            inv.clone(),
            device.as_str(),
            opts.power.clone(),
            images.clone(),
        )
        .await
        {
            Ok(l) => l,
            Err(e) => {
                for (l, ..) in started {
                    LocalBoard::stop(l).await;
                }
                return Err(fail(e));
            }
        };
        let definition = job.runner_yaml()?;
        started.push((local, definition, job.role.clone(), ids[i].clone(), device));
    }

    let mut tasks = Vec::new();
    for (mut local, definition, role, id, device) in started {
        local.env.multinode = Some(factory.clone());
        let work_dir = inv.worker.state_dir.join("jobs").join(&id);
        std::fs::create_dir_all(&work_dir).map_err(|source| GroupRunError::Io {
            path: work_dir.clone(),
            source,
        })?;
        let stream = opts.lines.clone().map(|f| {
            let (r, i) = (role.clone(), id.clone());
            Box::new(move |l: &str| f(&r, &i, l)) as crate::jobs::runner::LineStream
        });
        let log = JobLog::new(Some(&work_dir.join("output.yaml")), stream);
        let req = JobRequest {
            id: id.clone(),
            definition,
            device: local.setup.clone(),
            work_dir,
            log,
            cancel: opts.cancel.child_token(),
        };
        let span = tracing::info_span!("subjob", role = %role, id = %id, device = %device);
        tasks.push(tokio::spawn(
            async move {
                let report = run_job(&local.env, req).await;
                local.stop().await;
                SubJobEnd {
                    role,
                    job_id: id,
                    device,
                    report,
                }
            }
            .instrument(span),
        ));
    }
    let mut ends = Vec::new();
    for (t, i) in tasks.into_iter().zip(0..) {
        match t.await {
            Ok(end) => ends.push(end),
            Err(e) => {
                return Err(GroupRunError::SubJob {
                    role: plan.jobs[i].role.clone(),
                    message: format!("the sub-job's task failed: {e}"),
                });
            }
        }
    }
    drop(reserved);
    if let Some(s) = server {
        s.shutdown().await;
    }
    Ok(ends)
}
