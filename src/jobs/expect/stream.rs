//! The expect engine over any async byte stream (a console subscription, a child's stdout):
//! reads in chunks, decodes UTF-8 across chunk boundaries, logs complete lines as `target`
//! lines (through a callback) and searches as pexpect does.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use super::buffer::{ExpectBuffer, ExpectMatch, LAVA_SEARCH_WINDOW, Utf8Decoder};
use super::pattern::Pattern;
use crate::jobs::log::TargetLineLogger;

/// pexpect's `maxread` as lava-dispatcher sets it (`spawn_maxread`).
pub const LAVA_MAXREAD: usize = 4092;

/// Why a wait ended without a match.
#[derive(Debug, thiserror::Error)]
pub enum ExpectError {
    /// Nothing matched in time; `pending` is what arrived since the last match.
    #[error("no match within {waited:?}")]
    Timeout { waited: Duration, pending: String },
    /// The stream ended (console closed, qemu exited).
    #[error("connection closed")]
    Eof { pending: String },
    #[error("console read failed: {0}")]
    Io(#[from] std::io::Error),
}

type LineCallback = Box<dyn FnMut(&str) + Send>;

/// Waits for patterns on a byte stream.
pub struct ConsoleExpect<R> {
    reader: R,
    buffer: ExpectBuffer,
    decoder: Utf8Decoder,
    lines: TargetLineLogger,
    on_line: Option<LineCallback>,
    read_size: usize,
    eof: bool,
}

impl<R: AsyncRead + Unpin> ConsoleExpect<R> {
    /// An engine with LAVA's window (4000 characters) and read size (4092 bytes).
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            buffer: ExpectBuffer::new(Some(LAVA_SEARCH_WINDOW)),
            decoder: Utf8Decoder::new(),
            lines: TargetLineLogger::new(),
            on_line: None,
            read_size: LAVA_MAXREAD,
            eof: false,
        }
    }

    /// Called with every complete console line, cleaned as LAVA logs `lvl: target` lines.
    pub fn on_line(mut self, f: impl FnMut(&str) + Send + 'static) -> Self {
        self.on_line = Some(Box::new(f));
        self
    }

    /// `None` searches everything since the last match (`max_searchwindowsize=True`).
    pub fn set_window(&mut self, window: Option<usize>) {
        self.buffer.set_window(window);
    }

    pub fn set_read_size(&mut self, n: usize) {
        self.read_size = n.max(1);
    }

    /// Text received but not yet consumed by a match.
    pub fn pending(&self) -> &str {
        self.buffer.pending()
    }

    /// Drops buffered text (what LAVA's `empty_buffer` does before a fresh command).
    pub fn clear(&mut self) -> String {
        self.buffer.clear()
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.reader
    }

    /// Waits up to `timeout` for any of `patterns`.
    pub async fn expect(
        &mut self,
        patterns: &[&Pattern],
        timeout: Duration,
    ) -> Result<ExpectMatch, ExpectError> {
        self.expect_until(patterns, Instant::now() + timeout).await
    }

    /// Waits until `deadline` for any of `patterns`.
    pub async fn expect_until(
        &mut self,
        patterns: &[&Pattern],
        deadline: Instant,
    ) -> Result<ExpectMatch, ExpectError> {
        let started = Instant::now();
        if let Some(m) = self.buffer.search(patterns) {
            return Ok(m);
        }
        let mut buf = vec![0u8; self.read_size];
        loop {
            if self.eof {
                return Err(ExpectError::Eof {
                    pending: self.buffer.pending().to_string(),
                });
            }
            let read = tokio::time::timeout_at(deadline, self.reader.read(&mut buf)).await;
            let n = match read {
                Err(_) => {
                    return Err(ExpectError::Timeout {
                        waited: started.elapsed(),
                        pending: self.buffer.pending().to_string(),
                    });
                }
                Ok(r) => r?,
            };
            let text = if n == 0 {
                self.eof = true;
                let mut t = self.decoder.finish();
                self.feed_lines(&t);
                if let Some(last) = self.lines.flush() {
                    self.emit(&last);
                }
                std::mem::take(&mut t)
            } else {
                let t = self.decoder.decode(&buf[..n]);
                self.feed_lines(&t);
                t
            };
            self.buffer.push(&text);
            if let Some(m) = self.buffer.search(patterns) {
                return Ok(m);
            }
        }
    }

    /// Hands over text instead of matching it (for a consumer with its own matcher, such as
    /// the test-shell session): what is buffered, else the next chunk that arrives within
    /// `timeout` (logged as target lines as usual). An empty string means nothing arrived.
    pub async fn read_text(&mut self, timeout: Duration) -> Result<String, ExpectError> {
        if !self.buffer.pending().is_empty() {
            return Ok(self.buffer.clear());
        }
        if self.eof {
            return Err(ExpectError::Eof {
                pending: String::new(),
            });
        }
        let mut buf = vec![0u8; self.read_size];
        match tokio::time::timeout(timeout, self.reader.read(&mut buf)).await {
            Err(_) => Ok(String::new()),
            Ok(Ok(0)) => {
                self.eof = true;
                let t = self.decoder.finish();
                self.feed_lines(&t);
                if let Some(last) = self.lines.flush() {
                    self.emit(&last);
                }
                if t.is_empty() {
                    Err(ExpectError::Eof {
                        pending: String::new(),
                    })
                } else {
                    Ok(t)
                }
            }
            Ok(Ok(n)) => {
                let t = self.decoder.decode(&buf[..n]);
                self.feed_lines(&t);
                Ok(t)
            }
            Ok(Err(e)) => Err(e.into()),
        }
    }

    /// Reads whatever arrives for `period` (logging it) without matching: LAVA's
    /// `listen_feedback` and the drain before a new command.
    pub async fn drain_for(&mut self, period: Duration) -> Result<usize, ExpectError> {
        let deadline = Instant::now() + period;
        let mut buf = vec![0u8; self.read_size];
        let mut total = 0;
        while !self.eof {
            match tokio::time::timeout_at(deadline, self.reader.read(&mut buf)).await {
                Err(_) => break,
                Ok(Ok(0)) => self.eof = true,
                Ok(Ok(n)) => {
                    total += n;
                    let t = self.decoder.decode(&buf[..n]);
                    self.feed_lines(&t);
                    self.buffer.push(&t);
                }
                Ok(Err(e)) => return Err(e.into()),
            }
        }
        Ok(total)
    }

    fn feed_lines(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        for line in self.lines.write(text) {
            self.emit(&line);
        }
    }

    fn emit(&mut self, line: &str) {
        if let Some(cb) = self.on_line.as_mut() {
            cb(line);
        }
    }
}

