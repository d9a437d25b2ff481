//! The coordinator's durable state: a write-ahead journal of the requests that changed a group.
//!
//! The state machine (`state.rs`) is deterministic, so replaying the same requests in the same
//! order rebuilds the same groups. Each record is `"%08X %08X\n"` (body length, CRC-32 of the
//! body), the raw request body, and `"\n"`. A request that changed state is appended and
//! `fdatasync`ed before its reply is sent (several concurrent requests share one sync), so an
//! acknowledged `lava_send` is never lost. At start-up the journal is read up to the first torn
//! or corrupt record (a crash mid-append; that request was never answered), the file is cut
//! there, and the live groups are rewritten to a fresh file: written to `*.tmp`, synced, renamed
//! over the journal, directory synced. The same rewrite compacts the journal while running
//! (records of deleted groups are dropped). A lock file keeps two coordinators off one directory.
//!
//! Two rules keep every acknowledged record reachable at restart: a record is written whole or
//! not at all ([`write_whole`] cuts a partial one off again), and the handle appends go to is
//! always the file at the journal's path (a rewrite appends through the handle it wrote the new
//! file with, taken before the rename, and never opens the path again).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use crate::multinode::error::CoordinatorError;

const JOURNAL: &str = "coordinator.journal";
const LOCK: &str = "coordinator.lock";
const RECORD_HEAD: usize = 18;

/// An open journal (owned by the journal thread once the server runs).
pub struct Journal {
    dir: PathBuf,
    file: File,
    /// A rewrite's rename is done but its directory sync failed: retried by [`Journal::sync`].
    dir_unsynced: bool,
    /// Held for the life of the journal; released when it is dropped.
    _lock: nix::fcntl::Flock<File>,
    #[cfg(test)]
    pub(crate) faults: std::sync::Arc<Faults>,
}

/// Test-only fault injection: each switch makes the next such step fail once (the failures
/// these stand for, EMFILE and EIO, cannot be caused from outside at the right moment).
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Faults {
    /// The directory sync (after a rewrite's rename).
    pub dir_sync: std::sync::atomic::AtomicBool,
    /// [`Journal::clone_file`].
    pub clone: std::sync::atomic::AtomicBool,
}

#[cfg(test)]
fn injected(switch: &std::sync::atomic::AtomicBool, what: &str) -> io::Result<()> {
    if switch.swap(false, std::sync::atomic::Ordering::SeqCst) {
        return Err(io::Error::other(format!("injected {what} failure")));
    }
    Ok(())
}

/// What [`Journal::open`] found on disk.
pub struct Recovered {
    pub records: Vec<Vec<u8>>,
    /// Bytes cut off the end (a torn or corrupt tail), if any.
    pub truncated: Option<u64>,
}

