//! `PowerService`: created once per daemon from the inventory; the daemon's control socket, the
//! job runner and the pdudaemon-compatible listener all call it, so every request for a PDU goes
//! through that PDU's one queue.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::Instrument;

use labd_hw_fixtures::simpdu::SimPdu;

use crate::ids::{DeviceName, PduName};
use crate::inventory::Inventory;

use super::driver::{OutletTarget, PowerDriver};
use super::drivers;
use super::error::{PowerError, TargetName};
use super::exec::{Phase, Sink, Unit, UnitSpec};

mod pool;
mod request;
mod status;

use super::settings::{self, DeviceTarget, PduPolicy, ResolvedPdu};
pub use pool::UnitPool;
use pool::{UnitConfig, UnitKey};
pub use request::{PowerOp, PowerOutcome, PowerRequest};
pub use status::{DevicePowerStatus, OutletStatus, PduStatus, PowerStatus};

#[derive(Debug, Clone)]
struct DeviceEntry {
    unit: Arc<Unit>,
    /// Outlet key (numbers by value: "08" is "8").
    outlet: String,
    /// The outlet as configured, which the driver gets ("08" stays "08" for pdudaemon).
    outlet_text: String,
    reboot_delay: Option<Duration>,
}

struct Inner {
    units: BTreeMap<String, Arc<Unit>>,
    devices: BTreeMap<DeviceName, DeviceEntry>,
    /// pdudaemon `hostname=` values (PDU names and `pdudaemon_hostnames`) to PDU names.
    hostnames: HashMap<String, PduName>,
    reboot_delay: Duration,
}

/// The power layer of one daemon. Cheap to clone.
#[derive(Clone)]
pub struct PowerService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PowerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PowerService")
            .field("units", &self.inner.units.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Builds a [`PowerService`]; lets the caller supply in-process simulators or other drivers.
pub struct PowerServiceBuilder<'a> {
    inv: &'a Inventory,
    drivers: HashMap<PduName, Arc<dyn PowerDriver>>,
    registry: &'static crate::metrics::Registry,
    pool: Option<UnitPool>,
}

impl<'a> PowerServiceBuilder<'a> {
    /// Takes the units (queues, outlet locks, health, states) from `pool`, shared with the
    /// services built before and after with it, so a reload never lets two requests reach one
    /// PDU at once. A PDU whose settings are unchanged keeps its unit (and driver: a driver
    /// given with [`Self::driver`] or [`Self::attach_sim`] is used only for a new unit).
    pub fn pool(mut self, pool: &UnitPool) -> Self {
        self.pool = Some(pool.clone());
        self
    }

    /// Drives `[[pdu]] name = ...` (driver `sim`, no `url`) through this in-process simulator.
    pub fn attach_sim(mut self, pdu: &PduName, sim: SimPdu) -> Self {
        self.drivers
            .insert(pdu.clone(), Arc::new(drivers::sim::SimDriver::new(sim)));
        self
    }

    /// Replaces a PDU's driver (tests, embedding).
    pub fn driver(mut self, pdu: &PduName, driver: Arc<dyn PowerDriver>) -> Self {
        self.drivers.insert(pdu.clone(), driver);
        self
    }

    /// Metrics registry (default: the process-wide one).
    pub fn registry(mut self, registry: &'static crate::metrics::Registry) -> Self {
        self.registry = registry;
        self
    }

