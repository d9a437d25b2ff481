//! The job runner's Multi-Node hook (`jobs::runner::MultinodeFactory`/`MultinodeProtocol`)
//! over [`MultinodeSession`]: what a sub-job with `protocols: lava-multinode:` (the form a
//! server hands a worker: `target_group`, `role`, `roles`, `group_size`, `sub_id`) runs with.
//!
//! Errors map to LAVA's classes: a coordinator timeout is a `MultinodeProtocolTimeoutError`,
//! an unreachable coordinator an `InfrastructureError`, a `nack` to `lava-send` or a malformed
//! request a `TestError`.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::config::ClientSettings;
use super::dut::DutFlow;
use super::error::CoordinatorError;
use super::session::{DelayedStart, MultinodeSession, SessionParams};
use crate::console::source::BoxFut;
use crate::jobs::error::{LavaError, LavaErrorType};
use crate::jobs::model::JobDefinition;
use crate::jobs::runner::joblog::JobLog;
use crate::jobs::runner::{MultinodeFactory, MultinodeProtocol, MultinodeRequest};

/// Makes a [`MultinodeSession`] for every job that has `protocols: lava-multinode:`.
#[derive(Debug, Clone)]
pub struct LabdMultinode {
    settings: ClientSettings,
    hostname: String,
    /// Slave jobs (by job id) and the `lava_ms_slave_data` they send.
    slaves: BTreeMap<String, Vec<(String, String)>>,
}

impl LabdMultinode {
    /// `settings`: where the coordinator is; `hostname`: this worker's name.
    pub fn new(settings: ClientSettings, hostname: impl Into<String>) -> Self {
        LabdMultinode {
            settings,
            hostname: hostname.into(),
            slaves: BTreeMap::new(),
        }
    }

    /// Marks a job as a slave board: its set-up runs the `lava_ms_*` handshake with `data`.
    pub fn with_slave(mut self, job_id: impl Into<String>, data: Vec<(String, String)>) -> Self {
        self.slaves.insert(job_id.into(), data);
        self
    }

    pub fn into_factory(self) -> Arc<dyn MultinodeFactory> {
        Arc::new(self)
    }

    /// The session parameters of a sub-job, as lava-dispatcher's `MultinodeProtocol` reads
    /// them.
    pub fn params_for(
        &self,
        job: &JobDefinition,
        job_id: &str,
    ) -> Result<Option<SessionParams>, LavaError> {
        let Some(mn) = job.multinode() else {
            return Ok(None);
        };
        let job_error = |m: String| LavaError::new(LavaErrorType::Job, m);
        let (Some(group), Some(role), Some(size)) = (&mn.target_group, &mn.role, mn.group_size)
        else {
            return Err(job_error(
                "lava-multinode: this is a submission (roles with count and device_type), not a \
                 sub-job; run it with `labd run-job`, which splits it first"
                    .into(),
            ));
        };
        let timeout = mn.timeout.as_ref().map(|t| t.duration);
        let delayed_start = match (&mn.request, &mn.expect_role) {
            (Some(r), Some(expect)) if r == "lava-start" => {
                if expect == role {
                    return Err(job_error(
                        "expect_role must not match the role declaring lava_start".into(),
                    ));
                }
                Some(DelayedStart {
                    expect_role: expect.clone(),
                    timeout,
                })
            }
            _ => None,
        };
        Ok(Some(SessionParams {
            job_id: job_id.to_string(),
            target_group: group.clone(),
            role: role.clone(),
            group_size: size,
            hostname: self.hostname.clone(),
            api_timeout: timeout,
            system_timeout: delayed_start.as_ref().and(timeout),
            delayed_start,
            slave_data: self.slaves.get(job_id).cloned(),
        }))
    }
}

impl MultinodeFactory for LabdMultinode {
    fn for_job(
        &self,
        job: &JobDefinition,
        job_id: &str,
    ) -> Result<Option<Box<dyn MultinodeProtocol>>, LavaError> {
        let roles: Vec<(String, String)> = job
            .multinode()
            .map(|mn| mn.assigned_roles().into_iter().collect())
            .unwrap_or_default();
        Ok(self.params_for(job, job_id)?.map(|p| {
            Box::new(RunnerProtocol {
                session: MultinodeSession::new(self.settings.clone(), p),
                roles,
            }) as Box<dyn MultinodeProtocol>
        }))
    }
}

