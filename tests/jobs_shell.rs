//! The test-shell helpers, `run.sh` and the console delivery plan, run by real shells: Debian's
//! `/bin/sh` (dash) and busybox ash. Checks the exact signal lines, the files the helpers
//! write, that the delivery lines recreate every file byte for byte through an interactive shell
//! on a pseudo-terminal (echo on, prompt waits as the runner will do them), and that the signals
//! become the results LAVA records.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use labd::jobs::JobDefinition;
use labd::jobs::expect::{ConsoleExpect, Pattern};
use labd::jobs::log::{LogValue, LogWriter, parse_line};
use labd::jobs::model::{Action, TestKind};
use labd::jobs::shell::{DeliveryOptions, TestShellOverlay, plan_delivery};
use labd::jobs::signals::{SessionConfig, TestShellSession};

const JOB: &str = r#"
device_type: qemu
job_name: shell helpers
visibility: public
timeouts: {job: {minutes: 5}}
actions:
- test:
    definitions:
    - from: inline
      name: smoke
      path: inline/smoke.yaml
      parameters: {GREETING: hello}
      repository:
        metadata: {format: Lava-Test Test Definition 1.0, name: smoke}
        run:
          steps:
          - lava-test-case pwd --shell pwd
          - lava-test-case false-case --shell false
          - lava-test-case speed --result pass --measurement 12.5 --units MB/s
          - lava-test-set start net
          - lava-test-case ping --result SKIP
          - lava-test-set stop
          - lava-test-reference ref --result pass --reference http://example.com/r
          - lava-test-event boot-done
          - lava-test-case args --shell 'set -- a b; test "$2" = b'
          - echo "$GREETING"
    - from: inline
      name: raise
      path: inline/raise.yaml
      repository:
        metadata: {format: Lava-Test Test Definition 1.0, name: raise}
        install:
          steps: [echo installing]
        run:
          steps:
          - lava-test-raise device fell over
          - echo never
"#;

struct Shell {
    name: &'static str,
    /// The `lava_test_sh_cmd`: shebang of the helpers and `$SHELL`.
    sh: PathBuf,
}

fn shells(tmp: &Path) -> Vec<Shell> {
    let dash = labd_hw_fixtures::require_program("sh").unwrap();
    let busybox = labd_hw_fixtures::require_program("busybox").unwrap();
    let ash = tmp.join("ash");
    std::os::unix::fs::symlink(&busybox, &ash).unwrap();
    vec![
        Shell {
            name: "dash",
            sh: dash,
        },
        Shell {
            name: "busybox ash",
            sh: ash,
        },
    ]
}

fn overlay(root: &Path, sh: &Path) -> (JobDefinition, TestShellOverlay) {
    let job = JobDefinition::parse_and_validate(JOB).unwrap();
    let results_dir = root.join("lava-12");
    let mut ov = TestShellOverlay::new(
        "12",
        results_dir.to_str().unwrap(),
        sh.to_str().unwrap(),
        &[("LAVA_JOB_ID".into(), "12".into())],
    );
    let Action::Test(t) = &job.actions[0] else {
        panic!()
    };
    let TestKind::Definitions(defs) = &t.kind else {
        panic!()
    };
    let with_raw: Vec<_> = defs
        .iter()
        .enumerate()
        .map(|(i, d)| (d.clone(), job.raw_repository(0, i)))
        .collect();
    ov.add_stage(0, &with_raw, |i| format!("1.{}", i + 1))
        .unwrap();
    (job, ov)
}

fn write_overlay(ov: &TestShellOverlay) {
    for d in ov.directories() {
        std::fs::create_dir_all(d).unwrap();
    }
    for f in &ov.files {
        std::fs::create_dir_all(Path::new(&f.path).parent().unwrap()).unwrap();
        std::fs::write(&f.path, &f.content).unwrap();
        if f.executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&f.path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
}

fn signal_lines(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.starts_with("<LAVA_"))
        .map(str::to_string)
        .collect()
}

