//! Board lock files: one advisory `flock` per board under `<state_dir>/locks/boards/`, so
//! jobs of different processes (the daemon, `labd run-job --local`, the in-process run when
//! no daemon answers, another inventory copy with the same state_dir) never use a board at
//! the same time. The holder (`job 77 (pid 1234)`) is written inside for whoever waits.
//!
//! Only non-blocking attempts (`LOCK_NB`): a caller that finds a board busy releases what it
//! took and tries again later, so a group never holds some boards while waiting for others.
//! A lock dies with its process (the kernel drops it), so a crashed run leaves no stale lock.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::boards::BoardError;
use crate::ids::DeviceName;

/// The lock directory of a worker.
#[derive(Debug, Clone)]
pub struct BoardFiles {
    dir: PathBuf,
}

/// One board's lock, released when dropped (closing the file releases the `flock`).
#[derive(Debug)]
pub struct FileHold {
    _lock: Flock<File>,
}

/// What a non-blocking attempt on a set of boards gave.
#[derive(Debug)]
pub enum TryLock {
    /// Every board, locked.
    Held(Vec<FileHold>),
    /// Nothing held: these boards are locked by others (`(device, holder)`).
    Busy(Vec<(DeviceName, String)>),
}

impl BoardFiles {
    /// The locks of the worker whose state directory is `state_dir`.
    pub fn for_state_dir(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join("locks").join("boards"),
        }
    }

    /// The lock file of `device`.
    pub fn path(&self, device: &DeviceName) -> PathBuf {
        self.dir.join(format!("{}.lock", device.as_str()))
    }

    /// Locks every board of `devices` for `holder` without waiting, or none of them.
    /// Blocking (file system): call it off the async executor ([`Self::try_lock_all_async`]).
    pub fn try_lock_all(
        &self,
        devices: &[DeviceName],
        holder: &str,
    ) -> Result<TryLock, BoardError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| BoardError::LockFile {
            path: self.dir.clone(),
            source,
        })?;
        let text = format!("{holder} (pid {})\n", std::process::id());
        let mut held = Vec::new();
        let mut busy = Vec::new();
        for d in devices {
            let path = self.path(d);
            let err = |source| BoardError::LockFile {
                path: path.clone(),
                source,
            };
            let file = open(&path).map_err(err)?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(mut lock) => {
                    // The text is only for messages: a failure to write it loses nothing.
                    let _ = lock
                        .set_len(0)
                        .and_then(|_| lock.rewind())
                        .and_then(|_| lock.write_all(text.as_bytes()));
                    held.push(FileHold { _lock: lock });
                }
                Err((mut file, Errno::EWOULDBLOCK)) => {
                    let mut who = String::new();
                    let _ = file.read_to_string(&mut who);
                    let who = who.trim();
                    let who = if who.is_empty() {
                        "another process".to_string()
                    } else {
                        who.to_string()
                    };
                    busy.push((d.clone(), who));
                }
                Err((_, e)) => return Err(err(std::io::Error::from(e))),
            }
        }
        if busy.is_empty() {
            Ok(TryLock::Held(held))
        } else {
            Ok(TryLock::Busy(busy))
        }
    }

    /// [`Self::try_lock_all`] on the blocking pool.
    pub async fn try_lock_all_async(
        &self,
        devices: Vec<DeviceName>,
        holder: String,
    ) -> Result<TryLock, BoardError> {
        let me = self.clone();
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || me.try_lock_all(&devices, &holder))
            .await
            .unwrap_or_else(|e| {
                Err(BoardError::LockFile {
                    path: dir,
                    source: std::io::Error::other(e.to_string()),
                })
            })
    }
}

/// Opens (creating) a lock file: read-write to write the holder; read-only when another user
/// created it (`flock` needs no write access, the holder text is then not updated).
fn open(path: &Path) -> std::io::Result<File> {
    match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o664)
        .open(path)
    {
        // A file that does not exist and cannot be created: the first error says why.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            File::open(path).map_err(|_| e)
        }
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<DeviceName> {
        n.iter().map(|s| DeviceName::new(*s).unwrap()).collect()
    }

    #[test]
    fn all_or_none_and_the_holder_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let files = BoardFiles::for_state_dir(dir.path());
        let TryLock::Held(first) = files.try_lock_all(&names(&["b"]), "job 1").unwrap() else {
            panic!("b was free");
        };
        // Another open file description conflicts, in this process as in another one.
        let r = files.try_lock_all(&names(&["a", "b"]), "group 2").unwrap();
        let TryLock::Busy(busy) = r else {
            panic!("b is held")
        };
        let pid = std::process::id();
        assert_eq!(
            busy,
            [(names(&["b"])[0].clone(), format!("job 1 (pid {pid})"))]
        );
        // `a` was not kept: a third run takes it.
        let TryLock::Held(a) = files.try_lock_all(&names(&["a"]), "job 3").unwrap() else {
            panic!("a was released");
        };
        drop((a, first));
        assert!(matches!(
            files.try_lock_all(&names(&["a", "b"]), "group 2").unwrap(),
            TryLock::Held(h) if h.len() == 2
        ));
    }
}
