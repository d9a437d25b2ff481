//! Log lines as lava-coordinator writes them: Python logging's
//! `%(asctime)-15s %(levelname)7s %(message)s` with UTC time, e.g.
//! `2024-05-01 10:00:00,123    INFO Ready to accept new connections`, to stdout (`-`) or to a
//! file that is reopened when logrotate moves it (Python's `WatchedFileHandler`).
//!
//! Lines go through a bounded queue to a writer thread, so a slow disk never holds the state
//! lock; if the queue is full, lines are dropped and counted, and the count is logged later.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

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
pub fn format_line(now: chrono::DateTime<chrono::Utc>, level: &Level, message: &str) -> String {
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

/// The `tracing` event formatter.
pub struct LavaFormat;

impl<S, N> FormatEvent<S, N> for LavaFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut msg = String::new();
        ctx.format_fields(Writer::new(&mut msg), event)?;
        writer.write_str(&format_line(
            chrono::Utc::now(),
            event.metadata().level(),
            &msg,
        ))
    }
}

/// Where log lines go: stdout or a watched file, through a writer thread.
#[derive(Clone)]
pub struct LogSink {
    tx: SyncSender<Vec<u8>>,
    dropped: Arc<AtomicU64>,
}

impl LogSink {
    /// `-` is stdout; anything else a file opened in append mode (created if missing).
    pub fn open(target: &str) -> io::Result<LogSink> {
        let mut out = if target == "-" {
            Output::Stdout
        } else {
            let path = PathBuf::from(target);
            let file = open_append(&path)?;
            Output::File { path, file }
        };
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(65536);
        let dropped = Arc::new(AtomicU64::new(0));
        let seen = dropped.clone();
        std::thread::Builder::new()
            .name("coordinator-log".into())
            .spawn(move || writer_thread(&mut out, rx, &seen))?;
        Ok(LogSink { tx, dropped })
    }
}

enum Output {
    Stdout,
    File { path: PathBuf, file: File },
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn writer_thread(out: &mut Output, rx: Receiver<Vec<u8>>, dropped: &AtomicU64) {
    while let Ok(first) = rx.recv() {
        if let Output::File { path, file } = out {
            // WatchedFileHandler: reopen when the path no longer names the open file.
            let moved = match (std::fs::metadata(&*path), file.metadata()) {
                (Ok(a), Ok(b)) => a.dev() != b.dev() || a.ino() != b.ino(),
                _ => true,
            };
            if moved && let Ok(f) = open_append(path) {
                *file = f;
            }
        }
        let mut batch = first;
        while let Ok(more) = rx.try_recv() {
            batch.extend_from_slice(&more);
            if batch.len() > 1 << 16 {
                break;
            }
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let line = format_line(
                chrono::Utc::now(),
                &Level::WARN,
                &format!("{lost} log lines dropped: the log output was too slow"),
            );
            batch.extend_from_slice(line.as_bytes());
        }
        let _ = match out {
            Output::Stdout => {
                let mut s = io::stdout().lock();
                s.write_all(&batch).and_then(|_| s.flush())
            }
            Output::File { file, .. } => file.write_all(&batch),
        };
    }
}

/// One event's bytes, queued on drop.
pub struct LineWriter {
    buf: Vec<u8>,
    sink: LogSink,
}

impl Write for LineWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let buf = std::mem::take(&mut self.buf);
        if let Err(TrySendError::Full(_)) = self.sink.tx.try_send(buf) {
            self.sink.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            buf: Vec::with_capacity(128),
            sink: self.clone(),
        }
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
