//! The generic layer under `PowerService`: one [`Unit`] per PDU (or per device whose power is
//! LAVA-style commands) with its queue (a [`Lane`], shared across reloads), retries with backoff
//! and jitter, per-attempt timeout, read-back verification, health and the last known state of
//! its outlets. Drivers stay dumb.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rand::Rng;
use tokio::sync::mpsc::UnboundedSender;

use super::driver::{DriverError, DriverErrorKind, OutletState, OutletTarget, PowerDriver};
use super::error::{PowerError, TargetName};
use super::metrics::{OutletMetrics, UnitMetrics};
use super::settings::PduPolicy;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Health of one PDU: failed requests in a row, and whether that crossed the threshold.
#[derive(Debug, Clone, Default)]
pub struct Health {
    pub consecutive_failures: u32,
    pub unhealthy: bool,
    pub last_error: Option<String>,
    pub last_success: Option<SystemTime>,
}

/// What labd last knew of one outlet.
#[derive(Debug, Clone, Default)]
pub struct OutletRecord {
    pub state: Option<OutletState>,
    /// The state was read back from the PDU (not only assumed from an acknowledgement).
    pub verified: bool,
    pub updated: Option<SystemTime>,
    pub last_op: Option<String>,
    pub last_error: Option<String>,
}

struct OutletSlot {
    record: OutletRecord,
    metrics: OutletMetrics,
}

/// The serialisation of one PDU: its queue and its outlets' locks. It outlives a [`Unit`]: after
/// an inventory reload, the old service's units (still used by a running job or a detached
/// request) and the new service's share it, so a PDU never sees two requests at once.
#[derive(Default)]
pub struct Lane {
    /// FIFO (tokio's mutex is fair): requests to one PDU run strictly one at a time.
    queue: tokio::sync::Mutex<()>,
    /// Held for a whole operation on an outlet (a reboot's delay included), so two requests
    /// for one board never interleave; the PDU queue is only held while talking to the PDU.
    outlets: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane").finish_non_exhaustive()
    }
}

/// One queue: a PDU with its driver, or one device's own commands.
pub struct Unit {
    /// Label in metrics and status: the PDU name, or `commands:DEVICE`.
    pub label: String,
    pub target_pdu: Option<crate::ids::PduName>,
    pub driver: Arc<dyn PowerDriver>,
    pub policy: PduPolicy,
    pub outlet_count: Option<u32>,
    pub numeric_outlets: bool,
    unhealthy_after: u32,
    max_retry_delay: Duration,
    /// Queue and outlet locks, shared with the units of earlier and later services.
    lane: Arc<Lane>,
    health: Mutex<Health>,
    outlets: Mutex<BTreeMap<String, OutletSlot>>,
    metrics: UnitMetrics,
}

impl std::fmt::Debug for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unit")
            .field("label", &self.label)
            .field("driver", &self.driver.kind())
            .finish()
    }
}

/// One step sent to the PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Switch(bool),
    Read,
    NativeReboot(Duration),
}

/// Where the request's progress lines go (job log), besides the daemon log.
#[derive(Debug, Clone, Default)]
pub struct Sink {
    pub events: Option<UnboundedSender<String>>,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Sink {
    pub fn line(&self, s: String) {
        tracing::info!(target: "labd::power", "{s}");
        if let Some(tx) = &self.events {
            let _ = tx.send(s.clone());
        }
        lock(&self.log).push(s);
    }
}

/// The result of one phase.
#[derive(Debug, Clone)]
pub struct PhaseResult {
    pub state: Option<OutletState>,
    pub verified: bool,
    pub attempts: u32,
}

/// Everything a [`Unit`] is built from.
pub struct UnitSpec {
    pub label: String,
    pub target_pdu: Option<crate::ids::PduName>,
    pub driver: Arc<dyn PowerDriver>,
    pub policy: PduPolicy,
    pub outlet_count: Option<u32>,
    pub numeric_outlets: bool,
    pub unhealthy_after: u32,
    pub max_retry_delay: Duration,
}

impl Unit {
    /// A unit whose queue and outlet locks are `lane`'s (shared with another unit of the same
    /// PDU, e.g. the one a reload replaced).
    pub fn with_lane(
        spec: UnitSpec,
        lane: Arc<Lane>,
        registry: &'static crate::metrics::Registry,
    ) -> Self {
        let metrics = UnitMetrics::new(registry, &spec.label);
        Self {
            label: spec.label,
            target_pdu: spec.target_pdu,
            driver: spec.driver,
            policy: spec.policy,
            outlet_count: spec.outlet_count,
            numeric_outlets: spec.numeric_outlets,
            unhealthy_after: spec.unhealthy_after.max(1),
            max_retry_delay: spec.max_retry_delay,
            lane,
            health: Mutex::new(Health::default()),
            outlets: Mutex::new(BTreeMap::new()),
            metrics,
        }
    }

