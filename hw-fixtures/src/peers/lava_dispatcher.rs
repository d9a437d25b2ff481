//! The real lava-dispatcher 2023.01 Python code, without installing lava-dispatcher (which
//! pulls in 135 packages): `.ci/install-deps` extracts Debian's `lava-dispatcher` and
//! `lava-common` debs into `/opt/labd-lava-py` (`$LABD_LAVA_PY`), and Debian's python3 imports
//! `lava_dispatcher.protocols.multinode` from there (real-peers.md section 3).
//!
//! - [`install_multinode_helpers`]: LAVA's DUT helper scripts, installed with the header its
//!   `MultinodeOverlayAction` writes.
//! - [`run_driver`]: runs `lava/multinode_driver.py`, which drives the real
//!   `MultinodeProtocol` and the real Multi-Node `SignalDirector` against a coordinator.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::Context;

/// Root of the extracted debs.
pub fn root() -> PathBuf {
    std::env::var_os("LABD_LAVA_PY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/labd-lava-py"))
}

/// The `PYTHONPATH` holding `lava_dispatcher` and `lava_common`, or an error saying how to get it.
pub fn python_path() -> anyhow::Result<PathBuf> {
    let p = root().join("usr/lib/python3/dist-packages");
    if p.join("lava_dispatcher/protocols/multinode.py").is_file() {
        Ok(p)
    } else {
        anyhow::bail!(
            "lava-dispatcher's Python code is missing under {}; run .ci/install-deps (it \
             extracts Debian's lava-dispatcher and lava-common debs there)",
            p.display()
        )
    }
}

/// Directory of LAVA's DUT helper scripts.
pub fn multinode_scripts_dir() -> anyhow::Result<PathBuf> {
    Ok(python_path()?.join("lava_dispatcher/lava_test_shell/multi_node"))
}

/// Installs LAVA's helpers in `results_dir/bin` exactly as `MultinodeOverlayAction.run()`
/// does (shebang, blank line, per-script variables, then the script), except that the cache
/// path is `cache` instead of `/tmp/lava_multi_node_cache.txt` so tests can run in parallel.
pub fn install_multinode_helpers(
    results_dir: &Path,
    shell: &str,
    job_id: &str,
    role: &str,
    roles: &[(String, String)],
    cache: &Path,
) -> anyhow::Result<PathBuf> {
    let src = multinode_scripts_dir()?;
    let bin = results_dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    for entry in std::fs::read_dir(&src)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.starts_with("lava-") {
            continue;
        }
        let body = std::fs::read_to_string(entry.path())?;
        let mut out = format!("#!{shell}\n\n");
        match name.as_str() {
            "lava-group" => {
                out.push_str("LAVA_GROUP=\"\n");
                for (client, r) in roles {
                    out.push_str(&format!("\\t{client}\\t{r}\\n"));
                }
                out.push_str("\"\n");
            }
            "lava-role" => out.push_str(&format!("TARGET_ROLE='{role}'\n")),
            "lava-self" => out.push_str(&format!("LAVA_HOSTNAME='{job_id}'\n")),
            _ => {
                out.push_str(&format!("LAVA_TEST_BIN='{}'\n", bin.display()));
                out.push_str(&format!("LAVA_MULTI_NODE_CACHE='{}'\n", cache.display()));
                out.push_str("LAVA_MULTI_NODE_DEBUG='yes'\n");
            }
        }
        out.push_str(&body);
        let path = bin.join(&name);
        std::fs::write(&path, out)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(bin)
}

/// `hw-fixtures/lava/multinode_driver.py`.
pub fn driver_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("lava/multinode_driver.py")
}

/// Runs the driver with Debian's python3 and `scenario` (JSON) on stdin; returns its output.
pub fn run_driver(
    host: &str,
    port: u16,
    poll_delay: f64,
    scenario: &str,
) -> anyhow::Result<Output> {
    let python = crate::require_program("python3")?;
    let mut child = Command::new("/usr/bin/python3")
        .arg(driver_path())
        .args(["--host", host, "--port", &port.to_string()])
        .args(["--poll-delay", &poll_delay.to_string()])
        .env("PYTHONPATH", python_path()?)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", python.display()))?;
    use std::io::Write;
    child
        .stdin
        .take()
        .context("driver stdin")?
        .write_all(scenario.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        anyhow::bail!(
            "multinode_driver.py failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}
