//! LAVA's action frame, as `Pipeline.run_actions` and `RetryAction.run` write it: the
//! `start: <level> <name> (timeout HH:MM:SS) [<namespace>]` line, the action's own timeout
//! (the smaller of its resolved timeout and what its parent has left), cancellation, the
//! `exception` line of a failure, `end: ... (duration ...)` and the action's `results` record.
//!
//! Actions nest: each body runs under [`Pipeline::guard`], a biased select of the body, the
//! action's deadline and the job's cancellation token, so the innermost action whose deadline
//! passes is the one named in `<name> timed out after N seconds`, as LAVA's SIGALRM handler of
//! the innermost action does.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::joblog::JobLog;
use crate::jobs::device::DeviceTimeouts;
use crate::jobs::error::{LavaError, LavaErrorType};
use crate::jobs::log::LogValue;
use crate::jobs::model::{ActionCommon, JobTimeouts, Timeout, seconds_to_str};

/// One running action.
#[derive(Debug)]
pub struct Act {
    /// `2.2.1`; empty for the job itself.
    pub level: String,
    pub name: &'static str,
    pub namespace: String,
    pub started: Instant,
    /// When this action times out (its own timeout, or its parent's end if that comes first).
    pub deadline: Instant,
    /// The exception class of this action's timeout.
    pub kind: LavaErrorType,
    /// A top-level action block (logged at `info`, not `debug`).
    pub top: bool,
    children: AtomicU32,
    results: Mutex<Option<LogValue>>,
}

impl Act {
    /// The job as the parent of the top-level actions.
    pub fn root(deadline: Instant) -> Self {
        Self {
            level: String::new(),
            name: "job",
            namespace: "common".into(),
            started: Instant::now(),
            deadline,
            kind: LavaErrorType::Job,
            top: false,
            children: AtomicU32::new(0),
            results: Mutex::new(None),
        }
    }

    /// A frame that is not logged (the finalize pipeline lava-run's cleanup runs after a
    /// failure): its children are `<level>.1`, `<level>.2`...
    pub fn detached(level: String, name: &'static str, deadline: Instant) -> Self {
        Self {
            level,
            name,
            namespace: "common".into(),
            started: Instant::now(),
            deadline,
            kind: LavaErrorType::Job,
            top: false,
            children: AtomicU32::new(0),
            results: Mutex::new(None),
        }
    }

    /// Makes the next child `<level>.<n+1>` (levels are fixed by the job's structure).
    pub fn skip_level_to(&self, n: usize) {
        self.children.store(n as u32, Ordering::SeqCst);
    }

    /// Sets the `extra` of this action's results record (LAVA's `self.results = {...}`).
    pub fn set_results(&self, v: LogValue) {
        *self.results.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
    }

    /// Adds a key to the results (`self.results.update(...)`).
    pub fn add_result(&self, key: &str, v: impl Into<LogValue>) {
        let mut r = self.results.lock().unwrap_or_else(|p| p.into_inner());
        r.get_or_insert_with(LogValue::map).insert(key, v);
    }

    fn take_results(&self) -> Option<LogValue> {
        self.results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Time left before this action's deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The next child level (`2.2` → `2.2.1`, `2.2.2`...).
    fn next_child_level(&self) -> String {
        let n = self.children.fetch_add(1, Ordering::SeqCst) + 1;
        if self.level.is_empty() {
            n.to_string()
        } else {
            format!("{}.{n}", self.level)
        }
    }

    /// A retry runs the same pipeline again with the same levels.
    pub fn reset_children(&self) {
        self.children.store(0, Ordering::SeqCst);
    }

    /// Skips a level (an action LAVA has in its pipeline but labd does nothing for).
    pub fn skip_level(&self) {
        self.children.fetch_add(1, Ordering::SeqCst);
    }
}

/// What an action is, for [`Pipeline::begin`].
#[derive(Debug, Clone, Copy)]
pub struct Spec<'b> {
    pub name: &'static str,
    /// LAVA's `timeout_exception` of the action class.
    pub kind: LavaErrorType,
    /// The action class's own default timeout.
    pub default: Duration,
    /// The job's action block this action belongs to (its `timeout`, `timeouts`, `namespace`).
    pub block: Option<&'b ActionCommon>,
}

impl<'b> Spec<'b> {
    pub fn new(name: &'static str, block: Option<&'b ActionCommon>) -> Self {
        Self {
            name,
            kind: LavaErrorType::Job,
            default: crate::jobs::model::DEFAULT_ACTION_TIMEOUT,
            block,
        }
    }

    pub fn kind(mut self, kind: LavaErrorType) -> Self {
        self.kind = kind;
        self
    }

    pub fn default_timeout(mut self, d: Duration) -> Self {
        self.default = d;
        self
    }
}

/// Runs the frames of one job: timeouts from the job and the device, the log, cancellation.
#[derive(Clone)]
pub struct Pipeline {
    pub log: JobLog,
    pub cancel: CancellationToken,
    pub timeouts: JobTimeouts,
    pub device_timeouts: DeviceTimeouts,
}

impl Pipeline {
    /// The timeout of action `name` in `block` (LAVA's `Pipeline.add_action` precedence).
    pub fn timeout_of(
        &self,
        name: &str,
        default: Duration,
        block: Option<&ActionCommon>,
    ) -> Timeout {
        self.timeouts.action_timeout(
            name,
            default,
            block.and_then(|b| b.timeout.as_ref()),
            block.map(|b| &b.timeouts),
            Some(&self.device_timeouts),
        )
    }

