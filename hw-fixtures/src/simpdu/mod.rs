//! A simulated PDU whose outlets "really power" simulated boards, with fault injection.
//!
//! One [`SimPdu`] holds the outlets; it is used in-process (labd's `sim` driver calls
//! [`SimPdu::set`]/[`SimPdu::get`] directly, as `labd demo` and tests do) or over the network
//! through [`http::serve`], which speaks the simulator's own API and Netio's JSON API.
//!
//! Faults ([`Faults`]): a share of requests fails, the PDU is dead (never answers), it
//! acknowledges without switching, or it is slow. The simulator also checks the invariant labd
//! promises: it counts requests that overlap in time (two at once on one PDU).
//!
//! [`SimPdu::on_switch`] attaches what an outlet powers: a simulated board's `power_on()` and
//! `power_off()` are hooked there, and hooks run only when the outlet actually changes state.

pub mod http;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

/// What a hook receives: `true` when the outlet turned on.
pub type SwitchHook = Box<dyn Fn(bool) + Send + Sync>;

/// Injected misbehaviour. The default is a well-behaved PDU.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Share of requests (0.0..=1.0) answered with an error and no effect.
    pub fail_ratio: f64,
    /// Never answers (requests hang until the client gives up).
    pub dead: bool,
    /// Acknowledges every switch as done but leaves the outlet as it was.
    pub stuck: bool,
    /// Time each request takes before it is answered.
    pub latency: Duration,
}

/// Why the simulator refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    #[error("injected failure (request {request})")]
    Injected { request: u64 },
    #[error("no outlet {outlet} (outlets are 1..={count})")]
    NoSuchOutlet { outlet: u32, count: u32 },
}

/// One outlet switch that happened, with when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwitchEvent {
    pub at: Instant,
    pub outlet: u32,
    pub on: bool,
}

struct Inner {
    name: String,
    outlets: Mutex<Vec<bool>>,
    hooks: Mutex<HashMap<u32, Vec<Arc<SwitchHook>>>>,
    faults: Mutex<Faults>,
    rng: Mutex<rand::rngs::StdRng>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    overlaps: AtomicUsize,
    requests: AtomicU64,
    events: Mutex<Vec<SwitchEvent>>,
}

/// A simulated PDU; clones share the same outlets.
#[derive(Clone)]
pub struct SimPdu {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SimPdu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimPdu")
            .field("name", &self.inner.name)
            .field("outlets", &*lock(&self.inner.outlets))
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts a request in flight for as long as it lives (also when the caller gives up).
struct InFlight<'a>(&'a Inner);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl SimPdu {
    /// A PDU with `outlets` outlets numbered from 1, all off. Fault randomness is seeded, so a
    /// test sees the same sequence every run.
    pub fn new(name: impl Into<String>, outlets: u32) -> Self {
        Self {
            inner: Arc::new(Inner {
                name: name.into(),
                outlets: Mutex::new(vec![false; outlets as usize]),
                hooks: Mutex::new(HashMap::new()),
                faults: Mutex::new(Faults::default()),
                rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(0x5eed_0f9d)),
                in_flight: AtomicUsize::new(0),
                max_in_flight: AtomicUsize::new(0),
                overlaps: AtomicUsize::new(0),
                requests: AtomicU64::new(0),
                events: Mutex::new(Vec::new()),
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn outlet_count(&self) -> u32 {
        lock(&self.inner.outlets).len() as u32
    }

    /// Calls `hook(on)` whenever `outlet` changes state (not on a switch to the state it has).
    pub fn on_switch(&self, outlet: u32, hook: SwitchHook) {
        lock(&self.inner.hooks)
            .entry(outlet)
            .or_default()
            .push(Arc::new(hook));
    }

    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.inner.faults) = faults;
    }

    pub fn faults(&self) -> Faults {
        lock(&self.inner.faults).clone()
    }

    /// Reseeds the fault randomness.
    pub fn seed(&self, seed: u64) {
        *lock(&self.inner.rng) = rand::rngs::StdRng::seed_from_u64(seed);
    }

    /// The outlet's real state (not what a stuck PDU claims).
    pub fn state(&self, outlet: u32) -> Option<bool> {
        lock(&self.inner.outlets)
            .get((outlet as usize).wrapping_sub(1))
            .copied()
    }

    /// Every switch so far, in order.
    pub fn events(&self) -> Vec<SwitchEvent> {
        lock(&self.inner.events).clone()
    }

    /// Requests that started while another was still being answered.
    pub fn overlaps(&self) -> usize {
        self.inner.overlaps.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> usize {
        self.inner.max_in_flight.load(Ordering::SeqCst)
    }

    /// Requests received (set and get, failed ones included).
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::SeqCst)
    }

