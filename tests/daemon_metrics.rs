//! The running agent's `/metrics` endpoint, scraped with the real curl and parsed by the
//! Prometheus project's own text-format parser (python3-prometheus-client): console series with
//! the exact byte counts that went through, reconnects and clients; power series per PDU and
//! outlet after real requests through `labd power` (a healthy simulated PDU and a dead one).

mod daemon_support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use daemon_support::*;
use labd_hw_fixtures::simboard::{BoardScript, SimBoard};
use labd_hw_fixtures::simpdu::Faults;

const T: Duration = Duration::from_secs(30);

/// Debian's interpreter, the one python3-prometheus-client is installed for.
const PYTHON: &str = "/usr/bin/python3";

const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {"types": {}, "samples": []}
for fam in text_string_to_metric_families(sys.stdin.read()):
    out["types"][fam.name] = fam.type
    for s in fam.samples:
        out["samples"].append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;

/// Parsed scrape: family types and `name{k="v",...}` (labels sorted) → value.
struct Scrape {
    types: BTreeMap<String, String>,
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let k = key(name, labels);
        *self
            .samples
            .get(&k)
            .unwrap_or_else(|| panic!("no {k} in {:#?}", self.samples.keys()))
    }
}

fn key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    l.sort();
    format!("{name}{{{}}}", l.join(","))
}

async fn scrape_parsed(port: u16) -> Scrape {
    let (head, body) = curl(&format!("http://127.0.0.1:{port}/metrics")).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(
        std::path::Path::new(PYTHON).is_file(),
        "{PYTHON} is missing; run .ci/install-deps"
    );
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new(PYTHON)
            .args(["-c", PARSE])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused the scrape (python3-prometheus-client installed? run \
         .ci/install-deps): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let types = v["types"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, t)| (k.clone(), t.as_str().unwrap().to_string()))
        .collect();
    let samples = v["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let labels: Vec<(String, String)> = s[1]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            let l: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            (key(s[0].as_str().unwrap(), &l), s[2].as_f64().unwrap())
        })
        .collect();
    Scrape { types, samples }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_of_the_running_agent() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m1 = SimBoard::spawn("m1", d, BoardScript::silent()).unwrap();
    let m2 = SimBoard::spawn("m2", d, BoardScript::silent()).unwrap();
    m2.power_on();
    let pdu1 = HttpPdu::start("pdu1", 2).await;
    pdu1.wire(1, &m1);
    let pdu2 = HttpPdu::start("pdu2", 2).await;
    pdu2.pdu.set_faults(Faults {
        dead: true,
        ..Faults::default()
    });
    let port = labd_hw_fixtures::free_tcp_port();
    let inv = worker(d)
        + &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n[power]\nunhealthy_after = 1\n\n")
        + &pdu1.section("retries = 1\nretry_delay = \"50ms\"\ntimeout = \"2s\"")
        + &pdu2.section("retries = 1\nretry_delay = \"50ms\"\ntimeout = \"300ms\"")
        + &device("m1", &m1.tty_path(), Some(("pdu1", 1)))
        + &device("m2", &m2.tty_path(), Some(("pdu2", 2)));
    let agent = start_agent(d, &inv, &[]).await;
    let mut op = Operator::attach(&agent, "m1").await;

    // Power m1 on through the daemon; it prints exactly 1000 bytes; the operator types 4.
    let out = agent.labd(&["power", "m1", "on"]).await;
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(m1.is_powered());
    let payload: Vec<u8> = (0..1000u32).map(|i| b'a' + (i % 26) as u8).collect();
    assert_eq!(m1.write_raw(&payload), 1000);
    op.type_line("abc").await;
    assert!(m1.wait_for_input(b"abc\r", T));
    let t0 = std::time::Instant::now() - Duration::from_secs(60);
    op.wait_for(&payload[990..], t0, T).await;
    // m2's PDU never answers: the request fails after its retry.
    let out = agent.labd(&["power", "m2", "off"]).await;
    assert!(!out.status.success(), "{:?}", text(&out));
    // One replug of m1: one reconnect.
    m1.unplug();
    tokio::time::sleep(Duration::from_millis(300)).await;
    m1.replug().unwrap();
    wait_until(T, "m1 back", || {
        let log = agent.log_text();
        log.contains("console back")
    })
    .await;

    let s = scrape_parsed(port).await;
    let m1l = [("device", "m1")];
    let m2l = [("device", "m2")];
    assert_eq!(s.get("labd_console_online", &m1l), 1.0);
    assert_eq!(s.get("labd_console_online", &m2l), 1.0);
    assert_eq!(s.get("labd_console_bytes_in_total", &m1l), 1000.0);
    assert_eq!(s.get("labd_console_bytes_in_total", &m2l), 0.0);
    assert_eq!(s.get("labd_console_bytes_out_total", &m1l), 4.0);
    assert_eq!(s.get("labd_console_reconnects_total", &m1l), 1.0);
    assert_eq!(s.get("labd_console_reconnects_total", &m2l), 0.0);
    assert_eq!(s.get("labd_console_clients", &m1l), 1.0);
    assert_eq!(s.get("labd_console_clients", &m2l), 0.0);
    assert_eq!(s.get("labd_console_client_dropped_bytes_total", &m1l), 0.0);
    assert!(s.get("labd_console_journal_bytes_total", &m1l) >= 1004.0);
    assert_eq!(s.types["labd_console_online"], "gauge");
    assert_eq!(s.types["labd_console_bytes_in"], "counter");

    let o1 = [("pdu", "pdu1"), ("outlet", "1")];
    let o2 = [("pdu", "pdu2"), ("outlet", "2")];
    let with_op = |o: &[(&'static str, &'static str)], op: &'static str| {
        let mut v = o.to_vec();
        v.push(("op", op));
        v
    };
    assert_eq!(s.get("labd_power_requests_total", &with_op(&o1, "on")), 1.0);
    assert_eq!(s.get("labd_power_outlet_state", &o1), 1.0);
    assert_eq!(s.get("labd_power_retries_total", &o1), 0.0);
    assert!(s.get("labd_power_phase_milliseconds_total", &o1) >= 0.0);
    assert!(s.get("labd_power_last_phase_seconds", &o1) > 0.0);
    assert_eq!(s.get("labd_power_pdu_healthy", &[("pdu", "pdu1")]), 1.0);
    assert_eq!(
        s.get("labd_power_requests_total", &with_op(&o2, "off")),
        1.0
    );
    assert_eq!(
        s.get("labd_power_failures_total", &with_op(&o2, "off")),
        1.0
    );
    assert_eq!(s.get("labd_power_retries_total", &o2), 1.0);
    assert_eq!(s.get("labd_power_outlet_state", &o2), -1.0);
    assert_eq!(s.get("labd_power_pdu_healthy", &[("pdu", "pdu2")]), 0.0);
    assert_eq!(
        s.get("labd_power_pdu_consecutive_failures", &[("pdu", "pdu2")]),
        1.0
    );
    // Two attempts of at least the 300 ms timeout each, plus the retry delay.
    assert!(
        s.get(
            "labd_power_request_milliseconds_total",
            &with_op(&o2, "off")
        ) >= 600.0
    );
    drop(op);
}
