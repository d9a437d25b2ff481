//! `test` blocks: test definitions run by `lava-test-runner` over the console (the test-shell
//! files delivered first by `printf` lines, since there is no overlay image), signals turned
//! into results by [`TestShellSession`]; interactive tests; monitors.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::{MARGIN, action_wait, block_max_retries, conn, retry_interval};
use crate::jobs::error::{LavaError, LavaErrorType};
use crate::jobs::expect::{ExpectError, ExpectMatch, Pattern};
use crate::jobs::log::{LogSink, LogValue, LogWriter};
use crate::jobs::model::{TestAction, TestKind};
use crate::jobs::runner::action::{action, retry};
use crate::jobs::runner::connection::{py_repr_list, wait_error};
use crate::jobs::runner::{Act, Connection, Ctx, JobLog, MultinodeRequest, Spec, State};
use crate::jobs::shell::{DeliveryOptions, plan_delivery};
use crate::jobs::signals::{
    InteractiveConsole, RunnerRequest, SessionConfig, TestShellSession, run_interactive,
    run_monitor,
};

/// Runs a test block (`index`: its position in the job's actions).
pub async fn run(
    ctx: &Ctx<'_>,
    st: &mut State,
    root: &Act,
    index: usize,
    t: &TestAction,
) -> Result<(), LavaError> {
    let pipe = &ctx.pipe;
    let block = Some(&t.common);
    let max = block_max_retries(ctx, &t.common, false);
    let (outer, inner) = match &t.kind {
        TestKind::Definitions(_) => ("lava-test-retry", "lava-test-shell"),
        TestKind::Interactive(_) => ("lava-test-interactive-retry", "lava-test-interactive"),
        TestKind::Monitors(_) => ("lava-test-monitor-retry", "lava-test-monitor"),
    };
    action!(pipe, root, Spec::new(outer, block), |act| {
        retry!(pipe, &act, max, retry_interval(&t.common), {
            let spec = Spec::new(inner, block).kind(LavaErrorType::LavaTimeout);
            let a = pipe.begin(&act, spec);
            let r = pipe.guard(&a, body(ctx, st, &a, index, t)).await;
            // LAVA's `finally`: an unfinished run is recorded even on a timeout or cancel.
            let r = match (st.session.take(), r) {
                (Some(mut s), Err(e)) => {
                    let _ = s.finish(std::time::Instant::now(), &mut ctx.log.writer());
                    Err(e)
                }
                (_, r) => r,
            };
            pipe.finish(a, r)
        })
    })
}

async fn body(
    ctx: &Ctx<'_>,
    st: &mut State,
    act: &Act,
    index: usize,
    t: &TestAction,
) -> Result<(), LavaError> {
    match &t.kind {
        TestKind::Definitions(_) => shell(ctx, st, act, index, t).await,
        TestKind::Interactive(tests) => {
            let stage = index + 1;
            let ct = ctx
                .pipe
                .connection_timeout("lava-test-interactive", Duration::from_secs(10))
                .min(act.deadline.saturating_duration_since(act.started));
            let mut subst = std::mem::take(&mut st.substitutions);
            subst
                .entry("{JOB_ID}".into())
                .or_insert_with(|| ctx.job_id.to_string());
            if let Some(ip) = &ctx.env.dispatcher_ip {
                subst.entry("{SERVER_IP}".into()).or_insert(ip.clone());
            }
            let r = async {
                for test in tests {
                    let started = Instant::now();
                    conn(st)?.set_prompts(test.prompts.clone());
                    ctx.log.info(format!(
                        "Test interactive timeout: {}s (minimum of the action and connection timeout)",
                        ct.as_secs()
                    ));
                    let mut console = JobConsole {
                        st: &mut *st,
                        log: &ctx.log,
                        delay: ctx.device.config.character_delays.test,
                        timeout: ct,
                    };
                    let r = run_interactive(&mut console, test, stage, &mut forward(&ctx.log), &mut subst).await;
                    ctx.log.results(
                        LogValue::map()
                            .with("definition", "lava")
                            .with("case", format!("{stage}_{}", test.name))
                            .with("result", if r.is_ok() { "pass" } else { "fail" })
                            .with("duration", format!("{:.2}", started.elapsed().as_secs_f64())),
                    );
                    r?;
                }
                Ok(())
            }
            .await;
            st.substitutions = subst;
            r
        }
        TestKind::Monitors(monitors) => {
            let ct = ctx
                .pipe
                .connection_timeout("lava-test-monitor", Duration::from_secs(120))
                .min(act.deadline.saturating_duration_since(act.started));
            for m in monitors {
                let mut console = JobConsole {
                    st: &mut *st,
                    log: &ctx.log,
                    delay: ctx.device.config.character_delays.test,
                    timeout: ct,
                };
                run_monitor(&mut console, m, &act.level, &mut forward(&ctx.log)).await?;
            }
            Ok(())
        }
    }
}

