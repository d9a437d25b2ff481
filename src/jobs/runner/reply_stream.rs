//! The daemon's side of a `run-job` reply stream (single jobs and groups): the job's log lines
//! go through a bounded queue to a writer task, so a client that stops reading (Ctrl-Z, a
//! stalled pipe) costs bounded memory and never slows the job. Lines that do not fit are
//! dropped and counted per job, and a marker line takes their place once the client catches
//! up. Control messages (`waiting`, the last message) always get through; once the job is
//! over, the writer has [`END_DEADLINE`] to deliver the rest, then the stream is closed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;

use super::service::write_msg;

/// Log lines queued for a client that does not read (per stream).
pub const QUEUE_LINES: usize = 4096;

/// How long a client may take to read the rest of the stream once the job is over (long
/// enough for a pager left open a while; the queue is bounded, so waiting costs little).
pub const END_DEADLINE: Duration = Duration::from_secs(300);

/// The marker line of a drop: `n` lines lost from the log kept at `log_file`.
pub fn dropped_text(n: u64, log_file: &std::path::Path) -> String {
    format!(
        "labd: {n} log lines dropped: the client did not read them; the full log is in {}",
        log_file.display()
    )
}

/// [`dropped_text`] as a LAVA log line (a warning), as the client prints any other.
pub fn dropped_log_line(n: u64, log_file: &std::path::Path) -> String {
    crate::jobs::log::LogRecord::new(
        crate::jobs::log::utc_now(),
        crate::jobs::log::Level::Warning,
        dropped_text(n, log_file),
    )
    .dump()
}

/// Builds the message that stands for `n` dropped lines of the job of the given (first
/// dropped) line.
pub type MarkerFn<M> = Box<dyn Fn(&M, u64) -> M + Send + Sync>;

/// Whether two line messages belong to the same job's log (drops are counted per job).
pub type SameJobFn<M> = fn(&M, &M) -> bool;

enum Control<M> {
    Msg(M),
    Finish(Option<M>),
}

struct Dropped<M> {
    /// Per job, in order of the first loss: the first line lost and how many.
    counts: Vec<(M, u64)>,
}

struct Shared<M> {
    lines: mpsc::Sender<M>,
    dropped: Mutex<Dropped<M>>,
    marker: MarkerFn<M>,
    same_job: SameJobFn<M>,
}

impl<M> Shared<M> {
    fn dropped(&self) -> std::sync::MutexGuard<'_, Dropped<M>> {
        self.dropped.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues the markers of earlier drops; false when one did not fit (the rest wait).
    fn flush_markers(&self, d: &mut Dropped<M>) -> bool {
        while let Some((first, n)) = d.counts.first() {
            match self.lines.try_send((self.marker)(first, *n)) {
                Ok(()) => {
                    d.counts.remove(0);
                }
                Err(mpsc::error::TrySendError::Full(_)) => return false,
                // The writer is gone: nothing will be read any more.
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    d.counts.clear();
                    return true;
                }
            }
        }
        true
    }
}

/// The job's end of the queue: [`Lines::send`] never waits.
pub struct Lines<M>(Arc<Shared<M>>);

impl<M> Clone for Lines<M> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<M> Lines<M> {
    /// Queues one log line, or counts it as dropped when the client is that far behind.
    pub fn send(&self, msg: M) {
        let s = &self.0;
        let mut d = s.dropped();
        let msg = if s.flush_markers(&mut d) {
            match s.lines.try_send(msg) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => return,
                Err(mpsc::error::TrySendError::Full(m)) => m,
            }
        } else {
            msg
        };
        match d
            .counts
            .iter_mut()
            .find(|(first, _)| (s.same_job)(first, &msg))
        {
            Some((_, n)) => *n += 1,
            None => d.counts.push((msg, 1)),
        }
    }
}

/// A reply stream being written to a client.
pub struct ReplyStream<M> {
    shared: Arc<Shared<M>>,
    control: mpsc::UnboundedSender<Control<M>>,
    writer: tokio::task::JoinHandle<()>,
    deadline: Duration,
}