#[test]
fn helpers_emit_lavas_signals_under_dash_and_busybox() {
    let tmp = tempfile::tempdir().unwrap();
    for shell in shells(tmp.path()) {
        let root = tmp.path().join(shell.name.replace(' ', "_"));
        let (_, ov) = overlay(&root, &shell.sh);
        write_overlay(&ov);
        let [export, source] = ov.pre_commands();
        let out = Command::new(&shell.sh)
            .arg("-c")
            .arg(format!("{export}; {source}; {}", ov.runner_command(0)))
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let dir = &ov.results_dir;
        assert_eq!(
            signal_lines(&stdout),
            [
                "<LAVA_SIGNAL_STARTRUN 0_smoke 12_1.1>",
                "<LAVA_SIGNAL_STARTTC pwd>",
                "<LAVA_SIGNAL_ENDTC pwd>",
                "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=pwd RESULT=pass>",
                "<LAVA_SIGNAL_STARTTC false-case>",
                "<LAVA_SIGNAL_ENDTC false-case>",
                "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=false-case RESULT=fail>",
                "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=speed RESULT=pass UNITS=MB/s MEASUREMENT=12.5>",
                "<LAVA_SIGNAL_TESTSET START net>",
                "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=ping RESULT=SKIP>",
                "<LAVA_SIGNAL_TESTSET STOP>",
                "<LAVA_SIGNAL_TESTREFERENCE ref pass http://example.com/r>",
                "<LAVA_SIGNAL_TESTEVENT boot-done>",
                "<LAVA_SIGNAL_STARTTC args>",
                "<LAVA_SIGNAL_ENDTC args>",
                // run.sh turns `$2` into `\$2` in --shell steps, as LAVA does, so inside
                // single quotes the test compares the literal text and fails.
                "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=args RESULT=fail>",
                "<LAVA_SIGNAL_ENDRUN 0_smoke 12_1.1>",
                "<LAVA_SIGNAL_STARTRUN 1_raise 12_1.2>",
                "<LAVA_SIGNAL_TESTRAISE device fell over>",
                "<LAVA_TEST_RUNNER EXIT>",
            ],
            "{}: stdout:\n{stdout}\nstderr:\n{stderr}",
            shell.name
        );
        assert!(
            stdout.contains("\nhello\n"),
            "{}: job parameter: {stdout}",
            shell.name
        );
        assert!(
            stdout.contains("installing"),
            "{}: install.sh ran",
            shell.name
        );
        assert!(
            !stdout.contains("never"),
            "{}: set -e stops run.sh",
            shell.name
        );
        // set -x traces the steps (on stderr here; a console merges them).
        assert!(
            stderr.contains("+ lava-test-case pwd --shell pwd"),
            "{}: {stderr}",
            shell.name
        );
        // The files lava-test-case writes, and the runner's bookkeeping.
        let results: Vec<_> = std::fs::read_dir(format!("{dir}/0/results"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        let smoke = results
            .iter()
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with("0_smoke-")
            })
            .unwrap();
        let read = |p: &str| std::fs::read_to_string(smoke.join(p)).unwrap();
        assert_eq!(read("results/pwd/result"), "pass\n");
        assert_eq!(read("results/speed/measurement"), "12.5\n");
        assert_eq!(read("results/speed/units"), "MB/s\n");
        assert_eq!(read("return_code"), "0\n");
        let raise = results
            .iter()
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with("1_raise-")
            })
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(raise.join("return_code")).unwrap(),
            "1\n"
        );
        assert_eq!(
            std::fs::read_to_string(raise.join("install_return_code")).unwrap(),
            "0\n"
        );
        assert!(
            !Path::new(&format!("{dir}/0/lava-test-runner.conf")).exists(),
            "conf renamed"
        );
    }
}

