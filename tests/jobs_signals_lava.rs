//! Differential test of labd's test-shell session against lava-dispatcher 2023.01's own
//! `TestShellAction` (the Python code unpacked from Debian's lava-dispatcher package by
//! .ci/install-deps, run with Debian's lava-common and pexpect): random streams of valid and
//! malformed signals, parse-pattern output and noise, in random chunks, go through both; the log
//! records they write (levels, messages, results with their starttc/endtc) and the error that
//! ends the action must be identical. Durations are the only thing normalised.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use labd::jobs::log::{LogValue, LogWriter, parse_line};
use labd::jobs::shell::TestRunInfo;
use labd::jobs::signals::{SessionConfig, TestShellSession};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const LAVA_PY: &str = "/opt/lava-dispatcher/usr/lib/python3/dist-packages";

const PY: &str = r##"
import json, logging, re, sys, types
sys.path.insert(0, sys.argv[1])
from lava_common.log import YAMLLogger
from lava_common.exceptions import LAVAError
logging.setLoggerClass(YAMLLogger)
logger = logging.getLogger("dispatcher")
lines = []
class H(logging.Handler):
    def emit(self, rec):
        lines.append(rec.getMessage())
logger.addHandler(H())
logger.setLevel(logging.DEBUG)
import pexpect
from pexpect.spawnbase import SpawnBase
from pexpect.expect import Expecter, searcher_re
from lava_dispatcher.actions.test.shell import TestShellAction

case = json.loads(sys.stdin.read())
ns = {}
names = [r["name"] for r in case["runs"]]
uuids = [r["uuid"] for r in case["runs"]]
ns[("test-definition", "test-definition", "testdef_index")] = names
ns[("repo-action", "repo-action", "uuid-list")] = uuids
for r in case["runs"]:
    pat = None
    if r["pattern"] is not None:
        pat = {"testdef_pattern": {"pattern": r["pattern"], "fixupdict": r["fixupdict"]}}
    ns[("test", r["uuid"], "testdef_pattern")] = pat
    ns[("test", r["uuid"], "repository")] = r["repository"]
    ns[("test", r["uuid"], "path")] = r["path"]

a = TestShellAction()
a.job = types.SimpleNamespace(context={"other": {}}, device=None)
a.parameters = {"stage": case["stage"], "namespace": "common"}
a.get_namespace_data = lambda action, label, key, deepcopy=True, parameters=None: ns.get((action, label, key))
class Conn:
    def listen_feedback(self, timeout, namespace=None):
        return 0
conn = Conn()
orig = a.get_namespace_data
a.get_namespace_data = lambda action, label, key, deepcopy=True, parameters=None: conn if key == "connection" else orig(action, label, key)
a._reset_patterns()
sp = SpawnBase(timeout=1, encoding="utf-8", searchwindowsize=4000)

def searcher():
    items = [(k, v) for k, v in a.patterns.items() if k not in ("eof", "timeout")]
    return [k for k, _ in items], searcher_re([re.compile(v) if isinstance(v, str) else v for _, v in items])

error = None
done = False
try:
    for chunk in case["chunks"]:
        keys, s = searcher()
        r = Expecter(sp, s, 4000).new_data(chunk)
        while r is not None:
            m = types.SimpleNamespace(match=s.match)
            if not a.check_patterns(keys[r], m, "#"):
                done = True
                break
            keys, s = searcher()
            r = Expecter(sp, s, 4000).existing_data()
        if done:
            break
except LAVAError as e:
    error = [e.error_type, str(e)]
# The action's `finally`, then its end.
if a.current_run is not None:
    logger.error("Marking unfinished test run as failed")
    a.current_run["duration"] = "0.00"
    logger.results(a.current_run)
    a.current_run = None
if error is None and a.errors:
    error = ["Test", a.errors[0] if isinstance(a.errors, list) else str(a.errors)]
print(json.dumps({"lines": lines, "error": error, "done": done}))
"##;

