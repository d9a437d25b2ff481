//! A double of lava-server 2023.01's worker HTTP API (`/scheduler/internal/v1/...`) for labd's
//! master-link tests. It answers as the real server does (bodies, status codes, error texts,
//! the version-mismatch and cancel rules, the log `index`/`line_count` semantics) and checks
//! every request against what the real lava-worker/lava-run send (headers, form field order,
//! python-requests encoding, batch sizes, indexes). Every request is recorded; every deviation
//! is a *violation* that tests assert to be empty.
//!
//! Fault injection: [`MasterDouble::set_down`] stops listening (connections refused, as for a
//! master that is down) and [`MasterDouble::fail_next`] answers the next requests with an error
//! status (a 5xx from a loaded server or a proxy), [`MasterDouble::fail_for`] does so for a
//! while, and [`MasterDouble::hang`] reads requests and never answers them.

mod events;
mod http;
mod server;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use http::{RawRequest, form_decode, py_json_str, py_urlencode};

/// TestJob.state values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Scheduled,
    Running,
    Canceling,
    Finished,
}

/// TestJob.health values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobHealth {
    Unknown,
    Complete,
    Incomplete,
    Canceled,
}

/// A job as the double holds it.
#[derive(Debug, Clone)]
pub struct DoubleJob {
    pub id: u64,
    pub worker: String,
    pub token: String,
    pub definition: String,
    pub device: String,
    pub state: JobState,
    pub health: JobHealth,
    /// Stored log lines, each exactly as received after the `- ` (one record per entry).
    pub lines: Vec<String>,
    /// The FINISHED form fields, in the order received.
    pub finish: Option<Vec<(String, String)>>,
    pub running_posts: usize,
    pub finished_posts: usize,
    /// `(index, records in the POST, line_count answered)` for each log POST.
    pub log_posts: Vec<(u64, usize, usize)>,
    /// Records that arrived again (index below the stored count) and were skipped.
    pub skipped_resends: usize,
}

/// A worker as the double holds it.
#[derive(Debug, Clone)]
pub struct DoubleWorker {
    pub name: String,
    pub token: String,
    pub online: bool,
    pub version: Option<String>,
    pub pings: usize,
}

/// One request as recorded.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub at: Instant,
    pub request: RawRequest,
    /// Decoded form fields of a POST, in order.
    pub fields: Vec<(String, String)>,
    pub status: u16,
    pub response: String,
}

#[derive(Default)]
pub(crate) struct State {
    pub version: String,
    pub workers: BTreeMap<String, DoubleWorker>,
    pub jobs: BTreeMap<u64, DoubleJob>,
    pub next_job: u64,
    pub requests: Vec<Recorded>,
    pub violations: Vec<String>,
    /// Injected failures: (remaining, status, path prefix filter).
    pub failures: Vec<(usize, u16, String)>,
    /// Injected failures by time: (until, status, path prefix filter).
    pub failures_until: Vec<(Instant, u16, String)>,
    /// Path prefixes whose requests are read and never answered (the connection stays open).
    pub hang: Vec<String>,
    pub down: bool,
    /// lava-publisher's feed: every message sent to connected `/ws/` clients.
    pub events: Option<tokio::sync::broadcast::Sender<String>>,
    /// The `/ws/` upgrade requests received.
    pub ws_connections: Vec<RawRequest>,
    /// How the next `/ws/` connections misbehave.
    pub ws_fault: WsFault,
}

/// Ways the event feed can fail, as networks and servers do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WsFault {
    #[default]
    None,
    /// Half-open: the handshake completes, then nothing is read or sent (pings unanswered, as
    /// after a master reboot or a NAT timeout) and the socket stays open.
    Silent,
    /// The connection is dropped (no close frame) right after this many event frames were
    /// sent on it (`submit` sends two: Submitted, then Scheduled naming the worker).
    CloseAfterEvents(usize),
}

/// The running double. Dropping it stops the server.
pub struct MasterDouble {
    state: Arc<Mutex<State>>,
    port: u16,
    control: tokio::sync::watch::Sender<Control>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    Up,
    Down,
    Stop,
}

impl MasterDouble {
    /// Starts a double of a lava-server whose version is `2023.01`.
    pub fn start() -> Self {
        Self::with_version("2023.01")
    }

