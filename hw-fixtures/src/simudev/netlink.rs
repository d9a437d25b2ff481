//! A stand-in for systemd-udevd's event broadcast: sends device properties to the `udev`
//! netlink multicast group in the wire format libudev monitors receive (the
//! `monitor_netlink_header` of systemd's sd-device-monitor: "libudev" prefix, magic 0xfeedcafe,
//! subsystem hash for the in-kernel BPF filter, then `KEY=value\0` properties).
//!
//! Use it inside a private network namespace (`unshare -n`, see
//! [`super::UdevSandbox::net_namespace`]): netlink multicast stays within the namespace, so
//! no other listener on the machine sees the simulated events. Needs CAP_NET_ADMIN.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// libudev's monitor group for processed events (the kernel's own uevents are group 1).
pub const UDEV_GROUP: u32 = 2;
const UDEV_MONITOR_MAGIC: u32 = 0xfeed_cafe;
const HEADER_SIZE: usize = 40;

/// MurmurHash2 (32-bit), the `string_hash32` udev uses for the subsystem filter hash.
pub fn murmur_hash2(data: &[u8], seed: u32) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h = seed ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The datagram udevd sends for a device with `props`.
pub fn encode(props: &[(String, String)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in props {
        body.extend_from_slice(k.as_bytes());
        body.push(b'=');
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    let get = |key: &str| {
        props
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let subsystem_hash = get("SUBSYSTEM").map_or(0, |s| murmur_hash2(s.as_bytes(), 0));
    let devtype_hash = get("DEVTYPE").map_or(0, |s| murmur_hash2(s.as_bytes(), 0));
    let mut msg = Vec::with_capacity(HEADER_SIZE + body.len());
    msg.extend_from_slice(b"libudev\0");
    msg.extend_from_slice(&UDEV_MONITOR_MAGIC.to_be_bytes());
    msg.extend_from_slice(&(HEADER_SIZE as u32).to_ne_bytes());
    msg.extend_from_slice(&(HEADER_SIZE as u32).to_ne_bytes());
    msg.extend_from_slice(&(body.len() as u32).to_ne_bytes());
    msg.extend_from_slice(&subsystem_hash.to_be_bytes());
    msg.extend_from_slice(&devtype_hash.to_be_bytes());
    msg.extend_from_slice(&0u32.to_be_bytes()); // tag bloom hi: no tag filters in use
    msg.extend_from_slice(&0u32.to_be_bytes()); // tag bloom lo
    msg.extend_from_slice(&body);
    msg
}

/// A netlink socket that broadcasts to the udev group.
#[derive(Debug)]
pub struct UdevBroadcaster {
    fd: OwnedFd,
}

impl UdevBroadcaster {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain socket(2); the result is checked and owned immediately.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_KOBJECT_UEVENT,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new, valid descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: zeroed sockaddr_nl is a valid "any pid, no groups" address.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: addr is a properly sized sockaddr_nl.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd })
    }

    /// Broadcasts one processed event (`props` must include ACTION, DEVPATH, SUBSYSTEM, SEQNUM).
    pub fn send(&self, props: &[(String, String)]) -> io::Result<()> {
        let msg = encode(props);
        // SAFETY: zeroed sockaddr_nl, then fields set; a valid multicast destination.
        let mut dst: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        dst.nl_family = libc::AF_NETLINK as u16;
        dst.nl_groups = UDEV_GROUP;
        // SAFETY: msg and dst outlive the call; lengths are theirs.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&dst as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