#[test]
fn helper_misuse_behaves_like_lava() {
    let tmp = tempfile::tempdir().unwrap();
    for shell in shells(tmp.path()) {
        let root = tmp.path().join(shell.name.replace(' ', "_"));
        let (_, ov) = overlay(&root, &shell.sh);
        write_overlay(&ov);
        let bin = format!("{}/bin", ov.results_dir);
        let run = |args: &str| {
            let out = Command::new(&shell.sh)
                .arg("-c")
                .arg(format!(
                    "export LAVA_RESULT_DIR={}/r; {bin}/{args}",
                    root.display()
                ))
                .env("PATH", format!("{bin}:/usr/bin:/bin"))
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        };
        let (code, out) = run("lava-test-case x --units MB");
        assert_eq!(
            (code, out.as_str()),
            (Some(1), "--result must be specified\n"),
            "{}",
            shell.name
        );
        let (code, out) = run("lava-test-case x --bogus 1");
        assert_eq!(code, Some(1));
        assert!(
            out.starts_with("Usage: lava-test-case TEST_CASE_ID --shell cmds ..."),
            "{out}"
        );
        let (code, out) = run("lava-test-set start");
        assert_eq!(code, Some(1));
        assert!(
            out.starts_with("Usage:\n       lava-test-set start NAME"),
            "{out}"
        );
        let (code, out) = run("lava-test-reference x --result pass");
        assert_eq!(
            (code, out.as_str()),
            (Some(1), "--reference must be specified\n")
        );
        let (code, out) = run("lava-test-raise");
        assert_eq!(
            (code, out.as_str()),
            (Some(1), "Usage:\n       lava-test-raise MESSAGE\n\n")
        );
        let (code, out) = run("lava-test-event a b");
        assert_eq!(code, Some(1), "{out}");
        let (code, out) = run("lava-test-feedback --namespace other");
        assert_eq!(
            (code, out.as_str()),
            (Some(0), "<LAVA_SIGNAL_TESTFEEDBACK other>\n")
        );
        let (code, out) = run("lava-test-feedback");
        assert_eq!(
            (code, out.as_str()),
            (Some(1), "--namespace must be specified\n")
        );
        // lava-signal: kmsg writes to /dev/kmsg instead (here a file stands in for it).
        let out = Command::new(&shell.sh)
            .arg("-c")
            .arg(format!(". {bin}/lava-common-functions; KMSG=true; signal '<LAVA_SIGNAL_X y>' 2>/dev/null || echo no-kmsg"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !text.contains("<LAVA_SIGNAL_X y>"),
            "{}: kmsg mode must not print on stdout: {text}",
            shell.name
        );
    }
}

/// An interactive shell on a pseudo-terminal, as a DUT's console looks.
struct PtyShell {
    master: std::fs::File,
    child: std::process::Child,
}

impl PtyShell {
    fn spawn(sh: &Path, cwd: &Path) -> (Self, ConsoleExpect<tokio::fs::File>) {
        let pty = nix::pty::openpty(None, None).unwrap();
        let slave: OwnedFd = pty.slave;
        let master: OwnedFd = pty.master;
        let mut cmd = Command::new(sh);
        cmd.arg("-i")
            .current_dir(cwd)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("PS1", "/ # ")
            .env("TERM", "dumb")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        let _ = master.as_raw_fd();
        let file = std::fs::File::from(master);
        let reader = tokio::fs::File::from_std(file.try_clone().unwrap());
        (
            Self {
                master: file,
                child,
            },
            ConsoleExpect::new(reader),
        )
    }

    fn sendline(&mut self, line: &str) {
        self.master.write_all(line.as_bytes()).unwrap();
        self.master.write_all(b"\n").unwrap();
    }
}

impl Drop for PtyShell {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_over_a_console_and_run_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    for shell in shells(tmp.path()) {
        let root = tmp.path().join(shell.name.replace(' ', "_"));
        std::fs::create_dir_all(&root).unwrap();
        let (job, ov) = overlay(&root, &shell.sh);
        let plan = plan_delivery(
            &ov.directories(),
            &ov.files,
            DeliveryOptions { max_line: 120 },
            4242,
        )
        .unwrap();
        let (mut pty, mut console) = PtyShell::spawn(&shell.sh, &root);
        let prompt = Pattern::literal("/ # ");
        let t = Duration::from_secs(20);
        console
            .expect(&[&prompt], t)
            .await
            .unwrap_or_else(|e| panic!("{}: no first prompt: {e}", shell.name));
        for c in &plan.commands {
            assert!(c.len() <= 120);
            pty.sendline(c);
            let m = console
                .expect(&[&prompt], t)
                .await
                .unwrap_or_else(|e| panic!("{}: {c}: {e}", shell.name));
            if std::env::var_os("LABD_DEBUG").is_some() {
                eprintln!("SENT {c:?}\nGOT {:?}", m.before);
            }
        }
        pty.sendline(&plan.done_command);
        let marker = Pattern::literal(&plan.done_marker);
        let m = console.expect(&[&marker], t).await.unwrap();
        // The echo showed the arithmetic, not the marker.
        assert!(
            m.before.contains("$((2121+2121))"),
            "{}: {:?}",
            shell.name,
            m.before
        );
        console.expect(&[&prompt], t).await.unwrap();
        for f in &ov.files {
            let got = std::fs::read(&f.path)
                .unwrap_or_else(|e| panic!("{}: {}: {e}", shell.name, f.path));
            assert!(
                got == f.content,
                "{}: {} differs:\n{}\n---- expected ----\n{}",
                shell.name,
                f.path,
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&f.content)
            );
        }
        // The md5sum check the runner may do.
        pty.sendline(&plan.verify_command);
        let m = console.expect(&[&prompt], t).await.unwrap();
        let sums: Vec<&str> = m
            .before
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| l.len() > 34 && l.as_bytes()[32] == b' ')
            .collect();
        assert_eq!(sums, plan.verify_expected, "{}", shell.name);

        // Now run stage 0 as the dispatcher does and turn the console into results.
        for c in ov.pre_commands() {
            pty.sendline(&c);
            console.expect(&[&prompt], t).await.unwrap();
        }
        pty.sendline(&ov.runner_command(0));
        let mut session = TestShellSession::new(SessionConfig {
            stage: 0,
            namespace: "common".into(),
            runs: ov.runs.clone(),
            ..Default::default()
        });
        let fixed = chrono::NaiveDate::from_ymd_opt(2023, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        let mut log = LogWriter::with_clock(Vec::new(), Box::new(move || fixed));
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut error = None;
        loop {
            assert!(Instant::now() < deadline, "{}: no EXIT", shell.name);
            // Read whatever arrives and hand it to the session, as the runner will.
            let text = console.read_text(Duration::from_millis(200)).await.unwrap();
            match session.feed(&text, Instant::now(), &mut log) {
                Ok(o) if o.finished => break,
                Ok(_) => {}
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        let e = error.expect("TESTRAISE ends the action");
        assert_eq!(e.message, "device fell over");
        assert_eq!(e.kind.as_str(), "Test");
        session.finish(Instant::now(), &mut log).unwrap();
        let records: Vec<_> = log.sink().iter().map(|l| parse_line(l).unwrap()).collect();
        let results: Vec<&LogValue> = records
            .iter()
            .filter(|r| r.lvl == "results")
            .map(|r| &r.msg)
            .collect();
        let case = |c: &str| {
            results
                .iter()
                .find(|r| r.get("case").and_then(LogValue::as_str) == Some(c))
                .copied()
        };
        let s = |v: &LogValue, k: &str| v.get(k).and_then(LogValue::as_str).map(str::to_string);
        let pwd = case("pwd").unwrap();
        assert_eq!(s(pwd, "definition").as_deref(), Some("0_smoke"));
        assert_eq!(s(pwd, "result").as_deref(), Some("pass"));
        assert!(matches!(pwd.get("starttc"), Some(LogValue::Int(_))));
        assert!(matches!(pwd.get("endtc"), Some(LogValue::Int(_))));
        assert_eq!(
            s(case("false-case").unwrap(), "result").as_deref(),
            Some("fail")
        );
        let speed = case("speed").unwrap();
        assert_eq!(speed.get("measurement"), Some(&LogValue::Float(12.5)));
        assert_eq!(s(speed, "units").as_deref(), Some("MB/s"));
        // SKIP is fixed up to skip by the default fixup dictionary, inside the set.
        let ping = case("ping").unwrap();
        assert_eq!(s(ping, "result").as_deref(), Some("skip"));
        assert_eq!(s(ping, "set").as_deref(), Some("net"));
        assert_eq!(
            s(case("ref").unwrap(), "reference").as_deref(),
            Some("http://example.com/r")
        );
        let endrun = case("0_smoke").unwrap();
        assert_eq!(
            s(endrun, "uuid").as_deref(),
            Some("12_1.2".replace(".2", ".1").as_str())
        );
        assert_eq!(s(endrun, "path").as_deref(), Some("inline/smoke.yaml"));
        assert_eq!(s(endrun, "revision").as_deref(), Some("unspecified"));
        assert_eq!(s(endrun, "result").as_deref(), Some("pass"));
        assert!(
            endrun
                .get("repository")
                .and_then(|r| r.get("run"))
                .is_some()
        );
        let unfinished = case("1_raise").unwrap();
        assert_eq!(s(unfinished, "result").as_deref(), Some("fail"));
        assert!(
            records
                .iter()
                .any(|r| r.lvl == "event" && r.msg.as_str() == Some("boot-done"))
        );
        let _ = (&job, BTreeMap::<(), ()>::new());
    }
}
