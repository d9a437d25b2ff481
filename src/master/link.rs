//! The worker loop (lava-worker's `handle`): ping, start and cancel what the master asks,
//! report finished jobs. The daemon runs [`MasterLink::run`].

use std::collections::BTreeMap;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, warn};

use super::client::MasterClient;
use super::config::{MasterSettings, TokenSource};
use super::error::MasterError;
use super::executor::{JobExecutor, JobOutcome, MasterJob};
use super::jobtask::{JobCtx, JobHandle, Phase, blocking, spawn_job};
use super::metrics::LinkMetrics;
use super::store::{JobRecord, JobStore};
use super::wire::{JobPayload, JobRef};
use crate::ids::JobId;

/// lava-worker's retry period for registration.
const REGISTER_RETRY: Duration = Duration::from_secs(5);
/// First retry after a ping without answer or with a 5xx (lava-worker: about 1 s); doubled on
/// every further failure up to the ping interval.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// labd's link to a LAVA master.
pub struct MasterLink;

impl MasterLink {
    /// Runs the link until `shutdown` fires: obtains the worker token (registering if needed),
    /// resumes the jobs found in `<state_dir>/master/jobs`, then pings and exchanges jobs.
    /// Returns an error only if it cannot start (state directory or HTTP client); the master
    /// being unreachable is never an error, only retried.
    ///
    /// On shutdown, running jobs are dropped as a crash would drop them; their logs stay on
    /// disk and the next run reports them Incomplete (Infrastructure) with every line.
    pub async fn run(
        settings: MasterSettings,
        executor: Arc<dyn JobExecutor>,
        state_dir: PathBuf,
        shutdown: CancellationToken,
    ) -> Result<(), MasterError> {
        let span = tracing::info_span!("master", worker = %settings.name, url = %settings.url);
        async move {
            let client = MasterClient::new(&settings)?;
            let sd = state_dir.clone();
            let store = blocking(move || JobStore::open(&sd)).await?;
            let token = tokio::select! {
                t = obtain_token(&client, &settings.token) => t?,
                _ = shutdown.cancelled() => return Ok(()),
            };
            let ctx = Arc::new(JobCtx {
                client: client.clone(),
                store: store.clone(),
                job_log_interval: settings.job_log_interval,
                metrics: LinkMetrics::new(settings.name.as_str()),
                wake: Arc::new(Notify::new()),
                writers: Mutex::new(Vec::new()),
            });
            let ping_now = Arc::new(Notify::new());
            let events = settings.ws_url.clone().map(|url| {
                tokio::spawn(
                    super::events::listen(
                        url,
                        settings.version.clone(),
                        settings.name.to_string(),
                        ping_now.clone(),
                        shutdown.clone(),
                        super::events::HEARTBEAT,
                    )
                    .in_current_span(),
                )
            });
            let mut link = Link {
                ctx: ctx.clone(),
                executor,
                jobs: BTreeMap::new(),
                tasks: JoinSet::new(),
                ping_interval: settings.ping_interval,
                ping_now,
            };
            link.restore().await?;
            link.main_loop(&token, &shutdown).await;
            if let Some(e) = events {
                let _ = e.await;
            }
            link.tasks.shutdown().await;
            let writers: Vec<_> = ctx
                .writers
                .lock()
                .map(|mut w| std::mem::take(&mut *w))
                .unwrap_or_default();
            for w in writers {
                let _ = w.await;
            }
            info!("master link stopped");
            Ok(())
        }
        .instrument(span)
        .await
    }
}

