//! `start: 0 validate`: the job definition against labd's model, the job against the board
//! (boot methods it offers, a console, qemu parameters), images that must exist, the
//! Multi-Node client; then the test-shell overlay of every test block is built once.

use std::time::Instant;

use super::connection::py_repr_list;
use super::device::ConsoleAccess;
use super::joblog::JobLog;
use super::{Ctx, JobRequest, RunEnv, State};
use crate::jobs::error::{LavaError, LavaErrorType};
use crate::jobs::log::LogValue;
use crate::jobs::model::{Action, BootMethod, JobDefinition, TestKind};
use crate::jobs::shell::{TestShellOverlay, environment_exports};

/// Parses and checks the job; logs the validate lines and the `validate` result.
pub(super) async fn validate(
    env: &RunEnv,
    req: &JobRequest,
    log: &JobLog,
) -> Result<JobDefinition, LavaError> {
    let start = Instant::now();
    let r = check(env, req, log).await;
    log.info(format!(
        "validate duration: {:.2}",
        start.elapsed().as_secs_f64()
    ));
    log.results(
        LogValue::map()
            .with("definition", "lava")
            .with("case", "validate")
            .with("result", if r.is_ok() { "pass" } else { "fail" }),
    );
    r
}

async fn check(env: &RunEnv, req: &JobRequest, log: &JobLog) -> Result<JobDefinition, LavaError> {
    let job = match JobDefinition::parse_and_validate(&req.definition) {
        Ok(j) => j,
        Err(errors) => {
            for e in &errors {
                log.error(e.to_string());
            }
            let texts: Vec<String> = errors.iter().map(ToString::to_string).collect();
            return Err(LavaError::new(
                LavaErrorType::Job,
                format!("Invalid job data: {}\n", py_repr_list(&texts)),
            ));
        }
    };
    let mut errors = Vec::new();
    let dev = &req.device;
    let device_name = dev
        .name
        .as_ref()
        .map_or_else(|| "the device".to_string(), |n| format!("device {n}"));
    for (i, action) in job.actions.iter().enumerate() {
        let level = i + 1;
        match action {
            Action::Deploy(d) => {
                for (label, img) in d.images.iter() {
                    if let Some(path) = img.url.strip_prefix("file://") {
                        log.debug(format!("Validating that {} exists", img.url));
                        let p = path.to_string();
                        let ok = tokio::task::spawn_blocking(move || {
                            std::fs::metadata(&p).is_ok_and(|m| m.is_file())
                        })
                        .await
                        .unwrap_or(false);
                        if !ok {
                            errors.push(format!(
                                "{level} deploy: Image file '{path}' does not exist or is not readable"
                            ));
                        }
                    } else if !img.url.starts_with("http://") && !img.url.starts_with("https://") {
                        let scheme = img.url.split(':').next().unwrap_or_default();
                        errors.push(format!(
                            "{level} deploy: Unsupported url protocol scheme: {scheme} (images.{label})"
                        ));
                    }
                }
                if env.images.is_none() {
                    errors.push(format!(
                        "{level} deploy: labd has no image service in this process"
                    ));
                }
            }
            Action::Boot(b) => {
                let method = b.method.as_str();
                if !dev.config.has_boot_method(method) {
                    let offered: Vec<String> =
                        dev.config.actions.boot.methods.keys().cloned().collect();
                    errors.push(format!(
                        "{level} boot: {device_name} does not offer boot method '{method}' (it offers: {})",
                        offered.join(", ")
                    ));
                }
                match b.method {
                    BootMethod::Qemu => {
                        qemu_checks(&job, dev, level, log, &mut errors).await;
                    }
                    BootMethod::Minimal | BootMethod::UBoot => {
                        if matches!(dev.console, ConsoleAccess::None) {
                            errors.push(format!(
                                "{level} boot: {device_name} has no console to connect to"
                            ));
                        }
                        if b.method == BootMethod::UBoot && dev.config.uboot().is_none() {
                            errors.push(format!(
                                "{level} boot: {device_name} has no u-boot parameters (bootloader_prompt...)"
                            ));
                        }
                    }
                }
            }
            Action::Test(_) => {}
        }
    }
    if job.multinode().is_some() && env.multinode.is_none() {
        return Err(super::multinode::no_multinode_client());
    }
    if errors.is_empty() {
        Ok(job)
    } else {
        for e in &errors {
            log.error(e.as_str());
        }
        Err(LavaError::new(
            LavaErrorType::Job,
            format!("Invalid job data: {}\n", py_repr_list(&errors)),
        ))
    }
}

