//! The master link's metrics, labelled by worker name.

use crate::metrics::{Counter, Gauge, global};

#[derive(Debug, Clone)]
pub struct LinkMetrics {
    worker: String,
    pub started: Counter,
    pub running: Gauge,
    pub last_ping: Gauge,
    pub pings_failed: Counter,
    pub lines_uploaded: Counter,
}

impl LinkMetrics {
    pub fn new(worker: &str) -> Self {
        let r = global();
        let l = [("worker", worker)];
        Self {
            worker: worker.to_string(),
            started: r.counter(
                "labd_master_jobs_started_total",
                "Jobs the master handed to this worker and labd started.",
                &l,
            ),
            running: r.gauge("labd_master_jobs_running", "Master jobs running now.", &l),
            last_ping: r.gauge(
                "labd_master_last_ping_success_timestamp_seconds",
                "Unix time of the last ping the master answered with 200.",
                &l,
            ),
            pings_failed: r.counter(
                "labd_master_pings_failed_total",
                "Pings that got no answer or an error answer.",
                &l,
            ),
            lines_uploaded: r.counter(
                "labd_master_log_lines_uploaded_total",
                "Job log lines the master acknowledged.",
                &l,
            ),
        }
    }

    /// Counts a job whose FINISHED call the master accepted, by the health it will record.
    pub fn finished(&self, health: &str) {
        global()
            .counter(
                "labd_master_jobs_finished_total",
                "Master jobs reported finished, by result (complete, incomplete, canceled).",
                &[("worker", &self.worker), ("result", health)],
            )
            .inc();
    }

    pub fn ping_ok(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_ping.set_f64(now);
    }
}
