//! Per-subscriber bounded queues and the scrollback ring.
//!
//! The hub pushes into a subscriber's queue without ever waiting: when the queue holds more
//! than its byte budget, new data is dropped and counted, and the subscriber gets one
//! `Missed(n)` before the next data that fits. A slow client therefore never slows the board,
//! the journal or the other clients (ser2net#139 is the counter-example).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{Notify, mpsc};

/// What a subscriber sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleEvent {
    /// Bytes from the board, exactly as received.
    Data(Bytes),
    /// This many bytes were dropped because this subscriber's queue was full.
    Missed(u64),
    /// The link to the board is lost; labd keeps reopening it. Subscribers stay attached.
    Lost { reason: String },
    /// The link is back after an outage of `after`; `opened` is the node or address opened.
    Back { after: Duration, opened: String },
}

struct Queue {
    events: VecDeque<ConsoleEvent>,
    bytes: usize,
    cap: usize,
    missed: u64,
    missed_total: u64,
    closed: bool,
}

/// The hub's side of one subscriber.
pub(crate) struct SubShared {
    pub(crate) id: u64,
    pub(crate) name: String,
    queue: Mutex<Queue>,
    notify: Notify,
    gone: AtomicBool,
}

impl SubShared {
    pub(crate) fn new(id: u64, name: String, cap: usize) -> Arc<Self> {
        Arc::new(Self {
            id,
            name,
            queue: Mutex::new(Queue {
                events: VecDeque::new(),
                bytes: 0,
                cap,
                missed: 0,
                missed_total: 0,
                closed: false,
            }),
            notify: Notify::new(),
            gone: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the subscriber dropped its end.
    pub(crate) fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }

    /// Queues board output; returns how many bytes were dropped instead (0 when queued).
    pub(crate) fn push_data(&self, data: &Bytes) -> u64 {
        let mut q = self.lock();
        if q.bytes + data.len() > q.cap {
            q.missed += data.len() as u64;
            q.missed_total += data.len() as u64;
            return data.len() as u64;
        }
        if q.missed > 0 {
            let m = std::mem::take(&mut q.missed);
            q.events.push_back(ConsoleEvent::Missed(m));
        }
        q.bytes += data.len();
        // Coalesce with the previous chunk while it is small, so a client that fell a little
        // behind gets fewer, larger writes.
        if let Some(ConsoleEvent::Data(prev)) = q.events.back_mut() {
            if prev.len() + data.len() <= 16 * 1024 && prev.len() < 4096 {
                let mut m = BytesMut::with_capacity(prev.len() + data.len());
                m.extend_from_slice(prev);
                m.extend_from_slice(data);
                *prev = m.freeze();
                drop(q);
                self.notify.notify_one();
                return 0;
            }
        }
        q.events.push_back(ConsoleEvent::Data(data.clone()));
        drop(q);
        self.notify.notify_one();
        0
    }

    /// Queues a state change; these are small and never dropped.
    pub(crate) fn push_control(&self, ev: ConsoleEvent) {
        let mut q = self.lock();
        if q.missed > 0 {
            let m = std::mem::take(&mut q.missed);
            q.events.push_back(ConsoleEvent::Missed(m));
        }
        q.events.push_back(ev);
        drop(q);
        self.notify.notify_one();
    }

    /// Ends the stream (the console stopped); queued events are still delivered.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_one();
    }
}

/// A subscriber's end: a stream of [`ConsoleEvent`]s, ending when the console stops.
pub struct Subscription {
    shared: Arc<SubShared>,
    /// Tells the hub at once when this subscription is dropped.
    unsubscribe: Option<mpsc::UnboundedSender<super::hub::Command>>,
}

impl Subscription {
    pub(crate) fn new(
        shared: Arc<SubShared>,
        unsubscribe: mpsc::UnboundedSender<super::hub::Command>,
    ) -> Self {
        Self {
            shared,
            unsubscribe: Some(unsubscribe),
        }
    }

    /// The next event, or `None` once the console has stopped.
    pub async fn recv(&mut self) -> Option<ConsoleEvent> {
        loop {
            {
                let mut q = self.shared.lock();
                if let Some(ev) = pop(&mut q) {
                    return Some(ev);
                }
                if q.closed {
                    return None;
                }
            }
            self.shared.notify.notified().await;
        }
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Option<ConsoleEvent> {
        pop(&mut self.shared.lock())
    }

    /// Bytes dropped for this subscriber so far.
    pub fn missed_total(&self) -> u64 {
        self.shared.lock().missed_total
    }

    /// The subscription as a `futures` stream.
    pub fn into_stream(self) -> impl futures::Stream<Item = ConsoleEvent> + Send {
        futures::stream::unfold(self, |mut s| async move { s.recv().await.map(|e| (e, s)) })
    }
}

fn pop(q: &mut Queue) -> Option<ConsoleEvent> {
    let ev = q.events.pop_front()?;
    if let ConsoleEvent::Data(d) = &ev {
        q.bytes -= d.len();
    }
    Some(ev)
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.shared.gone.store(true, Ordering::Relaxed);
        if let Some(tx) = self.unsubscribe.take() {
            let _ = tx.send(super::hub::Command::Unsubscribe { id: self.shared.id });
        }
    }
}

/// The last `cap` bytes of board output, kept as shared chunks (no copying on the hot path).
pub(crate) struct Scrollback {
    chunks: VecDeque<Bytes>,
    len: usize,
    cap: usize,
}

impl Scrollback {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            chunks: VecDeque::new(),
            len: 0,
            cap,
        }
    }

    pub(crate) fn push(&mut self, data: &Bytes) {
        if self.cap == 0 {
            return;
        }
        self.chunks.push_back(data.clone());
        self.len += data.len();
        while let Some(front) = self.chunks.front() {
            if self.len - front.len() < self.cap {
                break;
            }
            self.len -= front.len();
            self.chunks.pop_front();
        }
    }

    /// The last `max` bytes (at most `cap`).
    pub(crate) fn tail(&self, max: usize) -> Bytes {
        let want = max.min(self.cap).min(self.len);
        let mut out = BytesMut::with_capacity(want);
        let mut skip = self.len - want;
        for c in &self.chunks {
            if skip >= c.len() {
                skip -= c.len();
                continue;
            }
            out.extend_from_slice(&c[skip..]);
            skip = 0;
        }
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_counts_missed_bytes_then_reports_them() {
        let s = SubShared::new(1, "t".into(), 10);
        assert_eq!(s.push_data(&Bytes::from_static(b"12345678")), 0);
        assert_eq!(s.push_data(&Bytes::from_static(b"abcdef")), 6);
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut sub = Subscription::new(s.clone(), tx);
        assert_eq!(
            sub.try_recv(),
            Some(ConsoleEvent::Data(Bytes::from_static(b"12345678")))
        );
        assert_eq!(s.push_data(&Bytes::from_static(b"xy")), 0);
        assert_eq!(sub.try_recv(), Some(ConsoleEvent::Missed(6)));
        assert_eq!(
            sub.try_recv(),
            Some(ConsoleEvent::Data(Bytes::from_static(b"xy")))
        );
        assert_eq!(sub.missed_total(), 6);
    }

    #[test]
    fn scrollback_keeps_the_tail() {
        let mut sb = Scrollback::new(8);
        for c in [&b"abc"[..], b"defg", b"hijkl"] {
            sb.push(&Bytes::copy_from_slice(c));
        }
        assert_eq!(&sb.tail(100)[..], b"efghijkl");
        assert_eq!(&sb.tail(3)[..], b"jkl");
    }
}
