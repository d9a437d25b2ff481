//! Test-shell signal scanning speed: labd's `SignalScanner` against pexpect 4.8 doing what
//! lava-dispatcher's `TestShellAction` does (its `Expecter` with the same patterns and
//! `searchwindowsize=4000`), over the same console text in the same chunks, in the same run.
//! Run: `cargo bench --bench jobs_signals`.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use labd::jobs::signals::SignalScanner;

const PY: &str = r#"
import json, re, sys, time
from pexpect.spawnbase import SpawnBase
from pexpect.expect import Expecter, searcher_re
case = json.loads(sys.stdin.read())
sp = SpawnBase(timeout=1, encoding="utf-8", searchwindowsize=4000)
searcher = searcher_re([re.compile(p) for p in case["patterns"]])
n = 0
t = time.perf_counter()
for chunk in case["chunks"]:
    r = Expecter(sp, searcher, 4000).new_data(chunk)
    while r is not None:
        n += 1
        r = Expecter(sp, searcher, 4000).existing_data()
print(time.perf_counter() - t, n)
"#;

fn main() {
    // A test run's console: set -x traces, output lines, a signal every few lines.
    let mut text = String::new();
    let mut i = 0;
    while text.len() < 2_000_000 {
        text.push_str(&format!(
            "+ lava-test-case case{i} --shell ls /sys/class/net\r\n"
        ));
        text.push_str(&format!(
            "<LAVA_SIGNAL_STARTTC case{i}>\r\neth0  lo  wlan0\r\n<LAVA_SIGNAL_ENDTC case{i}>\r\n"
        ));
        text.push_str(&format!(
            "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=case{i} RESULT=pass>\r\n"
        ));
        text.push_str(
            "[  123.456789] usb 1-1: new high-speed USB device number 3 using xhci_hcd\r\n",
        );
        i += 1;
    }
    text.push_str("<LAVA_TEST_RUNNER EXIT>\r\n");
    for chunk_size in [64usize, 1024] {
        let chunks: Vec<String> = text
            .as_bytes()
            .chunks(chunk_size)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        let t = Instant::now();
        let mut s = SignalScanner::new();
        let mut n = 0;
        for c in &chunks {
            if s.feed(c).is_some() {
                n += 1;
                while s.next_event().is_some() {
                    n += 1;
                }
            }
        }
        let labd = t.elapsed().as_secs_f64();
        let patterns = [
            "<LAVA_TEST_RUNNER EXIT>",
            "<LAVA_TEST_RUNNER INSTALL_FAIL>",
            r"<LAVA_SIGNAL_(\S+) ([^>]+)>",
        ];
        let input = serde_json::json!({"patterns": patterns, "chunks": chunks}).to_string();
        let mut child = Command::new("/usr/bin/python3")
            .args(["-c", PY])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("/usr/bin/python3 with python3-pexpect");
        let mut stdin = child.stdin.take().unwrap();
        let w = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
        let out = child.wait_with_output().unwrap();
        w.join().unwrap();
        let text_out = String::from_utf8(out.stdout).unwrap();
        let mut it = text_out.split_whitespace();
        let py: f64 = it.next().unwrap().parse().unwrap();
        let py_n: usize = it.next().unwrap().parse().unwrap();
        assert_eq!(n, py_n, "both must find the same number of events");
        let mb = text.len() as f64 / 1e6;
        println!(
            "signals, {chunk_size}-byte chunks, {mb:.1} MB, {n} events: labd {:.1} MB/s   pexpect {:.1} MB/s   ratio {:.1}x",
            mb / labd,
            mb / py,
            py / labd
        );
    }
}
