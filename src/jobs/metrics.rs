//! Job metrics, labelled by device (`device="qemu"` for a device labd does not know by name,
//! e.g. a master's qemu job): jobs started, running, finished by result. The result labels are
//! the master link's (`complete`, `incomplete`, `canceled`).

use crate::ids::DeviceName;
use crate::metrics::{Gauge, global};

use super::runner::Health;

/// The device label of a job.
fn device_label(device: Option<&DeviceName>) -> String {
    device.map_or_else(|| "unnamed".to_string(), |d| d.as_str().to_string())
}

/// A running job's share of the metrics; `finish` once.
pub struct JobMetrics {
    device: String,
    running: Gauge,
}

impl JobMetrics {
    /// Counts a started job.
    pub fn start(device: Option<&DeviceName>) -> Self {
        let device = device_label(device);
        let l = [("device", device.as_str())];
        global()
            .counter(
                "labd_jobs_started_total",
                "Jobs the runner started (master jobs and labd run-job).",
                &l,
            )
            .inc();
        let running = global().gauge("labd_jobs_running", "Jobs running now.", &l);
        running.add(1);
        Self { device, running }
    }

    /// Counts the job's end by result.
    pub fn finish(self, health: Health) {
        self.running.add(-1);
        global()
            .counter(
                "labd_jobs_finished_total",
                "Jobs the runner finished, by result (complete, incomplete, canceled).",
                &[("device", &self.device), ("result", health.as_str())],
            )
            .inc();
    }
}
