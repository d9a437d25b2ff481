//! `labd demo`: a simulated lab with no hardware and no root.
//!
//! The simulated lab of [`crate::daemon::simlab`] (boards on pseudo-terminals, a simulated PDU
//! powering them, an inventory for both in a temporary state directory) and the daemon
//! in-process. The boards are switched on through the daemon's power queue, their boot logs
//! scroll by, and the user is told how to attach and how to power-cycle a board.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::console::{ConsoleEvent, SubscribeOptions};
use crate::daemon::RunningDaemon;
use crate::daemon::simlab::SimLab;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many simulated boards.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub boards: u8,
    /// State directory (default: a fresh temporary directory, removed at the end).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the daemon up this long (e.g. `30s`) before the demo jobs; default: until the
    /// boards have booted (with `--stay`: until Ctrl-C).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub exit_after: Option<Duration>,
    /// Keep the daemon running until Ctrl-C before the demo jobs.
    #[arg(long)]
    pub stay: bool,
    /// Do not run the demo jobs (the single job, then the Multi-Node group).
    #[arg(long)]
    pub no_jobs: bool,
    /// Do not print the boards' console output here.
    #[arg(long)]
    pub quiet: bool,
}

fn instructions(lab: &SimLab, exe: &str) -> String {
    let inv = lab.inventory_path();
    let mut t = format!(
        "labd demo: {} simulated boards on pseudo-terminals, powered by the simulated PDU {}; state in {}\n\n",
        lab.boards.len(),
        lab.pdu_name,
        lab.state_dir.display()
    );
    for b in &lab.boards {
        let _ = writeln!(t, "  {:<16} outlet {}  {}", b.name, b.outlet, b.note);
    }
    let first = &lab.boards[0];
    let _ = write!(
        t,
        "\nAttach to a console (type ~. at the start of a line to detach):\n  {exe} console {} -c {}\n\
         Or with telnet, as LAVA would:   telnet 127.0.0.1 {}\n\
         Read a journal:                  {exe} log {} -c {} --follow\n\
         Daemon status:                   {exe} status -c {}\n\
         \n\
         Power-cycle a board through the daemon's PDU queue, and watch it boot again in its console\n\
         (here, or attached in another terminal):\n  {exe} power {} reboot -c {}\n\
         Off, on and the outlet's state:  {exe} power {} off|on|status -c {}\n\
         The same through pdudaemon's API, as a LAVA device dictionary would:\n  \
         curl 'http://127.0.0.1:{}/power/control/reboot?hostname={}&port={}&delay=2'\n\
         Stop the demo with Ctrl-C.\n",
        first.name,
        inv.display(),
        first.telnet_port,
        first.name,
        inv.display(),
        inv.display(),
        first.name,
        inv.display(),
        first.name,
        inv.display(),
        lab.pdudaemon_port,
        lab.pdu_name,
        first.outlet,
    );
    t
}

/// Prints each board's output line by line, prefixed with its name.
fn spawn_tail(running: &RunningDaemon, name: String) {
    let Some(console) = running.services().consoles.get(&name) else {
        return;
    };
    tokio::spawn(async move {
        let Ok(mut sub) = console
            .subscribe(SubscribeOptions::job(format!("demo:{name}")))
            .await
        else {
            return;
        };
        let mut line = Vec::new();
        while let Some(ev) = sub.recv().await {
            let ConsoleEvent::Data(d) = ev else { continue };
            for &b in d.iter() {
                match b {
                    b'\n' => {
                        let text = String::from_utf8_lossy(&line).into_owned();
                        line.clear();
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(out, "[{name}] {text}");
                        let _ = out.flush();
                    }
                    b'\r' | 0x08 => {}
                    b if b < 0x20 => {}
                    b => line.push(b),
                }
            }
        }
    });
}

