//! systemd's notify protocol as the real `labd agent` speaks it, received on a datagram socket
//! the test binds as `NOTIFY_SOCKET`: `READY=1` only after the consoles made their first open
//! attempt (with the count online), `STATUS=` when a board comes online, `WATCHDOG=1` at half
//! of `WATCHDOG_USEC` all along (reloads included), `RELOADING=1` … `READY=1` around SIGHUP (a
//! refused reload says so), `STOPPING=1` on SIGTERM and nothing after it.

mod daemon_support;

use std::time::{Duration, Instant};

use daemon_support::*;
use labd_hw_fixtures::simboard::{BoardScript, SimBoard};
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(20);
const WATCHDOG_USEC: u64 = 600_000;

fn monotonic_usec() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_speaks_sd_notify_ready_status_watchdog_reload_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let b1 = SimBoard::spawn("n1", d, BoardScript::silent()).unwrap();
    let b2 = SimBoard::spawn("n2", d, BoardScript::silent()).unwrap();
    let b3 = SimBoard::spawn("n3", d, BoardScript::silent()).unwrap();
    for b in [&b1, &b2, &b3] {
        b.power_on();
    }
    // n2's cable is out when the agent starts.
    b2.unplug();
    let notify = NotifySocket::bind(d);
    let inv = worker(d) + &device("n1", &b1.tty_path(), None) + &device("n2", &b2.tty_path(), None);
    let started = Instant::now();
    let mut agent = start_agent(
        d,
        &inv,
        &[notify.env(), ("WATCHDOG_USEC", WATCHDOG_USEC.to_string())],
    )
    .await;

    // READY=1 comes first, with the truth about the consoles: n1 open, n2 not.
    notify.wait_state(0, T, |m| m.starts_with("READY=1")).await;
    let all = notify.all();
    assert_eq!(
        all[0].1, "READY=1\nSTATUS=2 devices, 1 online",
        "the first message: {all:?}"
    );
    let log = agent.log_text();
    let line = |what: &dyn Fn(&str) -> bool| log.lines().position(what).unwrap();
    let ready_logged = line(&|l| l.contains("daemon::mainloop") && l.contains(" ready"));
    assert!(
        line(&|l| l.contains("console open")) < ready_logged,
        "the console was open before READY=1:\n{log}"
    );

    // The board's cable goes back in: STATUS= follows.
    b2.replug().unwrap();
    let i = notify
        .wait_state(1, T, |m| m == "STATUS=2 devices, 2 online")
        .await;
    assert_eq!(i, 1, "{:?}", notify.states());

    // SIGHUP with a third board: RELOADING=1 (with the monotonic time, as systemd 253 wants),
    // then READY=1 once every service applied it, then the new console online.
    std::fs::write(
        &agent.inventory,
        inv.clone() + &device("n3", &b3.tty_path(), None),
    )
    .unwrap();
    let before = monotonic_usec();
    agent.signal(Signal::SIGHUP);
    let r = notify
        .wait_state(2, T, |m| m.starts_with("RELOADING=1"))
        .await;
    assert_eq!(r, 2, "{:?}", notify.states());
    let states = notify.states();
    let usec: u64 = states[r]
        .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
        .unwrap_or_else(|| panic!("{:?}", states[r]))
        .parse()
        .unwrap();
    assert!(
        usec >= before && usec < monotonic_usec(),
        "MONOTONIC_USEC {usec} is CLOCK_MONOTONIC at the reload ({before}..)"
    );
    let ready = notify
        .wait_state(r + 1, T, |m| m.starts_with("READY=1"))
        .await;
    // Only STATUS= lines may come in between (a console of the new inventory coming up).
    let states = notify.states();
    assert!(
        states[r + 1..ready]
            .iter()
            .all(|m| m.starts_with("STATUS=3 devices, ")),
        "{states:?}"
    );
    assert!(
        notify.states()[ready].starts_with("READY=1\nSTATUS=3 devices, "),
        "{:?}",
        notify.states()
    );
    notify
        .wait_state(ready, T, |m| m.ends_with("STATUS=3 devices, 3 online"))
        .await;
    let st = agent.status().await;
    assert_eq!(st["consoles"].as_array().unwrap().len(), 3);
    // No console went down on the way: neither the reload nor discovery announcing n2's
    // path (after n2's own retry had already opened it) may drop a healthy link.
    let online = |m: &str| -> usize {
        m.rsplit("STATUS=")
            .next()
            .unwrap()
            .split(", ")
            .nth(1)
            .unwrap()
            .trim_end_matches(" online")
            .parse()
            .unwrap()
    };
    let counts: Vec<usize> = notify
        .states()
        .iter()
        .filter(|m| m.contains("STATUS="))
        .map(|m| online(m))
        .collect();
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]),
        "{:?}",
        notify.states()
    );
    for (i, c) in st["consoles"].as_array().unwrap().iter().enumerate() {
        assert_eq!(c["reconnects"], 0, "console {i}: {c}");
    }

    // A broken inventory: the reload is refused, READY=1 says so, the lab keeps running.
    let n = notify.states().len();
    std::fs::write(&agent.inventory, inv.clone() + "[[device]]\nname = 7\n").unwrap();
    agent.signal(Signal::SIGHUP);
    let r = notify
        .wait_state(n, T, |m| m.starts_with("RELOADING=1"))
        .await;
    let ready = notify
        .wait_state(r + 1, T, |m| m.starts_with("READY=1"))
        .await;
    assert_eq!(
        notify.states()[ready],
        "READY=1\nSTATUS=3 devices, 3 online (reload refused: the inventory has errors, see the log)"
    );
    assert_eq!(notify.states().len(), ready + 1, "{:?}", notify.states());

    // Watchdog pings all along, each within half the interval of the previous one (systemd
    // restarts the service when one is WATCHDOG_USEC late), from READY=1 on.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let all = notify.all();
    let pings: Vec<Instant> = all
        .iter()
        .filter(|(_, m)| m == "WATCHDOG=1")
        .map(|(t, _)| *t)
        .collect();
    let ready_at = all[0].0;
    assert!(pings[0] >= ready_at, "no ping before READY=1");
    let span = *pings.last().unwrap() - pings[0];
    let gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    let worst = gaps.iter().max().unwrap();
    assert!(
        *worst < Duration::from_micros(WATCHDOG_USEC),
        "a ping came {worst:?} after the previous one"
    );
    // At half the interval: 300 ms apart, so about span / 300 ms of them.
    let expect = span.as_millis() / 300;
    assert!(
        (pings.len() as u128) + 1 >= expect && (pings.len() as u128) <= expect + 2,
        "{} pings over {span:?}",
        pings.len()
    );
    eprintln!(
        "{} pings over {span:?} (worst gap {worst:?}); READY=1 {:?} after the start",
        pings.len(),
        ready_at - started
    );

    // SIGTERM: STOPPING=1, a clean exit, silence afterwards.
    let status = agent.child.stop(T).unwrap();
    assert!(status.success(), "{status:?}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let all = notify.all();
    assert_eq!(all.last().unwrap().1, "STOPPING=1", "{all:?}");
    assert_eq!(
        all.iter().filter(|(_, m)| m == "STOPPING=1").count(),
        1,
        "{all:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_watchdog_pings_without_watchdog_usec_or_for_another_pid() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let b1 = SimBoard::spawn("m1", d, BoardScript::silent()).unwrap();
    b1.power_on();
    let notify = NotifySocket::bind(d);
    let inv = worker(d) + &device("m1", &b1.tty_path(), None);
    // WATCHDOG_PID names another process: the watchdog is not labd's (systemd sets it for the
    // main process only), so labd must not ping.
    let agent = start_agent(
        d,
        &inv,
        &[
            notify.env(),
            ("WATCHDOG_USEC", "200000".into()),
            ("WATCHDOG_PID", "1".into()),
        ],
    )
    .await;
    notify.wait_state(0, T, |m| m.starts_with("READY=1")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        notify
            .all()
            .iter()
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>(),
        ["READY=1\nSTATUS=1 device, 1 online"]
    );
    drop(agent);
}
