//! labd and the real pdudaemon 1.1.1, both ways:
//! - labd's `pdudaemon` driver drives a real pdudaemon (HTTP listener, `localcmdline` PDU);
//! - labd's pdudaemon-compatible listener answers exactly as the real pdudaemon does (the same
//!   requests sent to both, status, content type and body compared), and the real `pduclient`
//!   (HTTP and legacy TCP modes) drives labd's queue.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use labd::ids::DeviceName;
use labd::inventory::Inventory;
use labd::metrics::Registry;
use labd::power::{PowerOp, PowerService};
use labd_hw_fixtures::peers::pdudaemon::{Pdudaemon, localcmdline_pdu, pduclient, read_actions};
use labd_hw_fixtures::require_program;
use tokio_util::sync::CancellationToken;

fn registry() -> &'static Registry {
    Box::leak(Box::new(Registry::default()))
}

fn dev(s: &str) -> DeviceName {
    DeviceName::new(s).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labd_drives_a_real_pdudaemon() {
    let dir = tempfile::tempdir().unwrap();
    let actions = dir.path().join("actions.log");
    let pdud = Pdudaemon::start(
        "http",
        serde_json::json!({"fakepdu": localcmdline_pdu("fakepdu", &actions, 1)}),
        serde_json::json!({}),
    )
    .unwrap();
    let text = format!(
        "[worker]\nname = \"w\"\nstate_dir = \"/tmp/x\"\n\
         [[pdu]]\nname = \"pd\"\ndriver = \"pdudaemon\"\nurl = \"{url}\"\nhostname = \"fakepdu\"\ntimeout = \"20s\"\n\
         [[pdu]]\nname = \"pdnative\"\ndriver = \"pdudaemon\"\nurl = \"{url}\"\nhostname = \"fakepdu\"\nnative_reboot = true\ntimeout = \"20s\"\n\
         [[pdu]]\nname = \"nope\"\ndriver = \"pdudaemon\"\nurl = \"{url}\"\nretries = 0\n\
         [[device]]\nname = \"bbb01\"\ndevice_type = \"t\"\n[device.power]\npdu = \"pd\"\noutlet = \"08\"\nreboot_delay = \"1s\"\n\
         [[device]]\nname = \"bbb02\"\ndevice_type = \"t\"\n[device.power]\npdu = \"pdnative\"\noutlet = 2\nreboot_delay = \"1s\"\n\
         [[device]]\nname = \"bbb03\"\ndevice_type = \"t\"\n[device.power]\npdu = \"nope\"\noutlet = 3\n",
        url = pdud.url()
    );
    let inv = Inventory::parse(Path::new("inv.toml"), &text).unwrap();
    let svc = PowerService::builder(&inv)
        .registry(registry())
        .build()
        .unwrap();

    let out = svc.power(&dev("bbb01"), PowerOp::Off).await.unwrap();
    assert_eq!(
        out.log[0], "PDU pd outlet 08 (device bbb01): off (attempt 1 of 4)",
        "{:#?}",
        out.log
    );
    assert_eq!(
        out.log[1],
        format!(
            "  GET {}/power/control/off?hostname=fakepdu&port=08 -> 200 OK - accepted request",
            pdud.url()
        )
    );
    assert!(!out.verified, "pdudaemon 1.1.1 cannot report state");
    svc.power(&dev("bbb01"), PowerOp::On).await.unwrap();
    // labd's own reboot: off, its delay, on.
    let t = Instant::now();
    svc.power(&dev("bbb01"), PowerOp::Reboot).await.unwrap();
    assert!(t.elapsed() >= Duration::from_secs(1));
    // Native: pdudaemon's reboot with delay=1.
    let t = Instant::now();
    let out = svc.power(&dev("bbb02"), PowerOp::Reboot).await.unwrap();
    assert!(t.elapsed() >= Duration::from_secs(1));
    assert!(
        out.log[1].contains("/power/control/reboot?hostname=fakepdu&port=2&delay=1 -> 200"),
        "{:#?}",
        out.log
    );
    assert_eq!(
        read_actions(&actions),
        [
            "fakepdu off port=08",
            "fakepdu on port=08",
            "fakepdu off port=08",
            "fakepdu on port=08",
            "fakepdu off port=2",
            "fakepdu on port=2"
        ]
    );
    // A PDU pdudaemon does not know: its 500 is reported with the PDU, outlet and attempt.
    let e = svc.power(&dev("bbb03"), PowerOp::On).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "PDU nope outlet 3 (device bbb03): on failed on attempt 1 of 1: {}/power/control/on?hostname=nope&port=3 answered 500 Internal Server Error: \"Invalid request\"",
            pdud.url()
        )
    );
}

/// Sends one raw HTTP/1.1 request; returns status line, content type, allow header and body.
fn http(port: u16, method: &str, target: &str) -> (String, String, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap_or("").to_string();
    let mut ctype = String::new();
    let mut allow = String::new();
    for l in lines {
        let (k, v) = l.split_once(':').unwrap_or((l, ""));
        match k.to_ascii_lowercase().as_str() {
            "content-type" => ctype = v.trim().to_string(),
            "allow" => allow = v.trim().to_string(),
            _ => {}
        }
    }
    (status, ctype, allow, body.to_string())
}

