//! A job's connection to its board's console, as LAVA's `ShellSession` over a pexpect spawn:
//! waits with pexpect semantics ([`ConsoleExpect`]), `lvl: target` lines for everything read
//! (`feedback` while finalising), `lvl: input` for every `sendline`, per-character delays.
//!
//! Two kinds of link:
//! - a labd console ([`ConsoleHandle`]): a job subscription for the output and an exclusive
//!   writer lease for the input, so operators see the job's input and cannot type over it;
//! - a program on a pty (`telnet localhost 7001`, qemu with `-nographic`).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Instant;

use super::joblog::JobLog;
use super::pty::{PtyProcess, PtyReader, PtyWriter};
use crate::console::{ConsoleEvent, ConsoleHandle, SubscribeOptions, WriterLease};
use crate::ids::ClientId;
use crate::jobs::error::{LavaError, LavaErrorType};
use crate::jobs::expect::{ConsoleExpect, ExpectError, ExpectMatch, Pattern, SendPlan};
use crate::jobs::patterns::connection_closed;
use crate::jobs::signals::py_repr_str;

type EventStream = Pin<Box<dyn Stream<Item = ConsoleEvent> + Send>>;

/// Board output as an `AsyncRead`.
pub enum LinkReader {
    Hub {
        events: EventStream,
        pending: Bytes,
        log: JobLog,
    },
    Pty(PtyReader),
}

impl AsyncRead for LinkReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            LinkReader::Pty(r) => Pin::new(r).poll_read(cx, buf),
            LinkReader::Hub {
                events,
                pending,
                log,
            } => loop {
                if !pending.is_empty() {
                    let n = pending.len().min(buf.remaining());
                    buf.put_slice(&pending.split_to(n));
                    return Poll::Ready(Ok(()));
                }
                match events.as_mut().poll_next(cx) {
                    Poll::Pending => return Poll::Pending,
                    // The console stopped (daemon shutting down, device removed).
                    Poll::Ready(None) => return Poll::Ready(Ok(())),
                    Poll::Ready(Some(ConsoleEvent::Data(d))) => *pending = d,
                    Poll::Ready(Some(ConsoleEvent::Missed(n))) => {
                        log.warning(format!(
                            "labd: {n} bytes of console output were dropped (the job fell behind)"
                        ));
                    }
                    Poll::Ready(Some(ConsoleEvent::Lost { reason })) => {
                        log.warning(format!(
                            "labd: console link lost ({reason}); labd keeps reopening it"
                        ));
                    }
                    Poll::Ready(Some(ConsoleEvent::Back { after, opened })) => {
                        log.warning(format!(
                            "labd: console link back after {:.1} s ({opened})",
                            after.as_secs_f64()
                        ));
                    }
                }
            },
        }
    }
}

enum LinkWriter {
    Hub(WriterLease),
    Pty(PtyWriter),
}

impl LinkWriter {
    async fn send(&self, data: &[u8]) -> Result<(), LavaError> {
        match self {
            LinkWriter::Hub(lease) => lease
                .send(Bytes::copy_from_slice(data))
                .await
                .map_err(|e| LavaError::new(LavaErrorType::Infrastructure, e.to_string())),
            LinkWriter::Pty(w) => w.write_all(data).await.map_err(|_| connection_closed()),
        }
    }
}

/// Where a line read goes: `target`, or `feedback` of a namespace while finalising.
type LineMode = Arc<Mutex<Option<String>>>;

/// An open connection to the board.
pub struct Connection {
    expect: ConsoleExpect<LinkReader>,
    writer: LinkWriter,
    /// The program behind a pty link (killed when the connection is finalised).
    process: Option<PtyProcess>,
    mode: LineMode,
    log: JobLog,
    /// `connection.prompt_str`: what a plain wait looks for.
    pub prompts: Vec<String>,
    pub linesep: String,
    /// LAVA's `check_char`, sent to get a fresh prompt.
    pub check_char: String,
    pub connected: bool,
    /// What the connection is, for log lines.
    pub describe: String,
}

fn expect_engine(reader: LinkReader, log: &JobLog, mode: &LineMode) -> ConsoleExpect<LinkReader> {
    let (log, mode) = (log.clone(), mode.clone());
    ConsoleExpect::new(reader).on_line(move |line| {
        let ns = mode.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match ns {
            Some(ns) => log.feedback(line, &ns),
            None => log.target(line),
        }
    })
}

