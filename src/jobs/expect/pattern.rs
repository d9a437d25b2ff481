//! Regular expressions from jobs and device configurations. LAVA uses Python's `re`; labd uses
//! `fancy-regex` so look-around and back-references in user patterns keep working.

use std::collections::BTreeMap;
use std::fmt;

/// A compiled pattern that remembers its source (for logs and errors).
#[derive(Clone)]
pub struct Pattern {
    source: String,
    re: Matcher,
}

#[derive(Clone)]
enum Matcher {
    Regex(fancy_regex::Regex),
    Literal(String),
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.source)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// Where a pattern matched and its groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternMatch {
    pub start: usize,
    pub end: usize,
    /// Group 0 is the whole match.
    pub groups: Vec<Option<String>>,
    pub named: BTreeMap<String, String>,
}

impl Pattern {
    /// Compiles `source` (Python `re` syntax: `(?P<name>...)` groups are understood).
    pub fn new(source: &str) -> Result<Self, String> {
        let re = fancy_regex::Regex::new(source).map_err(|e| e.to_string())?;
        Ok(Self {
            source: source.to_string(),
            re: Matcher::Regex(re),
        })
    }

    /// A pattern that matches `text` literally (labd's own fixed strings).
    pub fn literal(text: &str) -> Self {
        Self {
            source: fancy_regex::escape(text).into_owned(),
            re: Matcher::Literal(text.to_string()),
        }
    }

    /// Compiles with Python's `re.M` (`^`/`$` at every line), as LAVA compiles `parse.pattern`.
    pub fn multiline(source: &str) -> Result<Self, String> {
        let mut p = Self::new(&format!("(?m){source}"))?;
        p.source = source.to_string();
        Ok(p)
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The first match in `text`. A pattern that exhausts the backtracking limit counts as no
    /// match (LAVA would hang instead).
    pub fn find(&self, text: &str) -> Option<PatternMatch> {
        let re = match &self.re {
            Matcher::Literal(l) => {
                let start = text.find(l.as_str())?;
                return Some(PatternMatch {
                    start,
                    end: start + l.len(),
                    groups: vec![Some(l.clone())],
                    named: BTreeMap::new(),
                });
            }
            Matcher::Regex(re) => re,
        };
        let caps = re.captures(text).ok()??;
        let whole = caps.get(0)?;
        let groups = (0..caps.len())
            .map(|i| caps.get(i).map(|m| m.as_str().to_string()))
            .collect();
        let mut named = BTreeMap::new();
        for name in re.capture_names().flatten() {
            if let Some(m) = caps.name(name) {
                named.insert(name.to_string(), m.as_str().to_string());
            }
        }
        Some(PatternMatch {
            start: whole.start(),
            end: whole.end(),
            groups,
            named,
        })
    }

    /// Start and end of the first match only (cheaper than [`Pattern::find`]).
    pub fn find_start(&self, text: &str) -> Option<(usize, usize)> {
        match &self.re {
            Matcher::Literal(l) => text.find(l.as_str()).map(|s| (s, s + l.len())),
            Matcher::Regex(re) => {
                let m = re.find(text).ok()??;
                Some((m.start(), m.end()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_syntax() {
        let p = Pattern::new(r"(?P<test_case_id>\w+): (?P<result>PASS|FAIL)").unwrap();
        let m = p.find("x foo: PASS").unwrap();
        assert_eq!(m.named["test_case_id"], "foo");
        assert_eq!(m.named["result"], "PASS");
        assert_eq!(m.start, 2);
        assert!(Pattern::new(r"a(?=b)").unwrap().find("ab").is_some());
        assert!(Pattern::new("(").is_err());
        assert!(Pattern::literal("a.b(").find("xa.b(").is_some());
        let ml = Pattern::multiline("^ok$").unwrap();
        assert!(ml.find("x\nok\ny").is_some());
    }
}