    pub fn health(&self) -> Health {
        lock(&self.health).clone()
    }

    /// Registers an outlet so status lists it before its first request.
    pub fn ensure_outlet(&self, key: &str) {
        let mut outlets = lock(&self.outlets);
        if !outlets.contains_key(key) {
            let metrics = OutletMetrics::new(self.metrics.registry, &self.label, key);
            outlets.insert(
                key.to_string(),
                OutletSlot {
                    record: OutletRecord::default(),
                    metrics,
                },
            );
        }
    }

    /// The lock held for a whole operation on outlet `key` (shared through the [`Lane`]).
    pub fn outlet_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.ensure_outlet(key);
        lock(&self.lane.outlets)
            .entry(key.to_string())
            .or_default()
            .clone()
    }

    pub fn outlet_metrics(&self, key: &str) -> OutletMetrics {
        self.ensure_outlet(key);
        lock(&self.outlets)
            .get(key)
            .map(|s| s.metrics.clone())
            .unwrap_or_else(|| OutletMetrics::new(self.metrics.registry, &self.label, key))
    }

    pub fn records(&self) -> Vec<(String, OutletRecord)> {
        lock(&self.outlets)
            .iter()
            .map(|(k, s)| (k.clone(), s.record.clone()))
            .collect()
    }

    pub fn record(&self, key: &str) -> OutletRecord {
        lock(&self.outlets)
            .get(key)
            .map(|s| s.record.clone())
            .unwrap_or_default()
    }

    fn update_record(&self, key: &str, f: impl FnOnce(&mut OutletRecord)) {
        self.ensure_outlet(key);
        let mut outlets = lock(&self.outlets);
        if let Some(slot) = outlets.get_mut(key) {
            f(&mut slot.record);
            slot.record.updated = Some(SystemTime::now());
            slot.metrics.set_state(slot.record.state);
        }
    }

    /// Pause before attempt `next` (2, 3, ...): `retry_delay` doubled per attempt, capped, with
    /// equal jitter (half fixed, half random) so PDUs that failed together do not retry together.
    pub fn backoff(&self, next: u32) -> Duration {
        let base = self.policy.retry_delay;
        if base.is_zero() {
            return Duration::ZERO;
        }
        let exp = next.saturating_sub(2).min(16);
        let d = base.saturating_mul(1u32 << exp).min(self.max_retry_delay);
        let half = d / 2;
        half + Duration::from_secs_f64(half.as_secs_f64() * rand::rng().random::<f64>())
    }

