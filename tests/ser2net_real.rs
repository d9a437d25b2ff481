//! `labd ser2net-config` output run by the real ser2net 4.3.11, in both dialects, with socat
//! pseudo-terminal pairs standing in for the boards' UARTs. Checks the exact bytes on the wire:
//! telnet negotiation, IAC doubling of 0xFF, RFC 2217 baud setting (and that it reached the
//! tty), max-connections refusal, and raw passthrough.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use labd_hw_fixtures::{ChildGuard, free_tcp_port, require_program, wait_for_path, wait_for_tcp};

/// One socat pty pair: the test plays the board on `dut`, ser2net opens `uart`.
struct PtyPair {
    _socat: ChildGuard,
    dut: std::fs::File,
    uart: PathBuf,
}

fn pty_pair(dir: &Path, n: usize) -> PtyPair {
    let socat = require_program("socat").unwrap();
    let dut = dir.join(format!("dut{n}"));
    let uart = dir.join(format!("uart{n}"));
    let child = Command::new(socat)
        .arg("-d")
        .arg(format!("pty,raw,echo=0,link={}", dut.display()))
        .arg(format!("pty,raw,echo=0,link={}", uart.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = ChildGuard::new("socat", child);
    wait_for_path(&dut, Duration::from_secs(5)).unwrap();
    wait_for_path(&uart, Duration::from_secs(5)).unwrap();
    let dut = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&dut)
        .unwrap();
    PtyPair {
        _socat: guard,
        dut,
        uart,
    }
}

/// Reads exactly `n` bytes, or fails after `timeout`.
fn read_exact_within(r: &mut impl Read, n: usize, timeout: Duration, what: &str) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "{what}: got {:02x?}, wanted {n} bytes",
            out
        );
        match r.read(&mut buf[..(n - out.len()).min(256)]) {
            Ok(0) => panic!("{what}: EOF after {:02x?}", out),
            Ok(k) => out.extend_from_slice(&buf[..k]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("{what}: {e}"),
        }
    }
    out
}

/// Reads from the pty for `n` bytes with a poll-based timeout.
fn dut_read(dut: &mut std::fs::File, n: usize, what: &str) -> Vec<u8> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    while out.len() < n {
        assert!(Instant::now() < deadline, "{what}: got {:02x?}", out);
        let mut fds = [PollFd::new(dut.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(100u16)).unwrap() == 0 {
            continue;
        }
        let k = dut.read(&mut buf[..(n - out.len()).min(256)]).unwrap();
        out.extend_from_slice(&buf[..k]);
    }
    out
}

/// Nothing more arrives within `quiet`.
fn assert_silent(s: &mut TcpStream, quiet: Duration, what: &str) {
    s.set_read_timeout(Some(quiet)).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => panic!("{what}: connection closed"),
        Ok(k) => panic!("{what}: unexpected bytes {:02x?}", &buf[..k]),
        Err(_) => {}
    }
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s
}

const TELNET_OFFER: [u8; 18] = [
    0xff, 0xfb, 0x03, 0xff, 0xfd, 0x03, 0xff, 0xfb, 0x01, 0xff, 0xfe, 0x01, 0xff, 0xfd, 0x00, 0xff,
    0xfb, 0x00,
];

fn baud_of(path: &Path) -> u32 {
    use nix::sys::termios::{BaudRate, cfgetospeed, tcgetattr};
    let f = std::fs::File::open(path).unwrap();
    let t = tcgetattr(f.as_fd()).unwrap();
    match cfgetospeed(&t) {
        BaudRate::B9600 => 9600,
        BaudRate::B115200 => 115200,
        other => panic!("unexpected speed {other:?}"),
    }
}

