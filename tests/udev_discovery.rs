//! The discovery thread the daemon starts, on the path-watching fallback (this machine runs no
//! udev daemon): a console path that is a symlink to a real pseudo-terminal (made by socat)
//! appears, disappears, comes back, is re-pointed between two polls (a "missed remove"), and is
//! recreated at the same target; each is announced at once with the node to reopen.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use labd::ids::DeviceName;
use labd::udev::NodeChange;
use labd::udev::discovery::{Discovery, DiscoveryConfig, Mode};
use labd_hw_fixtures::{ChildGuard, require_program, wait_for_path};
use tokio::sync::mpsc::Receiver;

/// socat: one pty linked at `link`, the other end at `other`.
fn socat_pty(link: &Path, other: &Path) -> ChildGuard {
    let child = Command::new(require_program("socat").unwrap())
        .arg(format!("pty,raw,echo=0,link={}", link.display()))
        .arg(format!("pty,raw,echo=0,link={}", other.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let g = ChildGuard::new("socat", child);
    wait_for_path(link, Duration::from_secs(5)).unwrap();
    g
}

async fn next(rx: &mut Receiver<NodeChange>, what: &str) -> (NodeChange, Duration) {
    let t0 = Instant::now();
    let c = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no change within 5 s: {what}"))
        .expect("discovery thread ended");
    (c, t0.elapsed())
}

async fn assert_quiet(rx: &mut Receiver<NodeChange>, for_: Duration) {
    if let Ok(Some(c)) = tokio::time::timeout(for_, rx.recv()).await {
        panic!("unexpected change {c:?}");
    }
}

fn target_of(link: &Path) -> PathBuf {
    std::fs::canonicalize(link).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_follows_a_pty_link() {
    let tmp = tempfile::tempdir().unwrap();
    let link = tmp.path().join("lab").join("bbb01");
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    let dev = DeviceName::new("bbb01").unwrap();
    let cfg = DiscoveryConfig {
        targets: Vec::new(),
        paths: vec![(dev.clone(), link.clone())],
        poll_interval: Duration::from_millis(50),
        rescan_interval: Duration::from_secs(10),
        mode: Mode::Auto,
    };
    let started = Discovery::start(cfg).unwrap();
    let (discovery, mut rx) = (started.discovery, started.changes);
    if !labd::udev::live::udev_daemon_running() {
        assert_eq!(
            discovery.mode,
            Mode::PathWatch,
            "no udev daemon: path watching"
        );
    }

    // The state at start comes back from start(): absent.
    assert_eq!(started.initial.len(), 1);
    assert_eq!(
        (
            started.initial[0].device.as_str(),
            started.initial[0].node.clone()
        ),
        ("bbb01", None)
    );
    assert_eq!(discovery.status()[&dev].node, None);

    // The link appears (the board's adapter is plugged in).
    let board = socat_pty(&link, &tmp.path().join("board"));
    let (c, latency) = next(&mut rx, "link appears").await;
    let pts = target_of(&link);
    assert!(pts.starts_with("/dev/pts/"), "{pts:?}");
    assert_eq!(c.node.as_deref(), Some(pts.as_path()));
    assert!(latency < Duration::from_secs(1), "{latency:?}");
    assert_eq!(
        discovery.status()[&dev].node.as_deref(),
        Some(pts.as_path())
    );
    assert_eq!(discovery.status()[&dev].via, "path");
    assert_quiet(&mut rx, Duration::from_millis(200)).await;

    // Unplugged: socat exits and removes its link.
    drop(board);
    let (c, _) = next(&mut rx, "link disappears").await;
    assert_eq!(c.node, None);

    // Plugged back.
    let board = socat_pty(&link, &tmp.path().join("board"));
    let (c, _) = next(&mut rx, "link reappears").await;
    assert_eq!(c.node, Some(target_of(&link)));

    // Re-pointed between two polls, never seen missing: still announced, with the new node.
    let other = socat_pty(&tmp.path().join("other"), &tmp.path().join("board2"));
    let new_target = target_of(&tmp.path().join("other"));
    let staged = tmp.path().join("lab").join(".bbb01.new");
    std::os::unix::fs::symlink(&new_target, &staged).unwrap();
    std::fs::rename(&staged, &link).unwrap();
    let (c, _) = next(&mut rx, "link re-pointed").await;
    assert_eq!(c.node.as_deref(), Some(new_target.as_path()));

    // Recreated at the same target (a new instance behind the same name): announced again so
    // the console reopens rather than keep a dead descriptor.
    std::os::unix::fs::symlink(&new_target, &staged).unwrap();
    std::fs::rename(&staged, &link).unwrap();
    let (c, _) = next(&mut rx, "link recreated").await;
    assert_eq!(c.node.as_deref(), Some(new_target.as_path()));
    assert_quiet(&mut rx, Duration::from_millis(200)).await;
    drop(other);
    drop(board);

    // Dropping the handle stops the thread; the channel closes.
    discovery.stop();
    let end = tokio::time::timeout(Duration::from_secs(2), async {
        while rx.recv().await.is_some() {}
    })
    .await;
    assert!(end.is_ok(), "channel did not close after stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_forgets_devices() {
    let tmp = tempfile::tempdir().unwrap();
    let a = DeviceName::new("a").unwrap();
    let b = DeviceName::new("b").unwrap();
    let link_a = tmp.path().join("a");
    let link_b = tmp.path().join("b");
    let _ga = socat_pty(&link_a, &tmp.path().join("pa"));
    let _gb = socat_pty(&link_b, &tmp.path().join("pb"));
    let cfg = |paths: Vec<(DeviceName, PathBuf)>| DiscoveryConfig {
        targets: Vec::new(),
        paths,
        poll_interval: Duration::from_millis(50),
        rescan_interval: Duration::from_secs(10),
        mode: Mode::PathWatch,
    };
    let started = Discovery::start(cfg(vec![(a.clone(), link_a.clone())])).unwrap();
    let (discovery, mut rx) = (started.discovery, started.changes);
    let c = &started.initial[0];
    assert_eq!(
        (c.device.clone(), c.node.clone()),
        (a.clone(), Some(target_of(&link_a)))
    );
    assert_quiet(&mut rx, Duration::from_millis(150)).await;
    // SIGHUP adds b, keeps a (not re-announced), then removes a.
    discovery.reload(cfg(vec![
        (a.clone(), link_a.clone()),
        (b.clone(), link_b.clone()),
    ]));
    let (c, _) = next(&mut rx, "b added").await;
    assert_eq!(
        (c.device.clone(), c.node),
        (b.clone(), Some(target_of(&link_b)))
    );
    assert_quiet(&mut rx, Duration::from_millis(200)).await;
    discovery.reload(cfg(vec![(b.clone(), link_b.clone())]));
    assert_quiet(&mut rx, Duration::from_millis(200)).await;
    let status = discovery.status();
    assert!(
        !status.contains_key(&a) && status.contains_key(&b),
        "{status:?}"
    );
}

#[test]
fn stopping_never_hangs_on_a_daemon_that_stopped_reading() {
    // More devices than the channel holds, and nobody reads: the thread waits for room, but a
    // stop request still ends it at once.
    let tmp = tempfile::tempdir().unwrap();
    let paths = (0..(labd::udev::discovery::CHANNEL_CAPACITY + 50))
        .map(|i| {
            (
                DeviceName::new(format!("d{i}")).unwrap(),
                tmp.path().join(format!("missing{i}")),
            )
        })
        .collect();
    let cfg = DiscoveryConfig {
        targets: Vec::new(),
        paths,
        poll_interval: Duration::from_millis(50),
        rescan_interval: Duration::from_secs(10),
        mode: Mode::PathWatch,
    };
    let started = Discovery::start(cfg).unwrap();
    assert_eq!(
        started.initial.len(),
        labd::udev::discovery::CHANNEL_CAPACITY + 50
    );
    let (discovery, rx) = (started.discovery, started.changes);
    // Fill the channel beyond its capacity: every device flips to present at once.
    for i in 0..(labd::udev::discovery::CHANNEL_CAPACITY + 50) {
        std::os::unix::fs::symlink("/dev/null", tmp.path().join(format!("missing{i}"))).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    drop(discovery);
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    drop(rx);
}
