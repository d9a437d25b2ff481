//! Differential test of the generated `run.sh` and `install.sh` against lava-dispatcher
//! 2023.01's own `TestRunnerAction` / `TestInstallAction` (the Python code unpacked from Debian's
//! lava-dispatcher package by .ci/install-deps): same job, same definition → same bytes.

use std::io::Write;
use std::process::{Command, Stdio};

use labd::jobs::JobDefinition;
use labd::jobs::model::{Action, TestKind};
use labd::jobs::shell::TestShellOverlay;

const LAVA_PY: &str = "/opt/lava-dispatcher/usr/lib/python3/dist-packages";

const PY: &str = r##"
import json, logging, os, sys, tempfile, types
sys.path.insert(0, sys.argv[1])
from lava_common.log import YAMLLogger
logging.setLoggerClass(YAMLLogger)
logging.getLogger("dispatcher").addHandler(logging.NullHandler())
from lava_common.compat import yaml_safe_dump
import lava_dispatcher.actions.deploy.testdef as testdef
from lava_dispatcher.actions.deploy.testdef import TestInstallAction, TestRunnerAction

case = json.loads(sys.stdin.read())
out = {}
for kind in ("run", "install"):
    # The overlay lives in DISPATCHER_DOWNLOAD_DIR/<job>/<overlay dir>/ as on a worker, so
    # install.sh's `cd` (derived from that path) comes out as on a worker.
    base = tempfile.mkdtemp()
    testdef.DISPATCHER_DOWNLOAD_DIR = base
    overlay = os.path.join(base, case["job_id"], "overlay-x") + case["runner_path"]
    os.makedirs(overlay)
    import yaml
    d = yaml.safe_load(case["definition"])
    yaml_file = os.path.join(overlay, d["path"])
    os.makedirs(os.path.dirname(yaml_file), exist_ok=True)
    with open(yaml_file, "w") as f:
        f.write(yaml_safe_dump(d["repository"]))
    a = TestRunnerAction() if kind == "run" else TestInstallAction()
    a.job = types.SimpleNamespace(device=None, job_id=case["job_id"], context={}, protocols=[])
    a.level = "1.3.3"
    params = dict(d)
    params["test_name"] = case["test_name"]
    a.parameters = params
    a.test_uuid = case["uuid"]
    ns = {
        ("uuid", "overlay_path", case["test_name"]): overlay,
        ("uuid", "runner_path", case["test_name"]): case["runner_path"],
        ("test-runscript-overlay", "test-runscript-overlay", "testdef_levels"): {"1.3.3": case["test_name"]},
        ("test", case["uuid"], "testdef_metadata"): {},
    }
    a.get_namespace_data = lambda action, label, key, deepcopy=True, parameters=None: ns.get((action, label, key))
    a.set_namespace_data = lambda **kw: None
    if kind == "install":
        a.validate()
    a.run(None, None)
    name = "run.sh" if kind == "run" else "install.sh"
    p = os.path.join(overlay, name)
    out[kind] = open(p).read() if os.path.exists(p) else None
print(json.dumps(out))
"##;

const JOB: &str = r#"
device_type: qemu
job_name: run.sh
visibility: public
timeouts: {job: {minutes: 5}}
actions:
- test:
    definitions:
    - from: inline
      name: smoke
      path: inline/smoke.yaml
      parameters: {TEST: quick, COUNT: 3, EMPTY: ''}
      params: {EXTRA: x}
      repository:
        metadata: {format: Lava-Test Test Definition 1.0, name: smoke, description: d}
        params: {VERBOSE: 1, FLAG: true}
        parameters: {MODE: fast}
        install:
          steps: [echo installing, "cd /tmp"]
          deps: [curl, wget]
        run:
          steps:
          - lava-test-case pwd --shell pwd
          - lava-test-case arg --shell echo $1 $12 $1x
          -
          - echo "$TEST" '$1'
    - from: inline
      name: kmsg
      path: kmsg.yaml
      lava-signal: kmsg
      skip_install: [deps]
      repository:
        metadata: {format: Lava-Test Test Definition 1.0, name: kmsg}
        install: {deps: [x], steps: [true]}
        run: {steps: [dmesg]}
"#;

#[test]
fn run_and_install_scripts_match_lavas() {
    assert!(
        std::path::Path::new(LAVA_PY)
            .join("lava_dispatcher/actions/deploy/testdef.py")
            .is_file(),
        "{LAVA_PY}: run .ci/install-deps (it unpacks lava-dispatcher)"
    );
    let job = JobDefinition::parse_and_validate(JOB).unwrap();
    let Action::Test(t) = &job.actions[0] else {
        panic!()
    };
    let TestKind::Definitions(defs) = &t.kind else {
        panic!()
    };
    let raw: serde_norway::Value = serde_norway::from_str(JOB).unwrap();
    let with_raw: Vec<_> = defs
        .iter()
        .enumerate()
        .map(|(i, d)| (d.clone(), job.raw_repository(0, i)))
        .collect();
    let mut ov = TestShellOverlay::new("12", "/lava-12", "/bin/sh", &[]);
    let runs = ov
        .add_stage(0, &with_raw, |i| format!("1.{}", i + 1))
        .unwrap();
    for (i, run) in runs.iter().enumerate() {
        let file = |name: &str| {
            ov.files
                .iter()
                .find(|f| f.path == format!("{}/{name}", run.runner_path))
                .map(|f| String::from_utf8(f.content.clone()).unwrap())
        };
        // The Python side gets the definition as lava-run does: YAML text, `yaml.safe_load`ed
        // (so the job's own key order is kept).
        let def = serde_norway::to_string(&raw["actions"][0]["test"]["definitions"][i]).unwrap();
        let input = serde_json::json!({
            "job_id": "12",
            "uuid": run.uuid,
            "test_name": run.testrun_id,
            "runner_path": run.runner_path,
            "definition": def,
        })
        .to_string();
        let mut child = Command::new("/usr/bin/python3")
            .args(["-c", PY, LAVA_PY])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "lava-dispatcher side failed for {}",
            run.testrun_id
        );
        let theirs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            file("run.sh").as_deref(),
            theirs["run"].as_str(),
            "{}: run.sh",
            run.testrun_id
        );
        assert_eq!(
            file("install.sh").as_deref(),
            theirs["install"].as_str(),
            "{}: install.sh",
            run.testrun_id
        );
    }
}
