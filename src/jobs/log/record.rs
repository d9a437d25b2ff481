//! Log records and the writer that numbers them, as `lava_common/log.py` (`YAMLLogger`, `dump`).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use chrono::{NaiveDateTime, Timelike};

use super::emit::emit_value;
use super::value::LogValue;
use crate::jobs::error::JobsError;

/// `len(line) >= 10**6` makes lava-dispatcher replace the message.
pub const MAX_LINE_LEN: usize = 1_000_000;

/// The `lvl` of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    Exception,
    Error,
    Warning,
    Info,
    Debug,
    Input,
    Target,
    Feedback,
    Event,
    Results,
}

impl Level {
    pub const ALL: [Level; 10] = [
        Level::Exception,
        Level::Error,
        Level::Warning,
        Level::Info,
        Level::Debug,
        Level::Input,
        Level::Target,
        Level::Feedback,
        Level::Event,
        Level::Results,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Exception => "exception",
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Input => "input",
            Level::Target => "target",
            Level::Feedback => "feedback",
            Level::Event => "event",
            Level::Results => "results",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Level::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| format!("unknown log level {s:?}"))
    }
}

/// One log line: `{"dt": ..., "lvl": ..., "msg": ...[, "ns": ...]}`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    /// `datetime.utcnow().isoformat()` text, kept as text so a parsed line re-dumps identically.
    pub dt: String,
    /// The level as written; lava-server accepts only the ten [`Level`]s.
    pub lvl: String,
    pub msg: LogValue,
    /// Namespace of a `feedback` record.
    pub ns: Option<String>,
}

impl LogRecord {
    pub fn new(dt: NaiveDateTime, lvl: Level, msg: impl Into<LogValue>) -> Self {
        Self {
            dt: format_dt(dt),
            lvl: lvl.as_str().to_string(),
            msg: msg.into(),
            ns: None,
        }
    }

    pub fn level(&self) -> Option<Level> {
        self.lvl.parse().ok()
    }

    /// The line lava-dispatcher would write, without a newline, with the too-long rule applied.
    pub fn dump(&self) -> String {
        let line = self.dump_raw(&self.msg);
        if line.len() < MAX_LINE_LEN {
            return line;
        }
        let msg = match self.msg {
            LogValue::Str(_) => LogValue::from("<line way too long ...>"),
            _ => LogValue::map().with("skip", "line way too long ..."),
        };
        self.dump_raw(&msg)
    }

    fn dump_raw(&self, msg: &LogValue) -> String {
        // Keys in sorted order: dt, lvl, msg, ns.
        let mut m = std::collections::BTreeMap::new();
        m.insert("dt".to_string(), LogValue::from(self.dt.as_str()));
        m.insert("lvl".to_string(), LogValue::from(self.lvl.as_str()));
        m.insert("msg".to_string(), msg.clone());
        if let Some(ns) = &self.ns {
            m.insert("ns".to_string(), LogValue::from(ns.as_str()));
        }
        let mut out = String::with_capacity(64);
        emit_value(&mut out, &LogValue::Map(m));
        out
    }
}

/// `datetime.isoformat()`: microseconds are printed only when they are not zero.
pub fn format_dt(dt: NaiveDateTime) -> String {
    let micros = (dt.nanosecond() / 1000).min(999_999);
    if micros == 0 {
        dt.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        format!("{}.{micros:06}", dt.format("%Y-%m-%dT%H:%M:%S"))
    }
}

/// The current UTC time as `datetime.utcnow()` gives it.
pub fn utc_now() -> NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

/// Where finished log lines go (a file, an upload queue, a terminal).
pub trait LogSink {
    fn write_line(&mut self, line: &str);
}

impl LogSink for Vec<String> {
    fn write_line(&mut self, line: &str) {
        self.push(line.to_string());
    }
}

/// The kinds of test-case markers `lava-test-shell` records (`YAMLLogger.marker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MarkerKind {
    StartTestCase,
    EndTestCase,
    TestCase,
}

/// Writes records and keeps the line count and test-case markers that `results` records use for
/// `starttc`/`endtc`, exactly as `YAMLLogger` does.
pub struct LogWriter<S: LogSink> {
    sink: S,
    line: u64,
    markers: HashMap<String, HashMap<MarkerKind, u64>>,
    clock: Box<dyn FnMut() -> NaiveDateTime + Send>,
}

impl<S: LogSink> LogWriter<S> {
    pub fn new(sink: S) -> Self {
        Self::with_clock(sink, Box::new(utc_now))
    }

    /// A writer with a fixed or simulated clock (tests, replays).
    pub fn with_clock(sink: S, clock: Box<dyn FnMut() -> NaiveDateTime + Send>) -> Self {
        Self {
            sink,
            line: 0,
            markers: HashMap::new(),
            clock,
        }
    }

    /// Number of records written so far.
    pub fn line_count(&self) -> u64 {
        self.line
    }

    pub fn sink(&self) -> &S {
        &self.sink
    }

    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    pub fn into_sink(self) -> S {
        self.sink
    }