    /// Switches an outlet now, with no faults and no request counted (test set-up, a person
    /// pressing the PDU's button). Hooks run as for any switch.
    pub fn switch_now(&self, outlet: u32, on: bool) -> Result<(), SimError> {
        self.apply(outlet, on)
    }

    fn check(&self, outlet: u32) -> Result<(), SimError> {
        let count = self.outlet_count();
        if outlet == 0 || outlet > count {
            return Err(SimError::NoSuchOutlet { outlet, count });
        }
        Ok(())
    }

    fn apply(&self, outlet: u32, on: bool) -> Result<(), SimError> {
        self.check(outlet)?;
        let changed = {
            let mut outlets = lock(&self.inner.outlets);
            let slot = &mut outlets[outlet as usize - 1];
            let changed = *slot != on;
            *slot = on;
            changed
        };
        if changed {
            lock(&self.inner.events).push(SwitchEvent {
                at: Instant::now(),
                outlet,
                on,
            });
            let hooks: Vec<Arc<SwitchHook>> = lock(&self.inner.hooks)
                .get(&outlet)
                .cloned()
                .unwrap_or_default();
            for h in hooks {
                h(on);
            }
        }
        Ok(())
    }

    /// Common start of every request: overlap accounting, latency, dead and failure faults.
    async fn begin(&self) -> Result<(InFlight<'_>, Faults), SimError> {
        let request = self.inner.requests.fetch_add(1, Ordering::SeqCst) + 1;
        let before = self.inner.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(&self.inner);
        if before > 0 {
            self.inner.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        self.inner
            .max_in_flight
            .fetch_max(before + 1, Ordering::SeqCst);
        let faults = self.faults();
        if faults.dead {
            std::future::pending::<()>().await;
        }
        if !faults.latency.is_zero() {
            tokio::time::sleep(faults.latency).await;
        }
        if faults.fail_ratio > 0.0 && lock(&self.inner.rng).random_bool(faults.fail_ratio.min(1.0))
        {
            return Err(SimError::Injected { request });
        }
        Ok((guard, faults))
    }

    /// A switch request as a PDU receives it. Returns the state the PDU *acknowledges* (a stuck
    /// PDU acknowledges the requested state without switching).
    pub async fn set(&self, outlet: u32, on: bool) -> Result<bool, SimError> {
        self.check(outlet)?;
        let (_guard, faults) = self.begin().await?;
        if !faults.stuck {
            self.apply(outlet, on)?;
        }
        Ok(on)
    }

    /// A state query as a PDU receives it: the outlet's real state.
    pub async fn get(&self, outlet: u32) -> Result<bool, SimError> {
        self.check(outlet)?;
        let (_guard, _) = self.begin().await?;
        self.state(outlet).ok_or(SimError::NoSuchOutlet {
            outlet,
            count: self.outlet_count(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[tokio::test]
    async fn hooks_follow_real_changes_only() {
        let pdu = SimPdu::new("t", 4);
        let powered = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicUsize::new(0));
        let (p, c) = (powered.clone(), calls.clone());
        pdu.on_switch(
            2,
            Box::new(move |on| {
                p.store(on, Ordering::SeqCst);
                c.fetch_add(1, Ordering::SeqCst);
            }),
        );
        assert!(pdu.set(2, true).await.unwrap());
        assert!(pdu.set(2, true).await.unwrap());
        assert!(powered.load(Ordering::SeqCst));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        pdu.set_faults(Faults {
            stuck: true,
            ..Faults::default()
        });
        assert!(!pdu.set(2, false).await.unwrap());
        assert_eq!(pdu.state(2), Some(true));
        assert_eq!(
            pdu.set(9, true).await,
            Err(SimError::NoSuchOutlet {
                outlet: 9,
                count: 4
            })
        );
        assert_eq!(pdu.requests(), 3);
    }

    #[tokio::test]
    async fn counts_overlapping_requests() {
        let pdu = SimPdu::new("t", 2);
        pdu.set_faults(Faults {
            latency: Duration::from_millis(50),
            ..Faults::default()
        });
        let (a, b) = tokio::join!(pdu.set(1, true), pdu.set(2, true));
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(pdu.overlaps(), 1);
        assert_eq!(pdu.max_in_flight(), 2);
    }
}
