//! The on-disk job table: one directory per job under `<state_dir>/master/jobs/<id>/`.
//!
//! ```text
//! job.json          the record: id, token, outcome once known (replaced atomically)
//! definition.yaml   what the master sent (device.yaml, dispatcher.yaml, env.yaml, env-dut.yaml)
//! log.yaml, log.ack the job's log buffer (see logbuf.rs)
//! work/             the executor's scratch directory
//! ```
//!
//! `job.json` is written last when a job is created, so a directory without it is a creation
//! that crashed half-way and is removed. A job's directory is removed only after the master
//! accepted its FINISHED call, so a result is never lost and never reported twice... unless the
//! crash falls between the master's 200 and the removal, in which case the FINISHED call is
//! repeated once after the restart (lava-server then answers 200 again or 404; both are fine).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::MasterError;
use super::executor::JobOutcome;
use super::logbuf::{sync_dir, write_atomic};
use super::wire::JobPayload;
use crate::ids::JobId;

const RECORD: &str = "job.json";

/// What labd remembers about a job across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: JobId,
    pub token: String,
    /// Known once the job is over; reported in FINISHED.
    pub outcome: Option<JobOutcome>,
}

/// The job table.
#[derive(Debug, Clone)]
pub struct JobStore {
    root: PathBuf,
}

const PAYLOAD_FILES: [&str; 5] = [
    "definition.yaml",
    "device.yaml",
    "dispatcher.yaml",
    "env.yaml",
    "env-dut.yaml",
];

impl JobStore {
    /// The table under `<state_dir>/master/jobs`, created if needed.
    pub fn open(state_dir: &Path) -> Result<Self, MasterError> {
        let root = state_dir.join("master").join("jobs");
        std::fs::create_dir_all(&root).map_err(|e| MasterError::io("cannot create", &root, e))?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn job_dir(&self, id: &JobId) -> PathBuf {
        self.root.join(id.as_str())
    }

    /// Every job on disk. Half-created directories are removed; unreadable records are
    /// reported and left alone for an administrator to look at.
    pub fn list(&self) -> Result<Vec<JobRecord>, MasterError> {
        let mut out = Vec::new();
        let entries = std::fs::read_dir(&self.root)
            .map_err(|e| MasterError::io("cannot list", &self.root, e))?;
        for entry in entries.flatten() {
            let dir = entry.path();
            if !dir.is_dir() {
                continue;
            }
            let rec = dir.join(RECORD);
            let text = match std::fs::read(&rec) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::warn!(dir = %dir.display(), "removing a job directory whose creation did not finish");
                    let _ = std::fs::remove_dir_all(&dir);
                    continue;
                }
                Err(e) => {
                    tracing::error!("{}", MasterError::io("cannot read", &rec, e));
                    continue;
                }
            };
            match serde_json::from_slice::<JobRecord>(&text) {
                Ok(r) if dir.file_name().and_then(|n| n.to_str()) == Some(r.id.as_str()) => {
                    out.push(r)
                }
                Ok(r) => tracing::error!(
                    "{}",
                    MasterError::Corrupt {
                        path: rec.clone(),
                        message: format!("record is for job {} in another job's directory", r.id),
                    }
                ),
                Err(e) => tracing::error!(
                    "{}",
                    MasterError::Corrupt {
                        path: rec.clone(),
                        message: e.to_string(),
                    }
                ),
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Creates a job's directory with what the master sent, then its record.
    pub fn create(&self, rec: &JobRecord, payload: &JobPayload) -> Result<PathBuf, MasterError> {
        let dir = self.job_dir(&rec.id);
        let work = dir.join("work");
        std::fs::create_dir_all(&work).map_err(|e| MasterError::io("cannot create", &work, e))?;
        let contents = [
            &payload.definition,
            &payload.device,
            &payload.dispatcher,
            &payload.env,
            &payload.env_dut,
        ];
        for (name, text) in PAYLOAD_FILES.iter().zip(contents) {
            let p = dir.join(name);
            std::fs::write(&p, text).map_err(|e| MasterError::io("cannot write", &p, e))?;
        }
        self.save(rec)?;
        sync_dir(&self.root)?;
        Ok(dir)
    }

    /// Replaces a job's record atomically.
    pub fn save(&self, rec: &JobRecord) -> Result<(), MasterError> {
        let dir = self.job_dir(&rec.id);
        let data = serde_json::to_vec_pretty(rec).map_err(|e| MasterError::Corrupt {
            path: dir.join(RECORD),
            message: e.to_string(),
        })?;
        write_atomic(&dir, RECORD, &data)
    }

    /// What the master sent for a job (to restart it, or for the runner to read).
    pub fn payload(&self, id: &JobId) -> Result<JobPayload, MasterError> {
        let dir = self.job_dir(id);
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read_to_string(&p).map_err(|e| MasterError::io("cannot read", p, e))
        };
        Ok(JobPayload {
            definition: read(PAYLOAD_FILES[0])?,
            device: read(PAYLOAD_FILES[1])?,
            dispatcher: read(PAYLOAD_FILES[2])?,
            env: read(PAYLOAD_FILES[3])?,
            env_dut: read(PAYLOAD_FILES[4])?,
        })
    }

    /// Forgets a job whose FINISHED call the master accepted.
    pub fn remove(&self, id: &JobId) -> Result<(), MasterError> {
        let dir = self.job_dir(id);
        // Remove the record first: a crash during the recursive removal then leaves a directory
        // without record, which `list` cleans up, rather than a job reported twice.
        let rec = dir.join(RECORD);
        match std::fs::remove_file(&rec) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(MasterError::io("cannot remove", rec, e)),
        }
        sync_dir(&dir)?;
        std::fs::remove_dir_all(&dir).map_err(|e| MasterError::io("cannot remove", &dir, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_list_save_remove() {
        let state = tempfile::tempdir().unwrap();
        let store = JobStore::open(state.path()).unwrap();
        let id = JobId::new("7").unwrap();
        let rec = JobRecord {
            id: id.clone(),
            token: "tok".into(),
            outcome: None,
        };
        let payload = JobPayload {
            definition: "job_name: x\n".into(),
            device: "commands: {}\n".into(),
            ..Default::default()
        };
        store.create(&rec, &payload).unwrap();
        // A half-created job directory is cleaned up.
        std::fs::create_dir_all(store.root().join("8")).unwrap();
        assert_eq!(store.list().unwrap(), vec![rec.clone()]);
        assert!(!store.root().join("8").exists());
        assert_eq!(store.payload(&id).unwrap(), payload);
        let done = JobRecord {
            outcome: Some(JobOutcome::complete("d")),
            ..rec
        };
        store.save(&done).unwrap();
        assert_eq!(store.list().unwrap(), vec![done]);
        store.remove(&id).unwrap();
        assert!(store.list().unwrap().is_empty());
    }
}
