//! Differential test of labd's DUT-side helpers against lava-dispatcher 2023.01's own
//! (`lava_test_shell/` unpacked from Debian's lava-dispatcher package by .ci/install-deps):
//! the same invocations under dash and busybox ash give the same stdout, exit status and result
//! files, and a whole stage run by each `lava-test-runner` gives the same console output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use labd::jobs::shell::{HELPERS, helper};

const LAVA_DIR: &str =
    "/opt/lava-dispatcher/usr/lib/python3/dist-packages/lava_dispatcher/lava_test_shell";

fn lava_script(name: &str) -> String {
    let p = Path::new(LAVA_DIR).join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run .ci/install-deps (it unpacks lava-dispatcher's helpers)",
            p.display()
        )
    })
}

/// A `<root>/bin` of helpers: LAVA's (with the `#!<sh>` header its overlay writes) or labd's.
fn install(root: &Path, sh: &Path, lava: bool) -> PathBuf {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for name in HELPERS {
        let text = if lava {
            format!("#!{}\n\n{}", sh.display(), lava_script(name))
        } else {
            helper(name, root.to_str().unwrap(), sh.to_str().unwrap()).unwrap()
        };
        let p = bin.join(name);
        std::fs::write(&p, text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

fn shells(tmp: &Path) -> Vec<(&'static str, PathBuf)> {
    let ash = tmp.join("ash");
    std::os::unix::fs::symlink(labd_hw_fixtures::require_program("busybox").unwrap(), &ash)
        .unwrap();
    vec![
        ("dash", labd_hw_fixtures::require_program("sh").unwrap()),
        ("busybox ash", ash),
    ]
}

/// Every file under `dir`, path relative, with its content.
fn tree(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read_to_string(&p).unwrap_or_default());
            }
        }
    }
    out
}

struct Outcome {
    code: Option<i32>,
    stdout: String,
    files: BTreeMap<String, String>,
}

fn run(sh: &Path, bin: &Path, work: &Path, helper: &str, args: &str) -> Outcome {
    let results = work.join("r");
    let _ = std::fs::remove_dir_all(&results);
    std::fs::create_dir_all(&results).unwrap();
    let out = Command::new(sh)
        .arg("-c")
        .arg(format!("{}/{helper} {args}", bin.display()))
        .current_dir(work)
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("LAVA_RESULT_DIR", &results)
        .output()
        .unwrap();
    Outcome {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        files: tree(&results),
    }
}

const CASES: &[(&str, &str)] = &[
    ("lava-test-case", "x --result pass"),
    (
        "lava-test-case",
        "x --result PASS --units MB/s --measurement 1.5",
    ),
    ("lava-test-case", "x --measurement 10 --result fail"),
    ("lava-test-case", "x --units s"),
    ("lava-test-case", "x --result"),
    ("lava-test-case", "x --bogus 1"),
    ("lava-test-case", "x --result pass extra"),
    ("lava-test-case", "''"),
    ("lava-test-case", ""),
    ("lava-test-case", "'a b' --result pass"),
    ("lava-test-case", "x --result 'p  a s s'"),
    ("lava-test-case", "x --shell true"),
    ("lava-test-case", "x --shell false"),
    ("lava-test-case", "x --shell echo hi there"),
    ("lava-test-case", "x --shell 'exit 3'"),
    (
        "lava-test-case",
        "x --shell 'echo \"<LAVA_SIGNAL_X y>\"; test -d /'",
    ),
    ("lava-test-case", "x --shell"),
    ("lava-test-set", "start net"),
    ("lava-test-set", "start"),
    ("lava-test-set", "start 'a b'"),
    ("lava-test-set", "stop"),
    ("lava-test-set", "stop now"),
    ("lava-test-set", "bogus"),
    ("lava-test-set", ""),
    (
        "lava-test-reference",
        "r --result pass --reference http://example.com/x",
    ),
    ("lava-test-reference", "r --reference u --result fail"),
    ("lava-test-reference", "r --result pass"),
    ("lava-test-reference", "r --reference u"),
    ("lava-test-reference", "r --bogus"),
    ("lava-test-reference", "''"),
    ("lava-test-reference", ""),
    ("lava-test-raise", "boom"),
    ("lava-test-raise", "a  b   c"),
    ("lava-test-raise", "''"),
    ("lava-test-raise", ""),
    ("lava-test-event", "started"),
    ("lava-test-event", "a b"),
    ("lava-test-event", "'a b'"),
    ("lava-test-event", "''"),
    ("lava-test-event", ""),
    ("lava-test-feedback", "--namespace other"),
    ("lava-test-feedback", "--namespace"),
    ("lava-test-feedback", "--bogus"),
    ("lava-test-feedback", ""),
];

