//! The console journal on a full disk: a 256 KiB tmpfs the test mounts (root only; skipped
//! with a message otherwise; unmounted by a guard). Sixteen devices keep logging while the
//! disk refuses every write: no flush stalls, and the refused records reach the files, in
//! order, once space is back.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use labd::console::config::JournalConfig;
use labd::console::journal::{self, Journal, RecordKind};
use labd::ids::DeviceName;
use labd::metrics::Counter;

/// A tmpfs of `size` mounted at `dir`, unmounted on drop.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        let mount = labd_hw_fixtures::require_program("mount").ok()?;
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new(mount)
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .ok()?;
        st.success().then(|| Self(dir.to_path_buf()))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        if let Ok(umount) = labd_hw_fixtures::require_program("umount") {
            let _ = Command::new(umount).arg("-l").arg(&self.0).status();
        }
    }
}

/// Writes 4 KiB blocks until the file system refuses.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = [0x55u8; 4096];
    while f.write_all(&block).is_ok() {}
}

/// The board output a device's journal files hold, and the markers.
fn read_back(dir: &Path, device: &DeviceName) -> (Vec<u8>, Vec<String>) {
    let mut out = Vec::new();
    let mut marks = Vec::new();
    for f in journal::files(dir, device) {
        let data = std::fs::read(&f).unwrap();
        let (recs, used) = journal::format::decode_all(&data);
        assert_eq!(used, data.len(), "{} ends mid-record", f.display());
        for r in recs {
            match r.kind {
                RecordKind::Output => out.extend_from_slice(&r.data),
                RecordKind::Marker => marks.push(String::from_utf8_lossy(&r.data).into_owned()),
                _ => {}
            }
        }
    }
    (out, marks)
}

#[test]
fn a_full_journal_disk_stalls_nobody_and_the_data_follows_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let jdir = dir.path().join("journal");
    let Some(_fs) = SmallFs::mount(&jdir, "256k") else {
        eprintln!("skipping: cannot mount a tmpfs (this test needs root)");
        return;
    };
    let cfg = JournalConfig::default();
    let devices: Vec<DeviceName> = (0..16)
        .map(|i| DeviceName::new(format!("b{i}")).unwrap())
        .collect();
    let journals: Vec<Journal> = devices
        .iter()
        .map(|d| Journal::open(&jdir, d, &cfg, Counter::default()).unwrap())
        .collect();
    let filler = jdir.join("filler");
    fill(&filler);

    let mut expect = vec![Vec::new(); devices.len()];
    let mut worst = Duration::ZERO;
    for round in 0..20 {
        for (i, j) in journals.iter().enumerate() {
            let line = format!("board {i} line {round} {}\n", "x".repeat(200));
            j.output(line.as_bytes());
            expect[i].extend_from_slice(line.as_bytes());
        }
        let t = Instant::now();
        journals[round % journals.len()].flush_blocking();
        worst = worst.max(t.elapsed());
    }
    // Each device's refusal used to cost a 200 ms pause of the one writer thread.
    assert!(
        worst < Duration::from_millis(500),
        "a flush took {worst:?} while the disk was full"
    );
    assert!(read_back(&jdir, &devices[0]).0.is_empty());

    std::fs::remove_file(&filler).unwrap();
    // A flush tries at once, whatever the back-off.
    for i in 0..8 {
        journals[i].flush_blocking();
        assert!(
            read_back(&jdir, &devices[i]).0 == expect[i],
            "device {i}: the retried records are not all there, in order"
        );
    }
    // The others get theirs when their back-off ends, without a flush or new output.
    let deadline = Instant::now() + Duration::from_secs(5);
    for i in 8..devices.len() {
        while read_back(&jdir, &devices[i]).0 != expect[i] {
            assert!(
                Instant::now() < deadline,
                "device {i}: refused records not retried"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // Stopping while the disk refuses: one more try, then the journals are let go promptly.
    fill(&filler);
    for j in &journals {
        j.output(b"written while full\n");
    }
    let t = Instant::now();
    drop(journals);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "stopping 16 journals took {:?}",
        t.elapsed()
    );
}
