//! Boots the real QEMU DUT and talks to its shell over the telnet serial console.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use labd_hw_fixtures::qemu_dut::{InitVariant, QemuDut, build_images};
use labd_hw_fixtures::{free_tcp_port, wait_for_tcp};

fn read_until(s: &mut TcpStream, needle: &[u8], timeout: Duration, seen: &mut Vec<u8>) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => {
                seen.extend_from_slice(&buf[..n]);
                if seen.windows(needle.len()).any(|w| w == needle) {
                    return true;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    false
}

#[test]
fn qemu_dut_boots_to_a_shell() {
    let dir = tempfile::tempdir().unwrap();
    let images = build_images(dir.path(), InitVariant::Shell).unwrap();
    let port = free_tcp_port();
    let _dut = QemuDut::spawn_telnet(&images, port).unwrap();
    wait_for_tcp(([127, 0, 0, 1], port).into(), Duration::from_secs(20)).unwrap();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut seen = Vec::new();
    assert!(
        read_until(&mut s, b"/ # ", Duration::from_secs(120), &mut seen),
        "no prompt; console said:\n{}",
        String::from_utf8_lossy(&seen)
    );
    let text = String::from_utf8_lossy(&seen);
    assert!(text.contains("Linux version"), "{text}");
    assert!(text.contains("busybox DUT: kernel"), "{text}");
    s.write_all(b"echo hi-from-$((40+2))\r").unwrap();
    let mut seen = Vec::new();
    assert!(
        read_until(
            &mut s,
            b"hi-from-42\r\n",
            Duration::from_secs(30),
            &mut seen
        ),
        "{}",
        String::from_utf8_lossy(&seen)
    );
}
