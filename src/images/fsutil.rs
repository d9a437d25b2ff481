//! Temporary files that become real files only by an explicit rename, so that a failure or a
//! cancelled fetch never leaves a half-written image behind (the file is removed on drop).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A file being written; removed when dropped unless [`TempFile::persist`] renamed it.
#[derive(Debug)]
pub(crate) struct TempFile {
    path: PathBuf,
    file: Option<File>,
}

impl TempFile {
    /// Creates `<dir>/<prefix><random>.part` (mode 0644), exclusively.
    pub fn create_in(dir: &Path, prefix: &str) -> io::Result<Self> {
        for _ in 0..16 {
            let path = dir.join(format!("{prefix}{:016x}.part", rand::random::<u64>()));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&path)
            {
                Ok(file) => {
                    return Ok(Self {
                        path,
                        file: Some(file),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "no free temporary file name",
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file. Only `None` after `persist`, which consumes `self`.
    pub fn file(&self) -> io::Result<&File> {
        self.file
            .as_ref()
            .ok_or_else(|| io::Error::other("temporary file already closed"))
    }

    /// Closes the file and renames it to `to` (atomically replacing any file there).
    pub fn persist(mut self, to: &Path) -> io::Result<()> {
        drop(self.file.take());
        match std::fs::rename(&self.path, to) {
            Ok(()) => {
                // Nothing left to remove on drop.
                self.path = PathBuf::new();
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        drop(self.file.take());
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn removed_unless_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let t = TempFile::create_in(dir.path(), ".x-").unwrap();
        let p = t.path().to_path_buf();
        assert!(p.exists());
        drop(t);
        assert!(!p.exists());
        let t = TempFile::create_in(dir.path(), ".x-").unwrap();
        (&mut t.file().unwrap()).write_all(b"data").unwrap();
        let dest = dir.path().join("final");
        t.persist(&dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"data");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
