//! The blocking half of a fetch, on three dedicated threads per image:
//!
//! - the input thread: takes the compressed chunks (from the downloader, a file or a cache
//!   blob) and tees them into the cache's temporary file ([`feed`]);
//! - the decode thread (it holds the worker-wide decompressor slot): detects or checks the
//!   format and decodes into 1 MiB buffers;
//! - the sink thread: hashes the output and writes it to the destination's temporary file,
//!   leaving holes for runs of zeros; while it waits for output it hashes the compressed
//!   chunks the decoder queued ([`SharedHash`]), so the decoder keeps its core to itself.
//!
//! Splitting the stages lets a fast decoder (zstd, zlib-rs) run at full speed while sha256 and
//! the disk keep up beside it. Memory is bounded: eight compressed chunks and four output
//! buffers in flight, plus the decoder's window.
//!
//! Cancellation: dropping the future [`spawn`] returns sets a [`Cancel`] flag that the input
//! thread checks per chunk and the decoder per output buffer. A network source would also stop
//! when its channel closes, but a file or cache blob would otherwise be decoded to the end,
//! holding the decompressor slot and the disk space of the temporary files all along.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::compression::{Compression, Decompress, Detection, MAGIC_LEN, decoder, detect};
use super::fsutil::TempFile;
use super::hashing::{Digests, Hashers, SharedHash};
use super::input::{ChunkReader, Source, feed};
use super::limits::Slot;

/// Size of one output buffer.
pub(crate) const OUT_BUF: usize = 1 << 20;
/// Output buffers per image (in the decoder, queued, in the sink).
const OUT_BUFFERS: usize = 4;
/// Compressed chunks queued between the input thread and the decoder.
const INPUT_CHUNKS: usize = 4;
/// Runs of zeros this long (and aligned) are skipped in the output, leaving a hole, as
/// `zstd -d` does: disk images are often mostly empty.
const SPARSE_BLOCK: usize = 32 * 1024;

/// Progress shared with the async side, which samples it for progress reports.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Bytes received from the network (resumed transfers count once).
    pub downloaded: AtomicU64,
    /// Compressed bytes that entered the pipeline.
    pub compressed: AtomicU64,
    /// Decompressed bytes written.
    pub output: AtomicU64,
}

