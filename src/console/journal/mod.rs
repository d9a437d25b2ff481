//! The per-device console journal: every byte a board sent, every input with who sent it, and
//! labd's own markers, with wall-clock and monotonic timestamps, rotated by size.
//!
//! The hub encodes records into a shared buffer (cheap, never blocks on the disk); one writer
//! thread for all devices ([`pool`]) batches them to the files. Files: `<journal_dir>/<device>/console.log`,
//! rotated to `console.log.1` (newest) … `console.log.<keep_files>`.

pub mod format;
mod pool;
pub mod reader;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use format::{Record, RecordKind};

use super::config::JournalConfig;
use crate::ids::DeviceName;
use crate::metrics::Counter;
use pool::{Entry, Pool};

/// How long the writer thread lets records accumulate before writing them: one write per
/// device per 100 ms at most while a board trickles output (64 consoles stay cheap); a flush
/// request or 256 KiB waiting writes at once. A crash loses at most this much journal.
const BATCH_WINDOW: Duration = Duration::from_millis(100);
/// Write at once when this much is waiting.
const HIGH_WATER: usize = 256 << 10;
/// Memory kept for one device's retries while the disk refuses writes; beyond it (or beyond
/// [`RETRY_TOTAL`]) records are dropped, and a marker says how many bytes.
const RETRY_LIMIT: usize = 16 << 20;
/// Retry memory of all devices together.
const RETRY_TOTAL: usize = 64 << 20;
/// First pause before a refused write is tried again; it doubles up to [`RETRY_BACKOFF_MAX`].
const RETRY_BACKOFF: Duration = Duration::from_millis(200);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// The current journal file's name.
pub const FILE_NAME: &str = "console.log";

/// The directory holding a device's journal files.
pub fn device_dir(journal_dir: &Path, device: &DeviceName) -> PathBuf {
    journal_dir.join(device.as_str())
}

/// The files of a device's journal, oldest first, the current one last.
pub fn files(journal_dir: &Path, device: &DeviceName) -> Vec<PathBuf> {
    let dir = device_dir(journal_dir, device);
    let mut rotated: Vec<(u32, PathBuf)> = fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name.strip_prefix("console.log.")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut out: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    let current = dir.join(FILE_NAME);
    if current.exists() {
        out.push(current);
    }
    out
}

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    /// End offset in `buf` of each record, so rotation happens between records.
    ends: Vec<usize>,
    stop: bool,
    flush_requested: u64,
    flushed: u64,
    /// The writer has written everything after `stop` and forgotten this journal.
    done: bool,
}

impl State {
    /// Something the writer must not wait a batch window for.
    fn urgent(&self) -> bool {
        self.stop || self.flush_requested != self.flushed || self.buf.len() >= HIGH_WATER
    }
}

