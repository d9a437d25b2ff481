//! Reads LAVA log lines back: the flow-style YAML subset that lava-dispatcher and
//! [`super::LogRecord::dump`] write (double- or single-quoted scalars, `! "12"` and `!!int "12"`
//! tagged scalars, plain scalars, flow mappings with `? key : value`, flow sequences).
//!
//! Tagged scalars are resolved to typed values (`! "12"` → `Int(12)`), so `parse(dump(r)) == r`.
//! PyYAML's loader would give the string `"12"` for the non-specific `!` tag; labd keeps the type
//! the writer meant.

use std::collections::BTreeMap;

use super::record::LogRecord;
use super::value::LogValue;

/// Deepest nesting accepted; protects the stack against hostile input.
const MAX_DEPTH: usize = 64;

/// Why a log line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("log line, column {column}: {message}")]
pub struct LogParseError {
    /// 1-based character column.
    pub column: usize,
    pub message: String,
}

/// Parses one log line (without the `- ` of an upload batch) into a record.
pub fn parse_line(line: &str) -> Result<LogRecord, LogParseError> {
    let mut p = Parser {
        s: line.trim_end_matches(['\n', '\r']).chars().collect(),
        i: 0,
    };
    p.ws();
    if p.peek() != Some('{') {
        return Err(p.err("a log record must be a flow mapping starting with '{'"));
    }
    let v = p.value(0)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(p.err("unexpected text after the record"));
    }
    let LogValue::Map(mut m) = v else {
        return Err(p.err("a log record must be a mapping"));
    };
    let take_str = |m: &mut BTreeMap<String, LogValue>, k: &str| match m.remove(k) {
        Some(LogValue::Str(s)) => Ok(Some(s)),
        Some(_) => Err(LogParseError {
            column: 1,
            message: format!("{k:?} must be a string"),
        }),
        None => Ok(None),
    };
    let missing = |k: &str| LogParseError {
        column: 1,
        message: format!("record has no {k:?}"),
    };
    let dt = take_str(&mut m, "dt")?.ok_or_else(|| missing("dt"))?;
    let lvl = take_str(&mut m, "lvl")?.ok_or_else(|| missing("lvl"))?;
    let ns = take_str(&mut m, "ns")?;
    let msg = m.remove("msg").ok_or_else(|| missing("msg"))?;
    if let Some(k) = m.keys().next() {
        return Err(LogParseError {
            column: 1,
            message: format!("unexpected key {k:?} in a log record"),
        });
    }
    Ok(LogRecord { dt, lvl, msg, ns })
}

/// Splits the `lines` field of a log upload (`"- " + "\n- ".join(records)`) and parses each.
pub fn parse_upload(lines: &str) -> Vec<Result<LogRecord, LogParseError>> {
    if lines.is_empty() {
        return Vec::new();
    }
    lines
        .split('\n')
        .map(|l| parse_line(l.strip_prefix("- ").unwrap_or(l)))
        .collect()
}

/// The fuzzing entry point: parse, and when it parses, dumping and parsing again must agree.
pub fn fuzz_log_line(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(rec) = parse_line(text) {
        let again = parse_line(&rec.dump());
        // A record that parsed re-dumps into something that parses to the same value (modulo the
        // too-long rule and NaN, which never compares equal).
        if let Ok(again) = again {
            if rec.dump().len() < super::record::MAX_LINE_LEN && !contains_nan(&rec.msg) {
                assert_eq!(again, rec, "dump/parse round trip");
            }
        } else {
            panic!("a dumped record failed to parse: {:?}", rec.dump());
        }
    }
}

fn contains_nan(v: &LogValue) -> bool {
    match v {
        LogValue::Float(f) => f.is_nan(),
        LogValue::List(l) => l.iter().any(contains_nan),
        LogValue::Map(m) => m.values().any(contains_nan),
        _ => false,
    }
}

struct Parser {
    s: Vec<char>,
    i: usize,
}

impl Parser {
    fn err(&self, message: impl Into<String>) -> LogParseError {
        LogParseError {
            column: self.i + 1,
            message: message.into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.i += 1;
        }
    }

