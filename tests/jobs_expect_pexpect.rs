//! Differential test of labd's expect buffer against the real pexpect 4.8 (Debian's
//! python3-pexpect, as lava-dispatcher uses it): the same text in the same chunks, the same
//! patterns, `searchwindowsize=4000` → the same sequence of matches with the same `before` and
//! `after`, including text that scrolls out of the window unmatched.

use std::io::Write;
use std::process::{Command, Stdio};

use labd::jobs::expect::{ExpectBuffer, Pattern};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const PY: &str = r#"
import json, re, sys
from pexpect.spawnbase import SpawnBase
from pexpect.expect import Expecter, searcher_re
case = json.loads(sys.stdin.read())
sp = SpawnBase(timeout=1, encoding="utf-8", searchwindowsize=case["window"])
searcher = searcher_re([re.compile(p) for p in case["patterns"]])
out = []
for i, chunk in enumerate(case["chunks"]):
    r = Expecter(sp, searcher, case["window"]).new_data(chunk)
    while r is not None:
        out.append([i, r, sp.before, sp.after])
        # The next expect() call starts with the data already buffered.
        r = Expecter(sp, searcher, case["window"]).existing_data()
print(json.dumps(out))
"#;

const PATTERNS: &[&str] = &[
    "<LAVA_TEST_RUNNER EXIT>",
    "<LAVA_TEST_RUNNER INSTALL_FAIL>",
    r"<LAVA_SIGNAL_(\S+) ([^>]+)>",
    "/ # ",
    "Kernel panic - not syncing",
    "login:",
    r"[0-9]+ records out",
    r"(kernel BUG at|BUG:)",
];

fn noise(rng: &mut StdRng, n: usize) -> String {
    (0..n)
        .map(|_| match rng.random_range(0..12) {
            0 => '\n',
            1 => '\r',
            2 => ['é', '中', '😀', '\u{85}', '>', '<', ' '][rng.random_range(0..7)],
            _ => rng.random_range(0x20u8..0x7f) as char,
        })
        .collect()
}

fn stream(rng: &mut StdRng) -> String {
    let mut s = String::new();
    for _ in 0..rng.random_range(1..40) {
        let n = if rng.random_range(0..10) == 0 {
            rng.random_range(3000..9000)
        } else {
            rng.random_range(0..200)
        };
        s.push_str(&noise(rng, n));
        s.push_str(
            [
                "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=a RESULT=pass>\r\n",
                "<LAVA_SIGNAL_STARTTC x>",
                "<LAVA_SIGNAL_BROKEN no end",
                "<LAVA_TEST_RUNNER EXIT>\r\n",
                "/ # ",
                "debian login: ",
                "[   1.2] Kernel panic - not syncing: VFS\r\n",
                "1+0 records in\r\n1+0 records out\r\n",
                "BUG: KASAN: x\r\n",
                "",
            ][rng.random_range(0..10)],
        );
    }
    s
}

fn chunks(rng: &mut StdRng, s: &str) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let n = match rng.random_range(0..4) {
            0 => 1,
            1 => rng.random_range(1..16),
            2 => rng.random_range(16..600),
            _ => rng.random_range(600..5000),
        };
        let j = (i + n).min(chars.len());
        out.push(chars[i..j].iter().collect());
        i = j;
    }
    out
}

#[test]
fn matches_like_pexpect() {
    let mut rng = StdRng::seed_from_u64(4000);
    let pats: Vec<Pattern> = PATTERNS.iter().map(|p| Pattern::new(p).unwrap()).collect();
    let refs: Vec<&Pattern> = pats.iter().collect();
    let mut total = 0;
    for case in 0..40 {
        let window = if case % 5 == 0 { 200 } else { 4000 };
        let text = stream(&mut rng);
        let parts = chunks(&mut rng, &text);
        let mut buf = ExpectBuffer::new(Some(window));
        let mut ours = Vec::new();
        for (i, c) in parts.iter().enumerate() {
            buf.push(c);
            while let Some(m) = buf.search(&refs) {
                ours.push(serde_json::json!([i, m.index, m.before, m.after]));
            }
        }
        let input = serde_json::json!({"window": window, "patterns": PATTERNS, "chunks": parts})
            .to_string();
        let mut child = Command::new("/usr/bin/python3")
            .args(["-c", PY])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("/usr/bin/python3 with python3-pexpect (run .ci/install-deps)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "pexpect side failed");
        let theirs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(ours.len(), theirs.len(), "case {case}: number of matches");
        for (a, b) in ours.iter().zip(&theirs) {
            assert_eq!(a, b, "case {case}");
        }
        total += ours.len();
    }
    assert!(
        total > 200,
        "only {total} matches: the streams are too tame"
    );
}
