//! The result records of actions and of the job (section 7.2 of the reference).

use crate::jobs::error::LavaError;
use crate::jobs::log::LogValue;

/// An action's result: `{"definition": "lava", "namespace", "case": <action name>, "level",
/// "duration": "%.02f", "result", "extra": {...}}` (`Action.log_action_results`). A failed
/// action's `extra` holds `{"fail": <message>}` as observed.
pub fn action_result(
    name: &str,
    level: &str,
    namespace: &str,
    duration_secs: f64,
    error: Option<&LavaError>,
    extra: Option<LogValue>,
) -> LogValue {
    let mut extra = extra.unwrap_or_else(LogValue::map);
    if let Some(e) = error {
        extra.insert("fail", e.message.as_str());
    }
    LogValue::map()
        .with("definition", "lava")
        .with("namespace", namespace)
        .with("case", name)
        .with("level", level)
        .with("duration", format!("{duration_secs:.2}"))
        .with("result", if error.is_some() { "fail" } else { "pass" })
        .with("extra", extra)
}

/// The job's result: `{"definition": "lava", "case": "job", "result": "pass"|"fail"[,
/// "error_msg", "error_type"]}`.
pub fn job_result(error: Option<&LavaError>) -> LogValue {
    let mut r = LogValue::map()
        .with("definition", "lava")
        .with("case", "job")
        .with("result", if error.is_some() { "fail" } else { "pass" });
    if let Some(e) = error {
        r.insert("error_msg", e.message.as_str());
        r.insert("error_type", e.kind.as_str());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::error::LavaErrorType;
    use crate::jobs::log::{Level, LogRecord};

    #[test]
    fn observed_action_result() {
        let e = LavaError::timed_out("login-action", 33, LavaErrorType::Job);
        let r = action_result("login-action", "2.2.1", "common", 33.0, Some(&e), None);
        let mut rec = LogRecord::new(chrono::NaiveDateTime::default(), Level::Results, r);
        rec.dt = "2026-11-22T03:38:59.198065".into();
        assert_eq!(
            rec.dump(),
            r#"{"dt": "2026-11-22T03:38:59.198065", "lvl": "results", "msg": {"case": "login-action", "definition": "lava", "duration": "33.00", "extra": {"fail": "login-action timed out after 33 seconds"}, "level": "2.2.1", "namespace": "common", "result": "fail"}}"#
        );
        let j = job_result(Some(&e));
        assert_eq!(j.get("error_type").and_then(LogValue::as_str), Some("Job"));
    }
}
