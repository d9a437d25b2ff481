//! The daemon's `run-job` control request: `labd run-job` hands a job to the running daemon,
//! which runs it on its own consoles and power (so operators attached to the console see it,
//! and the job queues with `labd power` on the same PDU), and streams the log back.
//!
//! Protocol (one JSON object per line, after the control socket's request line):
//! - request: `{"request": "run-job", "device": NAME, "definition": YAML, "id": ID?}`;
//! - reply: `{"ok": true, "job": ID, "work_dir": DIR}` (or an error reply);
//! - `{"waiting": TEXT}` when the board is held by another job (the daemon's reservations:
//!   the job waits for it, first come first served);
//! - then `{"log": LINE}` for every LAVA log line (a client that does not keep up loses lines,
//!   replaced by a `labd: N log lines dropped` warning line: [`super::reply_stream`]), and
//!   last `{"end": JobEnd}`; or
//!   `{"error": TEXT}` when the board was not free within the request's `wait_timeout_ms`.
//!
//! A request without `device` is a Multi-Node submission: the daemon runs it as a group
//! (`multinode::group::service`, which has its own stream).
//!
//! The client closing the connection (Ctrl-C) cancels the job.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

use super::boards::BoardLocks;
use super::reply_stream::{ReplyStream, dropped_log_line};
use super::{DeviceSetup, Health, JobLog, JobReport, JobRequest, RunEnv, run_job};
use crate::control::{Conn, ControlError, Handler, Request};

/// The body of a `run-job` request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunJobRequest {
    /// The board; `None` for a Multi-Node submission (the daemon places its sub-jobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    pub definition: String,
    /// The job id (`LAVA_JOB_ID`); the daemon makes one up when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// How long to wait for busy boards (`labd run-job --wait-timeout`); `None`: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_timeout_ms: Option<u64>,
}

impl RunJobRequest {
    /// The request's wait limit.
    pub fn wait_timeout(&self) -> Option<Duration> {
        self.wait_timeout_ms.map(Duration::from_millis)
    }
}

/// How a job ended, as sent at the end of the stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobEnd {
    pub health: Health,
    /// LAVA's error type (`Job`, `Infrastructure`...), empty when Complete.
    pub error_type: String,
    pub error_msg: String,
}

