//! Console benchmark: labd (the real release binary) against the raw pty and against the real
//! ser2net 4.3, in one run.
//!
//! 1. Keystroke-echo latency (p50/p99) over an echoing pty: raw, through labd's control socket,
//!    through labd's telnet listener, through ser2net's telnet port. Goal: labd adds < 1 ms p99.
//! 2. Throughput of one console into the journal plus two attached clients (goal >= 50 MB/s),
//!    next to ser2net feeding two telnet clients and a trace file, and the raw pty ceiling.
//! 3. CPU of 64 consoles each streaming at 115200 baud (goal < 5% of one core), labd journaling
//!    with no client and with a telnet client each, ser2net with a telnet client each.
//!
//! `cargo bench --bench console`; `LABD_BENCH_QUICK=1` for a shorter run.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use labd::control::frame::FrameKind;
use labd::control::{AttachRequest, ControlClient};
use labd_hw_fixtures::peers::ser2net::{Accepter, Ser2net, Ser2netPort};
use labd_hw_fixtures::simboard::pty::{self, Pty};
use labd_hw_fixtures::{ChildGuard, free_tcp_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn quick() -> bool {
    std::env::var_os("LABD_BENCH_QUICK").is_some()
}

/// A pty whose "board" end echoes every byte back at once, or streams data.
struct FakeBoard {
    pty: Arc<Pty>,
    link: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeBoard {
    fn new(dir: &Path, name: &str) -> Self {
        let pty = Arc::new(Pty::open_raw().unwrap());
        let link = dir.join(name);
        pty::replace_symlink(&pty.slave_path, &link).unwrap();
        Self {
            pty,
            link,
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        }
    }

    fn echo(dir: &Path, name: &str) -> Self {
        let mut b = Self::new(dir, name);
        let (p, stop) = (b.pty.clone(), b.stop.clone());
        b.thread = Some(std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                if !pty::wait_readable(p.master.as_fd(), Duration::from_millis(50)).unwrap_or(false)
                {
                    continue;
                }
                if let Ok(n) = pty::read_some(p.master.as_fd(), &mut buf) {
                    let _ = pty::write_all_nb(p.master.as_fd(), &buf[..n], Duration::from_secs(1));
                }
            }
        }));
        b
    }

    fn master(&self) -> &OwnedFd {
        &self.pty.master
    }
}

impl Drop for FakeBoard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.link);
    }
}

struct Agent {
    child: ChildGuard,
    socket: PathBuf,
    state: PathBuf,
}

