//! JSON exactly as Python's `json` module reads and writes it.
//!
//! lava-coordinator and the dispatcher are Python: requests are parsed with `json.loads` and
//! replies written with `json.dumps` (separators `", "` / `": "`, `ensure_ascii=True`, keys in
//! insertion order, `NaN`/`Infinity` allowed, floats in `repr` form). The coordinator also keeps
//! its state in Python dicts keyed by whatever JSON scalar a client sent (`1`, `true` and `1.0`
//! are the same key), and logs values with `%s`, i.e. `str()`/`repr()`. Matching the real
//! programs byte for byte needs that model, so this module provides it: [`Value`], [`Key`],
//! [`Dict`], [`parse`] (`json.loads`), [`dumps`] (`json.dumps`), [`py_str`] / [`py_repr`].
//!
//! Known differences, all on inputs no real client sends: a string with a lone UTF-16 surrogate
//! escape (`"\ud800"`) is refused as a parse error, nesting deeper than [`MAX_DEPTH`] is a parse
//! error (Python raises RecursionError near 1000), and integers beyond 64 bits or NaN cannot be
//! dict keys ([`KeyError::Unsupported`]).

mod dump;
mod parse;

use std::hash::{Hash, Hasher};

pub use dump::{dumps, dumps_key, py_float_repr, py_repr, py_str, write_value};
pub use parse::{MAX_DEPTH, ParseError, parse, parse_bytes};

/// A Python object as `json.loads` builds it.
#[derive(Debug, Clone)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    /// An integer outside `i64`, kept as its decimal text (Python ints are unbounded).
    BigInt(Box<str>),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    Dict(Dict),
}

/// A Python dict: insertion-ordered, keyed by hashable scalars with Python's equality.
#[derive(Debug, Clone, Default)]
pub struct Dict(indexmap::IndexMap<Key, Value>);

/// A hashable JSON scalar used as a dict key. Equality and hashing follow Python:
/// `True == 1 == 1.0`, `False == 0 == -0.0`; the first key inserted is the one kept.
#[derive(Debug, Clone)]
pub enum Key {
    Null,
    Bool(bool),
    Int(i64),
    /// Never NaN.
    Float(f64),
    Str(String),
}

/// Why a value cannot be a dict key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Python raises `TypeError: unhashable type` (a list or dict).
    #[error("unhashable type")]
    Unhashable,
    /// Hashable in Python but not modelled here (NaN, integers beyond 64 bits).
    #[error("key type not supported (NaN or an integer beyond 64 bits)")]
    Unsupported,
}

/// The canonical form used for equality and hashing.
#[derive(PartialEq, Eq, Hash)]
enum Norm<'a> {
    Null,
    Int(i64),
    Float(u64),
    Str(&'a str),
}

impl Key {
    fn norm(&self) -> Norm<'_> {
        match self {
            Key::Null => Norm::Null,
            Key::Bool(b) => Norm::Int(i64::from(*b)),
            Key::Int(i) => Norm::Int(*i),
            Key::Float(f) => {
                // An integral float equals the int of the same value (and -0.0 == 0).
                const LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2^63
                if f.fract() == 0.0 && *f >= -LIMIT && *f < LIMIT {
                    Norm::Int(*f as i64)
                } else {
                    Norm::Float(f.to_bits())
                }
            }
            Key::Str(s) => Norm::Str(s),
        }
    }

    /// The key as a value (what Python stores when the key object is used as a value).
    pub fn to_value(&self) -> Value {
        match self {
            Key::Null => Value::Null,
            Key::Bool(b) => Value::Bool(*b),
            Key::Int(i) => Value::Int(*i),
            Key::Float(f) => Value::Float(*f),
            Key::Str(s) => Value::Str(s.clone()),
        }
    }

    pub fn str(s: impl Into<String>) -> Self {
        Key::Str(s.into())
    }

    /// Python truthiness of the key object.
    pub fn truthy(&self) -> bool {
        self.to_value().truthy()
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Key::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.norm() == other.norm()
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.norm().hash(state)
    }
}

impl TryFrom<&Value> for Key {
    type Error = KeyError;
    fn try_from(v: &Value) -> Result<Self, KeyError> {
        Ok(match v {
            Value::Null => Key::Null,
            Value::Bool(b) => Key::Bool(*b),
            Value::Int(i) => Key::Int(*i),
            Value::BigInt(_) => return Err(KeyError::Unsupported),
            Value::Float(f) if f.is_nan() => return Err(KeyError::Unsupported),
            Value::Float(f) => Key::Float(*f),
            Value::Str(s) => Key::Str(s.clone()),
            Value::List(_) | Value::Dict(_) => return Err(KeyError::Unhashable),
        })
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Self {
        Key::Str(s.to_string())
    }
}

impl Value {
    pub fn str(s: impl Into<String>) -> Self {
        Value::Str(s.into())
    }

