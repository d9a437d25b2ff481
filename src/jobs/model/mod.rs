//! LAVA V2 job definitions as a server sends them (or a user writes them for `labd run-job`):
//! typed structs parsed with serde_norway, with errors that name the YAML line, column and path
//! (`actions[1].boot.method`), and a second pass ([`JobDefinition::validate`]) for the rules
//! that span several keys (timeouts against the job timeout, Multi-Node roles, namespaces) and
//! for what labd does not run yet (`from: git`, LXC...).

mod actions;
mod multinode;
mod test;
mod timeouts;
mod util;

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

pub use actions::{
    Action, ActionCommon, AutoLogin, BootAction, BootCommands, BootMethod, BootParameters,
    Compression, DeployAction, DeployTo, ImageSpec, TransferOverlay,
};
pub use multinode::{MultinodeProtocol, Protocols, RoleEntry, RoleRequest};
pub use test::{
    DefinitionSource, InlineTestDefinition, InteractiveException, InteractiveFailure,
    InteractiveStep, InteractiveSuccess, InteractiveTest, LavaSignal, Monitor, Repository,
    TestAction, TestDefinitionRef, TestInstall, TestKind, TestMetadata, TestParse, TestRun,
};
pub use timeouts::{DEFAULT_ACTION_TIMEOUT, JobTimeouts, Timeout, seconds_to_str};
pub use util::{OrderedMap, Scalar, StrictString, StringList, TestResult, is_lava_name};

/// A problem in a job definition (or a device configuration), located when the parser knows
/// where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DefinitionError {
    /// What was being read: `job definition`, `device configuration`.
    pub document: &'static str,
    /// 1-based line and column, when known.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Dotted path such as `actions[1].boot.method`; empty for the whole document.
    pub path: String,
    pub message: String,
}

impl fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.document)?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, ":{l}:{c}")?;
        }
        f.write_str(": ")?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl DefinitionError {
    pub fn at(document: &'static str, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            document,
            line: None,
            column: None,
            path: path.into(),
            message: message.into(),
        }
    }

    /// Splits serde_norway's "path: message at line L column C" into its parts.
    pub fn from_yaml(document: &'static str, e: &serde_norway::Error) -> Self {
        let loc = e.location();
        let mut text = e.to_string();
        if let Some(i) = text.rfind(" at line ") {
            text.truncate(i);
        }
        // serde_norway prefixes the path ("actions[1].boot: ..."), unless it is the root.
        let (path, message) = match text.split_once(": ") {
            Some((p, m)) if looks_like_path(p) => (p.to_string(), m.to_string()),
            _ => (String::new(), text),
        };
        Self {
            document,
            line: loc.as_ref().map(|l| l.line()),
            column: loc.as_ref().map(|l| l.column()),
            path,
            message,
        }
    }
}

fn looks_like_path(p: &str) -> bool {
    !p.is_empty()
        && !p.contains(' ')
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '[' | ']' | '?'))
}

/// A parsed LAVA V2 job definition.
#[derive(Debug, Clone, PartialEq)]
pub struct JobDefinition {
    pub job_name: String,
    pub device_type: Option<String>,
    pub timeouts: JobTimeouts,
    /// Accepted, ignored (the server schedules).
    pub priority: Option<serde_norway::Value>,
    pub visibility: Option<serde_norway::Value>,
    /// Device dictionary variables; the server already rendered them into the device
    /// configuration.
    pub context: BTreeMap<String, serde_norway::Value>,
    pub metadata: Option<serde_norway::Value>,
    pub tags: Vec<String>,
    pub secrets: BTreeMap<String, serde_norway::Value>,
    /// Exported on the DUT (the `environment` file).
    pub environment: Option<serde_norway::Value>,
    pub protocols: Protocols,
    pub actions: Vec<Action>,
    /// The document as plain YAML values, for what is passed on verbatim (an inline test
    /// definition is the `repository` of its ENDRUN result).
    pub raw: serde_norway::Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    job_name: String,
    device_type: Option<String>,
    timeouts: JobTimeouts,
    visibility: Option<serde_norway::Value>,
    priority: Option<serde_norway::Value>,
    #[serde(default)]
    context: BTreeMap<String, serde_norway::Value>,
    metadata: Option<serde_norway::Value>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    secrets: BTreeMap<String, serde_norway::Value>,
    environment: Option<serde_norway::Value>,
    #[serde(default)]
    protocols: Protocols,
    notify: Option<serde_norway::Value>,
    reboot_to_fastboot: Option<bool>,
    /// Added by the server when it stores a definition.
    compatibility: Option<serde_norway::Value>,
    actions: Vec<Action>,
}

impl JobDefinition {
    /// Parses job YAML. Syntax errors, unknown keys, wrong types, unknown action kinds and
    /// methods are reported with line, column and path.
    pub fn parse(text: &str) -> Result<Self, DefinitionError> {
        const DOC: &str = "job definition";
        let raw: RawJob =
            serde_norway::from_str(text).map_err(|e| DefinitionError::from_yaml(DOC, &e))?;
        let _ = (&raw.notify, &raw.reboot_to_fastboot, &raw.compatibility);
        let value: serde_norway::Value =
            serde_norway::from_str(text).map_err(|e| DefinitionError::from_yaml(DOC, &e))?;
        Ok(JobDefinition {
            job_name: raw.job_name,
            device_type: raw.device_type,
            timeouts: raw.timeouts,
            priority: raw.priority,
            visibility: raw.visibility,
            context: raw.context,
            metadata: raw.metadata,
            tags: raw.tags,
            secrets: raw.secrets,
            environment: raw.environment,
            protocols: raw.protocols,
            actions: raw.actions,
            raw: value,
        })
    }

    /// The `repository:` of `actions[action].test.definitions[definition]` as written.
    pub fn raw_repository(&self, action: usize, definition: usize) -> Option<serde_norway::Value> {
        self.raw
            .get("actions")?
            .get(action)?
            .get("test")?
            .get("definitions")?
            .get(definition)?
            .get("repository")
            .cloned()
    }

    /// Parses and validates: the definition labd can run, or every problem found.
    pub fn parse_and_validate(text: &str) -> Result<Self, Vec<DefinitionError>> {
        let job = Self::parse(text).map_err(|e| vec![e])?;
        let problems = job.validate();
        if problems.is_empty() {
            Ok(job)
        } else {
            Err(problems)
        }
    }

    pub fn multinode(&self) -> Option<&MultinodeProtocol> {
        self.protocols.multinode.as_ref()
    }

    /// The cross-key rules LAVA's schema applies (`extra_checks`) and what labd does not run.
    pub fn validate(&self) -> Vec<DefinitionError> {
        validate::validate(self)
    }
}

mod validate;

/// The fuzzing entry point: arbitrary bytes as job YAML never panic; a parsed job validates
/// without panicking too.
pub fn fuzz_job_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(job) = JobDefinition::parse(text) {
        let _ = job.validate();
    }
    let _ = crate::jobs::device::DeviceConfiguration::parse(text);
}

#[cfg(test)]
mod tests;
