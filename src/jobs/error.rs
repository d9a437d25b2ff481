//! Errors of the jobs domain and LAVA's error types (`lava_common/exceptions.py`): the
//! `error_type` a finished job reports and the help text LAVA prints with it.

use std::fmt;

/// LAVA's error classes, as reported in `error_type` when a job finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LavaErrorType {
    /// `InfrastructureError` (and `ConnectionClosedError`): the lab, not the job, failed.
    Infrastructure,
    /// `JobCanceled`.
    Canceled,
    /// `JobError`: the job definition or what it points at is wrong.
    Job,
    /// `LAVABug`.
    Bug,
    /// `TestError`: a test definition misbehaved (not fatal on its own).
    Test,
    /// `ConfigurationError`: the instance is misconfigured.
    Configuration,
    /// `LAVATimeoutError`: the test shell timed out.
    LavaTimeout,
    /// `MultinodeProtocolTimeoutError`.
    MultinodeTimeout,
}

impl LavaErrorType {
    /// The `error_type` string sent to the server.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Infrastructure => "Infrastructure",
            Self::Canceled => "Canceled",
            Self::Job => "Job",
            Self::Bug => "Bug",
            Self::Test => "Test",
            Self::Configuration => "Configuration",
            Self::LavaTimeout => "LAVATimeout",
            Self::MultinodeTimeout => "MultinodeTimeout",
        }
    }

    /// LAVA's `error_help` for the class.
    pub fn help(self) -> &'static str {
        match self {
            Self::Infrastructure => {
                "InfrastructureError: The Infrastructure is not working correctly. Please report this error to LAVA admins."
            }
            Self::Canceled => "JobCanceled: The job was canceled",
            Self::Job => "JobError: Your job cannot terminate cleanly.",
            Self::Bug => "LAVABug: This is probably a bug in LAVA, please report it.",
            Self::Test => "TestError: A test failed to run, look at the error message.",
            Self::Configuration => {
                "ConfigurationError: The LAVA instance is not configured correctly. Please report this error to LAVA admins."
            }
            Self::LavaTimeout => "LAVATimeoutError: test shell has timed out.",
            Self::MultinodeTimeout => {
                "MultinodeProtocolTimeoutError: Multinode wait/sync call has timed out."
            }
        }
    }
}

impl fmt::Display for LavaErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure with the LAVA class it maps to and the message LAVA would log (`lvl: exception`,
/// `extra.fail`, the job's `error_msg`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct LavaError {
    pub kind: LavaErrorType,
    pub message: String,
}

impl LavaError {
    pub fn new(kind: LavaErrorType, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// `<action> timed out after <N> seconds` — the message of an expired action timeout
    /// (`Timeout._timed_out`), a `JobError` unless the action says otherwise.
    pub fn timed_out(action: &str, seconds: u64, kind: LavaErrorType) -> Self {
        Self::new(kind, format!("{action} timed out after {seconds} seconds"))
    }

    /// What a canceled job logs.
    pub fn canceled() -> Self {
        Self::new(LavaErrorType::Canceled, "The job was canceled")
    }
}

/// Errors of the jobs domain that are not a job outcome: bad input, internal misuse.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    /// A job definition or device configuration that cannot be used.
    #[error("{0}")]
    Definition(#[from] crate::jobs::model::DefinitionError),
    /// labd's own misuse of an API (LAVA's `LAVABug`).
    #[error("internal error: {0}")]
    Bug(String),
    /// An invalid regular expression in a job or device configuration.
    #[error("invalid regular expression {pattern:?} in {place}: {message}")]
    Regex {
        pattern: String,
        place: String,
        message: String,
    },
}
