//! The compressed side of the pipeline, in two parts:
//!
//! - [`feed`], on the input thread: takes chunks from the source (the async downloader, a local
//!   file, a cache blob), tees them into the cache's temporary file, and passes them on.
//! - [`ChunkReader`], on the decode thread: queues every chunk for hashing as it arrives
//!   ([`SharedHash`]: the sink thread hashes them while it waits for output) and is a `BufRead`
//!   over them, with `peek` for the magic bytes. Keeping the input thread light matters: three
//!   busy threads on two cores stall each other (see docs/images.md). A decoder that stops
//!   early fails the fetch, so hashing on consumption covers the whole stream whenever the
//!   digests are used; [`ChunkReader::finish`] drains what a decoder left after its end.

use std::fs::File;
use std::io::{self, BufRead, Read, Write};
use std::sync::atomic::Ordering;
use std::sync::mpsc;

use bytes::{Bytes, BytesMut};

use super::fsutil::TempFile;
use super::hashing::{Digests, SharedHash};
use super::pipeline::{Cancel, Counters};

/// Read size for files (local `file://` sources and cache blobs).
const FILE_CHUNK: usize = 256 * 1024;

/// Where compressed bytes come from.
pub(crate) enum Source {
    /// Chunks pushed by the async downloader; the channel closing is the end of the stream.
    Chunks(tokio::sync::mpsc::Receiver<Bytes>),
    File(File),
}

/// What the input saw, once the stream is finished.
pub(crate) struct InputSummary {
    pub total: u64,
    pub tee: Option<TempFile>,
    pub tee_error: Option<String>,
    /// The decoder stopped taking chunks before the end (it failed; it will say why).
    pub cut_short: bool,
}

fn next_chunk(source: &mut Source) -> io::Result<Option<Bytes>> {
    match source {
        Source::Chunks(rx) => Ok(rx.blocking_recv()),
        Source::File(f) => {
            let mut b = BytesMut::zeroed(FILE_CHUNK);
            let n = loop {
                match f.read(&mut b[..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                return Ok(None);
            }
            b.truncate(n);
            Ok(Some(b.freeze()))
        }
    }
}

/// Reads the whole source: tees and forwards every chunk to the decoder. Stops with an error
/// when `cancel` is set (a file would otherwise be read to its end).
pub(crate) fn feed(
    mut source: Source,
    mut tee: Option<TempFile>,
    counters: &Counters,
    out: mpsc::SyncSender<Bytes>,
    cancel: &Cancel,
) -> io::Result<InputSummary> {
    let mut total = 0u64;
    let mut tee_error = None;
    let mut cut_short = false;
    loop {
        if cancel.is_set() {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "fetch cancelled",
            ));
        }
        let Some(chunk) = next_chunk(&mut source)? else {
            break;
        };
        total += chunk.len() as u64;
        counters
            .compressed
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if let Some(t) = &tee {
            if let Err(e) = t.file().and_then(|mut f| f.write_all(&chunk)) {
                // The cache is an optimisation: losing it must not fail the fetch.
                tee_error = Some(format!(
                    "cannot write cache file {}: {e}",
                    t.path().display()
                ));
                tee = None;
            }
        }
        if out.send(chunk).is_err() {
            cut_short = true;
            break;
        }
    }
    Ok(InputSummary {
        total,
        tee,
        tee_error,
        cut_short,
    })
}

/// The decoder's view of the compressed stream.
pub(crate) struct ChunkReader {
    rx: mpsc::Receiver<Bytes>,
    hash: std::sync::Arc<SharedHash>,
    cur: Bytes,
    pos: usize,
    eof: bool,
    /// Bytes handed to the consumer so far (the offset reported for decoder errors).
    consumed: u64,
}

impl ChunkReader {
    pub fn new(rx: mpsc::Receiver<Bytes>, hash: std::sync::Arc<SharedHash>) -> Self {
        Self {
            rx,
            hash,
            cur: Bytes::new(),
            pos: 0,
            eof: false,
            consumed: 0,
        }
    }

