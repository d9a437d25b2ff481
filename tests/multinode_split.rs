//! Splitting a Multi-Node submission: labd's splitter against lava-server 2023.01's own
//! `split_multinode_yaml` (Debian's lava-server, run by hw-fixtures/lava/split_driver.py) on
//! the same submissions, then planning and placing the seed group on an inventory.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use labd::inventory::Inventory;
use labd::multinode::group::allocate::{Candidate, check_feasible, try_allocate};
use labd::multinode::group::{GroupError, GroupPlan, parse_submission, split};
use serde_json::{Value as Json, json};

const TARGET_GROUP: &str = "f00dcafe-0000-4000-8000-000000000000";
const SEED: &str = include_str!("multinode_support/seed-group.yaml");

/// Runs lava-server's splitter on every text.
fn lava_split(texts: &[&str]) -> Vec<Json> {
    let module = Path::new("/usr/lib/python3/dist-packages/lava_scheduler_app/utils.py");
    assert!(
        module.is_file(),
        "lava-server is not installed ({} missing): run .ci/install-deps",
        module.display()
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("hw-fixtures/lava/split_driver.py");
    let mut child = Command::new("/usr/bin/python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(texts).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "split_driver.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// labd's split in the driver's shape.
fn labd_split(text: &str) -> Json {
    let submission = parse_submission(text).unwrap();
    match split(&submission, TARGET_GROUP) {
        Err(GroupError::Submission { message }) => json!({"error": "labd", "message": message}),
        Err(e) => panic!("unexpected error kind: {e}"),
        Ok(jobs) => {
            let mut by_role = serde_json::Map::new();
            let mut orders = serde_json::Map::new();
            for job in jobs {
                let def = serde_json::to_value(&job.definition).unwrap();
                let top: Vec<Json> = job
                    .definition
                    .keys()
                    .map(|k| json!(k.as_str().unwrap()))
                    .collect();
                let mn: Vec<Json> = job
                    .multinode()
                    .unwrap()
                    .keys()
                    .map(|k| json!(k.as_str().unwrap()))
                    .collect();
                by_role
                    .entry(job.role.clone())
                    .or_insert_with(|| json!([]))
                    .as_array_mut()
                    .unwrap()
                    .push(def);
                orders
                    .entry(job.role.clone())
                    .or_insert_with(|| json!([]))
                    .as_array_mut()
                    .unwrap()
                    .push(json!([top, mn]));
            }
            json!({"jobs": by_role, "orders": orders})
        }
    }
}

/// Submissions covering the split's rules and quirks.
fn submissions() -> Vec<&'static str> {
    vec![
        SEED,
        // A string `role:` matches by substring ("hostess" contains "host"); the block's
        // timeout wins over the role's; top-level keys outside the copied list are dropped;
        // context stays at the top; an action with two keys becomes two actions.
        r#"
job_name: quirks
device_type: ignored
context: {dropped: true}
secrets: {a: b}
reboot_to_fastboot: false
notify: {criteria: {status: finished}}
protocols:
  lava-multinode:
    timeout: {minutes: 9}
    roles:
      host: {count: 1, device_type: qemu, timeout: {minutes: 1}, context: {arch: arm64}}
      hostess: {count: 2, device_type: qemu, tags: [a, b], essential: false, environment: {X: "1"}}
actions:
- deploy: {role: hostess, to: tmpfs}
  boot: {role: [host], method: qemu}
- test: {role: [host, hostess, nobody], definitions: []}
"#,
        // Roles whose count is 0 get no sub-job and need no actions; sub_ids run over roles.
        r#"
job_name: zero
protocols:
  lava-multinode:
    roles:
      a: {count: 0, device_type: x}
      b: {count: 3, device_type: y}
actions:
- test: {role: [b]}
"#,
        // Delayed start and a host role.
        r#"
job_name: delayed
protocols:
  lava-multinode:
    roles:
      host: {count: 1, device_type: x}
      guest: {count: 1, connection: ssh, host_role: host, expect_role: host, request: lava-start, timeout: {minutes: 3}}
actions:
- boot: {role: [host, guest], method: ssh}
"#,
        // lava-lxc and lava-vland are handed out per role.
        r#"
job_name: protos
protocols:
  lava-lxc:
    a: {name: lxc-a, distribution: debian}
  lava-vland:
    a: {vlan_one: {tags: [10G]}}
    b: {vlan_one: {tags: [1G]}}
  lava-multinode:
    roles:
      a: {count: 1, device_type: x}
      b: {count: 1, device_type: y}
actions:
- test: {role: [a, b]}
"#,
        // Errors lava-server reports with a message...
        "job_name: e1\nprotocols:\n  lava-multinode:\n    roles:\n      a: {count: 1, device_type: x}\nactions:\n- deploy: {to: tmpfs}\n",
        "job_name: e2\nprotocols:\n  lava-multinode:\n    roles:\n      h: {count: 2, device_type: x}\n      g: {count: 1, connection: ssh, host_role: h, expect_role: h}\nactions:\n- boot: {role: [h, g]}\n",
        "job_name: e3\nprotocols:\n  lava-vland: {a: {}}\n  lava-multinode:\n    roles:\n      a: {count: 2, device_type: x}\nactions:\n- boot: {role: [a]}\n",
        "job_name: e4\nprotocols:\n  lava-multinode:\n    roles:\n      a: {count: 1, device_type: x}\nactions:\n- deploy: [to, tmpfs]\n",
        // ...and where Python raises KeyError/TypeError (labd says what is wrong instead).
        "job_name: e5\nprotocols:\n  lava-multinode:\n    roles:\n      a: {count: 1, device_type: x}\n      b: {count: 1, device_type: y}\nactions:\n- deploy: {role: [a]}\n",
        "job_name: e6\nprotocols:\n  lava-multinode:\n    roles:\n      a: {device_type: x}\nactions:\n- deploy: {role: [a]}\n",
        "job_name: e7\nprotocols:\n  lava-multinode:\n    roles:\n      a: {count: 1, device_type: x}\nactions:\n- deploy: {role: 3}\n",
        "job_name: e8\nprotocols:\n  lava-multinode:\n    roles:\n      a: {count: 1, device_type: x}\n",
    ]
}

#[test]
fn splits_like_lava_server() {
    let texts = submissions();
    let lava = lava_split(&texts);
    assert_eq!(lava.len(), texts.len());
    for (i, (text, theirs)) in texts.iter().zip(&lava).enumerate() {
        let ours = labd_split(text);
        if let Some(kind) = theirs.get("error") {
            let message = theirs["message"].as_str().unwrap();
            assert!(
                ours.get("error").is_some(),
                "submission {i}: lava-server refused ({kind}: {message}), labd split it:\n{ours:#}"
            );
            if kind == "SubmissionException" {
                assert_eq!(ours["message"], theirs["message"], "submission {i}");
            }
            continue;
        }
        // labd lists sub-jobs; a role of count 0 has none (lava-server: an empty list).
        let mut jobs = theirs["jobs"].clone();
        jobs.as_object_mut()
            .unwrap()
            .retain(|_, v| !v.as_array().unwrap().is_empty());
        assert_eq!(ours["jobs"], jobs, "submission {i}");
        // Top-level key order is the server's; in lava-multinode, the first four keys are
        // fixed and the role's other keys come in Python set order (random), so only the
        // sets are compared.
        for (role, jobs) in theirs["orders"].as_object().unwrap() {
            if jobs.as_array().unwrap().is_empty() {
                continue;
            }
            for (j, order) in jobs.as_array().unwrap().iter().enumerate() {
                let mine = &ours["orders"][role][j];
                assert_eq!(
                    mine[0], order[0],
                    "submission {i} role {role}: top-level keys"
                );
                let (a, b) = (mine[1].as_array().unwrap(), order[1].as_array().unwrap());
                assert_eq!(a[..4], b[..4], "submission {i} role {role}");
                let mut a = a.clone();
                let mut b = b.clone();
                a.sort_by_key(|v| v.to_string());
                b.sort_by_key(|v| v.to_string());
                assert_eq!(a, b, "submission {i} role {role}: lava-multinode keys");
            }
        }
    }
    // The checks above compared something real: the seed gave four sub-jobs.
    assert_eq!(lava[0]["jobs"]["server"].as_array().unwrap().len(), 2);
}

#[test]
fn seed_sub_job_yaml_is_what_a_worker_receives() {
    let mut plan = GroupPlan::from_submission(&parse_submission(SEED).unwrap(), "g1").unwrap();
    let ids: Vec<String> = (0..4).map(|i| format!("7.{i}")).collect();
    plan.assign_ids(&ids);
    let yaml = plan.jobs[3].to_yaml().unwrap();
    assert_eq!(
        yaml,
        "\
actions:
- boot:
    role: slave
    method: minimal
    prompts:
    - '# '
- test:
    role: slave
    timeout:
      minutes: 5
    definitions:
    - from: inline
      name: group
      path: inline/group.yaml
      repository:
        metadata:
          format: Lava-Test Test Definition 1.0
          name: group
        run:
          steps:
          - lava-sync ready
job_name: seed multinode group
timeouts:
  job:
    minutes: 10
  action:
    minutes: 3
priority: medium
visibility: public
metadata:
  demo: seed
device_type: labd-sim-slave
protocols:
  lava-multinode:
    target_group: g1
    role: slave
    group_size: 4
    sub_id: 3
    is_slave: true
    timeout:
      minutes: 4
    roles:
      '7.0': server
      '7.1': server
      '7.2': client
      '7.3': slave
"
    );
    assert_eq!(
        plan.requirements
            .iter()
            .map(|r| (r.role.as_str(), r.device_type.as_str(), r.tags.join(",")))
            .collect::<Vec<_>>(),
        [
            ("server", "labd-sim", "usb-otg".to_string()),
            ("server", "labd-sim", "usb-otg".to_string()),
            ("client", "labd-sim-master", String::new()),
            ("slave", "labd-sim-slave", String::new()),
        ]
    );
    assert_eq!(
        (0..4).map(|i| plan.is_slave(i)).collect::<Vec<_>>(),
        [false, false, false, true]
    );
    assert_eq!(
        (0..4).map(|i| plan.is_essential(i)).collect::<Vec<_>>(),
        [false, false, true, false]
    );
}

fn inventory(devices: &[(&str, &str, &[&str])]) -> Vec<Candidate> {
    let mut text = String::from("[worker]\nname = \"w1\"\nstate_dir = \"/tmp/labd-split-test\"\n");
    for (name, ty, tags) in devices {
        let tags: Vec<String> = tags.iter().map(|t| format!("\"{t}\"")).collect();
        text.push_str(&format!(
            "[[device]]\nname = \"{name}\"\ndevice_type = \"{ty}\"\ntags = [{}]\n",
            tags.join(", ")
        ));
    }
    let inv = Inventory::parse(Path::new("inventory.toml"), &text).unwrap();
    Candidate::from_inventory(&inv.devices)
}

#[test]
fn seed_group_is_placed_refused_or_waits() {
    let plan = GroupPlan::from_submission(&parse_submission(SEED).unwrap(), "g").unwrap();
    let lab = inventory(&[
        ("sim01", "labd-sim", &["usb-otg"]),
        ("sim02", "labd-sim", &[]),
        ("sim03", "labd-sim", &["usb-otg", "hdmi"]),
        ("master01", "labd-sim-master", &[]),
        ("slave01", "labd-sim-slave", &[]),
    ]);
    let a = try_allocate(&plan.requirements, &lab, |_| false)
        .unwrap()
        .unwrap();
    let names: Vec<&str> = a.devices.iter().map(|d| d.as_str()).collect();
    assert_eq!(names, ["sim01", "sim03", "master01", "slave01"]);
    // A tagged board busy: the group waits (sim02 lacks the tag).
    assert_eq!(
        try_allocate(&plan.requirements, &lab, |d| d.as_str() == "sim03").unwrap(),
        None
    );
    // No slave board at all: refused at once, naming the role.
    let e = check_feasible(&plan.requirements, &lab[..4]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the inventory can never run this group: role slave needs 1 board(s) of type labd-sim-slave; matching boards: []"
    );
}

#[test]
fn plan_refuses_what_lava_server_or_labd_cannot_run() {
    let plan = |roles: &str| {
        let text = format!(
            "job_name: x\nprotocols:\n  lava-multinode:\n    roles:\n{roles}\nactions:\n- test: {{role: [a, b]}}\n"
        );
        GroupPlan::from_submission(&parse_submission(&text).unwrap(), "g")
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    assert_eq!(
        plan("      a: {count: 1, device_type: x, connection: ssh}"),
        Err("Multi-Node submission: lava-multinode protocol cannot support device_type and connection for a single role.".into())
    );
    assert_eq!(
        plan(
            "      a: {count: 1, device_type: x}\n      b: {count: 1, connection: ssh, host_role: a, expect_role: a}"
        ),
        Err(
            "role b: secondary connections (connection: without device_type) are not run by labd"
                .into()
        )
    );
    assert_eq!(
        plan(
            "      a: {count: 1, device_type: x}\n      b: {count: 1, device_type: y, host_role: c, expect_role: a}"
        ),
        Err("Multi-Node submission: 'host_role' 'c' does not exist".into())
    );
    assert_eq!(
        plan("      a: {count: 1}"),
        Err("Multi-Node submission: role a: no device_type".into())
    );
    assert_eq!(
        plan("      a: {count: 1, device_type: x, tags: usb}"),
        Err("Multi-Node submission: role a: tags must be a list of strings".into())
    );
    assert_eq!(
        plan("      a: {count: 0, device_type: x}"),
        Err("Multi-Node submission: every role has count 0".into())
    );
    assert_eq!(
        plan("      a: {count: 1, device_type: x, request: lava-start, expect_role: a}"),
        Err("Multi-Node submission: role a: expect_role names the role itself".into())
    );
    assert_eq!(
        plan(
            "      a: {count: 1, device_type: x}\n      b: {count: 1, device_type: x, request: lava-start, expect_role: a}"
        ),
        Ok(())
    );
}
