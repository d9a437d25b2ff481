//! The systemd units start labd the way its command line really is: every option in an
//! `ExecStart=` of `systemd/*.service` exists in `labd SUBCOMMAND --help`, and labd.service's
//! command line, with only the binary and inventory paths swapped for test ones, brings the
//! agent up (and its `ExecReload=` signal reloads it).

mod daemon_support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use daemon_support::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The value of `key=` in a unit file (the last one, as systemd takes for ExecStart= of
/// Type=notify), with `\`-continued lines joined.
fn directive(unit: &str, key: &str) -> String {
    let text = std::fs::read_to_string(repo().join("systemd").join(unit)).unwrap();
    let joined = text.replace("\\\n", " ");
    joined
        .lines()
        .filter_map(|l| l.trim().strip_prefix(&format!("{key}=")))
        .next_back()
        .unwrap_or_else(|| panic!("{unit} has no {key}="))
        .to_string()
}

/// `ExecStart=` as words, without systemd's `-@:+!` prefixes.
fn exec_start(unit: &str) -> Vec<String> {
    let line = directive(unit, "ExecStart");
    let line = line.trim_start_matches(['-', '@', ':', '+', '!']);
    shlex::split(line).unwrap()
}

#[test]
fn every_execstart_option_exists_in_the_cli() {
    for unit in ["labd.service", "labd-coordinator.service"] {
        let words = exec_start(unit);
        assert_eq!(words[0], "/usr/bin/labd", "{unit}");
        let sub = &words[1];
        let help = Command::new(env!("CARGO_BIN_EXE_labd"))
            .args([sub, "--help"])
            .output()
            .unwrap();
        assert!(
            help.status.success(),
            "{unit}: `labd {sub}` is not a command: {}",
            String::from_utf8_lossy(&help.stderr)
        );
        let help = String::from_utf8_lossy(&help.stdout).into_owned();
        let options: Vec<&String> = words[2..].iter().filter(|w| w.starts_with('-')).collect();
        assert!(!options.is_empty() || unit != "labd.service");
        for opt in options {
            let name = opt.split('=').next().unwrap();
            // clap lists `-c, --config <CONFIG>`: the option followed by a space, comma or `=`.
            let listed = [" ", ",", "=", "\n"]
                .iter()
                .any(|end| help.contains(&format!("{name}{end}")));
            assert!(listed, "{unit}: `labd {sub}` has no option {name}:\n{help}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labd_service_command_line_starts_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let words = exec_start("labd.service");
    assert_eq!(
        words,
        [
            "/usr/bin/labd",
            "agent",
            "--config",
            "/etc/labd/inventory.toml"
        ],
        "update this test with the unit"
    );
    let inventory = d.join("inventory.toml");
    std::fs::write(&inventory, worker(d)).unwrap();
    let args: Vec<String> = words[1..]
        .iter()
        .map(|w| {
            if w == "/etc/labd/inventory.toml" {
                inventory.display().to_string()
            } else {
                w.clone()
            }
        })
        .collect();
    let mut child = labd_hw_fixtures::ChildGuard::new(
        "labd agent",
        Command::new(env!("CARGO_BIN_EXE_labd"))
            .args(&args)
            .env_remove("LABD_CONFIG")
            .env_remove("NOTIFY_SOCKET")
            .stderr(std::fs::File::create(d.join("agent.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let socket = d.join("state").join("labd.sock");
    labd_hw_fixtures::wait_for_path(&socket, Duration::from_secs(20)).unwrap();
    let client = labd::control::ControlClient::new(&socket);
    let mut reply = None;
    for _ in 0..200 {
        if let Ok(r) = client.request(serde_json::json!({"request": "ping"})).await {
            reply = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reply.is_some(), "the agent does not answer");

    // ExecReload= sends SIGHUP to the main process; the agent reloads.
    assert_eq!(
        directive("labd.service", "ExecReload"),
        "/bin/kill -HUP $MAINPID"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let log = d.join("agent.log");
    wait_until(Duration::from_secs(20), "inventory reloaded", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("inventory reloaded"))
    })
    .await;
    let status = child.stop(Duration::from_secs(20)).unwrap();
    assert!(status.success(), "{status:?}");
}
