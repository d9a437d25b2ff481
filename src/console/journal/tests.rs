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

mod batch_tests {
    use super::super::*;

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

mod pool_tests {
    use super::super::*;

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

mod retry_tests {
    use super::super::*;

    /// A writer whose directory is, for now, a regular file: every write is refused (ENOTDIR)
    /// until the test removes it.
    fn blocked_writer(root: &Path) -> (Writer, Shared) {
        let dir = root.join("dev");
        fs::write(&dir, b"not a directory").unwrap();
        let writer = Writer {
            path: dir.join(FILE_NAME),
            dir,
            file: None,
            size: 0,
            max_size: 1 << 20,
            keep: 1,
            retry: Vec::new(),
            retry_ends: Vec::new(),
            dropped: 0,
            retry_at: None,
            backoff: Duration::ZERO,
            bytes_written: Counter::default(),
            device: DeviceName::new("r1").unwrap(),
        };
        let shared = Shared {
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
        };
        (writer, shared)
    }

    fn append(shared: &Shared, text: &str) {
        let mut st = shared.lock();
        format::encode(&mut st.buf, RecordKind::Output, None, text.as_bytes());
        let end = st.buf.len();
        st.ends.push(end);
    }

    #[test]
    fn shared_retry_memory_is_capped_and_the_loss_is_marked() {
        let root = tempfile::tempdir().unwrap();
        let (mut w, shared) = blocked_writer(root.path());
        // Room for about three of the records below, for every journal together.
        let mut budget = RetryBudget::new(200);
        let mut sent = Vec::new();
        for i in 0..10 {
            let line = format!("record {i} {}", "y".repeat(30));
            append(&shared, &line);
            sent.push(line);
            let pass = w.write_pending(&shared, &mut budget);
            assert!(pass.retry_at.is_some());
        }
        assert!(budget.used <= 200 && !w.retry.is_empty());
        let kept = w.retry_ends.len();
        let dropped = w.dropped;
        assert!(kept >= 1 && dropped > 0, "{kept} kept, {dropped} dropped");

        fs::remove_file(&w.dir).unwrap();
        append(&shared, "after");
        // Past the back-off.
        w.retry_at = Some(Instant::now());
        let pass = w.write_pending(&shared, &mut budget);
        assert_eq!((pass.retry_at, budget.used), (None, 0));
        let (recs, _) = format::decode_all(&fs::read(&w.path).unwrap());
        let got: Vec<String> = recs
            .iter()
            .map(|r| String::from_utf8_lossy(&r.data).into_owned())
            .collect();
        let mut want: Vec<String> = sent[..kept].to_vec();
        want.push(format!(
            "journal dropped {dropped} bytes while the disk refused writes"
        ));
        want.push("after".into());
        assert_eq!(got, want);
        assert_eq!(recs[kept].kind, RecordKind::Marker);
    }

    #[test]
    fn backing_off_keeps_records_without_writing_and_a_stop_lets_go() {
        let root = tempfile::tempdir().unwrap();
        let (mut w, shared) = blocked_writer(root.path());
        let mut budget = RetryBudget::new(1 << 20);
        append(&shared, "one");
        let first = w.write_pending(&shared, &mut budget).retry_at.unwrap();
        assert!(first > Instant::now());
        // Within the back-off nothing is tried: the record just joins the retry memory.
        fs::remove_file(&w.dir).unwrap();
        append(&shared, "two");
        assert_eq!(w.write_pending(&shared, &mut budget).retry_at, Some(first));
        assert!(!w.path.exists());
        // A flush tries at once.
        shared.lock().flush_requested += 1;
        let pass = w.write_pending(&shared, &mut budget);
        assert_eq!(pass.retry_at, None);
        assert_eq!(shared.lock().flushed, 1);
        let (recs, _) = format::decode_all(&fs::read(&w.path).unwrap());
        assert_eq!(recs.len(), 2);

        // Stopped while refused: tried once more, then given up (and logged), not kept.
        fs::create_dir(root.path().join("again")).unwrap();
        let (mut w, shared) = blocked_writer(&root.path().join("again"));
        append(&shared, "lost");
        w.write_pending(&shared, &mut budget);
        shared.lock().stop = true;
        let pass = w.write_pending(&shared, &mut budget);
        assert!(pass.done && shared.lock().done);
        assert!(w.retry.is_empty() && w.dropped == 0);
        assert_eq!(budget.used, 0);
    }
}