/// The worker token: inline, from the token file, or by registering (then kept in the token
/// file with mode 0600, as lava-worker keeps `<worker_dir>/token`).
pub async fn obtain_token(
    client: &MasterClient,
    source: &TokenSource,
) -> Result<String, MasterError> {
    let path = match source {
        TokenSource::Inline(t) => return Ok(t.clone()),
        TokenSource::File(p) => p.clone(),
    };
    let p = path.clone();
    let existing = blocking(move || match std::fs::read_to_string(&p) {
        Ok(t) => Ok(Some(t.trim_end_matches('\n').to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(MasterError::io("cannot read token file", p, e)),
    })
    .await?;
    if let Some(t) = existing {
        if !t.is_empty() {
            info!(path = %path.display(), "worker token read from file");
            return Ok(t);
        }
    }
    info!(
        "no worker token: registering as {:?}",
        client.name().as_str()
    );
    let token = loop {
        match client.register().await {
            Ok(t) => break t,
            Err(e) => {
                error!("{e}; retrying in {REGISTER_RETRY:?}");
                tokio::time::sleep(REGISTER_RETRY).await;
            }
        }
    };
    let t = token.clone();
    blocking(move || write_token(&path, &t)).await?;
    Ok(token)
}

/// Writes the token file with mode 0600 from the start (never readable by others).
fn write_token(path: &Path, token: &str) -> Result<(), MasterError> {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(|e| MasterError::io("cannot create", dir, e))?;
    let tmp = dir.join(".token.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| MasterError::io("cannot create", &tmp, e))?;
    f.write_all(token.as_bytes())
        .and_then(|_| f.set_permissions(std::fs::Permissions::from_mode(0o600)))
        .and_then(|_| f.sync_all())
        .map_err(|e| MasterError::io("cannot write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| MasterError::io("cannot write", path, e))?;
    Ok(())
}

struct Link {
    ctx: Arc<JobCtx>,
    executor: Arc<dyn JobExecutor>,
    jobs: BTreeMap<JobId, JobHandle>,
    tasks: JoinSet<()>,
    ping_interval: Duration,
    /// Woken by the event feed: ping now rather than at the next interval.
    ping_now: Arc<Notify>,
}

impl Link {
    /// Resumes every job found on disk: outcomes not yet reported, logs not yet uploaded.
    async fn restore(&mut self) -> Result<(), MasterError> {
        let store = self.ctx.store.clone();
        let records = blocking(move || store.list()).await?;
        for rec in records {
            info!(job = %rec.id, finished = rec.outcome.is_some(), "resuming a job from the job table");
            let id = rec.id.clone();
            let h = spawn_job(self.ctx.clone(), &mut self.tasks, rec, None);
            self.jobs.insert(id, h);
        }
        Ok(())
    }

    async fn main_loop(&mut self, token: &str, shutdown: &CancellationToken) {
        let mut next_ping = Instant::now();
        let mut backoff = FIRST_RETRY;
        let wake = self.ctx.wake.clone();
        let ping_now = self.ping_now.clone();
        loop {
            while self.tasks.try_join_next().is_some() {}
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(next_ping) => {
                    let begin = Instant::now();
                    // A request may wait up to http_timeout (600 s by default): shutdown must
                    // not. Stopping mid-cycle is no worse than the crash shutdown stands for.
                    tokio::select! {
                        wait = self.ping_cycle(token, &mut backoff) => next_ping = begin + wait,
                        _ = shutdown.cancelled() => return,
                    }
                }
                _ = wake.notified() => tokio::select! {
                    _ = self.report_finished() => {}
                    _ = shutdown.cancelled() => return,
                },
                _ = ping_now.notified() => next_ping = Instant::now(),
            }
        }
    }

    /// One ping and what follows it; returns the time until the next ping.
    async fn ping_cycle(&mut self, token: &str, backoff: &mut Duration) -> Duration {
        let answer = match self.ctx.client.ping(token).await {
            Ok(a) => a,
            Err(e) => {
                self.ctx.metrics.pings_failed.inc();
                if e.is_unavailable() {
                    let wait = *backoff;
                    *backoff = (*backoff * 2).min(self.ping_interval);
                    warn!("{e}; jobs keep running and logs stay on disk; next ping in {wait:?}");
                    return wait;
                }
                if matches!(e, MasterError::VersionMismatch { .. }) {
                    error!("{e}; next ping in {:?}", self.ping_interval);
                    return self.ping_interval;
                }
                error!("{e}; next ping in {:?}", self.ping_interval);
                self.report_finished().await;
                return self.ping_interval;
            }
        };
        *backoff = FIRST_RETRY;
        self.ctx.metrics.ping_ok();
        for r in &answer.running {
            if !self.jobs.contains_key(&r.id) {
                info!(job = %r.id, "the master lists a running job labd does not know: starting it");
                self.start(r).await;
            }
        }
        for r in &answer.cancel {
            self.cancel(r).await;
        }
        for r in &answer.start {
            self.start(r).await;
        }
        self.report_finished().await;
        self.ping_interval
    }

    async fn start(&mut self, r: &JobRef) {
        let client = self.ctx.client.clone();
        if let Some(h) = self.jobs.get(&r.id) {
            if *h.phase.borrow() == Phase::Running {
                info!(job = %r.id, "already running: RUNNING => server");
                if let Err(e) = client.set_running(&r.id, &r.token).await {
                    error!(job = %r.id, "{e}");
                }
            }
            return;
        }
        let payload = match client.get_job(&r.id, &r.token).await {
            Ok(p) => p,
            Err(e) => {
                error!(job = %r.id, "{e}; the job is not started");
                return;
            }
        };
        let rec = JobRecord {
            id: r.id.clone(),
            token: r.token.clone(),
            outcome: None,
        };
        let store = self.ctx.store.clone();
        let (rec2, p2) = (rec.clone(), payload.clone());
        let dir = match blocking(move || store.create(&rec2, &p2)).await {
            Ok(d) => d,
            Err(e) => {
                error!(job = %r.id, "{e}; the job is not started");
                return;
            }
        };
        let job = MasterJob {
            id: r.id.clone(),
            token: r.token.clone(),
            definition: payload.definition,
            device: payload.device,
            dispatcher: payload.dispatcher,
            env: payload.env,
            env_dut: payload.env_dut,
            work_dir: dir.join("work"),
        };
        // RUNNING goes before the job's first log POST can (lava-worker posts it right after
        // spawning lava-run, which takes a while to send anything). The job starts even if the
        // POST fails, as with lava-worker; the server lists it under `start` again and gets
        // RUNNING then.
        if let Err(e) = client.set_running(&r.id, &r.token).await {
            error!(job = %r.id, "{e}");
        }
        info!(job = %r.id, "starting the job");
        let h = spawn_job(
            self.ctx.clone(),
            &mut self.tasks,
            rec,
            Some((self.executor.clone(), job)),
        );
        self.jobs.insert(r.id.clone(), h);
    }

    async fn cancel(&mut self, r: &JobRef) {
        if let Some(h) = self.jobs.get(&r.id) {
            if !h.cancel.is_cancelled() && *h.phase.borrow() == Phase::Running {
                info!(job = %r.id, "the master cancels the job");
                h.cancel.cancel();
            }
            return;
        }
        // Like lava-worker: a cancel for a job labd does not run is answered with FINISHED.
        info!(job = %r.id, "cancel for a job labd does not run: reporting it canceled");
        let rec = JobRecord {
            id: r.id.clone(),
            token: r.token.clone(),
            outcome: Some(JobOutcome::canceled("")),
        };
        let store = self.ctx.store.clone();
        let rec2 = rec.clone();
        if let Err(e) = blocking(move || store.create(&rec2, &JobPayload::default())).await {
            error!(job = %r.id, "{e}");
            return;
        }
        let h = spawn_job(self.ctx.clone(), &mut self.tasks, rec, None);
        self.jobs.insert(r.id.clone(), h);
    }

    /// FINISHED for every job whose log is fully uploaded; forgets a job once the master
    /// accepted it (or says it does not know it).
    async fn report_finished(&mut self) {
        let ready: Vec<(JobId, String, JobOutcome)> = self
            .jobs
            .iter()
            .filter_map(|(id, h)| match &*h.phase.borrow() {
                Phase::Ready(o) => Some((id.clone(), h.token.clone(), o.clone())),
                _ => None,
            })
            .collect();
        for (id, token, outcome) in ready {
            info!(job = %id, result = outcome.health(), "FINISHED => server");
            match self.ctx.client.finish(&id, &token, &outcome).await {
                Ok(()) => self.ctx.metrics.finished(outcome.health()),
                Err(e) if e.status() == Some(404) => {
                    error!(job = %id, "{e}; the master does not know this job: forgetting it");
                }
                Err(e) => {
                    warn!(job = %id, "{e}; FINISHED will be sent again");
                    if e.is_unavailable() {
                        return;
                    }
                    continue;
                }
            }
            self.jobs.remove(&id);
            let store = self.ctx.store.clone();
            let id2 = id.clone();
            if let Err(e) = blocking(move || store.remove(&id2)).await {
                error!(job = %id, "{e}");
            }
        }
    }
}