#[test]
fn helpers_behave_like_lavas() {
    let tmp = tempfile::tempdir().unwrap();
    for (shell, sh) in shells(tmp.path()) {
        let base = tmp.path().join(shell.replace(' ', "_"));
        let lava_bin = install(&base.join("lava"), &sh, true);
        let labd_bin = install(&base.join("labd"), &sh, false);
        let work = base.join("work");
        std::fs::create_dir_all(&work).unwrap();
        for (h, args) in CASES {
            let a = run(&sh, &lava_bin, &work, h, args);
            let b = run(&sh, &labd_bin, &work, h, args);
            let what = format!("{shell}: {h} {args}");
            assert_eq!(b.code, a.code, "{what}: exit status");
            assert_eq!(b.stdout, a.stdout, "{what}: stdout");
            assert_eq!(b.files, a.files, "{what}: result files");
            if (*h, *args)
                == (
                    "lava-test-case",
                    "x --result PASS --units MB/s --measurement 1.5",
                )
            {
                assert_eq!(
                    a.stdout,
                    "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=x RESULT=PASS UNITS=MB/s MEASUREMENT=1.5>\n"
                );
                assert_eq!(a.files["results/x/measurement"], "1.5\n");
            }
        }
    }
}

#[test]
fn a_stage_runs_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    for (shell, sh) in shells(tmp.path()) {
        let mut outputs = Vec::new();
        for lava in [true, false] {
            let root =
                tmp.path()
                    .join(shell.replace(' ', "_"))
                    .join(if lava { "lava" } else { "labd" });
            install(&root, &sh, lava);
            for (i, name, run_sh, install_sh) in [
                (
                    0,
                    "ok",
                    "echo \"<LAVA_SIGNAL_STARTRUN 0_ok 1_1>\"\nlava-test-case a --result pass\nlava-test-case b --shell false\necho \"<LAVA_SIGNAL_ENDRUN 0_ok 1_1>\"\n",
                    None,
                ),
                (1, "noinstall", "echo never\n", Some("exit 4\n")),
                (
                    2,
                    "last",
                    "lava-test-set start s\nlava-test-event e\n",
                    Some("echo installed\n"),
                ),
            ] {
                let dir = root.join(format!("0/tests/{i}_{name}"));
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join("run.sh"), run_sh).unwrap();
                if let Some(s) = install_sh {
                    std::fs::write(dir.join("install.sh"), s).unwrap();
                }
                let conf = root.join("0/lava-test-runner.conf");
                let mut c = std::fs::read_to_string(&conf).unwrap_or_default();
                c.push_str(&format!("{}\n", dir.display()));
                std::fs::write(conf, c).unwrap();
            }
            let out = Command::new(&sh)
                .arg("-c")
                .arg(format!("{0}/bin/lava-test-runner {0}/0", root.display()))
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .env("SHELL", &sh)
                .output()
                .unwrap();
            let stdout =
                String::from_utf8_lossy(&out.stdout).replace(root.to_str().unwrap(), "ROOT");
            let results: Vec<String> = tree(&root.join("0/results"))
                .into_iter()
                .map(|(k, v)| {
                    // `<n>_<name>-<date +%s>/...`: drop the timestamp.
                    let (dir, file) = k.split_once('/').unwrap_or((&k, ""));
                    let dir = dir.rsplit_once('-').map_or(dir, |(d, _)| d);
                    format!("{dir}/{file}={v}")
                })
                .collect();
            let mut results = results;
            results.sort();
            outputs.push((out.status.code(), stdout, results));
        }
        let (lava, labd) = (&outputs[0], &outputs[1]);
        assert_eq!(labd.1, lava.1, "{shell}: console output");
        assert_eq!(labd.0, lava.0, "{shell}: exit status");
        assert_eq!(labd.2, lava.2, "{shell}: result files");
        assert!(
            lava.1.contains("<LAVA_TEST_RUNNER INSTALL_FAIL>"),
            "{}",
            lava.1
        );
        assert!(lava.1.ends_with("<LAVA_TEST_RUNNER EXIT>\n"), "{}", lava.1);
    }
}