impl Connection {
    /// Attaches to a labd console as `client` (a job subscription and the writer lease).
    pub async fn hub(
        console: &ConsoleHandle,
        client: ClientId,
        log: &JobLog,
    ) -> Result<Self, LavaError> {
        let infra = |e: crate::console::ConsoleError| {
            LavaError::new(LavaErrorType::Infrastructure, e.to_string())
        };
        let sub = console
            .subscribe(SubscribeOptions::job(client.to_string()))
            .await
            .map_err(infra)?;
        let lease = console.acquire_writer(client).await.map_err(infra)?;
        let mode = LineMode::default();
        let reader = LinkReader::Hub {
            events: Box::pin(sub.into_stream()),
            pending: Bytes::new(),
            log: log.clone(),
        };
        Ok(Self {
            expect: expect_engine(reader, log, &mode),
            writer: LinkWriter::Hub(lease),
            process: None,
            mode,
            log: log.clone(),
            prompts: Vec::new(),
            linesep: "\n".into(),
            check_char: "#".into(),
            connected: true,
            describe: format!("labd console {}", console.device()),
        })
    }

    /// Runs `argv` on a pty and talks to it.
    pub fn spawn(argv: &[String], log: &JobLog) -> Result<Self, std::io::Error> {
        let process = PtyProcess::spawn(argv, &[])?;
        let mode = LineMode::default();
        let reader = LinkReader::Pty(process.reader());
        let writer = LinkWriter::Pty(process.writer());
        let describe = process.command.clone();
        Ok(Self {
            expect: expect_engine(reader, log, &mode),
            writer,
            process: Some(process),
            mode,
            log: log.clone(),
            prompts: Vec::new(),
            linesep: "\n".into(),
            check_char: "#".into(),
            connected: true,
            describe,
        })
    }

    /// `connection.prompt_str = [...]`, logged as LAVA logs it.
    pub fn set_prompts(&mut self, prompts: Vec<String>) {
        self.log.debug(format!(
            "Setting prompt string to {}",
            py_repr_list(&prompts)
        ));
        self.prompts = prompts;
    }

    /// Waits until `deadline` for one of the current prompts.
    pub async fn wait_prompts(&mut self, deadline: Instant) -> Result<ExpectMatch, LavaError> {
        let patterns = compile_all(&self.prompts)?;
        self.expect(&patterns, deadline).await.map_err(wait_error)
    }

    /// `force_prompt_wait`: waits half of `remaining` for a prompt, then up to six times a
    /// tenth of it, sending `#` before each in case the prompt was garbled by kernel messages.
    pub async fn force_prompt_wait(
        &mut self,
        remaining: Duration,
    ) -> Result<ExpectMatch, LavaError> {
        let patterns = compile_all(&self.prompts)?;
        let mut partial = remaining / 2;
        self.log.debug(format!(
            "Waiting using forced prompt support (timeout {})",
            crate::jobs::model::seconds_to_str(partial.as_secs_f64())
        ));
        let mut count = 0;
        loop {
            match self.expect(&patterns, Instant::now() + partial).await {
                Ok(m) => return Ok(m),
                Err(ExpectError::Timeout { .. }) if count < 6 => {
                    self.log.warning(format!(
                        "Timeout exceeded.: Sending {} in case of corruption. Connection timeout {}, retry in {}",
                        self.check_char,
                        crate::jobs::model::seconds_to_str(remaining.as_secs_f64()),
                        crate::jobs::model::seconds_to_str(partial.as_secs_f64())
                    ));
                    self.log
                        .debug(format!("pattern: {}", py_repr_list(&self.prompts)));
                    count += 1;
                    partial = remaining / 10;
                    let c = self.check_char.clone();
                    self.sendline(&c, 0).await?;
                }
                Err(e) => return Err(wait_error(e)),
            }
        }
    }

    /// Sends raw bytes (no logging: LAVA's `send`).
    pub async fn send_raw(&mut self, data: &[u8]) -> Result<(), LavaError> {
        self.writer.send(data).await
    }

