//! One job's log: a [`LogWriter`] shared by the pipeline and the console readers, writing each
//! LAVA log line to the job's file (on a dedicated thread, so the executor never waits for the
//! disk) and to a live sink (the terminal of `labd run-job`, the master upload, a control-socket
//! client).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::jobs::log::{Level, LogSink, LogValue, LogWriter};

/// Where a job's log lines go besides its file. Must never block.
pub type LineStream = Box<dyn FnMut(&str) + Send>;

/// The sinks of one job: the file thread and the live stream.
pub struct JobSinks {
    file: Option<std::sync::mpsc::Sender<FileMsg>>,
    stream: Option<LineStream>,
    /// Every `results` record, read back from its line (whoever wrote it).
    collected: Arc<Mutex<Vec<LogValue>>>,
}

enum FileMsg {
    Line(String),
    Flush(std::sync::mpsc::Sender<()>),
}

impl LogSink for JobSinks {
    fn write_line(&mut self, line: &str) {
        if line.contains("\"lvl\": \"results\"") {
            if let Ok(rec) = crate::jobs::log::parse_line(line) {
                self.collected
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(rec.msg);
            }
        }
        if let Some(tx) = &self.file {
            let _ = tx.send(FileMsg::Line(line.to_string()));
        }
        if let Some(s) = self.stream.as_mut() {
            s(line);
        }
    }
}

/// Appends lines to `path` until the channel closes; flushes whenever it runs dry.
fn file_writer(path: PathBuf, rx: std::sync::mpsc::Receiver<FileMsg>) {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path);
    let mut out = match file {
        Ok(f) => Some(std::io::BufWriter::new(f)),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot write the job log file");
            None
        }
    };
    let write = |msg: FileMsg, out: &mut Option<std::io::BufWriter<std::fs::File>>| match msg {
        FileMsg::Line(l) => {
            if let Some(o) = out.as_mut() {
                let _ = o.write_all(l.as_bytes());
                let _ = o.write_all(b"\n");
            }
        }
        FileMsg::Flush(done) => {
            if let Some(o) = out.as_mut() {
                let _ = o.flush();
            }
            let _ = done.send(());
        }
    };
    while let Ok(msg) = rx.recv() {
        write(msg, &mut out);
        while let Ok(more) = rx.try_recv() {
            write(more, &mut out);
        }
        if let Some(o) = out.as_mut() {
            let _ = o.flush();
        }
    }
}

/// A cheap, cloneable handle on one job's log. Every method writes one record at once (the
/// lock is never held across an await).
#[derive(Clone)]
pub struct JobLog {
    inner: Arc<Mutex<LogWriter<JobSinks>>>,
    /// Every `results` record, for the job's report.
    collected: Arc<Mutex<Vec<LogValue>>>,
    /// Every action started: (level, name, timeout seconds), for `description.yaml`.
    trail: Arc<Mutex<Vec<(String, String, u64)>>>,
}

impl std::fmt::Debug for JobLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobLog").finish_non_exhaustive()
    }
}

impl JobLog {
    /// A log written to `file` (appended; its directory must exist) and to `stream`.
    pub fn new(file: Option<&Path>, stream: Option<LineStream>) -> Self {
        let file = file.map(|p| {
            let (tx, rx) = std::sync::mpsc::channel();
            let path = p.to_path_buf();
            let spawned = std::thread::Builder::new()
                .name("labd-job-log".into())
                .spawn(move || file_writer(path, rx));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the job log writer thread");
            }
            tx
        });
        let collected: Arc<Mutex<Vec<LogValue>>> = Arc::default();
        let sinks = JobSinks {
            file,
            stream,
            collected: collected.clone(),
        };
        Self {
            inner: Arc::new(Mutex::new(LogWriter::new(sinks))),
            collected,
            trail: Arc::default(),
        }
    }

    /// A log that only streams (no file).
    pub fn stream_only(stream: LineStream) -> Self {
        Self::new(None, Some(stream))
    }

    /// Direct access to the writer for code that writes several records under one lock (the
    /// test-shell session).
    pub fn writer(&self) -> MutexGuard<'_, LogWriter<JobSinks>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn log(&self, lvl: Level, msg: impl Into<LogValue>) {
        self.writer().log(lvl, msg);
    }

    pub fn info(&self, msg: impl Into<LogValue>) {
        self.log(Level::Info, msg);
    }

    pub fn debug(&self, msg: impl Into<LogValue>) {
        self.log(Level::Debug, msg);
    }

    pub fn warning(&self, msg: impl Into<LogValue>) {
        self.log(Level::Warning, msg);
    }

    pub fn error(&self, msg: impl Into<LogValue>) {
        self.log(Level::Error, msg);
    }

    pub fn exception(&self, msg: impl Into<LogValue>) {
        self.log(Level::Exception, msg);
    }

    pub fn input(&self, msg: impl Into<LogValue>) {
        self.log(Level::Input, msg);
    }

    pub fn target(&self, msg: impl Into<LogValue>) {
        self.log(Level::Target, msg);
    }

    pub fn feedback(&self, msg: impl Into<LogValue>, namespace: &str) {
        self.writer().log_ns(Level::Feedback, msg, Some(namespace));
    }

    /// A `results` record (adds `starttc`/`endtc` from the markers of its case).
    pub fn results(&self, r: LogValue) {
        if let Err(e) = self.writer().results(r) {
            tracing::error!(error = %e, "malformed results record");
        }
    }

    /// The results records written so far.
    pub fn collected_results(&self) -> Vec<LogValue> {
        self.collected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Notes an action start for the job's description.
    pub fn note_action(&self, level: &str, name: &str, timeout_secs: u64) {
        self.trail.lock().unwrap_or_else(|p| p.into_inner()).push((
            level.to_string(),
            name.to_string(),
            timeout_secs,
        ));
    }

    /// `description.yaml`: the actions that ran, with their levels and timeouts.
    pub fn description(&self) -> String {
        let trail = self.trail.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut out = String::from("compatibility: 4\npipeline:\n");
        for (level, name, timeout) in trail {
            out.push_str(&format!(
                "- level: '{level}'\n  name: {name}\n  timeout: {timeout}\n"
            ));
        }
        out
    }

    pub fn line_count(&self) -> u64 {
        self.writer().line_count()
    }

    /// Waits (off the executor) until every line so far is in the file.
    pub async fn flush(&self) {
        let tx = self.writer().sink().file.clone();
        let Some(tx) = tx else { return };
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        if tx.send(FileMsg::Flush(done_tx)).is_err() {
            return;
        }
        let _ = tokio::task::spawn_blocking(move || {
            let _ = done_rx.recv_timeout(std::time::Duration::from_secs(10));
        })
        .await;
    }

    /// Stops streaming (the receiver of the live stream is going away); the file goes on.
    pub fn detach_stream(&self) {
        self.writer().sink_mut().stream = None;
    }
}