    /// Python truthiness: `None`, `False`, `0`, `0.0`, `""`, `[]`, `{}` are false.
    pub fn truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::BigInt(_) => true,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Dict(d) => !d.is_empty(),
        }
    }

    /// Python `value == 0` (true for `0`, `0.0`, `-0.0`, `False`).
    pub fn eq_zero(&self) -> bool {
        match self {
            Value::Bool(b) => !*b,
            Value::Int(i) => *i == 0,
            Value::Float(f) => *f == 0.0,
            _ => false,
        }
    }

    /// Python `int(value)`, saturated to `i128` (only compared with small counts), or `None`
    /// where Python raises (`ValueError`/`TypeError`/`OverflowError`). Strings follow `int(str)`:
    /// surrounding whitespace, a sign, ASCII digits with single `_` between them.
    pub fn py_int(&self) -> Option<i128> {
        match self {
            Value::Bool(b) => Some(i128::from(*b)),
            Value::Int(i) => Some(i128::from(*i)),
            Value::BigInt(s) => Some(if s.starts_with('-') {
                i128::MIN
            } else {
                i128::MAX
            }),
            Value::Float(f) if f.is_finite() => Some(f.trunc() as i128),
            Value::Str(s) => parse_py_int(s, 10),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_dict(&self) -> Option<&Dict> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// Order-sensitive structural identity (Python `==` ignores dict order; here a reordered
    /// dict serialises differently, so it counts as a change).
    pub fn same(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::BigInt(a), Value::BigInt(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::List(a), Value::List(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same(y))
            }
            (Value::Dict(a), Value::Dict(b)) => a.same(b),
            _ => false,
        }
    }
}

/// Python `int(text, base)` for the forms that matter here (base 10, or 16 with an optional
/// `0x` prefix), saturating to `i128`.
pub fn parse_py_int(text: &str, base: u32) -> Option<i128> {
    let t = text.trim_matches(|c: char| c.is_whitespace());
    let (neg, rest) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let mut rest = rest;
    let mut after_prefix = false;
    if base == 16 && (rest.starts_with("0x") || rest.starts_with("0X")) {
        rest = &rest[2..];
        after_prefix = true;
    }
    if rest.is_empty() {
        return None;
    }
    let mut value: i128 = 0;
    let mut prev_underscore = !after_prefix; // a leading '_' is only allowed right after 0x
    let mut saw_digit = false;
    for c in rest.chars() {
        if c == '_' {
            if prev_underscore {
                return None;
            }
            prev_underscore = true;
            continue;
        }
        let d = c.to_digit(base)?;
        prev_underscore = false;
        saw_digit = true;
        value = value
            .saturating_mul(i128::from(base))
            .saturating_add(i128::from(d));
    }
    if !saw_digit || prev_underscore {
        return None;
    }
    Some(if neg { -value } else { value })
}

impl Dict {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, k: &Key) -> Option<&Value> {
        self.0.get(k)
    }

    pub fn get_mut(&mut self, k: &Key) -> Option<&mut Value> {
        self.0.get_mut(k)
    }

    /// `d[k]` for a string key.
    pub fn get_str(&self, k: &str) -> Option<&Value> {
        self.0.get(&Key::Str(k.to_string()))
    }

    pub fn contains(&self, k: &Key) -> bool {
        self.0.contains_key(k)
    }

    pub fn contains_str(&self, k: &str) -> bool {
        self.get_str(k).is_some()
    }

    /// `d[k] = v`: an existing equal key keeps its place and its original form.
    pub fn insert(&mut self, k: Key, v: Value) {
        self.0.insert(k, v);
    }

    /// `d.setdefault(k, v)`.
    pub fn setdefault(&mut self, k: Key, v: Value) -> &mut Value {
        self.0.entry(k).or_insert(v)
    }

    /// `d.update(other)`.
    pub fn update(&mut self, other: &Dict) {
        for (k, v) in other.iter() {
            self.insert(k.clone(), v.clone());
        }
    }

    pub fn remove(&mut self, k: &Key) -> Option<Value> {
        self.0.shift_remove(k)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Value)> {
        self.0.iter()
    }

    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.0.keys()
    }

    pub fn same(&self, other: &Dict) -> bool {
        self.len() == other.len()
            && self
                .iter()
                .zip(other.iter())
                .all(|((ka, va), (kb, vb))| same_key(ka, kb) && va.same(vb))
    }
}

fn same_key(a: &Key, b: &Key) -> bool {
    a.to_value().same(&b.to_value())
}

impl FromIterator<(Key, Value)> for Dict {
    fn from_iter<I: IntoIterator<Item = (Key, Value)>>(iter: I) -> Self {
        let mut d = Dict::new();
        for (k, v) in iter {
            d.insert(k, v);
        }
        d
    }
}

/// Builds a dict with string keys, in order (for replies and requests).
pub fn dict<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::Dict(pairs.into_iter().map(|(k, v)| (Key::from(k), v)).collect())
}

#[cfg(test)]
mod tests;
