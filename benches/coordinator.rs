//! `labd coordinator` against Debian's lava-coordinator 2023.01, same client load, same run.
//!
//! 1. Many groups: `GROUPS` groups of `NODES` nodes (env `BENCH_GROUPS`, `BENCH_NODES`; 64 x 4),
//!    every node doing what a Multi-Node job does: group_data, lava_send, lava_wait_all,
//!    lava_sync, clear_group, re-polling 2 ms after each `wait`. At most `IN_FLIGHT` requests
//!    are outstanding at once (lava-coordinator's listen backlog is 1). Reports requests per
//!    second and per-request latency percentiles (connect to reply), and the ratios.
//! 2. A sync of 64 nodes with poll_delay 1 s and arrivals spread over ~1 s: how long after the
//!    last arrival every node has been released.
//!
//! Both servers log at INFO to a file; labd keeps its journal (fsync'd) as in production.
//! Run: `cargo bench --bench coordinator`.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use labd::multinode::protocol::{Envelope, Request, encode_frame};
use labd::multinode::pyjson::{Dict, Key, Value};
use labd_hw_fixtures::peers::lava_coordinator::LavaCoordinator;
use labd_hw_fixtures::{ChildGuard, free_tcp_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

const IN_FLIGHT: usize = 16;

#[derive(Default)]
struct Stats {
    latencies: Vec<Duration>,
    errors: u64,
}

type Shared = Arc<Mutex<Stats>>;

/// One connection: frame out, half-close, reply in. Returns the reply body.
async fn exchange(addr: SocketAddr, frame: &[u8]) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(frame).await?;
    s.shutdown().await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    Ok(String::from_utf8_lossy(buf.get(8..).unwrap_or_default()).into_owned())
}

