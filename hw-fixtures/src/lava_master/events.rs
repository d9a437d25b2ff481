//! The double's lava-publisher: `/ws/` and the `org.lavasoftware.testjob` events it carries.

use std::sync::Mutex;

use super::http::{RawRequest, py_json_str};
use super::server::{lock, random_token};
use super::{State, WsFault};

/// lava-publisher's `/ws/`: the handshake, then every event as a text frame; pings are answered
/// (tungstenite does it while reading).
pub(crate) async fn event_feed(
    state: &Mutex<State>,
    mut stream: tokio::net::TcpStream,
    req: RawRequest,
) {
    use futures::{SinkExt as _, StreamExt as _};
    use tokio::io::AsyncWriteExt as _;
    use tokio_tungstenite::tungstenite::Message;
    let (key, mut rx, fault) = {
        let mut st = lock(state);
        let ua = req.header("User-Agent").unwrap_or("");
        if !ua.starts_with("lava-worker ") {
            let v = format!("GET /ws/: User-Agent {ua:?}, expected \"lava-worker <version>\"");
            st.violations.push(v);
        }
        st.ws_connections.push(req.clone());
        let Some(events) = st.events.as_ref() else {
            return;
        };
        (
            req.header("Sec-WebSocket-Key").unwrap_or("").to_string(),
            events.subscribe(),
            st.ws_fault,
        )
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Accept: {accept}\r\nContent-Type: application/octet-stream\r\nServer: Python/3.11 aiohttp/3.8.4\r\n\r\n"
    );
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        stream,
        tokio_tungstenite::tungstenite::protocol::Role::Server,
        None,
    )
    .await;
    if fault == WsFault::Silent {
        // Holds the socket without reading it (tungstenite answers pings only while reading)
        // until the double stops.
        std::future::pending::<()>().await;
    }
    let mut sent = 0;
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(text) => {
                    if ws.send(Message::Text(text.into())).await.is_err() {
                        return;
                    }
                    sent += 1;
                    if fault == WsFault::CloseAfterEvents(sent) {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            },
            msg = ws.next() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    }
}

/// Publishes a `org.lavasoftware.testjob` event as lava-publisher frames it:
/// `[topic, uuid, datetime, username, json.dumps(data)]`.
pub(crate) fn publish_job(st: &State, id: u64, state: &str, with_worker: bool) {
    let (Some(events), Some(job)) = (st.events.as_ref(), st.jobs.get(&id)) else {
        return;
    };
    let mut data = format!(
        "{{\"health\": \"Unknown\", \"state\": {}, \"job\": {id}, \"description\": \"double job\", \"priority\": 50, \"submitter\": \"admin\", \"health_check\": false",
        py_json_str(state)
    );
    if with_worker {
        data.push_str(&format!(
            ", \"device\": \"double01\", \"worker\": {}",
            py_json_str(&job.worker)
        ));
    }
    data.push_str(", \"device_type\": \"qemu\"}");
    let msg = format!(
        "[\"org.lavasoftware.testjob\", {}, \"2026-11-22T03:36:51.103459\", \"admin\", {}]",
        py_json_str(&random_token()),
        py_json_str(&data)
    );
    let _ = events.send(msg);
}