    fn expect(&mut self, c: char) -> Result<(), LogParseError> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(format!("expected {c:?}")))
        }
    }

    fn value(&mut self, depth: usize) -> Result<LogValue, LogParseError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        self.ws();
        match self.peek() {
            Some('{') => self.mapping(depth),
            Some('[') => self.sequence(depth),
            Some('"') => Ok(LogValue::Str(self.double_quoted()?)),
            Some('\'') => Ok(LogValue::Str(self.single_quoted()?)),
            Some('!') => self.tagged(),
            Some(_) => Ok(resolve_plain(&self.plain())),
            None => Err(self.err("expected a value")),
        }
    }

    fn mapping(&mut self, depth: usize) -> Result<LogValue, LogParseError> {
        self.expect('{')?;
        let mut m = BTreeMap::new();
        loop {
            self.ws();
            if self.peek() == Some('}') {
                self.i += 1;
                return Ok(LogValue::Map(m));
            }
            let explicit = self.peek() == Some('?');
            if explicit {
                self.i += 1;
            }
            let key = match self.value(depth + 1)? {
                LogValue::Str(s) => s,
                LogValue::Int(i) => i.to_string(),
                LogValue::Bool(b) => if b { "True" } else { "False" }.to_string(),
                LogValue::Null => "None".to_string(),
                LogValue::Float(f) => super::emit::python_float_repr(f),
                _ => return Err(self.err("mapping keys must be scalars")),
            };
            self.ws();
            self.expect(':')?;
            let v = self.value(depth + 1)?;
            m.insert(key, v);
            self.ws();
            match self.peek() {
                Some(',') => self.i += 1,
                Some('}') => {}
                _ => return Err(self.err("expected ',' or '}' in a mapping")),
            }
        }
    }

    fn sequence(&mut self, depth: usize) -> Result<LogValue, LogParseError> {
        self.expect('[')?;
        let mut l = Vec::new();
        loop {
            self.ws();
            if self.peek() == Some(']') {
                self.i += 1;
                return Ok(LogValue::List(l));
            }
            l.push(self.value(depth + 1)?);
            self.ws();
            match self.peek() {
                Some(',') => self.i += 1,
                Some(']') => {}
                _ => return Err(self.err("expected ',' or ']' in a sequence")),
            }
        }
    }

    fn tagged(&mut self) -> Result<LogValue, LogParseError> {
        let start = self.i;
        while let Some(c) = self.peek() {
            if c == ' ' || c == '\t' {
                break;
            }
            self.i += 1;
        }
        let tag: String = self.s[start..self.i].iter().collect();
        self.ws();
        let text = match self.peek() {
            Some('"') => self.double_quoted()?,
            Some('\'') => self.single_quoted()?,
            Some('{' | '[') => return Err(self.err("tagged collections are not supported")),
            _ => self.plain(),
        };
        let tag = tag
            .strip_prefix("!<tag:yaml.org,2002:")
            .and_then(|t| t.strip_suffix('>'))
            .map(|t| format!("!!{t}"))
            .unwrap_or(tag);
        let bad = |p: &Self, what: &str| p.err(format!("{text:?} is not a valid {what}"));
        Ok(match tag.as_str() {
            "!" => resolve_plain(&text),
            "!!str" => LogValue::Str(text),
            "!!int" => match resolve_plain(&text) {
                v @ LogValue::Int(_) => v,
                _ => return Err(bad(self, "int")),
            },
            "!!float" => match resolve_plain(&text) {
                LogValue::Int(i) => LogValue::Float(i as f64),
                v @ LogValue::Float(_) => v,
                _ => return Err(bad(self, "float")),
            },
            "!!bool" => match resolve_plain(&text) {
                v @ LogValue::Bool(_) => v,
                _ => return Err(bad(self, "bool")),
            },
            "!!null" => LogValue::Null,
            other => return Err(self.err(format!("unsupported tag {other:?}"))),
        })
    }

    /// A plain scalar in flow context: ends at `,`, `]`, `}`, or `: `.
    fn plain(&mut self) -> String {
        let start = self.i;
        while let Some(c) = self.peek() {
            if matches!(c, ',' | ']' | '}') {
                break;
            }
            if c == ':' && matches!(self.s.get(self.i + 1), None | Some(' ' | ',' | ']' | '}')) {
                break;
            }
            self.i += 1;
        }
        let s: String = self.s[start..self.i].iter().collect();
        s.trim_end().to_string()
    }

    fn single_quoted(&mut self) -> Result<String, LogParseError> {
        self.expect('\'')?;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(self.err("unterminated single-quoted string")),
                Some('\'') if self.s.get(self.i + 1) == Some(&'\'') => {
                    out.push('\'');
                    self.i += 2;
                }
                Some('\'') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(c) => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
    }

    fn double_quoted(&mut self) -> Result<String, LogParseError> {
        self.expect('"')?;
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.err("unterminated double-quoted string"));
            };
            self.i += 1;
            match c {
                '"' => return Ok(out),
                '\\' => {
                    let Some(e) = self.peek() else {
                        return Err(self.err("unterminated escape"));
                    };
                    self.i += 1;
                    let simple = match e {
                        '0' => Some('\0'),
                        'a' => Some('\x07'),
                        'b' => Some('\x08'),
                        't' | '\t' => Some('\t'),
                        'n' => Some('\n'),
                        'v' => Some('\x0B'),
                        'f' => Some('\x0C'),
                        'r' => Some('\r'),
                        'e' => Some('\x1B'),
                        ' ' => Some(' '),
                        '"' => Some('"'),
                        '/' => Some('/'),
                        '\\' => Some('\\'),
                        'N' => Some('\u{85}'),
                        '_' => Some('\u{A0}'),
                        'L' => Some('\u{2028}'),
                        'P' => Some('\u{2029}'),
                        _ => None,
                    };
                    if let Some(ch) = simple {
                        out.push(ch);
                        continue;
                    }
                    let width = match e {
                        'x' => 2,
                        'u' => 4,
                        'U' => 8,
                        _ => return Err(self.err(format!("unknown escape \\{e}"))),
                    };
                    let hex: String = self.s.iter().skip(self.i).take(width).collect();
                    if hex.len() != width || !hex.chars().all(|h| h.is_ascii_hexdigit()) {
                        return Err(self.err("bad hexadecimal escape"));
                    }
                    self.i += width;
                    let code =
                        u32::from_str_radix(&hex, 16).map_err(|e| self.err(e.to_string()))?;
                    let ch = char::from_u32(code)
                        .ok_or_else(|| self.err(format!("escape \\{e}{hex} is not a character")))?;
                    out.push(ch);
                }
                _ => out.push(c),
            }
        }
    }
}

