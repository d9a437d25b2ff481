//! labd restarts (shutdown as a crash would, then a new link on the same state directory)
//! against the lava-server double: results and unsent log lines are reported once, finished
//! jobs are not run again, running jobs are reported lost.

mod master_support;

use std::sync::Arc;
use std::time::Duration;

use labd::master::{JobOutcome, TokenSource};
use labd_hw_fixtures::lava_master::{JobHealth, JobState, MasterDouble};
use master_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reports_a_finished_job_and_its_unsent_lines_once() {
    init_tracing();
    let d = MasterDouble::start();
    d.add_worker("rst1", "t");
    let state = state_dir();
    let exec = TestExecutor::new(Script::Gated {
        before: 30,
        after: 70,
        outcome: JobOutcome::complete("desc"),
    });
    let id = d.submit("rst1", &definition("restart"), DEVICE);
    let s = settings(&d.url(), "rst1", TokenSource::Inline("t".into()));
    let link = start_link(s.clone(), exec.clone(), state.path());
    wait_until(Duration::from_secs(10), "first lines", || {
        d.job(id).unwrap().lines.len() == 30
    })
    .await;
    d.set_down(true);
    exec.gate.notify_one();
    let rec = state.path().join(format!("master/jobs/{id}/job.json"));
    wait_until(Duration::from_secs(10), "outcome on disk", || {
        std::fs::read_to_string(&rec).is_ok_and(|t| t.contains("\"pass\""))
    })
    .await;
    link.stop().await;
    // Pretend the crash hit between the master's acknowledgement and ours: the next labd
    // resends from index 10, and lava-server's index semantics must drop the duplicates.
    let dir = state.path().join(format!("master/jobs/{id}"));
    let first10: u64 = exec.emitted()[..10]
        .iter()
        .map(|l| l.len() as u64 + 1)
        .sum();
    std::fs::write(dir.join("log.ack"), format!("10 {first10}\n")).unwrap();
    d.set_down(false);
    let idle = TestExecutor::new(Script::Forever { lines: 0 });
    let link = start_link(s, idle.clone(), state.path());
    wait_until(Duration::from_secs(20), "finished after restart", || {
        d.job(id).unwrap().state == JobState::Finished
    })
    .await;
    wait_until(Duration::from_secs(5), "job dir removed", || !dir.exists()).await;
    link.stop().await;
    let job = d.job(id).unwrap();
    assert_eq!(job.lines, exec.emitted());
    assert_eq!(job.skipped_resends, 20);
    assert_eq!(job.health, JobHealth::Complete);
    assert_eq!(job.finished_posts, 1);
    assert!(
        idle.jobs.lock().unwrap().is_empty(),
        "a finished job must not run again"
    );
    assert_clean(&d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_while_running_reports_the_job_lost_with_all_its_lines() {
    init_tracing();
    let d = MasterDouble::start();
    d.add_worker("rst2", "t");
    let state = state_dir();
    let exec = TestExecutor::new(Script::Forever { lines: 25 });
    let id = d.submit("rst2", &definition("killed"), DEVICE);
    let s = settings(&d.url(), "rst2", TokenSource::Inline("t".into()));
    let link = start_link(s.clone(), exec.clone(), state.path());
    let log = state.path().join(format!("master/jobs/{id}/log.yaml"));
    wait_until(Duration::from_secs(10), "lines on disk", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == 25)
    })
    .await;
    d.set_down(true);
    link.stop().await;
    d.set_down(false);
    let link = start_link(s, Arc::new(TestExecutorNever), state.path());
    wait_until(Duration::from_secs(20), "finished after restart", || {
        d.job(id).unwrap().state == JobState::Finished
    })
    .await;
    link.stop().await;
    let job = d.job(id).unwrap();
    assert_eq!(job.lines[..25], exec.emitted()[..]);
    assert_eq!(job.lines.len(), 26);
    assert!(
        job.lines[25].contains(
            "\"lvl\": \"exception\", \"msg\": \"labd restarted while the job was running"
        ),
        "{}",
        job.lines[25]
    );
    let f = job.finish.unwrap();
    assert_eq!(f[1].1, "fail");
    assert_eq!(f[2].1, "Infrastructure");
    assert_eq!(job.finished_posts, 1);
    assert_clean(&d);
}

/// An executor that must never be called.
struct TestExecutorNever;

impl labd::master::JobExecutor for TestExecutorNever {
    fn run(
        &self,
        job: labd::master::MasterJob,
        _log: labd::master::JobLogSink,
        _cancel: tokio_util::sync::CancellationToken,
    ) -> labd::master::OutcomeFuture {
        panic!("job {} was started again after a restart", job.id)
    }
}