    pub fn build(mut self) -> Result<PowerService, PowerError> {
        let inv = self.inv;
        let ps = inv.power.clone().unwrap_or_default();
        let pool = self.pool.take().unwrap_or_default();
        let mut units = BTreeMap::new();
        let mut hostnames = HashMap::new();
        for p in &inv.pdus {
            let r: ResolvedPdu =
                settings::resolve_pdu(p).map_err(|problems| PowerError::Driver {
                    pdu: p.name().clone(),
                    source: Box::new(super::driver::DriverError::new(
                        super::driver::DriverErrorKind::Refused,
                        problems
                            .iter()
                            .map(|x| format!("{}: {}", x.key, x.message))
                            .collect::<Vec<_>>()
                            .join("; "),
                    )),
                })?;
            let numeric = settings::numeric_outlets(p.driver.get_ref());
            for h in std::iter::once(r.name.as_str().to_string())
                .chain(r.pdudaemon_hostnames.iter().cloned())
            {
                hostnames.insert(h, r.name.clone());
            }
            let key = UnitKey {
                config: UnitConfig::Pdu(r.clone()),
                unhealthy_after: ps.unhealthy_after(),
                max_retry_delay: ps.max_retry_delay(),
            };
            let given = self.drivers.remove(&r.name);
            let registry = self.registry;
            let unit = pool.unit(r.name.as_str(), key, |lane| {
                let driver = match given {
                    Some(d) => d,
                    None => drivers::build(&r.driver).map_err(|source| PowerError::Driver {
                        pdu: r.name.clone(),
                        source: Box::new(source),
                    })?,
                };
                Ok::<_, PowerError>(Unit::with_lane(
                    UnitSpec {
                        label: r.name.as_str().to_string(),
                        target_pdu: Some(r.name.clone()),
                        driver,
                        policy: r.policy.clone(),
                        outlet_count: r.outlets,
                        numeric_outlets: numeric,
                        unhealthy_after: ps.unhealthy_after(),
                        max_retry_delay: ps.max_retry_delay(),
                    },
                    lane,
                    registry,
                ))
            })?;
            units.insert(r.name.as_str().to_string(), unit);
        }
        let mut devices = BTreeMap::new();
        for dev in &inv.devices {
            let Some(power) = &dev.power else { continue };
            let target = settings::resolve_device(dev.name(), dev.name.span(), power, &inv.pdus)
                .map_err(|_| PowerError::NotConfigured(dev.name().clone()))?;
            let reboot_delay = power.reboot_delay.as_ref().map(|d| d.get_ref().get());
            let (unit, outlet, outlet_text) = match target {
                DeviceTarget::Outlet { pdu, outlet } => {
                    let unit = units
                        .get(pdu.as_str())
                        .cloned()
                        .ok_or_else(|| PowerError::UnknownPdu(pdu.as_str().to_string()))?;
                    (unit, settings::outlet_key(&outlet), outlet.0)
                }
                DeviceTarget::Commands(c) => {
                    let label = format!("commands:{}", dev.name());
                    let key = UnitKey {
                        config: UnitConfig::Commands(c.clone()),
                        unhealthy_after: ps.unhealthy_after(),
                        max_retry_delay: ps.max_retry_delay(),
                    };
                    let registry = self.registry;
                    let unit = pool.unit(&label.clone(), key, |lane| {
                        let driver = Arc::new(drivers::command::CommandDriver {
                            on: c.on,
                            off: c.off,
                            reboot: c.reset,
                            state: None,
                        });
                        let has_reset = driver.reboot.is_some();
                        Ok::<_, PowerError>(Unit::with_lane(
                            UnitSpec {
                                label,
                                target_pdu: None,
                                driver,
                                policy: PduPolicy {
                                    native_reboot: has_reset,
                                    ..PduPolicy::default()
                                },
                                outlet_count: None,
                                numeric_outlets: false,
                                unhealthy_after: ps.unhealthy_after(),
                                max_retry_delay: ps.max_retry_delay(),
                            },
                            lane,
                            registry,
                        ))
                    })?;
                    (unit, "-".to_string(), "-".to_string())
                }
            };
            unit.ensure_outlet(&outlet);
            devices.insert(
                dev.name().clone(),
                DeviceEntry {
                    unit,
                    outlet,
                    outlet_text,
                    reboot_delay,
                },
            );
        }
        Ok(PowerService {
            inner: Arc::new(Inner {
                units,
                devices,
                hostnames,
                reboot_delay: ps.reboot_delay(),
            }),
        })
    }
}

impl PowerService {
    /// The service for a validated inventory, with the drivers it names.
    pub fn new(inv: &Inventory) -> Result<Self, PowerError> {
        Self::builder(inv).build()
    }

