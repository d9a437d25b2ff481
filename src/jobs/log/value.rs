//! The data a LAVA log record carries: the subset of Python values lava-dispatcher puts in `msg`
//! (strings, numbers, booleans, None, dicts with string keys, lists).

use std::collections::BTreeMap;

/// A Python-like value as it appears in a log record's `msg`.
///
/// Maps are `BTreeMap`s: PyYAML sorts keys, and Rust's `String` order (UTF-8 bytes) is the same
/// as Python's code-point order, so iteration order is the emitted order.
#[derive(Debug, Clone, PartialEq)]
pub enum LogValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<LogValue>),
    Map(BTreeMap<String, LogValue>),
}

impl LogValue {
    /// An empty map, to be filled with [`LogValue::with`].
    pub fn map() -> Self {
        LogValue::Map(BTreeMap::new())
    }

    /// Builder: inserts `key` into a map value (no-op on other kinds).
    pub fn with(mut self, key: &str, value: impl Into<LogValue>) -> Self {
        if let LogValue::Map(m) = &mut self {
            m.insert(key.to_string(), value.into());
        }
        self
    }

    /// Inserts into a map value; returns false when `self` is not a map.
    pub fn insert(&mut self, key: &str, value: impl Into<LogValue>) -> bool {
        match self {
            LogValue::Map(m) => {
                m.insert(key.to_string(), value.into());
                true
            }
            _ => false,
        }
    }

    pub fn get(&self, key: &str) -> Option<&LogValue> {
        match self {
            LogValue::Map(m) => m.get(key),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            LogValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&BTreeMap<String, LogValue>> {
        match self {
            LogValue::Map(m) => Some(m),
            _ => None,
        }
    }

    /// Converts to JSON (floats that JSON cannot carry, NaN and infinities, become null).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            LogValue::Null => J::Null,
            LogValue::Bool(b) => J::Bool(*b),
            LogValue::Int(i) => J::from(*i),
            LogValue::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            LogValue::Str(s) => J::String(s.clone()),
            LogValue::List(l) => J::Array(l.iter().map(LogValue::to_json).collect()),
            LogValue::Map(m) => {
                J::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }
}

impl From<&str> for LogValue {
    fn from(s: &str) -> Self {
        LogValue::Str(s.to_string())
    }
}
impl From<String> for LogValue {
    fn from(s: String) -> Self {
        LogValue::Str(s)
    }
}
impl From<&String> for LogValue {
    fn from(s: &String) -> Self {
        LogValue::Str(s.clone())
    }
}
impl From<i64> for LogValue {
    fn from(i: i64) -> Self {
        LogValue::Int(i)
    }
}
impl From<u64> for LogValue {
    fn from(i: u64) -> Self {
        i64::try_from(i).map_or(LogValue::Float(i as f64), LogValue::Int)
    }
}
impl From<usize> for LogValue {
    fn from(i: usize) -> Self {
        LogValue::from(i as u64)
    }
}
impl From<i32> for LogValue {
    fn from(i: i32) -> Self {
        LogValue::Int(i64::from(i))
    }
}
impl From<f64> for LogValue {
    fn from(f: f64) -> Self {
        LogValue::Float(f)
    }
}
impl From<bool> for LogValue {
    fn from(b: bool) -> Self {
        LogValue::Bool(b)
    }
}
impl<T: Into<LogValue>> From<Vec<T>> for LogValue {
    fn from(v: Vec<T>) -> Self {
        LogValue::List(v.into_iter().map(Into::into).collect())
    }
}
impl<T: Into<LogValue>> From<Option<T>> for LogValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(LogValue::Null, Into::into)
    }
}
impl From<BTreeMap<String, LogValue>> for LogValue {
    fn from(m: BTreeMap<String, LogValue>) -> Self {
        LogValue::Map(m)
    }
}
