//! The sd_notify protocol against a datagram socket standing in for systemd's NOTIFY_SOCKET
//! (path and abstract names), compared byte for byte with what the real `systemd-notify`
//! sends; and the watchdog: pings at half the interval while the main loop runs, none once it
//! hangs.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::process::Command;
use std::time::{Duration, Instant};

use labd::systemd::{Notifier, Watchdog};
use labd_hw_fixtures::require_program;

fn recv(s: &UnixDatagram) -> String {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.recv(&mut buf).expect("no datagram");
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

fn nothing(s: &UnixDatagram, within: Duration) {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    if let Ok(n) = s.recv(&mut buf) {
        panic!("unexpected {:?}", String::from_utf8_lossy(&buf[..n]));
    }
}

fn socket_path() -> (tempfile::TempDir, std::path::PathBuf, UnixDatagram) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let s = UnixDatagram::bind(&path).unwrap();
    (dir, path, s)
}

#[test]
fn messages_match_systemd_notify_byte_for_byte() {
    let (_dir, path, sock) = socket_path();
    let systemd_notify = require_program("systemd-notify").unwrap();
    let real = |args: &[&str]| {
        let st = Command::new(&systemd_notify)
            .arg("--no-block")
            .args(args)
            .env("NOTIFY_SOCKET", &path)
            .status()
            .unwrap();
        assert!(st.success());
        recv(&sock)
    };
    let n = Notifier::from_address(path.to_str().unwrap()).unwrap();
    assert!(n.is_enabled());

    n.ready("7 of 9 devices online").unwrap();
    let ours = recv(&sock);
    assert_eq!(ours, "READY=1\nSTATUS=7 of 9 devices online");
    assert_eq!(ours, real(&["--ready", "--status=7 of 9 devices online"]));

    n.status("8 of 9 devices online").unwrap();
    let ours = recv(&sock);
    assert_eq!(ours, real(&["--status=8 of 9 devices online"]));

    n.watchdog().unwrap();
    assert_eq!(recv(&sock), "WATCHDOG=1");
    assert_eq!(real(&["WATCHDOG=1"]), "WATCHDOG=1");

    n.stopping().unwrap();
    assert_eq!(recv(&sock), "STOPPING=1");

    n.reloading().unwrap();
    let r = recv(&sock);
    let usec: u64 = r
        .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
        .unwrap_or_else(|| panic!("{r:?}"))
        .parse()
        .unwrap();
    assert!(usec > 0);

    // A status is one line, whatever the caller passes.
    n.status("line one\nline two").unwrap();
    assert_eq!(recv(&sock), "STATUS=line one line two");
}

#[test]
fn abstract_socket_names() {
    let name = format!("labd-notify-test-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    let n = Notifier::from_address(&format!("@{name}")).unwrap();
    n.ready("abstract").unwrap();
    assert_eq!(recv(&sock), "READY=1\nSTATUS=abstract");
}

#[test]
fn no_notify_socket_is_a_silent_no_op_and_bad_ones_are_refused() {
    let n = Notifier::disabled();
    assert!(!n.is_enabled());
    n.ready("x").unwrap();
    assert_eq!(
        Notifier::from_address("relative/path")
            .unwrap_err()
            .to_string(),
        "NOTIFY_SOCKET \"relative/path\" is neither an absolute path nor an @abstract name"
    );
    // The socket vanished (systemd restarted): an error the daemon can log, not a panic.
    let (dir, path, sock) = socket_path();
    let n = Notifier::from_address(path.to_str().unwrap()).unwrap();
    drop(sock);
    drop(dir);
    assert!(n.ready("x").is_err());
}

/// Run as a child with NOTIFY_SOCKET and WATCHDOG_USEC set: the environment path end to end.
#[test]
fn child_from_env() {
    if std::env::var_os("LABD_NOTIFY_CHILD").is_none() {
        return;
    }
    let n = Notifier::from_env();
    let w = Watchdog::from_env(&n).expect("watchdog from env");
    n.ready(&format!("child watchdog {}ms", w.interval().as_millis()))
        .unwrap();
}

#[test]
fn environment_is_read_from_notify_socket_and_watchdog_usec() {
    let (_dir, path, sock) = socket_path();
    let st = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_from_env",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LABD_NOTIFY_CHILD", "1")
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "1500000")
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(recv(&sock), "READY=1\nSTATUS=child watchdog 1500ms");
}

#[tokio::test]
async fn watchdog_pings_from_the_main_loop_and_stops_when_it_hangs() {
    let (_dir, path, sock) = socket_path();
    let n = Notifier::from_address(path.to_str().unwrap()).unwrap();
    let mut wd = Watchdog::new(n, Duration::from_millis(200));
    assert_eq!(wd.period(), Duration::from_millis(100));
    // The daemon's main loop: a select over its work and the watchdog timer.
    let mut tick = tokio::time::interval(wd.period());
    let t0 = Instant::now();
    let mut pings = 0;
    while t0.elapsed() < Duration::from_millis(550) {
        tokio::select! {
            _ = tick.tick() => {
                if wd.tick().unwrap() {
                    pings += 1;
                }
            }
        }
    }
    for _ in 0..pings {
        assert_eq!(recv(&sock), "WATCHDOG=1");
    }
    // 6 on an idle machine; fewer when the (shared) CPUs delay the timer, never more.
    assert!(
        (3..=7).contains(&pings),
        "{pings} pings in 550 ms at a 100 ms period"
    );
    // Ticking faster than the period does not flood systemd.
    assert!(!wd.tick().unwrap() || !wd.tick().unwrap());
    let _ = sock.set_read_timeout(Some(Duration::from_millis(10)));
    let mut buf = [0u8; 64];
    while sock.recv(&mut buf).is_ok() {}
    // The loop hangs (a blocking call where it should not be): no more pings, so systemd's
    // WatchdogSec would fire and restart labd.
    std::thread::sleep(Duration::from_millis(500));
    nothing(&sock, Duration::from_millis(50));
    // Recovered: the next tick pings at once.
    assert!(wd.tick().unwrap());
    assert_eq!(recv(&sock), "WATCHDOG=1");
}
