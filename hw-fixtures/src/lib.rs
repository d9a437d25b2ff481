//! Simulated lab hardware and harnesses for the real programs labd talks to.
//!
//! - `simboard`: a board on a pseudo-terminal (U-Boot-like banner, kernel log, login, a real
//!   `/bin/sh`), with power and "USB cable" under test control.
//! - `simpdu`: PDU simulators wired to simulated boards, with fault injection.
//! - `peers`: start/stop wrappers for real programs (ser2net, lava-coordinator, pdudaemon,
//!   snmpsim, a proxy, qemu, lava-server) bound to loopback, synchronised on readiness.
//! - `udev/` (data): recorded `udevadm info --query=property` dumps of real adapters.

pub mod lava_master;
pub mod peers;
pub mod qemu_dut;
pub mod simboard;
pub mod simpdu;
pub mod simudev;
pub mod util;

pub use util::{
    ChildGuard, free_tcp_port, free_udp_port, require_program, require_venv_program, venv_dir,
    wait_for_path, wait_for_tcp,
};
