//! The `test` block: test definitions (`from: inline`, `git`, `url`), interactive tests and
//! monitors.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::actions::{ActionCommon, action_block};
use super::timeouts::Timeout;
use super::util::{Scalar, TestResult, is_lava_name};

/// A `test` block: exactly one of its three kinds.
#[derive(Debug, Clone, PartialEq)]
pub struct TestAction {
    pub common: ActionCommon,
    pub kind: TestKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TestKind {
    Definitions(Vec<TestDefinitionRef>),
    Interactive(Vec<InteractiveTest>),
    Monitors(Vec<Monitor>),
}

action_block!(RawTest {
    definitions: Option<Vec<TestDefinitionRef>>,
    interactive: Option<Vec<InteractiveTest>>,
    monitors: Option<Vec<Monitor>>,
    docker: Option<serde_norway::Value>,
    #[allow(dead_code)]
    #[serde(rename = "downloads-namespace")]
    downloads_namespace: Option<String>,
});

impl<'de> Deserialize<'de> for TestAction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawTest::deserialize(d)?;
        let common = raw.common();
        let kinds = [
            raw.definitions.is_some(),
            raw.interactive.is_some(),
            raw.monitors.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() > 1 {
            return Err(de::Error::custom(
                "a test block has one of `definitions`, `interactive` or `monitors`, not several",
            ));
        }
        if raw.docker.is_some() {
            return Err(de::Error::custom(
                "docker: a test shell inside docker is not supported by labd",
            ));
        }
        let kind = if let Some(defs) = raw.definitions {
            let mut seen: Vec<&str> = Vec::new();
            for d in &defs {
                if d.name == "lava" {
                    return Err(de::Error::custom(
                        "definitions: the test definition name `lava` is reserved",
                    ));
                }
                if seen.contains(&d.name.as_str()) {
                    return Err(de::Error::custom(format!(
                        "definitions: test definition names need to be unique (`{}` twice)",
                        d.name
                    )));
                }
                seen.push(&d.name);
            }
            TestKind::Definitions(defs)
        } else if let Some(i) = raw.interactive {
            TestKind::Interactive(i)
        } else if let Some(m) = raw.monitors {
            TestKind::Monitors(m)
        } else {
            return Err(de::Error::custom(
                "a test block needs `definitions`, `interactive` or `monitors`",
            ));
        };
        Ok(TestAction { common, kind })
    }
}

/// Where a test definition comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefinitionSource {
    Inline,
    Git,
    Url,
}

/// `lava-signal:` of a definition: signals on stdout (default) or written to `/dev/kmsg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LavaSignal {
    #[default]
    Stdout,
    Kmsg,
}

/// `repository:` — a URL (git, url) or the definition itself (inline).
#[derive(Debug, Clone, PartialEq)]
pub enum Repository {
    Url(String),
    Inline(Box<InlineTestDefinition>),
}

impl<'de> Deserialize<'de> for Repository {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Repository;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a repository URL or an inline test definition")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Repository, E> {
                Ok(Repository::Url(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Repository, A::Error> {
                let def =
                    InlineTestDefinition::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Repository::Inline(Box::new(def)))
            }
        }
        d.deserialize_any(V)
    }
}

/// One entry of `definitions:`.
#[derive(Debug, Clone, PartialEq)]
pub struct TestDefinitionRef {
    pub from: DefinitionSource,
    pub repository: Repository,
    pub name: String,
    pub path: String,
    pub branch: Option<String>,
    pub revision: Option<String>,
    pub history: Option<bool>,
    pub compression: Option<String>,
    /// `parameters:` of the job: shell variables set at the top of `run.sh`, in order.
    pub parameters: Vec<(String, String)>,
    pub skip_install: Vec<String>,
    pub lava_signal: LavaSignal,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefinition {
    from: DefinitionSource,
    repository: Repository,
    name: String,
    path: String,
    branch: Option<String>,
    revision: Option<String>,
    history: Option<bool>,
    compression: Option<String>,
    parameters: Option<super::util::OrderedMap<Option<Scalar>>>,
    params: Option<super::util::OrderedMap<Option<Scalar>>>,
    #[serde(default)]
    skip_install: Vec<String>,
    #[serde(rename = "lava-signal", default)]
    lava_signal: LavaSignal,
}

impl<'de> Deserialize<'de> for TestDefinitionRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = RawDefinition::deserialize(d)?;
        if !is_lava_name(&r.name) {
            return Err(de::Error::custom(format!(
                "name `{}`: only letters, digits, '-', '_' and '.' are allowed",
                r.name
            )));
        }
        match (&r.from, &r.repository) {
            (DefinitionSource::Inline, Repository::Url(_)) => {
                return Err(de::Error::custom(
                    "from: inline needs the test definition itself as `repository`",
                ));
            }
            (DefinitionSource::Git | DefinitionSource::Url, Repository::Inline(_)) => {
                return Err(de::Error::custom(
                    "from: git/url needs a repository URL as `repository`",
                ));
            }
            _ => {}
        }
        if r.from == DefinitionSource::Url && r.compression.is_none() {
            return Err(de::Error::custom("from: url needs `compression`"));
        }
        let known = ["keys", "sources", "deps", "steps", "git-repos", "all"];
        if let Some(bad) = r.skip_install.iter().find(|s| !known.contains(&s.as_str())) {
            return Err(de::Error::custom(format!(
                "skip_install: unrecognised value `{bad}` (known: {})",
                known.join(", ")
            )));
        }
        let mut parameters = Vec::new();
        for src in [r.parameters, r.params].into_iter().flatten() {
            for (k, v) in src.0 {
                parameters.push((k, v.map(|s| s.0).unwrap_or_default()));
            }
        }
        Ok(TestDefinitionRef {
            from: r.from,
            repository: r.repository,
            name: r.name,
            path: r.path,
            branch: r.branch,
            revision: r.revision,
            history: r.history,
            compression: r.compression,
            parameters,
            skip_install: r.skip_install,
            lava_signal: r.lava_signal,
        })
    }
}