/// What to write for LAVA's `sendline(s, delay)`: the text and line separator, in one piece or
/// one character at a time with `delay` after each, and the `lvl: input` message to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendPlan {
    /// Chunks to write, each followed by the paired pause.
    pub chunks: Vec<(Vec<u8>, Duration)>,
    /// The `input` record LAVA logs (`s + linesep`).
    pub log_message: String,
}

impl SendPlan {
    /// `sendline(s, delay_ms)` with `linesep` (LAVA's default `"\n"`).
    pub fn sendline(s: &str, linesep: &str, delay_ms: u64) -> Self {
        let delay = Duration::from_millis(delay_ms);
        let mut chunks = Vec::new();
        if delay_ms > 0 {
            for c in s.chars().chain(linesep.chars()) {
                let mut b = [0u8; 4];
                chunks.push((c.encode_utf8(&mut b).as_bytes().to_vec(), delay));
            }
        } else {
            if !s.is_empty() {
                chunks.push((s.as_bytes().to_vec(), Duration::ZERO));
            }
            if !linesep.is_empty() {
                chunks.push((linesep.as_bytes().to_vec(), Duration::ZERO));
            }
        }
        Self {
            chunks,
            log_message: format!("{s}{linesep}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn waits_across_chunks_and_logs_lines() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        let mut e = ConsoleExpect::new(rx).on_line(move |l| l2.lock().unwrap().push(l.to_string()));
        let prompt = Pattern::new("/ # ").unwrap();
        let panic = Pattern::new("Kernel panic - not syncing").unwrap();
        let writer = tokio::spawn(async move {
            tx.write_all(b"Linux version 6.1\r\nBusy").await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            tx.write_all(b"Box \xc3").await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            tx.write_all(b"\xa9\r\n/ # ").await.unwrap();
            tx
        });
        let m = e
            .expect(&[&panic, &prompt], Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(m.index, 1);
        assert_eq!(m.before, "Linux version 6.1\r\nBusyBox é\r\n");
        assert_eq!(
            *lines.lock().unwrap(),
            vec!["Linux version 6.1".to_string(), "BusyBox é".to_string()]
        );
        let tx = writer.await.unwrap();
        let err = e
            .expect(&[&prompt], Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(matches!(err, ExpectError::Timeout { .. }));
        drop(tx);
        let err = e
            .expect(&[&prompt], Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, ExpectError::Eof { .. }));
    }

    #[test]
    fn send_plans() {
        let p = SendPlan::sendline("root", "\n", 0);
        assert_eq!(p.chunks.len(), 2);
        assert_eq!(p.log_message, "root\n");
        let p = SendPlan::sendline("ab", "\n", 100);
        assert_eq!(p.chunks.len(), 3);
        assert_eq!(p.chunks[2], (b"\n".to_vec(), Duration::from_millis(100)));
    }
}
