//! How every boot ends, as LAVA's `AutoLoginAction` and `LoginAction` do it: wait for the
//! kernel to start (watching the bootloader's error messages), then for a login prompt or a
//! shell prompt while kernel faults are recognised (a fatal one — `Kernel panic - not syncing`
//! — fails the job with the panic's text), log in (user, password, login commands), and when
//! a test shell follows, force a fresh prompt.

use tokio::time::Instant;

use super::{MARGIN, action_wait, auto_login, block_max_retries, conn, prompts, retry_interval};
use crate::jobs::error::{LavaError, LavaErrorType};
use crate::jobs::expect::ExpectError;
use crate::jobs::log::LogValue;
use crate::jobs::model::{BootAction, BootMethod};
use crate::jobs::patterns::{
    KERNEL_MESSAGES, LOGIN_INCORRECT, LOGIN_TIMED_OUT, bootloader_error, classify_trace,
    init_prompts, prompt_warning,
};
use crate::jobs::runner::action::{action, retry};
use crate::jobs::runner::connection::{compile_all, py_repr_list, wait_error};
use crate::jobs::runner::{Act, Ctx, Spec, State};
use crate::jobs::signals::py_repr_str;

/// `AutoLoginAction` (when the block has prompts), then `expect-shell-connection` and
/// `export-device-env` when a test shell follows.
pub(crate) async fn after_boot(
    ctx: &Ctx<'_>,
    st: &mut State,
    parent: &Act,
    b: &BootAction,
    booting: bool,
) -> Result<(), LavaError> {
    auto_login_action(ctx, st, parent, b, booting).await?;
    if super::test_has_shell(ctx) {
        expect_shell_connection(ctx, st, parent, b).await?;
        let pipe = &ctx.pipe;
        action!(
            pipe,
            parent,
            Spec::new("export-device-env", Some(&b.common)),
            |act| {
                let _ = &act;
                Ok::<(), LavaError>(())
            }
        )?;
    }
    Ok(())
}

async fn auto_login_action(
    ctx: &Ctx<'_>,
    st: &mut State,
    parent: &Act,
    b: &BootAction,
    booting: bool,
) -> Result<(), LavaError> {
    let pipe = &ctx.pipe;
    let max = block_max_retries(ctx, &b.common, true);
    action!(
        pipe,
        parent,
        Spec::new("auto-login-action", Some(&b.common)),
        |act| {
            if booting {
                let dev = &ctx.device.config;
                let ksm = b
                    .parameters
                    .kernel_start_message
                    .clone()
                    .or_else(|| dev.constants.kernel_start_message.clone());
                let mut wait_for: Vec<String> = ksm.iter().cloned().collect();
                let c = conn(st)?;
                if !wait_for.is_empty() {
                    c.set_prompts(wait_for.clone());
                }
                let boot_message = if b.method == BootMethod::UBoot {
                    dev.uboot().and_then(|p| p.boot_message)
                } else {
                    None
                };
                if let Some(m) = boot_message {
                    ctx.log.warning(
                    "boot_message is being deprecated in favour of kernel-start-message in constants",
                );
                    wait_for = vec![m];
                    c.set_prompts(wait_for.clone());
                }
                let errors = if b.method == BootMethod::UBoot {
                    crate::jobs::patterns::bootloader_error_messages(dev, &ctx.device.bootloader)
                } else {
                    Vec::new()
                };
                if !errors.is_empty() {
                    let mut p = c.prompts.clone();
                    p.extend(errors);
                    c.set_prompts(p);
                }
                if ksm.is_some() {
                    let res = action_wait(ctx, &act, c).await?;
                    if res != 0 {
                        return Err(bootloader_error(&c.prompts[res], res));
                    }
                }
            }
            retry!(
                pipe,
                &act,
                max,
                retry_interval(&b.common),
                login_action(ctx, st, &act, b).await
            )
        }
    )
}

async fn login_action(
    ctx: &Ctx<'_>,
    st: &mut State,
    parent: &Act,
    b: &BootAction,
) -> Result<(), LavaError> {
    let pipe = &ctx.pipe;
    action!(
        pipe,
        parent,
        Spec::new("login-action", Some(&b.common)),
        |act| login(ctx, st, &act, b).await
    )
}