    /// LAVA's `sendline(s, delay)`: logs `input`, sends `s` and the line separator, one
    /// character at a time with `delay_ms` after each when a delay is set.
    pub async fn sendline(&mut self, s: &str, delay_ms: u64) -> Result<(), LavaError> {
        if delay_ms > 0 {
            self.log
                .debug(format!("Sending with {delay_ms} millisecond of delay"));
        }
        let plan = SendPlan::sendline(s, &self.linesep, delay_ms);
        self.log.input(plan.log_message.as_str());
        for (bytes, pause) in plan.chunks {
            self.writer.send(&bytes).await?;
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        Ok(())
    }

    /// LAVA's `sendcontrol(c)`: logs `input` `c` and sends Ctrl-`c`.
    pub async fn sendcontrol(&mut self, c: char) -> Result<(), LavaError> {
        self.log.input(c.to_string());
        let code = (c.to_ascii_lowercase() as u8) & 0x1f;
        self.writer.send(&[code]).await
    }

    /// Waits until `deadline` for one of `patterns`.
    pub async fn expect(
        &mut self,
        patterns: &[Pattern],
        deadline: Instant,
    ) -> Result<ExpectMatch, ExpectError> {
        let refs: Vec<&Pattern> = patterns.iter().collect();
        self.expect.expect_until(&refs, deadline).await
    }

    /// `set_window(None)` for one wait: LAVA's `max_searchwindowsize=True`.
    pub async fn expect_whole(
        &mut self,
        patterns: &[Pattern],
        deadline: Instant,
    ) -> Result<ExpectMatch, ExpectError> {
        self.expect.set_window(None);
        let r = self.expect(patterns, deadline).await;
        self.expect
            .set_window(Some(crate::jobs::expect::LAVA_SEARCH_WINDOW));
        r
    }

    /// Hands over what arrives (for the test-shell session's own matcher).
    pub async fn read_text(&mut self, timeout: Duration) -> Result<String, ExpectError> {
        self.expect.read_text(timeout).await
    }

    /// Drops what is buffered and not yet matched.
    pub fn clear(&mut self) -> String {
        self.expect.clear()
    }

    /// Text read since the last match.
    pub fn pending(&self) -> &str {
        self.expect.pending()
    }

    /// LAVA's `listen_feedback`: reads for `period`, logging lines as `feedback` of `namespace`;
    /// returns the bytes read.
    pub async fn listen_feedback(&mut self, period: Duration, namespace: &str) -> usize {
        *self.mode.lock().unwrap_or_else(|p| p.into_inner()) = Some(namespace.to_string());
        let n = self.expect.drain_for(period).await.unwrap_or(0);
        *self.mode.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.expect.clear();
        n
    }

    /// Ends the connection: a qemu guest is asked to power off and its process stopped; a
    /// connect command is killed; a labd console subscription and lease are dropped.
    pub async fn finalise(&mut self, qemu: bool) {
        if !self.connected {
            return;
        }
        if let Some(p) = self.process.as_mut() {
            if qemu && p.try_status().is_none() {
                let plan = SendPlan::sendline("poweroff", &self.linesep, 0);
                self.log.input(plan.log_message.as_str());
                for (b, _) in plan.chunks {
                    let _ = self.writer.send(&b).await;
                }
                // LAVA gives the guest a moment, then kills qemu.
                let _ = self.expect.drain_for(Duration::from_millis(100)).await;
            }
            p.stop(Duration::from_millis(100)).await;
        }
        self.connected = false;
    }

    /// The program behind a pty link, if any.
    pub fn process_mut(&mut self) -> Option<&mut PtyProcess> {
        self.process.as_mut()
    }
}

/// Compiles job or device regular expressions (refused ones were caught by validation; a bad
/// one here is a job error with LAVA's message).
pub fn compile_all(patterns: &[String]) -> Result<Vec<Pattern>, LavaError> {
    patterns
        .iter()
        .map(|p| {
            Pattern::new(p).map_err(|e| {
                LavaError::new(
                    LavaErrorType::Job,
                    format!("Invalid regular expression '{p}': {e}"),
                )
            })
        })
        .collect()
}

/// Python's `repr()` of a list of strings (`Setting prompt string to [...]`).
pub fn py_repr_list(items: &[String]) -> String {
    let parts: Vec<String> = items.iter().map(|s| py_repr_str(s)).collect();
    format!("[{}]", parts.join(", "))
}

/// What a failed wait means, as LAVA's `ShellSession.wait` raises it.
pub fn wait_error(e: ExpectError) -> LavaError {
    match e {
        ExpectError::Timeout { .. } => {
            LavaError::new(LavaErrorType::Job, "wait for prompt timed out")
        }
        ExpectError::Eof { .. } => connection_closed(),
        ExpectError::Io(e) => LavaError::new(LavaErrorType::Infrastructure, e.to_string()),
    }
}
