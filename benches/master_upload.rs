//! Log upload throughput: labd's uploader against lava-run's own sender (`lava_common.log.sender`
//! from Debian's lava-common 2023.01, the code lava-run runs), both posting the same records to
//! the same lava-server double, in the same run.
//!
//! - labd (wire only): `MasterClient::upload_logs` in batches of 1000, from memory.
//! - labd (full path): records through a `JobLogSink` into the on-disk buffer (append +
//!   fdatasync per batch), read back and uploaded by the master link, until the double holds
//!   them all: what a job pays for crash safety.
//! - lava-run: `sender()` fed through a multiprocessing pipe, as lava-run's `HTTPHandler` does.
//!
//! `cargo bench --bench master_upload`

use std::sync::Arc;
use std::time::{Duration, Instant};

use labd::ids::WorkerName;
use labd::master::{
    JobExecutor, JobLogSink, JobOutcome, MasterClient, MasterJob, MasterLink, MasterSettings,
    OutcomeFuture, TokenSource,
};
use labd_hw_fixtures::lava_master::{JobState, MasterDouble};
use tokio_util::sync::CancellationToken;

const RECORDS: usize = 50_000;

fn record(i: usize) -> String {
    format!(
        "{{\"dt\": \"2026-11-22T03:37:00.{:06}\", \"lvl\": \"target\", \"msg\": \"[    {i}.000000] BIOS-e820: [mem 0x0000000000100000-0x000000000ffdffff] usable line {i}\"}}",
        i % 1_000_000
    )
}

struct Emit;

impl JobExecutor for Emit {
    fn run(&self, _job: MasterJob, log: JobLogSink, _c: CancellationToken) -> OutcomeFuture {
        Box::pin(async move {
            for i in 0..RECORDS {
                log.line(record(i));
            }
            JobOutcome::complete("")
        })
    }
}

fn settings(url: &str, name: &str) -> MasterSettings {
    let mut s = MasterSettings::new(
        url,
        WorkerName::new(name).unwrap(),
        TokenSource::Inline("t".into()),
    );
    s.ping_interval = Duration::from_millis(200);
    s.job_log_interval = Duration::from_millis(50);
    s
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let records: Vec<String> = (0..RECORDS).map(record).collect();

    // labd, wire only.
    let d = MasterDouble::start();
    d.add_worker("w1", "t");
    let id = d.submit("w1", "job", "dev");
    let token = d.job(id).unwrap().token;
    let client = MasterClient::new(&settings(&d.url(), "w1")).unwrap();
    let jid = labd::ids::JobId::new(id.to_string()).unwrap();
    let start = Instant::now();
    rt.block_on(async {
        let mut index = 0u64;
        for chunk in records.chunks(1000) {
            let n = client
                .upload_logs(&jid, &token, chunk, index)
                .await
                .unwrap();
            index += n;
        }
    });
    let labd_wire = start.elapsed();
    assert_eq!(d.job(id).unwrap().lines.len(), RECORDS);

    // labd, full path through the on-disk buffer and the link.
    let d2 = MasterDouble::start();
    d2.add_worker("w2", "t");
    let state = tempfile::tempdir().unwrap();
    let id2 = d2.submit("w2", "job", "dev");
    let shutdown = CancellationToken::new();
    let link = rt.spawn(MasterLink::run(
        settings(&d2.url(), "w2"),
        Arc::new(Emit),
        state.path().to_path_buf(),
        shutdown.clone(),
    ));
    let start = Instant::now();
    d2.wait_for(Duration::from_secs(300), "all lines", |d| {
        d.job(id2).unwrap().state == JobState::Finished
    });
    let labd_full = start.elapsed();
    shutdown.cancel();
    rt.block_on(link).unwrap().unwrap();
    assert_eq!(d2.job(id2).unwrap().lines.len(), RECORDS);

    // lava-run's sender.
    let d3 = MasterDouble::start();
    d3.add_worker("w3", "t");
    let id3 = d3.submit("w3", "job", "dev");
    let token3 = d3.job(id3).unwrap().token;
    let script = format!(
        r#"
import multiprocessing, time
from lava_common.log import sender
N = {RECORDS}
def record(i):
    return '{{"dt": "2026-11-22T03:37:00.%06d", "lvl": "target", "msg": "[    %d.000000] BIOS-e820: [mem 0x0000000000100000-0x000000000ffdffff] usable line %d"}}' % (i % 1000000, i, i)
recs = [record(i).encode() for i in range(N)]
r, w = multiprocessing.Pipe(duplex=False)
p = multiprocessing.Process(target=sender, args=(r, "{url}scheduler/internal/v1/jobs/{id3}/logs/", "{token3}", 1))
t = time.monotonic()
p.start()
for b in recs:
    w.send_bytes(b)
w.send_bytes(b"")
p.join()
print(time.monotonic() - t)
"#,
        url = d3.url()
    );
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .output()
        .expect("python3 with lava-common (Debian's lava-common 2023.01)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lava_run: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(d3.job(id3).unwrap().lines.len(), RECORDS);
    let v: Vec<String> = [&d, &d2, &d3].iter().flat_map(|d| d.violations()).collect();
    assert!(v.is_empty(), "{v:?}");

    let rate = |s: f64| RECORDS as f64 / s;
    println!("log upload of {RECORDS} records (~150 B each) to the lava-server double:");
    println!(
        "  labd wire only            {:>7.2} s  {:>9.0} records/s",
        labd_wire.as_secs_f64(),
        rate(labd_wire.as_secs_f64())
    );
    println!(
        "  labd via disk buffer+link {:>7.2} s  {:>9.0} records/s",
        labd_full.as_secs_f64(),
        rate(labd_full.as_secs_f64())
    );
    println!(
        "  lava-run sender (python)  {:>7.2} s  {:>9.0} records/s",
        lava_run,
        rate(lava_run)
    );
    println!(
        "  ratio lava-run / labd: wire {:.2}x, full path {:.2}x",
        lava_run / labd_wire.as_secs_f64(),
        lava_run / labd_full.as_secs_f64()
    );
}
