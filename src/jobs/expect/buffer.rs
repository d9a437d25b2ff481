//! pexpect's search semantics, without I/O: text accumulates until a match; after each chunk
//! arrives only the last `window` characters are searched (lava-dispatcher spawns with
//! `searchwindowsize=4000`); among the patterns the earliest match wins, ties go to the first
//! pattern; after a match everything up to its start is `before` and the rest stays buffered.

use super::pattern::{Pattern, PatternMatch};

/// lava-dispatcher's `searchwindowsize`.
pub const LAVA_SEARCH_WINDOW: usize = 4000;

/// Most text kept unmatched. pexpect keeps all of it (its `before`); a console that talks for
/// hours without matching would grow without bound, so labd drops the oldest text beyond this
/// (never the search window). `before` then starts later than pexpect's would.
pub const MAX_PENDING: usize = 4 << 20;

/// A successful wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectMatch {
    /// Index of the pattern that matched.
    pub index: usize,
    /// Text received since the previous match, up to this match (pexpect's `before`).
    pub before: String,
    /// The matched text (pexpect's `after`).
    pub after: String,
    pub groups: Vec<Option<String>>,
    pub named: std::collections::BTreeMap<String, String>,
}

/// Text received since the last match, searched the way pexpect searches it.
#[derive(Debug, Clone)]
pub struct ExpectBuffer {
    pending: String,
    window: Option<usize>,
}

impl Default for ExpectBuffer {
    fn default() -> Self {
        Self::new(Some(LAVA_SEARCH_WINDOW))
    }
}

impl ExpectBuffer {
    /// `window` in characters; `None` searches everything since the last match.
    pub fn new(window: Option<usize>) -> Self {
        Self {
            pending: String::new(),
            window,
        }
    }

    pub fn set_window(&mut self, window: Option<usize>) {
        self.window = window;
    }

    /// Text not yet consumed by a match.
    pub fn pending(&self) -> &str {
        &self.pending
    }

    /// Drops everything buffered (pexpect's `empty_buffer`).
    pub fn clear(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// Appends a decoded chunk; the caller then searches.
    pub fn push(&mut self, chunk: &str) {
        self.pending.push_str(chunk);
        if self.pending.len() > MAX_PENDING {
            let keep_from = self
                .window_start()
                .min(self.pending.len() - MAX_PENDING / 2);
            // Cut on a character boundary at or before `keep_from`.
            let cut = (0..=keep_from)
                .rev()
                .find(|i| self.pending.is_char_boundary(*i))
                .unwrap_or(0);
            self.pending.drain(..cut);
        }
    }

    /// Byte offset where the searched window starts.
    fn window_start(&self) -> usize {
        let Some(w) = self.window else {
            return 0;
        };
        // Fewer bytes than the window's characters: all of it is searched.
        if self.pending.len() <= w {
            return 0;
        }
        // The last `w` characters.
        self.pending
            .char_indices()
            .rev()
            .nth(w.saturating_sub(1))
            .map_or(0, |(i, _)| if w == 0 { self.pending.len() } else { i })
    }

    /// Searches the window for the earliest match of any pattern; on a match, consumes up to
    /// its end.
    pub fn search(&mut self, patterns: &[&Pattern]) -> Option<ExpectMatch> {
        let ws = self.window_start();
        let window = &self.pending[ws..];
        let mut best: Option<(usize, PatternMatch)> = None;
        for (i, p) in patterns.iter().enumerate() {
            let Some(m) = p.find(window) else {
                continue;
            };
            if best.as_ref().is_none_or(|(_, b)| m.start < b.start) {
                best = Some((i, m));
            }
        }
        let (index, m) = best?;
        let before = self.pending[..ws + m.start].to_string();
        let after = self.pending[ws + m.start..ws + m.end].to_string();
        self.pending.drain(..ws + m.end);
        Some(ExpectMatch {
            index,
            before,
            after,
            groups: m.groups,
            named: m.named,
        })
    }
}

/// Decodes UTF-8 across chunk boundaries, replacing invalid sequences with U+FFFD as Python's
/// `codecs` incremental decoder with `errors="replace"` does (pexpect's `codec_errors`).
#[derive(Debug, Default, Clone)]
pub struct Utf8Decoder {
    tail: Vec<u8>,
}

impl Utf8Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes `bytes`, keeping an incomplete trailing sequence for the next call.
    pub fn decode(&mut self, bytes: &[u8]) -> String {
        let mut data = std::mem::take(&mut self.tail);
        data.extend_from_slice(bytes);
        let mut out = String::with_capacity(data.len());
        let mut rest: &[u8] = &data;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    // `good` is valid by construction.
                    out.push_str(&String::from_utf8_lossy(good));
                    match e.error_len() {
                        Some(n) => {
                            out.push('\u{FFFD}');
                            rest = &bad[n..];
                        }
                        None => {
                            self.tail = bad.to_vec();
                            break;
                        }
                    }
                }
            }
        }
        out
    }

    /// End of stream: an unfinished sequence becomes one U+FFFD.
    pub fn finish(&mut self) -> String {
        if self.tail.is_empty() {
            String::new()
        } else {
            self.tail.clear();
            "\u{FFFD}".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::new(s).unwrap()
    }

    #[test]
    fn earliest_match_wins_ties_to_first() {
        let mut b = ExpectBuffer::new(None);
        b.push("login: foo # bar");
        let (a, c, d) = (p("#"), p("login:"), p("log"));
        let m = b.search(&[&a, &c, &d]).unwrap();
        assert_eq!(m.index, 1);
        assert_eq!(m.before, "");
        assert_eq!(m.after, "login:");
        assert_eq!(b.pending(), " foo # bar");
        let m = b.search(&[&a]).unwrap();
        assert_eq!(m.before, " foo ");
        assert_eq!(b.pending(), " bar");
        assert!(b.search(&[&a]).is_none());
    }

    #[test]
    fn only_the_window_is_searched() {
        let mut b = ExpectBuffer::new(Some(10));
        b.push("MARK");
        b.push(&"x".repeat(10));
        let mark = p("MARK");
        assert!(b.search(&[&mark]).is_none());
        let x = p("x+");
        let m = b.search(&[&x]).unwrap();
        // The unsearched part still counts as `before`.
        assert_eq!(m.before, "MARK");
        assert_eq!(m.after.len(), 10);
        // Multi-byte characters count as one.
        let mut b = ExpectBuffer::new(Some(2));
        b.push("é#é");
        assert!(b.search(&[&p("#")]).is_some());
    }

    #[test]
    fn pending_text_is_bounded() {
        let mut b = ExpectBuffer::new(Some(10));
        let chunk = "é".repeat(1 << 16);
        for _ in 0..100 {
            b.push(&chunk);
        }
        assert!(b.pending().len() <= MAX_PENDING);
        b.push("MARK");
        assert!(b.search(&[&p("MARK")]).is_some());
    }

    #[test]
    fn utf8_across_chunks() {
        let mut d = Utf8Decoder::new();
        let s = "é😀".as_bytes();
        assert_eq!(d.decode(&s[..1]), "");
        assert_eq!(d.decode(&s[1..3]), "é");
        assert_eq!(d.decode(&s[3..]), "😀");
        assert_eq!(d.decode(b"a\xffb"), "a\u{FFFD}b");
        assert_eq!(d.decode(b"\xe2\x82"), "");
        assert_eq!(d.finish(), "\u{FFFD}");
    }
}