async fn start_agent(dir: &Path, devices: &[(String, PathBuf, Option<u16>)]) -> Agent {
    std::fs::create_dir_all(dir).unwrap();
    let state = dir.join("state");
    let mut inv = format!(
        "[worker]\nname = \"bench\"\nstate_dir = \"{}\"\n[worker.journal]\nmax_file_size = \"4 GiB\"\n\n",
        state.display()
    );
    for (name, tty, listen) in devices {
        inv.push_str(&format!(
            "[[device]]\nname = \"{name}\"\ndevice_type = \"bench\"\n[device.console]\ntty = \"{}\"\n",
            tty.display()
        ));
        if let Some(p) = listen {
            inv.push_str(&format!("listen = {p}\n"));
        }
    }
    let path = dir.join("inventory.toml");
    std::fs::write(&path, inv).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_labd"))
        .args(["agent", "-c"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .env(
            "TOKIO_WORKER_THREADS",
            std::env::var("BENCH_WT").unwrap_or("2".into()),
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("agent.log")).unwrap())
        .spawn()
        .unwrap();
    let agent = Agent {
        child: ChildGuard::new("labd agent", child),
        socket: state.join("labd.sock"),
        state,
    };
    let client = ControlClient::new(&agent.socket);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(v) = client
            .request(serde_json::json!({"request": "status"}))
            .await
        {
            let online = v["consoles"]
                .as_array()
                .is_some_and(|a| a.len() == devices.len() && a.iter().all(|c| c["online"] == true));
            if online {
                break;
            }
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
            panic!(
                "labd agent did not come up:\n{}",
                &log[log.len().saturating_sub(3000)..]
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    agent
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(name: &str, mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let (p50, p99) = (percentile(&v, 0.5), percentile(&v, 0.99));
    println!(
        "  {name:<28} p50 {:>8.1} µs   p99 {:>8.1} µs   ({} samples)",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        v.len()
    );
    (p50, p99)
}

/// Echo round trips straight on the tty.
struct RawClient {
    fd: OwnedFd,
}

impl RawClient {
    fn open(tty: &Path) -> Self {
        use nix::fcntl::{OFlag, open};
        let fd = open(
            tty,
            OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_NONBLOCK,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        pty::make_raw(fd.as_fd()).unwrap();
        Self { fd }
    }

    fn sample(&mut self, b: u8) -> Duration {
        let mut buf = [0u8; 16];
        let t = Instant::now();
        pty::write_all_nb(self.fd.as_fd(), &[b], Duration::from_secs(1)).unwrap();
        loop {
            pty::wait_readable(self.fd.as_fd(), Duration::from_secs(1)).unwrap();
            if pty::read_some(self.fd.as_fd(), &mut buf).unwrap() > 0 {
                break;
            }
        }
        t.elapsed()
    }
}

/// Echo round trips through labd's control socket (an attached operator).
struct SocketClient {
    s: labd::control::AttachSession,
}

impl SocketClient {
    async fn open(socket: &Path, device: &str) -> Self {
        let (_, s) = ControlClient::new(socket)
            .attach(&AttachRequest {
                device: device.into(),
                read_only: false,
                force: false,
                replay: 0,
            })
            .await
            .unwrap();
        Self { s }
    }

    async fn sample(&mut self, b: u8) -> Duration {
        let t = Instant::now();
        self.s.writer.input(&[b]).await.unwrap();
        loop {
            let f = self.s.reader.next().await.unwrap().unwrap();
            if f.kind == FrameKind::Data && f.payload.contains(&b) {
                break;
            }
        }
        t.elapsed()
    }
}

/// Echo round trips over a telnet port (labd's listener or ser2net), after its greeting.
struct TelnetClient {
    s: tokio::net::TcpStream,
}

impl TelnetClient {
    async fn open(port: u16) -> Self {
        let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.set_nodelay(true).unwrap();
        let mut c = Self { s };
        let mut g = [0u8; 18];
        c.s.read_exact(&mut g).await.unwrap();
        c
    }

    async fn sample(&mut self, b: u8) -> Duration {
        let mut buf = [0u8; 64];
        let t = Instant::now();
        self.s.write_all(&[b]).await.unwrap();
        loop {
            let k = self.s.read(&mut buf).await.unwrap();
            assert!(k > 0);
            if buf[..k].contains(&b) {
                break;
            }
        }
        t.elapsed()
    }
}

async fn latency(dir: &Path) {
    let n = if quick() { 300 } else { 3000 };
    println!(
        "\n== keystroke echo latency (board echoes each byte at once; paths sampled in turn) =="
    );
    let raw_board = FakeBoard::echo(dir, "echo-raw");
    // Separate consoles for the socket and telnet clients: every client of a console sees all
    // of its output, so sharing one would mix the two clients' echoes.
    let sock_board = FakeBoard::echo(dir, "echo-sock");
    let tel_board = FakeBoard::echo(dir, "echo-tel");
    let s2n_board = FakeBoard::echo(dir, "echo-s2n");
    let tport = free_tcp_port();
    let agent = start_agent(
        &dir.join("lat"),
        &[
            ("echo".into(), sock_board.link.clone(), None),
            ("echo-tel".into(), tel_board.link.clone(), Some(tport)),
        ],
    )
    .await;
    let s2n_dir = dir.join("s2n-lat");
    std::fs::create_dir_all(&s2n_dir).unwrap();
    let ser2net =
        Ser2net::start(&s2n_dir, vec![Ser2netPort::telnet("echo", &s2n_board.link)]).unwrap();

    let mut raw = RawClient::open(&raw_board.link);
    let mut sock = SocketClient::open(&agent.socket, "echo").await;
    let mut tel = TelnetClient::open(tport).await;
    let mut s2n = TelnetClient::open(ser2net.port("echo")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut v_raw, mut v_sock, mut v_tel, mut v_s2n) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Rotate which path goes first: the one after ser2net's multi-millisecond reply would
    // otherwise always pay for the machine waking from idle.
    for i in 0..n {
        let b = b'a' + (i % 26) as u8;
        for k in 0..4 {
            match (i + k) % 4 {
                0 => v_raw.push(raw.sample(b)),
                1 => v_sock.push(sock.sample(b).await),
                2 => v_tel.push(tel.sample(b).await),
                _ => v_s2n.push(s2n.sample(b).await),
            }
        }
    }
    drop(agent);
    drop(ser2net);
    let (raw50, raw99) = summary("raw pty", v_raw);
    let (l50, l99) = summary("labd control socket", v_sock);
    let (t50, t99) = summary("labd telnet listener", v_tel);
    let (s50, s99) = summary("ser2net telnet", v_s2n);
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "  added over the raw pty: labd socket p50 +{:.0} µs, p99 +{:.0} µs; labd telnet p50 +{:.0} µs, p99 +{:.0} µs; ser2net p50 +{:.0} µs, p99 +{:.0} µs",
        us(l50) - us(raw50),
        us(l99) - us(raw99),
        us(t50) - us(raw50),
        us(t99) - us(raw99),
        us(s50) - us(raw50),
        us(s99) - us(raw99)
    );
    println!(
        "  ratios: p50 labd socket/raw {:.1}x, labd telnet/ser2net {:.3}x; p99 labd telnet/ser2net {:.3}x; goal (labd adds < 1000 µs at p99): {}",
        us(l50) / us(raw50),
        us(t50) / us(s50),
        us(t99) / us(s99),
        if us(l99) - us(raw99) < 1000.0 {
            "met"
        } else {
            "NOT met"
        }
    );
}

/// Writes `total` bytes (no 0xFF, so telnet does not double any) into a board's master.
fn blast(master: &OwnedFd, total: usize) {
    let chunk: Vec<u8> = (0..65536u32).map(|i| b' ' + (i % 90) as u8).collect();
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk.len());
        let w = pty::write_all_nb(master.as_fd(), &chunk[..n], Duration::from_secs(10)).unwrap();
        assert_eq!(w, n, "the reader stopped reading");
        left -= n;
    }
}

async fn read_attach(socket: PathBuf, device: &str, total: usize) -> (usize, u64) {
    let (_, mut s) = ControlClient::new(socket)
        .attach(&AttachRequest {
            device: device.into(),
            read_only: true,
            force: false,
            replay: 0,
        })
        .await
        .unwrap();
    let (mut got, mut missed) = (0usize, 0u64);
    while got + (missed as usize) < total {
        match tokio::time::timeout(Duration::from_secs(10), s.reader.next()).await {
            Ok(Ok(Some(f))) if f.kind == FrameKind::Data => got += f.payload.len(),
            Ok(Ok(Some(f))) if f.kind == FrameKind::Missed => {
                missed += u64::from_be_bytes(f.payload[..8].try_into().unwrap())
            }
            Ok(Ok(Some(_))) => {}
            _ => break,
        }
    }
    (got, missed)
}

async fn read_telnet(port: u16, total: usize) -> usize {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let mut got = 0usize;
    let mut greeting = 18usize;
    while got < total {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                let skip = greeting.min(n);
                greeting -= skip;
                got += n - skip;
            }
            _ => break,
        }
    }
    got
}

