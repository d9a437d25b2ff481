//! A job's log buffer on disk: an append-only file of records (`log.yaml`, one line each) and an
//! acknowledgement file (`log.ack`: `<lines> <bytes>`, how much of `log.yaml` the master holds).
//!
//! Crash safety:
//! - Lines are appended and `fdatasync`'d in batches by one writer thread; only synced lines are
//!   offered for upload, so the master never holds a line the disk may lose.
//! - `log.ack` is replaced atomically (write a temporary file, fsync, rename, fsync the
//!   directory) *after* the master acknowledged a batch. A crash between the two makes labd
//!   resend that batch with the old `index`; lava-server skips `line_count - index` lines it
//!   already stored, so nothing is stored twice.
//! - A crash in the middle of an append leaves a partial last line; recovery cuts the file back
//!   to its last newline (that line was never synced, so never uploaded).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use tokio::sync::{mpsc, watch};

use super::error::MasterError;
use super::executor::LogMsg;

pub const LOG_FILE: &str = "log.yaml";
pub const ACK_FILE: &str = "log.ack";

/// A position in `log.yaml`: lines and bytes before it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mark {
    pub lines: u64,
    pub bytes: u64,
}

/// What the writer has made durable, and whether it will write more.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Durable {
    pub end: Mark,
    pub closed: bool,
}

/// Reads the acknowledged mark (absent file: nothing acknowledged).
pub fn read_ack(dir: &Path) -> Result<Mark, MasterError> {
    let path = dir.join(ACK_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Mark::default()),
        Err(e) => return Err(MasterError::io("cannot read", path, e)),
    };
    let mut it = text.split_whitespace().map(str::parse::<u64>);
    match (it.next(), it.next()) {
        (Some(Ok(lines)), Some(Ok(bytes))) => Ok(Mark { lines, bytes }),
        _ => Err(MasterError::Corrupt {
            path,
            message: format!("expected \"<lines> <bytes>\", found {text:?}"),
        }),
    }
}

/// Atomically records that the master holds everything before `mark`.
pub fn write_ack(dir: &Path, mark: Mark) -> Result<(), MasterError> {
    write_atomic(
        dir,
        ACK_FILE,
        format!("{} {}\n", mark.lines, mark.bytes).as_bytes(),
    )
}

/// Writes `dir/name` so that a crash leaves either the old or the new content.
pub fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> Result<(), MasterError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let dst = dir.join(name);
    let mut f = File::create(&tmp).map_err(|e| MasterError::io("cannot create", &tmp, e))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| MasterError::io("cannot write", &tmp, e))?;
    std::fs::rename(&tmp, &dst).map_err(|e| MasterError::io("cannot rename into", &dst, e))?;
    sync_dir(dir)
}

pub fn sync_dir(dir: &Path) -> Result<(), MasterError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| MasterError::io("cannot sync directory", dir, e))
}

/// Opens `log.yaml` for appending after recovery: cuts a partial last line and counts lines.
/// Returns the file and its durable end.
pub fn open_for_append(dir: &Path) -> Result<(File, Mark), MasterError> {
    let path = dir.join(LOG_FILE);
    let mut f = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(&path)
        .map_err(|e| MasterError::io("cannot open", &path, e))?;
    let mut data = Vec::new();
    f.read_to_end(&mut data)
        .map_err(|e| MasterError::io("cannot read", &path, e))?;
    let keep = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if keep < data.len() {
        tracing::warn!(
            path = %path.display(),
            "cutting {} bytes of a log line left unfinished by a crash",
            data.len() - keep
        );
        f.set_len(keep as u64)
            .and_then(|_| f.sync_all())
            .map_err(|e| MasterError::io("cannot truncate", &path, e))?;
    }
    let lines = data[..keep].iter().filter(|&&b| b == b'\n').count() as u64;
    Ok((
        f,
        Mark {
            lines,
            bytes: keep as u64,
        },
    ))
}

