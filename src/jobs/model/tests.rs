use super::*;

/// Job 1 of the lava-server transcript, as the server hands it to the worker.
const SERVER_JOB: &str = "actions:\n- deploy:\n    images:\n      initrd:\n        image_arg: -initrd {initrd}\n        url: file:///srv/images/initramfs.cpio.gz\n      kernel:\n        image_arg: -kernel {kernel} -append \"console=ttyS0,115200 rdinit=/init panic=-1\"\n        url: file:///srv/images/vmlinuz\n    timeout:\n      minutes: 2\n    to: tmpfs\n- boot:\n    media: tmpfs\n    method: qemu\n    prompts:\n    - '/ # '\n    timeout:\n      minutes: 3\ncompatibility: 0\ncontext:\n  arch: amd64\ndevice_type: qemu\njob_name: peers qemu busybox boot\npriority: medium\ntimeouts:\n  action:\n    minutes: 5\n  connection:\n    minutes: 2\n  job:\n    minutes: 10\nvisibility: public\n";

const QEMU_DOC_JOB: &str = r#"
device_type: qemu
job_name: simple qemu job
timeouts: {job: {minutes: 20}}
priority: medium
visibility: public
context: {arch: amd64}
actions:
- deploy:
    to: tmpfs
    timeout: {minutes: 20}
    images:
      rootfs:
        url: http://images.validation.linaro.org/kvm/debian-sid-2014_08_21-amd64.qcow2.xz
        image_arg: -drive format=qcow2,file={rootfs}
        format: qcow2
        compression: xz
    os: debian
- boot:
    method: qemu
    media: tmpfs
    timeout: {minutes: 5}
    prompts: ['root@debian:~#']
    auto_login: {login_prompt: "login:", username: root}