impl Journal {
    /// Locks `dir`, reads every intact record and cuts any torn tail.
    pub fn open(dir: &Path) -> Result<(Journal, Recovered), CoordinatorError> {
        let ctx = |what: &str, source: io::Error| CoordinatorError::Store {
            path: dir.to_path_buf(),
            what: what.to_string(),
            source,
        };
        fs::create_dir_all(dir).map_err(|e| ctx("cannot create the state directory", e))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK))
            .map_err(|e| ctx("cannot open the lock file", e))?;
        let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| {
                ctx(
                    "another coordinator holds the lock on this state directory",
                    io::Error::from(errno),
                )
            })?;
        let path = dir.join(JOURNAL);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| ctx("cannot open the journal", e))?;
        let (records, good_len, total) =
            read_records(&file).map_err(|e| ctx("cannot read the journal", e))?;
        let truncated = if good_len < total {
            file.set_len(good_len)
                .and_then(|_| file.sync_all())
                .map_err(|e| ctx("cannot cut the torn end of the journal", e))?;
            Some(total - good_len)
        } else {
            None
        };
        sync_dir(dir).map_err(|e| ctx("cannot sync the state directory", e))?;
        Ok((
            Journal {
                dir: dir.to_path_buf(),
                file,
                dir_unsynced: false,
                _lock: lock,
                #[cfg(test)]
                faults: Default::default(),
            },
            Recovered { records, truncated },
        ))
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(JOURNAL)
    }

    /// Appends one record (not yet durable; see [`Journal::sync`]), whole or not at all.
    pub fn append(&mut self, body: &[u8]) -> io::Result<()> {
        let len = self.file.metadata()?.len();
        write_whole(&mut self.file, len, &encode_record(body))
    }

    /// Makes every appended record durable (and a rewrite's rename, if its sync failed).
    pub fn sync(&mut self) -> io::Result<()> {
        if self.dir_unsynced {
            self.sync_dir()?;
            self.dir_unsynced = false;
        }
        self.file.sync_data()
    }

    /// Whether a rewrite's rename still waits for its directory sync ([`Journal::sync`]).
    pub fn dir_unsynced(&self) -> bool {
        self.dir_unsynced
    }

    /// Replaces the journal with exactly `records`, atomically (tmp file, fsync, rename,
    /// directory fsync): after a crash either the old or the new journal is there, whole.
    ///
    /// An error means the old journal is still in place and still the file appended to. Once
    /// the rename is done the new file is the journal: appends go to the handle it was written
    /// with (nothing is opened after the rename, which could fail with EMFILE and leave appends
    /// going to the replaced, unlinked file), and a failed directory sync is retried by the next
    /// [`Journal::sync`].
    pub fn rewrite<'a>(&mut self, records: impl IntoIterator<Item = &'a [u8]>) -> io::Result<()> {
        let tmp = self.dir.join(format!("{JOURNAL}.tmp"));
        let written = (|| {
            // Opened for appending: this handle becomes the journal's after the rename. A
            // leftover from a crash is removed first (append mode cannot truncate).
            match fs::remove_file(&tmp) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            let file = OpenOptions::new()
                .create_new(true)
                .read(true)
                .append(true)
                .open(&tmp)?;
            let mut w = io::BufWriter::new(&file);
            for r in records {
                w.write_all(&encode_record(r))?;
            }
            w.flush()?;
            drop(w);
            file.sync_all()?;
            fs::rename(&tmp, self.path())?;
            Ok(file)
        })();
        match written {
            Ok(file) => self.file = file,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        }
        if self.sync_dir().is_err() {
            self.dir_unsynced = true;
        }
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        #[cfg(test)]
        injected(&self.faults.dir_sync, "directory sync")?;
        sync_dir(&self.dir)
    }

    /// Another handle on the journal file (appends through it land at the end too).
    pub fn clone_file(&self) -> io::Result<File> {
        #[cfg(test)]
        injected(&self.faults.clone, "clone")?;
        self.file.try_clone()
    }

    /// Current size of the journal file.
    pub fn size(&self) -> u64 {
        self.file.metadata().map(|m| m.len()).unwrap_or(0)
    }
}

