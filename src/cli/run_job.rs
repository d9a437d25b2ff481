//! `labd run-job JOB.yaml [--device NAME]`: runs a LAVA job with no master (a Multi-Node
//! submission runs as a whole group on boards chosen from the inventory: `multinode::group`).
//! With a daemon running (its control socket answers), the daemon runs the job or the group
//! on its own consoles, power and board reservations and streams the log back; otherwise (or
//! with `--local`) this process starts the boards' consoles and power itself.
//! The log is shown as it comes, then a results table; the exit status is 0 for Complete, 1
//! for Incomplete, 2 for Canceled (for a group: 1 when any sub-job is Incomplete).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::InventoryArg;
use crate::control::ControlError;
use crate::jobs::log::LogValue;
use crate::jobs::runner::service::{JobEnd, RunJobRequest, local_job_id, run_remote_with};
use crate::jobs::runner::summary::{render_line, results_of, results_table};
use crate::jobs::runner::{Health, JobLog, JobRequest, LocalBoard, run_job};
use crate::multinode::group::GroupOptions;
use crate::multinode::group::GroupRunError;
use crate::multinode::group::print::{group_status, print_line, run_and_print, summary};
use crate::multinode::group::service::run_remote_group;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job definition (LAVA V2 YAML).
    pub job: PathBuf,
    /// The inventory device to run it on (not for a Multi-Node submission: its boards are
    /// chosen from the inventory by device_type and tags).
    #[arg(long, short = 'd')]
    pub device: Option<String>,
    #[command(flatten)]
    pub inventory: InventoryArg,
    /// The daemon's control socket (default: `labd.sock` in the inventory's state_dir).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Run in this process even if a daemon is running.
    #[arg(long)]
    pub local: bool,
    /// Print the LAVA log lines as they are (YAML), not a readable rendering.
    #[arg(long)]
    pub raw: bool,
    /// Job id (`LAVA_JOB_ID`); default: the current UTC time as digits.
    #[arg(long)]
    pub id: Option<String>,
}

/// Shows each line and keeps the results records.
struct Printer {
    raw: bool,
    results: Vec<LogValue>,
}

impl Printer {
    fn line(&mut self, line: &str) {
        if let Some(r) = results_of(line) {
            self.results.push(r);
        }
        let shown = if self.raw {
            Some(line.to_string())
        } else {
            render_line(line)
        };
        if let Some(s) = shown {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{s}");
        }
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let definition = std::fs::read_to_string(&args.job)
        .with_context(|| format!("cannot read the job {}", args.job.display()))?;
    let inv = args.inventory.load()?;
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(|| inv.worker.control_socket());
    if crate::multinode::group::is_group_text(&definition) {
        return run_group(&args, inv, definition, &socket).await;
    }
    let Some(device) = args.device.clone() else {
        anyhow::bail!(
            "--device is required for a single job (only a Multi-Node submission chooses its boards)"
        );
    };
    let id = args.id.clone().unwrap_or_else(local_job_id);
    let printer = Arc::new(Mutex::new(Printer {
        raw: args.raw,
        results: Vec::new(),
    }));
    let end = if args.local {
        None
    } else {
        let req = RunJobRequest {
            device: Some(device.clone()),
            definition: definition.clone(),
            id: Some(id.clone()),
        };
        let p = printer.clone();
        let remote = run_remote_with(
            &socket,
            &req,
            move |l| p.lock().unwrap_or_else(|e| e.into_inner()).line(l),
            |d| eprintln!("labd run-job: waiting for {device}: {d}"),
        );
        tokio::select! {
            r = remote => match r {
                Ok((_, end)) => Some(end),
                Err(ControlError::Connect { .. }) => {
                    eprintln!(
                        "labd run-job: no daemon at {}; running the job in this process",
                        socket.display()
                    );
                    None
                }
                Err(e) => return Err(e).context("the daemon could not run the job"),
            },
            _ = tokio::signal::ctrl_c() => {
                // Dropping the connection cancels the job in the daemon.
                eprintln!("labd run-job: interrupted; the daemon cancels the job");
                return Ok(ExitCode::from(2));
            }
        }
    };
    let end = match end {
        Some(e) => e,
        None => run_local(&device, Arc::new(inv), definition, id, printer.clone()).await?,
    };
    let results = printer
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .results
        .clone();
    println!();
    print!("{}", results_table(&results));
    let status = match end.health {
        Health::Complete => {
            println!("job: Complete");
            0
        }
        Health::Incomplete => {
            println!(
                "job: Incomplete ({}: {})",
                end.error_type,
                end.error_msg.trim_end()
            );
            1
        }
        Health::Canceled => {
            println!("job: Canceled");
            2
        }
    };
    Ok(ExitCode::from(status))
}

async fn run_local(
    device: &str,
    inv: Arc<crate::inventory::Inventory>,
    definition: String,
    id: String,
    printer: Arc<Mutex<Printer>>,
) -> anyhow::Result<JobEnd> {
    let work_dir = inv.worker.state_dir.join("jobs").join(&id);
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("cannot create {}", work_dir.display()))?;
    let local = LocalBoard::start(inv, device, None, None).await?;
    let p = printer.clone();
    let log = JobLog::new(
        Some(&work_dir.join("output.yaml")),
        Some(Box::new(move |l: &str| {
            p.lock().unwrap_or_else(|e| e.into_inner()).line(l)
        })),
    );
    let cancel = CancellationToken::new();
    let req = JobRequest {
        id,
        definition,
        device: local.setup.clone(),
        work_dir: work_dir.clone(),
        log,
        cancel: cancel.clone(),
    };
    let c = cancel.clone();
    let interrupt = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("labd run-job: interrupted; canceling the job");
            c.cancel();
        }
    });
    let report = run_job(&local.env, req).await;
    interrupt.abort();
    local.stop().await;
    eprintln!(
        "labd run-job: log in {}",
        work_dir.join("output.yaml").display()
    );
    Ok(JobEnd::from_report(&report))
}

