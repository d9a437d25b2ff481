//! One task per job: runs the executor (or finishes a job restored from disk), feeds its log to
//! the on-disk buffer, uploads the buffer as lava-run's sender does, and records the outcome.
//! The main loop posts FINISHED once the task says the job is `Ready` (every line uploaded).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, warn};

use super::client::MasterClient;
use super::error::MasterError;
use super::executor::{JobExecutor, JobLogSink, JobOutcome, JobResult, LogMsg, MasterJob};
use super::logbuf::{self, Durable, Mark};
use super::metrics::LinkMetrics;
use super::store::{JobRecord, JobStore};
use super::wire::MAX_RECORDS;
use crate::ids::JobId;

/// lava-worker's FINISH_MAX_DURATION: how long a canceled job may take to stop.
pub const CANCEL_GRACE: Duration = Duration::from_secs(120);

/// Consecutive refused uploads of one batch (other than "master unreachable") after which the
/// batch is dropped, so one line the server cannot parse does not hold the job forever.
const MAX_REFUSED_UPLOADS: u32 = 10;

/// Where a job is in its life on this worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// Over; its log is still being uploaded.
    Draining,
    /// Over and every log line is with the master (or dropped): FINISHED can go.
    Ready(JobOutcome),
}

/// What the main loop keeps about a job.
pub struct JobHandle {
    pub token: String,
    pub cancel: CancellationToken,
    pub phase: watch::Receiver<Phase>,
}

/// Shared by every job task.
pub struct JobCtx {
    pub client: MasterClient,
    pub store: JobStore,
    pub job_log_interval: Duration,
    pub metrics: LinkMetrics,
    /// Told when a job becomes Ready.
    pub wake: Arc<Notify>,
    /// Log writer threads, awaited on shutdown so a restarted link never shares a file with
    /// a writer of the previous one.
    pub writers: Mutex<Vec<JoinHandle<()>>>,
}

/// Runs a blocking job-table operation off the async executor.
pub async fn blocking<T, F>(f: F) -> Result<T, MasterError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, MasterError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(MasterError::Task(e.to_string())))
}

/// Aborts a task when dropped, so aborting a job task also stops its executor.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the task of a job. `run` is the executor and job for a job to execute; `None` for a
/// job restored from disk (its outcome is known, or it was lost by a restart).
pub fn spawn_job(
    ctx: Arc<JobCtx>,
    tasks: &mut tokio::task::JoinSet<()>,
    rec: JobRecord,
    run: Option<(Arc<dyn JobExecutor>, MasterJob)>,
) -> JobHandle {
    let cancel = CancellationToken::new();
    let (phase_tx, phase_rx) = watch::channel(Phase::Running);
    let handle = JobHandle {
        token: rec.token.clone(),
        cancel: cancel.clone(),
        phase: phase_rx,
    };
    let span = tracing::info_span!("job", job = %rec.id);
    tasks.spawn(job_task(ctx, rec, run, cancel, phase_tx).instrument(span));
    handle
}

