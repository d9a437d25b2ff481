//! The power service of the daemon: installs the [`PowerControl`] (one queue per PDU for the
//! whole daemon), serves the control socket's `power` request, runs the pdudaemon-compatible
//! listener when `[power] pdudaemon_listen` is set, and follows inventory reloads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{DaemonError, Service, ServiceRun, Services};
use crate::console::source::BoxFut;
use crate::control::{Conn, ControlError, Request};
use crate::ids::DeviceName;
use crate::inventory::Inventory;
use crate::power::control::{Installed, PowerCommand, PowerControl, PowerDone, PowerEvent};
use crate::power::{PowerRequest, PowerService};

/// A running pdudaemon-compatible listener.
struct Listener {
    /// As configured (what a reload compares).
    configured: SocketAddr,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Listener {
    async fn start(addr: SocketAddr, service: PowerService) -> std::io::Result<Self> {
        let tcp = tokio::net::TcpListener::bind(addr).await?;
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = crate::power::listener::serve(tcp, service, c).await {
                tracing::error!(%addr, error = %e, "pdudaemon-compatible listener failed");
            }
        });
        Ok(Self {
            configured: addr,
            cancel,
            task,
        })
    }

    async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

fn listen_addr(inv: &Inventory) -> Option<SocketAddr> {
    inv.power.as_ref().and_then(|p| p.pdudaemon_listen())
}

/// Applies a reloaded inventory: keep or replace the power service, and (re)start the listener
/// when its address changed or the service it serves was replaced.
async fn reload(
    power: &PowerControl,
    listener: &tokio::sync::Mutex<Option<Listener>>,
    inv: &Inventory,
) {
    let installed = match power.install(inv).await {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(error = %e, "power: the reloaded inventory cannot be used; keeping the running power service");
            return;
        }
    };
    if installed == Installed::Replaced {
        tracing::info!(
            "power configuration changed: PDU services rebuilt (queues, outlet locks and states of unchanged PDUs kept)"
        );
    }
    let want = listen_addr(inv);
    let mut l = listener.lock().await;
    let same = l.as_ref().map(|x| x.configured) == want;
    if same && installed == Installed::Kept {
        return;
    }
    if let Some(old) = l.take() {
        old.stop().await;
    }
    if let (Some(addr), Some(service)) = (want, power.service()) {
        match Listener::start(addr, service).await {
            Ok(n) => *l = Some(n),
            Err(e) => {
                tracing::error!(%addr, error = %e, "cannot open the pdudaemon-compatible listener")
            }
        }
    }
}

/// `[[pdu]]`, `[device.power]`, `[power]`: the daemon's power layer.
pub(super) struct PowerDaemonService;

impl Service for PowerDaemonService {
    fn name(&self) -> &'static str {
        "power"
    }

    fn start(
        self: Box<Self>,
        services: Arc<Services>,
    ) -> BoxFut<'static, Result<ServiceRun, DaemonError>> {
        Box::pin(async move {
            let inv = services.inventory();
            let power = services.power().clone();
            power.install(&inv).await?;
            let listener = match (listen_addr(&inv), power.service()) {
                (Some(addr), Some(service)) => {
                    Some(Listener::start(addr, service).await.map_err(|e| {
                        DaemonError::Service {
                            service: "power",
                            message: format!(
                                "cannot open the pdudaemon-compatible listener on {addr}: {e}"
                            ),
                        }
                    })?)
                }
                _ => None,
            };
            let listener = Arc::new(tokio::sync::Mutex::new(listener));
            let (p, l) = (power.clone(), listener.clone());
            services.on_reload("power", move |inv: Arc<Inventory>| {
                let (p, l) = (p.clone(), l.clone());
                Box::pin(async move { reload(&p, &l, &inv).await }) as BoxFut<'static, ()>
            });
            let p = power.clone();
            services.add_status("power", move || {
                p.status()
                    .and_then(|s| serde_json::to_value(s).ok())
                    .unwrap_or(Value::Null)
            });
            services
                .control
                .register("power", handler(services.clone()));
            let run: ServiceRun = Box::pin(async move {
                services.shutdown.cancelled().await;
                if let Some(l) = listener.lock().await.take() {
                    l.stop().await;
                }
            });
            Ok(run)
        })
    }
}

