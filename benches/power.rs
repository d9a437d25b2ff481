//! Power request throughput and latency: labd's pdudaemon-compatible listener versus the real
//! pdudaemon 1.1.1, same API, same trivial action (`true`), same client, in the same run.
//!
//! `cargo bench --bench power`. Prints per-request latency (median, p95) and the ratio.

use std::path::Path;
use std::time::{Duration, Instant};

use labd::inventory::Inventory;
use labd::metrics::Registry;
use labd::power::PowerService;
use labd_hw_fixtures::peers::pdudaemon::Pdudaemon;
use tokio_util::sync::CancellationToken;

const REQUESTS: usize = 200;

async fn measure(client: &reqwest::Client, base: &str) -> Vec<Duration> {
    let mut lat = Vec::with_capacity(REQUESTS);
    for i in 0..REQUESTS {
        let op = if i % 2 == 0 { "on" } else { "off" };
        let url = format!(
            "{base}/power/control/{op}?hostname=fakepdu&port={}",
            i % 8 + 1
        );
        let t = Instant::now();
        let r = client.get(&url).send().await.expect("request");
        assert_eq!(r.status().as_u16(), 200, "{url}");
        let _ = r.text().await;
        lat.push(t.elapsed());
    }
    lat.sort();
    lat
}

fn pct(l: &[Duration], p: f64) -> Duration {
    l[((l.len() as f64 - 1.0) * p) as usize]
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let pdud = Pdudaemon::start(
        "http",
        serde_json::json!({"fakepdu": {"driver": "localcmdline", "cmd_on": "true # %s", "cmd_off": "true # %s", "retries": 1}}),
        serde_json::json!({}),
    )
    .expect("pdudaemon");
    let text = "[worker]\nname = \"w\"\nstate_dir = \"/tmp/x\"\n[[pdu]]\nname = \"fakepdu\"\ndriver = \"command\"\noutlets = 8\n\
                on_command = \"sh -c 'true # {outlet}'\"\noff_command = \"sh -c 'true # {outlet}'\"\nretries = 0\n";
    let inv = Inventory::parse(Path::new("bench.toml"), text).expect("inventory");
    let svc = PowerService::builder(&inv)
        .registry(Box::leak(Box::new(Registry::default())))
        .build()
        .expect("service");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let labd_url = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = CancellationToken::new();
    tokio::spawn(labd::power::listener::serve(listener, svc, stop.clone()));

    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    // Warm up both.
    let _ = measure(&client, &pdud.url()).await;
    let _ = measure(&client, &labd_url).await;
    let real = measure(&client, &pdud.url()).await;
    let ours = measure(&client, &labd_url).await;
    let (rm, r95, om, o95) = (
        pct(&real, 0.5),
        pct(&real, 0.95),
        pct(&ours, 0.5),
        pct(&ours, 0.95),
    );
    println!("power listener, {REQUESTS} sequential on/off requests, action `sh -c true`:");
    println!("  pdudaemon 1.1.1: median {rm:?}, p95 {r95:?}");
    println!("  labd           : median {om:?}, p95 {o95:?}");
    println!(
        "  ratio pdudaemon/labd: median {:.2}x, p95 {:.2}x",
        rm.as_secs_f64() / om.as_secs_f64(),
        r95.as_secs_f64() / o95.as_secs_f64()
    );
    let pid = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                c.contains("pdudaemon") && c.contains(&pdud.dir.path().display().to_string())
            })
        });
    if let Some(pid) = pid {
        println!(
            "  RSS: pdudaemon {} KiB; this whole bench process (labd listener + client + runtime) {} KiB",
            rss_kib(pid),
            rss_kib(std::process::id())
        );
    }
    stop.cancel();
}
