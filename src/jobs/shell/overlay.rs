//! The files LAVA's overlay puts under `/lava-<job id>/` on the DUT, built in memory so they
//! can be delivered over a console: the helpers in `bin/`, `environment`, and per test
//! definition `run.sh`, `uuid`, `install.sh` plus each stage's `lava-test-runner.conf`.

use serde_norway::Value;

use super::scripts::{HELPERS, helper};
use crate::jobs::model::{InlineTestDefinition, LavaSignal, TestDefinitionRef};

/// One file to create on the DUT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayFile {
    /// Absolute path on the DUT.
    pub path: String,
    pub content: Vec<u8>,
    /// Helpers are executable (LAVA sets 0755).
    pub executable: bool,
}

/// What the dispatcher needs to know about a test run to turn its signals into results.
#[derive(Debug, Clone, PartialEq)]
pub struct TestRunInfo {
    /// `<index>_<name>`: the `definition` of its test cases and the `case` of its ENDRUN
    /// result.
    pub testrun_id: String,
    /// `<job id>_<level>`.
    pub uuid: String,
    pub stage: usize,
    /// `/lava-<id>/<stage>/tests/<index>_<name>`.
    pub runner_path: String,
    /// The job's `path:` of the definition.
    pub path: String,
    /// The job's `repository:` (for inline definitions, the definition itself).
    pub repository: crate::jobs::log::LogValue,
    pub revision: Option<String>,
    /// `parse.pattern` and `parse.fixupdict` of the definition.
    pub parse_pattern: Option<String>,
    pub fixupdict: Option<std::collections::BTreeMap<String, String>>,
}

/// The overlay of one job, built up stage by stage.
#[derive(Debug, Clone)]
pub struct TestShellOverlay {
    pub job_id: String,
    /// `/lava-<id>`.
    pub results_dir: String,
    /// `lava_test_sh_cmd` (`/bin/sh`).
    pub sh: String,
    pub files: Vec<OverlayFile>,
    /// Every definition added so far, in order (LAVA's `testdef_index`).
    pub runs: Vec<TestRunInfo>,
}

impl TestShellOverlay {
    /// The helpers and the `environment` file; `environment` is the already flattened export
    /// list (see [`environment_exports`]).
    pub fn new(
        job_id: &str,
        results_dir: &str,
        sh: &str,
        environment: &[(String, String)],
    ) -> Self {
        let mut files: Vec<OverlayFile> = HELPERS
            .iter()
            .filter_map(|name| {
                Some(OverlayFile {
                    path: format!("{results_dir}/bin/{name}"),
                    content: helper(name, results_dir, sh)?.into_bytes(),
                    executable: true,
                })
            })
            .collect();
        let mut env = String::new();
        for (k, v) in environment {
            env.push_str(&format!("export {k}={v}\n"));
        }
        files.push(OverlayFile {
            path: format!("{results_dir}/environment"),
            content: env.into_bytes(),
            executable: false,
        });
        Self {
            job_id: job_id.to_string(),
            results_dir: results_dir.to_string(),
            sh: sh.to_string(),
            files,
            runs: Vec::new(),
        }
    }

    /// Directories to create before the files.
    pub fn directories(&self) -> Vec<String> {
        let mut dirs = vec![
            format!("{}/bin", self.results_dir),
            format!("{}/tests", self.results_dir),
            format!("{}/results", self.results_dir),
        ];
        for r in &self.runs {
            if !dirs.contains(&r.runner_path) {
                dirs.push(r.runner_path.clone());
            }
        }
        dirs
    }

