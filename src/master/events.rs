//! lava-publisher's event websocket, as lava-worker's `listen_for_events` uses it: every message
//! is `[topic, uuid, datetime, username, data_json]`; a `.testjob` event naming this worker in
//! state Scheduled or Canceling makes the link ping at once instead of at the next interval.
//! Optional: without it jobs start at the next ping.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// aiohttp's `heartbeat=30` in lava-worker: a ping this often, and the connection is given up
/// when nothing (no pong, no message) arrived within half of it after a ping, as aiohttp does.
/// A half-open connection (a master reboot, a NAT timeout) would otherwise keep `next()`
/// waiting until TCP gives up, 15 minutes or more.
pub const HEARTBEAT: Duration = Duration::from_secs(30);
/// lava-worker reconnects after a second.
const RECONNECT: Duration = Duration::from_secs(1);

/// A second ping this long after an event: lava-server publishes a job's `Scheduled` event
/// from inside the scheduler's transaction, so a ping answered at once may not see the job yet
/// (it then waited for the next regular ping, 20 s or more).
const FOLLOW_UP: Duration = Duration::from_secs(1);

/// Whether a publisher message asks this worker to ping now. Malformed messages are ignored.
pub fn event_wants_ping(text: &str, worker: &str) -> bool {
    let Ok(serde_json::Value::Array(parts)) = serde_json::from_str::<serde_json::Value>(text)
    else {
        return false;
    };
    let [topic, _, _, _, data] = parts.as_slice() else {
        return false;
    };
    let (Some(topic), Some(data)) = (topic.as_str(), data.as_str()) else {
        return false;
    };
    if !topic.ends_with(".testjob") {
        return false;
    }
    let Ok(data) = serde_json::from_str::<serde_json::Value>(data) else {
        return false;
    };
    data.get("worker").and_then(|w| w.as_str()) == Some(worker)
        && matches!(
            data.get("state").and_then(|s| s.as_str()),
            Some("Scheduled" | "Canceling")
        )
}

/// `http(s)://` → `ws(s)://` (lava-worker's default is `<url>/ws/`, an http URL aiohttp accepts).
pub fn websocket_url(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        url.to_string()
    }
}

/// The follow-up ping after an event; it outlives the connection the event came on (a
/// reconnect within the second must not lose it).
struct FollowUp<'a> {
    at: Option<tokio::time::Instant>,
    ping_now: &'a Notify,
}

impl FollowUp<'_> {
    fn arm(&mut self) {
        self.at = Some(tokio::time::Instant::now() + FOLLOW_UP);
    }

    /// Waits for the follow-up and pings; never returns while none is due.
    async fn fire(&mut self) {
        match self.at {
            Some(t) => tokio::time::sleep_until(t).await,
            None => std::future::pending().await,
        }
        self.at = None;
        debug!("[EVENT] follow-up ping");
        self.ping_now.notify_one();
    }
}

