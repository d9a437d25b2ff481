//! Test-shell signals → log records and results, as lava-dispatcher's `TestShellAction` does
//! (`check_patterns` and the `signal_*` handlers of `actions/test/shell.py`). The session
//! writes straight into the job's [`LogWriter`] so record order, line numbers and the
//! `starttc`/`endtc` markers come out exactly as LAVA's.

use std::collections::BTreeMap;
use std::time::Instant;

use super::scan::{ShellEvent, SignalScanner};
use super::util::{parse_decimal, py_repr_dict, py_repr_str};
use crate::jobs::error::{LavaError, LavaErrorType};
use crate::jobs::log::{Level, LogSink, LogValue, LogWriter, MarkerKind};
use crate::jobs::model::TestResult;
use crate::jobs::shell::TestRunInfo;

/// Settings of one `lava-test-shell` action.
#[derive(Debug, Clone, Default)]
pub struct SessionConfig {
    /// Stage number (`lava-test-runner /lava-N/<stage>`).
    pub stage: usize,
    /// The action's namespace (`common` by default).
    pub namespace: String,
    pub connection_namespace: Option<String>,
    /// Every test run of the job (LAVA's `testdef_index` with each run's data).
    pub runs: Vec<TestRunInfo>,
    /// Namespaces `lava-test-feedback` may ask for.
    pub feedback_namespaces: Vec<String>,
    /// Recognise Multi-Node API lines.
    pub multinode: bool,
}

impl SessionConfig {
    /// A single-namespace job's test action: namespace `common`.
    pub fn new(stage: usize, runs: Vec<TestRunInfo>) -> Self {
        Self {
            stage,
            namespace: "common".into(),
            runs,
            ..Self::default()
        }
    }
}

/// Something only the runner can do, asked for by the DUT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerRequest {
    /// `lava-test-feedback --namespace NS`: listen to that namespace's console for 1 s.
    Feedback(String),
    /// A Multi-Node API line (`<LAVA_MULTI_NODE> <LAVA_SEND ...>`), for the multinode client.
    Multinode { name: String, params: String },
}

/// What a chunk of console text led to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedOutcome {
    /// `<LAVA_TEST_RUNNER EXIT>` was seen: the action is over.
    pub finished: bool,
    pub requests: Vec<RunnerRequest>,
}

/// The state of one running `lava-test-shell` action.
#[derive(Debug)]
pub struct TestShellSession {
    cfg: SessionConfig,
    scanner: SignalScanner,
    definition: Option<String>,
    test_uuid: Option<String>,
    testset: Option<String>,
    current_run: Option<LogValue>,
    start: Option<Instant>,
    /// The fix-up dictionary in force (LAVA's `PatternFixup.fixup`).
    fixup: BTreeMap<String, String>,
    report: BTreeMap<String, LogValue>,
    errors: Option<String>,
}

