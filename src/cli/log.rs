//! `labd log DEVICE`: print a board's console journal (works without the daemon).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;

use super::InventoryArg;
use crate::console::journal::reader::JournalReader;
use crate::console::journal::{Record, RecordKind};
use crate::ids::DeviceName;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The device (inventory name).
    pub device: String,
    #[command(flatten)]
    pub inventory: InventoryArg,
    /// Read journals from this directory instead of the inventory's `state_dir/journal`.
    #[arg(long)]
    pub journal_dir: Option<PathBuf>,
    /// Keep printing what is appended (across rotations) until interrupted.
    #[arg(short, long)]
    pub follow: bool,
    /// Only records from this time on: RFC 3339 (`2026-01-31T12:00:00Z`,
    /// `2026-01-31 12:00:00` is UTC) or a duration ago (`10m`, `2h 30m`).
    #[arg(long)]
    pub since: Option<String>,
    /// Also show input sent to the board and who sent it.
    #[arg(long)]
    pub input: bool,
    /// One line per record with timestamps, kind and escaped data (for scripts).
    #[arg(long)]
    pub records: bool,
}

/// Parses `--since`.
pub fn parse_since(s: &str) -> anyhow::Result<SystemTime> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(SystemTime::from(t));
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(SystemTime::now() - d);
    }
    anyhow::bail!(
        "--since {s:?}: expected a time such as 2026-01-31T12:00:00Z or a duration such as 10m"
    )
}

fn stamp(r: &Record) -> String {
    humantime::format_rfc3339_millis(r.wall()).to_string()
}

fn escaped(data: &[u8]) -> String {
    data.escape_ascii().to_string()
}

struct Printer {
    input: bool,
    records: bool,
    at_line_start: bool,
}

impl Printer {
    fn print(&mut self, out: &mut impl std::io::Write, r: &Record) -> std::io::Result<()> {
        if self.records {
            let who = r
                .who
                .as_deref()
                .map(|w| format!(" {w}"))
                .unwrap_or_default();
            return writeln!(
                out,
                "{} {}{who} \"{}\"",
                stamp(r),
                r.kind.as_str(),
                escaped(&r.data)
            );
        }
        let note = match r.kind {
            RecordKind::Output => {
                out.write_all(&r.data)?;
                if let Some(&last) = r.data.last() {
                    self.at_line_start = last == b'\n';
                }
                return Ok(());
            }
            RecordKind::Marker => String::from_utf8_lossy(&r.data).into_owned(),
            RecordKind::Input if self.input => format!(
                "input from {}: \"{}\"",
                r.who.as_deref().unwrap_or("?"),
                escaped(&r.data)
            ),
            RecordKind::Break if self.input => {
                format!("BREAK from {}", r.who.as_deref().unwrap_or("?"))
            }
            RecordKind::Input | RecordKind::Break => return Ok(()),
        };
        if !self.at_line_start {
            out.write_all(b"\n")?;
        }
        writeln!(out, "[labd {}] {note}", stamp(r))?;
        self.at_line_start = true;
        Ok(())
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let device = DeviceName::new(args.device.clone())
        .with_context(|| format!("{:?} is not a device name", args.device))?;
    let journal_dir = match &args.journal_dir {
        Some(d) => d.clone(),
        None => {
            let inv = args.inventory.load()?;
            if inv.device(device.as_str()).is_none()
                && !JournalReader::exists(&inv.worker.journal_dir(), &device)
            {
                anyhow::bail!(
                    "{}: no device {device} in the inventory and no journal for it",
                    args.inventory.config.display()
                );
            }
            inv.worker.journal_dir()
        }
    };
    if !JournalReader::exists(&journal_dir, &device) && !args.follow {
        anyhow::bail!(
            "no journal for {device} in {} (has the daemon run with this device?)",
            journal_dir.display()
        );
    }
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let follow = args.follow;
    let mut printer = Printer {
        input: args.input,
        records: args.records,
        at_line_start: true,
    };
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut reader = JournalReader::open(&journal_dir, &device, since);
        let since_us = since.map(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64)
        });
        let stdout = std::io::stdout();
        loop {
            let records = reader.poll()?;
            let mut out = stdout.lock();
            for r in records {
                if since_us.is_some_and(|s| r.wall_us < s) {
                    continue;
                }
                if let Err(e) = printer.print(&mut out, &r) {
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        return Ok(());
                    }
                    return Err(e.into());
                }
            }
            if out.flush().is_err() || !follow {
                return Ok(());
            }
            drop(out);
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await??;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_times_and_durations() {
        let t = parse_since("2026-01-31T12:00:00Z").unwrap();
        assert_eq!(
            t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
            1_769_860_800
        );
        assert_eq!(parse_since("2026-01-31 12:00:00").unwrap(), t);
        let ago = parse_since("10m").unwrap();
        let d = SystemTime::now().duration_since(ago).unwrap();
        assert!(d >= Duration::from_secs(599) && d < Duration::from_secs(610));
        assert!(parse_since("yesterday-ish").is_err());
    }
}