    /// Writes one record and returns its line.
    pub fn log(&mut self, lvl: Level, msg: impl Into<LogValue>) -> String {
        self.log_ns(lvl, msg, None)
    }

    /// Writes a record; `ns` is kept only for `feedback`, as lava-dispatcher does.
    pub fn log_ns(&mut self, lvl: Level, msg: impl Into<LogValue>, ns: Option<&str>) -> String {
        self.line += 1;
        let mut rec = LogRecord::new((self.clock)(), lvl, msg);
        if lvl == Level::Feedback {
            rec.ns = ns.map(str::to_string);
        }
        let line = rec.dump();
        self.sink.write_line(&line);
        line
    }

    /// Writes a line another writer of the same job already formatted, counting it, so line
    /// numbers (`starttc`/`endtc`) stay those of the whole job.
    pub fn write_raw(&mut self, line: &str) {
        self.line += 1;
        self.sink.write_line(line);
    }

    /// Records where a test case's signal was seen: the index of the last line written.
    pub fn marker(&mut self, case: &str, kind: MarkerKind) {
        let at = self.line.saturating_sub(1);
        self.markers
            .entry(case.to_string())
            .or_default()
            .insert(kind, at);
    }

    /// Writes a `results` record, adding `starttc`/`endtc` from the markers of its case.
    pub fn results(&mut self, mut results: LogValue) -> Result<String, JobsError> {
        let Some(map) = results.as_map() else {
            return Err(JobsError::Bug("results must be a mapping".into()));
        };
        if map.contains_key("extra") && !map.contains_key("level") {
            return Err(JobsError::Bug(
                "'level' is mandatory when 'extra' is used".into(),
            ));
        }
        let case = match map.get("case") {
            Some(LogValue::Str(c)) => c.clone(),
            _ => return Err(JobsError::Bug("results without a 'case'".into())),
        };
        if let Some(markers) = self.markers.remove(&case) {
            let tc = markers.get(&MarkerKind::TestCase).copied();
            let start = markers.get(&MarkerKind::StartTestCase).copied().or(tc);
            let end = markers.get(&MarkerKind::EndTestCase).copied().or(tc);
            results.insert("starttc", start.map(|v| LogValue::Int(v as i64)));
            results.insert("endtc", end.map(|v| LogValue::Int(v as i64)));
        }
        Ok(self.log(Level::Results, results))
    }
}

impl<S: LogSink> fmt::Debug for LogWriter<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogWriter")
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn t(us: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2023, 1, 1)
            .unwrap()
            .and_hms_micro_opt(0, 0, 0, us)
            .unwrap()
    }

    #[test]
    fn dt_drops_zero_microseconds() {
        assert_eq!(format_dt(t(0)), "2023-01-01T00:00:00");
        assert_eq!(format_dt(t(5)), "2023-01-01T00:00:00.000005");
    }

    #[test]
    fn observed_lines() {
        let mut dt =
            NaiveDateTime::parse_from_str("2026-11-22T03:36:52.566270", "%Y-%m-%dT%H:%M:%S%.f")
                .unwrap();
        let mut w = LogWriter::with_clock(Vec::new(), Box::new(move || dt));
        w.log(
            Level::Info,
            "lava-dispatcher, installed at version: 2023.01",
        );
        assert_eq!(
            w.sink()[0],
            r#"{"dt": "2026-11-22T03:36:52.566270", "lvl": "info", "msg": "lava-dispatcher, installed at version: 2023.01"}"#
        );
        dt = t(0);
        let mut w = LogWriter::with_clock(Vec::new(), Box::new(move || dt));
        w.log(Level::Target, "a");
        w.log(Level::Debug, "Received signal: <STARTTC> pwd");
        w.marker("pwd", MarkerKind::StartTestCase);
        w.log(Level::Debug, "x");
        w.marker("pwd", MarkerKind::EndTestCase);
        w.marker("pwd", MarkerKind::TestCase);
        let r = LogValue::map()
            .with("case", "pwd")
            .with("definition", "0_smoke")
            .with("result", "pass")
            .with("measurement", 1.5);
        let line = w.results(r).unwrap();
        assert_eq!(
            line,
            r#"{"dt": "2023-01-01T00:00:00", "lvl": "results", "msg": {"case": "pwd", "definition": "0_smoke", "endtc": ! "2", "measurement": ! "1.5", "result": "pass", "starttc": ! "1"}}"#
        );
        assert!(
            w.results(LogValue::map().with("case", "x").with("extra", "y"))
                .is_err()
        );
    }

    #[test]
    fn too_long_lines_are_replaced() {
        let long = "x".repeat(MAX_LINE_LEN);
        let mut r = LogRecord::new(t(0), Level::Target, long.as_str());
        assert_eq!(
            r.dump(),
            r#"{"dt": "2023-01-01T00:00:00", "lvl": "target", "msg": "<line way too long ...>"}"#
        );
        r.msg = LogValue::List(vec![LogValue::from(long)]);
        assert!(
            r.dump()
                .ends_with(r#""msg": {"skip": "line way too long ..."}}"#)
        );
    }
}