impl<M: serde::Serialize + Send + Sync + 'static> ReplyStream<M> {
    /// Starts writing to `wr`; `on_gone` runs once if the client cannot be written to any more
    /// (it went away): the caller cancels the job there.
    pub fn start(
        wr: OwnedWriteHalf,
        marker: MarkerFn<M>,
        same_job: SameJobFn<M>,
        on_gone: impl FnOnce() + Send + 'static,
    ) -> Self {
        Self::with_capacity(wr, QUEUE_LINES, marker, same_job, on_gone)
    }

    pub(crate) fn with_capacity(
        wr: OwnedWriteHalf,
        capacity: usize,
        marker: MarkerFn<M>,
        same_job: SameJobFn<M>,
        on_gone: impl FnOnce() + Send + 'static,
    ) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            lines: tx,
            dropped: Mutex::new(Dropped { counts: Vec::new() }),
            marker,
            same_job,
        });
        let writer = tokio::spawn(write_stream(wr, rx, ctl_rx, shared.clone(), on_gone));
        Self {
            shared,
            control: ctl_tx,
            writer,
            deadline: END_DEADLINE,
        }
    }

    /// Replaces [`END_DEADLINE`].
    #[cfg(test)]
    pub(crate) fn set_deadline(&mut self, d: Duration) {
        self.deadline = d;
    }

    /// Where the job sends its log lines.
    pub fn lines(&self) -> Lines<M> {
        Lines(self.shared.clone())
    }

    /// Sends a control message (`waiting`): never dropped, written before queued lines.
    pub fn control(&self) -> impl Fn(M) + Send + Sync + 'static {
        let tx = self.control.clone();
        move |m| {
            let _ = tx.send(Control::Msg(m));
        }
    }

    /// The job is over: writes the queued lines, the markers of what was dropped and `last`,
    /// then closes the stream; gives up after the deadline (the client is not reading).
    pub async fn finish(mut self, last: Option<M>) {
        let _ = self.control.send(Control::Finish(last));
        if tokio::time::timeout(self.deadline, &mut self.writer)
            .await
            .is_err()
        {
            tracing::warn!(
                deadline = ?self.deadline,
                "run-job: the client did not read the end of the stream; closing it"
            );
            self.writer.abort();
        }
    }
}