- test:
    timeout: {minutes: 5}
    definitions:
    - {repository: https://github.com/Linaro/test-definitions, from: git, path: automated/linux/smoke/smoke.yaml, name: smoke-tests}
"#;

const MULTINODE: &str = r#"
job_name: First Multinode Job
timeouts: {job: {minutes: 10}, action: {minutes: 2}, connection: {minutes: 4}}
visibility: public
priority: medium
protocols:
  lava-multinode:
    roles:
      foo: {device_type: qemu, context: {arch: amd64}, count: 1}
      bar: {device_type: qemu, context: {arch: amd64}, count: 1, tags: [usb]}
    timeout: {minutes: 6}
actions:
- deploy:
    role: [foo, bar]
    timeout: {minutes: 5}
    to: tmpfs
    images:
      rootfs:
        image_arg: -drive format=raw,file={rootfs}
        url: http://files.lavasoftware.org/components/lava/standard/debian/stretch/amd64/2/stretch.img.gz
        sha256sum: b5cdb3b9e65fec2d3654a05dcdf507281f408b624535b33375170d1e852b982c
        compression: gz
- boot:
    role: [foo, bar]
    timeout: {minutes: 1}
    method: qemu
    media: tmpfs
    auto_login: {login_prompt: "debian login:", username: root}
    prompts: ["root@debian:"]
- test:
    role: [foo, bar]
    timeout: {minutes: 10}
    definitions:
    - from: inline
      name: mn-sync
      path: inline/mn-sync.yaml
      repository:
        metadata: {format: Lava-Test Test Definition 1.0, name: mn-sync, description: "sync demo"}
        run:
          steps:
          - lava-send ready role=$(lava-role) self=$(lava-self)
          - lava-wait-all ready
          - cat /tmp/lava_multi_node_cache.txt
          - lava-sync done
"#;

const SUB_JOB: &str = r#"
job_name: mn sub-job
timeouts: {job: {minutes: 10}}
visibility: public
device_type: qemu
protocols:
  lava-multinode:
    target_group: 2f5d0a33-9d7e-4e9b-8d19-0c4b8e3a2f11
    role: foo
    roles: {"1234": foo, "1235": bar}
    group_size: 2
    sub_id: 0
    timeout: {minutes: 6}
    request: lava-start
    expect_role: bar
actions:
- boot:
    role: [foo]
    method: minimal
    prompts: ['/ # ']
"#;

const UBOOT: &str = r##"
device_type: beaglebone-black
job_name: uboot with tests
timeouts:
  job: {minutes: 15}
  actions: {u-boot-interrupt: {seconds: 30}, lava-test-shell: {minutes: 3}}
  connections: {lava-test-shell: {seconds: 10}}
visibility: public
actions:
- deploy:
    to: downloads
    images:
      kernel: {url: 'http://example/zImage', md5sum: d41d8cd98f00b204e9800998ecf8427e}
      dtb: {url: 'http://example/am335x-boneblack.dtb', sha512sum: abc}
      rootfs: {url: 'http://example/rootfs.ext4.zst', compression: zstd, archive: tar}
- boot:
    method: u-boot
    commands:
    - setenv bootargs console=ttyO0,115200
    - bootz 0x82000000 - 0x88000000
    prompts: ['root@bbb:~#', '/ # ']
    auto_login:
      login_prompt: 'login:'
      username: root
      password_prompt: 'Password:'
      password: secret
      login_commands: [su, 'export PS1="# "']
    timeout: {minutes: 4}
- test:
    timeout: {minutes: 5}
    definitions:
    - from: inline
      name: smoke
      path: inline/smoke.yaml
      parameters: {TEST: quick, COUNT: 3}
      repository:
        metadata: {format: Lava-Test Test Definition 1.0, name: smoke}
        params: {VERBOSE: 1}
        parse:
          pattern: '(?P<test_case_id>\w+): (?P<result>PASS|FAIL)'
          fixupdict: {PASS: pass, FAIL: fail}
        run:
          steps:
          - lava-test-case pwd --shell pwd
          -
          - "42"
- test:
    interactive:
    - name: uboot-tests
      prompts: ['=> ']
      echo: discard
      script:
      - command: version
        name: version
        successes: [{message: 'U-Boot (?P<ver>\S+)'}]
        failures: [{message: 'Unknown command', exception: JobError, error: no version}]
      - delay: 2
      - command:
        wait_for_prompt: false
- test:
    monitors:
    - name: tests
      start: BOOTING ZEPHYR
      end: PROJECT EXECUTION SUCCESSFUL
      pattern: '(?P<result>(PASS|FAIL)) - (?P<test_case_id>\w+)\.'
      fixupdict: {PASS: pass, FAIL: fail}
"##;

#[test]
fn server_form_job_parses() {
    let job = JobDefinition::parse_and_validate(SERVER_JOB).unwrap();
    assert_eq!(job.job_name, "peers qemu busybox boot");
    assert_eq!(job.timeouts.job.secs(), 600);
    let Action::Deploy(d) = &job.actions[0] else {
        panic!()
    };
    assert_eq!(d.to, DeployTo::Tmpfs);
    // Order as written (the server sorted them: initrd first).
    assert_eq!(d.images.keys().collect::<Vec<_>>(), ["initrd", "kernel"]);
    assert_eq!(
        d.images.get("kernel").unwrap().image_arg.as_deref(),
        Some("-kernel {kernel} -append \"console=ttyS0,115200 rdinit=/init panic=-1\"")
    );
    let Action::Boot(b) = &job.actions[1] else {
        panic!()
    };
    assert_eq!(b.method, BootMethod::Qemu);
    assert_eq!(b.prompts, ["/ # "]);
    assert_eq!(b.common.timeout.unwrap().secs(), 180);
}

#[test]
fn documented_jobs_parse() {
    let job = JobDefinition::parse(QEMU_DOC_JOB).unwrap();
    let Action::Deploy(d) = &job.actions[0] else {
        panic!()
    };
    assert_eq!(
        d.images.get("rootfs").unwrap().compression,
        Some(Compression::Xz)
    );
    let Action::Boot(b) = &job.actions[1] else {
        panic!()
    };
    assert_eq!(b.auto_login.as_ref().unwrap().username, "root");
    // from: git parses, and validation says clearly that labd does not run it.
    let problems = job.validate();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "actions[2].test.definitions[0].from");
    assert!(
        problems[0].message.contains("`from: git`"),
        "{}",
        problems[0]
    );

    let job = JobDefinition::parse_and_validate(MULTINODE).unwrap();
    let mn = job.multinode().unwrap();
    assert!(!mn.is_sub_job());
    let roles = mn.requested_roles();
    assert_eq!(roles.len(), 2);
    assert_eq!(roles[1].0, "bar");
    assert_eq!(roles[1].1.tags, ["usb"]);
    assert_eq!(mn.timeout.unwrap().secs(), 360);
    assert_eq!(job.actions[2].common().role, ["foo", "bar"]);
    let repo = job.raw_repository(2, 0).unwrap();
    assert!(repo.get("run").is_some());

    let job = JobDefinition::parse_and_validate(SUB_JOB).unwrap();
    let mn = job.multinode().unwrap();
    assert!(mn.is_sub_job());
    assert_eq!(mn.assigned_roles()["1235"], "bar");
    assert_eq!(mn.request.as_deref(), Some("lava-start"));
}