    /// Starts a double whose server version is `version` (pings with another one get 409).
    pub fn with_version(version: &str) -> Self {
        let (events, _) = tokio::sync::broadcast::channel(256);
        let state = Arc::new(Mutex::new(State {
            version: version.to_string(),
            next_job: 1,
            events: Some(events),
            ..Default::default()
        }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the master double");
        let port = listener.local_addr().expect("local_addr").port();
        let (control, control_rx) = tokio::sync::watch::channel(Control::Up);
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("lava-master-double".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime for the master double");
                rt.block_on(server::serve(listener, port, st, control_rx));
            })
            .expect("spawn the master double");
        Self {
            state,
            port,
            control,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The base URL to give labd, with a trailing slash as admins usually write it.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a worker (as `lava-server manage workers add` does) with a known token.
    pub fn add_worker(&self, name: &str, token: &str) {
        self.lock().workers.insert(
            name.to_string(),
            DoubleWorker {
                name: name.to_string(),
                token: token.to_string(),
                online: false,
                version: None,
                pings: 0,
            },
        );
    }

    pub fn worker(&self, name: &str) -> Option<DoubleWorker> {
        self.lock().workers.get(name).cloned()
    }

    /// Submits a job already scheduled on `worker`'s device; returns its id.
    pub fn submit(&self, worker: &str, definition: &str, device: &str) -> u64 {
        let mut st = self.lock();
        let id = st.next_job;
        st.next_job += 1;
        let token = server::random_token();
        st.jobs.insert(
            id,
            DoubleJob {
                id,
                worker: worker.to_string(),
                token,
                definition: definition.to_string(),
                device: device.to_string(),
                state: JobState::Scheduled,
                health: JobHealth::Unknown,
                lines: Vec::new(),
                finish: None,
                running_posts: 0,
                finished_posts: 0,
                log_posts: Vec::new(),
                skipped_resends: 0,
            },
        );
        events::publish_job(&st, id, "Submitted", false);
        events::publish_job(&st, id, "Scheduled", true);
        id
    }

    /// Cancels a job (REST `GET /api/v0.2/jobs/<id>/cancel/`): Scheduled jobs end at once,
    /// Running ones go Canceling until the worker reports FINISHED.
    pub fn cancel(&self, id: u64) {
        let mut st = self.lock();
        if let Some(j) = st.jobs.get_mut(&id) {
            match j.state {
                JobState::Scheduled => {
                    j.state = JobState::Finished;
                    j.health = JobHealth::Canceled;
                }
                JobState::Running => j.state = JobState::Canceling,
                _ => return,
            }
            let state = if j.state == JobState::Canceling {
                "Canceling"
            } else {
                "Finished"
            };
            events::publish_job(&st, id, state, true);
        }
    }

    /// Deletes a job from the server (as an admin would): every later call about it gets 404.
    pub fn forget_job(&self, id: u64) {
        self.lock().jobs.remove(&id);
    }

    /// Makes the `/ws/` connections accepted from now on misbehave.
    pub fn set_ws_fault(&self, fault: WsFault) {
        self.lock().ws_fault = fault;
    }

    /// The `/ws/` (event feed) connections received so far.
    pub fn ws_connections(&self) -> Vec<RawRequest> {
        self.lock().ws_connections.clone()
    }

    pub fn job(&self, id: u64) -> Option<DoubleJob> {
        self.lock().jobs.get(&id).cloned()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Every deviation from what lava-worker/lava-run send.
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    /// Answers the next `count` requests whose path starts with `path_prefix` with `status`.
    pub fn fail_next(&self, count: usize, status: u16, path_prefix: &str) {
        self.lock()
            .failures
            .push((count, status, path_prefix.to_string()));
    }

    /// Answers every request whose path starts with `path_prefix` with `status` for `duration`
    /// (a server failing for a while: a database migration, an overloaded proxy).
    pub fn fail_for(&self, duration: Duration, status: u16, path_prefix: &str) {
        self.lock().failures_until.push((
            Instant::now() + duration,
            status,
            path_prefix.to_string(),
        ));
    }

    /// Reads the requests whose path starts with `path_prefix` and never answers them, keeping
    /// the connection open (a wedged server or proxy). The requests are recorded with status 0.
    pub fn hang(&self, path_prefix: &str) {
        self.lock().hang.push(path_prefix.to_string());
    }

    /// Takes the master down (connections refused) or brings it back on the same port.
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
        let _ = self
            .control
            .send(if down { Control::Down } else { Control::Up });
        // Let the server thread act before the caller goes on.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let reachable = std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok();
            if reachable != down {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "the master double did not go {}",
            if down { "down" } else { "up" }
        );
    }

    /// Polls `pred` on the double's state until it holds or `timeout` passes.
    pub fn wait_for(&self, timeout: Duration, what: &str, mut pred: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + timeout;
        while !pred(self) {
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; requests so far:\n{}",
                    self.summary()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One line per request: `METHOD path?query -> status`.
    pub fn summary(&self) -> String {
        self.lock()
            .requests
            .iter()
            .map(|r| {
                format!(
                    "{} {}{} -> {}\n",
                    r.request.method,
                    r.request.path,
                    r.request
                        .query
                        .as_ref()
                        .map(|q| format!("?{q}"))
                        .unwrap_or_default(),
                    r.status
                )
            })
            .collect()
    }
}

impl Drop for MasterDouble {
    fn drop(&mut self) {
        let _ = self.control.send(Control::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
