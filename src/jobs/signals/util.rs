//! Conversions the result code needs: YAML values to log values, Python's `repr()` of the
//! strings and dicts LAVA puts in messages, Python's `Decimal` syntax for measurements.

use serde_norway::Value;

use crate::jobs::log::LogValue;

/// A job YAML value as the log carries it (what `yaml.safe_load` gives Python, dumped again).
pub fn yaml_to_log(v: &Value) -> LogValue {
    match v {
        Value::Null => LogValue::Null,
        Value::Bool(b) => LogValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => LogValue::Int(i),
            None => LogValue::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => LogValue::Str(s.clone()),
        Value::Sequence(s) => LogValue::List(s.iter().map(yaml_to_log).collect()),
        Value::Mapping(m) => LogValue::Map(
            m.iter()
                .map(|(k, v)| (yaml_scalar_text(k), yaml_to_log(v)))
                .collect(),
        ),
        Value::Tagged(t) => yaml_to_log(&t.value),
    }
}

/// A scalar as Python's `str()` would print what `yaml.safe_load` made of it.
pub fn yaml_scalar_text(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.to_string(),
            None => crate::jobs::log::python_float_repr(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => s.clone(),
        Value::Tagged(t) => yaml_scalar_text(&t.value),
        other => serde_norway::to_string(other)
            .unwrap_or_default()
            .trim_end()
            .to_string(),
    }
}

/// Python's `repr(str)`.
pub fn py_repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::new();
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => {
                let v = c as u32;
                if v <= 0xff {
                    out.push_str(&format!("\\x{v:02x}"));
                } else if v <= 0xffff {
                    out.push_str(&format!("\\u{v:04x}"));
                } else {
                    out.push_str(&format!("\\U{v:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `repr()` of a `{str: str}` dict (in the given order).
pub fn py_repr_dict<'a>(items: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let parts: Vec<String> = items
        .into_iter()
        .map(|(k, v)| format!("{}: {}", py_repr_str(k), py_repr_str(v)))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// `float(decimal.Decimal(s))`, or `None` when `Decimal` refuses `s`
/// (`decimal.InvalidOperation`). Signalling NaNs are refused too (Python cannot make a float of
/// them).
pub fn parse_decimal(s: &str) -> Option<f64> {
    let t = s.trim_matches(|c: char| c.is_whitespace());
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let lower = body.to_ascii_lowercase();
    let sign = if neg { -1.0 } else { 1.0 };
    if lower == "inf" || lower == "infinity" {
        return Some(sign * f64::INFINITY);
    }
    if let Some(rest) = lower.strip_prefix("nan") {
        return rest.chars().all(|c| c.is_ascii_digit()).then_some(f64::NAN);
    }
    // digits with single underscores between digits (PEP 515), optional fraction and exponent.
    let (mant, exp) = match lower.find('e') {
        Some(i) => (&lower[..i], Some(&lower[i + 1..])),
        None => (lower.as_str(), None),
    };
    let digits_ok = |d: &str| {
        !d.is_empty()
            && !d.starts_with('_')
            && !d.ends_with('_')
            && !d.contains("__")
            && d.chars().all(|c| c.is_ascii_digit() || c == '_')
    };
    let (int, frac) = match mant.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mant, None),
    };
    let int_ok = int.is_empty() || digits_ok(int);
    let frac_ok = frac.is_none_or(|f| f.is_empty() || digits_ok(f));
    let has_digits = !int.is_empty() || frac.is_some_and(|f| !f.is_empty());
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        digits_ok(e)
    });
    if !(int_ok && frac_ok && has_digits && exp_ok) {
        return None;
    }
    let clean: String = t.chars().filter(|c| *c != '_').collect();
    clean.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_like_python() {
        assert_eq!(parse_decimal("1.5"), Some(1.5));
        assert_eq!(parse_decimal(" 10 "), Some(10.0));
        assert_eq!(parse_decimal("1e3"), Some(1000.0));
        assert_eq!(parse_decimal(".5"), Some(0.5));
        assert_eq!(parse_decimal("5."), Some(5.0));
        assert_eq!(parse_decimal("1_000"), Some(1000.0));
        assert_eq!(parse_decimal("-Infinity"), Some(f64::NEG_INFINITY));
        assert!(parse_decimal("NaN").unwrap().is_nan());
        for bad in [
            "", "abc", "1.2.3", "1e", "_1", "1__0", "0x10", "sNaN", "1,5", ".",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad}");
        }
    }

    #[test]
    fn reprs() {
        assert_eq!(py_repr_str("a'b"), "\"a'b\"");
        assert_eq!(py_repr_str("a\\b\n"), "'a\\\\b\\n'");
        assert_eq!(
            py_repr_dict([("PASS", "pass"), ("FAIL", "fail")]),
            "{'PASS': 'pass', 'FAIL': 'fail'}"
        );
    }
}
