//! The compressed side of the pipeline: a `BufRead` over the downloaded chunks (or a local
//! file, or a cache blob) that hashes every byte as it arrives and tees it into the cache's
//! temporary file. Hashing on arrival, not on consumption, means the digests cover the whole
//! download even if a decoder stops early.

use std::fs::File;
use std::io::{self, BufRead, Read, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};

use super::fsutil::TempFile;
use super::hashing::{Digests, Hashers};
use super::pipeline::Counters;

/// Read size for files (local `file://` sources and cache blobs).
const FILE_CHUNK: usize = 256 * 1024;

/// Where compressed bytes come from.
pub(crate) enum Source {
    /// Chunks pushed by the async downloader; the channel closing is the end of the stream.
    Chunks(tokio::sync::mpsc::Receiver<Bytes>),
    File(File),
}

pub(crate) struct Input {
    source: Source,
    cur: Bytes,
    pos: usize,
    /// A buffer to read the next file chunk into, recycled from the previous chunk.
    spare: BytesMut,
    eof: bool,
    hashers: Hashers,
    tee: Option<TempFile>,
    tee_error: Option<String>,
    counters: Arc<Counters>,
    /// Bytes handed to the consumer so far (the offset reported for decoder errors).
    consumed: u64,
    total: u64,
    source_error: Option<io::ErrorKind>,
}

/// What the input saw, once the stream is finished.
pub(crate) struct InputSummary {
    pub digests: Digests,
    pub total: u64,
    pub tee: Option<TempFile>,
    pub tee_error: Option<String>,
}

impl Input {
    pub fn new(
        source: Source,
        hashers: Hashers,
        tee: Option<TempFile>,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            source,
            cur: Bytes::new(),
            pos: 0,
            spare: BytesMut::new(),
            eof: false,
            hashers,
            tee,
            tee_error: None,
            counters,
            consumed: 0,
            total: 0,
            source_error: None,
        }
    }

    /// Offset of the next byte the consumer will read.
    pub fn offset(&self) -> u64 {
        self.consumed
    }

    /// Set when reading the source (not decoding it) failed.
    pub fn source_error(&self) -> Option<io::ErrorKind> {
        self.source_error
    }

    /// The next raw piece of the source, hashed and teed; `None` at the end.
    fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        let chunk = match &mut self.source {
            Source::Chunks(rx) => match rx.blocking_recv() {
                Some(c) => c,
                None => return Ok(None),
            },
            Source::File(f) => {
                let mut b = std::mem::take(&mut self.spare);
                b.clear();
                b.resize(FILE_CHUNK, 0);
                let n = loop {
                    match f.read(&mut b[..]) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            self.source_error = Some(e.kind());
                            return Err(e);
                        }
                    }
                };
                if n == 0 {
                    return Ok(None);
                }
                b.truncate(n);
                b.freeze()
            }
        };
        self.hashers.update(&chunk);
        self.total += chunk.len() as u64;
        self.counters
            .compressed
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if let Some(tee) = &self.tee {
            let written = tee.file().and_then(|mut f| f.write_all(&chunk));
            if let Err(e) = written {
                // The cache is an optimisation: losing it must not fail the fetch.
                self.tee_error = Some(format!(
                    "cannot write cache file {}: {e}",
                    tee.path().display()
                ));
                self.tee = None;
            }
        }
        Ok(Some(chunk))
    }

    /// Moves to the next chunk, recycling the current one's memory for file reads.
    fn advance(&mut self) -> io::Result<()> {
        let old = std::mem::take(&mut self.cur);
        if let Ok(m) = old.try_into_mut() {
            self.spare = m;
        }
        self.pos = 0;
        match self.next_chunk()? {
            Some(c) => self.cur = c,
            None => self.eof = true,
        }
        Ok(())
    }

    /// At least `n` unread bytes in one slice, or everything up to the end if shorter.
    pub fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        while self.cur.len() - self.pos < n && !self.eof {
            let mut merged = self.cur[self.pos..].to_vec();
            match self.next_chunk()? {
                Some(c) => merged.extend_from_slice(&c),
                None => self.eof = true,
            }
            self.cur = Bytes::from(merged);
            self.pos = 0;
        }
        Ok(&self.cur[self.pos..])
    }

    /// Reads and hashes whatever the consumer left, then returns the digests and the tee.
    pub fn finish(mut self) -> io::Result<InputSummary> {
        while !self.eof {
            self.advance()?;
        }
        Ok(InputSummary {
            digests: self.hashers.finish(),
            total: self.total,
            tee: self.tee,
            tee_error: self.tee_error,
        })
    }
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Input {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos >= self.cur.len() && !self.eof {
            self.advance()?;
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
    use super::*;

    #[test]
    fn chunks_are_hashed_peeked_and_teed() {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        for piece in [&b"ab"[..], b"c", b"", b"defgh"] {
            tx.try_send(Bytes::copy_from_slice(piece)).unwrap();
        }
        drop(tx);
        let dir = tempfile::tempdir().unwrap();
        let tee = TempFile::create_in(dir.path(), "t").unwrap();
        let tee_path = tee.path().to_path_buf();
        let mut input = Input::new(
            Source::Chunks(rx),
            Hashers::new(false, false),
            Some(tee),
            Arc::default(),
        );
        assert!(input.peek(4).unwrap().starts_with(b"abcd"));
        let mut first = [0u8; 3];
        input.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"abc");
        assert_eq!(input.offset(), 3);
        let s = input.finish().unwrap();
        assert_eq!(s.total, 8);
        assert_eq!(
            s.digests.sha256,
            super::super::hashing::sha256_hex(b"abcdefgh")
        );
        assert_eq!(std::fs::read(&tee_path).unwrap(), b"abcdefgh");
    }

    #[test]
    fn file_source_reads_everything() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let data: Vec<u8> = (0..FILE_CHUNK * 2 + 17).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let mut input = Input::new(
            Source::File(File::open(&p).unwrap()),
            Hashers::new(true, false),
            None,
            Arc::default(),
        );
        let mut out = Vec::new();
        input.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
        assert_eq!(input.finish().unwrap().total, data.len() as u64);
    }
}
