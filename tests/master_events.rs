//! The event feed (`labd::master::events::listen`) against the lava-server double's `/ws/`
//! when the connection misbehaves: a half-open socket that stops answering pings, and a
//! connection dropped right after an event. A short heartbeat keeps the tests quick.

mod master_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use labd_hw_fixtures::lava_master::{MasterDouble, WsFault};
use master_support::*;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const HEARTBEAT: Duration = Duration::from_millis(400);

/// The listener, and how many times it asked the link to ping.
struct Feed {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    pings: Arc<AtomicUsize>,
    counter: tokio::task::JoinHandle<()>,
}

impl Feed {
    fn start(d: &MasterDouble, worker: &str) -> Self {
        let ping_now = Arc::new(Notify::new());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(labd::master::events::listen(
            format!("{}ws/", d.url()),
            "2023.01".into(),
            worker.into(),
            ping_now.clone(),
            shutdown.clone(),
            HEARTBEAT,
        ));
        let pings = Arc::new(AtomicUsize::new(0));
        let counter = {
            let pings = pings.clone();
            tokio::spawn(async move {
                loop {
                    ping_now.notified().await;
                    pings.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        Self {
            shutdown,
            task,
            pings,
            counter,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("the listener stops")
            .unwrap();
        self.counter.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_pings_keep_the_connection() {
    init_tracing();
    let d = MasterDouble::start();
    let feed = Feed::start(&d, "ev2");
    wait_until(Duration::from_secs(10), "the event feed", || {
        !d.ws_connections().is_empty()
    })
    .await;
    // Five heartbeats, each answered by the double's pong.
    tokio::time::sleep(HEARTBEAT * 5).await;
    assert_eq!(d.ws_connections().len(), 1);
    feed.stop().await;
    assert_clean(&d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_feed_is_given_up_and_reconnected() {
    init_tracing();
    let d = MasterDouble::start();
    d.set_ws_fault(WsFault::Silent);
    let feed = Feed::start(&d, "ev3");
    wait_until(Duration::from_secs(10), "the event feed", || {
        !d.ws_connections().is_empty()
    })
    .await;
    let t = std::time::Instant::now();
    // A ping after one heartbeat, no answer within half of it, a reconnect after a second.
    wait_until(Duration::from_secs(5), "a reconnect", || {
        d.ws_connections().len() >= 2
    })
    .await;
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // The new connection works again: the event of a job reaches the link.
    d.set_ws_fault(WsFault::None);
    let before = d.ws_connections().len();
    wait_until(Duration::from_secs(5), "a working connection", || {
        d.ws_connections().len() > before
    })
    .await;
    d.add_worker("ev3", "t");
    tokio::time::sleep(Duration::from_millis(200)).await;
    d.submit("ev3", &definition("half-open"), DEVICE);
    let pings = feed.pings.clone();
    wait_until(Duration::from_secs(5), "a ping for the event", || {
        pings.load(Ordering::SeqCst) >= 1
    })
    .await;
    feed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follow_up_ping_survives_a_reconnect() {
    init_tracing();
    let d = MasterDouble::start();
    d.add_worker("ev4", "t");
    // The job's two events, then the double drops the connection: the listener reconnects
    // (after a second) while its follow-up ping (a second after the event) is pending.
    d.set_ws_fault(WsFault::CloseAfterEvents(2));
    let feed = Feed::start(&d, "ev4");
    wait_until(Duration::from_secs(10), "the event feed", || {
        !d.ws_connections().is_empty()
    })
    .await;
    d.submit("ev4", &definition("reconnect"), DEVICE);
    let pings = feed.pings.clone();
    wait_until(Duration::from_secs(5), "the ping and the follow-up", || {
        pings.load(Ordering::SeqCst) >= 2
    })
    .await;
    assert!(d.ws_connections().len() >= 2, "not reconnected");
    feed.stop().await;
}