fn run_ser2net_checks(legacy: bool) {
    let ser2net = require_program("ser2net").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut raw = pty_pair(dir, 0);
    let mut tel = pty_pair(dir, 1);
    let mut rfc = pty_pair(dir, 2);
    // A by-path style name with ':' (needs a DEVICE: alias in the 3.x format).
    let colon_link = dir.join("pci-0000:00:14.0-usb-0:1.2:1.0-port0");
    std::os::unix::fs::symlink(&rfc.uart, &colon_link).unwrap();
    let (p_raw, p_tel, p_rfc) = (free_tcp_port(), free_tcp_port(), free_tcp_port());
    let inventory = format!(
        r#"[worker]
name = "w1"
state_dir = "/var/lib/labd"

[[device]]
name = "raw0"
device_type = "x"
[device.ser2net]
port = {p_raw}
address = "127.0.0.1"
protocol = "raw"
tty = "{raw_tty}"
max_connections = 1
kickolduser = false

[[device]]
name = "tel1"
device_type = "x"
[device.console]
ser2net = "localhost:{p_tel}"
[device.ser2net]
port = {p_tel}
address = "127.0.0.1"
tty = "{tel_tty}"

[[device]]
name = "rfc2"
device_type = "x"
[device.console]
ser2net = "localhost:{p_rfc}"
rfc2217 = true
[device.ser2net]
port = {p_rfc}
address = "127.0.0.1"
protocol = "rfc2217"
tty = "{rfc_tty}"
"#,
        raw_tty = raw.uart.display(),
        tel_tty = tel.uart.display(),
        rfc_tty = colon_link.display(),
    );
    let inv_path = dir.join("inventory.toml");
    std::fs::write(&inv_path, inventory).unwrap();
    // The legacy file must not be named *.yaml, or ser2net reads it as YAML.
    let conf = dir.join(if legacy {
        "ser2net.conf"
    } else {
        "ser2net.yaml"
    });
    let out = Command::new(env!("CARGO_BIN_EXE_labd"))
        .args(["ser2net-config", "-c"])
        .arg(&inv_path)
        .args(["--format", if legacy { "legacy" } else { "yaml" }, "-o"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&conf).unwrap();
    if legacy {
        assert!(
            text.contains(&format!("DEVICE:rfc2:{}", colon_link.display())),
            "{text}"
        );
    } else {
        assert!(text.starts_with("%YAML 1.1\n---\n"), "{text}");
    }
    let child = Command::new(ser2net)
        .args(["-n", "-u", "-c"])
        .arg(&conf)
        .arg("-P")
        .arg(dir.join("ser2net.pid"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("ser2net.stderr")).unwrap())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard::new("ser2net", child);
    for p in [p_raw, p_tel, p_rfc] {
        if wait_for_tcp(([127, 0, 0, 1], p).into(), Duration::from_secs(5)).is_err() {
            guard.stop(Duration::from_secs(1));
            panic!("ser2net did not listen on {p} with:\n{text}");
        }
    }

    // Raw: nothing on connect, every byte unchanged both ways.
    let mut c = connect(p_raw);
    assert_silent(&mut c, Duration::from_millis(300), "raw connect");
    let payload = [0x00, 0x0d, 0x0a, 0xff, 0xfe, 0x41, 0xff, 0xff];
    raw.dut.write_all(&payload).unwrap();
    assert_eq!(
        read_exact_within(&mut c, 8, Duration::from_secs(5), "raw dev->net"),
        payload
    );
    c.write_all(&payload).unwrap();
    assert_eq!(dut_read(&mut raw.dut, 8, "raw net->dev"), payload);
    // max_connections = 1, kickolduser = false: a second client is refused.
    let mut c2 = connect(p_raw);
    let refusal = b"Port already in use\r\n";
    assert_eq!(
        read_exact_within(
            &mut c2,
            refusal.len(),
            Duration::from_secs(5),
            "second raw client"
        ),
        refusal
    );
    drop(c2);
    drop(c);

    // Telnet: the 18-byte offer, IAC doubling.
    let mut t = connect(p_tel);
    assert_eq!(
        read_exact_within(&mut t, 18, Duration::from_secs(5), "telnet offer"),
        TELNET_OFFER
    );
    assert_silent(&mut t, Duration::from_millis(200), "after telnet offer");
    tel.dut.write_all(&[0x41, 0xff, 0x42]).unwrap();
    assert_eq!(
        read_exact_within(&mut t, 4, Duration::from_secs(5), "telnet dev->net"),
        [0x41, 0xff, 0xff, 0x42]
    );
    t.write_all(&[0x43, 0xff, 0xff, 0x0d, 0x00, 0x44]).unwrap();
    assert_eq!(
        dut_read(&mut tel.dut, 5, "telnet net->dev"),
        [0x43, 0xff, 0x0d, 0x00, 0x44]
    );
    // max-connections 2 with kickolduser: a second client is accepted alongside the first.
    let mut t2 = connect(p_tel);
    assert_eq!(
        read_exact_within(&mut t2, 18, Duration::from_secs(5), "second telnet client"),
        TELNET_OFFER
    );
    tel.dut.write_all(b"Z").unwrap();
    assert_eq!(
        read_exact_within(&mut t, 1, Duration::from_secs(5), "fan-out 1"),
        b"Z"
    );
    assert_eq!(
        read_exact_within(&mut t2, 1, Duration::from_secs(5), "fan-out 2"),
        b"Z"
    );
    drop(t2);
    drop(t);

    // RFC 2217: offer + DO COM-PORT-OPTION, then SET-BAUDRATE 9600 is applied to the tty.
    let mut r = connect(p_rfc);
    let mut expected = TELNET_OFFER.to_vec();
    expected.extend_from_slice(&[0xff, 0xfd, 0x2c]);
    assert_eq!(
        read_exact_within(&mut r, 21, Duration::from_secs(5), "rfc2217 offer"),
        expected
    );
    assert_eq!(
        baud_of(&rfc.uart),
        115200,
        "connector speed before RFC 2217"
    );
    r.write_all(&[0xff, 0xfb, 0x2c]).unwrap();
    r.write_all(&[0xff, 0xfa, 0x2c, 0x01, 0x00, 0x00, 0x25, 0x80, 0xff, 0xf0])
        .unwrap();
    let reply = [
        0xff, 0xfa, 0x2c, 0x6b, 0x00, 0xff, 0xf0, 0xff, 0xfa, 0x2c, 0x65, 0x00, 0x00, 0x25, 0x80,
        0xff, 0xf0,
    ];
    assert_eq!(
        read_exact_within(&mut r, reply.len(), Duration::from_secs(5), "rfc2217 reply"),
        reply
    );
    assert_eq!(
        baud_of(&rfc.uart),
        9600,
        "RFC 2217 SET-BAUDRATE reached the tty"
    );
    rfc.dut.write_all(&[0xff]).unwrap();
    assert_eq!(
        read_exact_within(&mut r, 2, Duration::from_secs(5), "rfc2217 dev->net"),
        [0xff, 0xff]
    );
    drop(r);
    assert!(guard.is_running(), "ser2net exited");
    guard.stop(Duration::from_secs(3));
    // Proof of which reader ser2net used: it warns only for the 3.x format.
    let stderr = std::fs::read_to_string(dir.join("ser2net.stderr")).unwrap();
    assert_eq!(
        stderr.contains("Using old config file format"),
        legacy,
        "ser2net stderr: {stderr}"
    );
}

#[test]
fn yaml_config_runs_on_real_ser2net() {
    run_ser2net_checks(false);
}

#[test]
fn legacy_config_runs_on_real_ser2net() {
    run_ser2net_checks(true);
}
