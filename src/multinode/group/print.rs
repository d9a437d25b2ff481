//! What `labd run-job` and `labd demo` show for a group: every sub-job's log lines prefixed
//! with its role and id as they come, then each sub-job's results table and health. The same
//! output whether the group ran in this process or in the daemon.

use std::io::Write as _;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::run::{GroupOptions, GroupRunError, SubJobEnd, run_group};
use crate::inventory::Inventory;
use crate::jobs::log::LogValue;
use crate::jobs::runner::Health;
use crate::jobs::runner::service::JobEnd;
use crate::jobs::runner::summary::{render_line, results_table};

/// The prefix of a sub-job's lines: `[role id]`.
pub fn prefix(role: &str, id: &str) -> String {
    format!("[{role} {id}]")
}

/// How one sub-job ended, as printed (and as the daemon sends it, without the results, which
/// the client collects from the log lines).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubJobSummary {
    pub role: String,
    pub job_id: String,
    pub device: String,
    pub end: JobEnd,
    #[serde(skip)]
    pub results: Vec<LogValue>,
}

impl From<&SubJobEnd> for SubJobSummary {
    fn from(e: &SubJobEnd) -> Self {
        Self {
            role: e.role.clone(),
            job_id: e.job_id.clone(),
            device: e.device.to_string(),
            end: JobEnd::from_report(&e.report),
            results: e.report.results.clone(),
        }
    }
}

/// Shows one log line of a sub-job (rendered, or raw YAML).
pub fn print_line(raw: bool, role: &str, id: &str, line: &str) {
    let shown = if raw {
        Some(line.to_string())
    } else {
        render_line(line)
    };
    if let Some(s) = shown {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{} {s}", prefix(role, id));
    }
}

/// The summary after the run: per sub-job, its results table and how it ended.
pub fn summary(ends: &[SubJobSummary]) -> String {
    let mut t = String::new();
    for e in ends {
        t.push_str(&format!(
            "\n{} on {}: {}\n",
            prefix(&e.role, &e.job_id),
            e.device,
            health_text(&e.end)
        ));
        t.push_str(&results_table(&e.results));
    }
    let complete = ends
        .iter()
        .filter(|e| e.end.health == Health::Complete)
        .count();
    t.push_str(&format!(
        "\ngroup: {complete} of {} sub-jobs Complete\n",
        ends.len()
    ));
    t
}

fn health_text(e: &JobEnd) -> String {
    match e.health {
        Health::Complete => "Complete".into(),
        Health::Incomplete => format!("Incomplete ({}: {})", e.error_type, e.error_msg.trim_end()),
        Health::Canceled => match e.error_msg.strip_prefix("The job was canceled: ") {
            Some(reason) => format!("Canceled ({})", reason.trim_end()),
            None => "Canceled".into(),
        },
    }
}

/// The exit status of a group: 0 when every sub-job is Complete, 1 when one ended Incomplete
/// (also when an essential role's failure canceled the others), else 2 (canceled).
pub fn group_status(ends: &[SubJobSummary]) -> u8 {
    if !ends.is_empty() && ends.iter().all(|e| e.end.health == Health::Complete) {
        0
    } else if ends.iter().any(|e| e.end.health == Health::Incomplete) {
        1
    } else {
        2
    }
}

/// Runs the group in this process, printing as it goes; returns the exit status
/// ([`group_status`]).
pub async fn run_and_print(
    inv: Arc<Inventory>,
    submission: &str,
    mut opts: GroupOptions,
    raw: bool,
) -> Result<u8, GroupRunError> {
    opts.lines = Some(Arc::new(move |role: &str, id: &str, line: &str| {
        print_line(raw, role, id, line)
    }));
    opts.on_wait = Some(Arc::new(|detail: &str| {
        eprintln!("labd run-job: waiting for boards ({detail})");
    }));
    let ends: Vec<SubJobSummary> = run_group(inv, submission, opts)
        .await?
        .iter()
        .map(SubJobSummary::from)
        .collect();
    print!("{}", summary(&ends));
    let _ = std::io::stdout().flush();
    Ok(group_status(&ends))
}