#[test]
fn uboot_interactive_monitor_job() {
    let job = JobDefinition::parse_and_validate(UBOOT).unwrap();
    let t = &job.timeouts;
    assert_eq!(t.actions["u-boot-interrupt"].secs(), 30);
    let Action::Deploy(d) = &job.actions[0] else {
        panic!()
    };
    assert_eq!(d.to, DeployTo::Downloads);
    assert_eq!(
        d.images.get("rootfs").unwrap().archive.as_deref(),
        Some("tar")
    );
    let Action::Boot(b) = &job.actions[1] else {
        panic!()
    };
    assert_eq!(
        b.commands,
        Some(BootCommands::Literal(vec![
            "setenv bootargs console=ttyO0,115200".into(),
            "bootz 0x82000000 - 0x88000000".into()
        ]))
    );
    let al = b.auto_login.as_ref().unwrap();
    assert_eq!(al.password.as_deref(), Some("secret"));
    assert_eq!(al.login_commands[1], "export PS1=\"# \"");
    let Action::Test(t) = &job.actions[2] else {
        panic!()
    };
    let TestKind::Definitions(defs) = &t.kind else {
        panic!()
    };
    assert_eq!(
        defs[0].parameters,
        [
            ("TEST".to_string(), "quick".to_string()),
            ("COUNT".into(), "3".into())
        ]
    );
    let Repository::Inline(def) = &defs[0].repository else {
        panic!()
    };
    let steps = &def.run.as_ref().unwrap().steps;
    assert_eq!(steps.len(), 3);
    assert!(steps[1].is_none());
    assert_eq!(steps[2].as_ref().map(|s| s.0.as_str()), Some("42"));
    let e = err(&UBOOT.replace("- \"42\"", "- 42"));
    assert!(e.message.contains("invalid type: integer `42`"), "{e}");
    assert!(e.path.ends_with("run.steps[2]"), "{e}");
    assert_eq!(
        def.parse.as_ref().unwrap().fixupdict["PASS"],
        TestResult::Pass
    );
    let Action::Test(t) = &job.actions[3] else {
        panic!()
    };
    let TestKind::Interactive(i) = &t.kind else {
        panic!()
    };
    assert_eq!(i[0].script.len(), 3);
    assert_eq!(
        i[0].script[0].failures[0].exception,
        Some(InteractiveException::JobError)
    );
    assert_eq!(i[0].script[1].delay, Some(2));
    assert_eq!(i[0].script[2].command, None);
    let Action::Test(t) = &job.actions[4] else {
        panic!()
    };
    let TestKind::Monitors(m) = &t.kind else {
        panic!()
    };
    assert_eq!(m[0].end, "PROJECT EXECUTION SUCCESSFUL");

    // Timeout resolution, as Pipeline.add_action does it.
    let block = b.common.timeout.as_ref();
    let secs = |name: &str| {
        job.timeouts
            .action_timeout(
                name,
                DEFAULT_ACTION_TIMEOUT,
                block,
                Some(&b.common.timeouts),
                None,
            )
            .secs()
    };
    // The boot block's own timeout wins over the job's per-name value.
    assert_eq!(secs("u-boot-interrupt"), 240);
    assert_eq!(
        job.timeouts
            .action_timeout("x", DEFAULT_ACTION_TIMEOUT, None, None, None)
            .secs(),
        30
    );
    assert_eq!(
        job.timeouts
            .action_timeout("lava-test-shell", DEFAULT_ACTION_TIMEOUT, None, None, None)
            .secs(),
        180
    );
    assert_eq!(
        job.timeouts
            .connection_timeout("lava-test-shell", std::time::Duration::from_secs(30), None)
            .secs(),
        10
    );
}

fn err(text: &str) -> DefinitionError {
    JobDefinition::parse(text).unwrap_err()
}

const HEAD: &str =
    "job_name: x\ndevice_type: qemu\nvisibility: public\ntimeouts: {job: {minutes: 5}}\nactions:\n";

