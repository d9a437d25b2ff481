//! `boot` blocks: `minimal` (connect, reset or power on, log in) and `u-boot` (connect, reset,
//! interrupt the bootloader, send the commands, log in), with LAVA 2023.01's action names,
//! levels, messages and failure detection (bootloader error messages, kernel faults, login
//! failures). `qemu` is in [`super::qemu`]; the login part ([`after_boot`]) is shared.

use std::time::Duration;

use super::login::after_boot;
use super::{MARGIN, action_wait, block_max_retries, retry_interval};
use crate::ids::ClientId;
use crate::jobs::device::BootloaderConstants;
use crate::jobs::error::{LavaError, LavaErrorType};
use crate::jobs::log::LogValue;
use crate::jobs::model::{BootAction, BootCommands, BootMethod};
use crate::jobs::patterns::REBOOT_COMMANDS;
use crate::jobs::patterns::bootloader_error;
use crate::jobs::runner::action::{action, retry};
use crate::jobs::runner::{Act, Connection, ConsoleAccess, Ctx, PowerStep, Spec, State};
use crate::jobs::signals::py_repr_str;

/// The name of a boot block's top-level action.
pub fn block_name(_ctx: &Ctx<'_>, b: &BootAction) -> &'static str {
    match b.method {
        BootMethod::Minimal => "minimal-boot",
        BootMethod::UBoot => "uboot-action",
        BootMethod::Qemu => "boot-image-retry",
    }
}

/// Runs a boot block.
pub async fn run(
    ctx: &Ctx<'_>,
    st: &mut State,
    root: &Act,
    b: &BootAction,
) -> Result<(), LavaError> {
    // A boot starts a fresh system: the test-shell files are gone.
    st.delivered = false;
    match b.method {
        BootMethod::Minimal => minimal(ctx, st, root, b).await,
        BootMethod::UBoot => uboot(ctx, st, root, b).await,
        BootMethod::Qemu => super::qemu::run(ctx, st, root, b).await,
    }
}

async fn minimal(
    ctx: &Ctx<'_>,
    st: &mut State,
    root: &Act,
    b: &BootAction,
) -> Result<(), LavaError> {
    let pipe = &ctx.pipe;
    let block = Some(&b.common);
    let max = block_max_retries(ctx, &b.common, true);
    action!(pipe, root, Spec::new("minimal-boot", block), |act| {
        retry!(
            pipe,
            &act,
            max,
            retry_interval(&b.common),
            async {
                connect_device(ctx, st, &act, b).await?;
                if b.pre_power_command == Some(true) {
                    power_command(ctx, &act, b, "pre-power-command", PowerStep::PrePower).await?;
                }
                if b.pre_os_command == Some(true) {
                    power_command(ctx, &act, b, "pre-os-command", PowerStep::PreOs).await?;
                }
                if b.reset.unwrap_or(true) {
                    reset_device(ctx, st, &act, b).await?;
                }
                if !super::prompts(ctx, b).is_empty() {
                    after_boot(ctx, st, &act, b, true).await?;
                }
                Ok(())
            }
            .await
        )
    })
}

async fn uboot(ctx: &Ctx<'_>, st: &mut State, root: &Act, b: &BootAction) -> Result<(), LavaError> {
    let pipe = &ctx.pipe;
    let block = Some(&b.common);
    let max = block_max_retries(ctx, &b.common, true);
    action!(pipe, root, Spec::new("uboot-action", block), |act| {
        retry!(
            pipe,
            &act,
            max,
            retry_interval(&b.common),
            async {
                action!(pipe, &act, Spec::new("uboot-from-media", block), |m| {
                    let _ = &m;
                    Ok::<(), LavaError>(())
                })?;
                let commands = action!(pipe, &act, Spec::new("bootloader-overlay", block), |o| {
                    let _ = &o;
                    resolve_commands(ctx, b)
                })?;
                connect_device(ctx, st, &act, b).await?;
                action!(pipe, &act, Spec::new("uboot-commands", block), |c| {
                    reset_device(ctx, st, &c, b).await?;
                    let at_prompt = bootloader_interrupt(ctx, st, &c, b).await?;
                    bootloader_commands(ctx, st, &c, b, &commands, at_prompt).await?;
                    if !super::prompts(ctx, b).is_empty() {
                        after_boot(ctx, st, &c, b, true).await?;
                    }
                    Ok(())
                })
            }
            .await
        )
    })
}

/// `BootloaderCommandOverlay`: the command list from the job, or the device's named set.
fn resolve_commands(ctx: &Ctx<'_>, b: &BootAction) -> Result<Vec<String>, LavaError> {
    let commands = match &b.commands {
        Some(BootCommands::Literal(list)) => {
            ctx.log.warning(
                "WARNING: Using boot commands supplied in the job definition, NOT the LAVA device configuration",
            );
            list.clone()
        }
        Some(BootCommands::Named(name)) => ctx
            .device
            .config
            .boot_command_set("u-boot", name)
            .ok_or_else(|| {
                LavaError::new(
                    LavaErrorType::Job,
                    format!("Command '{name}' not found in supported methods"),
                )
            })?,
        None => return Err(LavaError::new(LavaErrorType::Job, "missing commands")),
    };
    Ok(commands)
}

/// `ConnectDevice`: attach to the board's console (a labd console, or the connect command on
/// a pty), unless a live connection exists.
pub(crate) async fn connect_device(
    ctx: &Ctx<'_>,
    st: &mut State,
    parent: &Act,
    b: &BootAction,
) -> Result<(), LavaError> {
    let pipe = &ctx.pipe;
    let spec = Spec::new("connect-device", Some(&b.common)).kind(LavaErrorType::Infrastructure);
    action!(pipe, parent, spec, |act| {
        if st.conn.as_ref().is_some_and(|c| c.connected) {
            ctx.log.debug("Already connected");
            return Ok(());
        }
        let ns = act.namespace.clone();
        let mut conn = match &ctx.device.console {
            ConsoleAccess::Hub(h) => {
                ctx.log.info(format!(
                    "[{ns}] connect-device Connecting to device using 'labd console {}'",
                    h.device()
                ));
                let client = ClientId(format!("job:{}", ctx.job_id));
                Connection::hub(h, client, &ctx.log).await?
            }
            ConsoleAccess::Command(cmd) => {
                ctx.log.info(format!(
                    "[{ns}] connect-device Connecting to device using '{cmd}'"
                ));
                let argv = shlex::split(cmd).unwrap_or_default();
                Connection::spawn(&argv, &ctx.log).map_err(|e| {
                    LavaError::new(
                        LavaErrorType::Infrastructure,
                        format!("{cmd} command failed to start: {e}"),
                    )
                })?
            }
            ConsoleAccess::None => {
                return Err(LavaError::new(
                    LavaErrorType::Infrastructure,
                    "Unable to connect: the device has no console",
                ));
            }
        };
        if conn.prompts.is_empty() {
            let p = ctx
                .device
                .config
                .constants
                .default_shell_prompt
                .clone()
                .unwrap_or_else(|| "lava-test: # ".into());
            conn.set_prompts(vec![p]);
        }
        st.conn = Some(conn);
        st.qemu = false;
        Ok(())
    })
}

/// `PrePower`/`PreOs`: a device command run on the worker.
async fn power_command(
    ctx: &Ctx<'_>,
    parent: &Act,
    b: &BootAction,
    name: &'static str,
    step: PowerStep,
) -> Result<(), LavaError> {
    let pipe = &ctx.pipe;
    let spec = Spec::new(name, Some(&b.common)).kind(LavaErrorType::Infrastructure);
    action!(pipe, parent, spec, |act| {
        if !ctx.device.power.has(step) {
            ctx.log.warning(match step {
                PowerStep::PrePower => "Pre power command does not exist",
                _ => "Pre OS command does not exist",
            });
            return Ok(());
        }
        ctx.log.info(match step {
            PowerStep::PrePower => "Running pre power command",
            _ => "Running pre OS command",
        });
        ctx.device.power.run(step, &ctx.log).await?;
        act.set_results(LogValue::map().with("success", name));
        Ok(())
    })
}

/// `ResetDevice`: a hard reset when the board has one (labd's power service or the device's
/// `hard_reset` command), else the soft reboot commands.
pub(crate) async fn reset_device(
    ctx: &Ctx<'_>,
    st: &mut State,
    parent: &Act,
    b: &BootAction,
) -> Result<(), LavaError> {
    let pipe = &ctx.pipe;
    let block = Some(&b.common);
    action!(pipe, parent, Spec::new("reset-device", block), |act| {
        if ctx.device.power.has(PowerStep::HardReset) {
            let spec = Spec::new("pdu-reboot", block).kind(LavaErrorType::Infrastructure);
            action!(pipe, &act, spec, |r| {
                ctx.device.power.run(PowerStep::HardReset, &ctx.log).await?;
                r.set_results(LogValue::map().with("status", "success"));
                Ok(())
            })
        } else {
            action!(pipe, &act, Spec::new("send-reboot-commands", block), |r| {
                send_reboot_commands(ctx, st, &r, b).await
            })
        }
    })
}

async fn send_reboot_commands(
    ctx: &Ctx<'_>,
    st: &mut State,
    act: &Act,
    b: &BootAction,
) -> Result<(), LavaError> {
    let commands: Vec<String> = if !b.soft_reboot.is_empty() {
        b.soft_reboot.clone()
    } else if let Some(l) = &ctx.device.config.commands.soft_reboot {
        l.0.clone()
    } else {
        ctx.log
            .warning("No soft reboot command defined in the test job. Using defaults.");
        REBOOT_COMMANDS.iter().map(|s| s.to_string()).collect()
    };
    let message = b
        .parameters
        .shutdown_message
        .clone()
        .or_else(|| ctx.device.config.constants.shutdown_message.clone())
        .unwrap_or_else(|| "The system is going down for reboot NOW".into());
    let conn = super::conn(st)?;
    ctx.log.debug(format!(
        "Setting prompt string to {}",
        py_repr_str(&message)
    ));
    conn.prompts = vec![message.clone()];
    for c in &commands {
        conn.sendline(c, 0).await?;
    }
    let timeout = ctx
        .pipe
        .connection_timeout("send-reboot-commands", Duration::from_secs(30));
    ctx.log.debug(format!(
        "{}: Wait for prompt {message} (timeout {})",
        act.name,
        crate::jobs::model::seconds_to_str(act.remaining().as_secs_f64())
    ));
    let deadline = tokio::time::Instant::now() + timeout;
    if conn
        .wait_prompts(deadline.min(act.deadline + MARGIN))
        .await
        .is_err()
    {
        return Err(LavaError::new(LavaErrorType::Job, "Soft reboot failed."));
    }
    act.set_results(
        LogValue::map().with(
            "commands",
            LogValue::List(
                commands
                    .iter()
                    .map(|c| LogValue::from(c.as_str()))
                    .collect(),
            ),
        ),
    );
    Ok(())
}

/// The bootloader section of the device constants (interrupt, error and final messages).
fn bootloader_constants(ctx: &Ctx<'_>) -> BootloaderConstants {
    ctx.device
        .config
        .constants
        .bootloader(&ctx.device.bootloader)
        .unwrap_or_default()
}

/// `BootloaderInterruptAction`; returns true when it already waited for the bootloader prompt.
async fn bootloader_interrupt(
    ctx: &Ctx<'_>,
    st: &mut State,
    parent: &Act,
    b: &BootAction,
) -> Result<bool, LavaError> {
    let pipe = &ctx.pipe;
    let spec =
        Spec::new("bootloader-interrupt", Some(&b.common)).kind(LavaErrorType::Infrastructure);
    action!(pipe, parent, spec, |act| {
        let params = ctx.device.config.uboot().unwrap_or_default();
        let consts = bootloader_constants(ctx);
        let conn = super::conn(st)?;
        let needs = params.needs_interrupt.unwrap_or(true);
        if !needs {
            ctx.log
                .info("Not interrupting bootloader, waiting for bootloader prompt");
            let prompt = params.bootloader_prompt.clone().unwrap_or_default();
            conn.set_prompts(vec![prompt]);
            action_wait(ctx, &act, conn).await?;
            return Ok(true);
        }
        let prompt = params
            .interrupt_prompt
            .clone()
            .or(consts.interrupt_prompt.clone())
            .unwrap_or_else(|| "Hit any key to stop autoboot".into());
        conn.set_prompts(vec![prompt]);
        action_wait(ctx, &act, conn).await?;
        let ch = params
            .interrupt_char
            .map(|s| s.0)
            .or(consts.interrupt_character.map(|s| s.0))
            .unwrap_or_else(|| " ".into());
        if !consts.interrupt_ctrl_list.is_empty() {
            for c in &consts.interrupt_ctrl_list {
                if let Some(c) = c.chars().next() {
                    conn.sendcontrol(c).await?;
                }
            }
        } else if consts.interrupt_newline.unwrap_or(true) {
            conn.sendline(&ch, 0).await?;
        } else {
            conn.send_raw(ch.as_bytes()).await?;
        }
        Ok(false)
    })
}

/// `BootloaderCommandsAction`: each command at the bootloader prompt, watching for the
/// bootloader's error messages, then its final message.
async fn bootloader_commands(
    ctx: &Ctx<'_>,
    st: &mut State,
    parent: &Act,
    b: &BootAction,
    commands: &[String],
    at_prompt: bool,
) -> Result<(), LavaError> {
    let pipe = &ctx.pipe;
    let spec = Spec::new("bootloader-commands", Some(&b.common))
        .kind(LavaErrorType::Infrastructure)
        .default_timeout(Duration::from_secs(180));
    action!(pipe, parent, spec, |act| {
        let params = ctx.device.config.uboot().unwrap_or_default();
        let consts = bootloader_constants(ctx);
        let errors = consts.error_messages.clone();
        let delay = ctx.device.config.character_delays.boot;
        let conn = super::conn(st)?;
        conn.linesep = "\n".into();
        let prompt = params
            .bootloader_prompt
            .clone()
            .unwrap_or_else(|| "=>".into());
        conn.set_prompts(vec![prompt]);
        if !at_prompt {
            action_wait(ctx, &act, conn).await?;
        }
        if !errors.is_empty() {
            let mut p = conn.prompts.clone();
            p.extend(errors.iter().cloned());
            conn.set_prompts(p);
        }
        for (i, line) in commands.iter().enumerate() {
            conn.sendline(line, delay).await?;
            if i + 1 == commands.len() {
                let Some(fm) = consts.final_message.clone() else {
                    break;
                };
                let mut p = vec![fm];
                p.extend(errors.iter().cloned());
                conn.set_prompts(p);
            }
            let res = action_wait(ctx, &act, conn).await?;
            if res != 0 {
                return Err(bootloader_error(&conn.prompts[res], res));
            }
        }
        Ok(())
    })
}