async fn write_event(conn: &mut Conn, ev: &PowerEvent) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(ev).map_err(std::io::Error::other)?;
    line.push(b'\n');
    conn.stream.write_all(&line).await
}

/// Checks a `power` request before it is queued: the device must exist and have power control.
fn check(services: &Services, cmd: &PowerCommand) -> Result<DeviceName, ControlError> {
    let device = DeviceName::new(cmd.device.as_str())
        .map_err(|e| ControlError::BadRequest(format!("power: {e}")))?;
    if services.inventory().device(device.as_str()).is_none() {
        return Err(ControlError::BadRequest(format!(
            "power: no device {device} in the inventory"
        )));
    }
    if services.power().device_status(&device).is_none() {
        return Err(ControlError::BadRequest(format!(
            "power: device {device} has no power control (no [device.power] in the inventory)"
        )));
    }
    Ok(device)
}

/// `{"request": "power", "device": ..., "op": ..., "delay_ms": ...}`: accepted (`{"ok": true}`),
/// then one JSON line per progress line, then `done` or `failed`. The request runs to its end
/// even if the client goes away (a board is never left half rebooted).
fn handler(services: Arc<Services>) -> impl crate::control::Handler {
    move |req: Request, mut conn: Conn| {
        let services = services.clone();
        async move {
            let cmd: PowerCommand = match req.parse() {
                Ok(c) => c,
                Err(e) => {
                    let _ = conn.reply_error(&e).await;
                    return;
                }
            };
            let device = match check(&services, &cmd) {
                Ok(d) => d,
                Err(e) => {
                    let _ = conn.reply_error(&e).await;
                    return;
                }
            };
            let who = format!("op:{}", req.peer.user);
            tracing::info!(device = %device, op = cmd.op.as_str(), user = %req.peer.user, "power request from the control socket");
            let mut client_gone = conn
                .reply_ok(serde_json::json!({"device": device.as_str(), "op": cmd.op}))
                .await
                .is_err();
            let console = services.consoles.get(device.as_str());
            if let Some(c) = &console {
                c.note(&format!("power {} requested by {who}", cmd.op.as_str()));
            }
            let (tx, mut rx) = mpsc::unbounded_channel();
            let mut pr = PowerRequest::new(cmd.op).events(tx);
            if let Some(ms) = cmd.delay_ms {
                pr = pr.delay(Duration::from_millis(ms));
            }
            let power = services.power().clone();
            let dev = device.clone();
            let fut = async move { power.request(&dev, pr).await };
            tokio::pin!(fut);
            let result = loop {
                tokio::select! {
                    Some(line) = rx.recv() => {
                        if !client_gone {
                            client_gone = write_event(&mut conn, &PowerEvent::Line { line }).await.is_err();
                        }
                    }
                    r = &mut fut => break r,
                }
            };
            while let Ok(line) = rx.try_recv() {
                if !client_gone {
                    client_gone = write_event(&mut conn, &PowerEvent::Line { line })
                        .await
                        .is_err();
                }
            }
            let (ev, note) = match &result {
                Ok(o) => {
                    let done = PowerDone::from(o);
                    let note = format!(
                        "power {} done: outlet {}",
                        cmd.op.as_str(),
                        done.state.as_deref().unwrap_or("unknown")
                    );
                    (PowerEvent::Done { outcome: done }, note)
                }
                Err(e) => (
                    PowerEvent::Failed {
                        error: e.to_string(),
                        output: e.output().to_vec(),
                    },
                    format!("power {} failed: {e}", cmd.op.as_str()),
                ),
            };
            if let Some(c) = &console {
                c.note(&note);
            }
            if !client_gone {
                let _ = write_event(&mut conn, &ev).await;
            }
        }
    }
}
