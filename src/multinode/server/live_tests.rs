//! A running server's journal: compaction while direct writes (durability `process`) go on,
//! then a restart that must see exactly the live groups; and the connection cap that keeps
//! the server within its open file limit.

use std::net::{Ipv4Addr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::multinode::protocol::encode_frame;

fn request(group: &str, client: &str, extra: &str) -> String {
    format!(
        r#"{{"port": 3079, "blocksize": 4096, "poll_delay": 1, "host": "127.0.0.1", "hostname": "w-{client}", "client_name": "{client}", "group_name": "{group}", "role": "r", {extra}}}"#
    )
}

async fn ask(addr: SocketAddr, body: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(&encode_frame(body)).await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8(out.get(8..).unwrap_or_default().to_vec()).unwrap()
}

/// Starts a server on `dir`; after a shutdown, waits for the old journal thread to let go of
/// the directory's lock (it does once the last connection task has dropped the state).
async fn start(dir: &std::path::Path, durability: Durability) -> Server {
    let cfg = ServerConfig {
        bind: Ipv4Addr::LOCALHOST.into(),
        port: 0,
        state_dir: Some(dir.to_path_buf()),
        durability,
        ..ServerConfig::default()
    };
    for _ in 0..100 {
        match Server::start(cfg.clone()).await {
            Err(CoordinatorError::Store { what, .. }) if what.contains("holds the lock") => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            started => return started.unwrap(),
        }
    }
    panic!("the state directory stayed locked");
}

async fn compaction_keeps_live_groups(durability: Durability) {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), durability).await;
    let addr = server.local_addr();
    let ack = r#"{"response": "ack"}"#;
    let send = |g: &str, v: usize| {
        request(
            g,
            "1",
            &format!(r#""request": "lava_send", "messageID": "m{v}", "message": {{"v": "{v}"}}"#),
        )
    };
    assert!(
        ask(
            addr,
            &request("keep", "1", r#""request": "group_data", "group_size": 1"#)
        )
        .await
        .contains("group_data")
    );
    // Groups that come and go: well over 1 MiB of journal, almost all dead, so it is
    // compacted (several times) while the live group keeps changing.
    let pad = "x".repeat(400);
    for i in 0..3000 {
        let g = format!("gone-{i}-{pad}");
        ask(
            addr,
            &request(&g, "1", r#""request": "group_data", "group_size": 1"#),
        )
        .await;
        assert_eq!(
            ask(
                addr,
                &request(&g, "1", r#""request": "clear_group", "group_size": 1"#)
            )
            .await,
            ack
        );
        if i % 100 == 0 {
            assert_eq!(ask(addr, &send("keep", i)).await, ack);
        }
    }
    server.shutdown().await;
    let journal = dir.path().join("coordinator.journal");
    let len = std::fs::metadata(&journal).unwrap().len();
    // About 3.7 MB were written; compaction keeps it under its threshold (plus one record).
    assert!(
        len < COMPACT_MIN_BYTES + 4096,
        "the journal was compacted while running: {len} bytes"
    );

    let server = start(dir.path(), durability).await;
    assert_eq!(server.groups(), vec!["keep".to_string()]);
    let wait = request(
        "keep",
        "1",
        r#""request": "lava_wait", "messageID": "m2900", "nodeID": "1""#,
    );
    assert_eq!(
        ask(server.local_addr(), &wait).await,
        r#"{"response": "ack", "message": {"1": {"v": "2900"}}}"#
    );
    server.shutdown().await;
}

#[tokio::test]
async fn compaction_while_writing_directly_keeps_live_groups() {
    compaction_keeps_live_groups(Durability::Process).await;
}

#[tokio::test]
async fn compaction_in_power_mode_keeps_live_groups() {
    compaction_keeps_live_groups(Durability::Power).await;
}

#[test]
fn connections_are_capped_to_fit_the_open_file_limit() {
    assert_eq!(connection_cap(1024, 4096), 1024);
    assert_eq!(connection_cap(1024, 1024), 1024 - FD_RESERVE as usize);
    assert_eq!(connection_cap(1024, 10), 1);
    assert_eq!(connection_cap(5, u64::MAX), 5);
}
