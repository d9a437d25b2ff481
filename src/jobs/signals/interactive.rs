//! Interactive tests (`test: interactive:`) and monitors (`test: monitors:`), as
//! lava-dispatcher's `actions/test/interactive.py` and `monitor.py` run them, over any console
//! that can send a line and wait for patterns.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use crate::jobs::error::{LavaError, LavaErrorType};
use crate::jobs::expect::{ExpectError, ExpectMatch, Pattern};
use crate::jobs::log::{Level, LogSink, LogValue, LogWriter};
use crate::jobs::model::{InteractiveException, InteractiveTest, Monitor};

use super::util::{py_repr_dict, py_repr_str};

/// What the interactive and monitor code needs from a console. `sendline` must log the
/// `lvl: input` record and apply the test character delay; `expect` applies the connection
/// timeout and logs `lvl: target` lines.
pub trait InteractiveConsole {
    fn sendline(&mut self, line: &str) -> impl Future<Output = Result<(), LavaError>>;
    fn expect(
        &mut self,
        patterns: &[&Pattern],
    ) -> impl Future<Output = Result<ExpectMatch, ExpectError>>;
    /// `delay:` steps.
    fn sleep(&mut self, d: Duration) -> impl Future<Output = ()>;
    /// `lava-send`/`lava-wait`/`lava-wait-all`/`lava-sync` steps: the Multi-Node client
    /// answers with the data received (`{key: value}` of every sender, flattened).
    fn multinode(
        &mut self,
        step: &str,
        argument: &str,
    ) -> impl Future<Output = Result<BTreeMap<String, String>, LavaError>> {
        let msg = format!("interactive `{step}: {argument}` needs the Multi-Node client");
        async move { Err(LavaError::new(LavaErrorType::Job, msg)) }
    }
}

fn compile(p: &str) -> Result<Pattern, LavaError> {
    Pattern::new(p).map_err(|e| {
        LavaError::new(
            LavaErrorType::Job,
            format!("Invalid regular expression '{p}': {e}"),
        )
    })
}

fn expect_error(e: ExpectError, timeout_msg: &str) -> LavaError {
    match e {
        ExpectError::Timeout { .. } => LavaError::new(LavaErrorType::LavaTimeout, timeout_msg),
        ExpectError::Eof { .. } => super::super::patterns::connection_closed(),
        ExpectError::Io(e) => LavaError::new(LavaErrorType::Infrastructure, e.to_string()),
    }
}

/// LAVA's `substitute`: every `{key}` with a non-empty value is replaced.
fn substitute(line: &str, subst: &BTreeMap<String, String>) -> String {
    let mut l = line.to_string();
    for (k, v) in subst {
        if !v.is_empty() {
            l = l.replace(k.as_str(), v);
        }
    }
    l
}

