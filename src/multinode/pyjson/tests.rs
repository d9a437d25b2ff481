//! Expected strings below were produced by Python 3.11's `json.dumps(json.loads(x))` and
//! `repr(json.loads(x))` (Debian 12).

use super::*;

fn roundtrip(input: &str) -> (String, String) {
    let v = parse(input).unwrap();
    (dumps(&v), py_repr(&v))
}

#[test]
fn dumps_like_python() {
    let cases = [
        (
            r#"{"a": 1, "b": [1.5, -0.0, 1e16, 1e-05, 0.0001, 123456789012345678901234567890, true, null]}"#,
            r#"{"a": 1, "b": [1.5, -0.0, 1e+16, 1e-05, 0.0001, 123456789012345678901234567890, true, null]}"#,
            r#"{'a': 1, 'b': [1.5, -0.0, 1e+16, 1e-05, 0.0001, 123456789012345678901234567890, True, None]}"#,
        ),
        (
            "{\"k\": \"caf\u{e9} \\ud83d\\ude00 \\u007f \\t\\\"\\\\/\"}",
            r#"{"k": "caf\u00e9 \ud83d\ude00 \u007f \t\"\\/"}"#,
            "{'k': 'caf\u{e9} \u{1f600} \\x7f \\t\"\\\\/'}",
        ),
        (
            r#"{"a":1,"b":2,"a":3}"#,
            r#"{"a": 3, "b": 2}"#,
            "{'a': 3, 'b': 2}",
        ),
        (
            "[NaN, Infinity, -Infinity, 1E400, 2.5e-320, 100.0, 1e15, 1.2345678901234567e+22]",
            "[NaN, Infinity, -Infinity, Infinity, 2.5e-320, 100.0, 1000000000000000.0, 1.2345678901234568e+22]",
            "[nan, inf, -inf, inf, 2.5e-320, 100.0, 1000000000000000.0, 1.2345678901234568e+22]",
        ),
        (
            "  {\"x\" : { } , \"y\":[ ]}  ",
            r#"{"x": {}, "y": []}"#,
            "{'x': {}, 'y': []}",
        ),
        ("-0", "0", "0"),
        ("0.1", "0.1", "0.1"),
        ("5e-324", "5e-324", "5e-324"),
        (
            "1.7976931348623157e308",
            "1.7976931348623157e+308",
            "1.7976931348623157e+308",
        ),
        ("123.456e3", "123456.0", "123456.0"),
    ];
    for (input, json, repr) in cases {
        assert_eq!(
            roundtrip(input),
            (json.to_string(), repr.to_string()),
            "{input}"
        );
    }
}

#[test]
fn str_repr_quotes_like_python() {
    let r = |s: &str| py_repr(&Value::str(s));
    assert_eq!(r("it's"), "\"it's\"");
    assert_eq!(r("say \"hi\""), "'say \"hi\"'");
    assert_eq!(r("both ' and \""), "'both \\' and \"'");
    assert_eq!(
        r("\0\u{7f}\u{a0}\u{200b}\u{e9}"),
        "'\\x00\\x7f\\xa0\\u200b\u{e9}'"
    );
}

#[test]
fn refuses_what_python_refuses() {
    for bad in [
        "",
        " ",
        "{",
        "{\"a\" 1}",
        "[1,]",
        "{\"a\":1,}",
        "01",
        "1.",
        "1e",
        "-",
        "'x'",
        "\"a\u{1}b\"",
        "\"\\x\"",
        "{1: 2}",
        "nul",
        "[1] x",
        "\u{feff}{}",
        "\"\\ud800\"",
    ] {
        assert!(parse(bad).is_err(), "{bad:?} should not parse");
    }
    assert!(parse(&"1".repeat(4301)).is_err());
    assert!(parse(&"1".repeat(4300)).is_ok());
    assert!(parse(&"[".repeat(MAX_DEPTH + 2)).is_err());
    assert!(parse_bytes(b"\"\xff\"").is_err());
}

#[test]
fn keys_compare_like_python() {
    let mut d = Dict::new();
    d.insert(Key::Int(1), Value::str("a"));
    d.insert(Key::Bool(true), Value::str("b"));
    d.insert(Key::Float(1.0), Value::str("c"));
    d.insert(Key::Str("1".into()), Value::str("d"));
    d.insert(Key::Float(-0.0), Value::str("e"));
    d.insert(Key::Bool(false), Value::str("f"));
    // Python: {1: 'c', '1': 'd', -0.0: 'f'}
    assert_eq!(
        py_repr(&Value::Dict(d.clone())),
        "{1: 'c', '1': 'd', -0.0: 'f'}"
    );
    assert_eq!(
        dumps(&Value::Dict(d)),
        r#"{"1": "c", "1": "d", "-0.0": "f"}"#
    );
    assert_eq!(
        Key::try_from(&Value::List(vec![])),
        Err(KeyError::Unhashable)
    );
    assert_eq!(
        Key::try_from(&Value::Float(f64::NAN)),
        Err(KeyError::Unsupported)
    );
}

#[test]
fn python_int_and_truthiness() {
    assert_eq!(Value::str(" 12 ").py_int(), Some(12));
    assert_eq!(Value::str("1_000").py_int(), Some(1000));
    assert_eq!(Value::str("+3").py_int(), Some(3));
    assert_eq!(Value::str("2.0").py_int(), None);
    assert_eq!(Value::str("_1").py_int(), None);
    assert_eq!(Value::Float(2.9).py_int(), Some(2));
    assert_eq!(Value::Float(f64::INFINITY).py_int(), None);
    assert_eq!(Value::Bool(true).py_int(), Some(1));
    assert_eq!(Value::Null.py_int(), None);
    assert_eq!(parse_py_int("0x_1f", 16), Some(31));
    assert_eq!(parse_py_int(" 00000014", 16), Some(20));
    assert_eq!(parse_py_int("zzzzzzzz", 16), None);
    assert!(!Value::Float(-0.0).truthy());
    assert!(Value::str("0").truthy());
    assert!(Value::Float(0.0).eq_zero() && Value::Bool(false).eq_zero());
    assert!(!Value::str("0").eq_zero());
}
