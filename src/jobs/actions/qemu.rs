//! `boot: method: qemu`: qemu-system started from the device's qemu parameters (`command`,
//! `options`, `extra`) with the deployed images' `image_arg`s, its serial console (stdio, with
//! `-nographic`) on a pty as the job's connection, as lava-dispatcher's `CallQemuAction` does.
//! qemu is asked to power off and then killed when the job finalises.

use super::login::after_boot;
use super::{block_max_retries, prompts, retry_interval};
use crate::jobs::error::{LavaError, LavaErrorType};
use crate::jobs::log::LogValue;
use crate::jobs::model::BootAction;
use crate::jobs::runner::action::{action, retry};
use crate::jobs::runner::{Act, Connection, Ctx, Spec, State};

pub(crate) async fn run(
    ctx: &Ctx<'_>,
    st: &mut State,
    root: &Act,
    b: &BootAction,
) -> Result<(), LavaError> {
    let pipe = &ctx.pipe;
    let block = Some(&b.common);
    let max = block_max_retries(ctx, &b.common, true);
    action!(pipe, root, Spec::new("boot-image-retry", block), |act| {
        retry!(
            pipe,
            &act,
            max,
            retry_interval(&b.common),
            async {
                action!(pipe, &act, Spec::new("boot-qemu-image", block), |q| {
                    retry!(
                        pipe,
                        &q,
                        max,
                        retry_interval(&b.common),
                        action!(pipe, &q, Spec::new("execute-qemu", block), |x| {
                            execute_qemu(ctx, st, &x, b).await
                        })
                    )
                })?;
                if !prompts(ctx, b).is_empty() {
                    after_boot(ctx, st, &act, b, true).await?;
                }
                Ok(())
            }
            .await
        )
    })
}

/// `which`: the absolute path of `program` on `PATH` (as LAVA resolves the qemu binary).
fn which(program: &str) -> Option<std::path::PathBuf> {
    if program.contains('/') {
        return Some(program.into());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The qemu command line: binary, options, extra, then each deployed image's `image_arg` with
/// every `{label}` replaced by its file (in deploy order), joined by spaces as LAVA logs it.
pub fn command_line(
    binary: &str,
    options: &[String],
    extra: &[String],
    images: &[(String, String, Option<String>)],
) -> String {
    let mut parts: Vec<String> = vec![binary.to_string()];
    parts.extend(options.iter().cloned());
    parts.extend(extra.iter().cloned());
    for (_, _, arg) in images {
        let Some(arg) = arg else { continue };
        let mut a = arg.clone();
        for (label, path, _) in images {
            a = a.replace(&format!("{{{label}}}"), path);
        }
        parts.push(a);
    }
    if !parts
        .iter()
        .any(|p| p.split_whitespace().any(|w| w == "-nographic"))
    {
        // The serial console must be qemu's stdio for the job to see it.
        parts.insert(1, "-nographic".into());
    }
    parts.join(" ")
}

async fn execute_qemu(
    ctx: &Ctx<'_>,
    st: &mut State,
    act: &Act,
    _b: &BootAction,
) -> Result<(), LavaError> {
    let job_error = |m: String| LavaError::new(LavaErrorType::Job, m);
    if let Some(mut old) = st.conn.take() {
        old.finalise(st.qemu).await;
    }
    let params = ctx
        .device
        .config
        .qemu()
        .ok_or_else(|| job_error("Invalid device configuration - missing parameters".into()))?;
    let command = params.command.clone().unwrap_or_default();
    let binary = which(command.trim())
        .ok_or_else(|| job_error(format!("Cannot find command '{command}' in $PATH")))?;
    let extra = params.extra.clone().map(|l| l.0).unwrap_or_default();
    let images: Vec<(String, String, Option<String>)> = st
        .images
        .iter()
        .map(|d| {
            (
                d.label.clone(),
                d.path.display().to_string(),
                d.image_arg.clone(),
            )
        })
        .collect();
    for (label, _, arg) in &images {
        if arg.is_none() {
            ctx.log.warning(format!("Missing image arg for {label}"));
        }
    }
    let line = command_line(
        &binary.display().to_string(),
        &params.options,
        &extra,
        &images,
    );
    ctx.log.info(format!("Boot command: {line}"));
    let argv = shlex::split(&line)
        .ok_or_else(|| job_error(format!("cannot split the boot command: {line}")))?;
    let version = qemu_version(&binary).await;
    let conn = Connection::spawn(&argv, &ctx.log)
        .map_err(|e| job_error(format!("{argv:?} command failed to start: {e}")))?;
    ctx.log.debug("started a shell command");
    let job_arch = ctx
        .job
        .context
        .get("arch")
        .and_then(|v| v.as_str())
        .unwrap_or(host_arch())
        .to_string();
    act.set_results(
        LogValue::map()
            .with("host_arch", host_arch())
            .with("job_arch", job_arch)
            .with("qemu_version", version),
    );
    st.conn = Some(conn);
    st.qemu = true;
    Ok(())
}

async fn qemu_version(binary: &std::path::Path) -> String {
    match tokio::process::Command::new(binary)
        .arg("--version")
        .output()
        .await
    {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .nth(3)
            .unwrap_or("unknown")
            .to_string(),
        Err(_) => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_as_lava_builds_it() {
        let images = vec![
            (
                "initrd".to_string(),
                "/j/initrd/initramfs.cpio.gz".to_string(),
                Some("-initrd {initrd}".to_string()),
            ),
            (
                "kernel".to_string(),
                "/j/kernel/vmlinuz".to_string(),
                Some(
                    "-kernel {kernel} -append \"console=ttyS0,115200 rdinit=/init panic=-1\""
                        .to_string(),
                ),
            ),
        ];
        let opts = [
            "-nographic",
            "-net nic,model=virtio,macaddr=52:54:00:12:34:59 -net user,restrict=on",
            "-m 256",
            "-monitor none",
        ]
        .map(String::from);
        assert_eq!(
            command_line("/usr/bin/qemu-system-x86_64", &opts, &[], &images),
            "/usr/bin/qemu-system-x86_64 -nographic -net nic,model=virtio,macaddr=52:54:00:12:34:59 -net user,restrict=on -m 256 -monitor none -initrd /j/initrd/initramfs.cpio.gz -kernel /j/kernel/vmlinuz -append \"console=ttyS0,115200 rdinit=/init panic=-1\""
        );
        let no_graphic = command_line("q", &["-m 64".into()], &[], &[]);
        assert_eq!(no_graphic, "q -nographic -m 64");
    }
}
