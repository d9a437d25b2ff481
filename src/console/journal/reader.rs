//! Reading a device's journal back (`labd log`), optionally following it across rotations.
//! Works on the files alone, without the daemon.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::format::{self, Record};
use super::{FILE_NAME, device_dir, files};
use crate::ids::DeviceName;

/// Reads records oldest first; call [`JournalReader::poll`] again to get what was appended
/// since (follow mode).
pub struct JournalReader {
    current_path: PathBuf,
    queue: VecDeque<PathBuf>,
    file: Option<File>,
    file_is_current: bool,
    ino: u64,
    buf: Vec<u8>,
}

impl JournalReader {
    /// Starts at the oldest kept file; files last written before `since` are skipped whole.
    pub fn open(journal_dir: &Path, device: &DeviceName, since: Option<SystemTime>) -> Self {
        let all = files(journal_dir, device);
        let queue = all
            .into_iter()
            .filter(|p| {
                let Some(since) = since else { return true };
                std::fs::metadata(p)
                    .and_then(|m| m.modified())
                    .map_or(true, |m| m >= since)
            })
            .collect();
        Self {
            current_path: device_dir(journal_dir, device).join(FILE_NAME),
            queue,
            file: None,
            file_is_current: false,
            ino: 0,
            buf: Vec::new(),
        }
    }

    /// Whether the device has any journal at all.
    pub fn exists(journal_dir: &Path, device: &DeviceName) -> bool {
        device_dir(journal_dir, device).is_dir()
    }

    fn open_next(&mut self) -> io::Result<bool> {
        while let Some(p) = self.queue.pop_front() {
            match File::open(&p) {
                Ok(f) => {
                    self.ino = f.metadata()?.ino();
                    self.file_is_current = p == self.current_path;
                    self.file = Some(f);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        // Queue exhausted: (re)open the current file if it is a new one.
        match File::open(&self.current_path) {
            Ok(f) => {
                let ino = f.metadata()?.ino();
                if ino == self.ino && self.file_is_current {
                    return Ok(false);
                }
                self.ino = ino;
                self.file_is_current = true;
                self.file = Some(f);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn drain(&mut self, out: &mut Vec<Record>) -> io::Result<()> {
        if let Some(f) = self.file.as_mut() {
            f.read_to_end(&mut self.buf)?;
        }
        let (recs, used) = format::decode_all(&self.buf);
        self.buf.drain(..used);
        out.extend(recs);
        Ok(())
    }

    /// Every complete record available now.
    pub fn poll(&mut self) -> io::Result<Vec<Record>> {
        let mut out = Vec::new();
        loop {
            if self.file.is_none() && !self.open_next()? {
                break;
            }
            self.drain(&mut out)?;
            if self.file_is_current {
                let rotated = match std::fs::metadata(&self.current_path) {
                    Ok(m) => m.ino() != self.ino,
                    Err(_) => true,
                };
                if !rotated {
                    break;
                }
                // The writer closed this file before renaming it: read its tail, then move on.
                self.drain(&mut out)?;
                if !std::fs::exists(&self.current_path).unwrap_or(false) {
                    break;
                }
            }
            self.file = None;
            self.buf.clear();
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Journal, JournalConfig};
    use super::*;
    use crate::inventory::ByteSize;
    use crate::metrics::Counter;

    #[test]
    fn follows_across_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let dev = DeviceName::new("b1").unwrap();
        let cfg = JournalConfig {
            max_file_size: ByteSize(4096),
            keep_files: 50,
        };
        let j = Journal::open(dir.path(), &dev, &cfg, Counter::default()).unwrap();
        let mut reader = JournalReader::open(dir.path(), &dev, None);
        let mut got = Vec::new();
        let mut expect = Vec::new();
        for round in 0..10 {
            for i in 0..30 {
                let line = format!("{round}:{i} {}\n", "y".repeat(40));
                j.output(line.as_bytes());
                expect.extend_from_slice(line.as_bytes());
            }
            j.flush_blocking();
            for r in reader.poll().unwrap() {
                got.extend_from_slice(&r.data);
            }
        }
        assert!(files(dir.path(), &dev).len() > 3);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&expect)
        );
    }
}