    /// Adds the definitions of one test action as `stage`. `level` gives the pipeline level that
    /// makes each run's uuid (`<job id>_<level>`), from the definition's position in the job.
    /// Only inline definitions can be delivered; others are refused by job validation.
    pub fn add_stage(
        &mut self,
        stage: usize,
        definitions: &[(TestDefinitionRef, Option<Value>)],
        level: impl Fn(usize) -> String,
    ) -> Result<Vec<TestRunInfo>, String> {
        let mut conf = String::new();
        let mut added = Vec::new();
        for (def, raw_repo) in definitions {
            let crate::jobs::model::Repository::Inline(testdef) = &def.repository else {
                return Err(format!(
                    "test definition {:?}: only inline definitions can be delivered over a console",
                    def.name
                ));
            };
            let index = self.runs.len();
            let testrun_id = format!("{index}_{}", def.name);
            let uuid = format!("{}_{}", self.job_id, level(index));
            let runner_path = format!("{}/{stage}/tests/{testrun_id}", self.results_dir);
            conf.push_str(&runner_path);
            conf.push('\n');
            self.files.push(OverlayFile {
                path: format!("{runner_path}/uuid"),
                content: uuid.clone().into_bytes(),
                executable: false,
            });
            if let Some(install) = install_sh(testdef, def, &runner_path) {
                self.files.push(OverlayFile {
                    path: format!("{runner_path}/install.sh"),
                    content: install.into_bytes(),
                    executable: false,
                });
            }
            self.files.push(OverlayFile {
                path: format!("{runner_path}/run.sh"),
                content: run_sh(testdef, def, &testrun_id, &runner_path).into_bytes(),
                executable: false,
            });
            let parse = testdef.parse.as_ref();
            let info = TestRunInfo {
                testrun_id,
                uuid,
                stage,
                runner_path,
                path: def.path.clone(),
                repository: raw_repo
                    .as_ref()
                    .map(crate::jobs::signals::yaml_to_log)
                    .unwrap_or(crate::jobs::log::LogValue::Null),
                revision: def.revision.clone(),
                parse_pattern: parse.and_then(|p| p.pattern.clone()),
                fixupdict: parse.map(|p| {
                    p.fixupdict
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().to_string()))
                        .collect()
                }),
            };
            self.runs.push(info.clone());
            added.push(info);
        }
        self.files.push(OverlayFile {
            path: format!("{}/{stage}/lava-test-runner.conf", self.results_dir),
            content: conf.into_bytes(),
            executable: false,
        });
        Ok(added)
    }

    /// The command that starts a stage (`<dir>/bin/lava-test-runner <dir>/<stage>`).
    pub fn runner_command(&self, stage: usize) -> String {
        format!(
            "{dir}/bin/lava-test-runner {dir}/{stage}",
            dir = self.results_dir
        )
    }

    /// The commands LAVA sends before the runner: `export SHELL=<sh>`, `. <dir>/environment`.
    pub fn pre_commands(&self) -> [String; 2] {
        [
            format!("export SHELL={}", self.sh),
            format!(". {}/environment", self.results_dir),
        ]
    }
}

/// The parameter lines at the top of `run.sh` and `install.sh`.
fn parameter_lines(testdef: &InlineTestDefinition, def: &TestDefinitionRef) -> String {
    let mut out = String::from("###default parameters from test definition###\n");
    // LAVA writes an inline definition to a file with `yaml.safe_dump` (keys sorted) and reads
    // it back, so its defaults come out in key order; the job's own parameters keep the order
    // they arrive in.
    for src in [&testdef.params, &testdef.parameters].into_iter().flatten() {
        let mut items: Vec<_> = src.iter().collect();
        items.sort_by(|a, b| a.0.cmp(b.0));
        for (k, v) in items {
            let v = v.as_ref().map(|s| s.0.as_str()).unwrap_or("");
            out.push_str(&format!("{k}='{v}'\n"));
        }
    }
    out.push_str("######\n");
    out.push_str("###test parameters from job submission###\n");
    for (k, v) in &def.parameters {
        out.push_str(&format!("{k}='{v}'\n"));
    }
    out.push_str("######\n");
    out
}

/// `run.sh` exactly as lava-dispatcher's `TestRunnerAction` writes it.
pub fn run_sh(
    testdef: &InlineTestDefinition,
    def: &TestDefinitionRef,
    testrun_id: &str,
    runner_path: &str,
) -> String {
    let mut s = parameter_lines(testdef, def);
    s.push_str("set -e\nset -x\n");
    s.push_str(&format!("export TESTRUN_ID={testrun_id}\n"));
    s.push_str(&format!("cd {runner_path}\n"));
    s.push_str("UUID=`cat uuid`\n");
    s.push_str("set +x\n");
    let kmsg = def.lava_signal == LavaSignal::Kmsg;
    if kmsg {
        s.push_str("export KMSG=true\n");
        s.push_str("echo \"<0><LAVA_SIGNAL_STARTRUN $TESTRUN_ID $UUID>\" > /dev/kmsg\n");
    } else {
        s.push_str("echo \"<LAVA_SIGNAL_STARTRUN $TESTRUN_ID $UUID>\"\n");
    }
    s.push_str("set -x\n");
    let steps = testdef
        .run
        .as_ref()
        .map(|r| r.steps.as_slice())
        .unwrap_or(&[]);
    for step in steps.iter().flatten() {
        let mut cmd = step.0.clone();
        if cmd.contains("--cmd") || cmd.contains("--shell") {
            cmd = escape_positional(&cmd);
        }
        s.push_str(&cmd);
        s.push('\n');
    }
    s.push_str("set +x\n");
    if kmsg {
        s.push_str("unset KMSG\n");
        s.push_str("echo \"<0><LAVA_SIGNAL_ENDRUN $TESTRUN_ID $UUID>\" > /dev/kmsg\n");
    } else {
        s.push_str("echo \"<LAVA_SIGNAL_ENDRUN $TESTRUN_ID $UUID>\"\n");
    }
    s
}

