//! `systemd-analyze verify` (systemd 252, no running systemd needed) passes on both unit files
//! with no warning at all. verify insists that ExecStart's binary exists, so the freshly built
//! labd is overlaid onto /usr/bin inside a private mount namespace (nothing outside changes).

use std::path::PathBuf;
use std::process::Command;

use labd_hw_fixtures::require_program;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `systemd-analyze ARGS` with the built labd visible as /usr/bin/labd.
fn analyze(args: &str) -> std::process::Output {
    require_program("systemd-analyze").unwrap();
    let unshare = require_program("unshare").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let overlay = tmp.path().join("bin");
    std::fs::create_dir_all(&overlay).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_labd"), overlay.join("labd")).unwrap();
    let script = format!(
        "set -e\nmount -t overlay overlay -o lowerdir={}:/usr/bin /usr/bin\nexec systemd-analyze {args}",
        overlay.display()
    );
    Command::new(unshare)
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap()
}

fn verify(unit: &str) {
    let path = repo().join("systemd").join(unit);
    let out = analyze(&format!("verify {}", path.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // verify exits 0 on unknown keys (it only warns), so any output is a failure too.
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify {unit}: {}\n{text}",
        out.status
    );
}

#[test]
fn labd_service_verifies() {
    verify("labd.service");
}

#[test]
fn labd_coordinator_service_verifies() {
    verify("labd-coordinator.service");
}

#[test]
fn verify_does_catch_mistakes() {
    // The check above is meaningful: a misspelt key is reported.
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("labd-bad.service");
    let text = std::fs::read_to_string(repo().join("systemd/labd.service"))
        .unwrap()
        .replace("WatchdogSec=30s", "WatchdogSecs=30s");
    std::fs::write(&bad, text).unwrap();
    let out = analyze(&format!("verify {}", bad.display()));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unknown key 'WatchdogSecs'"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn labd_service_keeps_what_the_daemon_needs() {
    let unit = std::fs::read_to_string(repo().join("systemd/labd.service")).unwrap();
    let keys: Vec<&str> = unit
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect();
    for needed in [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30s",
        "Restart=on-failure",
        "StateDirectory=labd",
        "SupplementaryGroups=dialout",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(keys.contains(&needed), "labd.service lacks {needed}");
    }
    // These would close the device cgroup to the ttys (or break qemu's JIT in jobs).
    for forbidden in [
        "PrivateDevices=",
        "DevicePolicy=",
        "ProtectClock=",
        "MemoryDenyWriteExecute=",
    ] {
        assert!(
            !keys.iter().any(|k| k.starts_with(forbidden)),
            "labd.service must not set {forbidden}"
        );
    }
    let coord = std::fs::read_to_string(repo().join("systemd/labd-coordinator.service")).unwrap();
    assert!(coord.contains(
        "ExecStart=/usr/bin/labd coordinator --loglevel ${LOGLEVEL} --logfile /var/log/labd-coordinator/coordinator.log"
    ));
    // DynamicUser with ProtectSystem=strict: only these directories are writable.
    assert!(coord.contains("StateDirectory=labd-coordinator"));
    assert!(coord.contains("LogsDirectory=labd-coordinator"));
    assert!(coord.contains("EnvironmentFile=-/etc/default/lava-coordinator"));
}

#[test]
fn exposure_scores() {
    // Printed for docs/systemd.md; lower is better (0..10).
    for unit in ["labd.service", "labd-coordinator.service"] {
        let path = repo().join("systemd").join(unit);
        let out = analyze(&format!("security --offline=true {}", path.display()));
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("{text}"));
        println!("{line}");
    }
}
