//! A Multi-Node group run by the daemon: the `run-job` control request without a `device`.
//! With `labd agent` running the daemon owns the boards' consoles, so the group runs there, on
//! the daemon's consoles, power queues and board reservations (shared with master jobs and
//! single `run-job`s).
//!
//! Stream (one JSON object per line, after the request line):
//! - request: `{"request": "run-job", "definition": SUBMISSION, "id": BASE_ID?}`;
//! - reply: `{"ok": true, "job": BASE_ID, "group": true}`, or an error reply at once when the
//!   submission is not a valid group or the inventory can never hold it;
//! - `{"waiting": TEXT}` once if the group waits for busy boards;
//! - `{"line": {"role": R, "job": ID, "line": LINE}}` for every log line of every sub-job (a
//!   client that does not keep up loses lines, replaced per sub-job by a `labd: N log lines
//!   dropped` warning line: [`crate::jobs::runner::reply_stream`]);
//! - last `{"end": [SubJobSummary...]}` (in sub_id order), or `{"error": TEXT}` when the group
//!   could not start (a board's console not running...).
//!
//! The client closing the connection (Ctrl-C) cancels the group: every sub-job, or the wait.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::print::SubJobSummary;
use super::reserve::Reservations;
use super::run::{GroupOptions, check_group, is_group_text, run_group};
use crate::control::{Conn, ControlError, Request};
use crate::jobs::log::LogValue;
use crate::jobs::runner::RunEnv;
use crate::jobs::runner::reply_stream::{ReplyStream, dropped_log_line};
use crate::jobs::runner::service::{
    RunJobRequest, cancel_on_hangup, is_safe_id, local_job_id, send_request,
};
use crate::jobs::runner::summary::results_of;

