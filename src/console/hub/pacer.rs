//! Read pacing for a streaming board (see [`Pacer`]).

use std::time::Duration;

use tokio::time::Instant;

/// Reads smaller than this may be coalesced with what follows.
const COALESCE_BELOW: usize = 1024;
/// A read this soon after the previous one means the board is streaming (a boot log).
const STREAMING_GAP: Duration = Duration::from_millis(50);
/// While streaming, wait this long after a small read so the next one takes more at once.
const COALESCE_DELAY: Duration = Duration::from_millis(50);
/// After input (someone is typing, a job is talking), never delay: echo latency matters.
const INTERACTIVE_HOLDOFF: Duration = Duration::from_millis(500);

/// Read pacing: like ser2net's `chardelay` (which holds output up to 20 ms by default), but
/// only while a board streams and nobody types. A board printing a boot log 60 bytes at a
/// time costs one read, one journal record and one fan-out per 50 ms instead of one per chunk
/// (64 consoles at 115200 baud: about half the CPU). Keystroke echo and a job's command
/// replies are never delayed; large reads (bulk output) are never delayed, so throughput is
/// unaffected. A UART's kernel buffer holds far more than 50 ms of data (4 KiB at 115200 baud
/// is 350 ms).
#[derive(Default)]
pub(super) struct Pacer {
    last_read: Option<Instant>,
    pub(super) input_at: Option<Instant>,
    pub(super) hold_until: Option<Instant>,
}

impl Pacer {
    /// Records a read; returns until when to hold the next one, if it should be held.
    pub(super) fn after_read(&mut self, n: usize) -> Option<Instant> {
        let now = Instant::now();
        let streaming = self
            .last_read
            .is_some_and(|t| now.duration_since(t) < STREAMING_GAP);
        let interactive = self
            .input_at
            .is_some_and(|t| now.duration_since(t) < INTERACTIVE_HOLDOFF);
        self.last_read = Some(now);
        if n < COALESCE_BELOW && streaming && !interactive {
            self.hold_until = Some(now + COALESCE_DELAY);
        }
        self.hold_until
    }
}
