//! `labd agent` with a `[master]` section runs the master link on its job runner: it pings the
//! lava-server double with its version, takes the job the double schedules for it, and reports
//! it FINISHED. The job's device dictionary is broken, so the runner ends it as LAVA does
//! (Incomplete, a Configuration error) without touching any board.

mod daemon_support;

use std::time::Duration;

use daemon_support::*;
use labd_hw_fixtures::lava_master::{JobState, MasterDouble};

const JOB: &str = "job_name: daemon master link
device_type: qemu
timeouts:
  job: {minutes: 2}
  action: {minutes: 1}
priority: medium
visibility: public
actions:
- boot:
    method: minimal
    prompts: ['# ']
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_takes_jobs_from_its_master() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let double = MasterDouble::start();
    double.add_worker("w1", "w1token");
    let inv = format!(
        "{}[master]\nurl = \"{}\"\ntoken = \"w1token\"\nversion = \"2023.01\"\nping_interval = 1\nws_url = \"\"\n",
        worker(d),
        double.url()
    );
    let agent = start_agent(d, &inv, &[]).await;
    wait_until(Duration::from_secs(30), "a ping", || {
        double.worker("w1").is_some_and(|w| w.pings > 0 && w.online)
    })
    .await;
    assert_eq!(
        double.worker("w1").unwrap().version.as_deref(),
        Some("2023.01")
    );

    let id = double.submit("w1", JOB, "device_type: [not a dictionary");
    wait_until(Duration::from_secs(60), "the job finished", || {
        double
            .job(id)
            .is_some_and(|j| j.state == JobState::Finished)
    })
    .await;
    let job = double.job(id).unwrap();
    let finish = job.finish.clone().unwrap_or_default();
    let field = |k: &str| {
        finish
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(field("state"), "FINISHED", "{finish:?}");
    assert_eq!(field("error_type"), "Configuration", "{finish:?}");
    assert!(
        double.violations().is_empty(),
        "{:?}\n{}",
        double.violations(),
        agent.log_text()
    );
}

/// A master that reads the ping and never answers (a wedged server or proxy) does not hold up
/// the daemon's stop, whatever `http_timeout` (600 s by default) says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_never_answered_does_not_hold_up_the_daemon_stop() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let double = MasterDouble::start();
    double.add_worker("w1", "w1token");
    double.hang("/scheduler/internal/v1/workers/");
    let inv = format!(
        "{}[master]\nurl = \"{}\"\ntoken = \"w1token\"\nversion = \"2023.01\"\nping_interval = 1\nws_url = \"\"\n",
        worker(d),
        double.url()
    );
    let mut agent = start_agent(d, &inv, &[]).await;
    wait_until(Duration::from_secs(30), "a ping in flight", || {
        double
            .requests()
            .iter()
            .any(|r| r.request.path.contains("/workers/") && r.status == 0)
    })
    .await;
    let stopping = std::time::Instant::now();
    let status = tokio::task::block_in_place(|| agent.child.stop(Duration::from_secs(30))).unwrap();
    let took = stopping.elapsed();
    assert!(status.success(), "{status:?}\n{}", agent.log_text());
    assert!(took < Duration::from_secs(5), "the stop took {took:?}");
}
