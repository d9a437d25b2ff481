//! Essential roles, as lava-server treats them (`TestJob.go_state_finished` and
//! `go_state_canceling` in lava_scheduler_app): when a sub-job of a role marked
//! `essential: true` ends Incomplete, every other sub-job of the group still running is
//! canceled, and a sub-job canceled that way ends Canceled even if it was finishing (the
//! server's `STATE_CANCELING` overrides the health). A non-essential sub-job that fails
//! changes nothing for the others. (A user's cancel of the whole group cancels every sub-job
//! anyway, so the essential rule of `go_state_canceling` needs nothing more here.)

use tokio_util::sync::CancellationToken;

use crate::jobs::error::{LavaError, LavaErrorType};
use crate::jobs::runner::{Health, JobLog, JobReport};

/// The running sub-jobs' cancel handles and logs, and why each was canceled.
pub struct EssentialWatch {
    cancels: Vec<CancellationToken>,
    logs: Vec<JobLog>,
    essential: Vec<bool>,
    finished: Vec<bool>,
    reasons: Vec<Option<String>>,
}

impl EssentialWatch {
    /// `essential[i]`, `cancels[i]` and `logs[i]` are those of sub-job `i`.
    pub fn new(essential: Vec<bool>, cancels: Vec<CancellationToken>, logs: Vec<JobLog>) -> Self {
        let n = essential.len();
        Self {
            cancels,
            logs,
            essential,
            finished: vec![false; n],
            reasons: vec![None; n],
        }
    }

    /// Sub-job `i` (`name`: `role id on device`) ended with `health`: when it is essential
    /// and Incomplete, cancels the others still running (their logs say why).
    pub fn ended(&mut self, i: usize, name: &str, health: Health) {
        if let Some(f) = self.finished.get_mut(i) {
            *f = true;
        }
        if health != Health::Incomplete || !self.essential.get(i).copied().unwrap_or(false) {
            return;
        }
        let reason = format!("essential role {name} ended Incomplete");
        for j in 0..self.cancels.len() {
            if j == i || self.finished[j] || self.reasons[j].is_some() {
                continue;
            }
            tracing::info!(sub_job = j, %reason, "canceling the rest of the group");
            if let Some(log) = self.logs.get(j) {
                log.error(format!("Canceling the job: {reason}"));
            }
            self.reasons[j] = Some(reason.clone());
            self.cancels[j].cancel();
        }
    }

    /// Why sub-job `i` was canceled by the group, if it was.
    pub fn reason(&self, i: usize) -> Option<&str> {
        self.reasons.get(i).and_then(|r| r.as_deref())
    }

    /// Makes the report of a sub-job canceled by the group say so: Canceled, with the reason.
    pub fn apply(&self, i: usize, report: &mut JobReport) {
        if let Some(reason) = self.reason(i) {
            report.health = Health::Canceled;
            report.error = Some(LavaError::new(
                LavaErrorType::Canceled,
                format!("The job was canceled: {reason}"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(essential: &[bool]) -> EssentialWatch {
        let n = essential.len();
        EssentialWatch::new(
            essential.to_vec(),
            (0..n).map(|_| CancellationToken::new()).collect(),
            (0..n).map(|_| JobLog::new(None, None)).collect(),
        )
    }

    #[test]
    fn an_essential_failure_cancels_the_running_others_only() {
        let mut w = watch(&[true, false, false]);
        w.ended(2, "b 3 on x", Health::Complete);
        w.ended(0, "a 1 on y", Health::Incomplete);
        assert!(w.cancels[1].is_cancelled());
        assert!(!w.cancels[2].is_cancelled(), "already finished");
        assert_eq!(
            w.reason(1),
            Some("essential role a 1 on y ended Incomplete")
        );
        assert_eq!(w.reason(2), None);
        assert_eq!(w.reason(0), None);
    }

    #[test]
    fn non_essential_failures_and_essential_successes_cancel_nothing() {
        let mut w = watch(&[false, true]);
        w.ended(0, "a", Health::Incomplete);
        assert!(!w.cancels[1].is_cancelled());
        let mut w = watch(&[true, false]);
        w.ended(0, "a", Health::Complete);
        w.ended(0, "a", Health::Canceled);
        assert!(!w.cancels[1].is_cancelled());
    }
}