/// Runs one interactive script. `substitutions` carries `{name}` values between steps and
/// scripts (success groups, Multi-Node data).
pub async fn run_interactive<C: InteractiveConsole, S: LogSink>(
    console: &mut C,
    test: &InteractiveTest,
    stage: usize,
    log: &mut LogWriter<S>,
    substitutions: &mut BTreeMap<String, String>,
) -> Result<(), LavaError> {
    let prompts: Vec<Pattern> = test
        .prompts
        .iter()
        .map(|p| compile(p))
        .collect::<Result<_, _>>()?;
    for cmd in &test.script {
        if let Some(d) = cmd.delay {
            log.log(Level::Info, format!("Delaying for {d}s"));
            console.sleep(Duration::from_secs(d)).await;
            continue;
        }
        let mn = [
            ("lava-send", &cmd.lava_send),
            ("lava-wait", &cmd.lava_wait),
            ("lava-wait-all", &cmd.lava_wait_all),
            ("lava-sync", &cmd.lava_sync),
        ];
        if let Some((step, Some(arg))) = mn.iter().find(|(_, a)| a.is_some()) {
            let arg = substitute(arg, substitutions);
            let data = console.multinode(step, &arg).await?;
            for (k, v) in data {
                substitutions.insert(format!("{{{k}}}"), v);
            }
            continue;
        }
        let command = cmd.command.as_ref().map(|c| substitute(c, substitutions));
        let started = Instant::now();
        let mut result = LogValue::map()
            .with("definition", format!("{stage}_{}", test.name))
            .with("case", cmd.name.clone().unwrap_or_default())
            .with("result", "fail");
        let outcome = step(
            console,
            test,
            cmd,
            command.as_deref(),
            &prompts,
            log,
            substitutions,
            &mut result,
        )
        .await;
        if cmd.name.is_some() {
            result.insert(
                "duration",
                format!("{:.2}", started.elapsed().as_secs_f64()),
            );
            log.results(result.clone())
                .map_err(|e| LavaError::new(LavaErrorType::Bug, e.to_string()))?;
        }
        outcome?;
        let passed = result.get("result").and_then(LogValue::as_str) == Some("pass");
        if cmd.name.is_none() && !passed {
            return Err(LavaError::new(
                LavaErrorType::Test,
                format!(
                    "Failed to run command '{}'",
                    command.as_deref().unwrap_or("None")
                ),
            ));
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn step<C: InteractiveConsole, S: LogSink>(
    console: &mut C,
    test: &InteractiveTest,
    cmd: &crate::jobs::model::InteractiveStep,
    command: Option<&str>,
    prompts: &[Pattern],
    log: &mut LogWriter<S>,
    substitutions: &mut BTreeMap<String, String>,
    result: &mut LogValue,
) -> Result<(), LavaError> {
    const TIMEOUT: &str = "interactive connection timed out";
    match command {
        None => {
            log.log(Level::Info, "Sending nothing, waiting");
        }
        Some(c) => {
            log.log(Level::Info, format!("Sending '{c}'"));
            console.sendline(c).await?;
            if test.echo.as_deref() == Some("discard") {
                let nl = Pattern::literal("\r\n");
                let m = console
                    .expect(&[&nl])
                    .await
                    .map_err(|e| expect_error(e, TIMEOUT))?;
                log.log(
                    Level::Debug,
                    format!(
                        "Ignoring echo: {}",
                        py_repr_str(&format!("{}\r\n", m.before))
                    ),
                );
            }
        }
    }
    let failures: Vec<&str> = cmd.failures.iter().map(|f| f.message.as_str()).collect();
    let successes: Vec<&str> = cmd.successes.iter().map(|f| f.message.as_str()).collect();
    let texts: Vec<&str> = test
        .prompts
        .iter()
        .map(String::as_str)
        .chain(failures.iter().copied())
        .chain(successes.iter().copied())
        .collect();
    let pats: Vec<Pattern> = texts.iter().map(|t| compile(t)).collect::<Result<_, _>>()?;
    log.log(
        Level::Debug,
        format!("Waiting for '{}'", texts.join("', '")),
    );
    let refs: Vec<&Pattern> = pats.iter().collect();
    let m = console
        .expect(&refs)
        .await
        .map_err(|e| expect_error(e, TIMEOUT))?;
    let matched = texts[m.index];
    if test.prompts.iter().any(|p| p == matched) {
        if successes.is_empty() {
            log.log(Level::Debug, format!("Matched a prompt: '{matched}'"));
            result.insert("result", "pass");
        } else {
            log.log(
                Level::Error,
                format!("Matched a prompt (was expecting a success): '{matched}'"),
            );
        }
        return Ok(());
    }
    if failures.contains(&matched) {
        let failure = cmd
            .failures
            .get(m.index.saturating_sub(test.prompts.len()))
            .or_else(|| cmd.failures.iter().find(|f| f.message == matched));
        log.log(Level::Error, format!("Matched a failure: '{matched}'"));
        if let Some((exc, failure)) = failure.and_then(|f| Some((f.exception?, f))) {
            let kind = match exc {
                InteractiveException::InfrastructureError => LavaErrorType::Infrastructure,
                InteractiveException::JobError => LavaErrorType::Job,
                InteractiveException::TestError => LavaErrorType::Test,
            };
            return Err(LavaError::new(
                kind,
                failure.error.clone().unwrap_or_else(|| matched.to_string()),
            ));
        }
    } else {
        if m.named.is_empty() {
            log.log(Level::Info, format!("Matched a success: '{matched}'"));
        } else {
            log.log(
                Level::Info,
                format!(
                    "Matched a success: '{matched}' (groups: {})",
                    py_repr_dict(m.named.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                ),
            );
        }
        for (k, v) in &m.named {
            substitutions.insert(format!("{{{k}}}"), v.clone());
        }
        result.insert("result", "pass");
    }
    if cmd.wait_for_prompt.unwrap_or(true) {
        let prefs: Vec<&Pattern> = prompts.iter().collect();
        let m = console
            .expect(&prefs)
            .await
            .map_err(|e| expect_error(e, TIMEOUT))?;
        log.log(
            Level::Debug,
            format!("Matched a prompt: '{}'", test.prompts[m.index]),
        );
    }
    Ok(())
}

/// How a monitor ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorOutcome {
    /// The `end` pattern was seen.
    Passed,
    /// Nothing matched within the connection timeout (LAVA records the action as failed).
    TimedOut,
}

/// Runs one monitor: waits for `start`, then records a result for every `pattern` match until
/// `end`. `level` is the action level put in each result.
pub async fn run_monitor<C: InteractiveConsole, S: LogSink>(
    console: &mut C,
    monitor: &Monitor,
    level: &str,
    log: &mut LogWriter<S>,
) -> Result<MonitorOutcome, LavaError> {
    let start = compile(&monitor.start)?;
    let end = compile(&monitor.end)?;
    let pattern = compile(&monitor.pattern)?;
    log.log(
        Level::Info,
        format!("Waiting for start message: {}", monitor.start),
    );
    console.expect(&[&start]).await.map_err(|e| match e {
        ExpectError::Timeout { .. } => {
            LavaError::new(LavaErrorType::Job, "wait for prompt timed out")
        }
        other => expect_error(other, ""),
    })?;
    log.log(
        Level::Info,
        "ok: start string found, lava test monitoring started",
    );
    let suite = monitor.name.replace(' ', "-").to_lowercase();
    loop {
        let m = match console.expect(&[&end, &pattern]).await {
            Ok(m) => m,
            Err(ExpectError::Timeout { .. }) => {
                log.log(Level::Warning, "err: lava test monitoring has timed out");
                return Ok(MonitorOutcome::TimedOut);
            }
            Err(ExpectError::Eof { .. }) => {
                log.log(
                    Level::Warning,
                    "err: lava test monitoring reached end of file",
                );
                return Err(super::super::patterns::connection_closed());
            }
            Err(e) => return Err(expect_error(e, "")),
        };
        if m.index == 0 {
            log.log(
                Level::Info,
                "ok: end string found, lava test monitoring stopped",
            );
            return Ok(MonitorOutcome::Passed);
        }
        log.log(Level::Info, "ok: test case found");
        let g = &m.named;
        let case_of = |id: &str| {
            let lower = id.trim().to_lowercase();
            let mut out = String::new();
            let mut in_sep = false;
            for c in lower.chars() {
                if c.is_alphanumeric() || c == '_' {
                    out.push(c);
                    in_sep = false;
                } else if !in_sep {
                    out.push('_');
                    in_sep = true;
                }
            }
            out
        };
        if let Some(res) = g.get("result") {
            let res = monitor
                .fixupdict
                .get(res)
                .map_or(res.clone(), |r| r.as_str().to_string());
            if !matches!(res.as_str(), "pass" | "fail" | "skip" | "unknown") {
                log.log(Level::Error, format!("error: bad test results: {res}"));
            } else if let Some(id) = g.get("test_case_id") {
                let case = case_of(id);
                log.log(Level::Debug, format!("test_case_id: {case}"));
                let mut r = LogValue::map()
                    .with("definition", suite.as_str())
                    .with("case", case)
                    .with("level", level)
                    .with("result", res)
                    .with("extra", LogValue::map().with("test_case_id", id.trim()));
                if let Some(mv) = g.get("measurement") {
                    r.insert("measurement", mv.as_str());
                }
                if let Some(u) = g.get("units") {
                    r.insert("units", u.as_str());
                }
                log.results(r)
                    .map_err(|e| LavaError::new(LavaErrorType::Bug, e.to_string()))?;
            }
        } else if let (Some(id), Some(mv)) = (g.get("test_case_id"), g.get("measurement")) {
            if !id.is_empty() && !mv.is_empty() {
                let case = case_of(id);
                log.log(Level::Debug, format!("test_case_id: {case}"));
                let measurement = mv.trim().parse::<f64>().map_err(|_| {
                    LavaError::new(
                        LavaErrorType::Bug,
                        format!("could not convert string to float: {}", py_repr_str(mv)),
                    )
                })?;
                let mut r = LogValue::map()
                    .with("definition", suite.as_str())
                    .with("case", case)
                    .with("level", level)
                    .with("result", "pass")
                    .with("measurement", measurement)
                    .with("extra", LogValue::map().with("test_case_id", id.trim()));
                if let Some(u) = g.get("units") {
                    r.insert("units", u.as_str());
                }
                log.results(r)
                    .map_err(|e| LavaError::new(LavaErrorType::Bug, e.to_string()))?;
            }
        }
    }
}

#[cfg(test)]
#[path = "interactive_tests.rs"]
mod tests;
