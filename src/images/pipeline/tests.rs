use super::*;
use bytes::Bytes;
use std::io::Write;

thread_local!(static BLOCKS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) });

fn run_on(data: &[u8], decompress: Decompress) -> Result<(Output, Vec<u8>), PipelineError> {
    run_hashing(data, decompress, true)
}

fn run_hashing(
    data: &[u8],
    decompress: Decompress,
    sha256: bool,
) -> Result<(Output, Vec<u8>), PipelineError> {
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    for piece in data.chunks(7000) {
        tx.try_send(Bytes::copy_from_slice(piece)).unwrap();
    }
    drop(tx);
    let job = Job {
        decompress,
        sha256,
        md5: false,
        sha512: false,
        dest: TempFile::create_in(dir.path(), "d").unwrap(),
        cache: None,
        counters: Arc::default(),
    };
    let out = run(job, Source::Chunks(rx), &Cancel::default())?;
    let bytes = std::fs::read(out.dest.path()).unwrap();
    let meta = std::fs::metadata(out.dest.path()).unwrap();
    BLOCKS.with(|b| b.set(std::os::unix::fs::MetadataExt::blocks(&meta)));
    Ok((out, bytes))
}

fn sample() -> Vec<u8> {
    (0..3_000_000u32)
        .flat_map(|i| (i / 7).to_le_bytes())
        .collect()
}

#[test]
fn every_format_roundtrips() {
    let data = sample();
    let encoded: Vec<(Compression, Vec<u8>)> = vec![
        (Compression::Gz, {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        }),
        (Compression::Xz, {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        }),
        (Compression::Bz2, {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        }),
        (Compression::Zstd, zstd::encode_all(&data[..], 1).unwrap()),
    ];
    for (format, enc) in encoded {
        let (out, bytes) = run_on(&enc, Decompress::Auto).unwrap();
        assert_eq!(out.compression, Some(format));
        assert!(bytes == data, "{format} output differs");
        assert_eq!(out.output_bytes, data.len() as u64);
        assert_eq!(out.compressed_bytes, enc.len() as u64);
        assert_eq!(out.output_sha256, super::super::hashing::sha256_hex(&data));
        assert_eq!(
            out.digests.sha256,
            Some(super::super::hashing::sha256_hex(&enc))
        );
        let (out, _) = run_on(&enc, Decompress::Format(format)).unwrap();
        assert_eq!(out.compression, Some(format));
        let truncated = &enc[..enc.len() - 40];
        match run_on(truncated, Decompress::Auto) {
            Err(PipelineError::Decompress { message, .. }) => {
                assert!(
                    message.contains("truncated") || message.contains("corrupt"),
                    "{format}: {message}"
                )
            }
            Err(e) => panic!("{format}: {e}"),
            Ok(_) => panic!("{format}: truncated archive accepted"),
        }
    }
}

#[test]
fn unrequested_input_sha256_is_skipped_but_the_output_is_always_hashed() {
    let data = sample();
    let sha = super::super::hashing::sha256_hex;
    let enc = zstd::encode_all(&data[..], 1).unwrap();
    let (out, bytes) = run_hashing(&enc, Decompress::Auto, false).unwrap();
    assert!(bytes == data);
    assert_eq!(out.digests.sha256, None);
    assert_eq!(out.output_sha256, sha(&data));
    // Not compressed: the output's hash is the input's, so both are known.
    let plain = &data[..4_000_000];
    let (out, _) = run_hashing(plain, Decompress::Auto, false).unwrap();
    assert_eq!(out.compression, None);
    assert_eq!(out.output_sha256, sha(plain));
    assert_eq!(out.digests.sha256, Some(sha(plain)));
}

#[test]
fn zero_runs_become_holes() {
    let mut data = vec![0u8; 8 * SPARSE_BLOCK];
    data[10] = 1;
    data[5 * SPARSE_BLOCK + 3] = 2;
    data.extend_from_slice(&[0u8; 1000]);
    let (out, bytes) = run_on(&data, Decompress::None).unwrap();
    assert_eq!(bytes, data);
    assert_eq!(out.output_bytes, data.len() as u64);
    // Two data blocks written (and the short tail), the rest are holes.
    let blocks = BLOCKS.with(|b| b.get());
    assert!(blocks * 512 < 4 * SPARSE_BLOCK as u64, "{blocks}");
    let zeros = vec![0u8; 3 * SPARSE_BLOCK];
    let (_, bytes) = run_on(&zeros, Decompress::None).unwrap();
    assert_eq!(bytes, zeros);
}

#[test]
fn plain_data_and_wrong_format() {
    let data = b"just some plain bytes".to_vec();
    let (out, bytes) = run_on(&data, Decompress::Auto).unwrap();
    assert_eq!(out.compression, None);
    assert_eq!(bytes, data);
    let e = run_on(&data, Decompress::Format(Compression::Xz))
        .err()
        .unwrap();
    assert!(e.to_string().contains("the stream is not xz"), "{e}");
    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&data).unwrap();
        e.finish().unwrap()
    };
    let e = run_on(&gz, Decompress::Format(Compression::Zstd))
        .err()
        .unwrap();
    assert!(e.to_string().contains("its magic bytes say gz"), "{e}");
    let (out, bytes) = run_on(&gz, Decompress::None).unwrap();
    assert_eq!((out.compression, bytes), (None, gz));
}
