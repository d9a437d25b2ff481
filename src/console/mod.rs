//! Serial consoles: the `ConsoleSource` trait and its tty and ser2net-telnet sources, the
//! per-device hub that fans one board's byte stream out to the journal, the job runner, attached
//! operators and telnet listener clients, and reconnection after USB replug or ser2net restarts.
//!
//! Invariant: only a console's hub writes to its board; everything else sends input through it.

pub mod config;