fn runs() -> Vec<TestRunInfo> {
    let mk = |i: usize, name: &str, pattern: Option<&str>| TestRunInfo {
        testrun_id: format!("{i}_{name}"),
        uuid: format!("7_1.{}", i + 1),
        stage: 0,
        runner_path: format!("/lava-7/0/tests/{i}_{name}"),
        path: format!("inline/{name}.yaml"),
        repository: LogValue::map().with("metadata", LogValue::map().with("name", name)),
        revision: None,
        parse_pattern: pattern.map(str::to_string),
        fixupdict: pattern.map(|_| {
            [
                ("OK".to_string(), "pass".to_string()),
                ("NOK".to_string(), "fail".to_string()),
            ]
            .into_iter()
            .collect()
        }),
    };
    vec![
        mk(0, "smoke", None),
        mk(
            1,
            "parsed",
            Some(
                r"^(?P<test_case_id>[\w/]+): (?P<result>OK|NOK|SKIP)(?: (?P<measurement>[0-9.]+) (?P<units>\w+))?",
            ),
        ),
    ]
}

fn event(rng: &mut StdRng, run: usize) -> String {
    let id = ["a", "b", "c/d", "e"][rng.random_range(0..4)];
    let r = ["pass", "fail", "PASS", "SKIP", "unknown", "maybe"][rng.random_range(0..6)];
    match rng.random_range(0..22) {
        0 => format!(
            "<LAVA_SIGNAL_STARTRUN {run}_{} 7_1.{}>",
            ["smoke", "parsed"][run],
            run + 1
        ),
        1 => format!(
            "<LAVA_SIGNAL_ENDRUN {run}_{} 7_1.{}>",
            ["smoke", "parsed"][run],
            run + 1
        ),
        2 => format!("<LAVA_SIGNAL_STARTTC {id}>"),
        3 => format!("<LAVA_SIGNAL_ENDTC {id}>"),
        4..=6 => format!("<LAVA_SIGNAL_TESTCASE TEST_CASE_ID={id} RESULT={r}>"),
        7 => format!(
            "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID={id} RESULT={r} UNITS=s MEASUREMENT={}>",
            ["1.5", "10", "1e3", "x", "-0.25", "NaN"][rng.random_range(0..6)]
        ),
        8 => format!("<LAVA_SIGNAL_TESTCASE TEST_CASE_ID={id} UNITS=MB RESULT={r}>"),
        9 => "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=bad token RESULT=pass>".into(),
        10 => "<LAVA_SIGNAL_TESTSET START net>".into(),
        11 => "<LAVA_SIGNAL_TESTSET STOP>".into(),
        12 => format!("<LAVA_SIGNAL_TESTREFERENCE {id} {r} http://example.com/{id}>"),
        13 => "<LAVA_SIGNAL_TESTEVENT something happened>".into(),
        14 => "<LAVA_SIGNAL_TESTFEEDBACK other>".into(),
        15 => "<LAVA_SIGNAL_TESTFEEDBACK nowhere>".into(),
        16 => format!(
            "{id}: {}",
            ["OK", "NOK", "SKIP", "OK 3.5 ms"][rng.random_range(0..4)]
        ),
        17 => "<LAVA_SIGNAL_UNKNOWN x y>".into(),
        18 => "noise \"quoted\" é 😀".into(),
        19 => "<LAVA_SIGNAL_TESTCASE RESULT=pass>".into(),
        20 => "<LAVA_TEST_RUNNER INSTALL_FAIL>".into(),
        _ => [
            "<LAVA_SIGNAL_TESTRAISE it broke>",
            "<LAVA_SIGNAL_TESTREFERENCE x pass>",
            "<LAVA_SIGNAL_TESTSET START>",
            "<LAVA_TEST_RUNNER EXIT>",
        ][rng.random_range(0..4)]
        .into(),
    }
}

fn stream(rng: &mut StdRng) -> String {
    let mut s = String::new();
    let mut run = 0;
    s.push_str("<LAVA_SIGNAL_STARTRUN 0_smoke 7_1.1>\r\n");
    for _ in 0..rng.random_range(5..60) {
        if rng.random_range(0..15) == 0 {
            run = 1 - run;
        }
        s.push_str(&event(rng, run));
        s.push_str(["\r\n", "\n", " ", "\r\n+ x\r\n"][rng.random_range(0..4)]);
    }
    s
}