/// Appends `record` to a journal file of `len` bytes, whole or not at all: a write that fails
/// partway (disk full) is cut back to `len`, so no later record ever follows a torn one (replay
/// stops at the first torn record and would drop every record after it).
pub fn write_whole(file: &mut File, len: u64, record: &[u8]) -> io::Result<()> {
    let Err(e) = file.write_all(record) else {
        return Ok(());
    };
    match file.set_len(len) {
        Ok(()) => Err(e),
        Err(cut) => Err(io::Error::new(
            e.kind(),
            format!("{e}; cutting off the partial record failed too: {cut}"),
        )),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub fn encode_record(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEAD + body.len() + 1);
    // `"%08X %08X\n"`, written by hand: this runs once per state change.
    let hex8 = |out: &mut Vec<u8>, v: u32| {
        for shift in (0..8).rev() {
            out.push(b"0123456789ABCDEF"[((v >> (shift * 4)) & 0xF) as usize]);
        }
    };
    // Bodies are capped far below 4 GiB (`max_message`); a longer one gets a header that
    // cannot match, so the record would be cut at recovery rather than misread.
    hex8(&mut out, u32::try_from(body.len()).unwrap_or(u32::MAX));
    out.push(b' ');
    hex8(&mut out, crc32(body));
    out.push(b'\n');
    out.extend_from_slice(body);
    out.push(b'\n');
    out
}

/// Reads intact records; returns them, the length of the intact prefix, and the file length.
fn read_records(file: &File) -> io::Result<(Vec<Vec<u8>>, u64, u64)> {
    let total = file.metadata()?.len();
    let mut r = BufReader::new(file);
    let mut all = Vec::new();
    r.read_to_end(&mut all)?;
    let (records, good) = decode_records(&all);
    Ok((records, good as u64, total))
}

/// Splits journal bytes into records, stopping at the first torn or corrupt one. Returns the
/// records and the byte length of the intact prefix.
pub fn decode_records(all: &[u8]) -> (Vec<Vec<u8>>, usize) {
    let mut records = Vec::new();
    let mut pos = 0;
    while pos < all.len() {
        let Some(head) = all.get(pos..pos + RECORD_HEAD) else {
            break;
        };
        let parse = |s: &[u8]| {
            std::str::from_utf8(s)
                .ok()
                .and_then(|t| u32::from_str_radix(t, 16).ok())
        };
        let (Some(len), Some(crc)) = (parse(&head[..8]), parse(&head[9..17])) else {
            break;
        };
        if head[8] != b' ' || head[17] != b'\n' {
            break;
        }
        let start = pos + RECORD_HEAD;
        let end = start + len as usize;
        let Some(body) = all.get(start..end) else {
            break;
        };
        if all.get(end) != Some(&b'\n') || crc32(body) != crc {
            break;
        }
        records.push(body.to_vec());
        pos = end + 1;
    }
    (records, pos)
}

/// CRC-32 (IEEE, as zlib). It runs on the serving thread once per state change
/// ([`Durability::Process`](super::Durability)), so it goes a byte at a time through a table.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc = (crc >> 8) ^ CRC_TABLE[((crc ^ u32::from(b)) & 0xFF) as usize];
    }
    !crc
}

/// [`crc32`]'s table, computed at compile time.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut k = 0;
        while k < 8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (!(crc & 1)).wrapping_add(1));
            k += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_zlib() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn torn_tail_is_cut_and_earlier_records_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut j, rec) = Journal::open(dir.path()).unwrap();
            assert!(rec.records.is_empty());
            j.append(b"{\"a\": 1}").unwrap();
            j.append(b"{\"b\": 2}").unwrap();
            j.sync().unwrap();
        }
        // Simulate a crash in the middle of a third append.
        let path = dir.path().join(JOURNAL);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&encode_record(b"{\"c\": 3}")[..12]).unwrap();
        drop(f);
        let (j, rec) = Journal::open(dir.path()).unwrap();
        assert_eq!(
            rec.records,
            vec![b"{\"a\": 1}".to_vec(), b"{\"b\": 2}".to_vec()]
        );
        assert_eq!(rec.truncated, Some(12));
        assert_eq!(j.size(), 2 * (RECORD_HEAD as u64 + 9));
    }

    #[test]
    fn corrupt_record_stops_replay() {
        let mut bytes = encode_record(b"one");
        let mut second = encode_record(b"two");
        second[RECORD_HEAD] = b'X';
        bytes.extend_from_slice(&second);
        let (records, good) = decode_records(&bytes);
        assert_eq!(records, vec![b"one".to_vec()]);
        assert_eq!(good, RECORD_HEAD + 4);
    }

    #[test]
    fn rewrite_replaces_atomically_and_a_second_opener_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        j.append(b"old").unwrap();
        j.rewrite([b"new".as_slice()]).unwrap();
        j.append(b"after").unwrap();
        j.sync().unwrap();
        assert!(Journal::open(dir.path()).is_err(), "lock must be held");
        drop(j);
        let (_, rec) = Journal::open(dir.path()).unwrap();
        assert_eq!(rec.records, vec![b"new".to_vec(), b"after".to_vec()]);
    }

    #[test]
    fn a_failed_directory_sync_after_the_rename_is_retried_by_the_next_sync() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        j.append(b"old").unwrap();
        j.faults
            .dir_sync
            .store(true, std::sync::atomic::Ordering::SeqCst);
        j.rewrite([b"new".as_slice()]).unwrap();
        assert!(j.dir_unsynced());
        j.append(b"after").unwrap();
        j.sync().unwrap();
        assert!(!j.dir_unsynced());
        let (records, _) = decode_records(&std::fs::read(j.path()).unwrap());
        assert_eq!(records, vec![b"new".to_vec(), b"after".to_vec()]);
    }
}