async fn job_task(
    ctx: Arc<JobCtx>,
    mut rec: JobRecord,
    run: Option<(Arc<dyn JobExecutor>, MasterJob)>,
    cancel: CancellationToken,
    phase: watch::Sender<Phase>,
) {
    let dir = ctx.store.job_dir(&rec.id);
    let opened = {
        let dir = dir.clone();
        blocking(move || Ok((logbuf::open_for_append(&dir)?, logbuf::read_ack(&dir)?))).await
    };
    let ((file, end), mut acked) = match opened {
        Ok(v) => v,
        Err(e) => {
            // Without its log buffer the job cannot be run or drained; report what we know.
            error!("{e}; the job's log is lost");
            let outcome = rec
                .outcome
                .clone()
                .unwrap_or_else(|| lost_outcome(&e.to_string()));
            let _ = phase.send(Phase::Ready(outcome));
            ctx.wake.notify_one();
            return;
        }
    };
    if acked.bytes > end.bytes || acked.lines > end.lines {
        warn!(
            "acknowledged mark {acked:?} is past the end of the log {end:?}; resending from the start"
        );
        acked = Mark::default();
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let (durable_tx, durable_rx) = watch::channel(Durable { end, closed: false });
    let log_path = dir.join(logbuf::LOG_FILE);
    let writer = tokio::task::spawn_blocking(move || {
        logbuf::run_writer(log_path, file, end, rx, durable_tx)
    });
    if let Ok(mut w) = ctx.writers.lock() {
        w.retain(|h| !h.is_finished());
        w.push(writer);
    }
    let uploader = AbortOnDrop(tokio::spawn(
        upload_loop(
            ctx.clone(),
            rec.id.clone(),
            rec.token.clone(),
            dir.clone(),
            acked,
            durable_rx,
            cancel.clone(),
        )
        .in_current_span(),
    ));

    let outcome = match (rec.outcome.clone(), run) {
        (Some(o), _) => o,
        (None, Some((executor, job))) => {
            ctx.metrics.started.inc();
            // Decremented on drop, so an aborted task (shutdown) does not leave it counted.
            struct Running(crate::metrics::Gauge);
            impl Drop for Running {
                fn drop(&mut self) {
                    self.0.add(-1);
                }
            }
            ctx.metrics.running.add(1);
            let _running = Running(ctx.metrics.running.clone());
            execute(executor, job, JobLogSink::new(tx.clone()), cancel.clone()).await
        }
        (None, None) => {
            let why = "labd restarted while the job was running; its progress on the board is lost";
            warn!("{why}: reporting it incomplete");
            let _ = tx.send(LogMsg::Line(exception_line(why)));
            lost_outcome(why)
        }
    };
    info!(result = outcome.health(), "job over");

    // Every line the job produced is made durable before its outcome is: after a crash, a
    // recorded outcome always comes with its complete log.
    let (ack_tx, ack_rx) = oneshot::channel();
    let _ = tx.send(LogMsg::Close(ack_tx));
    drop(tx);
    let _ = ack_rx.await;
    if rec.outcome.is_none() {
        rec.outcome = Some(outcome.clone());
        let store = ctx.store.clone();
        let r = rec.clone();
        if let Err(e) = blocking(move || store.save(&r)).await {
            error!("{e}; the outcome is kept in memory only");
        }
    }
    let _ = phase.send(Phase::Draining);
    let mut uploader = uploader;
    let _ = (&mut uploader.0).await;
    let _ = phase.send(Phase::Ready(outcome));
    ctx.wake.notify_one();
}

/// Runs the executor in its own task (a panic becomes a `Bug` outcome) and enforces the cancel
/// grace period.
async fn execute(
    executor: Arc<dyn JobExecutor>,
    job: MasterJob,
    sink: JobLogSink,
    cancel: CancellationToken,
) -> JobOutcome {
    let fut = executor.run(job, sink, cancel.clone());
    let mut task = AbortOnDrop(tokio::spawn(fut.in_current_span()));
    let grace = async {
        cancel.cancelled().await;
        tokio::time::sleep(CANCEL_GRACE).await;
    };
    tokio::select! {
        r = &mut task.0 => match r {
            Ok(o) => o,
            Err(e) => {
                error!("the job runner failed: {e}");
                JobOutcome {
                    result: JobResult::Fail,
                    error_type: "Bug".into(),
                    errors: format!("labd's job runner failed: {e}"),
                    description: String::new(),
                }
            }
        },
        _ = grace => {
            error!("the job did not stop within {CANCEL_GRACE:?} of the cancel; abandoning it");
            JobOutcome {
                result: JobResult::Fail,
                error_type: "Canceled".into(),
                errors: format!("the job did not stop within {} s of the cancel request", CANCEL_GRACE.as_secs()),
                description: String::new(),
            }
        }
    }
}

fn lost_outcome(why: &str) -> JobOutcome {
    JobOutcome {
        result: JobResult::Fail,
        error_type: "Infrastructure".into(),
        errors: why.to_string(),
        description: String::new(),
    }
}

/// A LAVA log record `{"dt": ..., "lvl": "exception", "msg": ...}` for a fixed ASCII message
/// of labd's own (the general writer lives in `src/jobs/`).
fn exception_line(msg: &str) -> String {
    let dt = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f");
    let msg: String = msg
        .chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control() && *c != '"' && *c != '\\')
        .collect();
    format!("{{\"dt\": \"{dt}\", \"lvl\": \"exception\", \"msg\": \"{msg}\"}}")
}