async fn write_stream<M: serde::Serialize + Send + Sync>(
    mut wr: OwnedWriteHalf,
    mut lines: mpsc::Receiver<M>,
    mut control: mpsc::UnboundedReceiver<Control<M>>,
    shared: Arc<Shared<M>>,
    on_gone: impl FnOnce(),
) {
    let last = loop {
        let msg = tokio::select! {
            biased;
            c = control.recv() => match c {
                Some(Control::Msg(m)) => m,
                Some(Control::Finish(last)) => break last,
                None => return,
            },
            Some(m) = lines.recv() => m,
        };
        if write_msg(&mut wr, &msg).await.is_err() {
            on_gone();
            return;
        }
    };
    // Everything the job sent is queued or counted by now.
    let mut rest = Vec::new();
    while let Ok(m) = lines.try_recv() {
        rest.push(m);
    }
    let counts = std::mem::take(&mut shared.dropped().counts);
    rest.extend(counts.iter().map(|(first, n)| (shared.marker)(first, *n)));
    rest.extend(last);
    for m in &rest {
        if write_msg(&mut wr, m).await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::UnixStream;

    #[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq)]
    enum Msg {
        Line(String, String),
        End,
    }

    fn marker() -> MarkerFn<Msg> {
        Box::new(|first, n| match first {
            Msg::Line(job, _) => Msg::Line(
                job.clone(),
                dropped_text(n, &std::path::Path::new(job).join("output.yaml")),
            ),
            Msg::End => Msg::End,
        })
    }

    fn same_job(a: &Msg, b: &Msg) -> bool {
        match (a, b) {
            (Msg::Line(a, _), Msg::Line(b, _)) => a == b,
            _ => false,
        }
    }

    async fn read_all(client: UnixStream) -> Vec<Msg> {
        let mut lines = BufReader::new(client).lines();
        let mut out = Vec::new();
        while let Some(l) = lines.next_line().await.unwrap() {
            out.push(serde_json::from_str(&l).unwrap());
        }
        out
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_gets_the_queue_then_markers_then_the_end() {
        let (daemon, client) = UnixStream::pair().unwrap();
        let (_rd, wr) = daemon.into_split();
        let stream = ReplyStream::with_capacity(wr, 100, marker(), same_job, || {});
        let (lines, control) = (stream.lines(), stream.control());
        control(Msg::Line("waiting".into(), String::new()));
        // Far more than the socket and the queue hold; never blocks.
        let line = "x".repeat(200);
        for i in 0..20_000 {
            let job = if i % 2 == 0 { "a" } else { "b" };
            lines.send(Msg::Line(job.into(), format!("{i} {line}")));
        }
        let finish = tokio::spawn(stream.finish(Some(Msg::End)));
        let got = read_all(client).await;
        finish.await.unwrap();
        assert_eq!(got[0], Msg::Line("waiting".into(), String::new()));
        assert_eq!(got.last(), Some(&Msg::End));
        let kept = got
            .iter()
            .filter(|m| matches!(m, Msg::Line(_, l) if l.ends_with(&line)))
            .count();
        assert!(kept < 2_000, "{kept} lines kept: the queue is bounded");
        let markers: Vec<&Msg> = got
            .iter()
            .filter(|m| matches!(m, Msg::Line(_, l) if l.starts_with("labd: ")))
            .collect();
        let mut lost = 0;
        for (m, job) in markers.iter().zip(["a", "b"]) {
            let Msg::Line(j, text) = m else { panic!() };
            assert_eq!(j, job);
            let n: usize = text
                .strip_prefix("labd: ")
                .and_then(|t| t.split(' ').next())
                .unwrap()
                .parse()
                .unwrap();
            assert!(
                text.ends_with(&format!(
                    " log lines dropped: the client did not read them; the full log is in {job}/output.yaml"
                )),
                "{text}"
            );
            lost += n;
        }
        assert_eq!(markers.len(), 2, "one marker per job");
        assert_eq!(
            kept + lost,
            20_000,
            "every line is either delivered or counted"
        );
    }

    #[tokio::test]
    async fn a_marker_takes_the_place_of_the_lost_lines_when_the_client_catches_up() {
        let (daemon, client) = UnixStream::pair().unwrap();
        let (_rd, wr) = daemon.into_split();
        let stream = ReplyStream::with_capacity(wr, 4, marker(), same_job, || {});
        let lines = stream.lines();
        // Fill the socket so the writer blocks, then the queue, then lose some.
        let big = "y".repeat(64 * 1024);
        let mut client = BufReader::new(client).lines();
        let mut sent = 0;
        for _ in 0..200 {
            lines.send(Msg::Line("a".into(), big.clone()));
            sent += 1;
        }
        // Read everything there is so far, then send one more line: the marker comes first.
        let mut kept = 0;
        while let Ok(Ok(Some(l))) =
            tokio::time::timeout(Duration::from_millis(300), client.next_line()).await
        {
            let m: Msg = serde_json::from_str(&l).unwrap();
            assert_eq!(m, Msg::Line("a".into(), big.clone()));
            kept += 1;
        }
        assert!(kept < sent);
        lines.send(Msg::Line("a".into(), "after".into()));
        let m: Msg = serde_json::from_str(&client.next_line().await.unwrap().unwrap()).unwrap();
        let lost = sent - kept;
        assert_eq!(
            m,
            Msg::Line(
                "a".into(),
                dropped_text(lost as u64, std::path::Path::new("a/output.yaml"))
            )
        );
        let m: Msg = serde_json::from_str(&client.next_line().await.unwrap().unwrap()).unwrap();
        assert_eq!(m, Msg::Line("a".into(), "after".into()));
        stream.finish(Some(Msg::End)).await;
        let m: Msg = serde_json::from_str(&client.next_line().await.unwrap().unwrap()).unwrap();
        assert_eq!(m, Msg::End);
        assert!(client.next_line().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn after_the_deadline_a_client_that_never_reads_is_closed() {
        let (daemon, client) = UnixStream::pair().unwrap();
        let (_rd, wr) = daemon.into_split();
        let mut stream = ReplyStream::with_capacity(wr, 4, marker(), same_job, || {});
        stream.set_deadline(Duration::from_millis(200));
        let lines = stream.lines();
        let big = "z".repeat(64 * 1024);
        for _ in 0..50 {
            lines.send(Msg::Line("a".into(), big.clone()));
        }
        let started = std::time::Instant::now();
        stream.finish(Some(Msg::End)).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        // The stream is closed without its end: the client sees EOF after what was written
        // (maybe half a line).
        let mut got = Vec::new();
        let mut client = client;
        tokio::io::AsyncReadExt::read_to_end(&mut client, &mut got)
            .await
            .unwrap();
        assert!(!String::from_utf8_lossy(&got).contains("\"End\""));
    }

    #[tokio::test]
    async fn a_client_gone_is_reported_once_and_sending_goes_on() {
        let (daemon, client) = UnixStream::pair().unwrap();
        let (_rd, wr) = daemon.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let stream = ReplyStream::with_capacity(wr, 4, marker(), same_job, move || {
            let _ = tx.send(());
        });
        drop(client);
        let lines = stream.lines();
        for i in 0..100 {
            lines.send(Msg::Line("a".into(), i.to_string()));
        }
        rx.recv().await.unwrap();
        for i in 0..100 {
            lines.send(Msg::Line("a".into(), i.to_string()));
        }
        stream.finish(Some(Msg::End)).await;
        assert!(rx.recv().await.is_none(), "reported once");
    }
}