/// Listens until `shutdown`, reconnecting every second, and wakes `ping_now` on every event
/// that names `worker`. `heartbeat` is [`HEARTBEAT`] but for tests.
pub async fn listen(
    url: String,
    version: String,
    worker: String,
    ping_now: Arc<Notify>,
    shutdown: CancellationToken,
    heartbeat: Duration,
) {
    let ws_url = websocket_url(&url);
    let mut failures = 0u64;
    let mut follow_up = FollowUp {
        at: None,
        ping_now: &ping_now,
    };
    loop {
        let connected = async {
            let mut req = ws_url.as_str().into_client_request()?;
            if let Ok(ua) = HeaderValue::from_str(&format!("lava-worker {version}")) {
                req.headers_mut().insert("User-Agent", ua);
            }
            // A server that takes the connection but never answers the handshake.
            tokio::time::timeout(heartbeat, tokio_tungstenite::connect_async(req))
                .await
                .unwrap_or(Err(tokio_tungstenite::tungstenite::Error::Io(
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no websocket handshake answer",
                    ),
                )))
        };
        let mut connected = std::pin::pin!(connected);
        let conn = loop {
            tokio::select! {
                c = &mut connected => break c,
                _ = follow_up.fire() => {}
                _ = shutdown.cancelled() => return,
            }
        };
        match conn {
            Ok((mut ws, _)) => {
                info!(url = %ws_url, "listening for master events");
                failures = 0;
                let mut heartbeat_tick = tokio::time::interval(heartbeat);
                heartbeat_tick.tick().await;
                // When the unanswered ping was sent; any frame received answers it.
                let mut ping_sent: Option<tokio::time::Instant> = None;
                let pong_timeout = heartbeat / 2;
                loop {
                    let silence = async {
                        match ping_sent {
                            Some(t) => tokio::time::sleep_until(t + pong_timeout).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        _ = follow_up.fire() => {}
                        _ = shutdown.cancelled() => {
                            let _ = ws.close(None).await;
                            return;
                        }
                        _ = silence => {
                            warn!(url = %ws_url, "event websocket: no answer to a ping within {pong_timeout:?}");
                            break;
                        }
                        _ = heartbeat_tick.tick() => {
                            let ping = ws.send(Message::Ping(Vec::new().into()));
                            // A peer that stopped reading may leave the send waiting.
                            match tokio::time::timeout(pong_timeout, ping).await {
                                Ok(Ok(())) => {
                                    ping_sent.get_or_insert_with(tokio::time::Instant::now);
                                }
                                _ => break,
                            }
                        }
                        msg = ws.next() => {
                            if let Some(Ok(_)) = &msg {
                                ping_sent = None;
                            }
                            match msg {
                                Some(Ok(Message::Text(t))) => {
                                    if event_wants_ping(t.as_str(), &worker) {
                                        info!("[EVENT] worker mentioned: pinging now");
                                        ping_now.notify_one();
                                        follow_up.arm();
                                    }
                                }
                                Some(Ok(Message::Close(_))) | None => break,
                                Some(Ok(_)) => {}
                                Some(Err(e)) => {
                                    debug!("event websocket: {e}");
                                    break;
                                }
                            }
                        }
                    }
                }
                warn!(url = %ws_url, "event websocket closed; reconnecting");
            }
            Err(e) => {
                failures += 1;
                // lava-worker retries silently; say it once, then only at debug level.
                if failures == 1 {
                    warn!(url = %ws_url, "no master event feed ({e}); jobs start at the next ping; retrying every {RECONNECT:?}");
                } else {
                    debug!(url = %ws_url, "event websocket: {e}");
                }
            }
        }
        let pause = tokio::time::sleep(RECONNECT);
        let mut pause = std::pin::pin!(pause);
        loop {
            tokio::select! {
                _ = &mut pause => break,
                _ = follow_up.fire() => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_from_the_real_publisher() {
        // Transcript frames (lava-publisher 2023.01).
        let scheduled = r#"["org.lavasoftware.testjob", "f43d5326-e625-11f1-ac17-02fc00000001", "2026-11-22T03:36:51.103459", "admin", "{\"health\": \"Unknown\", \"state\": \"Scheduled\", \"job\": 1, \"description\": \"peers qemu busybox boot\", \"priority\": 50, \"submit_time\": \"2026-11-22T03:36:51.031412+00:00\", \"submitter\": \"admin\", \"health_check\": false, \"device\": \"qemu01\", \"worker\": \"worker1\", \"device_type\": \"qemu\"}"]"#;
        assert!(event_wants_ping(scheduled, "worker1"));
        assert!(!event_wants_ping(scheduled, "worker2"));
        let canceling = scheduled.replace("Scheduled", "Canceling");
        assert!(event_wants_ping(&canceling, "worker1"));
        let running = scheduled.replace("Scheduled", "Running");
        assert!(!event_wants_ping(&running, "worker1"));
        let device = r#"["org.lavasoftware.device", "f43cb1fa", "2026-11-22T03:36:51.099345", "lavaserver", "{\"health\": \"Good\", \"state\": \"Scheduled\", \"device\": \"qemu01\", \"worker\": \"worker1\"}"]"#;
        assert!(!event_wants_ping(device, "worker1"));
        for bad in [
            "",
            "[]",
            "{}",
            "[1,2,3,4,5]",
            r#"["a.testjob","","","","{"]"#,
        ] {
            assert!(!event_wants_ping(bad, "worker1"));
        }
        assert_eq!(websocket_url("http://h:8001/ws/"), "ws://h:8001/ws/");
        assert_eq!(websocket_url("https://h/ws/"), "wss://h/ws/");
    }
}
