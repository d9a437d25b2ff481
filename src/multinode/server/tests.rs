//! The state machine against lava-coordinator's documented behaviour. Expected replies come
//! from /work/shared/reference/coordinator-transcript.txt and lava-protocols.md section 1.

use rand::{Rng, SeedableRng};

use super::*;
use crate::multinode::pyjson::{self, Value};

fn base(client: &str, role: &str) -> String {
    format!(
        r#""port": 3079, "blocksize": 4096, "poll_delay": 1, "host": "127.0.0.1", "hostname": "worker-{client}", "client_name": "{client}", "group_name": "g", "role": "{role}""#
    )
}

/// Sends `{base, extra}` and returns the reply body ("" when the connection closes silently).
fn ask(c: &mut Coordinator, client: &str, role: &str, extra: &str) -> String {
    let text = format!("{{{}, {extra}}}", base(client, role));
    let v = pyjson::parse(&text).unwrap();
    c.handle(&v).reply.map(|r| r.body()).unwrap_or_default()
}

fn raw(c: &mut Coordinator, text: &str) -> Outcome {
    c.handle(&pyjson::parse(text).unwrap())
}

const WAIT: &str = r#"{"response": "wait"}"#;
const ACK: &str = r#"{"response": "ack"}"#;
const NACK: &str = r#"{"response": "nack"}"#;

#[test]
fn transcript_scenario() {
    let mut c = Coordinator::new(None);
    let (a, b) = (("100.0", "server"), ("100.1", "client"));
    let gd = r#""request": "group_data", "group_size": 2"#;
    assert_eq!(ask(&mut c, a.0, a.1, gd), WAIT);
    let roles = r#"{"response": "group_data", "roles": {"100.0": "server", "100.1": "client"}}"#;
    assert_eq!(ask(&mut c, b.0, b.1, gd), roles);
    assert_eq!(ask(&mut c, a.0, a.1, gd), roles);
    let wait_ip = r#""request": "lava_wait", "messageID": "ipaddr", "nodeID": "100.1""#;
    assert_eq!(ask(&mut c, b.0, b.1, wait_ip), WAIT);
    let send = r#""request": "lava_send", "messageID": "ipaddr", "message": {"ipaddr": "127.0.0.1", "port": "5000"}"#;
    assert_eq!(ask(&mut c, a.0, a.1, send), ACK);
    assert_eq!(
        ask(&mut c, b.0, b.1, wait_ip),
        r#"{"response": "ack", "message": {"100.0": {"ipaddr": "127.0.0.1", "port": "5000"}}}"#
    );
    let sync = r#""request": "lava_sync", "messageID": "booted""#;
    assert_eq!(ask(&mut c, a.0, a.1, sync), WAIT);
    assert_eq!(ask(&mut c, b.0, b.1, sync), WAIT);
    let booted = r#"{"response": "ack", "message": "booted"}"#;
    assert_eq!(ask(&mut c, a.0, a.1, sync), booted);
    assert_eq!(ask(&mut c, b.0, b.1, sync), booted);
    // The ID is reusable once everyone picked it up: a new round starts with wait.
    assert_eq!(ask(&mut c, a.0, a.1, sync), WAIT);
    let wa = r#""request": "lava_wait_all", "messageID": "ready""#;
    assert_eq!(ask(&mut c, a.0, a.1, wa), NACK);
    let sa = r#""request": "lava_send", "messageID": "ready", "message": {"a": "1"}"#;
    assert_eq!(ask(&mut c, a.0, a.1, sa), ACK);
    assert_eq!(ask(&mut c, a.0, a.1, wa), WAIT);
    let sb = r#""request": "lava_send", "messageID": "ready", "message": {"b": "2"}"#;
    assert_eq!(ask(&mut c, b.0, b.1, sb), ACK);
    assert_eq!(
        ask(&mut c, a.0, a.1, wa),
        r#"{"response": "ack", "message": {"100.0": {"a": "1"}, "100.1": {"b": "2"}}}"#
    );
    let clear = r#""request": "clear_group", "group_size": 2"#;
    assert_eq!(ask(&mut c, a.0, a.1, clear), ACK);
    assert_eq!(c.group_count(), 1);
    assert_eq!(ask(&mut c, b.0, b.1, clear), ACK);
    assert_eq!(
        c.group_count(),
        0,
        "group deleted after the last clear_group"
    );
    // Group gone and no group_size to re-create it.
    assert_eq!(ask(&mut c, b.0, b.1, wait_ip), NACK);
    assert_eq!(raw(&mut c, "{}").reply.unwrap().body(), NACK);
}

