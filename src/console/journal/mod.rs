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
use std::time::Duration;

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
/// Memory kept for retries while the disk refuses writes; beyond it data is dropped, and a
/// marker says how much.
const RETRY_LIMIT: usize = 64 << 20;
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
            dropped: 0,
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
    /// Records the disk refused, retried before new ones.
    retry: Vec<u8>,
    dropped: u64,
    bytes_written: Counter,
    device: DeviceName,
}

impl Writer {
    /// Writes what `shared` holds. Returns whether there was anything, and whether the journal
    /// is finished (stopped and fully written) so the writer thread can forget it.
    fn write_pending(&mut self, shared: &Shared) -> (bool, bool) {
        let (buf, ends, flush_seq, stop) = {
            let mut st = shared.lock();
            (
                std::mem::take(&mut st.buf),
                std::mem::take(&mut st.ends),
                st.flush_requested,
                st.stop,
            )
        };
        let wrote = !buf.is_empty();
        if wrote {
            self.write_records(&buf, &ends);
        }
        let mut st = shared.lock();
        let mut done = false;
        if stop && st.buf.is_empty() {
            st.done = true;
            done = true;
        }
        if flush_seq > st.flushed || done {
            st.flushed = st.flushed.max(flush_seq);
            shared.cond.notify_all();
        }
        (wrote, done)
    }

    fn write_records(&mut self, buf: &[u8], ends: &[usize]) {
        if !self.retry.is_empty() {
            let retry = std::mem::take(&mut self.retry);
            if self.write_raw(&retry).is_err() {
                self.keep_for_retry(&retry);
                self.keep_for_retry(buf);
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
            if self.write_raw(&note).is_ok() {
                self.dropped = 0;
            }
        }
        let mut start = 0;
        let mut prev_end = 0;
        for &end in ends {
            // Rotate between records once the file would exceed its limit; a single record
            // larger than the limit still goes whole into a fresh file.
            if self.size + (end - start) as u64 > self.max_size {
                if prev_end > start {
                    if self.write_raw(&buf[start..prev_end]).is_err() {
                        self.keep_for_retry(&buf[start..]);
                        return;
                    }
                    start = prev_end;
                }
                if self.size > 0 {
                    self.rotate();
                }
            }
            prev_end = end;
        }
        let chunk = &buf[start..];
        if !chunk.is_empty() && self.write_raw(chunk).is_err() {
            self.keep_for_retry(chunk);
        }
    }

    fn keep_for_retry(&mut self, data: &[u8]) {
        if self.retry.len() + data.len() > RETRY_LIMIT {
            self.dropped += data.len() as u64;
        } else {
            self.retry.extend_from_slice(data);
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
                self.size += data.len() as u64;
                self.bytes_written.inc_by(data.len() as u64);
            }
            Err(e) => {
                tracing::error!(device = %self.device, path = %self.path.display(), error = %e,
                    "cannot write the console journal; keeping the data for a retry");
                self.file = None;
                std::thread::sleep(Duration::from_millis(200));
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
mod tests {
    use super::*;
    use crate::inventory::ByteSize;

    fn dev() -> DeviceName {
        DeviceName::new("b1").unwrap()
    }

    #[test]
    fn writes_and_reads_back_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(
            dir.path(),
            &dev(),
            &JournalConfig::default(),
            Counter::default(),
        )
        .unwrap();
        j.output(b"hello\xff");
        j.input("op:alice", b"ls\r");
        j.marker("console lost");
        j.flush_blocking();
        let data = fs::read(j.path()).unwrap();
        let (recs, used) = format::decode_all(&data);
        assert_eq!(used, data.len());
        let kinds: Vec<_> = recs.iter().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            [RecordKind::Output, RecordKind::Input, RecordKind::Marker]
        );
        assert_eq!(recs[0].data, b"hello\xff");
    }

    #[test]
    fn rotates_between_records_and_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = JournalConfig {
            max_file_size: ByteSize(4096),
            keep_files: 2,
        };
        let j = Journal::open(dir.path(), &dev(), &cfg, Counter::default()).unwrap();
        let mut expect = Vec::new();
        for i in 0..200u32 {
            let line = format!("line {i:05} {}\n", "x".repeat(50));
            j.output(line.as_bytes());
            expect.extend_from_slice(line.as_bytes());
        }
        drop(j);
        let files = files(dir.path(), &dev());
        assert_eq!(files.len(), 3, "{files:?}");
        let mut got = Vec::new();
        for f in &files {
            let data = fs::read(f).unwrap();
            assert!(
                data.len() as u64 <= 4096,
                "{} is {} bytes",
                f.display(),
                data.len()
            );
            let (recs, used) = format::decode_all(&data);
            assert_eq!(used, data.len(), "{} ends mid-record", f.display());
            for r in recs {
                got.extend_from_slice(&r.data);
            }
        }
        // The oldest files were deleted; what is kept is the exact tail.
        assert!(
            expect.ends_with(&got),
            "kept data is not the tail of what was written"
        );
        assert!(got.len() > 4096);
    }
}

#[cfg(test)]
mod batch_tests {
    use super::*;

    #[test]
    fn writes_without_a_flush_within_the_batch_window() {
        let dir = tempfile::tempdir().unwrap();
        let dev = DeviceName::new("b2").unwrap();
        let j = Journal::open(
            dir.path(),
            &dev,
            &JournalConfig::default(),
            Counter::default(),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        j.marker("one");
        std::thread::sleep(BATCH_WINDOW * 3);
        assert!(
            fs::metadata(j.path()).unwrap().len() > 0,
            "not written after 3 windows"
        );
        j.output(b"two");
        std::thread::sleep(BATCH_WINDOW * 3);
        let (recs, _) = format::decode_all(&fs::read(j.path()).unwrap());
        assert_eq!(recs.len(), 2);
    }
}

#[cfg(test)]
mod pool_tests {
    use super::*;

    /// Journals share one writer thread: a flush on one is served, a drop writes everything, and a journal opened after others were dropped still works.
    #[test]
    fn journals_share_the_writer_thread() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = JournalConfig::default();
        let open = |name: &str| {
            Journal::open(
                dir.path(),
                &DeviceName::new(name).unwrap(),
                &cfg,
                Counter::default(),
            )
            .unwrap()
        };
        let journals: Vec<Journal> = (0..8).map(|i| open(&format!("p{i}"))).collect();
        for (i, j) in journals.iter().enumerate() {
            j.output(format!("board {i}").as_bytes());
        }
        journals[3].flush_blocking();
        let (recs, _) = format::decode_all(&fs::read(journals[3].path()).unwrap());
        assert_eq!(recs.last().unwrap().data, b"board 3");
        let paths: Vec<PathBuf> = journals.iter().map(|j| j.path().to_path_buf()).collect();
        drop(journals);
        for (i, p) in paths.iter().enumerate() {
            let (recs, _) = format::decode_all(&fs::read(p).unwrap());
            assert_eq!(recs.last().unwrap().data, format!("board {i}").as_bytes());
        }
        let again = open("p0");
        again.output(b"later");
        drop(again);
        let (recs, _) = format::decode_all(&fs::read(&paths[0]).unwrap());
        assert_eq!(recs.last().unwrap().data, b"later");
    }
}
