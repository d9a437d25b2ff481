//! Per-device console metrics in the process-wide registry.

use crate::ids::DeviceName;
use crate::metrics::{Counter, Gauge, global};

const ONLINE: &str = "labd_console_online";
const BYTES_IN: &str = "labd_console_bytes_in_total";
const BYTES_OUT: &str = "labd_console_bytes_out_total";
const RECONNECTS: &str = "labd_console_reconnects_total";
const CLIENTS: &str = "labd_console_clients";
const DROPPED: &str = "labd_console_client_dropped_bytes_total";
const JOURNAL: &str = "labd_console_journal_bytes_total";

/// Handles to one device's series; counting is a relaxed atomic add.
#[derive(Debug, Clone)]
pub struct ConsoleMetrics {
    pub online: Gauge,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub reconnects: Counter,
    pub clients: Gauge,
    pub dropped: Counter,
    pub journal_bytes: Counter,
}

impl ConsoleMetrics {
    pub fn new(device: &DeviceName) -> Self {
        let r = global();
        let l = [("device", device.as_str())];
        Self {
            online: r.gauge(
                ONLINE,
                "1 while the console's link to the board is open.",
                &l,
            ),
            bytes_in: r.counter(BYTES_IN, "Bytes received from the board.", &l),
            bytes_out: r.counter(BYTES_OUT, "Bytes of input sent to the board.", &l),
            reconnects: r.counter(
                RECONNECTS,
                "Times the console came back after losing its link (replug, ser2net restart).",
                &l,
            ),
            clients: r.gauge(
                CLIENTS,
                "Subscribers attached (operators, telnet clients, jobs).",
                &l,
            ),
            dropped: r.counter(
                DROPPED,
                "Bytes not delivered to slow clients (their queue was full).",
                &l,
            ),
            journal_bytes: r.counter(JOURNAL, "Bytes written to the console journal.", &l),
        }
    }

    /// Forgets the device's series (it was removed from the inventory).
    pub fn remove(device: &DeviceName) {
        let l = [("device", device.as_str())];
        for name in [
            ONLINE, BYTES_IN, BYTES_OUT, RECONNECTS, CLIENTS, DROPPED, JOURNAL,
        ] {
            global().remove(name, &l);
        }
    }
}