#[test]
fn wait_all_with_waitrole_iterates_the_requesters_role() {
    let mut c = Coordinator::new(None);
    let gd = r#""request": "group_data", "group_size": 3"#;
    ask(&mut c, "1", "host", gd);
    ask(&mut c, "2", "guest", gd);
    ask(&mut c, "3", "guest", gd);
    let ws = r#""request": "lava_wait_all", "waitrole": "host", "messageID": "lava_start""#;
    // Unseen messageID: wait (not nack as without waitrole).
    assert_eq!(ask(&mut c, "2", "guest", ws), WAIT);
    let start = r#""request": "lava_send", "messageID": "lava_start", "message": {}"#;
    assert_eq!(ask(&mut c, "1", "host", start), ACK);
    // The first client of waitrole has sent: answered from messages[requester].
    assert_eq!(
        ask(&mut c, "2", "guest", ws),
        r#"{"response": "ack", "message": {"1": {}}}"#
    );
    // An unknown waitrole is a KeyError in lava-coordinator: labd says nack and survives.
    let bad = r#""request": "lava_wait_all", "waitrole": "nobody", "messageID": "x""#;
    let before = c.dump();
    let text = format!("{{{}, {bad}}}", base("2", "guest"));
    let out = raw(&mut c, &text);
    assert_eq!(out.reply.unwrap().body(), NACK);
    assert!(out.crash.is_some());
    assert_eq!(c.dump(), before);
}

#[test]
fn what_kills_lava_coordinator_is_a_nack_here() {
    let mut c = Coordinator::new(None);
    let gd = r#""request": "group_data", "group_size": 2"#;
    ask(&mut c, "1", "a", gd);
    let before = c.dump();
    for bad in [
        // KeyError 'group_name'
        r#"{"request": "lava_send", "client_name": "1"}"#,
        // new client without hostname / role
        r#"{"request": "group_data", "client_name": "9", "group_name": "g", "role": "a"}"#,
        r#"{"request": "group_data", "client_name": "9", "group_name": "g", "hostname": "h"}"#,
        // new group with a group_size int() refuses
        r#"{"request": "group_data", "client_name": "9", "group_name": "h", "hostname": "h", "role": "a", "group_size": "two"}"#,
        // unhashable names
        r#"{"request": "group_data", "client_name": ["x"], "group_name": "g", "hostname": "h", "role": "a"}"#,
        r#"{"request": "group_data", "client_name": "1", "group_name": {"x": 1}}"#,
        // aggregate with a non-string sub_id
        r#"{"request": "aggregate", "client_name": "1", "group_name": "g", "bundle": 1, "sub_id": 5}"#,
        // not objects
        "[1, 2]",
        "\"request\"",
        "42",
    ] {
        let out = raw(&mut c, bad);
        assert_eq!(out.reply.map(|r| r.body()).as_deref(), Some(NACK), "{bad}");
        assert_eq!(c.dump(), before, "{bad} changed the state");
    }
    // lava_send on an ID that lava_sync stored as a string: AttributeError in Python.
    ask(
        &mut c,
        "1",
        "a",
        r#""request": "lava_sync", "messageID": "s""#,
    );
    let before = c.dump();
    let text = format!(
        "{{{}, \"request\": \"lava_send\", \"messageID\": \"s\", \"message\": {{}}}}",
        base("1", "a")
    );
    assert_eq!(raw(&mut c, &text).reply.unwrap().body(), NACK);
    assert_eq!(c.dump(), before);
}