impl Counters {
    /// Starts over (a corrupt cache copy is being replaced by a download).
    pub fn reset(&self) {
        for c in [&self.downloaded, &self.compressed, &self.output] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// One image's work for the pipeline.
pub(crate) struct Job {
    pub decompress: Decompress,
    /// Which digests of the compressed stream to compute.
    pub sha256: bool,
    pub md5: bool,
    pub sha512: bool,
    pub dest: TempFile,
    pub cache: Option<TempFile>,
    pub counters: Arc<Counters>,
}

/// A finished pipeline: nothing is renamed into place yet, the caller verifies first.
pub(crate) struct Output {
    pub compression: Option<Compression>,
    pub compressed_bytes: u64,
    pub output_bytes: u64,
    pub digests: Digests,
    pub output_sha256: String,
    pub dest: TempFile,
    pub cache: Option<TempFile>,
    /// Why the cache copy was dropped, if it was.
    pub cache_error: Option<String>,
    /// Time the decode thread worked (for throughput metrics).
    pub busy: Duration,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum PipelineError {
    #[error("{message}")]
    Decompress {
        format: String,
        message: String,
        offset: u64,
    },
    #[error("reading the source: {0}")]
    Source(io::Error),
    #[error("writing the destination: {0}")]
    Write(io::Error),
    #[error("internal: {0}")]
    Internal(String),
    /// The fetch was dropped; nobody reads this, the temporary files are gone.
    #[error("cancelled")]
    Cancelled,
}

/// Set when the fetch stops waiting for the pipeline; its threads then stop at their next
/// chunk or buffer.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The pipeline's result; dropping it before it resolves cancels the pipeline.
pub(crate) struct Running {
    rx: oneshot::Receiver<Result<Output, PipelineError>>,
    cancel: Cancel,
}

impl Future for Running {
    type Output = Result<Result<Output, PipelineError>, oneshot::error::RecvError>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // After the result arrived the threads are gone and this changes nothing.
        self.cancel.set();
    }
}

/// Starts the pipeline on its own threads; the decompressor slot is released when decoding
/// ends or, if the returned future is dropped, soon after.
pub(crate) fn spawn(job: Job, source: Source, slot: Slot) -> Running {
    let (tx, rx) = oneshot::channel();
    let cancel = Cancel::default();
    let flag = cancel.clone();
    let spawned = std::thread::Builder::new()
        .name("labd-image-decode".into())
        .spawn(move || {
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| run(job, source, &flag)))
                .unwrap_or_else(|_| Err(PipelineError::Internal("decoder thread panicked".into())));
            drop(slot);
            // If the fetch was cancelled nobody listens: the temporary files in `result` are
            // then dropped here, which removes them.
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start an image decoder thread: {e}");
    }
    Running { rx, cancel }
}

fn run(job: Job, source: Source, cancel: &Cancel) -> Result<Output, PipelineError> {
    let started = Instant::now();
    let Job {
        decompress,
        sha256,
        md5,
        sha512,
        dest,
        cache,
        counters,
    } = job;
    let dest_file = dest.file().map_err(PipelineError::Write)?;
    let (chunk_tx, chunk_rx) = mpsc::sync_channel::<Bytes>(INPUT_CHUNKS);
    let input_hash = Arc::new(SharedHash::new(Hashers::new(sha256, md5, sha512)));
    let reader = ChunkReader::new(chunk_rx, input_hash.clone());

    let (fed, stages) = std::thread::scope(|s| {
        let counters = &counters;
        let feeder = std::thread::Builder::new()
            .name("labd-image-input".into())
            .spawn_scoped(s, move || feed(source, cache, counters, chunk_tx, cancel));
        let stages = decode_and_sink(
            s,
            reader,
            decompress,
            dest_file,
            counters,
            &input_hash,
            cancel,
        );
        let fed = match feeder {
            Ok(h) => h.join().ok(),
            Err(_) => None,
        };
        (fed, stages)
    });

    if cancel.is_set() {
        // Whatever stopped first, this is why; `dest` and the tee are removed on drop.
        return Err(PipelineError::Cancelled);
    }
    let summary = match fed {
        Some(Ok(summary)) => summary,
        Some(Err(e)) => {
            // A write failure is the real cause even if reading also stopped.
            if let Err(w @ PipelineError::Write(_)) = stages {
                return Err(w);
            }
            return Err(PipelineError::Source(e));
        }
        None => return Err(PipelineError::Internal("input thread failed".into())),
    };
    let (format, output_bytes, output_hash, mut digests) = stages?;
    if summary.cut_short {
        return Err(PipelineError::Internal(
            "the decoder stopped before the end of the stream".into(),
        ));
    }
    // Uncompressed, the output is the input: whichever side was hashed names both.
    if format.is_none() && digests.sha256.is_none() {
        digests.sha256 = output_hash.clone();
    }
    let output_sha256 = output_hash
        .or_else(|| digests.sha256.clone())
        .ok_or_else(|| PipelineError::Internal("the output was not hashed".into()))?;
    Ok(Output {
        compression: format,
        compressed_bytes: summary.total,
        output_bytes,
        digests,
        output_sha256,
        dest,
        cache: summary.tee,
        cache_error: summary.tee_error,
        busy: started.elapsed(),
    })
}

/// Format, output size, output sha256 (`None` when the output is the input) and the
/// compressed stream's digests.
type Decoded = (Option<Compression>, u64, Option<String>, Digests);

/// Format choice and decoding on this thread, hashing and writing on a sink thread. Takes the
/// reader by value: returning drops it, which tells the input thread to stop if we stopped early.
fn decode_and_sink<'scope>(
    s: &'scope std::thread::Scope<'scope, '_>,
    mut reader: ChunkReader,
    decompress: Decompress,
    dest: &'scope File,
    counters: &'scope Counters,
    input_hash: &'scope SharedHash,
    cancel: &Cancel,
) -> Result<Decoded, PipelineError> {
    let format = choose_format(&mut reader, decompress)?;
    let (full_tx, full_rx) = mpsc::sync_channel::<(Vec<u8>, usize)>(OUT_BUFFERS - 1);
    let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
    let sink = std::thread::Builder::new()
        .name("labd-image-sink".into())
        .spawn_scoped(s, move || {
            sink(
                dest,
                full_rx,
                empty_tx,
                counters,
                // Uncompressed, the input's sha256 is the output's, if it is computed.
                format.is_some() || !input_hash.has_sha256(),
                input_hash,
            )
        })
        .map_err(|e| PipelineError::Internal(format!("cannot start the sink thread: {e}")))?;
    let decoded = decode(&mut reader, format, full_tx, empty_rx, cancel);
    let (output_bytes, output_hash) = match sink.join() {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return Err(PipelineError::Write(e)),
        Err(_) => return Err(PipelineError::Internal("sink thread panicked".into())),
    };
    match decoded {
        Ok(()) => Ok((format, output_bytes, output_hash, reader.finish())),
        // Only when the sink failed, which returned above.
        Err(DecodeError::SinkGone) => Err(PipelineError::Internal("sink thread stopped".into())),
        Err(DecodeError::Cancelled) => Err(PipelineError::Cancelled),
        Err(DecodeError::Read(e)) => Err(PipelineError::Decompress {
            format: format.map_or_else(|| "none".into(), |f| f.to_string()),
            message: describe_decode_error(&e),
            offset: reader.offset(),
        }),
    }
}