struct Shared {
    state: Mutex<State>,
    cond: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Handle to one device's journal. Dropping it writes what is pending (waiting for it).
pub struct Journal {
    shared: Arc<Shared>,
    pool: &'static Pool,
    path: PathBuf,
    /// Largest payload per record, so files rotate close to their size limit.
    max_record: usize,
}

impl Journal {
    /// Opens (appending) the journal of `device` under `journal_dir` and hands it to the
    /// writer thread.
    pub fn open(
        journal_dir: &Path,
        device: &DeviceName,
        cfg: &JournalConfig,
        bytes_written: Counter,
    ) -> io::Result<Self> {
        let dir = device_dir(journal_dir, device);
        fs::create_dir_all(&dir)?;
        let path = dir.join(FILE_NAME);
        let file = open_append(&path)?;
        let size = file.metadata()?.len();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
        });
        let writer = Writer {
            path: path.clone(),
            dir,
            file: Some(file),
            size,
            max_size: cfg.max_file_size.0.max(4096),
            keep: cfg.keep_files,
            retry: Vec::new(),
            retry_ends: Vec::new(),
            dropped: 0,
            retry_at: None,
            backoff: Duration::ZERO,
            bytes_written,
            device: device.clone(),
        };
        let pool = Pool::get()?;
        pool.add(Entry {
            shared: shared.clone(),
            writer,
        });
        Ok(Self {
            shared,
            pool,
            path,
            max_record: (cfg.max_file_size.0 / 4).clamp(256, 64 << 10) as usize,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn append(&self, kind: RecordKind, who: Option<&str>, data: &[u8]) {
        let (was_empty, high) = {
            let mut st = self.shared.lock();
            let was_empty = st.buf.is_empty();
            format::encode(&mut st.buf, kind, who, data);
            let end = st.buf.len();
            st.ends.push(end);
            (
                was_empty,
                end >= HIGH_WATER && end - data.len() < HIGH_WATER,
            )
        };
        if high {
            self.pool.wake(true);
        } else if was_empty {
            self.pool.appended();
        }
    }

    /// Board output.
    pub fn output(&self, data: &[u8]) {
        for piece in data.chunks(self.max_record) {
            self.append(RecordKind::Output, None, piece);
        }
    }

    /// Input sent to the board by `who`.
    pub fn input(&self, who: &str, data: &[u8]) {
        self.append(RecordKind::Input, Some(who), data);
    }

    /// A BREAK sent by `who`.
    pub fn brk(&self, who: &str) {
        self.append(RecordKind::Break, Some(who), b"");
    }

    /// A labd event ("console lost: …", "console back after 3.2 s").
    pub fn marker(&self, text: &str) {
        self.append(RecordKind::Marker, None, text.as_bytes());
    }

    /// Blocks until everything appended so far is written to the file. Call it from a
    /// blocking context (a thread or `spawn_blocking`).
    pub fn flush_blocking(&self) {
        self.flusher().flush_blocking();
    }

    /// A cheap cloneable flusher, for awaiting a flush from async code.
    pub fn flusher(&self) -> Flusher {
        Flusher(self.shared.clone(), self.pool)
    }
}

/// Requests and waits for a journal flush (see [`Journal::flush_blocking`]).
#[derive(Clone)]
pub struct Flusher(Arc<Shared>, &'static Pool);

impl Flusher {
    pub fn flush_blocking(&self) {
        let want = {
            let mut st = self.0.lock();
            st.flush_requested += 1;
            st.flush_requested
        };
        self.1.wake(true);
        wait_for(&self.0, self.1, |st| st.flushed >= want || st.done);
    }
}

/// Waits on a journal's condition until `ready` holds or the writer thread is gone.
fn wait_for(shared: &Shared, pool: &Pool, ready: impl Fn(&State) -> bool) {
    let mut st = shared.lock();
    while !ready(&st) && !pool.is_dead() {
        st = shared
            .cond
            .wait_timeout(st, Duration::from_secs(1))
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.pool.wake(true);
        wait_for(&self.shared, self.pool, |st| st.done);
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

struct Writer {
    dir: PathBuf,
    /// `dir/console.log`.
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max_size: u64,
    keep: u32,
    /// Records the disk refused (oldest first), retried before new ones; `retry_ends` are their
    /// end offsets, so a retry still rotates between records.
    retry: Vec<u8>,
    retry_ends: Vec<usize>,
    /// Bytes dropped since the last successful write (the retry memory was full).
    dropped: u64,
    /// The disk refused the last write: no new attempt before this (unless stopping or a
    /// flush asks), so a failing disk costs one failed write per device per back-off.
    retry_at: Option<Instant>,
    backoff: Duration,
    bytes_written: Counter,
    device: DeviceName,
}

/// What one pass of the writer thread did for a journal.
pub(super) struct Pass {
    /// There were new records.
    pub wrote: bool,
    /// Stopped and finished: the thread forgets this journal.
    pub done: bool,
    /// Refused data waits for a retry at this time.
    pub retry_at: Option<Instant>,
}

/// The retry memory of all journals together (the writer thread owns it): a full disk under
/// 64 streaming consoles must not hold 64 × [`RETRY_LIMIT`].
pub(super) struct RetryBudget {
    used: usize,
    limit: usize,
}

impl RetryBudget {
    pub(super) fn new(limit: usize) -> Self {
        Self { used: 0, limit }
    }

    fn take(&mut self, n: usize) -> bool {
        if self.used + n > self.limit {
            return false;
        }
        self.used += n;
        true
    }

    fn release(&mut self, n: usize) {
        self.used = self.used.saturating_sub(n);
    }
}

impl Writer {
    /// Writes what `shared` holds (or keeps it for a retry while backing off).
    fn write_pending(&mut self, shared: &Shared, budget: &mut RetryBudget) -> Pass {
        let (buf, ends, flush_seq, flushed, stop) = {
            let mut st = shared.lock();
            (
                std::mem::take(&mut st.buf),
                std::mem::take(&mut st.ends),
                st.flush_requested,
                st.flushed,
                st.stop,
            )
        };
        let wrote = !buf.is_empty();
        // A flush or a stop tries at once; otherwise a refused disk is retried after its
        // back-off only.
        let due = stop || flush_seq > flushed || self.retry_at.is_none_or(|t| Instant::now() >= t);
        let behind = !self.retry.is_empty() || self.dropped > 0;
        if due && (wrote || behind) {
            self.write_records(&buf, &ends, budget);
        } else if wrote {
            self.keep_for_retry(&buf, &ends, 0, budget);
        }
        let mut st = shared.lock();
        let mut done = false;
        if stop && st.buf.is_empty() {
            if !self.retry.is_empty() || self.dropped > 0 {
                // Tried once more above; the disk still refuses and nobody will ask again.
                let lost = self.retry.len() as u64 + self.dropped;
                tracing::error!(device = %self.device, path = %self.path.display(), lost_bytes = lost,
                    "console journal stopped while the disk refused writes: {lost} bytes are lost");
                budget.release(self.retry.len());
                self.retry = Vec::new();
                self.retry_ends = Vec::new();
                self.dropped = 0;
            }
            st.done = true;
            done = true;
        }
        if flush_seq > st.flushed || done {
            st.flushed = st.flushed.max(flush_seq);
            shared.cond.notify_all();
        }
        let waiting = !self.retry.is_empty() || self.dropped > 0;
        Pass {
            wrote,
            done,
            retry_at: if waiting { self.retry_at } else { None },
        }
    }

    /// Writes the refused records, then a loss marker if any were dropped, then `buf`; stops at
    /// the first refusal and keeps the rest for a retry.
    fn write_records(&mut self, buf: &[u8], ends: &[usize], budget: &mut RetryBudget) {
        if !self.retry.is_empty() {
            let mut retry = std::mem::take(&mut self.retry);
            let retry_ends = std::mem::take(&mut self.retry_ends);
            budget.release(retry.len());
            if let Err(at) = self.write_batch(&retry, &retry_ends) {
                // What was kept stays kept (it is older than anything dropped since).
                budget.used += retry.len() - at;
                retry.drain(..at);
                self.retry = retry;
                self.retry_ends = retry_ends
                    .iter()
                    .filter(|&&e| e > at)
                    .map(|e| e - at)
                    .collect();
                self.keep_for_retry(buf, ends, 0, budget);
                return;
            }
        }
        if self.dropped > 0 {
            let mut note = Vec::new();
            let text = format!(
                "journal dropped {} bytes while the disk refused writes",
                self.dropped
            );
            format::encode(&mut note, RecordKind::Marker, None, text.as_bytes());
            if self.write_raw(&note).is_err() {
                self.keep_for_retry(buf, ends, 0, budget);
                return;
            }
            tracing::warn!(device = %self.device, lost_bytes = self.dropped,
                "console journal writable again; {} bytes were dropped", self.dropped);
            self.dropped = 0;
        }
        if let Err(at) = self.write_batch(buf, ends) {
            self.keep_for_retry(buf, ends, at, budget);
        }
    }

    /// Writes whole records, rotating between them; on a refusal, the offset of the first
    /// record not written.
    fn write_batch(&mut self, buf: &[u8], ends: &[usize]) -> Result<(), usize> {
        let mut start = 0;
        let mut prev_end = 0;
        for &end in ends {
            // Rotate between records once the file would exceed its limit; a single record
            // larger than the limit still goes whole into a fresh file.
            if self.size + (end - start) as u64 > self.max_size {
                if prev_end > start {
                    self.write_raw(&buf[start..prev_end]).map_err(|_| start)?;
                    start = prev_end;
                }
                if self.size > 0 {
                    self.rotate();
                }
            }
            prev_end = end;
        }
        let chunk = &buf[start..];
        if !chunk.is_empty() {
            self.write_raw(chunk).map_err(|_| start)?;
        }
        Ok(())
    }

    /// Keeps the records of `buf` from offset `from` (a record boundary) for a retry, as far
    /// as this journal's and the shared retry memory allow; the rest is counted as dropped.
    fn keep_for_retry(
        &mut self,
        buf: &[u8],
        ends: &[usize],
        from: usize,
        budget: &mut RetryBudget,
    ) {
        let mut start = from;
        for &end in ends.iter().filter(|&&e| e > from) {
            let n = end - start;
            let fits = self.dropped == 0 && self.retry.len() + n <= RETRY_LIMIT;
            if fits && budget.take(n) {
                self.retry.extend_from_slice(&buf[start..end]);
                self.retry_ends.push(self.retry.len());
            } else {
                if self.dropped == 0 {
                    tracing::warn!(device = %self.device,
                        "console journal retry memory full; dropping records until the disk takes writes");
                }
                // Once dropping, keep dropping: the marker then stands where the gap is.
                self.dropped += n as u64;
            }
            start = end;
        }
    }

    fn write_raw(&mut self, data: &[u8]) -> io::Result<()> {
        let result = (|| {
            if self.file.is_none() {
                fs::create_dir_all(&self.dir)?;
                let f = open_append(&self.path)?;
                self.size = f.metadata()?.len();
                self.file = Some(f);
            }
            match self.file.as_mut() {
                Some(f) => f.write_all(data),
                None => Ok(()),
            }
        })();
        match &result {
            Ok(()) => {
                if self.retry_at.take().is_some() {
                    tracing::info!(device = %self.device, "console journal writable again");
                }
                self.backoff = Duration::ZERO;
                self.size += data.len() as u64;
                self.bytes_written.inc_by(data.len() as u64);
            }
            Err(e) => {
                if self.retry_at.is_none() {
                    tracing::error!(device = %self.device, path = %self.path.display(), error = %e,
                        "cannot write the console journal; keeping the data for a retry");
                }
                // A partial write would leave half a record: cut the file back.
                if let Some(f) = self.file.take() {
                    let _ = f.set_len(self.size);
                }
                self.backoff = (self.backoff * 2).clamp(RETRY_BACKOFF, RETRY_BACKOFF_MAX);
                self.retry_at = Some(Instant::now() + self.backoff);
            }
        }
        result
    }

    fn rotate(&mut self) {
        self.file = None;
        let name = |n: u32| self.dir.join(format!("{FILE_NAME}.{n}"));
        if self.keep == 0 {
            let _ = fs::remove_file(self.dir.join(FILE_NAME));
        } else {
            let _ = fs::remove_file(name(self.keep));
            for n in (1..self.keep).rev() {
                let _ = fs::rename(name(n), name(n + 1));
            }
            if let Err(e) = fs::rename(self.dir.join(FILE_NAME), name(1)) {
                tracing::error!(device = %self.device, error = %e, "cannot rotate the console journal");
            }
        }
        self.size = 0;
    }
}

#[cfg(test)]
mod tests;