/// The test shell proper (`TestShellAction.run`).
async fn shell(
    ctx: &Ctx<'_>,
    st: &mut State,
    act: &Act,
    index: usize,
    t: &TestAction,
) -> Result<(), LavaError> {
    if t.common.timeout.is_some_and(|t| t.skip) {
        ctx.log.info("The timeout has 'skip' enabled. If this test action block times out, the job will continue at the next action block.");
    }
    ctx.log.debug("Using namespace: common");
    if st.conn.as_ref().is_none_or(|c| !c.connected) {
        ctx.log
            .error("No connection to the DUT, Check that a boot action precede test actions");
        return Err(LavaError::new(
            LavaErrorType::Job,
            "No connection to the DUT",
        ));
    }
    let delay = ctx.device.config.character_delays.test;
    if delay > 0 {
        ctx.log
            .debug(format!("Using a character delay of {delay} (ms)"));
    }
    let ct = ctx
        .pipe
        .connection_timeout("lava-test-shell", Duration::from_secs(10));
    let c = conn(st)?;
    if c.prompts.is_empty() {
        let p = ctx
            .device
            .config
            .constants
            .default_shell_prompt
            .clone()
            .unwrap_or_else(|| "lava-test: # ".into());
        c.set_prompts(vec![p]);
        ctx.log.debug(format!(
            "Setting default test shell prompt {}",
            py_repr_list(&c.prompts)
        ));
    }
    let check = c.check_char.clone();
    c.sendline(&check, delay).await?;
    action_wait(ctx, act, c).await?;
    if !st.delivered {
        deliver(ctx, st, act, ct).await?;
        st.delivered = true;
    }
    let overlay = st
        .overlay
        .as_ref()
        .ok_or_else(|| LavaError::new(LavaErrorType::Bug, "test shell without an overlay"))?;
    let stage = *st
        .stages
        .get(&index)
        .ok_or_else(|| LavaError::new(LavaErrorType::Bug, "test block without a stage"))?;
    let runs = overlay.runs.clone();
    let [export, source] = overlay.pre_commands();
    let runner = overlay.runner_command(stage);
    let results_dir = overlay.results_dir.clone();
    let c = conn(st)?;
    ctx.log.debug(format!("Using {results_dir}"));
    c.sendline(&export, delay).await?;
    c.wait_prompts(Instant::now() + ct).await?;
    c.sendline(&source, delay).await?;
    c.wait_prompts(Instant::now() + ct).await?;
    let mut cfg = SessionConfig::new(stage, runs);
    cfg.namespace = t
        .common
        .namespace
        .clone()
        .unwrap_or_else(|| "common".into());
    cfg.connection_namespace = t.common.connection_namespace.clone();
    cfg.multinode = st.multinode.is_some();
    st.session = Some(TestShellSession::new(cfg));
    let c = conn(st)?;
    c.sendline(&runner, delay).await?;
    let timeout = ct.min(act.deadline.saturating_duration_since(act.started));
    ctx.log.info(format!(
        "Test shell timeout: {}s (minimum of the action and connection timeout)",
        timeout.as_secs()
    ));
    loop {
        let c = conn(st)?;
        let text = match c.read_text(timeout).await {
            Ok(t) => t,
            Err(ExpectError::Eof { .. }) => {
                return Err(crate::jobs::patterns::connection_closed());
            }
            Err(e) => return Err(wait_error(e)),
        };
        if text.is_empty() {
            continue;
        }
        let outcome = {
            let Some(session) = st.session.as_mut() else {
                return Err(LavaError::new(
                    LavaErrorType::Bug,
                    "test shell session lost",
                ));
            };
            session.feed(&text, std::time::Instant::now(), &mut ctx.log.writer())?
        };
        for req in outcome.requests {
            match req {
                RunnerRequest::Feedback(_) => {}
                RunnerRequest::Multinode { name, params } => {
                    let reply = match st.multinode.as_mut() {
                        Some(mn) => {
                            mn.handle(MultinodeRequest { name, params }, &ctx.log)
                                .await?
                        }
                        None => None,
                    };
                    if let Some(line) = reply {
                        conn(st)?.sendline(&line, delay).await?;
                    }
                }
            }
        }
        if outcome.finished {
            break;
        }
    }
    let mut session = st
        .session
        .take()
        .ok_or_else(|| LavaError::new(LavaErrorType::Bug, "test shell session lost"))?;
    session.finish(std::time::Instant::now(), &mut ctx.log.writer())
}

