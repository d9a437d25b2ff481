//! Entry points for the cargo-fuzz targets (`fuzz/fuzz_targets/coordinator_frame.rs`,
//! `multinode_console.rs`, `multinode_split.rs`), also run over seed inputs by the unit tests below. They must never
//! panic, whatever the input.

use super::dut::console;
use super::protocol::{self, Reply};
use super::pyjson;
use super::server::Coordinator;

/// Coordinator input: the bytes are split at `\n` into frames, each decoded as the server
/// does and applied to one state machine; replies are encoded; the JSON layer must round-trip
/// (`dumps(parse(dumps(v))) == dumps(v)`).
pub fn coordinator_frame(data: &[u8]) {
    let mut coord = Coordinator::new(Some(64));
    for chunk in data.split(|b| *b == b'\n') {
        let Ok(value) = protocol::decode_frame(chunk, 1 << 20) else {
            continue;
        };
        let text = pyjson::dumps(&value);
        let again = pyjson::parse(&text).expect("dumps output must parse");
        assert_eq!(pyjson::dumps(&again), text, "dumps/parse must round-trip");
        let _ = pyjson::py_repr(&value);
        let out = coord.handle(&value);
        if let Some(r) = out.reply {
            let body = r.body();
            Reply::parse(&body).expect("our replies must parse");
            let _ = protocol::encode_frame(&body);
        }
    }
    let _ = coord.dump();
}

/// Console output: every Multi-Node request in it is found and split as the dispatcher does.
pub fn multinode_console(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut rest: &str = &text;
    while let Some(m) = console::find_request(rest) {
        assert!(m.start < m.end && m.end <= rest.len());
        let _ = m.request.test_case_id();
        let _ = console::send_data(&m.request.params);
        rest = &rest[m.end..];
    }
    let _ = console::split_send(&text);
}

/// A submission: parsed, split, planned, its sub-jobs written out and placed on a small lab.
pub fn multinode_split(data: &[u8]) {
    use super::group::{self, GroupPlan, allocate};
    let text = String::from_utf8_lossy(data);
    let Ok(submission) = group::parse_submission(&text) else {
        return;
    };
    let _ = group::is_multinode_submission(&submission);
    if let Ok(mut jobs) = group::split(&submission, "g") {
        let ids: Vec<String> = (0..jobs.len()).map(|i| i.to_string()).collect();
        group::assign_roles(&mut jobs, &ids);
        for (i, job) in jobs.iter().enumerate() {
            assert_eq!(job.sub_id as usize, i, "sub_ids count up from 0");
            let _ = job.to_yaml();
        }
    }
    if let Ok(plan) = GroupPlan::from_submission(&submission, "g") {
        assert_eq!(plan.jobs.len(), plan.requirements.len());
        let lab: Vec<allocate::Candidate> = ["a", "b", "c"]
            .iter()
            .enumerate()
            .filter_map(|(i, ty)| {
                Some(allocate::Candidate {
                    name: crate::ids::DeviceName::new(format!("d{i}")).ok()?,
                    device_type: ty.to_string(),
                    tags: vec!["t".into()],
                })
            })
            .collect();
        if let Ok(Some(a)) = allocate::try_allocate(&plan.requirements, &lab, |_| false) {
            assert_eq!(a.devices.len(), plan.jobs.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_entry_points_survive_seeds() {
        let frames: &[&[u8]] = &[
            b"00000002{}",
            b"0000002A{\"request\": \"lava_send\", \"client_name\": 1}",
            b"zzzzzzzz",
            b"FFFFFFFF",
            b"00000004[[[[",
            b"0000000B\"\\ud83d\\ude00\"",
            b"0000003F{\"request\":\"group_data\",\"client_name\":\"a\",\"group_name\":\"g\"}",
            b"00000070{\"request\":\"lava_sync\",\"client_name\":1.0,\"group_name\":true,\"hostname\":0,\"role\":null,\"group_size\":\"2\",\"messageID\":[]}",
        ];
        let mut all = Vec::new();
        for f in frames {
            coordinator_frame(f);
            all.extend_from_slice(f);
            all.push(b'\n');
        }
        coordinator_frame(&all);
        for c in [
            &b"<LAVA_MULTI_NODE> <LAVA_SEND a k=v>"[..],
            b"<LAVA_MULTI_NODE> <LAVA_\xff\xfe x>",
            b"<LAVA_MULTI_NODE> <LAVA_ <LAVA_MULTI_NODE> <LAVA_WAIT_ALL a b>>",
            b"<LAVA_MULTI_NODE> <LAVA_SEND \x1c =\x1c a=b>",
        ] {
            multinode_console(c);
        }
        for s in [
            &include_bytes!("../../tests/multinode_support/seed-group.yaml")[..],
            b"protocols: {lava-multinode: {roles: {a: {count: 2, device_type: a}}}}\nactions: [{x: {role: a}}]",
            b"protocols: {lava-multinode: {roles: {a: {count: 4294967295, device_type: a}, b: {count: 1}}}}",
            b"protocols: {lava-multinode: {roles: {1: 2}}}\nactions: [[], {}]",
            b"actions: !t {a: *b}",
            b"\xff\xfe",
        ] {
            multinode_split(s);
        }
    }
}
