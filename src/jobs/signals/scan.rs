//! Finding test-shell signals in a console stream the way lava-dispatcher does: its
//! `TestShellAction` waits with pexpect on, in this order, `<LAVA_TEST_RUNNER EXIT>`,
//! `<LAVA_TEST_RUNNER INSTALL_FAIL>`, `<LAVA_SIGNAL_(\S+) ([^>]+)>` and, while a run with a
//! `parse.pattern` is active, that pattern (compiled with `re.M`). The earliest match in the
//! search window wins, so chunk boundaries and `\r` do not matter, and — as in LAVA — the echo
//! of a typed command that contains a signal matches too (`[^>]+` may also span lines).

use crate::jobs::expect::{ExpectBuffer, ExpectMatch, LAVA_SEARCH_WINDOW, Pattern};

pub const RUNNER_EXIT: &str = "<LAVA_TEST_RUNNER EXIT>";
pub const RUNNER_INSTALL_FAIL: &str = "<LAVA_TEST_RUNNER INSTALL_FAIL>";
pub const SIGNAL_PATTERN: &str = r"<LAVA_SIGNAL_(\S+) ([^>]+)>";
/// The Multi-Node API's line (handled by the multinode module; recognised here so a runner can
/// route it).
pub const MULTINODE_PATTERN: &str = r"<LAVA_MULTI_NODE> <LAVA_(\S+) ([^>]+)>";

/// What the scanner found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellEvent {
    /// `<LAVA_TEST_RUNNER EXIT>`.
    Exit,
    /// `<LAVA_TEST_RUNNER INSTALL_FAIL>`.
    InstallFail,
    /// `<LAVA_SIGNAL_NAME params>`, params split on whitespace as LAVA does.
    Signal {
        name: String,
        params: Vec<String>,
        raw: String,
    },
    /// A match of the definition's `parse.pattern`: its named groups.
    TestCaseResult {
        groups: std::collections::BTreeMap<String, String>,
    },
    /// `<LAVA_MULTI_NODE> <LAVA_NAME params>`, params unsplit.
    Multinode { name: String, params: String },
}

/// Streaming scanner over decoded console text.
#[derive(Debug)]
pub struct SignalScanner {
    buffer: ExpectBuffer,
    exit: Pattern,
    install_fail: Pattern,
    signal: Pattern,
    multinode: Option<Pattern>,
    parse: Option<Pattern>,
}

impl Default for SignalScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl SignalScanner {
    pub fn new() -> Self {
        Self {
            buffer: ExpectBuffer::new(Some(LAVA_SEARCH_WINDOW)),
            exit: Pattern::literal(RUNNER_EXIT),
            install_fail: Pattern::literal(RUNNER_INSTALL_FAIL),
            signal: fixed(SIGNAL_PATTERN),
            multinode: None,
            parse: None,
        }
    }

    /// Also recognise Multi-Node API lines (LAVA adds the pattern for Multi-Node jobs only).
    pub fn with_multinode(mut self) -> Self {
        self.multinode = Some(fixed(MULTINODE_PATTERN));
        self
    }

    /// Sets (or clears) the active definition's `parse.pattern` (`re.M`).
    pub fn set_parse_pattern(&mut self, pattern: Option<&str>) -> Result<(), String> {
        self.parse = match pattern {
            Some(p) => Some(Pattern::multiline(p)?),
            None => None,
        };
        Ok(())
    }

    /// Text received but not consumed by a match.
    pub fn pending(&self) -> &str {
        self.buffer.pending()
    }

    /// Feeds a chunk and returns the next event, if one is complete. Call [`Self::next_event`]
    /// until it returns `None` before feeding more (the session may change the parse pattern
    /// between events, as LAVA's loop does).
    pub fn feed(&mut self, chunk: &str) -> Option<(ShellEvent, ExpectMatch)> {
        self.buffer.push(chunk);
        self.next_event()
    }

    /// The next event already in the buffer.
    pub fn next_event(&mut self) -> Option<(ShellEvent, ExpectMatch)> {
        // pexpect pattern order: exit, error, (eof, timeout), signal, test_case_result; the
        // Multi-Node pattern comes after them.
        let mut pats: Vec<&Pattern> = vec![&self.exit, &self.install_fail, &self.signal];
        let parse_idx = self.parse.as_ref().map(|p| {
            pats.push(p);
            pats.len() - 1
        });
        let mn_idx = self.multinode.as_ref().map(|p| {
            pats.push(p);
            pats.len() - 1
        });
        let m = self.buffer.search(&pats)?;
        let ev = match m.index {
            0 => ShellEvent::Exit,
            1 => ShellEvent::InstallFail,
            2 => {
                let name = m.groups.get(1).cloned().flatten().unwrap_or_default();
                let raw = m.groups.get(2).cloned().flatten().unwrap_or_default();
                ShellEvent::Signal {
                    name,
                    params: raw.split_whitespace().map(str::to_string).collect(),
                    raw,
                }
            }
            i if Some(i) == parse_idx => ShellEvent::TestCaseResult {
                groups: m.named.clone(),
            },
            i if Some(i) == mn_idx => ShellEvent::Multinode {
                name: m.groups.get(1).cloned().flatten().unwrap_or_default(),
                params: m.groups.get(2).cloned().flatten().unwrap_or_default(),
            },
            _ => return None,
        };
        Some((ev, m))
    }
}