/// How long a group in the daemon waits for busy boards without a `wait_timeout_ms` (the
/// client may give up sooner).
pub const DAEMON_PATIENCE: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Serialize, Deserialize)]
struct SubLine {
    role: String,
    job: String,
    line: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum GroupMsg {
    Waiting(String),
    Line(SubLine),
    End(Vec<SubJobSummary>),
    Error(String),
}

/// One line of a group's reply stream, for [`crate::jobs::runner::service::fuzz_reply_stream`].
pub(crate) fn fuzz_stream_line(l: &str) {
    if let Ok(m) = serde_json::from_str::<GroupMsg>(l) {
        assert!(serde_json::to_string(&m).is_ok());
    }
}

/// Serves a group `run-job` request in the daemon: `env` is the daemon's (consoles, power,
/// images, inventory), `reservations` the daemon's boards.
pub async fn serve(env: RunEnv, reservations: Reservations, req: Request, mut conn: Conn) {
    let body: RunJobRequest = match req.parse() {
        Ok(b) => b,
        Err(e) => {
            let _ = conn.reply_error(&e).await;
            return;
        }
    };
    let Some(inv) = env.inventory.clone() else {
        let _ = conn
            .reply_error(&ControlError::Remote("labd has no inventory".into()))
            .await;
        return;
    };
    let id = body.id.clone().unwrap_or_else(local_job_id);
    if !is_safe_id(&id) {
        let e = ControlError::BadRequest(format!("run-job: job id {id:?} is not a safe name"));
        let _ = conn.reply_error(&e).await;
        return;
    }
    if !is_group_text(&body.definition) {
        let e = ControlError::BadRequest(
            "run-job: no device, and the definition is not a Multi-Node submission (protocols: lava-multinode: roles:)".into(),
        );
        let _ = conn.reply_error(&e).await;
        return;
    }
    if let Err(e) = check_group(&inv, &body.definition) {
        let _ = conn.reply_error(&ControlError::Remote(e.to_string())).await;
        return;
    }
    tracing::info!(group = %id, peer = %req.peer.user, "run-job request for a Multi-Node group");
    if conn
        .reply_ok(serde_json::json!({"job": id, "group": true}))
        .await
        .is_err()
    {
        return;
    }
    let (rd, wr) = conn.stream.into_split();
    let cancel = CancellationToken::new();
    let jobs_dir = inv.worker.state_dir.join("jobs");
    let gone = cancel.clone();
    // The client not reading never slows the sub-jobs (lines are dropped, then counted per
    // sub-job); the client going away (EOF or error on its side) cancels the group.
    let stream = ReplyStream::start(
        wr,
        Box::new(move |first, n| dropped_marker(&jobs_dir, first, n)),
        same_sub_job,
        move || gone.cancel(),
    );
    let mut opts = GroupOptions::new(id);
    opts.daemon = Some(env);
    opts.reservations = reservations;
    opts.patience = Some(body.wait_timeout().unwrap_or(DAEMON_PATIENCE));
    opts.cancel = cancel.clone();
    let lines = stream.lines();
    opts.lines = Some(Arc::new(move |role: &str, job: &str, line: &str| {
        lines.send(GroupMsg::Line(SubLine {
            role: role.into(),
            job: job.into(),
            line: line.into(),
        }));
    }));
    let notice = stream.control();
    opts.on_wait = Some(Arc::new(move |detail: &str| {
        notice(GroupMsg::Waiting(detail.into()))
    }));
    let definition = body.definition;
    let runner = tokio::spawn(async move { run_group(inv, &definition, opts).await });
    let watcher = cancel_on_hangup(rd, cancel.clone());
    let last = match runner.await {
        Ok(Ok(ends)) => GroupMsg::End(ends.iter().map(SubJobSummary::from).collect()),
        Ok(Err(e)) => GroupMsg::Error(e.to_string()),
        Err(e) => {
            tracing::error!(error = %e, "group task failed");
            GroupMsg::Error(format!("the group's task failed: {e}"))
        }
    };
    stream.finish(Some(last)).await;
    watcher.abort();
}

/// Drops are counted per sub-job.
fn same_sub_job(a: &GroupMsg, b: &GroupMsg) -> bool {
    match (a, b) {
        (GroupMsg::Line(a), GroupMsg::Line(b)) => a.job == b.job,
        _ => false,
    }
}

/// The line standing for `n` dropped lines of `first`'s sub-job, whose log is
/// `<jobs_dir>/<job>/output.yaml`.
fn dropped_marker(jobs_dir: &Path, first: &GroupMsg, n: u64) -> GroupMsg {
    let (role, job) = match first {
        GroupMsg::Line(s) => (s.role.clone(), s.job.clone()),
        _ => (String::from("*"), String::new()),
    };
    let file = jobs_dir.join(&job).join("output.yaml");
    GroupMsg::Line(SubLine {
        line: dropped_log_line(n, &file),
        role,
        job,
    })
}

/// The client side: sends the submission to the daemon at `socket`, calls `on_line(role, id,
/// line)` for every sub-job's log line and `on_wait` if the group waits for boards, and
/// returns every sub-job's end with its results. Dropping the future closes the connection,
/// which cancels the group.
pub async fn run_remote_group(
    socket: &Path,
    req: &RunJobRequest,
    mut on_line: impl FnMut(&str, &str, &str),
    mut on_wait: impl FnMut(&str),
) -> Result<Vec<SubJobSummary>, ControlError> {
    let (_, mut lines) = send_request(socket, req).await?;
    let mut results: BTreeMap<String, Vec<LogValue>> = BTreeMap::new();
    while let Some(l) = lines.next_line().await? {
        match serde_json::from_str::<GroupMsg>(&l) {
            Ok(GroupMsg::Waiting(d)) => on_wait(&d),
            Ok(GroupMsg::Line(s)) => {
                if let Some(r) = results_of(&s.line) {
                    results.entry(s.job.clone()).or_default().push(r);
                }
                on_line(&s.role, &s.job, &s.line);
            }
            Ok(GroupMsg::End(mut ends)) => {
                for e in &mut ends {
                    e.results = results.remove(&e.job_id).unwrap_or_default();
                }
                return Ok(ends);
            }
            Ok(GroupMsg::Error(e)) => return Err(ControlError::Remote(e)),
            Err(e) => return Err(ControlError::BadReply(format!("{e}: {l}"))),
        }
    }
    Err(ControlError::BadReply(
        "the daemon closed the connection before the group ended".into(),
    ))
}
