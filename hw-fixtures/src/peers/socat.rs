//! socat pseudo-terminal pairs: two linked ptys standing in for a UART and its cable, as
//! real-peers.md section 2 sets them up for ser2net.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{ChildGuard, require_program, wait_for_path};

/// `socat pty,raw,echo=0,link=A pty,raw,echo=0,link=B`; stopped when dropped.
pub struct SocatPair {
    _child: ChildGuard,
    pub a: PathBuf,
    pub b: PathBuf,
}

impl SocatPair {
    /// Links `dir/a_name` and `dir/b_name`; returns once both links exist.
    pub fn start(dir: &Path, a_name: &str, b_name: &str) -> anyhow::Result<Self> {
        let bin = require_program("socat")?;
        let a = dir.join(a_name);
        let b = dir.join(b_name);
        let log = std::fs::File::create(dir.join(format!("socat-{a_name}.log")))?;
        let child = Command::new(bin)
            .arg("-d")
            .arg("-d")
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let guard = ChildGuard::new("socat", child);
        wait_for_path(&a, Duration::from_secs(10))?;
        wait_for_path(&b, Duration::from_secs(10))?;
        Ok(Self {
            _child: guard,
            a,
            b,
        })
    }
}