    /// The per-wait connection timeout of action `name`.
    pub fn connection_timeout(&self, name: &str, default: Duration) -> Duration {
        self.timeouts
            .connection_timeout(name, default, Some(&self.device_timeouts))
            .duration
    }

    /// Starts an action under `parent`: logs its start line and returns its frame.
    pub fn begin(&self, parent: &Act, spec: Spec<'_>) -> Act {
        let level = parent.next_child_level();
        let own = self.timeout_of(spec.name, spec.default, spec.block);
        let started = Instant::now();
        let deadline = (started + own.duration).min(parent.deadline);
        let namespace = spec
            .block
            .and_then(|b| b.namespace.clone())
            .unwrap_or_else(|| parent.namespace.clone());
        let top = parent.level.is_empty();
        self.log
            .note_action(&level, spec.name, own.duration.as_secs());
        let msg = format!(
            "start: {level} {} (timeout {}) [{namespace}]",
            spec.name,
            seconds_to_str(deadline.saturating_duration_since(started).as_secs_f64())
        );
        if top {
            self.log.info(msg);
        } else {
            self.log.debug(msg);
        }
        Act {
            level,
            name: spec.name,
            namespace,
            started,
            deadline,
            kind: spec.kind,
            top,
            children: AtomicU32::new(0),
            results: Mutex::new(None),
        }
    }

    /// Runs `body` as the action `act`: it ends at the action's deadline (a timeout naming the
    /// action) or when the job is canceled, whichever comes first. Inner actions are polled
    /// first, so the innermost expired action is the one reported.
    pub async fn guard<T>(
        &self,
        act: &Act,
        body: impl std::future::Future<Output = Result<T, LavaError>>,
    ) -> Result<T, LavaError> {
        tokio::pin!(body);
        tokio::select! {
            biased;
            r = &mut body => r,
            _ = tokio::time::sleep_until(act.deadline) => Err(LavaError::timed_out(
                act.name,
                act.started.elapsed().as_secs(),
                act.kind,
            )),
            _ = self.cancel.cancelled() => Err(LavaError::canceled()),
        }
    }

    /// Ends an action: the `exception` line of a failure, the `end:` line and its results.
    /// A test-shell timeout (`LAVATimeoutError`) leaves a nested action as a `TestError`, as in
    /// `run_actions`; a top-level block decides about `skip` itself.
    pub fn finish<T>(&self, act: Act, r: Result<T, LavaError>) -> Result<T, LavaError> {
        let elapsed = act.started.elapsed().as_secs_f64();
        let mut results = act.take_results();
        if let Err(e) = &r {
            self.log.exception(e.message.as_str());
            results = Some(LogValue::map().with("fail", e.message.as_str()));
        }
        let msg = format!(
            "end: {} {} (duration {}) [{}]",
            act.level,
            act.name,
            seconds_to_str(elapsed.round()),
            act.namespace
        );
        if act.top {
            self.log.info(msg);
        } else {
            self.log.debug(msg);
        }
        if let Some(extra) = results {
            self.log.results(
                LogValue::map()
                    .with("definition", "lava")
                    .with("namespace", act.namespace.as_str())
                    .with("case", act.name)
                    .with("level", act.level.as_str())
                    .with("duration", format!("{elapsed:.2}"))
                    .with("result", if r.is_err() { "fail" } else { "pass" })
                    .with("extra", extra),
            );
        }
        match r {
            Err(e) if e.kind == LavaErrorType::LavaTimeout && !act.top => {
                Err(LavaError::new(LavaErrorType::Test, e.message))
            }
            other => other,
        }
    }

    /// `RetryAction`'s message after a failed attempt; true when another attempt follows.
    pub fn retry_failed(&self, act: &Act, attempt: u32, max: u32, e: &LavaError) -> bool {
        let retryable = matches!(
            e.kind,
            LavaErrorType::Infrastructure | LavaErrorType::Job | LavaErrorType::Test
        );
        if !retryable {
            return false;
        }
        self.log.error(format!(
            "{} failed: {attempt} of {max} attempts. '{}'",
            act.name, e.message
        ));
        attempt < max && Instant::now() < act.deadline
    }

    /// Before the next attempt: `Retrying: <level> <name> (timeout ...)`.
    pub fn retrying(&self, act: &Act) {
        act.reset_children();
        self.log.warning(format!(
            "Retrying: {} {} (timeout {})",
            act.level,
            act.name,
            seconds_to_str(act.remaining().as_secs_f64())
        ));
    }
}

/// Runs `$body` (an expression using `$act`) as a child action of `$parent`.
#[macro_export]
#[doc(hidden)]
macro_rules! __labd_action {
    ($pipe:expr, $parent:expr, $spec:expr, |$act:ident| $body:expr) => {{
        let $act = $pipe.begin($parent, $spec);
        let r = $pipe.guard(&$act, async { $body }).await;
        $pipe.finish($act, r)
    }};
}
pub(crate) use __labd_action as action;

/// A `RetryAction`: runs `$body` up to `$max` times while it fails with a retryable error.
#[macro_export]
#[doc(hidden)]
macro_rules! __labd_retry {
    ($pipe:expr, $act:expr, $max:expr, $interval:expr, $body:expr) => {{
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match $body {
                Ok(v) => break Ok(v),
                Err(e) => {
                    if $pipe.retry_failed($act, attempt, $max, &e) {
                        tokio::time::sleep($interval).await;
                        $pipe.retrying($act);
                        continue;
                    }
                    break Err(e);
                }
            }
        }
    }};
}
pub(crate) use __labd_retry as retry;
