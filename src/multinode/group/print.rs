//! What `labd run-job` and `labd demo` show for a group: every sub-job's log lines prefixed
//! with its role and id as they come, then each sub-job's results table and health.

use std::io::Write as _;
use std::sync::Arc;

use super::run::{GroupOptions, GroupRunError, SubJobEnd, run_group};
use crate::inventory::Inventory;
use crate::jobs::runner::Health;
use crate::jobs::runner::summary::{render_line, results_table};

/// The prefix of a sub-job's lines: `[role id]`.
pub fn prefix(role: &str, id: &str) -> String {
    format!("[{role} {id}]")
}

/// The summary after the run: per sub-job, its results table and how it ended.
pub fn summary(ends: &[SubJobEnd]) -> String {
    let mut t = String::new();
    for e in ends {
        t.push_str(&format!(
            "\n{} on {}: {}\n",
            prefix(&e.role, &e.job_id),
            e.device,
            health_text(e)
        ));
        t.push_str(&results_table(&e.report.results));
    }
    let complete = ends
        .iter()
        .filter(|e| e.report.health == Health::Complete)
        .count();
    t.push_str(&format!(
        "\ngroup: {complete} of {} sub-jobs Complete\n",
        ends.len()
    ));
    t
}

fn health_text(e: &SubJobEnd) -> String {
    match (&e.report.health, &e.report.error) {
        (Health::Complete, _) => "Complete".into(),
        (Health::Incomplete, Some(err)) => format!(
            "Incomplete ({}: {})",
            err.kind.as_str(),
            err.message.trim_end()
        ),
        (h, _) => {
            let s = h.as_str();
            let mut c = s.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        }
    }
}

/// Runs the group, printing as it goes; the exit status: 0 when every sub-job is Complete,
/// 2 when any was canceled, else 1.
pub async fn run_and_print(
    inv: Arc<Inventory>,
    submission: &str,
    mut opts: GroupOptions,
    raw: bool,
) -> Result<u8, GroupRunError> {
    opts.lines = Some(Arc::new(move |role: &str, id: &str, line: &str| {
        let shown = if raw {
            Some(line.to_string())
        } else {
            render_line(line)
        };
        if let Some(s) = shown {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{} {s}", prefix(role, id));
        }
    }));
    let ends = run_group(inv, submission, opts).await?;
    print!("{}", summary(&ends));
    let _ = std::io::stdout().flush();
    Ok(
        if ends.iter().all(|e| e.report.health == Health::Complete) {
            0
        } else if ends.iter().any(|e| e.report.health == Health::Canceled) {
            2
        } else {
            1
        },
    )
}
