//! Log lines as lava-coordinator writes them: Python logging's
//! `%(asctime)-15s %(levelname)7s %(message)s` in local time (Python's default converter), e.g.
//! `2024-05-01 10:00:00,123    INFO Ready to accept new connections`, to stdout (`-`) or to a
//! file that is reopened when logrotate moves it (Python's `WatchedFileHandler`).
//!
//! Lines go to a bounded in-memory buffer that a writer thread writes out every 20 ms, so a
//! slow disk never holds the state lock and logging costs no wake-up per line; if the buffer
//! is full (8 MiB), lines are dropped and counted, and the count is logged later.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tracing::{Event, Level, Subscriber};

/// lava-coordinator's `--loglevel` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum LogLevel {
    Debug,
    Error,
    Info,
    Warn,
}

impl LogLevel {
    pub fn level(self) -> Level {
        match self {
            LogLevel::Debug => Level::DEBUG,
            LogLevel::Error => Level::ERROR,
            LogLevel::Info => Level::INFO,
            LogLevel::Warn => Level::WARN,
        }
    }
}

/// Python's level names, right-aligned to 7 columns by the caller.
fn level_name(l: &Level) -> &'static str {
    match *l {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        _ => "DEBUG",
    }
}

/// Formats one line the way lava-coordinator's logging does.
pub fn format_line<Tz: chrono::TimeZone>(
    now: chrono::DateTime<Tz>,
    level: &Level,
    message: &str,
) -> String {
    use chrono::{Datelike, Timelike};
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02},{:03} {:>7} {}\n",
        now.year(),
        now.month(),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.timestamp_subsec_millis().min(999),
        level_name(level),
        message
    )
}

/// The `tracing` layer: each event becomes one line, formatted here and queued to the
/// writer thread (no per-character escaping, one allocation).
pub struct LavaLayer {
    sink: LogSink,
}

impl LavaLayer {
    pub fn new(sink: LogSink) -> Self {
        LavaLayer { sink }
    }
}

/// Collects an event's `message` (and any other fields as ` key=value`).
struct Message<'a>(&'a mut String);

impl tracing::field::Visit for Message<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={:?}", field.name(), value);
        }
    }
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for LavaLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: tracing_subscriber::layer::Context<'_, S>) {
        let mut msg = String::with_capacity(160);
        event.record(&mut Message(&mut msg));
        let line = format_line(chrono::Local::now(), event.metadata().level(), &msg);
        self.sink.send(line.into_bytes());
    }
}

/// How long a line may wait in memory before it is written.
const FLUSH_INTERVAL: Duration = Duration::from_millis(20);
/// Wake the writer early once this much is buffered.
const WAKE_AT: usize = 64 << 10;
/// Beyond this, lines are dropped (and counted) instead of buffered.
const MAX_BUFFER: usize = 8 << 20;

/// Where log lines go: stdout or a watched file. Producers append to a buffer under a mutex
/// (no wake-up per line); a writer thread writes it out every 20 ms or every 64 KiB.
#[derive(Clone)]
pub struct LogSink {
    inner: Arc<SinkInner>,
}

struct SinkInner {
    buf: Mutex<Vec<u8>>,
    wake: Condvar,
    dropped: AtomicU64,
    out: Mutex<Output>,
}

impl LogSink {
    /// `-` is stdout; anything else a file opened in append mode (created if missing).
    pub fn open(target: &str) -> io::Result<LogSink> {
        let out = if target == "-" {
            Output::Stdout
        } else {
            let path = PathBuf::from(target);
            let file = open_append(&path)?;
            Output::File { path, file }
        };
        let inner = Arc::new(SinkInner {
            buf: Mutex::new(Vec::with_capacity(WAKE_AT)),
            wake: Condvar::new(),
            dropped: AtomicU64::new(0),
            out: Mutex::new(out),
        });
        let worker = inner.clone();
        std::thread::Builder::new()
            .name("coordinator-log".into())
            .spawn(move || writer_thread(&worker))?;
        Ok(LogSink { inner })
    }

    /// Queues one line; if the writer is far behind, drops it and counts it.
    pub fn send(&self, line: Vec<u8>) {
        let mut buf = self.inner.buf.lock().unwrap_or_else(|p| p.into_inner());
        if buf.len() + line.len() > MAX_BUFFER {
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        buf.extend_from_slice(&line);
        if buf.len() >= WAKE_AT {
            self.inner.wake.notify_one();
        }
    }

    /// Writes out everything queued so far (at exit).
    pub fn flush(&self) {
        self.inner.write_pending();
    }
}

enum Output {
    Stdout,
    File { path: PathBuf, file: File },
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl SinkInner {
    fn write_pending(&self) {
        let mut batch = {
            let mut buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *buf, Vec::with_capacity(WAKE_AT))
        };
        let lost = self.dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let line = format_line(
                chrono::Local::now(),
                &Level::WARN,
                &format!("{lost} log lines dropped: the log output was too slow"),
            );
            batch.extend_from_slice(line.as_bytes());
        }
        if batch.is_empty() {
            return;
        }
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = match &mut *out {
            Output::Stdout => {
                let mut s = io::stdout().lock();
                s.write_all(&batch).and_then(|_| s.flush())
            }
            Output::File { path, file } => {
                // WatchedFileHandler: reopen when the path no longer names the open file.
                let moved = match (std::fs::metadata(&*path), file.metadata()) {
                    (Ok(a), Ok(b)) => a.dev() != b.dev() || a.ino() != b.ino(),
                    _ => true,
                };
                if moved && let Ok(f) = open_append(path) {
                    *file = f;
                }
                file.write_all(&batch)
            }
        };
    }
}

fn writer_thread(inner: &SinkInner) {
    loop {
        {
            let buf = inner.buf.lock().unwrap_or_else(|p| p.into_inner());
            if buf.len() < WAKE_AT {
                let _ = inner.wake.wait_timeout(buf, FLUSH_INTERVAL);
            }
        }
        inner.write_pending();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn lines_look_like_python_logging() {
        let t = chrono::Utc
            .with_ymd_and_hms(2024, 5, 1, 10, 0, 0)
            .unwrap()
            .checked_add_signed(chrono::TimeDelta::milliseconds(7))
            .unwrap();
        assert_eq!(
            format_line(t, &Level::INFO, "Ready to accept new connections"),
            "2024-05-01 10:00:00,007    INFO Ready to accept new connections\n"
        );
        assert_eq!(
            format_line(t, &Level::WARN, "Invalid message:  from 127.0.0.1"),
            "2024-05-01 10:00:00,007 WARNING Invalid message:  from 127.0.0.1\n"
        );
    }
}
