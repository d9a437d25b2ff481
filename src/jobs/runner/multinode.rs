//! The hook the Multi-Node client plugs into (issue 7): the runner calls it at job start and
//! end, for every `<LAVA_MULTI_NODE> <LAVA_SEND ...>`-style request a test shell prints, and
//! for `lava-send`/`lava-wait`/... steps of interactive tests. It answers with the line to write
//! back to the DUT (`<LAVA_SYNC_COMPLETE>`, `<LAVA_WAIT_COMPLETE ...>`...).
//!
//! Without a factory (or when it gives no protocol for a job) a job with
//! `protocols: lava-multinode` is refused at validation, and test shells do not look for
//! Multi-Node lines at all, as lava-dispatcher without the multinode protocol.

use std::collections::BTreeMap;

use crate::console::source::BoxFut;
use crate::jobs::error::{LavaError, LavaErrorType};
use crate::jobs::model::JobDefinition;

use super::joblog::JobLog;

/// One request parsed from the console: `name` is `LAVA_SEND`, `LAVA_WAIT`, `LAVA_WAIT_ALL`,
/// `LAVA_SYNC`...; `params` the rest of the line inside the brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultinodeRequest {
    pub name: String,
    pub params: String,
}

/// A job's Multi-Node protocol (one per job).
pub trait MultinodeProtocol: Send {
    /// At the start of the job, before the first action (register the group).
    fn set_up<'a>(&'a mut self, _log: &'a JobLog) -> BoxFut<'a, Result<(), LavaError>> {
        Box::pin(async { Ok(()) })
    }

    /// A test-shell request; returns the line to send back to the DUT (without the line
    /// separator), or `None` to send nothing.
    fn handle<'a>(
        &'a mut self,
        request: MultinodeRequest,
        log: &'a JobLog,
    ) -> BoxFut<'a, Result<Option<String>, LavaError>>;

    /// An interactive test's `lava-send`/`lava-wait`/`lava-wait-all`/`lava-sync` step; returns
    /// the data received (`{key: value}`).
    fn interactive<'a>(
        &'a mut self,
        step: &'a str,
        argument: &'a str,
        _log: &'a JobLog,
    ) -> BoxFut<'a, Result<BTreeMap<String, String>, LavaError>> {
        Box::pin(async move {
            Err(LavaError::new(
                LavaErrorType::Job,
                format!("interactive `{step}: {argument}` needs the Multi-Node client"),
            ))
        })
    }

    /// Extra executable helpers for the test shell's `bin/` (`lava-send`, `lava-wait`...):
    /// `(file name, contents)`, for the results directory `results_dir` and shell `sh`.
    fn helper_files(&self, _results_dir: &str, _sh: &str) -> Vec<(String, String)> {
        Vec::new()
    }

    /// At the end of the job, whatever its outcome (clear the group).
    fn finalise<'a>(&'a mut self, _log: &'a JobLog) -> BoxFut<'a, ()> {
        Box::pin(async {})
    }
}

/// Makes the protocol of a job that has `protocols: lava-multinode`.
pub trait MultinodeFactory: Send + Sync + 'static {
    /// `Ok(None)`: this job has no Multi-Node protocol. An error refuses the job.
    fn for_job(
        &self,
        job: &JobDefinition,
        job_id: &str,
    ) -> Result<Option<Box<dyn MultinodeProtocol>>, LavaError>;
}

/// The refusal used when no Multi-Node client is configured.
pub fn no_multinode_client() -> LavaError {
    LavaError::new(
        LavaErrorType::Configuration,
        "this job uses the lava-multinode protocol, but labd has no Multi-Node client configured",
    )
}
