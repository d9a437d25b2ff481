//! Power metrics, per PDU and outlet, in the process-wide registry: requests, failures,
//! retries, time spent, last state, PDU health.

use std::time::Duration;

use crate::metrics::{Counter, Gauge, Registry};

use super::driver::OutletState;
use super::exec::Health;

/// Series of one PDU (or one device's commands).
#[derive(Debug, Clone)]
pub struct UnitMetrics {
    pub registry: &'static Registry,
    healthy: Gauge,
    failures_in_row: Gauge,
}

impl UnitMetrics {
    pub fn new(registry: &'static Registry, pdu: &str) -> Self {
        let l = [("pdu", pdu)];
        let healthy = registry.gauge(
            "labd_power_pdu_healthy",
            "1 while the PDU answers; 0 once it failed `unhealthy_after` requests in a row.",
            &l,
        );
        healthy.set(1);
        Self {
            registry,
            healthy,
            failures_in_row: registry.gauge(
                "labd_power_pdu_consecutive_failures",
                "Failed power requests in a row (all attempts failed).",
                &l,
            ),
        }
    }

    pub fn set_health(&self, h: &Health) {
        self.healthy.set(i64::from(!h.unhealthy));
        self.failures_in_row.set(i64::from(h.consecutive_failures));
    }
}

/// Series of one outlet.
#[derive(Debug, Clone)]
pub struct OutletMetrics {
    registry: &'static Registry,
    pdu: String,
    outlet: String,
    pub retries: Counter,
    duration_ms: Counter,
    last_seconds: Gauge,
    state: Gauge,
}

impl OutletMetrics {
    pub fn new(registry: &'static Registry, pdu: &str, outlet: &str) -> Self {
        let l = [("pdu", pdu), ("outlet", outlet)];
        let state = registry.gauge(
            "labd_power_outlet_state",
            "Last known outlet state: 1 on, 0 off, -1 unknown.",
            &l,
        );
        state.set(-1);
        Self {
            registry,
            pdu: pdu.to_string(),
            outlet: outlet.to_string(),
            retries: registry.counter(
                "labd_power_retries_total",
                "Attempts repeated after a failed one.",
                &l,
            ),
            duration_ms: registry.counter(
                "labd_power_phase_milliseconds_total",
                "Time spent talking to the PDU (queue wait excluded), in milliseconds.",
                &l,
            ),
            last_seconds: registry.gauge(
                "labd_power_last_phase_seconds",
                "Duration of the last exchange with the PDU for this outlet (retries included).",
                &l,
            ),
            state,
        }
    }

    /// Counts one request (`op`: on, off, reboot, status) and, when it failed, one failure.
    pub fn request(&self, op: &str, ok: bool, elapsed: Duration) {
        let l = [
            ("pdu", self.pdu.as_str()),
            ("outlet", self.outlet.as_str()),
            ("op", op),
        ];
        self.registry
            .counter(
                "labd_power_requests_total",
                "Power requests, by operation.",
                &l,
            )
            .inc();
        if !ok {
            self.registry
                .counter(
                    "labd_power_failures_total",
                    "Power requests that failed after every attempt.",
                    &l,
                )
                .inc();
        }
        self.registry
            .counter(
                "labd_power_request_milliseconds_total",
                "Time from request to answer (queue wait and reboot delay included), in milliseconds.",
                &l,
            )
            .inc_by(elapsed.as_millis() as u64);
    }

    pub fn observe(&self, elapsed: Duration) {
        self.duration_ms.inc_by(elapsed.as_millis() as u64);
        self.last_seconds.set_f64(elapsed.as_secs_f64());
    }

    pub fn set_state(&self, s: Option<OutletState>) {
        self.state.set(match s {
            Some(OutletState::On) => 1,
            Some(OutletState::Off) => 0,
            None => -1,
        });
    }
}
