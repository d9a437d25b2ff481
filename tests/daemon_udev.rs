//! The daemon's console follows a replug of a simulated board: the real `labd agent` (no udev
//! daemon runs here, so its discovery watches the configured path), a board whose stable
//! symlink disappears and comes back on a new pty. The console must reopen on the new node as
//! soon as the link is back, not on its own backoff tick; operators stay attached; the journal
//! has the lost/back markers and loses nothing outside the outage.

mod daemon_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use daemon_support::*;
use labd::console::journal::RecordKind;
use labd::console::journal::reader::JournalReader;
use labd::control::frame::FrameKind;
use labd::ids::DeviceName;
use labd_hw_fixtures::simboard::{BoardScript, SimBoard};

const T: Duration = Duration::from_secs(30);

/// The console's own reconnect schedule after a loss at 0 (`ReconnectPolicy::default()`: 200 ms
/// doubling to 5 s): attempts at about 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 11.4 s.
const OWN_RETRIES: [f64; 7] = [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 11.4];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_follows_a_replug_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let board = SimBoard::spawn("u1", d, BoardScript::silent()).unwrap();
    board.power_on();
    let inv = worker(d) + &device("u1", &board.tty_path(), None);
    let agent = start_agent(d, &inv, &[]).await;
    assert!(
        agent
            .log_text()
            .contains("no udev daemon runs here; following the configured tty paths"),
        "{}",
        agent.log_text()
    );
    let first_pty = board.pty_path().unwrap();
    let op = Operator::attach(&agent, "u1").await;
    wait_until(T, "console online", || {
        agent.log_text().contains("console open")
    })
    .await;

    // The board prints a numbered line every 10 ms; remember which reached its tty.
    let stop = Arc::new(AtomicBool::new(false));
    let written: Arc<Mutex<Vec<(u32, Instant, bool)>>> = Arc::default();
    let writer = {
        let (b, stop, written) = (board.control(), stop.clone(), written.clone());
        std::thread::spawn(move || {
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let line = format!("L{i:06}\r\n");
                let ok = b.write_raw(line.as_bytes()) == line.len();
                written.lock().unwrap().push((i, Instant::now(), ok));
                i += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Unplug for 7 s: the console's backoff has grown to seconds by then.
    let unplugged = Instant::now();
    board.unplug();
    let lost = op.wait_kind(FrameKind::Lost, unplugged, T).await;
    assert!(lost.at - unplugged < Duration::from_secs(2));
    // Hold the freed pty number meanwhile, so the board comes back on another node (as a
    // USB-serial adapter re-enumerated as ttyUSB1 would).
    let _blocker = labd_hw_fixtures::simboard::Pty::open_raw().unwrap();
    tokio::time::sleep(Duration::from_secs(7)).await;
    let replugged = Instant::now();
    board.replug().unwrap();
    let new_pty = board.pty_path().unwrap();
    assert_ne!(new_pty, first_pty);
    let back = op.wait_kind(FrameKind::Back, replugged, T).await;
    let reopen = back.at - replugged;
    // The next attempt of its own after the loss would come at 11.4 s, 4.4 s after the replug.
    let own_next = OWN_RETRIES
        .iter()
        .map(|s| lost.at + Duration::from_secs_f64(*s))
        .find(|t| *t > replugged)
        .unwrap();
    assert!(
        reopen < Duration::from_millis(1500) && back.at + Duration::from_secs(2) < own_next,
        "reopened {reopen:?} after the replug; the console's own next attempt was {:?} after it",
        own_next - replugged
    );
    eprintln!(
        "reopened {reopen:?} after the replug (own next attempt {:?} after it)",
        own_next - replugged
    );
    let back_text = String::from_utf8_lossy(&back.payload).into_owned();
    assert!(
        back_text.contains(&new_pty.display().to_string()) || back_text.contains("u1"),
        "{back_text}"
    );
    assert!(
        agent
            .log_text()
            .contains("adapter present: reopening the console now"),
        "{}",
        agent.log_text()
    );

    // The operator is still attached and receives the board's output on the new pty.
    op.wait_for(b"\r\n", back.at, T).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let last_written = written.lock().unwrap().last().unwrap().0;
    let want = format!("L{last_written:06}\r\n");
    op.wait_for(want.as_bytes(), back.at, T).await;

    // The journal: lost and back markers, and every line except those of the outage.
    let st = agent.status().await;
    assert_eq!(st["consoles"][0]["online"], true);
    assert_eq!(st["consoles"][0]["reconnects"], 1);
    assert_eq!(st["discovery"]["mode"], "path");
    assert_eq!(
        st["discovery"]["devices"]["u1"]["node"],
        new_pty.display().to_string()
    );
    let out = agent.labd(&["status"]).await;
    assert!(
        text(&out).0.contains(&format!(
            "    adapter:  {} (followed by path)",
            new_pty.display()
        )),
        "{}",
        text(&out).0
    );
    let journal_dir = d.join("state").join("journal");
    let records = || {
        JournalReader::open(&journal_dir, &DeviceName::new("u1").unwrap(), None)
            .poll()
            .unwrap()
    };
    wait_until(T, "journal written", || {
        let out: Vec<u8> = records()
            .into_iter()
            .filter(|r| r.kind == RecordKind::Output)
            .flat_map(|r| r.data)
            .collect();
        contains(&out, want.as_bytes())
    })
    .await;
    let recs = records();
    let marks: Vec<String> = recs
        .iter()
        .filter(|r| r.kind == RecordKind::Marker)
        .map(|r| String::from_utf8_lossy(&r.data).into_owned())
        .collect();
    let lost_i = marks
        .iter()
        .position(|m| m.starts_with("console lost: "))
        .unwrap_or_else(|| panic!("{marks:?}"));
    let back_i = marks
        .iter()
        .position(|m| {
            m.starts_with("console back after 7.") || m.starts_with("console back after 8.")
        })
        .unwrap_or_else(|| panic!("{marks:?}"));
    assert!(lost_i < back_i, "{marks:?}");
    let output: Vec<u8> = recs
        .iter()
        .filter(|r| r.kind == RecordKind::Output)
        .flat_map(|r| r.data.clone())
        .collect();
    let got: Vec<u32> = String::from_utf8_lossy(&output)
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.strip_prefix('L')
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("garbled line {l:?}"))
        })
        .collect();
    // In order, no duplicates, exactly one hole.
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order");
    let holes: Vec<(u32, u32)> = got
        .windows(2)
        .filter(|w| w[1] != w[0] + 1)
        .map(|w| (w[0], w[1]))
        .collect();
    assert_eq!(holes.len(), 1, "one hole, at the outage: {holes:?}");
    // Everything written before the unplug (but what was in the pty at that instant) and
    // everything written after the console was back is in the journal.
    let w = written.lock().unwrap().clone();
    for (i, at, ok) in &w {
        let must = *ok && (*at + Duration::from_millis(100) < unplugged || *at > back.at);
        if must {
            assert!(got.binary_search(i).is_ok(), "line {i} missing ({holes:?})");
        }
    }
    let (a, b) = holes[0];
    let hole_start = w.iter().find(|x| x.0 == a + 1).unwrap().1;
    let hole_end = w.iter().find(|x| x.0 == b - 1).unwrap().1;
    assert!(
        hole_start + Duration::from_millis(100) >= unplugged && hole_end <= back.at,
        "the hole is the outage"
    );
}