#[test]
fn errors_name_the_place() {
    let e = err(&format!(
        "{HEAD}- deploy: {{to: tmpfs, images: {{k: {{url: file:///k}}}}}}\n- boot:\n    method: fastboot\n"
    ));
    assert_eq!(e.path, "actions[1].boot.method");
    assert_eq!(e.line, Some(8));
    assert!(e.message.contains("boot method `fastboot` exists in LAVA but is not supported by labd (supported: minimal, u-boot, qemu)"), "{e}");
    assert!(e.to_string().starts_with("job definition:8:"), "{e}");

    let e = err(&format!(
        "{HEAD}- boot:\n    method: qemu\n    promts: ['# ']\n"
    ));
    assert_eq!(e.path, "actions[0].boot");
    assert!(e.message.contains("unknown field `promts`"), "{e}");
    assert_eq!(e.line, Some(8));

    let e = err(&format!("{HEAD}- command:\n    name: pdu_reboot\n"));
    assert_eq!(e.path, "actions[0]");
    assert!(e.message.contains("`command`"), "{e}");

    let e = err(&format!("{HEAD}- deploy:\n    to: nfs\n"));
    assert!(
        e.message.contains("deploy target `nfs` exists in LAVA"),
        "{e}"
    );

    let e = err(&format!(
        "{HEAD}- boot:\n    method: u-boot\n    prompts: ['# ']\n"
    ));
    assert!(e.message.contains("needs `commands`"), "{e}");
    assert!(e.path.starts_with("actions[0]"), "{e}");

    let e = err(&format!(
        "{HEAD}- boot:\n    method: minimal\n    commands: [a]\n"
    ));
    assert!(
        e.message
            .contains("`commands` does not apply to boot method `minimal`"),
        "{e}"
    );

    let e = err(&format!(
        "{HEAD}- test:\n    definitions:\n    - {{from: inline, name: 'bad name', path: x.yaml, repository: {{metadata: {{format: Lava-Test Test Definition 1.0, name: x}}}}}}\n"
    ));
    assert!(e.message.contains("name `bad name`"), "{e}");
    assert!(e.path.starts_with("actions[0].test.definitions"), "{e}");

    let e = err("job_name: x\ntimeouts: {job: {weeks: 1}}\nvisibility: public\nactions: []\n");
    assert_eq!(e.path, "timeouts.job");

    let e = err("job_name: [\n");
    assert!(e.line.is_some());
}

#[test]
fn cross_key_rules() {
    let t = |s: &str| JobDefinition::parse(s).unwrap().validate();
    let p = t(&format!(
        "{HEAD}- boot:\n    method: minimal\n    timeout: {{minutes: 6}}\n    prompts: ['# ']\n"
    ));
    assert_eq!(p[0].message, "Action timeout is larger than job timeout");
    assert_eq!(p[0].path, "actions[0].boot.timeout");
    let p = t("job_name: x\nvisibility: public\ntimeouts: {job: {minutes: 5}}\nactions: []\n");
    assert_eq!(
        p[0].message,
        "\"device_type\" or multinode should be defined"
    );
    let p = t(&format!(
        "{HEAD}- boot:\n    method: minimal\n    prompts: ['(']\n"
    ));
    assert!(
        p[0].message.starts_with("invalid regular expression"),
        "{p:?}"
    );
    let mn = MULTINODE.replace("- boot:\n    role: [foo, bar]", "- boot:\n    role: [baz]");
    let p = t(&mn);
    assert!(p.iter().any(|e| e.message.contains("role `baz`")), "{p:?}");
}

#[test]
fn fuzz_entry_point_survives_seeds() {
    for seed in [
        SERVER_JOB,
        QEMU_DOC_JOB,
        MULTINODE,
        SUB_JOB,
        UBOOT,
        "",
        "{",
        "- - -",
        "actions: !!binary AAAA",
    ] {
        crate::jobs::model::fuzz_job_yaml(seed.as_bytes());
    }
}

/// The form lava-server hands a worker: `role:` a string in each action, `is_slave` kept in
/// the protocol block.
const SUB_JOB_STRING_ROLE: &str = r#"
job_name: sub-job
device_type: labd-sim-slave
timeouts: {job: {minutes: 10}, action: {minutes: 2}}
visibility: public
priority: medium
protocols:
  lava-multinode:
    target_group: 8c6e5d3e-0d7e-4f1c-9b1a-2f3c4d5e6f70
    role: slave
    roles: {'903': slave, '902': client}
    group_size: 2
    sub_id: 1
    is_slave: true
    timeout: {minutes: 4}
actions:
- boot:
    role: slave
    method: minimal
    reset: false
    prompts: ['# ']
"#;

#[test]
fn string_role_and_is_slave_parse() {
    let job = JobDefinition::parse_and_validate(SUB_JOB_STRING_ROLE).unwrap();
    let Action::Boot(b) = &job.actions[0] else {
        panic!()
    };
    assert_eq!(b.common.role, ["slave"]);
    assert_eq!(b.reset, Some(false));
    let mn = job.multinode().unwrap();
    assert_eq!(mn.is_slave, Some(true));
    assert_eq!(mn.role.as_deref(), Some("slave"));
    // A list still parses; a number is refused.
    let listed =
        SUB_JOB_STRING_ROLE.replace("role: slave\n    method", "role: [slave]\n    method");
    let job = JobDefinition::parse_and_validate(&listed).unwrap();
    assert_eq!(job.actions[0].common().role, ["slave"]);
    let bad = SUB_JOB_STRING_ROLE.replace("role: slave\n    method", "role: 3\n    method");
    assert!(JobDefinition::parse_and_validate(&bad).is_err());
}