impl JobEnd {
    pub fn from_report(r: &JobReport) -> Self {
        Self {
            health: r.health,
            error_type: r
                .error
                .as_ref()
                .map(|e| e.kind.as_str().to_string())
                .unwrap_or_default(),
            error_msg: r
                .error
                .as_ref()
                .map(|e| e.message.clone())
                .unwrap_or_default(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum StreamMsg {
    Waiting(String),
    Log(String),
    End(JobEnd),
    /// The job did not start: its board was not free in time.
    Error(String),
}

/// A job id for a job that has none: the UTC time, digits only (it names `/lava-<id>`).
pub fn local_job_id() -> String {
    chrono::Utc::now().format("%Y%m%d%H%M%S%3f").to_string()
}

/// The `run-job` handler for single jobs, with no board reservations (the daemon composes
/// its own with [`serve`]). `env` gives the daemon's current consoles, inventory, power and
/// images at each request (the inventory changes on reload); job directories go under
/// `jobs_dir/<id>` and stay there (`output.yaml`).
pub fn handler(
    env: impl Fn() -> RunEnv + Send + Sync + 'static,
    jobs_dir: PathBuf,
) -> impl Handler {
    let env = Arc::new(env);
    move |req: Request, conn: Conn| {
        let env = env();
        let jobs_dir = jobs_dir.clone();
        async move { serve(env, jobs_dir, None, req, conn).await }
    }
}

/// The board of an inventory device, with the daemon's console and power.
pub fn device_setup(env: &RunEnv, device: &str) -> Result<DeviceSetup, String> {
    let inv = env
        .inventory
        .as_ref()
        .ok_or_else(|| "labd has no inventory".to_string())?;
    let dev = inv.device(device).ok_or_else(|| {
        let known: Vec<&str> = inv.devices.iter().map(|d| d.name().as_str()).collect();
        format!(
            "no device {device:?} in the inventory (devices: {})",
            known.join(", ")
        )
    })?;
    let console = env.consoles.as_ref().and_then(|c| c.get(device));
    if console.is_none() && dev.console.is_some() {
        return Err(format!("the console of {device} is not running"));
    }
    Ok(DeviceSetup::from_inventory(
        dev,
        console,
        env.power.as_ref(),
    ))
}

/// Serves one single-job `run-job` request; with `boards`, the job holds its board (waiting
/// behind other jobs) for its whole run.
pub async fn serve(
    env: RunEnv,
    jobs_dir: PathBuf,
    boards: Option<Arc<dyn BoardLocks>>,
    req: Request,
    mut conn: Conn,
) {
    let body: RunJobRequest = match req.parse() {
        Ok(b) => b,
        Err(e) => {
            let _ = conn.reply_error(&e).await;
            return;
        }
    };
    let Some(device) = body.device.clone() else {
        let e = ControlError::BadRequest("run-job: no device".into());
        let _ = conn.reply_error(&e).await;
        return;
    };
    let setup = match device_setup(&env, &device) {
        Ok(s) => s,
        Err(e) => {
            let _ = conn.reply_error(&ControlError::Remote(e)).await;
            return;
        }
    };
    let id = body.id.clone().unwrap_or_else(local_job_id);
    if !is_safe_id(&id) {
        let e = ControlError::BadRequest(format!("run-job: job id {id:?} is not a safe name"));
        let _ = conn.reply_error(&e).await;
        return;
    }
    let work_dir = jobs_dir.join(&id);
    if let Err(e) = tokio::fs::create_dir_all(&work_dir).await {
        let msg = format!("cannot create {}: {e}", work_dir.display());
        let _ = conn.reply_error(&ControlError::Remote(msg)).await;
        return;
    }
    tracing::info!(job = %id, %device, peer = %req.peer.user, "run-job request");
    let reply = serde_json::json!({"job": id, "work_dir": work_dir});
    if conn.reply_ok(reply).await.is_err() {
        return;
    }
    let (rd, wr) = conn.stream.into_split();
    let cancel = CancellationToken::new();
    let log_file = work_dir.join("output.yaml");
    let marker_file = log_file.clone();
    let gone = cancel.clone();
    // The client not reading never slows the job (lines are dropped, then counted); the
    // client going away (EOF or error on its side) cancels the job.
    let stream = ReplyStream::start(
        wr,
        Box::new(move |_, n| StreamMsg::Log(dropped_log_line(n, &marker_file))),
        |_, _| true,
        move || gone.cancel(),
    );
    let lines = stream.lines();
    let log = JobLog::new(
        Some(&log_file),
        Some(Box::new(move |l: &str| {
            lines.send(StreamMsg::Log(l.to_string()))
        })),
    );
    let holder = format!("job {id}");
    let patience = body.wait_timeout();
    let job = JobRequest {
        id,
        definition: body.definition,
        device: setup.clone(),
        work_dir,
        log,
        cancel: cancel.clone(),
    };
    let waiting = cancel.clone();
    let notice = stream.control();
    // Ok: the job's report; Err: it did not start (Some: why, for the client).
    let runner = tokio::spawn(async move {
        let _hold = match (boards, setup.name) {
            (Some(b), Some(name)) => {
                let on_wait = Box::new(move |d: String| notice(StreamMsg::Waiting(d)));
                let hold = b.hold(holder, name.clone(), patience, on_wait);
                tokio::select! {
                    h = hold => match h {
                        Ok(h) => Some(h),
                        Err(e) => {
                            tracing::info!(%name, error = %e, "run-job: the board is not free");
                            return Err(Some(format!("board {name}: {e}")));
                        }
                    },
                    _ = waiting.cancelled() => return Err(None),
                }
            }
            _ => None,
        };
        Ok(run_job(&env, job).await)
    });
    let watcher = cancel_on_hangup(rd, cancel.clone());
    let last = match runner.await {
        Ok(Ok(report)) => Some(StreamMsg::End(JobEnd::from_report(&report))),
        Ok(Err(Some(why))) => Some(StreamMsg::Error(why)),
        // Canceled while waiting for the board: the client is gone.
        Ok(Err(None)) => None,
        Err(e) => {
            tracing::error!(error = %e, "run-job task failed");
            None
        }
    };
    stream.finish(last).await;
    watcher.abort();
}

/// A job id that can name a directory: letters, digits, `-`, `_`, `.`, not starting with `.`.
pub fn is_safe_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !id.starts_with('.')
}

/// Cancels `cancel` when the client of a run-job stream goes away (EOF or an error on its
/// side); abort the task once the run is over.
pub(crate) fn cancel_on_hangup(
    mut rd: tokio::net::unix::OwnedReadHalf,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut b = [0u8; 64];
        loop {
            match rd.read(&mut b).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        cancel.cancel();
    })
}

/// Writes one message of a run-job reply stream: a JSON line (single jobs and groups alike).
pub(crate) async fn write_msg<T: serde::Serialize>(
    wr: &mut tokio::net::unix::OwnedWriteHalf,
    msg: &T,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    line.push(b'\n');
    wr.write_all(&line).await
}

/// The client side: sends the job to the daemon at `socket`, calls `on_line` for every log
/// line, and returns how the job ended. Dropping the future closes the connection, which
/// cancels the job.
pub async fn run_remote(
    socket: &Path,
    req: &RunJobRequest,
    on_line: impl FnMut(&str),
) -> Result<(String, JobEnd), ControlError> {
    run_remote_with(socket, req, on_line, |_| {}).await
}

/// [`run_remote`], also calling `on_wait` when the job waits for its board.
pub async fn run_remote_with(
    socket: &Path,
    req: &RunJobRequest,
    mut on_line: impl FnMut(&str),
    mut on_wait: impl FnMut(&str),
) -> Result<(String, JobEnd), ControlError> {
    let (id, mut lines) = send_request(socket, req).await?;
    while let Some(l) = lines.next_line().await? {
        match serde_json::from_str::<StreamMsg>(&l) {
            Ok(StreamMsg::Waiting(s)) => on_wait(&s),
            Ok(StreamMsg::Log(s)) => on_line(&s),
            Ok(StreamMsg::End(end)) => return Ok((id, end)),
            Ok(StreamMsg::Error(e)) => return Err(ControlError::Remote(e)),
            Err(e) => return Err(ControlError::BadReply(format!("{e}: {l}"))),
        }
    }
    Err(ControlError::BadReply(
        "the daemon closed the connection before the job ended".into(),
    ))
}

/// The lines of a `run-job` stream after the daemon's reply.
pub type ReplyLines = tokio::io::Lines<BufReader<UnixStream>>;

/// Connects, sends a `run-job` request and reads the reply: the job id and the stream. An
/// error reply is [`ControlError::Remote`] with the daemon's message.
pub async fn send_request(
    socket: &Path,
    req: &RunJobRequest,
) -> Result<(String, ReplyLines), ControlError> {
    let mut stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ControlError::Connect {
            path: socket.to_path_buf(),
            source,
        })?;
    let mut body =
        serde_json::to_value(req).map_err(|e| ControlError::BadRequest(e.to_string()))?;
    if let serde_json::Value::Object(m) = &mut body {
        m.insert("request".into(), "run-job".into());
    }
    let mut line =
        serde_json::to_vec(&body).map_err(|e| ControlError::BadRequest(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).await?;
    let mut lines = BufReader::new(stream).lines();
    let first = lines
        .next_line()
        .await?
        .ok_or_else(|| ControlError::BadReply("the daemon closed the connection".into()))?;
    Ok((parse_reply_head(&first)?, lines))
}

/// The daemon's first reply line: the job id (empty for a group), or its error.
fn parse_reply_head(first: &str) -> Result<String, ControlError> {
    let v: serde_json::Value =
        serde_json::from_str(first).map_err(|e| ControlError::BadReply(e.to_string()))?;
    if v.get("ok").and_then(|o| o.as_bool()) != Some(true) {
        return Err(ControlError::Remote(
            v.get("error")
                .and_then(|e| e.as_str())
                .unwrap_or("unknown error")
                .to_string(),
        ));
    }
    Ok(v.get("job")
        .and_then(|j| j.as_str())
        .unwrap_or_default()
        .to_string())
}

/// Fuzz entry point for what `labd run-job` reads from the daemon: the first line (reply
/// head), then stream lines of a single job and of a group. Any bytes give a value or an
/// error; a parsed message serialises back.
pub fn fuzz_reply_stream(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.lines();
    if let Some(first) = lines.next() {
        let _ = parse_reply_head(first);
    }
    for l in lines {
        if let Ok(m) = serde_json::from_str::<StreamMsg>(l) {
            assert!(serde_json::to_string(&m).is_ok());
        }
        crate::multinode::group::service::fuzz_stream_line(l);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> String {
        let end = JobEnd {
            health: Health::Incomplete,
            error_type: "Job".into(),
            error_msg: "boot failed".into(),
        };
        let mut s = String::from("{\"ok\": true, \"job\": \"77\"}\n");
        for m in [
            StreamMsg::Waiting("b1 (job 76)".into()),
            StreamMsg::Log("- {dt: 2026-12-06T06:00:00.000000, lvl: info, msg: hi}".into()),
            StreamMsg::End(end),
        ] {
            s.push_str(&serde_json::to_string(&m).unwrap());
            s.push('\n');
        }
        s.push_str(r#"{"line": {"role": "server", "job": "10", "line": "x"}}"#);
        s.push('\n');
        s.push_str(r#"{"error": "no boards"}"#);
        s
    }

    #[test]
    fn reply_head_gives_the_id_or_the_daemons_error() {
        assert_eq!(
            parse_reply_head(r#"{"ok": true, "job": "77"}"#).unwrap(),
            "77"
        );
        match parse_reply_head(r#"{"ok": false, "error": "no device \"x\""}"#) {
            Err(ControlError::Remote(m)) => assert_eq!(m, "no device \"x\""),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_reply_head("{\"ok\": tru"),
            Err(ControlError::BadReply(_))
        ));
    }

    #[test]
    fn fuzz_entry_point_survives_seeds_and_their_cuts() {
        let s = stream();
        fuzz_reply_stream(s.as_bytes());
        for cut in 0..s.len() {
            fuzz_reply_stream(&s.as_bytes()[..cut]);
            fuzz_reply_stream(&s.as_bytes()[cut..]);
        }
        fuzz_reply_stream(&[0xff, b'\n', 0xfe, b'{']);
    }
}
