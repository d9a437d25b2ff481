//! `labd coordinator` (the real binary) when resources run short: clients that announce a
//! large request and send nothing, an open file limit below `--max-connections`, and a disk
//! that fills up under the journal (a real tmpfs of 64 KiB; skipped, with a message, where
//! mounting is not permitted).

mod multinode_support;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use multinode_support::*;
use nix::sys::signal::Signal;

const ACK: &str = r#"00000013{"response": "ack"}"#;

/// A request of client "1" (a group of one) in `group`, framed.
fn request(group: &str, extra: &str) -> Vec<u8> {
    frame(&format!(
        r#"{{"port": 3079, "blocksize": 4096, "poll_delay": 1, "host": "127.0.0.1", "hostname": "w", "client_name": "1", "group_name": "{group}", "role": "r", {extra}}}"#
    ))
}

/// Connections waiting in the accept queue of the listener on 127.0.0.1:`port` (the
/// `rx_queue` of a listening socket in /proc/net/tcp).
fn accept_queue(port: u16) -> usize {
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!("0100007F:{port:04X}");
    let line = tcp
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(1) == Some(&local.as_str()) && f.get(3) == Some(&"0A"))
        .unwrap();
    let rx = line[4].split(':').nth(1).unwrap();
    usize::from_str_radix(rx, 16).unwrap()
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Clients that send only a header announcing ~1 MiB and then nothing cost the coordinator
/// next to no memory (its buffer grows by what arrives, not by what a header announces), and
/// groups are served next to them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_announcing_large_requests_pin_no_memory() {
    const LIARS: usize = 256;
    // The listen backlog holds 128 connections: they are made in batches.
    const BATCH: usize = 64;
    let coord = LabdCoordinator::start(&["--read-timeout", "60s"]);
    healthy_group(coord.port, "warm-up").await;
    let pid = coord.pid();
    let before = vm_rss_kib(pid);
    let mut liars: Vec<TcpStream> = Vec::new();
    while liars.len() < LIARS {
        // Stopped meanwhile, so every header is already there when its connection is
        // accepted (the path that reads without waiting).
        coord.signal(Signal::SIGSTOP);
        for _ in 0..BATCH {
            let mut s = TcpStream::connect(coord.addr()).unwrap();
            s.write_all(b"000FFFF0").unwrap();
            liars.push(s);
        }
        coord.signal(Signal::SIGCONT);
        let deadline = Instant::now() + Duration::from_secs(20);
        while accept_queue(coord.port) > 0 {
            assert!(
                Instant::now() < deadline,
                "the coordinator did not accept them"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // Accepted after every liar: they have all been read by the time it completes.
    healthy_group(coord.port, "next-to-liars").await;
    let grown = vm_rss_kib(pid).saturating_sub(before);
    println!("{LIARS} headers announcing 1 MiB: RSS {before} KiB -> +{grown} KiB");
    assert!(
        grown < 16 * 1024,
        "{LIARS} headers announcing 1 MiB each grew the coordinator's RSS by {grown} KiB"
    );
    drop(liars);
}

/// Below an open file limit that `--max-connections` does not fit in, the coordinator serves
/// fewer connections at once (the rest wait in the listen backlog) instead of running out of
/// descriptors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_open_file_limit_caps_connections() {
    let coord = LabdCoordinator::start_with(&["--read-timeout", "1s"], None, Some(128));
    // More silent clients than descriptors; a group behind them is served once they time out.
    let silent: Vec<TcpStream> = (0..150)
        .map(|_| TcpStream::connect(coord.addr()).unwrap())
        .collect();
    healthy_group(coord.port, "behind-the-silent").await;
    drop(silent);
    let log = coord.log();
    assert!(!log.contains("accept failed"), "{log}");
    let line = "The open file limit (RLIMIT_NOFILE 128) is too low for 1024 connections; serving at most 96 at once";
    assert!(log.contains(line), "{log}");
}

/// A 64 KiB tmpfs mounted for the life of the value.
struct TinyFs(tempfile::TempDir);

impl TinyFs {
    /// `None` (with a message) where mounting is not permitted.
    fn mount() -> Option<TinyFs> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "labd-test"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(TinyFs(dir)),
            Ok(o) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs to fill ({}); needs root",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount ({e})");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// Fills the file system of `dir` completely; returns the filler.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = [0u8; 4096];
    while f.write_all(&block).is_ok() {}
    // What fits of less than a block.
    while f.write_all(&block[..64]).is_ok() {}
    path
}

/// A record that does not fit on the disk is cut off again rather than left torn in the
/// middle of the journal (where replay would stop and drop every later record); the journal
/// is rewritten from the live groups once there is room, so after a SIGKILL and a restart
/// every acknowledged change is there, the one whose write failed included.
async fn a_full_disk_never_tears_the_journal(durability: &str) {
    let Some(fs) = TinyFs::mount() else { return };
    let state = fs.path().join("state");
    let mut coord = LabdCoordinator::start_with(&["--durability", durability], Some(&state), None);
    let addr = coord.addr();
    let send = |id: &str, text: &str| {
        request(
            "full",
            &format!(
                r#""request": "lava_send", "messageID": "{id}", "message": {{"text": "{text}"}}"#
            ),
        )
    };
    let joined = exchange_str(
        addr,
        &request("full", r#""request": "group_data", "group_size": 1"#),
    );
    assert!(joined.contains("group_data"), "{joined}");
    assert_eq!(exchange_str(addr, &send("m1", "small")), ACK);
    let journal = state.join("coordinator.journal");
    let whole = file_len(&journal);
    assert_ne!(
        whole % 4096,
        0,
        "the journal must end inside a page, so that a larger record is written in part"
    );

    let filler = fill(fs.path());
    let big = "x".repeat(6000);
    // Served from memory: the record could be written only in part.
    assert_eq!(exchange_str(addr, &send("m2", &big)), ACK);
    let failed = "Journal append failed";
    assert!(coord.log_with(&[failed]).contains(failed));
    assert_eq!(
        file_len(&journal),
        whole,
        "the part of the record that was written is cut off again"
    );
    std::fs::remove_file(filler).unwrap();
    // The rewrite from the live groups is tried at most once a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(exchange_str(addr, &send("m3", "after")), ACK);
    assert_eq!(exchange_str(addr, &send("m4", "later")), ACK);
    // Read before the SIGKILL, which loses the last 20 ms of log lines.
    let healed = "Journal rewritten from the live groups; changes are journaled again";
    let log = coord.log_with(&[healed]);

    coord.crash_and_restart();
    for (id, text) in [
        ("m1", "small"),
        ("m2", &big),
        ("m3", "after"),
        ("m4", "later"),
    ] {
        let wait = request(
            "full",
            &format!(r#""request": "lava_wait", "messageID": "{id}", "nodeID": "1""#),
        );
        let reply = exchange_str(addr, &wait);
        let want = format!(r#"{{"response": "ack", "message": {{"1": {{"text": "{text}"}}}}}}"#);
        assert!(reply.ends_with(&want), "{id} after the restart: {reply}");
    }
    assert!(log.contains(healed), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_never_tears_the_journal_written_directly() {
    a_full_disk_never_tears_the_journal("process").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_never_tears_the_journal_written_by_its_thread() {
    a_full_disk_never_tears_the_journal("power").await;
}