fn default_fixup() -> BTreeMap<String, String> {
    [
        ("PASS", "pass"),
        ("FAIL", "fail"),
        ("SKIP", "skip"),
        ("UNKNOWN", "unknown"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

impl TestShellSession {
    pub fn new(cfg: SessionConfig) -> Self {
        let scanner = if cfg.multinode {
            SignalScanner::new().with_multinode()
        } else {
            SignalScanner::new()
        };
        Self {
            cfg,
            scanner,
            definition: None,
            test_uuid: None,
            testset: None,
            current_run: None,
            start: None,
            fixup: default_fixup(),
            report: BTreeMap::new(),
            errors: None,
        }
    }

    /// Console text received (decoded); processes every complete event.
    pub fn feed<S: LogSink>(
        &mut self,
        text: &str,
        now: Instant,
        log: &mut LogWriter<S>,
    ) -> Result<FeedOutcome, LavaError> {
        let mut out = FeedOutcome::default();
        let mut next = self.scanner.feed(text);
        while let Some((event, _)) = next {
            if self.handle(event, now, log, &mut out)? {
                out.finished = true;
                return Ok(out);
            }
            next = self.scanner.next_event();
        }
        Ok(out)
    }

    /// Ends the action (normally, on a timeout or on an error): an unfinished run is recorded
    /// as failed, the report is logged, and a stage that could not start fails the action.
    pub fn finish<S: LogSink>(
        &mut self,
        now: Instant,
        log: &mut LogWriter<S>,
    ) -> Result<(), LavaError> {
        if let Some(mut run) = self.current_run.take() {
            log.log(Level::Error, "Marking unfinished test run as failed");
            let secs = self
                .start
                .map_or(0.0, |s| now.duration_since(s).as_secs_f64());
            run.insert("duration", format!("{secs:.2}"));
            results(log, run)?;
        }
        if !self.report.is_empty() {
            let yaml = serde_norway::to_string(&LogValue::Map(self.report.clone()).to_json())
                .unwrap_or_default();
            log.log(Level::Debug, yaml);
        }
        match self.errors.take() {
            Some(e) => Err(LavaError::new(LavaErrorType::Test, e)),
            None => Ok(()),
        }
    }

    /// Results reported so far: case → result (or `{result, set}`).
    pub fn report(&self) -> &BTreeMap<String, LogValue> {
        &self.report
    }

    /// Returns true when the action is over (`<LAVA_TEST_RUNNER EXIT>`).
    fn handle<S: LogSink>(
        &mut self,
        event: ShellEvent,
        now: Instant,
        log: &mut LogWriter<S>,
        out: &mut FeedOutcome,
    ) -> Result<bool, LavaError> {
        match event {
            ShellEvent::Exit => {
                log.log(Level::Info, "ok: lava_test_shell seems to have completed");
                self.testset = None;
                return Ok(true);
            }
            ShellEvent::InstallFail => {
                let stage = self.cfg.stage;
                log.log(
                    Level::Error,
                    format!("Unable to start stage {stage}. Read the log for more details."),
                );
                self.errors = Some(format!("Unable to start test stage {stage}"));
                self.start = Some(now);
                self.current_run = Some(
                    LogValue::map()
                        .with("definition", "lava")
                        .with("case", format!("stage_{stage}"))
                        .with("result", "fail"),
                );
            }
            ShellEvent::Signal { name, params, raw } => {
                log.log(Level::Debug, format!("Received signal: <{name}> {raw}"));
                self.signal(&name, params, now, log, out)?;
            }
            ShellEvent::TestCaseResult { groups } => self.pattern_result(groups, log)?,
            ShellEvent::Multinode { name, params } => {
                out.requests.push(RunnerRequest::Multinode { name, params });
            }
        }
        Ok(false)
    }

    fn signal<S: LogSink>(
        &mut self,
        name: &str,
        mut params: Vec<String>,
        now: Instant,
        log: &mut LogWriter<S>,
        out: &mut FeedOutcome,
    ) -> Result<(), LavaError> {
        let p0 = params.first().cloned().unwrap_or_default();
        match name {
            "STARTRUN" => self.start_run(&params, now, log),
            "ENDRUN" => self.end_run(&params, now, log)?,
            "STARTTC" => log.marker(&p0, MarkerKind::StartTestCase),
            "ENDTC" => log.marker(&p0, MarkerKind::EndTestCase),
            "TESTCASE" => {
                log.marker(&p0.replace("TEST_CASE_ID=", ""), MarkerKind::TestCase);
                self.test_case(&params, log)?;
            }
            "TESTFEEDBACK" => {
                if self.cfg.feedback_namespaces.contains(&p0) {
                    log.log(
                        Level::Info,
                        format!("Requesting feedback from namespace: {p0}"),
                    );
                    out.requests.push(RunnerRequest::Feedback(p0));
                } else {
                    // LAVA logs its format string unformatted here.
                    log.log(Level::Error, "%s is not a valid namespace");
                }
            }
            "TESTREFERENCE" => {
                if params.len() != 3 {
                    return Err(LavaError::new(
                        LavaErrorType::Test,
                        "Invalid use of TESTREFERENCE",
                    ));
                }
                let mut r = LogValue::map()
                    .with("case", params[0].as_str())
                    .with("definition", self.definition.clone())
                    .with("result", params[1].as_str())
                    .with("reference", params[2].as_str());
                if let Some(set) = &self.testset {
                    r.insert("set", set.as_str());
                }
                results(log, r)?;
            }
            "TESTSET" => {
                let action = if params.is_empty() {
                    String::new()
                } else {
                    params.remove(0)
                };
                if action == "START" {
                    let Some(set) = params.first() else {
                        return Err(LavaError::new(
                            LavaErrorType::Job,
                            "Test set declared without a name",
                        ));
                    };
                    self.testset = Some(set.clone());
                    log.log(Level::Info, format!("Starting test_set {set}"));
                } else if action == "STOP" {
                    let set = self.testset.take().unwrap_or_else(|| "None".into());
                    log.log(Level::Info, format!("Closing test_set {set}"));
                }
            }
            "TESTRAISE" => {
                return Err(LavaError::new(LavaErrorType::Test, params.join(" ")));
            }
            "TESTEVENT" => {
                log.log(Level::Event, params.join(" "));
            }
            _ => {}
        }
        Ok(())
    }

    fn start_run<S: LogSink>(&mut self, params: &[String], now: Instant, log: &mut LogWriter<S>) {
        let definition = params.first().cloned().unwrap_or_default();
        let uuid = params.get(1).cloned().unwrap_or_default();
        self.test_uuid = Some(uuid.clone());
        self.definition = Some(definition.clone());
        self.start = Some(now);
        log.log(
            Level::Info,
            format!("Starting test lava.{definition} ({uuid})"),
        );
        let runs = self.cfg.runs.clone();
        for run in runs.iter().filter(|r| r.testrun_id == definition) {
            match &run.parse_pattern {
                None => {
                    log.log(Level::Info, "Skipping test definition patterns.");
                }
                Some(p) => {
                    // An invalid pattern was refused when the job was validated.
                    let _ = self.scanner.set_parse_pattern(Some(p));
                    self.fixup = run.fixupdict.clone().unwrap_or_default();
                    log.log(
                        Level::Info,
                        format!("Enabling test definition pattern {}", py_repr_str(p)),
                    );
                    log.log(
                        Level::Info,
                        format!(
                            "Enabling test definition fixup {}",
                            py_repr_dict(self.fixup.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                        ),
                    );
                }
            }
        }
        self.current_run = Some(
            LogValue::map()
                .with("definition", "lava")
                .with("case", definition)
                .with("uuid", uuid)
                .with("result", "fail"),
        );
    }

    fn end_run<S: LogSink>(
        &mut self,
        params: &[String],
        now: Instant,
        log: &mut LogWriter<S>,
    ) -> Result<(), LavaError> {
        let definition = params.first().cloned().unwrap_or_default();
        let uuid = params.get(1).cloned().unwrap_or_default();
        self.definition = Some(definition.clone());
        // _reset_patterns
        let _ = self.scanner.set_parse_pattern(None);
        self.fixup = default_fixup();
        let start = *self.start.get_or_insert(now);
        let secs = now.duration_since(start).as_secs_f64();
        log.log(Level::Info, "Ending use of test pattern.");
        log.log(
            Level::Info,
            format!("Ending test lava.{definition} ({uuid}), duration {secs:.2}"),
        );
        self.current_run = None;
        let run = self.cfg.runs.iter().find(|r| r.uuid == uuid);
        let mut r = LogValue::map()
            .with("definition", "lava")
            .with("case", definition)
            .with("uuid", uuid.as_str())
            .with(
                "repository",
                run.map_or(LogValue::Null, |r| r.repository.clone()),
            )
            .with(
                "path",
                run.map_or(LogValue::Null, |r| LogValue::from(r.path.as_str())),
            )
            .with("duration", format!("{secs:.2}"))
            .with("result", "pass")
            .with(
                "revision",
                run.and_then(|r| r.revision.clone())
                    .unwrap_or_else(|| "unspecified".into()),
            )
            .with("namespace", self.cfg.namespace.as_str());
        if let Some(cn) = &self.cfg.connection_namespace {
            r.insert("connection-namespace", cn.as_str());
        }
        results(log, r)?;
        self.start = None;
        Ok(())
    }

    /// `signal_test_case`: a malformed signal is logged and dropped, as LAVA does.
    fn test_case<S: LogSink>(
        &mut self,
        params: &[String],
        log: &mut LogWriter<S>,
    ) -> Result<(), LavaError> {
        if self.test_uuid.is_none() {
            log.log(
                Level::Error,
                "Unknown test uuid. The STARTRUN signal for this test action was not received correctly.",
            );
            return Err(LavaError::new(
                LavaErrorType::Test,
                "Invalid TESTCASE signal",
            ));
        }
        let mut data: BTreeMap<String, String> = BTreeMap::new();
        for p in params {
            let parts: Vec<&str> = p.split('=').collect();
            if parts.len() == 2 {
                data.insert(parts[0].to_lowercase(), parts[1].to_string());
            } else {
                log.log(
                    Level::Error,
                    format!("Ignoring malformed parameter for signal: \"{p}\". "),
                );
                return Ok(());
            }
        }
        match self.signal_match(&data) {
            Err(msg) => {
                log.log(Level::Error, msg);
                Ok(())
            }
            Ok((case, result, measurement)) => {
                let mut r = LogValue::map()
                    .with("definition", self.definition.clone())
                    .with("case", case.as_str())
                    .with("result", result.as_str());
                if let Some(m) = measurement {
                    r.insert("measurement", m);
                    if let Some(u) = data.get("units") {
                        r.insert("units", u.as_str());
                    }
                }
                self.record(&case, &result, &mut r);
                results(log, r)
            }
        }
    }

    /// `SignalMatch.match`: fix-ups, result and measurement checks.
    fn signal_match(
        &self,
        data: &BTreeMap<String, String>,
    ) -> Result<(String, String, Option<f64>), String> {
        let mut measurement = None;
        let mut result = None;
        // Python iterates the dict in insertion order; the first failing key raises. The keys
        // that can fail are measurement and result, checked in the order the signal gave them
        // — the helpers always write RESULT before MEASUREMENT.
        if let Some(r) = data.get("result") {
            let fixed = self.fixup.get(r).cloned().unwrap_or_else(|| r.clone());
            if TestResult::parse(&fixed).is_none() {
                return Err(format!("Bad test result: {r}"));
            }
            result = Some(fixed);
        }
        if let Some(m) = data.get("measurement") {
            measurement = Some(parse_decimal(m).ok_or_else(|| format!("Invalid measurement {m}"))?);
        }
        let Some(case) = data.get("test_case_id") else {
            return Err(format!(
                "Test case results without test_case_id (probably a sign of an incorrect parsing pattern being used): {}",
                py_repr_dict(data.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            ));
        };
        let Some(result) = result else {
            return Err(format!(
                "Test case results without result (probably a sign of an incorrect parsing pattern being used): {}",
                py_repr_dict(
                    data.iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .chain([("result", "unknown")])
                )
            ));
        };
        Ok((case.clone(), result, measurement))
    }

    fn record(&mut self, case: &str, result: &str, r: &mut LogValue) {
        match &self.testset {
            Some(set) => {
                r.insert("set", set.as_str());
                self.report.insert(
                    case.to_string(),
                    LogValue::map()
                        .with("set", set.as_str())
                        .with("result", result),
                );
            }
            None => {
                self.report.insert(case.to_string(), LogValue::from(result));
            }
        }
    }

    /// `pattern_test_case_result`: a match of the definition's `parse.pattern`.
    fn pattern_result<S: LogSink>(
        &mut self,
        mut g: BTreeMap<String, String>,
        log: &mut LogWriter<S>,
    ) -> Result<(), LavaError> {
        let Some(id) = g.get("test_case_id").cloned() else {
            return Err(LavaError::new(
                LavaErrorType::Bug,
                "parse pattern matched without a test_case_id group",
            ));
        };
        let Some(res) = g.get("result").cloned() else {
            return Err(LavaError::new(
                LavaErrorType::Bug,
                "parse pattern matched without a result group",
            ));
        };
        if let Some(f) = self.fixup.get(&res) {
            g.insert("result".into(), f.clone());
        }
        let result = g["result"].clone();
        log.marker(&id, MarkerKind::TestCase);
        let cleaned = id.replace('/', "_");
        if cleaned.trim().contains(' ') {
            log.log(
                Level::Debug,
                format!("Skipping invalid test_case_id '{}'", cleaned.trim()),
            );
            return Ok(());
        }
        let mut r = LogValue::map()
            .with("definition", self.definition.clone())
            .with("case", id.as_str())
            .with("result", result.as_str());
        if let Some(m) = g.get("measurement") {
            let v = parse_decimal(m).ok_or_else(|| {
                LavaError::new(LavaErrorType::Test, format!("Invalid measurement {m}"))
            })?;
            r.insert("measurement", v);
            if let Some(u) = g.get("units") {
                r.insert("units", u.as_str());
            }
        }
        results(log, r)?;
        self.report.insert(id, LogValue::from(result.as_str()));
        Ok(())
    }
}

fn results<S: LogSink>(log: &mut LogWriter<S>, r: LogValue) -> Result<(), LavaError> {
    log.results(r)
        .map(|_| ())
        .map_err(|e| LavaError::new(LavaErrorType::Bug, e.to_string()))
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
