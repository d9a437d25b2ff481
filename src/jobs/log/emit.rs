//! One-line YAML exactly as lava-dispatcher writes it: PyYAML's `CDumper` (libyaml) with
//! `default_flow_style=True, default_style='"', width=10**6`.
//!
//! What libyaml does with those settings, and so what this emitter does:
//! - every string is double-quoted; printable ASCII stays, everything else is escaped (`\n`,
//!   `\t`, `\e`, `\xE9`, `\u2028` as `\L`, `\U0001F600`...), hex digits upper case;
//! - ints, floats, booleans and None are written as `! "12"`, `! "1.5"`, `! "true"`, `! "null"`
//!   (the C emitter drops the tag of a scalar whose plain form would resolve to it but keeps the
//!   non-specific `!` because the scalar is quoted);
//! - floats use Python's `repr()`, lower-cased, with `.0` added before an exponent (`1.0e+16`);
//! - mappings `{"k": v, ...}` with sorted keys, sequences `[a, b]`;
//! - a key longer than 128 UTF-8 bytes or containing a line break is not a "simple key" and is
//!   written `? "key" : value`;
//! - no folding ever survives: libyaml only breaks a line past column 10^6, and such a record is
//!   replaced by the too-long rule anyway.

use super::value::LogValue;

/// Appends the flow-style YAML of `v` to `out`.
pub fn emit_value(out: &mut String, v: &LogValue) {
    match v {
        LogValue::Null => out.push_str("! \"null\""),
        LogValue::Bool(b) => out.push_str(if *b { "! \"true\"" } else { "! \"false\"" }),
        LogValue::Int(i) => {
            out.push_str("! \"");
            out.push_str(&i.to_string());
            out.push('"');
        }
        LogValue::Float(f) => {
            out.push_str("! \"");
            out.push_str(&yaml_float(*f));
            out.push('"');
        }
        LogValue::Str(s) => emit_str(out, s),
        LogValue::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                emit_value(out, item);
            }
            out.push(']');
        }
        LogValue::Map(m) => {
            out.push('{');
            for (i, (k, val)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                if is_simple_key(k) {
                    emit_str(out, k);
                    out.push_str(": ");
                } else {
                    out.push_str("? ");
                    emit_str(out, k);
                    out.push_str(" : ");
                }
                emit_value(out, val);
            }
            out.push('}');
        }
    }
}

/// libyaml's `yaml_emitter_check_simple_key` for a string scalar key.
fn is_simple_key(k: &str) -> bool {
    k.len() <= 128 && !k.chars().any(is_break)
}

fn is_break(c: char) -> bool {
    matches!(c, '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// A double-quoted scalar with libyaml's escapes (non-ASCII always escaped: `allow_unicode` is
/// off in lava-dispatcher's dump).
pub fn emit_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        let esc = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            ' '..='~' => {
                out.push(c);
                continue;
            }
            '\0' => "\\0",
            '\x07' => "\\a",
            '\x08' => "\\b",
            '\t' => "\\t",
            '\n' => "\\n",
            '\x0B' => "\\v",
            '\x0C' => "\\f",
            '\r' => "\\r",
            '\x1B' => "\\e",
            '\u{85}' => "\\N",
            '\u{A0}' => "\\_",
            '\u{2028}' => "\\L",
            '\u{2029}' => "\\P",
            _ => {
                let v = c as u32;
                let (prefix, width) = if v <= 0xFF {
                    ('x', 2)
                } else if v <= 0xFFFF {
                    ('u', 4)
                } else {
                    ('U', 8)
                };
                out.push('\\');
                out.push(prefix);
                out.push_str(&format!("{v:0width$X}"));
                continue;
            }
        };
        out.push_str(esc);
    }
    out.push('"');
}

/// PyYAML's `represent_float`: `.nan`, `.inf`, `-.inf`, else `repr(f).lower()` with `.0`
/// inserted before the exponent when the mantissa has no dot.
pub fn yaml_float(f: f64) -> String {
    if f.is_nan() {
        return ".nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            ".inf".into()
        } else {
            "-.inf".into()
        };
    }
    let r = python_float_repr(f).to_ascii_lowercase();
    if !r.contains('.') && r.contains('e') {
        r.replacen('e', ".0e", 1)
    } else {
        r
    }
}

/// Python's `repr(float)`: the shortest round-tripping digits, fixed notation when the decimal
/// exponent is in `-4..16`, else `d.ddde+XX` with at least two exponent digits.
pub fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    // Rust's `{:e}` prints the shortest round-tripping digits, e.g. "-1.234e-5".
    let sci = format!("{f:e}");
    let (neg, body) = match sci.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, sci.as_str()),
    };
    let (mant, exp) = body.split_once('e').unwrap_or((body, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                out.push_str(&"0".repeat(int_len - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        } else {
            out.push_str("0.");
            out.push_str(&"0".repeat((-exp - 1) as usize));
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.unsigned_abs()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump(v: &LogValue) -> String {
        let mut s = String::new();
        emit_value(&mut s, v);
        s
    }

    #[test]
    fn float_repr_matches_python() {
        for (f, want) in [
            (1.5, "1.5"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (-0.0, "-0.0"),
            (123.456, "123.456"),
            (1.5e300, "1.5e+300"),
            (5e-324, "5e-324"),
            (0.1, "0.1"),
            (100.0, "100.0"),
        ] {
            assert_eq!(python_float_repr(f), want, "{f}");
        }
        assert_eq!(yaml_float(1e16), "1.0e+16");
        assert_eq!(yaml_float(f64::NAN), ".nan");
        assert_eq!(yaml_float(f64::NEG_INFINITY), "-.inf");
    }

    #[test]
    fn scalars_and_containers() {
        let v = LogValue::map()
            .with("a", 12i64)
            .with("b", 1.5)
            .with("c", true)
            .with("d", LogValue::Null)
            .with("e", LogValue::List(vec![]))
            .with("f", LogValue::map())
            .with("m", "é\u{2028}😀\u{85}\u{a0}\x7f\t\0\"\\");
        assert_eq!(
            dump(&v),
            r#"{"a": ! "12", "b": ! "1.5", "c": ! "true", "d": ! "null", "e": [], "f": {}, "m": "\xE9\L\U0001F600\N\_\x7F\t\0\"\\"}"#
        );
    }

    #[test]
    fn complex_keys() {
        let v = LogValue::map()
            .with("a\nb", "c")
            .with(&"k".repeat(129), "v");
        let k = "k".repeat(129);
        assert_eq!(dump(&v), format!(r#"{{? "a\nb" : "c", ? "{k}" : "v"}}"#));
    }
}