/// Whether an upload failure means "master down, keep trying" rather than "master refuses".
fn transient(e: &MasterError) -> bool {
    matches!(e, MasterError::Unreachable { .. }) || matches!(e.status(), Some(502..=504))
}

/// lava-run's sender: a batch of up to 1000 records when 1000 are waiting or when
/// `job_log_interval` passed since the last POST, then everything left once the job is over.
async fn upload_loop(
    ctx: Arc<JobCtx>,
    id: JobId,
    token: String,
    dir: PathBuf,
    mut acked: Mark,
    mut durable: watch::Receiver<Durable>,
    job_cancel: CancellationToken,
) {
    let interval = ctx.job_log_interval;
    let mut last_call = Instant::now();
    let mut refused = 0u32;
    loop {
        let d = *durable.borrow_and_update();
        let pending = d.end.lines.saturating_sub(acked.lines);
        if pending == 0 {
            if d.closed {
                return;
            }
            if durable.changed().await.is_err() && durable.borrow().end.lines == acked.lines {
                return;
            }
            continue;
        }
        let due = pending >= MAX_RECORDS as u64 || last_call.elapsed() >= interval || d.closed;
        if !due {
            tokio::select! {
                _ = durable.changed() => {}
                _ = tokio::time::sleep_until(last_call + interval) => {}
            }
            continue;
        }
        last_call = Instant::now();
        let batch = {
            let dir = dir.clone();
            blocking(move || logbuf::read_batch(&dir, acked, d.end.bytes, MAX_RECORDS)).await
        };
        let (lines, after) = match batch {
            Ok(b) => b,
            Err(e) => {
                error!("{e}; retrying in {interval:?}");
                tokio::time::sleep(interval).await;
                continue;
            }
        };
        if lines.is_empty() {
            tokio::time::sleep(interval).await;
            continue;
        }
        match ctx
            .client
            .upload_logs(&id, &token, &lines, acked.lines)
            .await
        {
            Ok(count) => {
                let count = (count as usize).min(lines.len());
                if count == 0 {
                    warn!(
                        "the master acknowledged none of {} log lines; retrying",
                        lines.len()
                    );
                    if d.closed {
                        tokio::time::sleep(interval).await;
                    }
                    continue;
                }
                refused = 0;
                let next = if count == lines.len() {
                    after
                } else {
                    let bytes: u64 = lines[..count].iter().map(|l| l.len() as u64 + 1).sum();
                    Mark {
                        lines: acked.lines + count as u64,
                        bytes: acked.bytes + bytes,
                    }
                };
                let dir2 = dir.clone();
                if let Err(e) = blocking(move || logbuf::write_ack(&dir2, next)).await {
                    // The master has the lines; after a restart they are resent with the old
                    // index and the server skips them.
                    error!("{e}");
                }
                acked = next;
                ctx.metrics.lines_uploaded.inc_by(count as u64);
            }
            Err(e) if e.status() == Some(404) => {
                // lava-run drops its records and cancels the job (SIGUSR1 to itself).
                error!(
                    "{e}; the master no longer knows this job: dropping its log and canceling it"
                );
                job_cancel.cancel();
                return;
            }
            Err(e) if transient(&e) => {
                warn!("{e}; {pending} log lines kept on disk, retrying in {interval:?}");
                if d.closed {
                    tokio::time::sleep(interval).await;
                }
            }
            Err(e) => {
                refused += 1;
                if refused >= MAX_REFUSED_UPLOADS {
                    error!(
                        "{e}; refused {refused} times: dropping these {} log lines",
                        lines.len()
                    );
                    acked = after;
                    let dir2 = dir.clone();
                    let _ = blocking(move || logbuf::write_ack(&dir2, acked)).await;
                    refused = 0;
                } else {
                    warn!("{e}; retrying in {interval:?}");
                    if d.closed {
                        tokio::time::sleep(interval).await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exception_line_is_a_lava_record() {
        let l = exception_line("labd restarted");
        assert!(l.starts_with("{\"dt\": \"20"), "{l}");
        assert!(
            l.ends_with("\", \"lvl\": \"exception\", \"msg\": \"labd restarted\"}"),
            "{l}"
        );
    }
}
