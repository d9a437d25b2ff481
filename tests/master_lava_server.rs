//! Interop with the real lava-server 2023.01 (Debian), started by
//! `labd_hw_fixtures::peers::lava_server` (PostgreSQL, gunicorn, lava-publisher, lava-scheduler)
//! and shared by the tests of this file. labd's master link talks to it; jobs are run by the
//! TEST EXECUTOR of `master_support` (no board). When the job runner lands, swapping the
//! executor for it turns these into end-to-end QEMU runs: nothing else changes.
//!
//! Slow (about 20 s to start the server, then a few seconds per test).

mod master_support;

use std::time::Duration;

use labd::master::{JobOutcome, JobResult, TokenSource};
use labd_hw_fixtures::peers::lava_server::LavaServer;
use master_support::*;

async fn server<T: Send + 'static>(
    f: impl FnOnce(&'static LavaServer) -> anyhow::Result<T> + Send + 'static,
) -> T {
    tokio::task::spawn_blocking(move || f(LavaServer::shared()?))
        .await
        .unwrap()
        .unwrap()
}

/// The qemu job of the reference capture, restricted to the test's own device by a tag.
fn qemu_job(name: &str, tag: &str) -> String {
    format!(
        "device_type: qemu
job_name: {name}
visibility: public
priority: medium
tags: [{tag}]
timeouts:
  job: {{minutes: 10}}
  action: {{minutes: 5}}
  connection: {{minutes: 2}}
context:
  arch: amd64
actions:
- deploy:
    timeout: {{minutes: 2}}
    to: tmpfs
    images:
      kernel:
        image_arg: -kernel {{kernel}} -append \"console=ttyS0,115200 rdinit=/init panic=-1\"
        url: file:///srv/images/vmlinuz
      initrd:
        image_arg: -initrd {{initrd}}
        url: file:///srv/images/initramfs.cpio.gz
- boot:
    timeout: {{minutes: 3}}
    method: qemu
    media: tmpfs
    prompts: ['/ # ']
"
    )
}

const DESCRIPTION: &str = "compatibility: 4\npipeline:\n- class: actions.boot.qemu.BootQEMUImageAction\n  level: '1'\n  name: boot-image-retry\n";

/// A worker and its tagged qemu device, created with `lava-server manage`.
async fn worker_with_device(name: &str) -> String {
    let n = name.to_string();
    server(move |s| {
        let token = s.add_worker(&n)?;
        s.add_qemu_device(&format!("{n}-qemu"), &n, &format!("{n}-tag"))?;
        Ok(token)
    })
    .await
}

async fn job_state(id: u64) -> (String, String) {
    server(move |s| {
        let j = s.job(id)?;
        Ok((
            j["state"].as_str().unwrap_or_default().to_string(),
            j["health"].as_str().unwrap_or_default().to_string(),
        ))
    })
    .await
}