/// YAML 1.1 implicit resolution as PyYAML's resolver does it, for the forms a log can hold.
fn resolve_plain(s: &str) -> LogValue {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return LogValue::Null,
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => {
            return LogValue::Bool(true);
        }
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => {
            return LogValue::Bool(false);
        }
        ".nan" | ".NaN" | ".NAN" => return LogValue::Float(f64::NAN),
        _ => {}
    }
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if matches!(body, ".inf" | ".Inf" | ".INF") {
        return LogValue::Float(if neg {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    let clean: String = body.chars().filter(|c| *c != '_').collect();
    let is_int = !clean.is_empty()
        && clean.chars().all(|c| c.is_ascii_digit())
        && (clean == "0" || !clean.starts_with('0'));
    if is_int {
        if let Ok(i) = format!("{}{clean}", if neg { "-" } else { "" }).parse::<i64>() {
            return LogValue::Int(i);
        }
    }
    let is_float = clean.contains('.')
        && clean
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'));
    if is_float {
        if let Ok(f) = format!("{}{clean}", if neg { "-" } else { "" }).parse::<f64>() {
            return LogValue::Float(f);
        }
    }
    LogValue::Str(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observed_lines_parse() {
        let r = parse_line(r#"{"dt": "2026-11-22T03:38:59.198065", "lvl": "results", "msg": {"case": "login-action", "definition": "lava", "duration": "33.00", "extra": {"fail": "login-action timed out after 33 seconds"}, "level": "2.2.1", "namespace": "common", "result": "fail"}}"#).unwrap();
        assert_eq!(r.lvl, "results");
        assert_eq!(
            r.msg.get("duration").and_then(LogValue::as_str),
            Some("33.00")
        );
        let r = parse_line(r#"{"dt": "x", "lvl": "results", "msg": {"endtc": ! "12", "m": !!float "1.5", "n": !!int "3", "s": 'it''s', "p": plain text, "b": ! "true"}}"#).unwrap();
        assert_eq!(r.msg.get("endtc"), Some(&LogValue::Int(12)));
        assert_eq!(r.msg.get("m"), Some(&LogValue::Float(1.5)));
        assert_eq!(r.msg.get("n"), Some(&LogValue::Int(3)));
        assert_eq!(r.msg.get("s").and_then(LogValue::as_str), Some("it's"));
        assert_eq!(
            r.msg.get("p").and_then(LogValue::as_str),
            Some("plain text")
        );
        assert_eq!(r.msg.get("b"), Some(&LogValue::Bool(true)));
    }

    #[test]
    fn escapes_and_complex_keys_round_trip() {
        let msg = LogValue::map()
            .with("a\nb", "\u{1F600}\x1b[0m\"\\\u{85}")
            .with(
                &"k".repeat(200),
                LogValue::List(vec![LogValue::Null, 1.5.into()]),
            );
        let rec = LogRecord {
            dt: "2023-01-01T00:00:00".into(),
            lvl: "feedback".into(),
            msg,
            ns: Some("ns1".into()),
        };
        assert_eq!(parse_line(&rec.dump()).unwrap(), rec);
    }

    #[test]
    fn upload_batches_split() {
        let l = "- {\"dt\": \"a\", \"lvl\": \"info\", \"msg\": \"x\"}\n- {\"dt\": \"b\", \"lvl\": \"info\", \"msg\": \"y\"}";
        let recs = parse_upload(l);
        assert_eq!(recs.len(), 2);
        assert!(recs.iter().all(Result::is_ok));
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            "",
            "[]",
            "{",
            "{\"dt\": \"a\"}",
            "{\"dt\": \"a\", \"lvl\": \"b\", \"msg\": \"\\q\"}",
        ] {
            assert!(parse_line(bad).is_err(), "{bad:?}");
        }
        fuzz_log_line(b"{\"dt\": \"a\", \"lvl\": \"b\", \"msg\": [[[[1]]]]}");
    }
}
