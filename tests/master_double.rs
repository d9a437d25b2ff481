//! The master link against the lava-server double (`labd_hw_fixtures::lava_master`), which checks
//! every request against what the real lava-worker/lava-run 2023.01 send and answers as
//! lava-server 2023.01 does. Jobs are run by the TEST EXECUTOR of `master_support`.

mod master_support;

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use labd::master::{JobOutcome, MasterClient, MasterError, TokenSource};
use labd_hw_fixtures::lava_master::{JobHealth, JobState, MasterDouble};
use master_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_and_keeps_the_token_in_a_0600_file() {
    init_tracing();
    let d = MasterDouble::start();
    let state = state_dir();
    let token_file = state.path().join("master").join("token");
    let exec = TestExecutor::new(Script::Finish {
        lines: 1,
        outcome: JobOutcome::complete(""),
    });
    let s = settings(&d.url(), "reg1", TokenSource::File(token_file.clone()));
    let link = start_link(s.clone(), exec.clone(), state.path());
    wait_until(Duration::from_secs(10), "worker online", || {
        d.worker("reg1").is_some_and(|w| w.online)
    })
    .await;
    link.stop().await;
    let token = d.worker("reg1").unwrap().token;
    assert_eq!(std::fs::read_to_string(&token_file).unwrap(), token);
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let reqs = d.requests();
    assert_eq!(reqs[0].request.method, "POST");
    assert_eq!(reqs[0].request.path, "/scheduler/internal/v1/workers/");
    assert_eq!(reqs[0].request.body, b"name=reg1");
    assert_eq!(reqs[1].request.header("LAVA-Token"), Some(token.as_str()));
    assert_eq!(reqs[1].request.query.as_deref(), Some("version=2023.01"));
    // A second start reads the file and does not register again.
    let link = start_link(s, exec, state.path());
    let before = d.requests().len();
    wait_until(Duration::from_secs(10), "a ping", || {
        d.requests().len() > before
    })
    .await;
    link.stop().await;
    let posts = d
        .requests()
        .iter()
        .filter(|r| r.request.method == "POST")
        .count();
    assert_eq!(posts, 1);
    assert_clean(&d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_every_interval_with_lava_worker_headers() {
    init_tracing();
    let d = MasterDouble::start();
    d.add_worker("cad1", "cadtoken");
    let state = state_dir();
    let exec = TestExecutor::new(Script::Finish {
        lines: 1,
        outcome: JobOutcome::complete(""),
    });
    let mut s = settings(&d.url(), "cad1", TokenSource::Inline("cadtoken".into()));
    s.ping_interval = Duration::from_secs(1);
    let link = start_link(s, exec, state.path());
    wait_until(Duration::from_secs(10), "4 pings", || pings(&d).len() >= 4).await;
    link.stop().await;
    let p = pings(&d);
    for w in p.windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(
            gap >= Duration::from_millis(900) && gap <= Duration::from_millis(2000),
            "ping gap {gap:?}"
        );
    }
    let r = &p[0].request;
    assert_eq!(r.path, "/scheduler/internal/v1/workers/cad1/");
    assert_eq!(r.header("User-Agent"), Some("lava-worker 2023.01"));
    assert_eq!(r.header("LAVA-Token"), Some("cadtoken"));
    assert_eq!(
        p[0].response,
        r#"{"cancel": [], "running": [], "start": []}"#
    );
    assert!(d.worker("cad1").unwrap().online);
    let text = labd::metrics::global().render();
    let line = text
        .lines()
        .find(|l| l.starts_with("labd_master_last_ping_success_timestamp_seconds{worker=\"cad1\"}"))
        .expect("last ping metric");
    let ts: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(now - ts < 5.0, "{line}");
    assert_clean(&d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_a_job_start_running_logs_finished() {
    init_tracing();
    let d = MasterDouble::start();
    d.add_worker("job1", "t1");
    let state = state_dir();
    let description = "compatibility: 4\npipeline:\n- class: actions.boot.qemu.BootQEMUImageAction\n  level: '1'\n";
    let exec = TestExecutor::new(Script::Finish {
        lines: 2500,
        outcome: JobOutcome::complete(description),
    });
    let id = d.submit("job1", &definition("complete"), DEVICE);
    let link = start_link(
        settings(&d.url(), "job1", TokenSource::Inline("t1".into())),
        exec.clone(),
        state.path(),
    );
    wait_until(Duration::from_secs(30), "job finished", || {
        d.job(id).unwrap().state == JobState::Finished
    })
    .await;
    let job_dir = state.path().join("master/jobs").join(id.to_string());
    wait_until(Duration::from_secs(5), "job dir removed", || {
        !job_dir.exists()
    })
    .await;
    link.stop().await;

    let job = d.job(id).unwrap();
    let given = exec.jobs.lock().unwrap()[0].clone();
    assert_eq!(given.definition, definition("complete"));
    assert_eq!(given.device, DEVICE);
    assert_eq!(given.dispatcher, "");
    assert_eq!(given.env_dut, "");
    assert_eq!(given.token, job.token);
    assert_eq!(job.health, JobHealth::Complete);
    assert_eq!(job.running_posts, 1);
    assert_eq!(job.finished_posts, 1);
    let fields: Vec<(&str, &str)> = job
        .finish
        .as_ref()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        fields,
        [
            ("state", "FINISHED"),
            ("result", "pass"),
            ("error_type", ""),
            ("errors", ""),
            ("description", description)
        ]
    );
    // Every line exactly once, in order, in batches of at most 1000 whose index is the count
    // the server already held.
    assert_eq!(job.lines, exec.emitted());
    let mut held = 0;
    for (index, n, count) in &job.log_posts {
        assert_eq!(*index, held);
        assert!(*n <= 1000);
        held += *count as u64;
    }
    assert!(
        job.log_posts.iter().any(|(_, n, _)| *n == 1000),
        "{:?}",
        job.log_posts
    );
    assert_eq!(job.skipped_resends, 0);
    // Order of calls: fetch, RUNNING, logs..., FINISHED last.
    let calls: Vec<String> = d
        .requests()
        .iter()
        .filter(|r| r.request.path.contains("/jobs/"))
        .map(|r| format!("{} {}", r.request.method, r.request.path))
        .collect();
    let base = format!("/scheduler/internal/v1/jobs/{id}/");
    assert_eq!(calls[0], format!("GET {base}"));
    assert_eq!(calls[1], format!("POST {base}"));
    assert_eq!(calls.last().unwrap(), &format!("POST {base}"));
    let metrics = labd::metrics::global().render();
    for want in [
        "labd_master_jobs_started_total{worker=\"job1\"} 1\n",
        "labd_master_jobs_finished_total{worker=\"job1\",result=\"complete\"} 1\n",
        "labd_master_jobs_running{worker=\"job1\"} 0\n",
        "labd_master_log_lines_uploaded_total{worker=\"job1\"} 2500\n",
        "labd_master_pings_failed_total{worker=\"job1\"} 0\n",
    ] {
        assert!(metrics.contains(want), "{want} not in\n{metrics}");
    }
    let log_req = d
        .requests()
        .into_iter()
        .find(|r| r.request.path.ends_with("/logs/"))
        .unwrap();
    assert_eq!(log_req.request.header("User-Agent"), Some("lava 2023.01"));
    assert_eq!(
        log_req.request.header("LAVA-Token"),
        Some(job.token.as_str())
    );
    assert_clean(&d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_the_job_and_reports_canceled() {
    init_tracing();
    let d = MasterDouble::start();
    d.add_worker("can1", "t");
    let state = state_dir();
    let exec = TestExecutor::new(Script::UntilCanceled { lines: 5 });
    let id = d.submit("can1", &definition("cancel"), DEVICE);
    let link = start_link(
        settings(&d.url(), "can1", TokenSource::Inline("t".into())),
        exec.clone(),
        state.path(),
    );
    wait_until(Duration::from_secs(10), "running", || {
        d.job(id).unwrap().state == JobState::Running
    })
    .await;
    d.cancel(id);
    wait_until(Duration::from_secs(10), "finished", || {
        d.job(id).unwrap().state == JobState::Finished
    })
    .await;
    link.stop().await;
    let job = d.job(id).unwrap();
    assert_eq!(job.health, JobHealth::Canceled);
    let f = job.finish.unwrap();
    assert_eq!(f[1], ("result".into(), "fail".into()));
    assert_eq!(f[2], ("error_type".into(), "Canceled".into()));
    assert_eq!(job.lines.len(), 6);
    assert!(job.lines[5].ends_with("\"lvl\": \"exception\", \"msg\": \"The job was canceled\"}"));
    assert_eq!(job.finished_posts, 1);
    assert_clean(&d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_mismatch_waits_a_ping_interval_and_says_why() {
    init_tracing();
    let d = MasterDouble::start();
    d.add_worker("ver1", "t");
    let state = state_dir();
    let exec = TestExecutor::new(Script::Finish {
        lines: 1,
        outcome: JobOutcome::complete(""),
    });
    let id = d.submit("ver1", &definition("never started"), DEVICE);
    let mut s = settings(&d.url(), "ver1", TokenSource::Inline("t".into()));
    s.version = "2022.01".into();
    s.ping_interval = Duration::from_secs(1);
    let err = MasterClient::new(&s).unwrap().ping("t").await.unwrap_err();
    assert!(matches!(err, MasterError::VersionMismatch { .. }));
    assert_eq!(
        err.to_string(),
        "ping: the master refuses version \"2022.01\": Version mismatch '2022.01' vs '2023.01'; \
         set [master] version to the server's version (labd speaks the 2023.01 protocol)"
    );
    let link = start_link(s, exec.clone(), state.path());
    wait_until(Duration::from_secs(10), "3 link pings", || {
        pings(&d).len() >= 4
    })
    .await;
    link.stop().await;
    let p = pings(&d);
    for w in p[1..].windows(2) {
        assert_eq!(w[0].status, 409);
        assert!(
            w[1].at - w[0].at >= Duration::from_millis(900),
            "{:?}",
            w[1].at - w[0].at
        );
    }
    assert!(!d.worker("ver1").unwrap().online);
    assert_eq!(d.job(id).unwrap().state, JobState::Scheduled);
    assert!(exec.jobs.lock().unwrap().is_empty());
    assert_clean(&d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_after_about_a_second_then_backed_off() {
    init_tracing();
    let d = MasterDouble::start();
    d.add_worker("err1", "t");
    d.fail_next(3, 503, "/scheduler/internal/v1/workers/");
    let state = state_dir();
    let exec = TestExecutor::new(Script::Finish {
        lines: 1,
        outcome: JobOutcome::complete(""),
    });
    let mut s = settings(&d.url(), "err1", TokenSource::Inline("t".into()));
    s.ping_interval = Duration::from_secs(20);
    let link = start_link(s, exec, state.path());
    wait_until(Duration::from_secs(15), "a successful ping", || {
        pings(&d).iter().any(|r| r.status == 200)
    })
    .await;
    link.stop().await;
    let p = pings(&d);
    let st: Vec<u16> = p.iter().map(|r| r.status).collect();
    assert_eq!(st, [503, 503, 503, 200]);
    let gaps: Vec<Duration> = p.windows(2).map(|w| w[1].at - w[0].at).collect();
    for (gap, want) in gaps.iter().zip([1000u64, 2000, 4000]) {
        let want = Duration::from_millis(want);
        assert!(
            *gap + Duration::from_millis(100) >= want && *gap < want + Duration::from_millis(1000),
            "{gaps:?}"
        );
    }
    assert!(d.worker("err1").unwrap().online);
    assert_clean(&d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_down_mid_job_buffers_on_disk_and_delivers_once() {
    init_tracing();
    let d = MasterDouble::start();
    d.add_worker("down1", "t");
    let state = state_dir();
    let exec = TestExecutor::new(Script::Gated {
        before: 40,
        after: 1500,
        outcome: JobOutcome::incomplete("Job", "desc"),
    });
    let id = d.submit("down1", &definition("down"), DEVICE);
    let link = start_link(
        settings(&d.url(), "down1", TokenSource::Inline("t".into())),
        exec.clone(),
        state.path(),
    );
    wait_until(Duration::from_secs(10), "first lines uploaded", || {
        d.job(id).unwrap().lines.len() == 40
    })
    .await;
    d.set_down(true);
    exec.gate.notify_one();
    let log = state.path().join(format!("master/jobs/{id}/log.yaml"));
    wait_until(Duration::from_secs(10), "lines buffered on disk", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == 1540)
    })
    .await;
    // The job is over while the master is down: its outcome is on disk, not reported.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rec =
        std::fs::read_to_string(state.path().join(format!("master/jobs/{id}/job.json"))).unwrap();
    assert!(rec.contains("\"error_type\": \"Job\""), "{rec}");
    assert_eq!(d.job(id).unwrap().state, JobState::Running);
    d.set_down(false);
    wait_until(Duration::from_secs(20), "finished", || {
        d.job(id).unwrap().state == JobState::Finished
    })
    .await;
    link.stop().await;
    let job = d.job(id).unwrap();
    assert_eq!(job.lines, exec.emitted());
    assert_eq!(job.health, JobHealth::Incomplete);
    assert_eq!(job.finished_posts, 1);
    assert_eq!(job.skipped_resends, 0);
    assert!(job.log_posts.iter().all(|(_, n, _)| *n <= 1000));
    assert_clean(&d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_double_flags_requests_lava_worker_would_not_send() {
    let d = MasterDouble::start();
    d.add_worker("bad1", "t");
    let http = reqwest::Client::new();
    // curl-like ping: wrong User-Agent, no python-requests headers.
    let r = http
        .get(format!(
            "{}scheduler/internal/v1/workers/bad1/?version=2023.01",
            d.url()
        ))
        .header("User-Agent", "curl/7.88.1")
        .header("LAVA-Token", "t")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A FINISHED with its fields out of order and JSON instead of a form.
    let id = d.submit("bad1", "job", "dev");
    let token = d.job(id).unwrap().token;
    let r = http
        .post(format!("{}scheduler/internal/v1/jobs/{id}/", d.url()))
        .header("User-Agent", "lava-worker 2023.01")
        .header("LAVA-Token", &token)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("result=pass&state=FINISHED&error_type=&errors=&description=a%20b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = d.violations().join("\n");
    for want in [
        "User-Agent \"curl/7.88.1\"",
        "Accept-Encoding is None",
        "form fields [\"result\", \"state\"",
        "body bytes differ from python-requests' encoding",
    ] {
        assert!(v.contains(want), "missing {want:?} in:\n{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_start_and_cancel_a_job_without_waiting_for_the_ping() {
    init_tracing();
    let d = MasterDouble::start();
    d.add_worker("ev1", "t");
    let state = state_dir();
    let exec = TestExecutor::new(Script::UntilCanceled { lines: 3 });
    let mut s = settings(&d.url(), "ev1", TokenSource::Inline("t".into()));
    s.ping_interval = Duration::from_secs(60);
    let link = start_link(s, exec, state.path());
    wait_until(
        Duration::from_secs(10),
        "first ping and the event feed",
        || !pings(&d).is_empty() && !d.ws_connections().is_empty(),
    )
    .await;
    let t = std::time::Instant::now();
    let id = d.submit("ev1", &definition("event"), DEVICE);
    wait_until(Duration::from_secs(5), "running", || {
        d.job(id).unwrap().state == JobState::Running
    })
    .await;
    let started = t.elapsed();
    let t = std::time::Instant::now();
    d.cancel(id);
    wait_until(Duration::from_secs(5), "finished", || {
        d.job(id).unwrap().state == JobState::Finished
    })
    .await;
    let canceled = t.elapsed();
    link.stop().await;
    assert!(started < Duration::from_secs(5), "{started:?}");
    assert!(canceled < Duration::from_secs(5), "{canceled:?}");
    assert_eq!(d.job(id).unwrap().health, JobHealth::Canceled);
    let ws = &d.ws_connections()[0];
    assert_eq!(ws.path, "/ws/");
    assert_eq!(ws.header("User-Agent"), Some("lava-worker 2023.01"));
    assert_eq!(ws.header("LAVA-Token"), None);
    assert_clean(&d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_the_master_forgets_is_dropped() {
    init_tracing();
    let d = MasterDouble::start();
    d.add_worker("gone1", "t");
    let state = state_dir();
    let exec = TestExecutor::new(Script::Gated {
        before: 3,
        after: 5,
        outcome: JobOutcome::complete(""),
    });
    let id = d.submit("gone1", &definition("forgotten"), DEVICE);
    let link = start_link(
        settings(&d.url(), "gone1", TokenSource::Inline("t".into())),
        exec.clone(),
        state.path(),
    );
    wait_until(Duration::from_secs(10), "first lines", || {
        d.job(id).is_some_and(|j| j.lines.len() == 3)
    })
    .await;
    // Deleted on the server: the next log POST gets 404, so labd drops the log and cancels
    // the job (as lava-run does); its FINISHED gets 404 and labd forgets the job.
    d.forget_job(id);
    exec.gate.notify_one();
    let job_dir = state.path().join(format!("master/jobs/{id}"));
    wait_until(Duration::from_secs(15), "job forgotten", || {
        !job_dir.exists()
    })
    .await;
    link.stop().await;
    let after: Vec<(String, u16)> = d
        .requests()
        .iter()
        .filter(|r| {
            r.request
                .path
                .starts_with(&format!("/scheduler/internal/v1/jobs/{id}/"))
        })
        .map(|r| (format!("{} {}", r.request.method, r.request.path), r.status))
        .filter(|(_, st)| *st == 404)
        .collect();
    let logs = format!("POST /scheduler/internal/v1/jobs/{id}/logs/");
    let job = format!("POST /scheduler/internal/v1/jobs/{id}/");
    assert_eq!(after, [(logs, 404), (job, 404)]);
    assert_clean(&d);
}

/// A master failing log POSTs with `status` for 4 s while a chatty job (2500 lines, more than
/// a batch) runs: the uploader backs off instead of spinning, and drops nothing.
async fn log_upload_outage(status: u16, worker: &str) {
    init_tracing();
    let d = MasterDouble::start();
    d.add_worker(worker, "t");
    let state = state_dir();
    let exec = TestExecutor::new(Script::UntilCanceled { lines: 2500 });
    let id = d.submit(worker, &definition("chatty"), DEVICE);
    let logs = format!("/scheduler/internal/v1/jobs/{id}/logs/");
    let outage = Duration::from_secs(4);
    d.fail_for(outage, status, &logs);
    let link = start_link(
        settings(&d.url(), worker, TokenSource::Inline("t".into())),
        exec.clone(),
        state.path(),
    );
    wait_until(Duration::from_secs(30), "every line uploaded", || {
        d.job(id).unwrap().lines.len() == 2500
    })
    .await;
    let failed = d
        .requests()
        .iter()
        .filter(|r| r.request.path == logs && r.status == status)
        .count();
    // 300 ms, then doubling: about 5 attempts in 4 s (thousands without a pause).
    assert!(
        (2..=10).contains(&failed),
        "{failed} failed log POSTs during a {outage:?} outage"
    );
    d.cancel(id);
    wait_until(Duration::from_secs(20), "finished", || {
        d.job(id).unwrap().state == JobState::Finished
    })
    .await;
    link.stop().await;
    let job = d.job(id).unwrap();
    assert_eq!(job.lines, exec.emitted(), "no line dropped");
    assert_eq!(job.skipped_resends, 0);
    assert_clean(&d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_upload_backs_off_while_the_master_is_unavailable() {
    log_upload_outage(503, "outage503").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_upload_refused_for_seconds_drops_nothing() {
    log_upload_outage(500, "outage500").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_never_answered_does_not_hold_up_the_stop() {
    init_tracing();
    let d = MasterDouble::start();
    d.add_worker("hang1", "t");
    d.hang("/scheduler/internal/v1/workers/");
    let state = state_dir();
    let exec = TestExecutor::new(Script::Finish {
        lines: 1,
        outcome: JobOutcome::complete(""),
    });
    let mut s = settings(&d.url(), "hang1", TokenSource::Inline("t".into()));
    s.http_timeout = Duration::from_secs(600);
    let link = start_link(s, exec, state.path());
    wait_until(Duration::from_secs(10), "a ping in flight", || {
        pings(&d).iter().any(|r| r.status == 0)
    })
    .await;
    let begin = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), link.stop())
        .await
        .expect("the link stops while its ping waits for an answer");
    assert!(
        begin.elapsed() < Duration::from_secs(3),
        "{:?}",
        begin.elapsed()
    );
}
