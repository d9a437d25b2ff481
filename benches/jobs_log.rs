//! Log writing speed: labd's `LogRecord::dump` against lava-dispatcher's own
//! `lava_common.log.dump` (PyYAML CDumper) on the same records, in the same run; and labd's
//! parser against PyYAML's `CLoader` (what lava-server uses to read logs). Prints records per
//! second and the ratios. Run: `cargo bench --bench jobs_log`.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use labd::jobs::log::{Level, LogRecord, LogValue, parse_line};

const N: usize = 200_000;

fn records() -> Vec<LogRecord> {
    let t = chrono::NaiveDate::from_ymd_opt(2026, 11, 22)
        .unwrap()
        .and_hms_micro_opt(3, 37, 0, 745087)
        .unwrap();
    (0..N)
        .map(|i| match i % 10 {
            9 => LogRecord::new(
                t,
                Level::Results,
                LogValue::map()
                    .with("case", format!("case-{i}"))
                    .with("definition", "0_smoke")
                    .with("result", "pass")
                    .with("measurement", i as f64 / 7.0)
                    .with("starttc", i as i64)
                    .with("endtc", i as i64 + 2),
            ),
            _ => LogRecord::new(
                t,
                Level::Target,
                format!("[    {}.{:06}] usb 1-1: new high-speed USB device number {i} using \"xhci_hcd\"", i / 1000, i % 1000),
            ),
        })
        .collect()
}

const PY: &str = r#"
import sys, time, yaml
from lava_common.log import dump
data = [yaml.load(l, Loader=yaml.CLoader) for l in sys.stdin.read().splitlines()]
t = time.perf_counter()
out = [dump(d) for d in data]
dump_s = time.perf_counter() - t
t = time.perf_counter()
for l in out:
    yaml.load(l, Loader=yaml.CLoader)
load_s = time.perf_counter() - t
print(dump_s, load_s)
"#;

fn main() {
    let recs = records();
    let t = Instant::now();
    let lines: Vec<String> = recs.iter().map(LogRecord::dump).collect();
    let labd_dump = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for l in &lines {
        std::hint::black_box(parse_line(l).unwrap());
    }
    let labd_parse = t.elapsed().as_secs_f64();

    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", PY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 (python3-yaml, lava-common)");
    let mut stdin = child.stdin.take().unwrap();
    let input = lines.join("\n");
    let w = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let out = child.wait_with_output().unwrap();
    w.join().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut it = text.split_whitespace().map(|s| s.parse::<f64>().unwrap());
    let (py_dump, py_load) = (it.next().unwrap(), it.next().unwrap());

    let rate = |s: f64| N as f64 / s;
    println!("records: {N} (90% target lines, 10% results dicts)");
    println!(
        "dump:  labd {:>10.0} rec/s   lava_common.log.dump (CDumper) {:>10.0} rec/s   ratio {:.1}x",
        rate(labd_dump),
        rate(py_dump),
        py_dump / labd_dump
    );
    println!(
        "parse: labd {:>10.0} rec/s   PyYAML CLoader                 {:>10.0} rec/s   ratio {:.1}x",
        rate(labd_parse),
        rate(py_load),
        py_load / labd_parse
    );
}
