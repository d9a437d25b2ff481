//! `labd coordinator` against Debian's lava-coordinator 2023.01, same client load, same run.
//!
//! 1. Throughput: `W` clients (1 and 16) each with its own one-node group, each sending
//!    `lava_send` then `lava_wait` (answered at once) back to back: the same requests and the
//!    same replies for every server. Requests per second and latency percentiles (connect to
//!    reply).
//! 2. Many groups: `BENCH_GROUPS` groups of `BENCH_NODES` nodes (64 x 4), every node doing what
//!    a Multi-Node job does: group_data, lava_send, lava_wait_all, lava_sync, clear_group,
//!    re-polling 2 ms after each `wait`, at most 16 requests in flight: time to finish all.
//! 3. A sync of 64 nodes with poll_delay 1 s and arrivals spread over ~1 s: how long after the
//!    last arrival every node has been released.
//!
//! All servers log at INFO to a file. labd runs with its journal, once in the default
//! durability mode (`process`: written to the OS before the reply, fdatasync within 50 ms) and
//! once with `--durability power` (fdatasync before the reply).
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
/// Requests per throughput client (`BENCH_ROUNDS`).
fn rounds() -> usize {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500)
}

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

/// One client: its own group of one, then `ROUNDS` x (lava_send, lava_wait).
async fn sender(addr: SocketAddr, w: usize, stats: Shared) {
    let env = envelope(addr.port(), &format!("tp-{}-{w}", addr.port()), w, "solo");
    let gate = Semaphore::new(1);
    let none = Arc::<Mutex<Stats>>::default();
    let reg = encode_frame(&env.body(&Request::GroupData { group_size: 1 }));
    poll(addr, &reg, Duration::from_millis(1), &gate, &none).await;
    for r in 0..rounds() / 2 {
        let id = format!("m{r}");
        let msg: Dict = [(Key::from("round"), Value::Str(r.to_string()))]
            .into_iter()
            .collect();
        let send = encode_frame(&env.body(&Request::Send {
            message_id: id.clone(),
            message: Value::Dict(msg),
        }));
        let wait = encode_frame(&env.body(&Request::Wait {
            message_id: id,
            node_id: env.client_name.clone(),
        }));
        poll(addr, &send, Duration::from_millis(1), &gate, &stats).await;
        poll(addr, &wait, Duration::from_millis(1), &gate, &stats).await;
    }
}

async fn throughput(addr: SocketAddr, clients: usize) -> Report {
    let stats: Shared = Arc::default();
    let t = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|w| tokio::spawn(sender(addr, w, stats.clone())))
        .collect();
    for t in tasks {
        t.await.expect("sender");
    }
    report(t.elapsed(), &stats)
}