#[test]
fn small_quirks() {
    let mut c = Coordinator::new(None);
    // Any request registers; complete closes without a reply.
    let out = raw(
        &mut c,
        r#"{"request": "complete", "client_name": "1", "group_name": "g", "hostname": "h", "role": "r", "group_size": 1}"#,
    );
    assert!(out.reply.is_none());
    assert!(out.changed.is_some());
    assert_eq!(
        ask(&mut c, "1", "r", r#""request": "group_data""#),
        r#"{"response": "group_data", "roles": {"1": "r"}}"#
    );
    // Unknown request and missing client_name: nack.
    assert_eq!(ask(&mut c, "1", "r", r#""request": "dance""#), NACK);
    assert_eq!(
        raw(&mut c, r#"{"request": "lava_send", "group_name": "g"}"#)
            .reply
            .unwrap()
            .body(),
        NACK
    );
    // New group without or with zero group_size: nack, nothing created.
    assert_eq!(
        raw(
            &mut c,
            r#"{"request": "group_data", "client_name": "1", "group_name": "n", "group_size": 0.0}"#
        )
        .reply
        .unwrap()
        .body(),
        NACK
    );
    assert_eq!(c.group_count(), 1);
    // lava_send without messageID: the key is None; lava_sync echoes the message or the ID.
    assert_eq!(ask(&mut c, "1", "r", r#""request": "lava_send""#), ACK);
    assert_eq!(
        ask(&mut c, "1", "r", r#""request": "lava_wait""#),
        r#"{"response": "ack", "message": {"1": {}}}"#
    );
    assert_eq!(
        ask(
            &mut c,
            "1",
            "r",
            r#""request": "lava_sync", "messageID": "x", "message": {"k": 1}"#
        ),
        WAIT
    );
    assert_eq!(
        ask(
            &mut c,
            "1",
            "r",
            r#""request": "lava_sync", "messageID": "x""#
        ),
        r#"{"response": "ack", "message": "x"}"#
    );
}

#[test]
fn aggregate_gives_sub_id_zero_two_extra_waits() {
    let mut c = Coordinator::new(None);
    let gd = r#""request": "group_data", "group_size": 2"#;
    ask(&mut c, "1", "a", gd);
    ask(&mut c, "2", "a", gd);
    let agg0 = r#""request": "aggregate", "bundle": "b1", "sub_id": "5.0""#;
    let agg1 = r#""request": "aggregate", "bundle": "b2", "sub_id": "5.1""#;
    assert_eq!(ask(&mut c, "1", "a", agg0), WAIT);
    assert_eq!(ask(&mut c, "2", "a", agg1), ACK);
    assert_eq!(ask(&mut c, "1", "a", agg0), WAIT);
    assert_eq!(ask(&mut c, "1", "a", agg0), WAIT);
    assert_eq!(
        ask(&mut c, "1", "a", agg0),
        r#"{"response": "ack", "message": {"bundle": {"1": "b1", "2": "b2"}}}"#
    );
    assert_eq!(
        ask(
            &mut c,
            "1",
            "a",
            r#""request": "aggregate", "sub_id": "5.0""#
        ),
        NACK
    );
}

/// Requests drawn from a small vocabulary, so groups, IDs and roles collide often.
fn random_request(rng: &mut rand::rngs::StdRng) -> String {
    let client = ["1", "2", "3", "data"][rng.random_range(0..4)];
    let role = ["a", "b"][rng.random_range(0..2)];
    let group = ["g", "h"][rng.random_range(0..2)];
    let mid = ["m", "n", "1", "data"][rng.random_range(0..4)];
    let size = rng.random_range(0..4);
    let req = [
        format!(r#""request": "group_data", "group_size": {size}"#),
        format!(r#""request": "clear_group", "group_size": {size}"#),
        format!(r#""request": "lava_send", "messageID": "{mid}", "message": {{"k": "{client}"}}"#),
        format!(r#""request": "lava_send", "messageID": "{mid}""#),
        format!(r#""request": "lava_wait", "messageID": "{mid}""#),
        format!(r#""request": "lava_wait_all", "messageID": "{mid}""#),
        format!(r#""request": "lava_wait_all", "messageID": "{mid}", "waitrole": "{role}""#),
        format!(r#""request": "lava_sync", "messageID": "{mid}""#),
        format!(
            r#""request": "aggregate", "bundle": 1, "sub_id": "1.{}""#,
            size % 2
        ),
        r#""request": "complete""#.to_string(),
    ][rng.random_range(0..10)]
    .clone();
    format!(
        r#"{{"client_name": "{client}", "group_name": "{group}", "hostname": "w", "role": "{role}", "group_size": {size}, {req}}}"#
    )
}

/// Rebuilding from the requests marked `changed` gives the same state as the live run, and
/// the same replies afterwards: the journal records exactly what it must.
#[test]
fn replaying_changed_requests_rebuilds_the_same_state() {
    for seed in 0..200u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut live = Coordinator::new(None);
        let mut journal: Vec<Value> = Vec::new();
        for _ in 0..60 {
            let v = pyjson::parse(&random_request(&mut rng)).unwrap();
            if live.handle(&v).changed.is_some() {
                journal.push(v);
            }
        }
        let mut replayed = Coordinator::new(None);
        for v in &journal {
            replayed.handle(v);
        }
        assert_eq!(live.dump(), replayed.dump(), "seed {seed}");
    }
}
