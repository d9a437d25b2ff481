//! `labd master-ping` against the lava-server double.

use std::process::Command;

use labd_hw_fixtures::lava_master::MasterDouble;

fn inventory(dir: &std::path::Path, url: &str, version: &str) -> std::path::PathBuf {
    let p = dir.join("inv.toml");
    std::fs::write(
        &p,
        format!(
            "[worker]\nname = \"cli1\"\nstate_dir = \"{}\"\n\n[master]\nurl = \"{url}\"\ntoken = \"clitoken\"\nversion = \"{version}\"\n",
            dir.display()
        ),
    )
    .unwrap();
    p
}

#[test]
fn master_ping_shows_the_answer_and_explains_a_version_mismatch() {
    let d = MasterDouble::start();
    d.add_worker("cli1", "clitoken");
    let id = d.submit("cli1", "job", "dev");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_labd"))
        .args(["master-ping", "-c"])
        .arg(inventory(dir.path(), &d.url(), "2023.01"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ping: ok\n"), "{stdout}");
    assert!(stdout.contains(&format!("  start  : [{id}]\n")), "{stdout}");

    let out = Command::new(env!("CARGO_BIN_EXE_labd"))
        .args(["master-ping", "-c"])
        .arg(inventory(dir.path(), &d.url(), "2022.01"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "the master refuses version \"2022.01\": Version mismatch '2022.01' vs '2023.01'"
        ),
        "{stderr}"
    );
    assert!(d.violations().is_empty(), "{:?}", d.violations());
}
