//! The actions of a job, one module per block kind: `deploy`, `boot` (`minimal`, `u-boot`;
//! `qemu`), the login and kernel-message checks every boot ends with, and `test` (test-shell
//! definitions, interactive tests, monitors).

pub mod boot;
pub mod deploy;
pub mod login;
pub mod qemu;
pub mod test;

use std::time::Duration;

use super::error::{LavaError, LavaErrorType};
use super::model::{ActionCommon, AutoLogin, BootAction};
use super::runner::connection::py_repr_list;
use super::runner::{Act, Connection, Ctx, State};

/// Waits on a console end a little after the action's deadline, so the action's own timeout
/// (with LAVA's message) is what ends a wait that never matches.
pub(crate) const MARGIN: Duration = Duration::from_secs(2);

/// The job's live connection, or LAVA's error when there is none.
pub(crate) fn conn(st: &mut State) -> Result<&mut Connection, LavaError> {
    st.conn
        .as_mut()
        .filter(|c| c.connected)
        .ok_or_else(|| LavaError::new(LavaErrorType::Job, "No connection to the DUT"))
}

/// `Action.wait`: logs `<name>: Wait for prompt [...] (timeout ...)` and waits for the current
/// prompts until the action's deadline. Returns the index of the prompt that matched.
pub(crate) async fn action_wait(
    ctx: &Ctx<'_>,
    act: &Act,
    conn: &mut Connection,
) -> Result<usize, LavaError> {
    ctx.log.debug(format!(
        "{}: Wait for prompt {} (timeout {})",
        act.name,
        py_repr_list(&conn.prompts),
        super::model::seconds_to_str(act.remaining().as_secs_f64())
    ));
    Ok(conn.wait_prompts(act.deadline + MARGIN).await?.index)
}

/// The prompts of a boot block (`[device.boot] prompts` when the block has none).
pub(crate) fn prompts(ctx: &Ctx<'_>, b: &BootAction) -> Vec<String> {
    if b.prompts.is_empty() {
        ctx.device.default_prompts.clone()
    } else {
        b.prompts.clone()
    }
}

/// The auto-login of a boot block (`[device.boot.login]` when the block has none).
pub(crate) fn auto_login(ctx: &Ctx<'_>, b: &BootAction) -> Option<AutoLogin> {
    b.auto_login
        .clone()
        .or_else(|| ctx.device.default_login.clone())
}

/// A `RetryAction`'s attempts: the block's `failure_retry`, else the device's `failure_retry`
/// constant (`boot_retry` for boot blocks when set), else 1.
pub(crate) fn block_max_retries(ctx: &Ctx<'_>, common: &ActionCommon, boot: bool) -> u32 {
    if let Some(n) = common.failure_retry {
        return n.max(1);
    }
    let c = &ctx.device.config.constants;
    let mut n = c.failure_retry.unwrap_or(1);
    if boot {
        if let Some(b) = c.boot_retry {
            n = b;
        }
    }
    n.max(1)
}

/// `failure_retry_interval` (seconds), 1 s by default.
pub(crate) fn retry_interval(common: &ActionCommon) -> Duration {
    Duration::from_secs(common.failure_retry_interval.map_or(1, u64::from))
}

/// Whether the job has a test shell (test definitions) after this boot.
pub(crate) fn test_has_shell(ctx: &Ctx<'_>) -> bool {
    ctx.job.actions.iter().any(|a| {
        matches!(
            a,
            super::model::Action::Test(t) if matches!(t.kind, super::model::TestKind::Definitions(_))
        )
    })
}