async fn login(ctx: &Ctx<'_>, st: &mut State, act: &Act, b: &BootAction) -> Result<(), LavaError> {
    let job_prompts = prompts(ctx, b);
    for p in &job_prompts {
        if let Some(w) = prompt_warning(p) {
            ctx.log.warning(w);
        }
    }
    let delay = ctx.device.config.character_delays.boot;
    let c = conn(st)?;
    c.set_prompts(init_prompts());
    c.prompts.extend(job_prompts.iter().cloned());
    ctx.log.debug(format!(
        "Using line separator: #{}#",
        py_repr_str(&c.linesep)
    ));
    let Some(al) = auto_login(ctx, b) else {
        ctx.log.debug("No login prompt set.");
        c.prompts.push(LOGIN_TIMED_OUT.into());
        c.prompts.push(LOGIN_INCORRECT.into());
        let parsed = check_kernel_messages(ctx, st, act).await?;
        act.set_results(parsed);
        conn(st)?.set_prompts(job_prompts);
        return Ok(());
    };
    ctx.log.info("Waiting for the login prompt");
    c.prompts.push(al.login_prompt.clone());
    c.prompts.push(LOGIN_INCORRECT.into());
    let parsed = check_kernel_messages(ctx, st, act).await?;
    act.set_results(parsed);
    let c = conn(st)?;
    ctx.log.debug(format!("Sending username {}", al.username));
    c.sendline(&al.username, delay).await?;
    c.set_prompts(job_prompts.clone());
    if let (Some(pp), Some(pw)) = (&al.password_prompt, &al.password) {
        ctx.log.info("Waiting for password prompt");
        c.prompts.push(pp.clone());
        c.prompts.push(LOGIN_TIMED_OUT.into());
        let index = action_wait(ctx, act, c).await?;
        if index > 0 {
            ctx.log
                .debug(format!("Matched prompt #{index}: {}", c.prompts[index]));
            if c.prompts[index] == LOGIN_TIMED_OUT {
                return Err(crate::jobs::patterns::password_prompt_not_matched());
            }
        }
        ctx.log.debug(format!("Sending password {pw}"));
        c.sendline(pw, delay).await?;
        c.set_prompts(job_prompts.clone());
    }
    c.prompts.push(LOGIN_INCORRECT.into());
    c.prompts.push(LOGIN_TIMED_OUT.into());
    let index = action_wait(ctx, act, c).await?;
    if index > 0 {
        ctx.log
            .debug(format!("Matched {index} {}", c.prompts[index]));
        if c.prompts[index] == LOGIN_INCORRECT {
            return Err(crate::jobs::patterns::login_incorrect());
        }
        if c.prompts[index] == LOGIN_TIMED_OUT {
            return Err(crate::jobs::patterns::login_timed_out());
        }
    }
    c.set_prompts(job_prompts);
    if !al.login_commands.is_empty() {
        ctx.log.debug("Running login commands");
        let timeout = ctx.pipe.connection_timeout(act.name, act.remaining());
        for command in &al.login_commands {
            c.sendline(command, delay).await?;
            c.wait_prompts(Instant::now() + timeout).await?;
        }
    }
    Ok(())
}