/// Polls like the dispatcher until the reply is not `wait`; records every request.
async fn poll(
    addr: SocketAddr,
    frame: &[u8],
    delay: Duration,
    gate: &Semaphore,
    stats: &Shared,
) -> String {
    loop {
        let permit = gate.acquire().await.expect("semaphore");
        let t = Instant::now();
        let r = exchange(addr, frame).await;
        let took = t.elapsed();
        drop(permit);
        match r {
            Ok(body) if body.contains("\"wait\"") || body.is_empty() => {
                stats.lock().unwrap().latencies.push(took);
                tokio::time::sleep(delay).await;
            }
            Ok(body) => {
                stats.lock().unwrap().latencies.push(took);
                return body;
            }
            Err(_) => {
                stats.lock().unwrap().errors += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

fn envelope(port: u16, group: &str, node: usize, role: &str) -> Envelope {
    Envelope {
        port: Value::Int(i64::from(port)),
        blocksize: Value::Int(4096),
        poll_delay: Value::Int(1),
        host: "127.0.0.1".into(),
        hostname: "bench".into(),
        client_name: format!("{}", 1000 + node),
        group_name: group.into(),
        role: role.into(),
    }
}

async fn node(
    addr: SocketAddr,
    group: String,
    i: usize,
    n: u32,
    gate: Arc<Semaphore>,
    stats: Shared,
) {
    let env = envelope(
        addr.port(),
        &group,
        i,
        if i == 0 { "server" } else { "client" },
    );
    let f = |r: Request| encode_frame(&env.body(&r));
    let d = Duration::from_millis(2);
    let msg: Dict = [(Key::from("node"), Value::Str(i.to_string()))]
        .into_iter()
        .collect();
    poll(
        addr,
        &f(Request::GroupData { group_size: n }),
        d,
        &gate,
        &stats,
    )
    .await;
    poll(
        addr,
        &f(Request::Send {
            message_id: "ready".into(),
            message: Value::Dict(msg),
        }),
        d,
        &gate,
        &stats,
    )
    .await;
    poll(
        addr,
        &f(Request::WaitAll {
            message_id: "ready".into(),
            role: None,
        }),
        d,
        &gate,
        &stats,
    )
    .await;
    poll(
        addr,
        &f(Request::Sync {
            message_id: "done".into(),
        }),
        d,
        &gate,
        &stats,
    )
    .await;
    poll(
        addr,
        &f(Request::ClearGroup { group_size: n }),
        d,
        &gate,
        &stats,
    )
    .await;
}

struct Report {
    requests: usize,
    errors: u64,
    wall: Duration,
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
}

impl Report {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.wall.as_secs_f64()
    }
}

async fn many_groups(addr: SocketAddr, groups: usize, nodes: usize) -> Report {
    let stats: Shared = Arc::default();
    let gate = Arc::new(Semaphore::new(IN_FLIGHT));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for g in 0..groups {
        for i in 0..nodes {
            tasks.push(tokio::spawn(node(
                addr,
                format!("bench-{}-{g}", addr.port()),
                i,
                nodes as u32,
                gate.clone(),
                stats.clone(),
            )));
        }
    }
    for t in tasks {
        t.await.expect("node task");
    }
    let wall = t.elapsed();
    let mut s = std::mem::take(&mut *stats.lock().unwrap());
    s.latencies.sort();
    let pct = |p: f64| s.latencies[((s.latencies.len() as f64 - 1.0) * p) as usize];
    Report {
        requests: s.latencies.len(),
        errors: s.errors,
        wall,
        p50: pct(0.50),
        p90: pct(0.90),
        p99: pct(0.99),
        max: *s.latencies.last().expect("requests"),
    }
}

/// 64 nodes sync with poll_delay 1 s; returns (time from the last arrival until the earlier
/// nodes were all released, until the last node was released).
async fn sync_64(addr: SocketAddr) -> (Duration, Duration) {
    const N: usize = 64;
    let delay = Duration::from_secs(1);
    let gate = Arc::new(Semaphore::new(N));
    let stats: Shared = Arc::default();
    let group = format!("sync64-{}", addr.port());
    let arrivals = Arc::new(Mutex::new(vec![None; N]));
    let releases = Arc::new(Mutex::new(vec![None; N]));
    // Register everyone first (not measured).
    let mut regs = Vec::new();
    for i in 0..N {
        let env = envelope(addr.port(), &group, i, "node");
        let (gate, stats) = (gate.clone(), stats.clone());
        regs.push(tokio::spawn(async move {
            let f = encode_frame(&env.body(&Request::GroupData {
                group_size: N as u32,
            }));
            poll(addr, &f, Duration::from_millis(20), &gate, &stats).await;
        }));
    }
    for r in regs {
        r.await.expect("register");
    }
    let t0 = Instant::now() + Duration::from_millis(100);
    let mut tasks = Vec::new();
    for i in 0..N {
        let env = envelope(addr.port(), &group, i, "node");
        let (arrivals, releases) = (arrivals.clone(), releases.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until((t0 + Duration::from_millis(15 * i as u64)).into()).await;
            let f = encode_frame(&env.body(&Request::Sync {
                message_id: "barrier".into(),
            }));
            let mut first = true;
            loop {
                let r = exchange(addr, &f).await;
                let now = Instant::now();
                if first {
                    arrivals.lock().unwrap()[i] = Some(now);
                    first = false;
                }
                match r {
                    Ok(b) if b.contains("\"ack\"") => {
                        releases.lock().unwrap()[i] = Some(now);
                        return;
                    }
                    _ => tokio::time::sleep(delay).await,
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("sync node");
    }
    let arrivals = arrivals.lock().unwrap();
    let releases = releases.lock().unwrap();
    let (last_i, last) = arrivals
        .iter()
        .enumerate()
        .map(|(i, a)| (i, a.expect("arrival")))
        .max_by_key(|(_, a)| *a)
        .expect("nodes");
    let others = (0..N)
        .filter(|i| *i != last_i)
        .map(|i| {
            releases[i]
                .expect("release")
                .saturating_duration_since(last)
        })
        .max()
        .unwrap_or_default();
    let own = releases[last_i]
        .expect("release")
        .saturating_duration_since(last);
    (others, own)
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn start_labd(dir: &std::path::Path) -> (ChildGuard, u16) {
    let port = free_tcp_port();
    let conf = dir.join("c.conf");
    std::fs::write(&conf, format!("{{\"port\": {port}}}")).expect("conf");
    let log = dir.join("labd.log");
    let child = Command::new(env!("CARGO_BIN_EXE_labd"))
        .arg("coordinator")
        .arg("--config")
        .arg(&conf)
        .arg("--logfile")
        .arg(&log)
        .args(["--loglevel", "INFO", "--bind", "127.0.0.1", "--state-dir"])
        .arg(dir.join("state"))
        .stdout(Stdio::null())
        .spawn()
        .expect("labd coordinator");
    let guard = ChildGuard::new("labd coordinator", child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("Ready to accept")
    {
        assert!(Instant::now() < deadline, "labd coordinator did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    (guard, port)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let groups: usize = std::env::var("BENCH_GROUPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let nodes: usize = std::env::var("BENCH_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (labd, labd_port) = start_labd(dir.path());
    let lava =
        LavaCoordinator::start_with_level("INFO").expect("lava-coordinator (run .ci/install-deps)");
    let labd_addr = SocketAddr::from(([127, 0, 0, 1], labd_port));

    println!(
        "coordinator benchmark: {groups} groups x {nodes} nodes, {IN_FLIGHT} requests in flight"
    );
    let l = rt.block_on(many_groups(labd_addr, groups, nodes));
    let p = rt.block_on(many_groups(lava.addr(), groups, nodes));
    println!(
        "{:<18} {:>9} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>7}",
        "server", "requests", "wall s", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"
    );
    for (name, r) in [("labd coordinator", &l), ("lava-coordinator", &p)] {
        println!(
            "{:<18} {:>9} {:>9.2} {:>10.0} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>7}",
            name,
            r.requests,
            r.wall.as_secs_f64(),
            r.rps(),
            ms(r.p50),
            ms(r.p90),
            ms(r.p99),
            ms(r.max),
            r.errors
        );
    }
    println!(
        "ratio labd/lava: throughput {:.1}x, p99 latency {:.1}x lower, wall time {:.1}x shorter",
        l.rps() / p.rps(),
        ms(p.p99) / ms(l.p99),
        p.wall.as_secs_f64() / l.wall.as_secs_f64()
    );
    let (lr, lh) = rss_kib(labd.id());
    let (pr, ph) = rss_kib(lava.pid());
    println!("memory: labd RSS {lr} KiB (peak {lh}), lava-coordinator RSS {pr} KiB (peak {ph})");

    println!("sync of 64 nodes, poll_delay 1 s, arrivals 15 ms apart:");
    for (name, addr) in [
        ("labd coordinator", labd_addr),
        ("lava-coordinator", lava.addr()),
    ] {
        let (others, own) = rt.block_on(sync_64(addr));
        println!(
            "{name:<18} the 63 earlier nodes released {:.1} ms after the last arrival; the last node {:.1} ms after (its first call always waits one poll)",
            ms(others),
            ms(own)
        );
    }
    drop(labd);
}