struct LabdListener {
    port: u16,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    actions: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for LabdListener {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// labd with a `command` PDU named like the pdudaemon one and writing the same lines, device
/// `dut1` on its outlet 1 (pdudaemon's alias `dut1`). `outlets = 8`: the listener accepts only
/// outlets the inventory configures (pdudaemon's `localcmdline` takes any port).
async fn labd_listener() -> LabdListener {
    let dir = tempfile::tempdir().unwrap();
    let actions = dir.path().join("actions.log");
    let a = actions.display();
    let text = format!(
        "[worker]\nname = \"w\"\nstate_dir = \"/tmp/x\"\n[power]\nreboot_delay = \"100ms\"\n\
         [[pdu]]\nname = \"fakepdu\"\ndriver = \"command\"\nretries = 0\noutlets = 8\npdudaemon_hostnames = [\"192.0.2.7\"]\n\
         on_command = \"sh -c 'echo \\\"fakepdu on port={{outlet}}\\\" >> {a}'\"\n\
         off_command = \"sh -c 'echo \\\"fakepdu off port={{outlet}}\\\" >> {a}'\"\n\
         [[device]]\nname = \"dut1\"\ndevice_type = \"t\"\n[device.power]\npdu = \"fakepdu\"\noutlet = 1\n"
    );
    let inv = Inventory::parse(Path::new("inv.toml"), &text).unwrap();
    let svc = PowerService::builder(&inv)
        .registry(registry())
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    let task = tokio::spawn(labd::power::listener::serve(listener, svc, stop.clone()));
    LabdListener {
        port,
        stop,
        task: Some(task),
        actions,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_answers_byte_for_byte_like_pdudaemon() {
    let dir = tempfile::tempdir().unwrap();
    let actions = dir.path().join("actions.log");
    let pdud = Pdudaemon::start(
        "http",
        serde_json::json!({"fakepdu": localcmdline_pdu("fakepdu", &actions, 1)}),
        serde_json::json!({"dut1": {"hostname": "fakepdu", "port": 1}}),
    )
    .unwrap();
    let labd = labd_listener().await;
    let requests = [
        ("GET", "/power/control/on?hostname=fakepdu&port=08"),
        ("GET", "/power/control/off?alias=dut1"),
        (
            "GET",
            "/power/control/reboot?hostname=fakepdu&port=3&delay=0",
        ),
        ("GET", "/power/control/on?hostname=fakepdu&port=2&delay=0"),
        ("GET", "/power/control/on?hostname=nope&port=1"),
        ("GET", "/power/control/on?hostname=fakepdu"),
        ("GET", "/power/control/on?hostname=fakepdu&port="),
        ("GET", "/power/control/on?alias=dut1&port=2"),
        ("GET", "/power/control/on?alias=zzz"),
        ("GET", "/power/control/foo?hostname=fakepdu&port=1"),
        ("GET", "/power/control/on/?hostname=fakepdu&port=1"),
        ("GET", "/POWER/control/on?hostname=fakepdu&port=1"),
        ("GET", "/power/control/"),
        ("GET", "/"),
        ("POST", "/power/control/on?hostname=fakepdu&port=1"),
        ("PUT", "/power/control/reboot"),
        ("HEAD", "/power/control/on?hostname=fakepdu&port=4"),
    ];
    let (pp, lp) = (pdud.port, labd.port);
    for (method, target) in requests {
        let (real, ours) = tokio::task::spawn_blocking(move || {
            (http(pp, method, target), http(lp, method, target))
        })
        .await
        .unwrap();
        assert_eq!(ours, real, "{method} {target}");
    }
    assert_eq!(read_actions(&labd.actions), read_actions(&actions));
    assert_eq!(
        read_actions(&actions),
        [
            "fakepdu on port=08",
            "fakepdu off port=1",
            "fakepdu off port=3",
            "fakepdu on port=3",
            "fakepdu on port=2",
            "fakepdu on port=4"
        ]
    );
    // Where pdudaemon crashes (a delay that is not a number) labd refuses cleanly, acting not.
    let (status, _, _, body) = tokio::task::spawn_blocking(move || {
        http(
            lp,
            "GET",
            "/power/control/on?hostname=fakepdu&port=1&delay=x",
        )
    })
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 500 Internal Server Error", "Invalid request\n")
    );
    // pdudaemon_hostnames: the address an old device dictionary uses reaches the same PDU.
    let (status, ..) = tokio::task::spawn_blocking(move || {
        http(lp, "GET", "/power/control/off?hostname=192.0.2.7&port=5")
    })
    .await
    .unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(
        read_actions(&labd.actions).last().unwrap(),
        "fakepdu off port=5"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_does_not_hold_up_the_listener_stop() {
    let mut labd = labd_listener().await;
    let lp = labd.port;
    // A reboot with a 6 s off time: pdudaemon's clients wait for the answer all that time.
    let client = tokio::task::spawn_blocking(move || {
        http(lp, "GET", "/power/control/reboot?alias=dut1&delay=6")
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while read_actions(&labd.actions) != ["fakepdu off port=1"] {
        assert!(Instant::now() < deadline, "the reboot did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let begin = Instant::now();
    labd.stop.cancel();
    let task = labd.task.take().unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the listener stops without waiting for the request")
        .unwrap()
        .unwrap();
    let took = begin.elapsed();
    assert!(took < Duration::from_secs(3), "{took:?}");
    let (status, _, _, body) = client.await.unwrap();
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable", "{body}");
    assert_eq!(
        body,
        "Service Unavailable: labd's listener stopped; the request goes on\n"
    );
    // The reboot itself completes.
    let deadline = Instant::now() + Duration::from_secs(15);
    while read_actions(&labd.actions) != ["fakepdu off port=1", "fakepdu on port=1"] {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            read_actions(&labd.actions)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the real `pduclient` in a private network namespace whose 127.0.0.1:16421 (the port
/// pduclient always uses) is bridged through a Unix socket to `target_port` on the host.
fn run_pduclient(target_port: u16, args: &[&str]) -> (i32, String) {
    let socat = require_program("socat").unwrap();
    let client = pduclient().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("bridge.sock");
    let mut outside = Command::new(&socat)
        .arg(format!("UNIX-LISTEN:{},fork", sock.display()))
        .arg(format!("TCP:127.0.0.1:{target_port}"))
        .spawn()
        .unwrap();
    labd_hw_fixtures::wait_for_path(&sock, Duration::from_secs(5)).unwrap();
    let script = format!(
        "ip link set lo up && {socat} TCP-LISTEN:16421,bind=127.0.0.1,reuseaddr,fork UNIX-CONNECT:{sock} >/dev/null 2>&1 & bridge=$!; \
         for i in $(seq 100); do {socat} -u OPEN:/dev/null TCP:127.0.0.1:16421 2>/dev/null && break; sleep 0.05; done; \
         {client} \"$@\"; rc=$?; kill $bridge; exit $rc",
        socat = socat.display(),
        sock = sock.display(),
        client = client.display()
    );
    let out = Command::new("unshare")
        .args(["-n", "sh", "-c", &script, "sh"])
        .args(args)
        .output()
        .unwrap();
    let _ = outside.kill();
    let _ = outside.wait();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_pduclient_drives_labd_over_http_and_tcp() {
    let labd = labd_listener().await;
    let port = labd.port;
    let cases: [(&[&str], i32, &str); 6] = [
        (
            &[
                "--daemon",
                "localhost",
                "--hostname",
                "fakepdu",
                "--port",
                "07",
                "--command",
                "off",
                "-H",
            ],
            0,
            "Command sent successfully.\n",
        ),
        (
            &[
                "--daemon",
                "localhost",
                "--hostname",
                "fakepdu",
                "--port",
                "07",
                "--command",
                "reboot",
                "--delay",
                "1",
                "-H",
            ],
            0,
            "Command sent successfully.\n",
        ),
        (
            &[
                "--daemon",
                "localhost",
                "--hostname",
                "nope",
                "--port",
                "1",
                "--command",
                "on",
                "-H",
            ],
            127,
            "Error sending command! localhost replied: <Response [500]>\n",
        ),
        (
            &[
                "--daemon",
                "127.0.0.1",
                "--hostname",
                "fakepdu",
                "--port",
                "06",
                "--command",
                "on",
            ],
            0,
            "Command sent successfully.\n",
        ),
        (
            &[
                "--daemon",
                "127.0.0.1",
                "--hostname",
                "fakepdu",
                "--port",
                "6",
                "--command",
                "reboot",
                "--delay",
                "1",
            ],
            0,
            "Command sent successfully.\n",
        ),
        (
            &[
                "--daemon",
                "127.0.0.1",
                "--hostname",
                "nope",
                "--port",
                "6",
                "--command",
                "on",
            ],
            127,
            "Error sending command! 127.0.0.1 replied: nack\n",
        ),
    ];
    for (args, code, stdout) in cases {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (got_code, got_out) = tokio::task::spawn_blocking(move || {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            run_pduclient(port, &a)
        })
        .await
        .unwrap();
        assert_eq!((got_code, got_out.as_str()), (code, stdout));
    }
    // HTTP passes the port as written; the legacy TCP protocol turns it into a number first.
    assert_eq!(
        read_actions(&labd.actions),
        [
            "fakepdu off port=07",
            "fakepdu off port=07",
            "fakepdu on port=07",
            "fakepdu on port=6",
            "fakepdu off port=6",
            "fakepdu on port=6"
        ]
    );
    // A malformed legacy message gets pdudaemon's reply.
    let reply = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"fakepdu on").unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        r
    })
    .await
    .unwrap();
    assert_eq!(reply, "Unexpected data");
}
