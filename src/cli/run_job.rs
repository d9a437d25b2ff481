//! `labd run-job JOB.yaml [--device NAME]`: runs a LAVA job with no master (a Multi-Node
//! submission runs as a whole group on boards chosen from the inventory: `multinode::group`).
//! With a daemon running (its control socket answers), the daemon runs the job or the group
//! on its own consoles, power and board reservations and streams the log back; otherwise (or
//! with `--local`, refused while a daemon answers) this process starts the boards' consoles
//! and power itself, holding each board's lock file (`state_dir/locks/boards`) so two such
//! runs, or such a run and the daemon, never use a board at the same time.
//! `--wait-timeout` bounds the wait for busy boards (default: no limit, as LAVA's scheduler).
//! The log is shown as it comes, then a results table; the exit status is 0 for Complete, 1
//! for Incomplete, 2 for Canceled (for a group: 1 when any sub-job is Incomplete).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::InventoryArg;
use crate::control::{ControlClient, ControlError};
use crate::jobs::log::LogValue;
use crate::jobs::runner::service::{JobEnd, RunJobRequest, local_job_id, run_remote_with};
use crate::jobs::runner::summary::{render_line, results_of, results_table};
use crate::jobs::runner::{
    BoardFiles, BoardLocks, Health, JobLog, JobRequest, LocalBoard, run_job,
};
use crate::multinode::group::GroupOptions;
use crate::multinode::group::print::{group_status, print_line, run_and_print, summary};
use crate::multinode::group::service::run_remote_group;
use crate::multinode::group::{GroupRunError, Reservations};

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
    /// Run in this process, not through the daemon (refused while a daemon answers on the
    /// control socket: it owns the boards' consoles and power).
    #[arg(long)]
    pub local: bool,
    /// Give up when the board (or a group's boards) is not free within this time (`90s`,
    /// `10m`); default: wait until it is.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub wait_timeout: Option<Duration>,
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
    if args.local {
        refuse_beside_daemon(&socket).await?;
    }
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
            wait_timeout_ms: wait_ms(args.wait_timeout),
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
        None => {
            let local = run_local(
                &device,
                Arc::new(inv),
                definition,
                id,
                args.wait_timeout,
                printer.clone(),
            );
            match local.await? {
                Some(e) => e,
                // Interrupted while waiting for the board.
                None => return Ok(ExitCode::from(2)),
            }
        }
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

/// `--local` next to a daemon would open the consoles and switch the boards the daemon owns
/// (its reservations do not cover this process): refuse while one answers on `socket`. A
/// socket file nobody listens on (a stopped daemon) is no daemon.
async fn refuse_beside_daemon(socket: &Path) -> anyhow::Result<()> {
    let client = ControlClient::new(socket);
    let ask = client.request(serde_json::json!({"request": "ping"}));
    match tokio::time::timeout(Duration::from_secs(5), ask).await {
        Ok(Err(ControlError::Connect { .. })) => Ok(()),
        // It answered, or accepted the connection (busy): a daemon is there.
        _ => anyhow::bail!(
            "--local: a labd daemon answers on {} and owns this inventory's consoles and \
             boards; run the job without --local (the daemon schedules it on its boards), or \
             stop the daemon first",
            socket.display()
        ),
    }
}

/// The request's form of `--wait-timeout`.
fn wait_ms(t: Option<Duration>) -> Option<u64> {
    t.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
}

/// Runs the job in this process, holding its board (lock file included) for the whole run;
/// `None` when interrupted while waiting for the board.
async fn run_local(
    device: &str,
    inv: Arc<crate::inventory::Inventory>,
    definition: String,
    id: String,
    wait_timeout: Option<Duration>,
    printer: Arc<Mutex<Printer>>,
) -> anyhow::Result<Option<JobEnd>> {
    let locks: Box<dyn BoardLocks> = Box::new(Reservations::with_files(BoardFiles::for_state_dir(
        &inv.worker.state_dir,
    )));
    // An unknown device holds nothing: `LocalBoard::start` refuses it, naming the devices.
    let name = inv.device(device).map(|d| d.name().clone());
    let _hold = match name {
        Some(name) => {
            let on_wait = Box::new(move |d: String| {
                eprintln!("labd run-job: waiting for {device}: {d}");
            });
            let hold = locks.hold(format!("job {id}"), name, wait_timeout, on_wait);
            tokio::select! {
                h = hold => Some(h.with_context(|| format!("board {device}"))?),
                _ = tokio::signal::ctrl_c() => {
                    eprintln!("labd run-job: interrupted while waiting for {device}");
                    return Ok(None);
                }
            }
        }
        None => None,
    };
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
    Ok(Some(JobEnd::from_report(&report)))
}

/// A Multi-Node submission: through the daemon when one answers (it owns the consoles), else
/// in this process, holding the boards' lock files.
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
            wait_timeout_ms: wait_ms(args.wait_timeout),
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
    opts.reservations = Reservations::with_files(BoardFiles::for_state_dir(&inv.worker.state_dir));
    opts.patience = args.wait_timeout;
    let cancel = opts.cancel.clone();
    let interrupt = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("labd run-job: interrupted; canceling the group");
            cancel.cancel();
        }
    });
    let status = run_and_print(Arc::new(inv), &definition, opts, args.raw).await;
    interrupt.abort();
    match status {
        Ok(s) => Ok(ExitCode::from(s)),
        Err(GroupRunError::CanceledWaiting) => Ok(ExitCode::from(2)),
        Err(e) => Err(e).context("labd run-job: the group cannot run"),
    }
}
