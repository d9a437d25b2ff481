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

/// Refused uploads of one batch (answers other than 404 and "master unreachable") after which
/// the batch is dropped, so one line the server cannot parse does not hold the job forever...
const MAX_REFUSED_UPLOADS: u32 = 10;
/// ...but only once they span this long: a master answering 500 for a few minutes (a database
/// migration, a crashing view) must not cost a job its log.
const REFUSAL_SPAN: Duration = Duration::from_secs(300);
/// The longest wait between two upload attempts after failures (the wait starts at
/// `job_log_interval` and doubles on every failure in a row).
const MAX_UPLOAD_BACKOFF: Duration = Duration::from_secs(30);

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
    let mut retry = Retry::new(interval);
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
                let wait = retry.failed();
                error!("{e}; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        if lines.is_empty() {
            tokio::time::sleep(retry.failed()).await;
            continue;
        }
        let result = ctx
            .client
            .upload_logs(&id, &token, &lines, acked.lines)
            .await;
        match result {
            Ok(count) if count > 0 => {
                retry.succeeded();
                let count = (count as usize).min(lines.len());
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
                continue;
            }
            Ok(_) => {
                let wait = retry.failed();
                warn!(
                    "the master acknowledged none of {} log lines; retrying in {wait:?}",
                    lines.len()
                );
                tokio::time::sleep(wait).await;
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
                let wait = retry.failed();
                warn!("{e}; {pending} log lines kept on disk, retrying in {wait:?}");
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                let wait = retry.failed();
                if retry.refused() {
                    error!(
                        "{e}; refused {} times over {:?}: dropping these {} log lines",
                        retry.refusals,
                        retry.refusal_span(),
                        lines.len()
                    );
                    acked = after;
                    let dir2 = dir.clone();
                    let _ = blocking(move || logbuf::write_ack(&dir2, acked)).await;
                    retry.succeeded();
                } else {
                    warn!("{e}; retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// The uploader's pacing after failures: a wait that starts at the upload interval and doubles
/// up to [`MAX_UPLOAD_BACKOFF`] (or the interval, if longer), and the refusals of the current batch with when the first came.
/// Every failed or empty attempt waits, so an outage never turns into a busy loop.
struct Retry {
    interval: Duration,
    wait: Duration,
    refusals: u32,
    first_refusal: Option<Instant>,
}

impl Retry {
    fn new(interval: Duration) -> Self {
        Self {
            interval,
            wait: interval,
            refusals: 0,
            first_refusal: None,
        }
    }

    /// The wait before the next attempt, and the one after it doubled.
    fn failed(&mut self) -> Duration {
        let wait = self.wait;
        self.wait = (self.wait * 2).min(MAX_UPLOAD_BACKOFF).max(self.interval);
        wait
    }

    /// Counts a refusal of the current batch; `true` when the batch is to be dropped: at least
    /// [`MAX_REFUSED_UPLOADS`] refusals spanning at least [`REFUSAL_SPAN`].
    fn refused(&mut self) -> bool {
        self.refusals += 1;
        let first = *self.first_refusal.get_or_insert_with(Instant::now);
        self.refusals >= MAX_REFUSED_UPLOADS && first.elapsed() >= REFUSAL_SPAN
    }

    fn refusal_span(&self) -> Duration {
        self.first_refusal.map(|t| t.elapsed()).unwrap_or_default()
    }

    /// A batch went through (or was given up): back to the normal pace.
    fn succeeded(&mut self) {
        self.wait = self.interval;
        self.refusals = 0;
        self.first_refusal = None;
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

    #[test]
    fn retry_backs_off_and_drops_a_batch_only_after_refusals_spanning_minutes() {
        let mut r = Retry::new(Duration::from_millis(300));
        let waits: Vec<u64> = (0..9).map(|_| r.failed().as_millis() as u64).collect();
        assert_eq!(
            waits,
            [300, 600, 1200, 2400, 4800, 9600, 19200, 30000, 30000]
        );
        r.succeeded();
        assert_eq!(r.failed(), Duration::from_millis(300));
        r.succeeded();
        // Ten refusals back to back are not enough...
        for _ in 0..20 {
            assert!(!r.refused());
        }
        // ...they must span REFUSAL_SPAN.
        r.first_refusal = Instant::now().checked_sub(REFUSAL_SPAN);
        assert!(r.refused());
        r.succeeded();
        assert!(!r.refused(), "the span starts at the batch's first refusal");
    }
}