fn report(wall: Duration, stats: &Shared) -> Report {
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
    report(t.elapsed(), &stats)
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

/// CPU time (user + system) the process has used so far: nanoseconds on CPU summed over its
/// threads (`schedstat`), or clock ticks of user or system time with `BENCH_CPU=user|sys`.
fn cpu_time(pid: u32) -> Duration {
    if std::env::var("BENCH_CPU").is_err()
        && let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task"))
    {
        let ns: u64 = tasks
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        return Duration::from_nanos(ns);
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" that closes the command name: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let ticks = if std::env::var("BENCH_CPU").as_deref() == Ok("user") {
        field(11)
    } else if std::env::var("BENCH_CPU").as_deref() == Ok("sys") {
        field(12)
    } else {
        field(11) + field(12)
    };
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
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

fn start_labd(dir: &std::path::Path, durability: &str) -> (ChildGuard, u16) {
    let dir = &dir.join(durability);
    std::fs::create_dir_all(dir).expect("dir");
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
        .args([
            "--loglevel",
            &loglevel(),
            "--bind",
            "127.0.0.1",
            "--durability",
            durability,
        ])
        .args(
            std::env::var("BENCH_LABD_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .arg("--state-dir")
        .arg(dir.join("state"))
        .stdout(Stdio::null())
        .spawn()
        .expect("labd coordinator");
    let guard = ChildGuard::new("labd coordinator", child);
    // labd takes a connect-and-close probe in its stride (lava-coordinator would block on it).
    labd_hw_fixtures::wait_for_tcp(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(20),
    )
    .expect("labd coordinator did not start");
    (guard, port)
}

/// `BENCH_LOGLEVEL` (INFO): the level both servers log at.
fn loglevel() -> String {
    std::env::var("BENCH_LOGLEVEL").unwrap_or_else(|_| "INFO".into())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn print_table(rows: &[(&str, &Report)]) {
    println!(
        "  {:<22} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8} {:>9} {:>6}",
        "server", "requests", "wall s", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"
    );
    for (name, r) in rows {
        println!(
            "  {:<22} {:>8} {:>8.2} {:>9.0} {:>8.3} {:>8.3} {:>8.3} {:>9.3} {:>6}",
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
    // The client load as the goals were first measured with (a multi-thread runtime):
    // a single-threaded client made lava-coordinator's listen(1) backlog overflow more often
    // (fewer of its requests per second), which would flatter the ratio.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (labd, labd_port) = start_labd(dir.path(), "process");
    let (labd_power, power_port) = start_labd(dir.path(), "power");
    let lava = LavaCoordinator::start_with_level(&loglevel())
        .expect("lava-coordinator (run .ci/install-deps)");
    let local = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let servers = [
        ("labd coordinator", local(labd_port)),
        ("labd --durability power", local(power_port)),
        ("lava-coordinator", lava.addr()),
    ];
    let pids = [labd.id(), labd_power.id(), lava.pid()];

    for clients in [1, 16] {
        println!(
            "1. throughput: {clients} client(s), {} requests each (lava_send + lava_wait)",
            rounds()
        );
        let mut cpu = Vec::new();
        let reports: Vec<Report> = servers
            .iter()
            .zip(pids)
            .map(|((_, a), pid)| {
                let before = cpu_time(pid);
                let r = rt.block_on(throughput(*a, clients));
                cpu.push((cpu_time(pid) - before).as_secs_f64() * 1e6 / r.requests as f64);
                r
            })
            .collect();
        let rows: Vec<(&str, &Report)> = servers
            .iter()
            .map(|(n, _)| *n)
            .zip(reports.iter())
            .collect();
        print_table(&rows);
        println!(
            "  server CPU per request: labd {:.0} us, labd power {:.0} us, lava-coordinator {:.0} us ({:.1}x less)",
            cpu[0],
            cpu[1],
            cpu[2],
            cpu[2] / cpu[0]
        );
        println!(
            "  ratio labd/lava: throughput {:.1}x, p99 latency {:.1}x lower (power mode: {:.1}x, {:.1}x)",
            reports[0].rps() / reports[2].rps(),
            ms(reports[2].p99) / ms(reports[0].p99),
            reports[1].rps() / reports[2].rps(),
            ms(reports[2].p99) / ms(reports[1].p99),
        );
    }

    println!(
        "2. many groups: {groups} groups x {nodes} nodes, full job life cycle, {IN_FLIGHT} requests in flight"
    );
    let (mut cpu, mut client_cpu) = (Vec::new(), Vec::new());
    let me = std::process::id();
    let reports: Vec<Report> = servers
        .iter()
        .zip(pids)
        .map(|((_, a), pid)| {
            let (before, mine) = (cpu_time(pid), cpu_time(me));
            let r = rt.block_on(many_groups(*a, groups, nodes));
            let per = |d: Duration| d.as_secs_f64() * 1e6 / r.requests as f64;
            cpu.push(per(cpu_time(pid) - before));
            client_cpu.push(per(cpu_time(me) - mine));
            r
        })
        .collect();
    let rows: Vec<(&str, &Report)> = servers
        .iter()
        .map(|(n, _)| *n)
        .zip(reports.iter())
        .collect();
    print_table(&rows);
    println!(
        "  server CPU per request: labd {:.0} us, labd power {:.0} us, lava-coordinator {:.0} us; the bench client's: {:.0} / {:.0} / {:.0} us",
        cpu[0], cpu[1], cpu[2], client_cpu[0], client_cpu[1], client_cpu[2]
    );
    println!(
        "  ratio labd/lava: all groups done {:.1}x sooner (power mode: {:.1}x)",
        reports[2].wall.as_secs_f64() / reports[0].wall.as_secs_f64(),
        reports[2].wall.as_secs_f64() / reports[1].wall.as_secs_f64(),
    );
    // The goals are about this load. Throughput is counted two ways: job life cycles
    // finished per second (the work), and requests answered per second (lava-coordinator
    // answers more of them, the `wait` re-polls of its slower groups).
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let per_s = |r: &Report| (groups * nodes) as f64 / r.wall.as_secs_f64();
    let (work, rps) = (
        per_s(&reports[0]) / per_s(&reports[2]),
        reports[0].rps() / reports[2].rps(),
    );
    println!(
        "  goal throughput >= 20x lava-coordinator: node life cycles/s {:.0} vs {:.0} = {work:.1}x, requests/s {:.0} vs {:.0} = {rps:.1}x: {}",
        per_s(&reports[0]),
        per_s(&reports[2]),
        reports[0].rps(),
        reports[2].rps(),
        verdict(work >= 20.0 && rps >= 20.0),
    );
    println!(
        "  goal p99 < 2 ms: labd {:.3} ms ({}), power mode {:.3} ms ({})",
        ms(reports[0].p99),
        verdict(reports[0].p99 < Duration::from_millis(2)),
        ms(reports[1].p99),
        verdict(reports[1].p99 < Duration::from_millis(2)),
    );
    let (lr, lh) = rss_kib(labd.id());
    let (pr, ph) = rss_kib(lava.pid());
    println!("  memory: labd RSS {lr} KiB (peak {lh}), lava-coordinator RSS {pr} KiB (peak {ph})");

    println!("3. sync of 64 nodes, poll_delay 1 s, arrivals 15 ms apart:");
    for (name, addr) in servers {
        let (others, own) = rt.block_on(sync_64(addr));
        println!(
            "  {name:<22} 63 earlier nodes released {:.1} ms after the last arrival; the last node {:.1} ms after (its first call always waits one poll)",
            ms(others),
            ms(own)
        );
        if name.starts_with("labd") {
            println!(
                "  goal: released within one poll interval (1000 ms) of the last arrival: {}",
                if others <= Duration::from_secs(1) {
                    "met"
                } else {
                    "NOT met"
                }
            );
        }
    }
    drop((labd, labd_power));
}