    pub fn builder(inv: &Inventory) -> PowerServiceBuilder<'_> {
        PowerServiceBuilder {
            inv,
            drivers: HashMap::new(),
            registry: crate::metrics::global(),
            pool: None,
        }
    }

    /// Devices with power control, in name order.
    pub fn devices(&self) -> Vec<DeviceName> {
        self.inner.devices.keys().cloned().collect()
    }

    /// `power(device, op)` with default options.
    pub async fn power(
        &self,
        device: &DeviceName,
        op: PowerOp,
    ) -> Result<PowerOutcome, PowerError> {
        self.request(device, PowerRequest::new(op)).await
    }

    /// Powers a device's outlet (or runs its commands).
    pub async fn request(
        &self,
        device: &DeviceName,
        req: PowerRequest,
    ) -> Result<PowerOutcome, PowerError> {
        let entry = self
            .inner
            .devices
            .get(device)
            .cloned()
            .ok_or_else(|| PowerError::UnknownDevice(device.as_str().to_string()))?;
        let delay = entry.reboot_delay;
        self.spawn(
            entry.unit,
            entry.outlet,
            entry.outlet_text,
            Some(device.clone()),
            req,
            delay,
        )
        .await
    }

    /// The PDU a pdudaemon `hostname=` names (a PDU name or one of its `pdudaemon_hostnames`).
    pub fn pdu_for_hostname(&self, hostname: &str) -> Option<PduName> {
        self.inner.hostnames.get(hostname).cloned()
    }

    /// Powers an outlet of a PDU directly (the pdudaemon-compatible listener), through the same
    /// queue. The device on that outlet, if any, is named in logs and errors.
    pub async fn request_outlet(
        &self,
        pdu: &PduName,
        outlet: &str,
        req: PowerRequest,
    ) -> Result<PowerOutcome, PowerError> {
        let unit = self
            .inner
            .units
            .get(pdu.as_str())
            .cloned()
            .ok_or_else(|| PowerError::UnknownPdu(pdu.as_str().to_string()))?;
        let name = TargetName {
            pdu: Some(pdu.clone()),
            outlet: Some(outlet.to_string()),
            device: None,
        };
        settings::check_outlet_text(outlet).map_err(|reason| PowerError::BadOutlet {
            target: name.clone(),
            reason,
        })?;
        let value = super::config::OutletValue(outlet.to_string());
        if unit.numeric_outlets || unit.outlet_count.is_some() {
            let driver = if unit.numeric_outlets {
                "snmp"
            } else {
                "command"
            };
            settings::check_outlet(driver, unit.outlet_count, &value).map_err(|reason| {
                PowerError::BadOutlet {
                    target: name.clone(),
                    reason,
                }
            })?;
        }
        // Numbers are keyed by value ("08" is outlet 8) but the driver gets the text as given.
        let key = settings::outlet_key(&value);
        let device = self
            .inner
            .devices
            .iter()
            .find(|(_, e)| Arc::ptr_eq(&e.unit, &unit) && e.outlet == key)
            .map(|(d, e)| (d.clone(), e.reboot_delay));
        // Only outlets the inventory knows: every outlet used gets state and metric series for
        // good, so a caller must not create them at will (`port=<random>`).
        let counted = match (unit.outlet_count, value.number()) {
            (Some(max), Some(n)) => (1..=max).contains(&n),
            _ => false,
        };
        if device.is_none() && !counted {
            let why = match unit.outlet_count {
                Some(max) => format!("not in 1..={max} (the PDU's `outlets`)"),
                None => "no device uses it and the PDU has no `outlets` count".to_string(),
            };
            return Err(PowerError::BadOutlet {
                target: name,
                reason: format!("outlet {outlet:?} is not configured: {why}"),
            });
        }
        let delay = device.as_ref().and_then(|d| d.1);
        self.spawn(
            unit,
            key,
            outlet.to_string(),
            device.map(|d| d.0),
            req,
            delay,
        )
        .await
    }

    /// Runs the operation in its own task: a caller that gives up (a dropped HTTP connection,
    /// a cancelled job) never leaves a board half rebooted.
    async fn spawn(
        &self,
        unit: Arc<Unit>,
        key: String,
        text: String,
        device: Option<DeviceName>,
        req: PowerRequest,
        device_reboot_delay: Option<Duration>,
    ) -> Result<PowerOutcome, PowerError> {
        let name = TargetName {
            pdu: unit.target_pdu.clone(),
            outlet: unit.target_pdu.as_ref().map(|_| text.clone()),
            device: device.clone(),
        };
        let target = OutletTarget {
            pdu: unit.target_pdu.clone(),
            outlet: text,
            device,
        };
        let span = tracing::info_span!("power", target = %name, op = req.op.as_str());
        let reboot_delay = device_reboot_delay.unwrap_or(self.inner.reboot_delay);
        let op = req.op;
        let name2 = name.clone();
        let task = tokio::spawn(
            async move { run_op(unit, key, target, name2, req, reboot_delay).await }
                .instrument(span),
        );
        task.await.unwrap_or_else(|e| {
            Err(PowerError::Internal {
                target: name,
                op: op.as_str(),
                reason: e.to_string(),
            })
        })
    }
}