/// `re.sub(r"\$(\d+)\b", r"\\$\1", cmd)`: `$1` → `\$1` so `--shell` commands keep their
/// positional parameters for `eval`.
fn escape_positional(cmd: &str) -> String {
    let b = cmd.as_bytes();
    let mut out = String::with_capacity(cmd.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            let mut j = i + 1;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            // `\b` after the digits: end of text or a non-word character next.
            let boundary = !cmd[j..]
                .chars()
                .next()
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
            if j > i + 1 && boundary {
                out.push('\\');
            }
        }
        // Push the whole UTF-8 character.
        let ch_len = cmd[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&cmd[i..i + ch_len]);
        i += ch_len;
    }
    out
}

/// `install.sh` when the definition has `install.steps` (the part that runs on any board; deps,
/// keys and sources need a distribution's package manager and are written as LAVA writes them).
fn install_sh(
    testdef: &InlineTestDefinition,
    def: &TestDefinitionRef,
    runner_path: &str,
) -> Option<String> {
    let install = testdef.install.as_ref()?;
    let skip = |k: &str| def.skip_install.iter().any(|s| s == k || s == "all");
    let mut s = parameter_lines(testdef, def);
    if !skip("keys") {
        for k in &install.keys {
            s.push_str(&format!("lava-add-keys {}\n", k.0));
        }
    }
    if !skip("sources") {
        for k in &install.sources {
            s.push_str(&format!("lava-add-sources {}\n", k.0));
        }
    }
    if !skip("deps") && !install.deps.is_empty() {
        s.push_str("lava-install-packages ");
        for d in &install.deps {
            s.push_str(&format!("{} ", d.0));
        }
        s.push('\n');
    }
    if !skip("steps") && !install.steps.is_empty() {
        s.push_str(&format!("cd {runner_path}\npwd\n"));
        for st in &install.steps {
            s.push_str(&st.0);
            s.push('\n');
        }
    }
    Some(s)
}

/// Python's `shlex.quote`.
pub fn shlex_quote(s: &str) -> String {
    if s.is_empty() {
        return "''".into();
    }
    let safe = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\"'\"'"))
    }
}

/// The `export` lines of LAVA's `environment` file (`CreateOverlay._export_data`): device
/// `environment`, `device_info` (`LAVA_DEVICE_INFO_*`), `static_info`, `storage_info`, the job's
/// (or Multi-Node protocol's) `environment`, then `LAVA_JOB_ID` and `LAVA_DISPATCHER_IP`.
pub fn environment_exports(
    device: &crate::jobs::device::DeviceConfiguration,
    job: &crate::jobs::model::JobDefinition,
    job_id: &str,
    dispatcher_ip: Option<&str>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let sources = [
        (&device.environment, ""),
        (&device.device_info, "LAVA_DEVICE_INFO"),
        (&device.static_info, "LAVA_STATIC_INFO"),
        (&device.storage_info, "LAVA_STORAGE_INFO"),
    ];
    for (data, prefix) in sources {
        if let Some(v) = data {
            export_data(&mut out, v, prefix);
        }
    }
    let job_env = job
        .multinode()
        .and_then(|m| m.environment.as_ref())
        .or(job.environment.as_ref());
    if let Some(v) = job_env {
        export_data(&mut out, v, "");
    }
    out.push(("LAVA_JOB_ID".into(), shlex_quote(job_id)));
    if let Some(ip) = dispatcher_ip {
        out.push(("LAVA_DISPATCHER_IP".into(), shlex_quote(ip)));
    }
    out
}

fn export_data(out: &mut Vec<(String, String)>, data: &Value, prefix: &str) {
    let join = |p: &str, k: &str| {
        if p.is_empty() {
            k.to_string()
        } else {
            format!("{p}_{k}")
        }
    };
    match data {
        Value::Mapping(m) => {
            for (k, v) in m {
                let key = match k {
                    Value::String(s) => s.clone(),
                    other => crate::jobs::signals::yaml_scalar_text(other),
                };
                export_data(out, v, &join(prefix, &key));
            }
        }
        Value::Sequence(s) => {
            for (i, v) in s.iter().enumerate() {
                export_data(out, v, &join(prefix, &i.to_string()));
            }
        }
        Value::Bool(b) => out.push((prefix.into(), if *b { "1" } else { "0" }.into())),
        Value::Number(n) if n.is_i64() || n.is_u64() => out.push((prefix.into(), n.to_string())),
        Value::Tagged(t) => export_data(out, &t.value, prefix),
        other => out.push((
            prefix.into(),
            shlex_quote(&crate::jobs::signals::yaml_scalar_text(other)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positional_escape_matches_python() {
        assert_eq!(
            escape_positional("lava-test-case x --shell echo $1 $23a $4"),
            "lava-test-case x --shell echo \\$1 $23a \\$4"
        );
        assert_eq!(shlex_quote("a b'c"), "'a b'\"'\"'c'");
        assert_eq!(shlex_quote("12"), "12");
        assert_eq!(shlex_quote(""), "''");
    }
}