/// One job's protocol for the runner.
struct RunnerProtocol {
    session: MultinodeSession,
    /// `(job id, role)` of every member, from the sub-job's `roles` (for `lava-group`).
    roles: Vec<(String, String)>,
}

/// LAVA's exception class for a coordinator failure.
pub fn lava_error(e: &CoordinatorError) -> LavaError {
    let kind = match e {
        CoordinatorError::Timeout { .. } => LavaErrorType::MultinodeTimeout,
        CoordinatorError::Unreachable { .. } => LavaErrorType::Infrastructure,
        CoordinatorError::Nack { .. } | CoordinatorError::DutRequest { .. } => LavaErrorType::Test,
        _ => LavaErrorType::Infrastructure,
    };
    LavaError::new(kind, e.to_string())
}

impl MultinodeProtocol for RunnerProtocol {
    fn helper_files(&self, results_dir: &str, sh: &str) -> Vec<(String, String)> {
        let p = self.session.params();
        let mut params = super::dut::DutParams::new(
            p.job_id.clone(),
            p.role.clone(),
            self.roles.clone(),
            results_dir,
        );
        params.shell = sh.to_string();
        super::dut::helper_scripts(&params)
            .into_iter()
            .map(|h| (h.name.to_string(), h.contents))
            .collect()
    }

    fn set_up<'a>(&'a mut self, log: &'a JobLog) -> BoxFut<'a, Result<(), LavaError>> {
        Box::pin(async move {
            let p = self.session.params();
            log.info(format!(
                "Multi-Node: registering {} (role {}) in group {} of {} at {}",
                p.job_id,
                p.role,
                p.target_group,
                p.group_size,
                self.session.client().settings().addr()
            ));
            let slave = p.slave_data.is_some();
            self.session.set_up().await.map_err(|e| lava_error(&e))?;
            if let Some(roles) = self.session.roles() {
                log.info(format!("Multi-Node: group complete: {roles:?}"));
            }
            if slave {
                log.info("Multi-Node: slave handshake done (lava_ms_slave_data, lava_ms_ready, lava_ms_boot): the master boots this board");
            }
            Ok(())
        })
    }

    fn handle<'a>(
        &'a mut self,
        request: MultinodeRequest,
        log: &'a JobLog,
    ) -> BoxFut<'a, Result<Option<String>, LavaError>> {
        Box::pin(async move {
            let out = self.session.handle(&request.name, &request.params).await;
            if let Some(r) = &out.result {
                log.debug(format!(
                    "Multi-Node {}: {}",
                    r.test_case_id,
                    if r.pass { "pass" } else { "fail" }
                ));
            }
            match out.flow {
                DutFlow::Continue => Ok(out.reply_line),
                DutFlow::FailJob => Err(out.error.as_ref().map(lava_error).unwrap_or_else(|| {
                    LavaError::new(LavaErrorType::Test, "Multi-Node request failed")
                })),
                DutFlow::StopTestShell => match &out.error {
                    Some(e) => Err(lava_error(e)),
                    None => {
                        log.warning(format!(
                            "Multi-Node: no handler for <LAVA_{} {}>: ignored",
                            request.name, request.params
                        ));
                        Ok(None)
                    }
                },
            }
        })
    }

    fn interactive<'a>(
        &'a mut self,
        step: &'a str,
        argument: &'a str,
        _log: &'a JobLog,
    ) -> BoxFut<'a, Result<BTreeMap<String, String>, LavaError>> {
        Box::pin(async move {
            self.session
                .interactive(step, argument)
                .await
                .map_err(|e| lava_error(&e))
        })
    }

    fn finalise<'a>(&'a mut self, log: &'a JobLog) -> BoxFut<'a, ()> {
        Box::pin(async move {
            match self.session.finalise().await {
                Ok(()) => log.info("Multi-Node: group cleared"),
                Err(e) => log.warning(format!("Multi-Node: clear_group failed: {e}")),
            }
        })
    }
}
