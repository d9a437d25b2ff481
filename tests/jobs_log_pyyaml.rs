//! Differential test of labd's LAVA log writer against the real thing: Debian's
//! `lava_common.log.dump` (lava-common 2023.01) running on PyYAML's `CDumper` (libyaml), fed
//! thousands of random records, compared byte for byte. Also `datetime.isoformat()` for `dt`,
//! and labd's parser reading back what Python wrote.

use std::io::Write;
use std::process::{Command, Stdio};

use chrono::{NaiveDate, NaiveDateTime};
use labd::jobs::log::{Level, LogRecord, LogValue, format_dt, parse_line};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const PY: &str = r#"
import json, sys, math
from lava_common.log import dump
def fix(v):
    if isinstance(v, dict):
        if set(v) == {"$float"}:
            return float(v["$float"])
        return {k: fix(x) for k, x in v.items()}
    if isinstance(v, list):
        return [fix(x) for x in v]
    return v
for line in sys.stdin:
    rec = fix(json.loads(line))
    print(json.dumps(dump(rec)))
"#;

/// JSON that Python's `json` module reads back into the same Python values (floats are sent as
/// their exact text so NaN, infinities and -0.0 survive).
fn to_json(v: &LogValue) -> String {
    match v {
        LogValue::Null => "null".into(),
        LogValue::Bool(b) => b.to_string(),
        LogValue::Int(i) => i.to_string(),
        LogValue::Float(f) => {
            let text = if f.is_nan() {
                "nan".to_string()
            } else if f.is_infinite() {
                if *f > 0.0 {
                    "inf".into()
                } else {
                    "-inf".into()
                }
            } else {
                format!("{f:e}")
            };
            format!("{{\"$float\": {}}}", serde_json::to_string(&text).unwrap())
        }
        LogValue::Str(s) => serde_json::to_string(s).unwrap(),
        LogValue::List(l) => format!("[{}]", l.iter().map(to_json).collect::<Vec<_>>().join(", ")),
        LogValue::Map(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}: {}", serde_json::to_string(k).unwrap(), to_json(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn record_json(r: &LogRecord) -> String {
    let mut m = std::collections::BTreeMap::new();
    m.insert("dt".to_string(), LogValue::from(r.dt.as_str()));
    m.insert("lvl".to_string(), LogValue::from(r.lvl.as_str()));
    m.insert("msg".to_string(), r.msg.clone());
    if let Some(ns) = &r.ns {
        m.insert("ns".to_string(), LogValue::from(ns.as_str()));
    }
    to_json(&LogValue::Map(m))
}

fn random_char(rng: &mut StdRng) -> char {
    const SPECIAL: &[u32] = &[
        0x0, 0x7, 0x8, 0x9, 0xa, 0xb, 0xc, 0xd, 0x1b, 0x1f, 0x22, 0x27, 0x5c, 0x7f, 0x80, 0x85,
        0x9f, 0xa0, 0xad, 0xe9, 0xff, 0x100, 0x2028, 0x2029, 0x200b, 0xfeff, 0xfffd, 0xfffe,
        0xffff, 0xe000, 0xd7ff, 0x4e2d, 0x1f600, 0x1f4a9, 0x10ffff, 0x10000,
    ];
    match rng.random_range(0..10) {
        0..=5 => rng.random_range(0x20u8..0x7f) as char,
        6 => char::from_u32(SPECIAL[rng.random_range(0..SPECIAL.len())]).unwrap(),
        7 => [
            ' ', ' ', '\n', '\r', '\t', '"', '\\', ':', '#', '!', '&', '*', '{', '}', '[', ']', ',',
        ][rng.random_range(0..17)],
        8 => char::from_u32(rng.random_range(0x80..0x800)).unwrap_or('x'),
        _ => loop {
            if let Some(c) = char::from_u32(rng.random_range(0x800..0x110000)) {
                break c;
            }
        },
    }
}

fn random_string(rng: &mut StdRng, max: usize) -> String {
    let n = match rng.random_range(0..10) {
        0 => 0,
        1..=7 => rng.random_range(0..20.min(max + 1)),
        _ => rng.random_range(0..=max),
    };
    let mut s: String = (0..n).map(|_| random_char(rng)).collect();
    // Strings that look like other YAML scalars must still come out quoted as strings.
    if rng.random_range(0..12) == 0 {
        s = [
            "12", "1.5", "true", "null", "~", "", "yes", "0x1F", "-.inf", "1e3", "- a", "? x",
        ][rng.random_range(0..12)]
        .to_string();
    }
    s
}

fn random_float(rng: &mut StdRng) -> f64 {
    match rng.random_range(0..8) {
        0 => [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
            0.0,
            1e16,
            1e15,
            1e-5,
            1e-4,
            5e-324,
            f64::MAX,
            f64::MIN_POSITIVE,
        ][rng.random_range(0..12)],
        1 => rng.random_range(-1000i64..1000) as f64,
        2 => f64::from_bits(rng.random::<u64>()),
        3 => rng.random_range(0.0..1.0),
        4 => rng.random_range(-1e20..1e20),
        5 => (rng.random_range(0..100000) as f64) / 100.0,
        6 => 10f64.powi(rng.random_range(-30..30)) * rng.random_range(1.0..10.0),
        _ => rng.random::<f64>() * 1e300,
    }
}

fn random_value(rng: &mut StdRng, depth: usize) -> LogValue {
    let k = if depth >= 3 {
        rng.random_range(0..6)
    } else {
        rng.random_range(0..9)
    };
    match k {
        0 => LogValue::Null,
        1 => LogValue::Bool(rng.random()),
        2 => LogValue::Int(match rng.random_range(0..3) {
            0 => rng.random_range(-100..100),
            1 => rng.random(),
            _ => [i64::MIN, i64::MAX, 0, -1][rng.random_range(0..4)],
        }),
        3 => LogValue::Float(random_float(rng)),
        4 | 5 => LogValue::Str(random_string(rng, 300)),
        6 | 7 => {
            let mut m = std::collections::BTreeMap::new();
            for _ in 0..rng.random_range(0..6) {
                let key = if rng.random_range(0..8) == 0 {
                    // Around libyaml's 128-byte simple-key limit, in bytes not characters.
                    let c = ['k', 'é', '中', '😀'][rng.random_range(0..4)];
                    let n = rng.random_range(20..140);
                    std::iter::repeat_n(c, n).collect::<String>()
                } else {
                    random_string(rng, 40)
                };
                m.insert(key, random_value(rng, depth + 1));
            }
            LogValue::Map(m)
        }
        _ => LogValue::List(
            (0..rng.random_range(0..6))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
    }
}

fn random_dt(rng: &mut StdRng) -> NaiveDateTime {
    let micro = if rng.random_range(0..4) == 0 {
        0
    } else {
        rng.random_range(0..1_000_000)
    };
    NaiveDate::from_ymd_opt(
        rng.random_range(1970..2100),
        rng.random_range(1..13),
        rng.random_range(1..29),
    )
    .unwrap()
    .and_hms_micro_opt(
        rng.random_range(0..24),
        rng.random_range(0..60),
        rng.random_range(0..60),
        micro,
    )
    .unwrap()
}

/// Debian's interpreter: the one python3-yaml and lava-common are installed for (a pyenv or
/// venv `python3` earlier on PATH would not have them).
const DEBIAN_PYTHON: &str = "/usr/bin/python3";

fn python_dump(records: &[LogRecord]) -> Vec<String> {
    assert!(
        std::path::Path::new(DEBIAN_PYTHON).is_file(),
        "{DEBIAN_PYTHON} is missing; run .ci/install-deps"
    );
    let mut child = Command::new(DEBIAN_PYTHON)
        .args(["-c", PY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3");
    let mut input = String::new();
    for r in records {
        input.push_str(&record_json(r));
        input.push('\n');
    }
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "python3 with lava_common.log failed (is Debian's lava-common / python3-yaml installed? run .ci/install-deps)"
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<String>(l).unwrap())
        .collect()
}

#[test]
fn random_records_match_lava_common_dump() {
    let mut rng = StdRng::seed_from_u64(0x1ab0_2023);
    let mut records = Vec::new();
    for i in 0..4000 {
        let lvl = Level::ALL[i % Level::ALL.len()];
        let msg = match rng.random_range(0..3) {
            0 => LogValue::Str(random_string(&mut rng, 2000)),
            _ => random_value(&mut rng, 0),
        };
        let mut r = LogRecord::new(random_dt(&mut rng), lvl, msg);
        if lvl == Level::Feedback && rng.random() {
            r.ns = Some(random_string(&mut rng, 10));
        }
        records.push(r);
    }
    let py = python_dump(&records);
    assert_eq!(py.len(), records.len());
    let mut mismatches = 0;
    for (r, want) in records.iter().zip(&py) {
        let got = r.dump();
        if &got != want {
            mismatches += 1;
            if mismatches <= 5 {
                eprintln!("record {:?}\n labd:   {got}\n python: {want}", r.msg);
            }
        }
        // labd reads back what LAVA wrote.
        let back = parse_line(want).unwrap_or_else(|e| panic!("{e}: {want}"));
        assert_eq!(back.dt, r.dt);
        assert_eq!(back.lvl, r.lvl);
    }
    assert_eq!(
        mismatches,
        0,
        "{mismatches} of {} records differ",
        records.len()
    );
}

#[test]
fn long_lines_and_results_records_match() {
    let t = NaiveDate::from_ymd_opt(2023, 1, 1)
        .unwrap()
        .and_hms_micro_opt(0, 0, 0, 0)
        .unwrap();
    let base = LogRecord::new(t, Level::Target, "").dump().len();
    let mut records = Vec::new();
    // Around the 10**6 limit: plain ASCII (1 byte each) and escaped characters (4 bytes each).
    for len in [
        1_000_000 - base - 3,
        1_000_000 - base - 2,
        1_000_000 - base - 1,
        1_000_000 - base,
    ] {
        records.push(LogRecord::new(t, Level::Target, "x".repeat(len)));
    }
    for n in [249_000usize, 250_000] {
        records.push(LogRecord::new(t, Level::Debug, "\u{7}".repeat(n)));
        records.push(LogRecord::new(
            t,
            Level::Results,
            LogValue::map()
                .with("case", "x")
                .with("big", "y".repeat(n * 4)),
        ));
        records.push(LogRecord::new(
            t,
            Level::Debug,
            LogValue::List(vec!["é".into(); n / 2]),
        ));
    }
    // The test-case record of the reference.
    records.push(LogRecord::new(
        t,
        Level::Results,
        LogValue::map()
            .with("case", "pwd")
            .with("definition", "0_smoke")
            .with("endtc", 12i64)
            .with("measurement", 1.5)
            .with("result", "pass")
            .with("starttc", 10i64),
    ));
    let py = python_dump(&records);
    for (r, want) in records.iter().zip(&py) {
        let got = r.dump();
        assert!(
            got == *want,
            "len {} vs {}: {}",
            got.len(),
            want.len(),
            &want[..want.len().min(200)]
        );
    }
    assert_eq!(
        py.last().unwrap(),
        r#"{"dt": "2023-01-01T00:00:00", "lvl": "results", "msg": {"case": "pwd", "definition": "0_smoke", "endtc": ! "12", "measurement": ! "1.5", "result": "pass", "starttc": ! "10"}}"#
    );
}

#[test]
fn dt_matches_python_isoformat() {
    let mut rng = StdRng::seed_from_u64(7);
    let dts: Vec<NaiveDateTime> = (0..500).map(|_| random_dt(&mut rng)).collect();
    let args: Vec<String> = dts
        .iter()
        .map(|d| d.format("%Y %m %d %H %M %S %6f").to_string())
        .collect();
    let script = "import sys, datetime\nfor l in sys.stdin:\n    y,mo,d,h,mi,s,us = map(int, l.split())\n    print(datetime.datetime(y,mo,d,h,mi,s,us).isoformat())\n";
    let mut child = Command::new(DEBIAN_PYTHON)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(args.join("\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let py: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    for (d, want) in dts.iter().zip(&py) {
        assert_eq!(&format_dt(*d), want);
    }
    assert_eq!(py.len(), dts.len());
}
