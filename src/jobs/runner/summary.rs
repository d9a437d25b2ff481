//! What `labd run-job` shows: a readable form of each LAVA log line and the results table at
//! the end.

use crate::jobs::log::{LogValue, parse_line};

/// A log line for a terminal: the board's output as it is, labd's own lines prefixed by their
/// level; `None` for `results` records (they go into the table).
pub fn render_line(line: &str) -> Option<String> {
    let Ok(rec) = parse_line(line) else {
        return Some(line.to_string());
    };
    let text = match &rec.msg {
        LogValue::Str(s) => s.clone(),
        other => other.to_json().to_string(),
    };
    match rec.lvl.as_str() {
        "results" => None,
        "target" | "feedback" => Some(text),
        "input" => Some(format!("<< {}", text.trim_end_matches(['\r', '\n']))),
        lvl => Some(format!("[{lvl}] {text}")),
    }
}

/// The results record carried by a log line, if it is one.
pub fn results_of(line: &str) -> Option<LogValue> {
    if !line.contains("\"lvl\": \"results\"") {
        return None;
    }
    parse_line(line).ok().map(|r| r.msg)
}

fn text(v: Option<&LogValue>) -> String {
    match v {
        None | Some(LogValue::Null) => String::new(),
        Some(LogValue::Str(s)) => s.clone(),
        Some(LogValue::Int(i)) => i.to_string(),
        Some(LogValue::Float(f)) => f.to_string(),
        Some(LogValue::Bool(b)) => b.to_string(),
        Some(other) => other.to_json().to_string(),
    }
}

/// The test results as a table: every record of a test definition (not LAVA's own action
/// records), with measurements; `lava` records only when they failed.
pub fn results_table(results: &[LogValue]) -> String {
    let mut rows: Vec<[String; 4]> = Vec::new();
    for r in results {
        let definition = text(r.get("definition"));
        let case = text(r.get("case"));
        let result = text(r.get("result"));
        if definition == "lava" && (result == "pass" || case == "job") {
            continue;
        }
        let mut measurement = text(r.get("measurement"));
        let units = text(r.get("units"));
        if !units.is_empty() && !measurement.is_empty() {
            measurement = format!("{measurement} {units}");
        }
        rows.push([definition, case, result, measurement]);
    }
    let header = [
        "definition".to_string(),
        "case".to_string(),
        "result".to_string(),
        "measurement".to_string(),
    ];
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let fmt_row = |row: &[String; 4]| {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        cells.join("  ").trim_end().to_string()
    };
    let mut out = fmt_row(&header);
    out.push('\n');
    for row in &rows {
        out.push_str(&fmt_row(row));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lists_test_cases_and_failed_lava_actions() {
        let rs = vec![
            LogValue::map()
                .with("definition", "lava")
                .with("case", "validate")
                .with("result", "pass"),
            LogValue::map()
                .with("definition", "0_smoke")
                .with("case", "always-pass")
                .with("result", "pass"),
            LogValue::map()
                .with("definition", "0_smoke")
                .with("case", "speed")
                .with("result", "pass")
                .with("measurement", "12.5")
                .with("units", "MB/s"),
            LogValue::map()
                .with("definition", "lava")
                .with("case", "login-action")
                .with("result", "fail"),
        ];
        assert_eq!(
            results_table(&rs),
            "definition  case          result  measurement\n\
             0_smoke     always-pass   pass\n\
             0_smoke     speed         pass    12.5 MB/s\n\
             lava        login-action  fail\n"
        );
    }

    #[test]
    fn lines_for_a_terminal() {
        let l = r#"{"dt": "2024-01-01T00:00:00.000000", "lvl": "target", "msg": "=> boot"}"#;
        assert_eq!(render_line(l).as_deref(), Some("=> boot"));
        let l = r#"{"dt": "2024-01-01T00:00:00.000000", "lvl": "info", "msg": "start: 1 uboot-action"}"#;
        assert_eq!(
            render_line(l).as_deref(),
            Some("[info] start: 1 uboot-action")
        );
        let l = r#"{"dt": "2024-01-01T00:00:00.000000", "lvl": "results", "msg": {"case": "x"}}"#;
        assert_eq!(render_line(l), None);
        assert!(results_of(l).is_some());
    }
}

#[cfg(test)]
mod quote_tests {
    use crate::jobs::log::{Level, LogSink, LogWriter};

    struct V(Vec<String>);
    impl LogSink for V {
        fn write_line(&mut self, line: &str) {
            self.0.push(line.to_string());
        }
    }

    #[test]
    fn quotes_survive_the_round_trip() {
        let mut w = LogWriter::new(V(Vec::new()));
        w.log(Level::Target, "if [ -n \"$X\" ]; then");
        let line = w.sink().0[0].clone();
        assert_eq!(
            super::render_line(&line).as_deref(),
            Some("if [ -n \"$X\" ]; then"),
            "{line}"
        );
    }
}
