//! A `labd run-job` client that stops reading (Ctrl-Z, a stalled pipe) neither slows the job
//! nor makes the daemon buffer its whole log: lines that do not fit the stream's queue are
//! dropped, a marker line says how many and where the full log is, and the end of the
//! stream still arrives. The daemon in this process, simulated boards on ptys, a client that
//! holds its socket without reading.

mod group_support;

use std::time::{Duration, Instant};

use group_support::{Lab, lab, single_job, two_roles};
use labd::control::ControlClient;
use labd::daemon::Daemon;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

const TWO_BOARDS: [(&str, &str, &str); 2] = [
    ("lead", "labd-sim", "[]"),
    ("follow", "labd-sim-master", "[]"),
];

/// Far more lines than the stream's queue (4096) and the socket hold.
const LINES: u32 = 20_000;

fn chatty() -> String {
    single_job(
        "chatty",
        4,
        &format!("          - seq 1 {LINES}\n          - lava-test-case counted --shell true"),
    )
}

/// Sends a `run-job` request and reads only the reply head: the rest stays unread.
async fn submit(lab: &Lab, body: serde_json::Value) -> BufReader<UnixStream> {
    let mut s = UnixStream::connect(lab.dir.path().join("state/labd.sock"))
        .await
        .unwrap();
    let mut line = serde_json::to_vec(&body).unwrap();
    line.push(b'\n');
    s.write_all(&line).await.unwrap();
    let mut r = BufReader::new(s);
    let mut head = String::new();
    r.read_line(&mut head).await.unwrap();
    assert!(head.contains("\"ok\":true"), "{head}");
    r
}

/// Waits (without reading the stream) until the daemon holds boards, then until it released
/// them all: the job ran to its end while the client read nothing.
async fn wait_job_over(lab: &Lab) {
    let client = ControlClient::new(lab.dir.path().join("state/labd.sock"));
    let held = || async {
        let v = client
            .request(serde_json::json!({"request": "status"}))
            .await
            .unwrap();
        v["boards"]["held"].as_array().unwrap().len()
    };
    let deadline = Instant::now() + Duration::from_secs(240);
    while held().await == 0 {
        assert!(Instant::now() < deadline, "the job never took its board");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while held().await > 0 {
        assert!(
            Instant::now() < deadline,
            "the job did not end while its client was not reading"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn read_rest(mut r: BufReader<UnixStream>) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut l = String::new();
    while r.read_line(&mut l).await.unwrap() > 0 {
        out.push(serde_json::from_str(&l).unwrap());
        l.clear();
    }
    out
}

/// The count in a drop marker that names `log`, if `line` (a LAVA log line) is one.
fn dropped(line: &str, log: &std::path::Path) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let msg = v["msg"].as_str()?;
    let n = msg
        .strip_prefix("labd: ")?
        .split(' ')
        .next()?
        .parse()
        .ok()?;
    assert_eq!(
        msg,
        format!(
            "labd: {n} log lines dropped: the client did not read them; the full log is in {}",
            log.display()
        )
    );
    assert_eq!(v["lvl"], "warning", "{line}");
    Some(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_job_whose_client_does_not_read_ends_and_the_client_gets_a_drop_marker() {
    let lab = lab(&TWO_BOARDS).await;
    let running = Daemon::load(&lab.inventory).unwrap().start().await.unwrap();
    let r = submit(
        &lab,
        serde_json::json!({"request": "run-job", "device": "lead", "definition": chatty(), "id": "77"}),
    )
    .await;
    wait_job_over(&lab).await;
    let msgs = read_rest(r).await;
    let log_file = lab.dir.path().join("state/jobs/77/output.yaml");
    let (mut kept, mut lost, mut markers) = (0u64, 0u64, 0);
    for m in &msgs[..msgs.len() - 1] {
        let line = m["log"].as_str().unwrap_or_else(|| panic!("{m}"));
        match dropped(line, &log_file) {
            Some(n) => {
                lost += n;
                markers += 1;
            }
            None => kept += 1,
        }
    }
    let end = msgs.last().unwrap();
    assert_eq!(end["end"]["health"], "complete", "{end}");
    assert!(markers >= 1, "no drop marker");
    assert!(
        kept < u64::from(LINES) / 2,
        "{kept} lines kept: not bounded"
    );
    // Every line of the job's log is either delivered or counted in a marker.
    let written = std::fs::read_to_string(&log_file).unwrap().lines().count() as u64;
    assert_eq!(kept + lost, written);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_whose_client_does_not_read_ends_and_the_client_gets_a_drop_marker() {
    let lab = lab(&TWO_BOARDS).await;
    let running = Daemon::load(&lab.inventory).unwrap().start().await.unwrap();
    let steps =
        format!("          - seq 1 {LINES}\n          - lava-test-case counted --shell true");
    let quiet = "          - lava-test-case quiet --shell true";
    let r = submit(
        &lab,
        serde_json::json!({"request": "run-job", "definition": two_roles(false, &steps, quiet), "id": "900"}),
    )
    .await;
    wait_job_over(&lab).await;
    let msgs = read_rest(r).await;
    let log_file = lab.dir.path().join("state/jobs/900/output.yaml");
    let (mut kept, mut lost) = (0u64, 0u64);
    for m in &msgs[..msgs.len() - 1] {
        let l = &m["line"];
        let line = l["line"].as_str().unwrap_or_else(|| panic!("{m}"));
        if l["job"] != "900" {
            continue;
        }
        assert_eq!(l["role"], "leader");
        match dropped(line, &log_file) {
            Some(n) => lost += n,
            None => kept += 1,
        }
    }
    let written = std::fs::read_to_string(&log_file).unwrap().lines().count() as u64;
    assert!(lost > 0, "no drop marker for the chatty sub-job");
    assert!(
        kept < u64::from(LINES) / 2,
        "{kept} lines kept: not bounded"
    );
    assert_eq!(kept + lost, written);
    let end = msgs.last().unwrap()["end"].as_array().unwrap().clone();
    assert_eq!(end.len(), 2, "{end:?}");
    running.stop().await;
}