fn chunks(rng: &mut StdRng, s: &str) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let j = (i + rng.random_range(1..200)).min(chars.len());
        out.push(chars[i..j].iter().collect());
        i = j;
    }
    out
}

/// Durations differ (wall clock); everything else must not.
fn normalise(line: &str) -> String {
    let re = regex::Regex::new(r#"("duration": ")[0-9.]+(")|(duration )[0-9.]+"#).unwrap();
    let rec = parse_line(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let mut rec = rec;
    rec.dt = String::new();
    re.replace_all(&rec.dump(), "${1}${3}D${2}").into_owned()
}

#[test]
fn session_matches_lava_dispatcher() {
    assert!(
        std::path::Path::new(LAVA_PY)
            .join("lava_dispatcher/actions/test/shell.py")
            .is_file(),
        "{LAVA_PY}: run .ci/install-deps (it unpacks lava-dispatcher)"
    );
    let mut rng = StdRng::seed_from_u64(202_301);
    let mut compared = 0;
    for case in 0..60 {
        let text = stream(&mut rng);
        let parts = chunks(&mut rng, &text);
        let runs = runs();
        // labd
        let mut session = TestShellSession::new(SessionConfig {
            feedback_namespaces: vec!["other".into()],
            ..SessionConfig::new(0, runs.clone())
        });
        let t = Instant::now();
        let mut log = LogWriter::new(Vec::new());
        let mut error = None;
        let mut done = false;
        for c in &parts {
            match session.feed(c, t, &mut log) {
                Ok(o) if o.finished => {
                    done = true;
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    error = Some((e.kind.as_str().to_string(), e.message));
                    break;
                }
            }
        }
        if let Err(e) = session.finish(t, &mut log) {
            if error.is_none() {
                error = Some((e.kind.as_str().to_string(), e.message));
            }
        }
        // lava-dispatcher
        let input = serde_json::json!({
            "stage": 0,
            "chunks": parts,
            "runs": runs.iter().map(|r| serde_json::json!({
                "name": r.testrun_id.split_once('_').unwrap().1,
                "uuid": r.uuid,
                "pattern": r.parse_pattern,
                "fixupdict": r.fixupdict,
                "repository": r.repository.to_json(),
                "path": r.path,
            })).collect::<Vec<_>>(),
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
            "case {case}: the lava-dispatcher side failed"
        );
        let theirs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let their_lines: Vec<String> = theirs["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| normalise(l.as_str().unwrap()))
            .filter(|l| !l.contains("\"lvl\": \"debug\", \"msg\": \"pwd: "))
            .collect();
        // LAVA logs its report with PyYAML's block style; labd's comes from serde_norway. The
        // report is a debug line at the very end: compared separately below.
        let ours: Vec<String> = log.sink().iter().map(|l| normalise(l)).collect();
        let strip_report =
            |v: &[String]| -> Vec<String> { v.iter().filter(|l| !is_report(l)).cloned().collect() };
        assert_eq!(
            strip_report(&ours),
            strip_report(&their_lines),
            "case {case}: records differ\ninput: {text:?}"
        );
        let their_err = theirs["error"].as_array().map(|e| {
            (
                e[0].as_str().unwrap().to_string(),
                e[1].as_str().unwrap().to_string(),
            )
        });
        assert_eq!(error, their_err, "case {case}: error\ninput: {text:?}");
        assert_eq!(done, theirs["done"].as_bool().unwrap(), "case {case}: EXIT");
        compared += ours.len();
    }
    assert!(compared > 500, "only {compared} records compared");
}

fn is_report(line: &str) -> bool {
    // The final `yaml_safe_dump(self.report)` debug record: "case: result\n..." text.
    line.contains("\"lvl\": \"debug\"")
        && line.contains("\\n\"}")
        && !line.contains("Received signal")
}
