//! Jobs inside the daemon: `labd run-job` reaches the daemon's consoles and power queues
//! through the control socket's `run-job` request (a single job, or a Multi-Node group whose
//! boards the daemon chooses), and jobs from a LAVA master (`[master]`) run on the same
//! runner, so all queue behind each other and behind `labd power` on the same per-PDU queues
//! and console leases. One [`Reservations`] holds every job's boards: a board runs one job at
//! a time, and a group takes all its boards at once; it also locks each board's file under
//! `state_dir/locks/boards`, as every `labd run-job` run in its own process does.

use std::sync::Arc;

use super::{DaemonError, Service, ServiceRun, Services};
use crate::console::source::BoxFut;
use crate::control::{Conn, Request};
use crate::images::{ImageService, ImageSettings};
use crate::jobs::runner::{
    BoardFiles, BoardLocks, RunEnv, RunnerExecutor, ServiceFetcher, service,
};
use crate::master::MasterLink;
use crate::multinode::ClientSettings;
use crate::multinode::group::Reservations;
use crate::multinode::hook::LabdMultinode;

/// The `run-job` control request and the master link.
pub(super) struct JobsService;

impl Service for JobsService {
    fn name(&self) -> &'static str {
        "jobs"
    }

    fn start(
        self: Box<Self>,
        services: Arc<Services>,
    ) -> BoxFut<'static, Result<ServiceRun, DaemonError>> {
        Box::pin(async move {
            let inv = services.inventory();
            let settings =
                ImageSettings::from_inventory(&inv).map_err(|message| DaemonError::Service {
                    service: "images",
                    message,
                })?;
            let images = ImageService::new(settings)
                .await
                .map_err(|e| DaemonError::Service {
                    service: "images",
                    message: e.to_string(),
                })?;
            // Without a coordinator, Multi-Node jobs are refused at validation (as
            // lava-dispatcher refuses them without its coordinator configuration).
            let multinode = match ClientSettings::resolve(inv.coordinator.as_ref()) {
                Ok(s) => Some(LabdMultinode::new(s, inv.worker.name.to_string()).into_factory()),
                Err(e) => {
                    tracing::info!(error = %e, "no Multi-Node coordinator: Multi-Node jobs will be refused");
                    None
                }
            };
            let s = services.clone();
            // Read at every job: a reload may have replaced the inventory or the power queues.
            let env = Arc::new(move || RunEnv {
                consoles: Some(s.consoles.clone()),
                inventory: Some(s.inventory()),
                power: s.power().service(),
                images: Some(Arc::new(ServiceFetcher::new(images.clone()))),
                multinode: multinode.clone(),
                dispatcher_ip: None,
            });
            // The lock files keep a `labd run-job` in its own process (started while the
            // daemon did not answer, or from another inventory with this state_dir) off the
            // boards the daemon holds, and the daemon off theirs.
            let boards = Reservations::with_files(BoardFiles::for_state_dir(&inv.worker.state_dir));
            let b = boards.clone();
            services.add_status("boards", move || {
                serde_json::json!({
                    "held": b.holders().into_iter()
                        .map(|(d, h)| serde_json::json!({"device": d.as_str(), "by": h}))
                        .collect::<Vec<_>>(),
                    "waiting": b.waiters(),
                })
            });
            let (e, b) = (env.clone(), boards.clone());
            let jobs_dir = inv.worker.state_dir.join("jobs");
            services
                .control
                .register("run-job", move |req: Request, conn: Conn| {
                    let (env, boards, jobs_dir) = (e(), b.clone(), jobs_dir.clone());
                    async move {
                        // Without a device, the request is a Multi-Node submission.
                        if req
                            .body
                            .get("device")
                            .is_none_or(serde_json::Value::is_null)
                        {
                            crate::multinode::group::service::serve(env, boards, req, conn).await
                        } else {
                            let locks: Arc<dyn BoardLocks> = Arc::new(boards);
                            service::serve(env, jobs_dir, Some(locks), req, conn).await
                        }
                    }
                });
            let master = inv
                .master
                .as_ref()
                .map(|m| m.settings(&inv.worker.name, &inv.worker.state_dir));
            let state_dir = inv.worker.state_dir.clone();
            let shutdown = services.shutdown.clone();
            let run: ServiceRun = Box::pin(async move {
                let Some(settings) = master else {
                    shutdown.cancelled().await;
                    return;
                };
                let executor =
                    Arc::new(RunnerExecutor::new(move || env()).with_boards(Arc::new(boards)));
                if let Err(e) =
                    MasterLink::run(settings, executor, state_dir, shutdown.clone()).await
                {
                    tracing::error!(error = %e, "the master link could not start; no jobs from the master");
                    shutdown.cancelled().await;
                }
            });
            Ok(run)
        })
    }
}
