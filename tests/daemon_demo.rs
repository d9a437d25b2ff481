//! `labd demo` followed as its printed instructions say: the simulated PDU really powers the
//! simulated boards, so `labd power BOARD reboot` (through the demo's daemon) and the printed
//! pdudaemon `curl` line each make a board boot again on its console.

mod daemon_support;

use std::time::Duration;

use daemon_support::*;

const T: Duration = Duration::from_secs(40);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_boards_reboot_through_the_demo_pdu() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("demo");
    let out_path = dir.path().join("demo.out");
    let _demo = labd_hw_fixtures::ChildGuard::new(
        "labd demo",
        std::process::Command::new(env!("CARGO_BIN_EXE_labd"))
            .args(["demo", "--boards", "2", "--exit-after", "60s", "--dir"])
            .arg(&state)
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(dir.path().join("demo.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    let out = || std::fs::read_to_string(&out_path).unwrap_or_default();
    let booted = |board: &str| {
        out()
            .matches(&format!("[{board}] [    0.000000] Linux version 6.1.0-sim"))
            .count()
    };
    wait_until(T, "both boards booted", || {
        booted("demo-bbb01") == 1 && booted("demo-rpi02") == 1
    })
    .await;
    let o = out();
    let inv = state.join("inventory.toml");

    // The printed `labd power ... reboot` line, run as printed.
    let line = o
        .lines()
        .find(|l| l.contains(" power demo-bbb01 reboot -c "))
        .unwrap_or_else(|| panic!("{o}"));
    assert!(line.ends_with(&inv.display().to_string()), "{line}");
    let power = tokio::task::spawn_blocking({
        let inv = inv.clone();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_labd"))
                .args(["power", "demo-bbb01", "reboot", "-c"])
                .arg(&inv)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let (stdout, stderr) = text(&power);
    assert!(power.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout, "demo-bbb01: on (read back)\n");
    wait_until(T, "demo-bbb01 booted again", || booted("demo-bbb01") == 2).await;
    assert_eq!(booted("demo-rpi02"), 1, "only the rebooted board restarted");

    // The printed pdudaemon curl line, as a LAVA device dictionary would call it.
    let curl_line = o
        .lines()
        .find(|l| l.trim_start().starts_with("curl '"))
        .unwrap_or_else(|| panic!("{o}"));
    let url = curl_line
        .trim()
        .trim_start_matches("curl '")
        .trim_end_matches('\'');
    assert!(
        url.contains("hostname=") && url.contains("/power/control/reboot?"),
        "{url}"
    );
    // The second board's outlet, by the table the demo printed.
    let outlet = o
        .lines()
        .find(|l| l.trim_start().starts_with("demo-rpi02"))
        .and_then(|l| l.split("outlet ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("{o}"));
    let url = url
        .split("&port=")
        .next()
        .map(|head| format!("{head}&port={outlet}&delay=1"))
        .unwrap();
    let (head, _body) = curl(&url).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    wait_until(T, "demo-rpi02 booted again", || booted("demo-rpi02") == 2).await;
    assert_eq!(booted("demo-bbb01"), 2);
}

/// `labd demo` with no options runs to its end: the demo job on the first board, then the
/// Multi-Node group (two servers, a master booting a slave after the lava_ms_* handshake),
/// and exits 0 only when both completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_the_demo_job_and_the_multinode_group() {
    labd_hw_fixtures::require_program("curl").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("demo");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_labd"))
            .args([
                "demo",
                "--boards",
                "1",
                "--quiet",
                "--exit-after",
                "1s",
                "--dir",
            ])
            .arg(&state)
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("demo job: complete"), "{stdout}");
    assert!(
        stdout.contains("0_smoke     two-plus-two  pass"),
        "{stdout}"
    );
    for head in [
        "[server 10] on grp-srv1: Complete",
        "[server 11] on grp-srv2: Complete",
        "[client 12] on grp-master: Complete",
        "[slave 13] on grp-slave: Complete",
        "0_client    power-on-slave  pass",
        "0_slave     booted-by-master  pass",
        "group: 4 of 4 sub-jobs Complete",
    ] {
        assert!(stdout.contains(head), "no {head:?} in\n{stdout}");
    }
}

/// SIGTERM while the demo's jobs run cancels them and ends the demo (status 2), instead of
/// being swallowed by the signal handler the daemon part installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_the_demo_jobs_cancels_them() {
    use std::io::BufRead;
    labd_hw_fixtures::require_program("curl").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("demo");
    let out = tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_labd"))
            .args([
                "demo",
                "--boards",
                "1",
                "--quiet",
                "--exit-after",
                "1s",
                "--dir",
            ])
            .arg(&state)
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut seen = String::new();
        let mut started = None;
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            seen.push_str(&line);
            seen.push('\n');
            // The single job is under way: its console lines come through. (Reading goes on
            // to the end: a closed pipe would make the demo's next print fail.)
            if line.starts_with("[job 1 ") && started.is_none() {
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                )
                .unwrap();
                started = Some(std::time::Instant::now());
            }
        }
        let started = started.expect("the demo job never started");
        let status = child.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        (status, seen, err, started.elapsed())
    })
    .await
    .unwrap();
    let (status, stdout, stderr, took) = out;
    assert_eq!(status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("interrupted; cancelling the jobs"),
        "{stderr}"
    );
    assert!(took < std::time::Duration::from_secs(30), "{took:?}");
}