    /// The next chunk, queued for hashing; `None` at the end of the stream.
    fn recv(&mut self) -> Option<Bytes> {
        let c = self.rx.recv().ok()?;
        self.hash.push(c.clone());
        Some(c)
    }

    /// Reads whatever the decoder left after the end of its stream, so that the digests cover
    /// every byte received, and returns them.
    pub fn finish(mut self) -> Digests {
        while self.recv().is_some() {}
        self.hash.finish()
    }

    /// Offset of the next byte the consumer will read.
    pub fn offset(&self) -> u64 {
        self.consumed
    }

    /// At least `n` unread bytes in one slice, or everything up to the end if shorter.
    pub fn peek(&mut self, n: usize) -> &[u8] {
        while self.cur.len() - self.pos < n && !self.eof {
            let mut merged = self.cur[self.pos..].to_vec();
            match self.recv() {
                Some(c) => merged.extend_from_slice(&c),
                None => self.eof = true,
            }
            self.cur = Bytes::from(merged);
            self.pos = 0;
        }
        &self.cur[self.pos..]
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ChunkReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos >= self.cur.len() && !self.eof {
            self.pos = 0;
            match self.recv() {
                Some(c) => self.cur = c,
                None => {
                    self.cur = Bytes::new();
                    self.eof = true;
                }
            }
        }
        Ok(&self.cur[self.pos..])
    }

    fn consume(&mut self, amt: usize) {
        let amt = amt.min(self.cur.len() - self.pos);
        self.pos += amt;
        self.consumed += amt as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::super::hashing::Hashers;
    use super::*;
    use std::sync::Arc;

    #[test]
    fn chunks_are_hashed_teed_and_peeked() {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        for piece in [&b"ab"[..], b"c", b"", b"defgh"] {
            tx.try_send(Bytes::copy_from_slice(piece)).unwrap();
        }
        drop(tx);
        let dir = tempfile::tempdir().unwrap();
        let tee = TempFile::create_in(dir.path(), "t").unwrap();
        let tee_path = tee.path().to_path_buf();
        let (out, inp) = mpsc::sync_channel(16);
        let s = feed(
            Source::Chunks(rx),
            Some(tee),
            &Counters::default(),
            out,
            &Cancel::default(),
        )
        .unwrap();
        assert_eq!(s.total, 8);
        assert!(!s.cut_short);
        assert_eq!(std::fs::read(&tee_path).unwrap(), b"abcdefgh");
        let mut r = ChunkReader::new(
            inp,
            Arc::new(SharedHash::new(Hashers::new(true, false, false))),
        );
        assert!(r.peek(4).starts_with(b"abcd"));
        let mut first = [0u8; 3];
        r.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"abc");
        assert_eq!(r.offset(), 3);
        let mut rest = [0u8; 2];
        r.read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"de");
        // What the consumer did not read is still hashed.
        assert_eq!(
            r.finish().sha256,
            Some(super::super::hashing::sha256_hex(b"abcdefgh"))
        );
    }

    #[test]
    fn file_source_reads_everything() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let data: Vec<u8> = (0..FILE_CHUNK * 2 + 17).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let (out, inp) = mpsc::sync_channel(16);
        let s = feed(
            Source::File(File::open(&p).unwrap()),
            None,
            &Counters::default(),
            out,
            &Cancel::default(),
        )
        .unwrap();
        assert_eq!(s.total, data.len() as u64);
        let mut got = Vec::new();
        let mut r = ChunkReader::new(
            inp,
            Arc::new(SharedHash::new(Hashers::new(true, true, false))),
        );
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, data);
        let d = r.finish();
        assert_eq!(d.sha256, Some(super::super::hashing::sha256_hex(&data)));
        assert!(d.md5.is_some() && d.sha512.is_none());
    }
}