/// A Multi-Node submission: through the daemon when one answers (it owns the consoles), else
/// in this process.
async fn run_group(
    args: &Args,
    inv: crate::inventory::Inventory,
    definition: String,
    socket: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    if args.device.is_some() {
        anyhow::bail!(
            "--device is not for a Multi-Node submission: its boards are chosen from the inventory by device_type and tags"
        );
    }
    let id = args.id.clone().unwrap_or_else(local_job_id);
    if !args.local {
        let req = RunJobRequest {
            device: None,
            definition: definition.clone(),
            id: Some(id.clone()),
        };
        let raw = args.raw;
        let remote = run_remote_group(
            socket,
            &req,
            |role, job, line| print_line(raw, role, job, line),
            |d| eprintln!("labd run-job: waiting for boards ({d})"),
        );
        tokio::select! {
            r = remote => match r {
                Ok(ends) => {
                    print!("{}", summary(&ends));
                    let _ = std::io::stdout().flush();
                    return Ok(ExitCode::from(group_status(&ends)));
                }
                Err(ControlError::Connect { .. }) => eprintln!(
                    "labd run-job: no daemon at {}; running the group in this process",
                    socket.display()
                ),
                Err(e) => return Err(e).context("labd run-job: the group cannot run"),
            },
            _ = tokio::signal::ctrl_c() => {
                // Dropping the connection cancels the group in the daemon.
                eprintln!("labd run-job: interrupted; the daemon cancels the group");
                return Ok(ExitCode::from(2));
            }
        }
    }
    let mut opts = GroupOptions::new(id);
    let cancel = opts.cancel.clone();
    let interrupt = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("labd run-job: interrupted; canceling the group");
            cancel.cancel();
        }
    });
    opts.patience = std::time::Duration::from_secs(600);
    let status = run_and_print(Arc::new(inv), &definition, opts, args.raw).await;
    interrupt.abort();
    match status {
        Ok(s) => Ok(ExitCode::from(s)),
        Err(GroupRunError::CanceledWaiting) => Ok(ExitCode::from(2)),
        Err(e) => Err(e).context("labd run-job: the group cannot run"),
    }
}