async fn throughput(dir: &Path) {
    let total: usize = if quick() { 16 << 20 } else { 128 << 20 };
    let mb = total as f64 / 1e6;
    println!("\n== throughput: one console, {} MiB ==", total >> 20);

    // Ceiling: the pty itself.
    let board = FakeBoard::new(dir, "tp-raw");
    let link = board.link.clone();
    let reader = std::thread::spawn(move || {
        use nix::fcntl::{OFlag, open};
        let fd = open(
            &link,
            OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_NONBLOCK,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        pty::make_raw(fd.as_fd()).unwrap();
        let mut buf = vec![0u8; 65536];
        let mut got = 0;
        while got < total {
            pty::wait_readable(fd.as_fd(), Duration::from_secs(5)).unwrap();
            got += pty::read_some(fd.as_fd(), &mut buf).unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    blast(board.master(), total);
    reader.join().unwrap();
    let raw = mb / t.elapsed().as_secs_f64();
    println!("  raw pty, one plain reader           {raw:>8.1} MB/s");
    drop(board);

    // labd: journal + two attached clients.
    let board = FakeBoard::new(dir, "tp-labd");
    let agent = start_agent(&dir.join("tp"), &[("tp".into(), board.link.clone(), None)]).await;
    let a = tokio::spawn(read_attach(agent.socket.clone(), "tp", total));
    let b = tokio::spawn(read_attach(agent.socket.clone(), "tp", total));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let master = board.pty.clone();
    let t = Instant::now();
    let blaster = tokio::task::spawn_blocking(move || blast(&master.master, total));
    let (ga, ma) = a.await.unwrap();
    let (gb, mbm) = b.await.unwrap();
    let clients_done = t.elapsed();
    blaster.await.unwrap();
    let journal = agent.state.join("journal/tp/console.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&journal).map_or(0, |m| m.len()) < total as u64
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let journal_done = t.elapsed();
    let jsize = std::fs::metadata(&journal).map_or(0, |m| m.len());
    if jsize < (total as u64) {
        let listing: Vec<_> = std::fs::read_dir(journal.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| (e.file_name(), e.metadata().map(|m| m.len()).unwrap_or(0)))
            .collect();
        let log = std::fs::read_to_string(dir.join("tp/agent.log")).unwrap_or_default();
        let inv = std::fs::read_to_string(dir.join("tp/inventory.toml")).unwrap_or_default();
        panic!("journal has {jsize} bytes of {total}: {listing:?}\n{inv}\n{log}");
    }
    let labd_rate = mb / clients_done.as_secs_f64().max(journal_done.as_secs_f64());
    println!(
        "  labd: journal + 2 attached clients   {labd_rate:>8.1} MB/s   (clients got {:.1}/{:.1} MB, missed {}/{} bytes; journal complete at {:.2} s)",
        ga as f64 / 1e6,
        gb as f64 / 1e6,
        ma,
        mbm,
        journal_done.as_secs_f64()
    );
    drop(agent);
    drop(board);

    // ser2net: two telnet clients and a trace file.
    let board = FakeBoard::new(dir, "tp-s2n");
    let s2n_dir = dir.join("s2n-tp");
    std::fs::create_dir_all(&s2n_dir).unwrap();
    let mut port = Ser2netPort::telnet("tp", &board.link);
    port.max_connections = 2;
    port.accepter = Accepter::Telnet;
    let ser2net = Ser2net::start(&s2n_dir, vec![port]).unwrap();
    let p = ser2net.port("tp");
    let a = tokio::spawn(read_telnet(p, total));
    let b = tokio::spawn(read_telnet(p, total));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let master = board.pty.clone();
    let t = Instant::now();
    let blaster = tokio::task::spawn_blocking(move || blast(&master.master, total));
    let (ga, gb) = (a.await.unwrap(), b.await.unwrap());
    let elapsed = t.elapsed();
    let _ = blaster.await;
    let s2n_rate = mb / elapsed.as_secs_f64();
    println!(
        "  ser2net: 2 telnet clients             {s2n_rate:>8.1} MB/s   (clients got {:.1}/{:.1} MB)",
        ga as f64 / 1e6,
        gb as f64 / 1e6
    );
    println!(
        "  ratios: labd/raw pty {:.2}x, labd/ser2net {:.2}x; goal (>= 50 MB/s): {}",
        labd_rate / raw,
        labd_rate / s2n_rate,
        if labd_rate >= 50.0 { "met" } else { "NOT met" }
    );
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap_or(100) as f64;
    ticks / hz
}

/// Feeds every board at 115200 baud (11520 bytes/s) in 5 ms slices, like a busy boot log.
fn pace(boards: Vec<Arc<Pty>>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let line: Vec<u8> = (0..58u32).map(|i| b'a' + (i % 26) as u8).collect();
        let start = Instant::now();
        let mut tick = 0u64;
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            for b in &boards {
                sent += pty::write_all_nb(b.master.as_fd(), &line, Duration::from_millis(1))
                    .unwrap_or(0) as u64;
            }
            tick += 1;
            let next = start + Duration::from_millis(5 * tick);
            if let Some(d) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
        sent
    })
}

async fn telnet_sink(port: u16, stop: Arc<AtomicBool>) {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return;
    };
    let mut buf = vec![0u8; 16384];
    while !stop.load(Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            _ => {}
        }
    }
}

async fn measure_cpu(pid: u32, boards: &[FakeBoard], window: Duration) -> (f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = pace(boards.iter().map(|b| b.pty.clone()).collect(), stop.clone());
    tokio::time::sleep(Duration::from_secs(1)).await; // settle
    let (c0, t0) = (cpu_seconds(pid), Instant::now());
    tokio::time::sleep(window).await;
    let (c1, t1) = (cpu_seconds(pid), Instant::now());
    stop.store(true, Ordering::Relaxed);
    let sent = feeder.join().unwrap();
    let wall = (t1 - t0).as_secs_f64();
    let rate = sent as f64 / (window.as_secs_f64() + 1.0) / boards.len() as f64;
    ((c1 - c0) / wall * 100.0, rate)
}

async fn cpu64(dir: &Path) {
    let n = 64;
    let window = if quick() {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(10)
    };
    println!(
        "\n== CPU: {n} consoles streaming at 115200 baud ({}s window) ==",
        window.as_secs()
    );
    let boards: Vec<FakeBoard> = (0..n)
        .map(|i| FakeBoard::new(dir, &format!("c{i:02}")))
        .collect();
    // Distinct ports: the kernel may hand out a just-freed port again.
    let mut ports: Vec<u16> = Vec::new();
    while ports.len() < n {
        let p = free_tcp_port();
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    let devices: Vec<(String, PathBuf, Option<u16>)> = boards
        .iter()
        .enumerate()
        .map(|(i, b)| (format!("c{i:02}"), b.link.clone(), Some(ports[i])))
        .collect();
    let agent = start_agent(&dir.join("cpu"), &devices).await;
    let pid = agent.child.id();
    let (labd_alone, rate) = measure_cpu(pid, &boards, window).await;
    println!(
        "  labd, journal only                    {labd_alone:>6.2} % of one core   ({rate:.0} bytes/s per console)"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let sinks: Vec<_> = ports
        .iter()
        .map(|&p| tokio::spawn(telnet_sink(p, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (labd_clients, _) = measure_cpu(pid, &boards, window).await;
    println!("  labd, journal + 1 telnet client each  {labd_clients:>6.2} % of one core");
    stop.store(true, Ordering::Relaxed);
    for s in sinks {
        let _ = s.await;
    }
    drop(agent);

    let s2n_dir = dir.join("s2n-cpu");
    std::fs::create_dir_all(&s2n_dir).unwrap();
    let s2n_ports: Vec<Ser2netPort> = boards
        .iter()
        .enumerate()
        .map(|(i, b)| Ser2netPort::telnet(&format!("c{i:02}"), &b.link))
        .collect();
    let ser2net = Ser2net::start(&s2n_dir, s2n_ports).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sinks: Vec<_> = ser2net
        .ports()
        .iter()
        .map(|p| tokio::spawn(telnet_sink(p.port, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s2n, _) = measure_cpu(ser2net.pid(), &boards, window).await;
    println!("  ser2net, 1 telnet client each         {s2n:>6.2} % of one core");
    stop.store(true, Ordering::Relaxed);
    for s in sinks {
        let _ = s.await;
    }
    println!(
        "  ratios: labd (journal + clients)/ser2net {:.2}x; goal (< 5% of one core): {}",
        labd_clients / s2n.max(0.01),
        if labd_alone < 5.0 && labd_clients < 5.0 {
            "met"
        } else {
            "NOT met"
        }
    );
}

fn main() {
    labd_hw_fixtures::require_program("ser2net").expect("ser2net");
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // LABD_BENCH_ONLY=latency|throughput|cpu runs one part.
    let only = std::env::var("LABD_BENCH_ONLY").unwrap_or_default();
    let run = |part: &str| only.is_empty() || only == part;
    rt.block_on(async {
        if run("latency") {
            latency(dir.path()).await;
        }
        if run("throughput") {
            throughput(dir.path()).await;
        }
        if run("cpu") {
            cpu64(dir.path()).await;
        }
    });
}