/// `CallQemuAction.validate`: the job's `context.arch`, the qemu binary and its version line.
async fn qemu_checks(
    job: &JobDefinition,
    dev: &super::DeviceSetup,
    level: usize,
    log: &JobLog,
    errors: &mut Vec<String>,
) {
    let Some(q) = dev.config.qemu() else {
        errors.push(format!(
            "{level} boot: Invalid device configuration - missing parameters"
        ));
        return;
    };
    let Some(cmd) = q.command.as_deref().filter(|c| !c.trim().is_empty()) else {
        errors.push(format!(
            "{level} boot: No QEMU binary command found - missing context."
        ));
        return;
    };
    if !job.context.contains_key("arch") && dev.name.is_none() {
        errors.push(format!("{level} boot: Missing 'arch' in job context"));
    }
    let cmd = cmd.trim().to_string();
    let version = tokio::process::Command::new(&cmd)
        .arg("--version")
        .output()
        .await;
    match version {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let ver = text
                .split_whitespace()
                .nth(3)
                .unwrap_or("unknown")
                .to_string();
            log.info(format!(
                "qemu, installed at version: {ver}, host architecture: {}",
                std::env::consts::ARCH
            ));
        }
        _ => errors.push(format!(
            "{level} boot: cannot run the QEMU binary '{cmd}' (is it installed?)"
        )),
    }
}

/// Builds the test-shell overlay of every test block and the Multi-Node protocol.
pub(super) fn prepare(ctx: &Ctx<'_>, st: &mut State) -> Result<(), LavaError> {
    let dev = &ctx.device.config;
    let results_dir = dev.constants.posix.results_dir(ctx.job_id);
    let exports = environment_exports(dev, ctx.job, ctx.job_id, ctx.env.dispatcher_ip.as_deref());
    let mut overlay = TestShellOverlay::new(
        ctx.job_id,
        &results_dir,
        &dev.constants.posix.lava_test_sh_cmd,
        &exports,
    );
    let mut stage = 0;
    for (index, action) in ctx.job.actions.iter().enumerate() {
        let Action::Test(t) = action else { continue };
        let TestKind::Definitions(defs) = &t.kind else {
            continue;
        };
        let with_raw: Vec<_> = defs
            .iter()
            .enumerate()
            .map(|(i, d)| (d.clone(), ctx.job.raw_repository(index, i)))
            .collect();
        let level = index + 1;
        overlay
            .add_stage(stage, &with_raw, |n| format!("{level}.1.{}", n + 1))
            .map_err(|e| LavaError::new(LavaErrorType::Job, e))?;
        st.stages.insert(index, stage);
        stage += 1;
    }
    if let Some(f) = &ctx.env.multinode {
        st.multinode = f.for_job(ctx.job, ctx.job_id)?;
    }
    if let Some(mn) = &st.multinode {
        for (name, content) in mn.helper_files(&results_dir, &overlay.sh) {
            overlay.files.push(crate::jobs::shell::OverlayFile {
                path: format!("{results_dir}/bin/{name}"),
                content: content.into_bytes(),
                executable: true,
            });
        }
    }
    if stage > 0 {
        st.overlay = Some(overlay);
    }
    Ok(())
}