async fn wait_job(id: u64, state: &str, timeout: Duration) -> (String, String) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let st = job_state(id).await;
        if st.0 == state {
            return st;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("job {id} is {st:?} after {timeout:?}, waiting for {state}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn interop_settings(url: &str, name: &str, token: TokenSource) -> labd::master::MasterSettings {
    let mut s = settings(url, name, token);
    s.ping_interval = Duration::from_secs(1);
    s.job_log_interval = Duration::from_secs(1);
    // gunicorn does not serve /ws/ (Apache would proxy it); the event test sets the
    // publisher's URL.
    s.ws_url = None;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labd_registers_and_the_server_marks_it_online() {
    init_tracing();
    let url = server(|s| Ok(s.url())).await;
    let state = tempfile::tempdir().unwrap();
    let token_file = state.path().join("master/token");
    let exec = TestExecutor::new(Script::Forever { lines: 0 });
    let link = start_link(
        interop_settings(&url, "labd-reg", TokenSource::File(token_file.clone())),
        exec,
        state.path(),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let st = server(|s| Ok(s.worker_state("labd-reg").unwrap_or_default())).await;
        if st == "Online" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "worker state {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    link.stop().await;
    // The token labd keeps is the one the server holds for the worker.
    let token = server(|s| s.worker_token("labd-reg")).await;
    assert_eq!(std::fs::read_to_string(&token_file).unwrap(), token);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitted_job_runs_on_labd_and_ends_complete_with_its_log() {
    init_tracing();
    let token = worker_with_device("labd-ok").await;
    let url = server(|s| Ok(s.url())).await;
    let state = tempfile::tempdir().unwrap();
    let exec = TestExecutor::new(Script::Gated {
        before: 1200,
        after: 30,
        outcome: JobOutcome::complete(DESCRIPTION),
    });
    let link = start_link(
        interop_settings(&url, "labd-ok", TokenSource::Inline(token)),
        exec.clone(),
        state.path(),
    );
    let def = qemu_job("labd interop complete", "labd-ok-tag");
    let id = server(move |s| s.submit(&def)).await;
    wait_job(id, "Running", Duration::from_secs(30)).await;
    exec.gate.notify_one();
    let (_, health) = wait_job(id, "Finished", Duration::from_secs(60)).await;
    link.stop().await;
    assert_eq!(health, "Complete");
    let given = exec.jobs.lock().unwrap()[0].clone();
    assert_eq!(given.id.as_str(), id.to_string());
    assert!(
        given.definition.contains("job_name: labd interop complete"),
        "{}",
        given.definition
    );
    assert!(
        given.definition.contains("compatibility:"),
        "{}",
        given.definition
    );
    assert!(
        given.device.contains("qemu-system-x86_64"),
        "{}",
        given.device
    );
    // The server's job log is labd's lines, byte for byte, each once.
    let log = server(move |s| s.job_log(id)).await;
    let expected: String = exec.emitted().iter().map(|l| format!("- {l}\n")).collect();
    assert_eq!(log.len(), expected.len());
    assert!(
        log == expected,
        "the server's log differs from the lines labd uploaded"
    );
    // `lvl: results` lines became test cases.
    let tests = server(move |s| s.job_tests(id)).await;
    let results = tests["results"].as_array().unwrap();
    assert!(
        results
            .iter()
            .any(|t| t["name"] == "validate" && t["result"] == "pass"),
        "{tests}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_ends_incomplete_with_its_failure_comment() {
    init_tracing();
    let token = worker_with_device("labd-fail").await;
    let url = server(|s| Ok(s.url())).await;
    let state = tempfile::tempdir().unwrap();
    let outcome = JobOutcome {
        result: JobResult::Fail,
        error_type: "Job".into(),
        errors: "login-action timed out after 33 seconds".into(),
        description: DESCRIPTION.into(),
    };
    let exec = TestExecutor::new(Script::Finish { lines: 20, outcome });
    let link = start_link(
        interop_settings(&url, "labd-fail", TokenSource::Inline(token)),
        exec.clone(),
        state.path(),
    );
    let def = qemu_job("labd interop incomplete", "labd-fail-tag");
    let id = server(move |s| s.submit(&def)).await;
    let (_, health) = wait_job(id, "Finished", Duration::from_secs(60)).await;
    link.stop().await;
    assert_eq!(health, "Incomplete");
    let job = server(move |s| s.job(id)).await;
    assert_eq!(
        job["failure_comment"],
        "login-action timed out after 33 seconds"
    );
    let log = server(move |s| s.job_log(id)).await;
    assert_eq!(log.lines().count(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canceled_job_ends_canceled() {
    init_tracing();
    let token = worker_with_device("labd-cancel").await;
    let url = server(|s| Ok(s.url())).await;
    let state = tempfile::tempdir().unwrap();
    let exec = TestExecutor::new(Script::UntilCanceled { lines: 10 });
    let link = start_link(
        interop_settings(&url, "labd-cancel", TokenSource::Inline(token)),
        exec.clone(),
        state.path(),
    );
    let def = qemu_job("labd interop cancel", "labd-cancel-tag");
    let id = server(move |s| s.submit(&def)).await;
    wait_job(id, "Running", Duration::from_secs(30)).await;
    server(move |s| s.cancel(id)).await;
    let (_, health) = wait_job(id, "Finished", Duration::from_secs(60)).await;
    link.stop().await;
    assert_eq!(health, "Canceled");
    let log = server(move |s| s.job_log(id)).await;
    assert!(
        log.trim_end()
            .ends_with("\"lvl\": \"exception\", \"msg\": \"The job was canceled\"}"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_feed_starts_a_job_before_the_next_ping() {
    init_tracing();
    let token = worker_with_device("labd-ev").await;
    let (url, ws_url) = server(|s| Ok((s.url(), s.ws_url()))).await;
    let state = tempfile::tempdir().unwrap();
    let exec = TestExecutor::new(Script::UntilCanceled { lines: 5 });
    let mut s = interop_settings(&url, "labd-ev", TokenSource::Inline(token));
    s.ping_interval = Duration::from_secs(120);
    s.ws_url = Some(ws_url);
    let link = start_link(s, exec.clone(), state.path());
    // Online after the first ping; then no ping for two minutes unless an event comes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while server(|s| Ok(s.worker_state("labd-ev").unwrap_or_default())).await != "Online" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "worker never Online"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = std::time::Instant::now();
    let def = qemu_job("labd interop event", "labd-ev-tag");
    let id = server(move |s| s.submit(&def)).await;
    wait_job(id, "Running", Duration::from_secs(30)).await;
    let started = t.elapsed();
    server(move |s| s.cancel(id)).await;
    let (_, health) = wait_job(id, "Finished", Duration::from_secs(30)).await;
    link.stop().await;
    assert!(started < Duration::from_secs(15), "{started:?}");
    assert_eq!(health, "Canceled");
}

/// The real lava-publisher (aiohttp) answers the feed's pings: with a 400 ms heartbeat the
/// listener keeps its one connection (counted by a TCP relay in front of the publisher).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_publisher_answers_the_feeds_heartbeat() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    init_tracing();
    let ws_url = server(|s| Ok(s.ws_url())).await;
    let target = ws_url
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_string();
    let path = ws_url.splitn(4, '/').nth(3).unwrap_or("").to_string();
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = relay.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let relay_task = {
        let accepted = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = relay.accept().await else {
                    return;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let target = target.clone();
                tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                    }
                });
            }
        })
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let heartbeat = Duration::from_millis(400);
    let feed = tokio::spawn(labd::master::events::listen(
        format!("http://127.0.0.1:{port}/{path}"),
        "2023.01".into(),
        "labd-hb".into(),
        Arc::new(tokio::sync::Notify::new()),
        shutdown.clone(),
        heartbeat,
    ));
    wait_until(Duration::from_secs(10), "the feed's connection", || {
        accepted.load(Ordering::SeqCst) >= 1
    })
    .await;
    tokio::time::sleep(heartbeat * 8).await;
    shutdown.cancel();
    feed.await.unwrap();
    relay_task.abort();
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "the feed reconnected");
}
