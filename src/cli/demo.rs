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
    /// Stop by itself after this long (e.g. `30s`); default: run until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub exit_after: Option<Duration>,
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
    let lab = SimLab::build(args.boards, dir, remove)?;
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
        match args.exit_after {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = until => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    println!("\nlabd demo: stopping");
    running.stop().await;
    drop(lab);
    println!("labd demo: stopped");
    Ok(ExitCode::SUCCESS)
}