/// The writer: drains `rx`, appends every available line, syncs, then publishes the new end.
/// Runs on a blocking thread until a `Close` or until every sender is gone.
pub(crate) fn run_writer(
    path: PathBuf,
    mut file: File,
    mut end: Mark,
    mut rx: mpsc::UnboundedReceiver<LogMsg>,
    durable: watch::Sender<Durable>,
) {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut closing = None;
    loop {
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        let mut added = 0u64;
        let mut msg = Some(first);
        while let Some(m) = msg.take() {
            match m {
                LogMsg::Line(l) => {
                    buf.extend_from_slice(l.as_bytes());
                    buf.push(b'\n');
                    added += 1;
                }
                LogMsg::Close(ack) => {
                    closing = Some(ack);
                    break;
                }
            }
            if buf.len() < 4 << 20 {
                msg = rx.try_recv().ok();
            }
        }
        if !buf.is_empty() {
            // A failed write is retried: losing a log line silently is worse than waiting for
            // the disk. Lines stay in memory meanwhile.
            loop {
                match file.write_all(&buf).and_then(|_| file.sync_data()) {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::error!(path = %path.display(), "cannot append job log: {e}; retrying in 1 s");
                        // A partial write may have happened: cut back to the known end.
                        let _ = file.set_len(end.bytes);
                        std::thread::sleep(std::time::Duration::from_secs(1));
                    }
                }
            }
            end.bytes += buf.len() as u64;
            end.lines += added;
            buf.clear();
            durable.send_modify(|d| d.end = end);
        }
        if closing.is_some() {
            break;
        }
    }
    rx.close();
    durable.send_modify(|d| d.closed = true);
    if let Some(ack) = closing {
        let _ = ack.send(());
    }
}

/// Reads up to `max` lines of `log.yaml` starting at byte `from`, not past byte `to`.
/// Returns the lines (without newlines) and the mark after the last one.
pub fn read_batch(
    dir: &Path,
    from: Mark,
    to: u64,
    max: usize,
) -> Result<(Vec<String>, Mark), MasterError> {
    let path = dir.join(LOG_FILE);
    let mut f = File::open(&path).map_err(|e| MasterError::io("cannot open", &path, e))?;
    f.seek(SeekFrom::Start(from.bytes))
        .map_err(|e| MasterError::io("cannot seek in", &path, e))?;
    let mut reader = BufReader::new(f.take(to.saturating_sub(from.bytes)));
    let mut out = Vec::new();
    let mut at = from;
    let mut raw = Vec::new();
    while out.len() < max {
        raw.clear();
        let n = reader
            .read_until(b'\n', &mut raw)
            .map_err(|e| MasterError::io("cannot read", &path, e))?;
        if n == 0 || raw.last() != Some(&b'\n') {
            break;
        }
        raw.pop();
        out.push(String::from_utf8_lossy(&raw).into_owned());
        at.bytes += n as u64;
        at.lines += 1;
    }
    Ok((out, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_line_is_cut_and_batches_respect_marks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOG_FILE), b"a\nbb\nccc\npartial").unwrap();
        let (_f, end) = open_for_append(dir.path()).unwrap();
        assert_eq!(end, Mark { lines: 3, bytes: 9 });
        assert_eq!(
            std::fs::read(dir.path().join(LOG_FILE)).unwrap(),
            b"a\nbb\nccc\n"
        );
        let (lines, at) = read_batch(dir.path(), Mark::default(), end.bytes, 2).unwrap();
        assert_eq!(lines, vec!["a", "bb"]);
        assert_eq!(at, Mark { lines: 2, bytes: 5 });
        let (lines, at) = read_batch(dir.path(), at, end.bytes, 1000).unwrap();
        assert_eq!(lines, vec!["ccc"]);
        assert_eq!(at, end);
        assert_eq!(read_ack(dir.path()).unwrap(), Mark::default());
        write_ack(dir.path(), at).unwrap();
        assert_eq!(read_ack(dir.path()).unwrap(), end);
        std::fs::write(dir.path().join(ACK_FILE), "garbage").unwrap();
        assert!(matches!(
            read_ack(dir.path()),
            Err(MasterError::Corrupt { .. })
        ));
    }

    #[test]
    fn writer_syncs_then_publishes() {
        let dir = tempfile::tempdir().unwrap();
        let (f, end) = open_for_append(dir.path()).unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let (dtx, drx) = watch::channel(Durable::default());
        let path = dir.path().join(LOG_FILE);
        let h = std::thread::spawn(move || run_writer(path, f, end, rx, dtx));
        for i in 0..5 {
            tx.send(LogMsg::Line(format!("line {i}"))).unwrap();
        }
        let (ack_tx, ack_rx) = tokio::sync::oneshot::channel();
        tx.send(LogMsg::Close(ack_tx)).unwrap();
        ack_rx.blocking_recv().unwrap();
        h.join().unwrap();
        let d = *drx.borrow();
        assert!(d.closed);
        assert_eq!(d.end.lines, 5);
        assert!(tx.send(LogMsg::Line("late".into())).is_err());
        assert_eq!(
            std::fs::read_to_string(dir.path().join(LOG_FILE)).unwrap(),
            "line 0\nline 1\nline 2\nline 3\nline 4\n"
        );
    }
}