/// A Lava-Test Test Definition 1.0 written inline in the job.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct InlineTestDefinition {
    pub metadata: TestMetadata,
    pub install: Option<TestInstall>,
    /// Default values of the definition's parameters (shell variables).
    pub parameters: Option<super::util::OrderedMap<Option<Scalar>>>,
    pub params: Option<super::util::OrderedMap<Option<Scalar>>>,
    pub parse: Option<TestParse>,
    pub run: Option<TestRun>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TestMetadata {
    pub format: String,
    pub name: String,
    pub description: Option<String>,
    #[serde(default)]
    pub environment: Vec<String>,
    #[serde(default)]
    pub devices: Vec<String>,
    #[serde(default)]
    pub maintainer: Vec<String>,
    #[serde(default)]
    pub scope: Vec<String>,
    #[serde(default)]
    pub os: Vec<String>,
}

/// `install:`; only `steps` can run on a board reached over a console (no package manager
/// assumptions), the rest is recorded.
/// Entries are written with Python's `%s`, so `true` becomes `True` as in LAVA.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct TestInstall {
    #[serde(default)]
    pub deps: Vec<Scalar>,
    #[serde(rename = "git-repos", default)]
    pub git_repos: Vec<serde_norway::Value>,
    #[serde(default)]
    pub keys: Vec<Scalar>,
    #[serde(default)]
    pub sources: Vec<Scalar>,
    #[serde(default)]
    pub steps: Vec<Scalar>,
}

/// `parse:`: a regular expression with named groups (`test_case_id`, `result`, `measurement`,
/// `units`) matched against the output while the definition runs, and result fix-ups.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct TestParse {
    pub pattern: Option<String>,
    #[serde(default)]
    pub fixupdict: BTreeMap<String, TestResult>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct TestRun {
    /// `None` entries (an empty `-` line) are skipped, as LAVA does. A step that is not a
    /// string (`- 42`) is refused: lava-dispatcher would crash on it (`TypeError`).
    #[serde(default)]
    pub steps: Vec<Option<super::util::StrictString>>,
}

/// One interactive test: commands sent to a prompt, outputs matched.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InteractiveTest {
    pub name: String,
    pub prompts: Vec<String>,
    /// `discard`: remove the echo of each command before matching.
    pub echo: Option<String>,
    pub script: Vec<InteractiveStep>,
}

/// One step of an interactive script.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InteractiveStep {
    /// `None` (or absent) sends nothing and only waits.
    pub command: Option<String>,
    /// Seconds to wait before sending the command.
    pub delay: Option<u64>,
    #[serde(rename = "lava-send")]
    pub lava_send: Option<String>,
    #[serde(rename = "lava-sync")]
    pub lava_sync: Option<String>,
    #[serde(rename = "lava-wait")]
    pub lava_wait: Option<String>,
    #[serde(rename = "lava-wait-all")]
    pub lava_wait_all: Option<String>,
    /// Records a result under this name when set.
    pub name: Option<String>,
    pub wait_for_prompt: Option<bool>,
    #[serde(default)]
    pub successes: Vec<InteractiveSuccess>,
    #[serde(default)]
    pub failures: Vec<InteractiveFailure>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InteractiveSuccess {
    pub message: String,
}

/// Which LAVA exception an interactive failure raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum InteractiveException {
    InfrastructureError,
    JobError,
    TestError,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InteractiveFailure {
    pub message: String,
    pub exception: Option<InteractiveException>,
    pub error: Option<String>,
}

/// A monitor: between `start` and `end`, every `pattern` match is a test case.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Monitor {
    pub name: String,
    pub start: String,
    pub end: String,
    pub pattern: String,
    #[serde(default)]
    pub fixupdict: BTreeMap<String, TestResult>,
}
