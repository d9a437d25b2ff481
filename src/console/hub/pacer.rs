//! Read pacing for a streaming board (see [`Pacer`]).

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// Reads smaller than this may be coalesced with what follows.
const COALESCE_BELOW: usize = 1024;
/// A read this soon after the previous one (or after a hold ended) means the board is
/// streaming (a boot log).
const STREAMING_GAP: Duration = Duration::from_millis(50);
/// While streaming, hold the next read for about this long so it takes more at once. Holds end
/// on a shared grid of this period (so between half and one and a half of it): every streaming
/// console of the process resumes on the same timer tick, one wake-up for all of them instead
/// of one each.
const COALESCE_DELAY: Duration = Duration::from_millis(50);
/// After input (someone is typing, a job is talking), never delay: echo latency matters.
const INTERACTIVE_HOLDOFF: Duration = Duration::from_millis(500);

/// Read pacing: like ser2net's `chardelay` (which holds output up to 20 ms by default), but
/// only while a board streams and nobody types. A board printing a boot log 60 bytes at a
/// time costs one read, one journal record and one fan-out per 50 ms instead of one per chunk.
/// Keystroke echo and a job's command replies are never delayed; large reads (bulk output) are
/// never delayed, so throughput is unaffected. A UART's kernel buffer holds far more than a
/// hold (4 KiB at 115200 baud is 350 ms).
#[derive(Default)]
pub(super) struct Pacer {
    /// The last read, or the end of the last hold (a read right after a hold found data that
    /// waited: the board is still streaming).
    last_read: Option<Instant>,
    input_at: Option<Instant>,
    pub(super) hold_until: Option<Instant>,
}

impl Pacer {
    /// Records a read; returns until when to hold the next one, if it should be held.
    pub(super) fn after_read(&mut self, n: usize) -> Option<Instant> {
        let now = Instant::now();
        let streaming = self
            .last_read
            .is_some_and(|t| now.saturating_duration_since(t) < STREAMING_GAP);
        let interactive = self
            .input_at
            .is_some_and(|t| now.duration_since(t) < INTERACTIVE_HOLDOFF);
        self.last_read = Some(now);
        if n < COALESCE_BELOW && streaming && !interactive {
            self.hold_until = Some(grid_after(now + COALESCE_DELAY / 2));
        }
        self.hold_until
    }

    /// The hold timer fired: reads resume.
    pub(super) fn hold_ended(&mut self) {
        self.hold_until = None;
        self.last_read = Some(Instant::now());
    }

    /// Input arrived: stop holding at once.
    pub(super) fn input(&mut self) {
        self.input_at = Some(Instant::now());
        self.hold_until = None;
    }
}

/// The first point of the process-wide [`COALESCE_DELAY`] grid at or after `t`.
fn grid_after(t: Instant) -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    let since = t.saturating_duration_since(epoch).as_nanos();
    let period = COALESCE_DELAY.as_nanos();
    let ticks = since.div_ceil(period);
    let offset = u64::try_from(ticks * period).unwrap_or(u64::MAX);
    epoch + Duration::from_nanos(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_points_are_shared_and_within_a_period() {
        let now = Instant::now();
        let a = grid_after(now + Duration::from_millis(3));
        let b = grid_after(now + Duration::from_millis(7));
        assert!(a >= now + Duration::from_millis(3));
        assert!(a - (now + Duration::from_millis(3)) <= COALESCE_DELAY);
        // Two points less than a period apart land on the same or the next grid point.
        assert!(b == a || b - a == COALESCE_DELAY);
    }

    #[test]
    fn a_read_right_after_a_hold_is_still_streaming() {
        let mut p = Pacer::default();
        assert!(p.after_read(60).is_none(), "first read is not streaming");
        assert!(p.after_read(60).is_some(), "second read soon after: hold");
        // The hold lasted longer than STREAMING_GAP; the read that follows it still holds.
        p.last_read = Instant::now().checked_sub(Duration::from_millis(200));
        p.hold_ended();
        assert!(p.after_read(60).is_some());
        p.input();
        assert!(p.after_read(60).is_none(), "no hold right after input");
    }
}