/// Sends the test-shell files to the DUT: one `printf` per line, each waited for at the
/// prompt, then a marker only the shell's output can contain, then an `md5sum` check.
async fn deliver(ctx: &Ctx<'_>, st: &mut State, act: &Act, ct: Duration) -> Result<(), LavaError> {
    let overlay = st
        .overlay
        .as_ref()
        .ok_or_else(|| LavaError::new(LavaErrorType::Bug, "test shell without an overlay"))?;
    let nonce = 1000 + rand::random::<u32>() % 1_000_000;
    let plan = plan_delivery(
        &overlay.directories(),
        &overlay.files,
        DeliveryOptions::default(),
        nonce,
    )
    .map_err(|e| LavaError::new(LavaErrorType::Bug, e.to_string()))?;
    let bytes: usize = overlay.files.iter().map(|f| f.content.len()).sum();
    ctx.log.debug(format!(
        "labd: delivering the test shell ({} files, {bytes} bytes) to {} over the console in {} command lines",
        overlay.files.len(),
        overlay.results_dir,
        plan.commands.len()
    ));
    let delay = ctx.device.config.character_delays.test;
    let c = conn(st)?;
    let started = Instant::now();
    for cmd in &plan.commands {
        c.sendline(cmd, delay).await?;
        c.wait_prompts(Instant::now() + ct).await?;
    }
    c.sendline(&plan.done_command, delay).await?;
    let marker = Pattern::literal(&plan.done_marker);
    c.expect(&[marker], (Instant::now() + ct).min(act.deadline + MARGIN))
        .await
        .map_err(wait_error)?;
    c.wait_prompts(Instant::now() + ct).await?;
    c.sendline(&plan.verify_command, delay).await?;
    let m = c.wait_prompts(Instant::now() + ct).await?;
    verify(ctx, &m, &plan.verify_expected)?;
    ctx.log.debug(format!(
        "labd: test shell delivered in {:.2}s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

fn verify(ctx: &Ctx<'_>, m: &ExpectMatch, expected: &[String]) -> Result<(), LavaError> {
    let out = m.before.replace('\r', "");
    if out.contains("not found") && !out.contains("  /") {
        ctx.log
            .warning("labd: md5sum is not available on the DUT; delivery not verified");
        return Ok(());
    }
    let missing: Vec<&String> = expected
        .iter()
        .filter(|line| !out.lines().any(|l| l.trim_end() == line.as_str()))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(LavaError::new(
        LavaErrorType::Infrastructure,
        format!(
            "the test shell files arrived damaged on the DUT (md5sum differs for {})",
            missing
                .iter()
                .filter_map(|l| l.split("  ").nth(1))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}

/// A writer for the interactive/monitor code (which takes a `&mut LogWriter` across awaits):
/// it formats records and hands each line to the job's log, which counts it.
struct Forward(JobLog);

impl LogSink for Forward {
    fn write_line(&mut self, line: &str) {
        self.0.writer().write_raw(line);
    }
}

fn forward(log: &JobLog) -> LogWriter<Forward> {
    LogWriter::new(Forward(log.clone()))
}

/// The console as interactive tests and monitors see it.
struct JobConsole<'a> {
    st: &'a mut State,
    log: &'a JobLog,
    delay: u64,
    timeout: Duration,
}

impl InteractiveConsole for JobConsole<'_> {
    async fn sendline(&mut self, line: &str) -> Result<(), LavaError> {
        conn(self.st)?.sendline(line, self.delay).await
    }

    async fn expect(&mut self, patterns: &[&Pattern]) -> Result<ExpectMatch, ExpectError> {
        let c: &mut Connection = match conn(self.st) {
            Ok(c) => c,
            Err(_) => {
                return Err(ExpectError::Eof {
                    pending: String::new(),
                });
            }
        };
        let owned: Vec<Pattern> = patterns.iter().map(|p| (*p).clone()).collect();
        c.expect(&owned, Instant::now() + self.timeout).await
    }

    async fn sleep(&mut self, d: Duration) {
        tokio::time::sleep(d).await;
    }

    async fn multinode(
        &mut self,
        step: &str,
        argument: &str,
    ) -> Result<BTreeMap<String, String>, LavaError> {
        match self.st.multinode.as_mut() {
            Some(mn) => mn.interactive(step, argument, self.log).await,
            None => Err(LavaError::new(
                LavaErrorType::Job,
                format!("interactive `{step}: {argument}` needs the lava-multinode protocol"),
            )),
        }
    }
}