/// Detects the format from the magic bytes, or checks the one the job announced.
fn choose_format(
    input: &mut ChunkReader,
    decompress: Decompress,
) -> Result<Option<Compression>, PipelineError> {
    if decompress == Decompress::None {
        return Ok(None);
    }
    let prefix = input.peek(MAGIC_LEN);
    let detected = match detect(prefix, true) {
        Detection::Format(f) => Some(f),
        Detection::Plain | Detection::NeedMore => None,
    };
    match decompress {
        Decompress::Format(want) if detected != Some(want) => Err(PipelineError::Decompress {
            format: want.to_string(),
            message: match detected {
                Some(other) => format!("the stream is not {want}: its magic bytes say {other}"),
                None if prefix.is_empty() => "the stream is empty".to_string(),
                None => format!(
                    "the stream is not {want}: it starts with {}",
                    hex::encode(&prefix[..prefix.len().min(MAGIC_LEN)])
                ),
            },
            offset: 0,
        }),
        _ => Ok(detected),
    }
}

/// Decoders report truncation and corruption in their own words; say which it is.
fn describe_decode_error(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => format!("the archive is truncated ({e})"),
        _ => format!("the archive is corrupt ({e})"),
    }
}

enum DecodeError {
    Read(io::Error),
    SinkGone,
    Cancelled,
}

fn decode(
    input: &mut ChunkReader,
    format: Option<Compression>,
    full: mpsc::SyncSender<(Vec<u8>, usize)>,
    empty: mpsc::Receiver<Vec<u8>>,
    cancel: &Cancel,
) -> Result<(), DecodeError> {
    let mut reader: Box<dyn Read + Send + '_> = match format {
        Some(f) => decoder(f, &mut *input).map_err(DecodeError::Read)?,
        None => Box::new(&mut *input),
    };
    let mut allocated = 0;
    loop {
        if cancel.is_set() {
            return Err(DecodeError::Cancelled);
        }
        let mut buf = match empty.try_recv() {
            Ok(b) => b,
            Err(_) if allocated < OUT_BUFFERS => {
                allocated += 1;
                vec![0u8; OUT_BUF]
            }
            Err(_) => empty.recv().map_err(|_| DecodeError::SinkGone)?,
        };
        let mut filled = 0;
        let mut eof = false;
        while filled < buf.len() {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(DecodeError::Read(e)),
            }
        }
        if filled > 0 && full.send((buf, filled)).is_err() {
            return Err(DecodeError::SinkGone);
        }
        if eof {
            return Ok(());
        }
    }
}

/// Hashes (when the output differs from the input) and writes, leaving holes for aligned runs
/// of zeros; returns size and sha256. Hashes queued input chunks whenever no output is ready.
fn sink(
    file: &File,
    full: mpsc::Receiver<(Vec<u8>, usize)>,
    empty: mpsc::Sender<Vec<u8>>,
    counters: &Counters,
    hash: bool,
    input_hash: &SharedHash,
) -> io::Result<(u64, Option<String>)> {
    let mut sha = hash.then(Sha256::new);
    let mut total = 0u64;
    loop {
        let (buf, n) = match full.try_recv() {
            Ok(b) => b,
            Err(mpsc::TryRecvError::Disconnected) => break,
            Err(mpsc::TryRecvError::Empty) => {
                if input_hash.hash_one() {
                    continue;
                }
                match full.recv() {
                    Ok(b) => b,
                    Err(_) => break,
                }
            }
        };
        let data = &buf[..n];
        if let Some(h) = &mut sha {
            h.update(data);
        }
        write_sparse(file, data, total)?;
        total += n as u64;
        counters.output.fetch_add(n as u64, Ordering::Relaxed);
        // The decoder may have finished and gone; then the buffer is simply freed.
        let _ = empty.send(buf);
    }
    // A trailing hole still counts in the size.
    file.set_len(total)?;
    Ok((total, sha.map(|h| hex::encode(h.finalize()))))
}

/// Writes `data` at `offset`, skipping whole zero blocks (the file is new, so holes read as
/// zeros). Non-zero stretches go out in one write each.
fn write_sparse(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    let mut pending: Option<usize> = None;
    let mut pos = 0;
    while pos < data.len() {
        let end = (pos + SPARSE_BLOCK).min(data.len());
        let block = &data[pos..end];
        let zero = block.len() == SPARSE_BLOCK && is_zero(block);
        match (zero, pending) {
            (true, Some(start)) => {
                file.write_all_at(&data[start..pos], offset + start as u64)?;
                pending = None;
            }
            (false, None) => pending = Some(pos),
            _ => {}
        }
        pos = end;
    }
    if let Some(start) = pending {
        file.write_all_at(&data[start..], offset + start as u64)?;
    }
    Ok(())
}

fn is_zero(block: &[u8]) -> bool {
    // OR-folding 64 bytes at a time vectorises; the early exit stops at the first data.
    let mut chunks = block.chunks_exact(64);
    chunks.all(|c| c.iter().fold(0u8, |a, &b| a | b) == 0)
        && chunks.remainder().iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests;