fn fixed(src: &str) -> Pattern {
    // The fixed patterns above are valid; fall back to a literal so this can never panic.
    Pattern::new(src).unwrap_or_else(|_| Pattern::literal(src))
}

/// The fuzzing entry point: any bytes never panic, and the runner markers found when the
/// text arrives in one piece are found when it arrives one character at a time (LAVA reads
/// whatever chunk sizes the console gives).
pub fn fuzz_signal_stream(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let drain = |s: &mut SignalScanner, chunk: &str, out: &mut Vec<ShellEvent>| {
        if let Some((e, _)) = s.feed(chunk) {
            out.push(e);
            while let Some((e, _)) = s.next_event() {
                out.push(e);
            }
        }
    };
    let mut with_parse = SignalScanner::new().with_multinode();
    let _ = with_parse.set_parse_pattern(Some(r"(?P<test_case_id>\S+): (?P<result>\w+)"));
    drain(&mut with_parse, &text, &mut Vec::new());

    if text.chars().count() >= LAVA_SEARCH_WINDOW {
        return;
    }
    let markers = |v: &[ShellEvent]| {
        v.iter()
            .filter(|e| matches!(e, ShellEvent::Exit | ShellEvent::InstallFail))
            .count()
    };
    let mut whole = SignalScanner::new().with_multinode();
    let mut a = Vec::new();
    drain(&mut whole, &text, &mut a);
    let mut split = SignalScanner::new().with_multinode();
    let mut b = Vec::new();
    let mut buf = [0u8; 4];
    for c in text.chars() {
        drain(&mut split, c.encode_utf8(&mut buf), &mut b);
    }
    assert_eq!(
        markers(&a),
        markers(&b),
        "runner markers depend on chunking"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(s: &mut SignalScanner, chunk: &str) -> Vec<ShellEvent> {
        let mut v = Vec::new();
        if let Some((e, _)) = s.feed(chunk) {
            v.push(e);
            while let Some((e, _)) = s.next_event() {
                v.push(e);
            }
        }
        v
    }

    #[test]
    fn signals_across_chunks_and_cr() {
        let mut s = SignalScanner::new();
        assert!(
            all(
                &mut s,
                "+ lava-test-case pwd --shell pwd\r\n<LAVA_SIGNAL_STA"
            )
            .is_empty()
        );
        let ev = all(
            &mut s,
            "RTTC pwd>\r\n/root\r\n<LAVA_SIGNAL_ENDTC pwd>\r\n<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=pwd RESULT=pass>\r\n<LAVA_TEST_RUNNER EXIT>\r\n",
        );
        assert_eq!(ev.len(), 4);
        assert_eq!(
            ev[0],
            ShellEvent::Signal {
                name: "STARTTC".into(),
                params: vec!["pwd".into()],
                raw: "pwd".into()
            }
        );
        match &ev[2] {
            ShellEvent::Signal { name, params, .. } => {
                assert_eq!(name, "TESTCASE");
                assert_eq!(params, &["TEST_CASE_ID=pwd", "RESULT=pass"]);
            }
            e => panic!("{e:?}"),
        }
        assert_eq!(ev[3], ShellEvent::Exit);
    }

    #[test]
    fn params_may_span_lines_and_echo_matches() {
        let mut s = SignalScanner::new();
        let ev = all(&mut s, "echo \"<LAVA_SIGNAL_TESTEVENT a\r\nb>\"");
        assert_eq!(
            ev,
            vec![ShellEvent::Signal {
                name: "TESTEVENT".into(),
                params: vec!["a".into(), "b".into()],
                raw: "a\r\nb".into()
            }]
        );
    }

    #[test]
    fn parse_pattern_and_priority() {
        let mut s = SignalScanner::new();
        s.set_parse_pattern(Some(r"^(?P<test_case_id>\w+): (?P<result>PASS|FAIL)"))
            .unwrap();
        let ev = all(&mut s, "foo: PASS\r\nbar: FAIL\r\n");
        assert_eq!(ev.len(), 2);
        match &ev[1] {
            ShellEvent::TestCaseResult { groups } => {
                assert_eq!(groups["test_case_id"], "bar");
                assert_eq!(groups["result"], "FAIL");
            }
            e => panic!("{e:?}"),
        }
        let mut s = SignalScanner::new().with_multinode();
        let ev = all(&mut s, "<LAVA_MULTI_NODE> <LAVA_SEND ready a=1>\n");
        assert_eq!(
            ev,
            vec![ShellEvent::Multinode {
                name: "SEND".into(),
                params: "ready a=1".into()
            }]
        );
        fuzz_signal_stream(b"<LAVA_TEST_RUNNER EXIT><LAVA_SIGNAL_X y>");
    }
}