fn default_dir() -> PathBuf {
    std::env::temp_dir().join(format!("labd-demo-{}", std::process::id()))
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (dir, remove) = match &args.dir {
        Some(d) => (d.clone(), false),
        None => (default_dir(), true),
    };
    let mut lab = SimLab::build(args.boards, dir, remove)?;
    lab.serve_pdu().await?;
    let running = lab.start().await?;
    let exe = std::env::args()
        .next()
        .filter(|a| Path::new(a).is_absolute() || a.contains('/'))
        .unwrap_or_else(|| "labd".into());
    println!("{}", instructions(&lab, &exe));
    if !args.quiet {
        for b in &lab.boards {
            spawn_tail(&running, b.name.clone());
        }
    }
    for r in lab
        .power_on_all(running.services(), Duration::from_millis(700))
        .await
    {
        if let Err(e) = r {
            eprintln!("labd demo: {e}");
        }
    }
    let until = async {
        match (args.exit_after, args.stay) {
            (Some(d), _) => tokio::time::sleep(d).await,
            (None, true) => std::future::pending().await,
            (None, false) => tokio::time::sleep(Duration::from_secs(8)).await,
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // Ctrl-C or SIGTERM ends the demo; only the end of the wait goes on to the jobs.
    let interrupted = tokio::select! {
        _ = until => false,
        _ = tokio::signal::ctrl_c() => true,
        _ = term.recv() => true,
    };
    println!("\nlabd demo: stopping the daemon");
    running.stop().await;
    let status = if args.no_jobs || interrupted {
        0
    } else {
        // The SIGTERM handler above stays installed for the life of the process (the default
        // action is gone), so the jobs must watch for it themselves.
        let stop = CancellationToken::new();
        let watch = {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                eprintln!("labd demo: interrupted; cancelling the jobs");
                stop.cancel();
            })
        };
        let status = demo_jobs(&lab, &stop).await;
        watch.abort();
        match status {
            _ if stop.is_cancelled() => 2,
            s => s?,
        }
    };
    drop(lab);
    println!("labd demo: stopped");
    Ok(ExitCode::from(status))
}

/// The demo job on the first board.
const DEMO_JOB: &str = include_str!("../../examples/jobs/demo-sim-uboot.yaml");
/// The Multi-Node group on the group boards.
const DEMO_GROUP: &str = include_str!("../../examples/jobs/demo-group.yaml");

/// Runs labd's main job (the single demo job, then the Multi-Node group) on the lab, in this
/// process as `labd run-job` does without a daemon; 0 when both completed. `stop` cancels
/// whichever is running (and skips the group).
async fn demo_jobs(lab: &SimLab, stop: &CancellationToken) -> anyhow::Result<u8> {
    use crate::jobs::runner::summary::{render_line, results_of, results_table};
    use crate::jobs::runner::{Health, JobLog, JobRequest, LocalBoard, run_job};
    use std::sync::{Arc, Mutex};

    let inv = Arc::new(crate::inventory::Inventory::load(&lab.inventory_path())?);
    let first = &lab.boards[0].name;
    println!(
        "\nlabd demo: the demo job (examples/jobs/demo-sim-uboot.yaml) on {first}: power on, \
         interrupt U-Boot, boot, log in, run a test definition\n"
    );
    let work_dir = inv.worker.state_dir.join("jobs").join("1");
    std::fs::create_dir_all(&work_dir)?;
    let local = LocalBoard::start(inv.clone(), first, None, None).await?;
    let results = Arc::new(Mutex::new(Vec::new()));
    let r = results.clone();
    let prefix = format!("[job 1 {first}]");
    let log = JobLog::new(
        Some(&work_dir.join("output.yaml")),
        Some(Box::new(move |l: &str| {
            if let Some(v) = results_of(l) {
                r.lock().unwrap_or_else(|e| e.into_inner()).push(v);
            }
            if let Some(s) = render_line(l) {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{prefix} {s}");
            }
        })),
    );
    let req = JobRequest {
        id: "1".into(),
        definition: DEMO_JOB.into(),
        device: local.setup.clone(),
        work_dir,
        log,
        cancel: stop.child_token(),
    };
    let report = run_job(&local.env, req).await;
    local.stop().await;
    let single = report.health == Health::Complete;
    println!();
    print!(
        "{}",
        results_table(&results.lock().unwrap_or_else(|e| e.into_inner()))
    );
    println!("demo job: {}", report.health.as_str());
    if stop.is_cancelled() {
        return Ok(2);
    }

    println!(
        "\nlabd demo: the Multi-Node group (examples/jobs/demo-group.yaml): two servers, a \
         client that boots a slave board after the lava_ms_* handshake, labd's own coordinator\n"
    );
    let mut opts = crate::multinode::group::GroupOptions::new("10");
    opts.cancel = stop.child_token();
    let group = crate::multinode::group::print::run_and_print(inv, DEMO_GROUP, opts, false).await?;
    Ok(if single && group == 0 { 0 } else { 1 })
}
