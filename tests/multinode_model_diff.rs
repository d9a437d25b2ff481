//! Differential test of labd's coordinator state machine against the real one: Debian's
//! `lava.coordinator.LavaCoordinator` class (2023.01), fed the same random request sequences
//! in-process (hw-fixtures/lava/coordinator_model.py). Requests are drawn from a small
//! vocabulary so groups, clients, roles and messageIDs collide, and include what real
//! clients never send: non-string names, `null`/numeric/list messageIDs, odd group sizes,
//! missing fields, unknown requests, non-object JSON. Every reply must be byte-identical;
//! where the Python class raises (the daemon would die), labd must have replied nack and
//! flagged it.

use labd::multinode::protocol::encode_frame;
use labd::multinode::pyjson;
use labd::multinode::server::Coordinator;
use labd_hw_fixtures::peers::lava_coordinator::{ModelOutcome, run_model};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn pick<'a>(rng: &mut StdRng, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

/// One request body, mostly well-formed, sometimes not.
fn request(rng: &mut StdRng) -> String {
    let client = pick(
        rng,
        &[
            r#""1""#,
            r#""2""#,
            r#""3""#,
            r#""data""#,
            "1",
            "2.0",
            "true",
            r#""""#,
        ],
    );
    let group = pick(rng, &[r#""g""#, r#""h""#, r#""g""#, "0", r#""""#]);
    let role = pick(rng, &[r#""a""#, r#""b""#, r#""a""#, "1"]);
    let mid = pick(
        rng,
        &[
            r#""m""#,
            r#""n""#,
            r#""m""#,
            r#""n""#,
            r#""m""#,
            r#""1""#,
            "1",
            "null",
            r#""data""#,
            "1.0",
            r#""m""#,
            r#""n""#,
            "[1]",
        ],
    );
    let size = pick(
        rng,
        &[
            "2", "3", "1", "0", r#""2""#, r#"" 3 ""#, "2.5", "true", "-1", r#""x""#, "null",
        ],
    );
    let msg = pick(
        rng,
        &[
            r#"{"k": "v"}"#,
            "{}",
            "null",
            r#""text""#,
            "[1, 2]",
            r#"{"k": {"n": [1.5, null]}}"#,
            r#"{"é": "ü\n"}"#,
            "0",
        ],
    );
    let request = pick(
        rng,
        &[
            "group_data",
            "group_data",
            "clear_group",
            "lava_send",
            "lava_send",
            "lava_send",
            "lava_wait",
            "lava_wait",
            "lava_wait_all",
            "lava_wait_all",
            "lava_sync",
            "lava_sync",
            "lava_sync",
            "aggregate",
            "complete",
            "dance",
        ],
    );
    let mut fields: Vec<String> = Vec::new();
    let mut field = |rng: &mut StdRng, k: &str, v: &str, p: f64| {
        if rng.random_bool(p) {
            fields.push(format!("\"{k}\": {v}"));
        }
    };
    field(rng, "port", "3079", 0.9);
    field(rng, "hostname", r#""worker""#, 0.99);
    field(rng, "client_name", client, 0.98);
    field(rng, "group_name", group, 0.98);
    field(rng, "role", role, 0.99);
    field(rng, "request", &format!("\"{request}\""), 0.97);
    field(rng, "group_size", size, 0.6);
    field(rng, "messageID", mid, 0.9);
    field(rng, "message", msg, 0.5);
    let waitrole = pick(rng, &[r#""a""#, r#""b""#, r#""zz""#]);
    field(rng, "waitrole", waitrole, 0.1);
    let bundle = pick(rng, &["1", r#""b""#]);
    field(rng, "bundle", bundle, 0.3);
    let sub = pick(rng, &[r#""7.0""#, r#""7.1""#, "null", "7"]);
    field(rng, "sub_id", sub, 0.3);
    match rng.random_range(0..60) {
        0 => "[1, 2]".into(),
        1 => r#""a string with request in it""#.into(),
        2 => "{\"request\": \"lava_send\", broken".into(),
        3 => "42".into(),
        _ => format!("{{{}}}", fields.join(", ")),
    }
}

#[test]
fn replies_match_the_real_lava_coordinator_class() {
    let mut lines = Vec::new();
    for seed in 0..400u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        lines.push("#RESET".to_string());
        for _ in 0..60 {
            lines.push(request(&mut rng));
        }
    }
    let model = run_model(&lines).expect("the real LavaCoordinator class (run .ci/install-deps)");
    assert_eq!(model.len(), lines.len(), "the model must answer every line");
    let mut labd = Coordinator::new(None);
    let (mut replies, mut crashes, mut json_errors) = (0, 0, 0);
    for (n, (line, want)) in lines.iter().zip(&model).enumerate() {
        if line == "#RESET" {
            assert_eq!(want, &ModelOutcome::Reset);
            labd = Coordinator::new(None);
            continue;
        }
        let parsed = pyjson::parse(line);
        match want {
            ModelOutcome::JsonError => {
                assert!(
                    parsed.is_err(),
                    "line {n}: Python refused {line} as JSON, labd did not"
                );
                json_errors += 1;
            }
            ModelOutcome::Reply(bytes) => {
                let value = parsed.unwrap_or_else(|e| panic!("line {n}: {line}: {e}"));
                let out = labd.handle(&value);
                let got = out
                    .reply
                    .map(|r| String::from_utf8(encode_frame(&r.body())).unwrap())
                    .unwrap_or_default();
                assert_eq!(&got, bytes, "line {n}: {line}");
                assert!(
                    out.crash.is_none(),
                    "line {n}: labd flagged a crash Python did not have"
                );
                replies += 1;
            }
            ModelOutcome::Crash(exc) => {
                let out = labd.handle(&parsed.unwrap());
                assert!(
                    out.crash.is_some(),
                    "line {n}: Python raised {exc} on {line}; labd answered {:?}",
                    out.reply.map(|r| r.body())
                );
                assert_eq!(
                    out.reply.map(|r| r.body()).as_deref(),
                    Some(r#"{"response": "nack"}"#)
                );
                // The real daemon is gone: both start again empty.
                labd = Coordinator::new(None);
                crashes += 1;
            }
            ModelOutcome::Reset => panic!("line {n}: unexpected reset"),
        }
    }
    eprintln!(
        "{replies} identical replies, {crashes} would-be crashes answered nack, {json_errors} JSON errors"
    );
    assert!(replies > 10_000 && crashes > 100);
}
