//! `json.loads` with Python's rules: `NaN`/`Infinity`/`-Infinity` accepted, only ` \t\n\r` as
//! whitespace, control characters refused inside strings (`strict=True`), duplicate keys keep
//! the first position and the last value, integers of more than 4300 digits refused (Python
//! 3.11's int limit), floats overflowing to infinity.

use super::{Dict, Key, Value};

/// Deepest nesting accepted. Python's C scanner raises RecursionError near 1000 (which kills
/// lava-coordinator); labd refuses well before, as a parse error.
pub const MAX_DEPTH: usize = 500;

/// Python 3.11's `sys.get_int_max_str_digits()` default: longer integer literals are a
/// ValueError in `json.loads`.
const MAX_INT_DIGITS: usize = 4300;

/// Why a text is not JSON (Python would raise `JSONDecodeError` or `ValueError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at byte {offset}")]
pub struct ParseError {
    pub what: &'static str,
    pub offset: usize,
}

/// Parses bytes that must be UTF-8 (lava-coordinator decodes before parsing).
pub fn parse_bytes(bytes: &[u8]) -> Result<Value, ParseError> {
    let text = std::str::from_utf8(bytes).map_err(|e| ParseError {
        what: "invalid UTF-8",
        offset: e.valid_up_to(),
    })?;
    parse(text)
}

/// `json.loads(text)`.
pub fn parse(text: &str) -> Result<Value, ParseError> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    p.ws();
    let v = p.value(0)?;
    p.ws();
    if p.i != p.s.len() {
        return p.err("extra data");
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn err<T>(&self, what: &'static str) -> Result<T, ParseError> {
        Err(ParseError {
            what,
            offset: self.i,
        })
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn lit(&mut self, word: &str) -> bool {
        if self.s[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, ParseError> {
        if depth > MAX_DEPTH {
            return self.err("nesting too deep");
        }
        match self.peek() {
            Some(b'"') => Ok(Value::Str(self.string()?)),
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'n') if self.lit("null") => Ok(Value::Null),
            Some(b't') if self.lit("true") => Ok(Value::Bool(true)),
            Some(b'f') if self.lit("false") => Ok(Value::Bool(false)),
            Some(b'N') if self.lit("NaN") => Ok(Value::Float(f64::NAN)),
            Some(b'I') if self.lit("Infinity") => Ok(Value::Float(f64::INFINITY)),
            Some(b'-') if self.lit("-Infinity") => Ok(Value::Float(f64::NEG_INFINITY)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => self.err("expecting value"),
        }
    }

    fn number(&mut self) -> Result<Value, ParseError> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => {
                self.i = start;
                return self.err("expecting value");
            }
        }
        let int_end = self.i;
        let mut is_float = false;
        // A fraction or exponent only counts when complete (`1.` is the int 1, then junk).
        if self.peek() == Some(b'.') && matches!(self.s.get(self.i + 1), Some(b'0'..=b'9')) {
            self.i += 1;
            self.digits();
            is_float = true;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            let save = self.i;
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if matches!(self.peek(), Some(b'0'..=b'9')) {
                self.digits();
                is_float = true;
            } else {
                self.i = save;
            }
        }
        // The slice is ASCII by construction.
        let text = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("0");
        if is_float {
            return match text.parse::<f64>() {
                Ok(f) => Ok(Value::Float(f)),
                Err(_) => self.err("bad float"),
            };
        }
        let digits = int_end - start - usize::from(text.starts_with('-'));
        if digits > MAX_INT_DIGITS {
            return self.err("integer has too many digits");
        }
        Ok(match text.parse::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => Value::BigInt(text.into()),
        })
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let Some(h) = self.s.get(self.i..self.i + 4) else {
            return self.err("invalid \\uXXXX escape");
        };
        let mut v = 0u32;
        for &b in h {
            let d = (b as char).to_digit(16);
            match d {
                Some(d) => v = v * 16 + d,
                None => return self.err("invalid \\uXXXX escape"),
            }
        }
        self.i += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<String, ParseError> {
        self.i += 1; // opening quote
        let mut out = String::new();
        loop {
            let run_start = self.i;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.i += 1;
            }
            // Input is a &str and the run stops at ASCII bytes, so this is a char boundary.
            out.push_str(std::str::from_utf8(&self.s[run_start..self.i]).unwrap_or(""));
            match self.peek() {
                None => return self.err("unterminated string"),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    let Some(e) = self.peek() else {
                        return self.err("unterminated string");
                    };
                    self.i += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => out.push(self.unicode_escape()?),
                        _ => {
                            self.i -= 1;
                            return self.err("invalid \\escape");
                        }
                    }
                }
                Some(_) => return self.err("invalid control character in string"),
            }
        }
    }

    fn unicode_escape(&mut self) -> Result<char, ParseError> {
        let hi = self.hex4()?;
        if (0xd800..0xdc00).contains(&hi) && self.s[self.i..].starts_with(b"\\u") {
            let save = self.i;
            self.i += 2;
            let lo = self.hex4()?;
            if (0xdc00..0xe000).contains(&lo) {
                let c = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
                return char::from_u32(c).map_or_else(|| self.err("bad surrogate pair"), Ok);
            }
            self.i = save;
        }
        // Python keeps a lone surrogate in the str; a Rust String cannot hold one.
        char::from_u32(hi).map_or_else(|| self.err("lone surrogate escape (not supported)"), Ok)
    }

    fn object(&mut self, depth: usize) -> Result<Value, ParseError> {
        self.i += 1;
        let mut d = Dict::new();
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(Value::Dict(d));
        }
        loop {
            if self.peek() != Some(b'"') {
                return self.err("expecting property name enclosed in double quotes");
            }
            let k = self.string()?;
            self.ws();
            if self.peek() != Some(b':') {
                return self.err("expecting ':' delimiter");
            }
            self.i += 1;
            self.ws();
            let v = self.value(depth + 1)?;
            d.insert(Key::Str(k), v);
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                }
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Value::Dict(d));
                }
                _ => return self.err("expecting ',' delimiter"),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, ParseError> {
        self.i += 1;
        let mut items = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(Value::List(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                }
                Some(b']') => {
                    self.i += 1;
                    return Ok(Value::List(items));
                }
                _ => return self.err("expecting ',' delimiter"),
            }
        }
    }
}