/// `LoginAction.check_kernel_messages` / `LinuxKernelMessages.parse_failures`: waits for the
/// connection's prompts, recording kernel faults on the way; a fatal one ends the job. Returns
/// the login action's results (`success` or the messages found).
async fn check_kernel_messages(
    ctx: &Ctx<'_>,
    st: &mut State,
    act: &Act,
) -> Result<LogValue, LavaError> {
    ctx.log.info("Parsing kernel messages");
    let c = conn(st)?;
    ctx.log.debug(LogValue::List(
        c.prompts
            .iter()
            .map(|p| LogValue::from(p.as_str()))
            .collect(),
    ));
    let started = Instant::now();
    let mut results: Vec<LogValue> = Vec::new();
    let mut halt: Option<String> = None;
    let mut failed = None;
    loop {
        ctx.log.debug(format!(
            "[{}] Waiting for messages, (timeout {})",
            act.name,
            crate::jobs::model::seconds_to_str(act.remaining().as_secs_f64())
        ));
        let patterns = compile_all(&c.prompts)?;
        let m = match c.expect(&patterns, act.deadline + MARGIN).await {
            Ok(m) => m,
            Err(ExpectError::Eof { .. }) => {
                let msg = "Failed to match - connection timed out handling messages.";
                ctx.log.warning(msg);
                failed = Some(crate::jobs::patterns::connection_closed());
                break;
            }
            Err(e) => return Err(wait_error(e)),
        };
        let index = m.index;
        if index > 0 {
            ctx.log
                .debug(format!("Matched prompt #{index}: {}", c.prompts[index]));
        }
        if index >= KERNEL_MESSAGES.len() {
            break;
        }
        let km = KERNEL_MESSAGES[index];
        // The start of the line the message begins on.
        let line_start = match m.before.rfind('\n') {
            Some(i) => &m.before[i + 1..],
            None => m.before.as_str(),
        };
        let mut message = format!("{line_start}{}", m.after);
        let previous = c.prompts.clone();
        let mut end = vec![km.end.to_string()];
        end.extend(previous[KERNEL_MESSAGES.len()..].iter().cloned());
        c.set_prompts(end);
        let patterns = compile_all(&c.prompts)?;
        match c.expect_whole(&patterns, act.deadline + MARGIN).await {
            Ok(e) if e.index == 0 => {
                let after = e.after.strip_suffix('\r').unwrap_or(&e.after);
                message.push_str(&e.before);
                message.push_str(after);
            }
            Ok(_) => {
                ctx.log.warning("Unable to match end of the kernel message");
                break;
            }
            Err(ExpectError::Eof { .. }) => {
                ctx.log.warning("Failed to match end of kernel error");
                failed = Some(crate::jobs::patterns::connection_closed());
                break;
            }
            Err(e) => return Err(wait_error(e)),
        }
        c.set_prompts(previous);
        let kind = km.kind.unwrap_or_else(|| classify_trace(&message));
        if km.fatal {
            ctx.log
                .error(format!("{} kernel {}", act.name, py_repr_str(kind)));
            halt = Some(message.clone());
        } else {
            ctx.log
                .warning(format!("{}: kernel {}", act.name, py_repr_str(kind)));
        }
        results.push(
            LogValue::map()
                .with("kind", kind)
                .with("message", message.as_str()),
        );
        if km.fatal {
            break;
        }
    }
    let result = if halt.is_some() { "fail" } else { "pass" };
    ctx.log.results(
        LogValue::map()
            .with("definition", "lava")
            .with("namespace", act.namespace.as_str())
            .with("case", "kernel-messages")
            .with("level", act.level.as_str())
            .with(
                "duration",
                format!("{:.2}", started.elapsed().as_secs_f64()),
            )
            .with("result", result)
            .with(
                "extra",
                LogValue::map().with("extra", LogValue::List(results.clone())),
            ),
    );
    if let Some(h) = halt {
        return Err(crate::jobs::patterns::kernel_fatal(&h));
    }
    if let Some(e) = failed {
        return Err(e);
    }
    if results.is_empty() {
        Ok(LogValue::map().with("success", "No kernel warnings or errors detected."))
    } else {
        ctx.log.warning("Kernel warnings or errors detected.");
        Ok(LogValue::map().with("fail", LogValue::List(results)))
    }
}

/// `ExpectShellSession`: send a newline and wait (forcing) for the shell prompt.
async fn expect_shell_connection(
    ctx: &Ctx<'_>,
    st: &mut State,
    parent: &Act,
    b: &BootAction,
) -> Result<(), LavaError> {
    let pipe = &ctx.pipe;
    action!(
        pipe,
        parent,
        Spec::new("expect-shell-connection", Some(&b.common)),
        |act| {
            let c = conn(st)?;
            c.set_prompts(prompts(ctx, b));
            ctx.log.debug(format!(
                "Forcing a shell prompt, looking for {}",
                py_repr_list(&c.prompts)
            ));
            c.sendline("", 0).await?;
            ctx.log.debug(format!(
                "{}: Wait for prompt {} (timeout {})",
                act.name,
                py_repr_list(&c.prompts),
                crate::jobs::model::seconds_to_str(act.remaining().as_secs_f64())
            ));
            c.force_prompt_wait(act.remaining()).await?;
            Ok(())
        }
    )
}

#[allow(dead_code)]
fn infra(msg: &str) -> LavaError {
    LavaError::new(LavaErrorType::Infrastructure, msg)
}