    /// One attempt of a phase, verification included; bounded by the caller's timeout.
    async fn attempt(
        &self,
        target: &OutletTarget,
        phase: Phase,
        sink: &Sink,
    ) -> Result<(Option<OutletState>, bool), DriverError> {
        let d = &self.driver;
        let out = |lines: &[String]| {
            for l in lines {
                sink.line(format!("  {l}"));
            }
        };
        match phase {
            Phase::Read => {
                let (state, reply) = d.get(target).await.inspect_err(|e| out(&e.output))?;
                out(&reply.transcript);
                Ok((Some(state), true))
            }
            Phase::NativeReboot(delay) => {
                let reply = d
                    .reboot(target, delay)
                    .await
                    .inspect_err(|e| out(&e.output))?;
                out(&reply.transcript);
                Ok((Some(OutletState::On), false))
            }
            Phase::Switch(on) => {
                let want = OutletState::from_on(on);
                let set = d.set(target, on).await;
                match &set {
                    Ok(reply) => out(&reply.transcript),
                    Err(e) => out(&e.output),
                }
                if !d.can_read() {
                    return set.map(|_| (Some(want), false));
                }
                if let Err(e) = &set {
                    // Some PDUs report an error although they switched (apc-pdu-snmp#18):
                    // read back before declaring the attempt failed.
                    if matches!(
                        e.kind,
                        DriverErrorKind::Unsupported | DriverErrorKind::Unreachable
                    ) {
                        return Err(e.clone());
                    }
                    return match d.get(target).await {
                        Ok((state, reply)) if state == want => {
                            out(&reply.transcript);
                            sink.line(format!(
                                "  the PDU reported an error ({e}) but the outlet reads {state}"
                            ));
                            Ok((Some(state), true))
                        }
                        _ => Err(e.clone()),
                    };
                }
                // Read back; a PDU may take a moment to switch, so look a few times.
                let mut last = None;
                for i in 0..4u32 {
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(100 << i)).await;
                    }
                    let (state, reply) = d.get(target).await.inspect_err(|e| out(&e.output))?;
                    if state == want {
                        out(&reply.transcript);
                        return Ok((Some(state), true));
                    }
                    last = Some((state, reply));
                }
                let (state, reply) = last.unwrap_or((want, Default::default()));
                out(&reply.transcript);
                let mut e = DriverError::new(
                    DriverErrorKind::NotSwitched,
                    format!("the PDU acknowledged {want} but the outlet reads {state}"),
                );
                e.output = reply.transcript;
                Err(e)
            }
        }
    }

    /// Runs one phase through this PDU's queue, with retries, timeouts and verification.
    /// `key` is the outlet's identity (numbers by value: "08" is "8"), `target.outlet` the text
    /// the driver gets.
    pub async fn run_phase(
        &self,
        key: &str,
        target: &OutletTarget,
        name: &TargetName,
        op: &'static str,
        phase: Phase,
        sink: &Sink,
    ) -> Result<PhaseResult, PowerError> {
        let metrics = self.outlet_metrics(key);
        let _queue = self.lane.queue.lock().await;
        let unhealthy = lock(&self.health).unhealthy;
        let attempts = if unhealthy {
            1
        } else {
            self.policy.retries + 1
        };
        let started = Instant::now();
        let mut attempt = 0;
        let last_error = loop {
            attempt += 1;
            sink.line(format!("{name}: {op} (attempt {attempt} of {attempts})"));
            let timeout = self.policy.timeout;
            let result =
                match tokio::time::timeout(timeout, self.attempt(target, phase, sink)).await {
                    Ok(r) => r,
                    Err(_) => Err(DriverError::new(
                        DriverErrorKind::Timeout,
                        format!("no answer within {}", humantime::format_duration(timeout)),
                    )),
                };
            match result {
                Ok((state, verified)) => {
                    metrics.observe(started.elapsed());
                    self.update_record(key, |r| {
                        if state.is_some() {
                            r.state = state;
                        }
                        r.verified = verified;
                        r.last_op = Some(op.to_string());
                        r.last_error = None;
                    });
                    self.succeeded();
                    let shown = state.map_or(String::new(), |s| format!(", outlet {s}"));
                    sink.line(format!(
                        "{name}: {op} done{shown}{}",
                        if verified { " (read back)" } else { "" }
                    ));
                    return Ok(PhaseResult {
                        state,
                        verified,
                        attempts: attempt,
                    });
                }
                Err(e) if e.kind == DriverErrorKind::Unsupported => {
                    return Err(PowerError::Unsupported {
                        target: name.clone(),
                        op,
                        source: Box::new(e),
                    });
                }
                Err(e) => {
                    sink.line(format!(
                        "{name}: {op} attempt {attempt} of {attempts} failed: {e}"
                    ));
                    if attempt >= attempts {
                        break e;
                    }
                    metrics.retries.inc();
                    let wait = self.backoff(attempt + 1);
                    if !wait.is_zero() {
                        sink.line(format!(
                            "{name}: retrying in {}",
                            humantime::format_duration(round_ms(wait))
                        ));
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        };
        metrics.observe(started.elapsed());
        let phase_changes_state = matches!(phase, Phase::Switch(_) | Phase::NativeReboot(_));
        self.update_record(key, |r| {
            if phase_changes_state {
                // It may or may not have switched: say so rather than keep a stale state.
                r.state = None;
                r.verified = false;
            }
            r.last_op = Some(op.to_string());
            r.last_error = Some(last_error.to_string());
        });
        self.failed(&last_error, name);
        Err(PowerError::Failed {
            target: name.clone(),
            op,
            attempt,
            attempts,
            unhealthy,
            source: Box::new(last_error),
        })
    }

    fn succeeded(&self) {
        let mut h = lock(&self.health);
        if h.unhealthy {
            tracing::info!(pdu = %self.label, "PDU answers again: healthy");
        }
        h.consecutive_failures = 0;
        h.unhealthy = false;
        h.last_success = Some(SystemTime::now());
        self.metrics.set_health(&h);
    }

    fn failed(&self, e: &DriverError, name: &TargetName) {
        let mut h = lock(&self.health);
        h.consecutive_failures += 1;
        h.last_error = Some(format!("{name}: {e}"));
        if !h.unhealthy && h.consecutive_failures >= self.unhealthy_after {
            h.unhealthy = true;
            tracing::error!(
                pdu = %self.label,
                failures = h.consecutive_failures,
                "PDU marked unhealthy: {e}"
            );
        }
        self.metrics.set_health(&h);
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}