async fn run_op(
    unit: Arc<Unit>,
    key: String,
    target: OutletTarget,
    name: TargetName,
    req: PowerRequest,
    reboot_delay: Duration,
) -> Result<PowerOutcome, PowerError> {
    let started = Instant::now();
    let sink = Sink {
        events: req.events.clone(),
        log: Arc::new(Mutex::new(Vec::new())),
    };
    let outlet_lock = unit.outlet_lock(&key);
    let _outlet = outlet_lock.lock().await;
    let metrics = unit.outlet_metrics(&key);
    let result = async {
        let mut attempts = 0;
        let (state, verified) = match req.op {
            PowerOp::On | PowerOp::Off => {
                if let Some(d) = req.delay.filter(|d| !d.is_zero()) {
                    sink.line(format!(
                        "{name}: waiting {} before switching",
                        humantime::format_duration(d)
                    ));
                    tokio::time::sleep(d).await;
                }
                let on = req.op == PowerOp::On;
                let r = unit
                    .run_phase(
                        &key,
                        &target,
                        &name,
                        req.op.as_str(),
                        Phase::Switch(on),
                        &sink,
                    )
                    .await?;
                attempts += r.attempts;
                (r.state, r.verified)
            }
            PowerOp::Reboot => {
                let d = req.delay.unwrap_or(reboot_delay);
                if unit.policy.native_reboot && unit.driver.can_reboot() {
                    let r = unit
                        .run_phase(
                            &key,
                            &target,
                            &name,
                            "reboot",
                            Phase::NativeReboot(d),
                            &sink,
                        )
                        .await?;
                    attempts += r.attempts;
                    (r.state, r.verified)
                } else {
                    let off = unit
                        .run_phase(
                            &key,
                            &target,
                            &name,
                            "reboot: off",
                            Phase::Switch(false),
                            &sink,
                        )
                        .await?;
                    attempts += off.attempts;
                    sink.line(format!("{name}: off for {}", humantime::format_duration(d)));
                    tokio::time::sleep(d).await;
                    let on = unit
                        .run_phase(
                            &key,
                            &target,
                            &name,
                            "reboot: on",
                            Phase::Switch(true),
                            &sink,
                        )
                        .await?;
                    attempts += on.attempts;
                    (on.state, off.verified && on.verified)
                }
            }
            PowerOp::Status => {
                if unit.driver.can_read() {
                    let r = unit
                        .run_phase(&key, &target, &name, "status", Phase::Read, &sink)
                        .await?;
                    attempts += r.attempts;
                    (r.state, true)
                } else {
                    let r = unit.record(&key);
                    sink.line(format!(
                        "{name}: the PDU cannot be read; last known state: {}",
                        r.state.map_or("unknown".to_string(), |s| s.to_string())
                    ));
                    (r.state, false)
                }
            }
        };
        Ok::<_, PowerError>((state, verified, attempts))
    }
    .await;
    let elapsed = started.elapsed();
    metrics.request(req.op.as_str(), result.is_ok(), elapsed);
    let (state, verified, attempts) = result?;
    let log = std::mem::take(&mut *sink.log.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(PowerOutcome {
        target: name,
        op: req.op,
        state,
        verified,
        attempts,
        elapsed,
        log,
    })
}
