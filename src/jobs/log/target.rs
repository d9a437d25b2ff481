//! Console output → `lvl: target` lines, as lava-dispatcher's `ShellLogger` builds them from
//! what pexpect reads.
//!
//! Per chunk read (not per line, so the result depends on chunking exactly as in LAVA):
//! `"\n\n"` → `"\n"`, `"\r"` removed, `"` → `\"` (a literal backslash stays in the message),
//! ESC removed; then complete lines are emitted and the tail is kept for the next chunk.

/// Splits decoded console text into the lines lava-dispatcher would log.
#[derive(Debug, Default, Clone)]
pub struct TargetLineLogger {
    partial: String,
}

impl TargetLineLogger {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one chunk of decoded console text; returns the complete lines it finishes.
    pub fn write(&mut self, chunk: &str) -> Vec<String> {
        let cleaned = chunk
            .replace("\n\n", "\n")
            .replace('\r', "")
            .replace('"', "\\\"")
            .replace('\x1b', "");
        self.partial.push_str(&cleaned);
        let Some(last) = self.partial.rfind('\n') else {
            return Vec::new();
        };
        let rest = self.partial.split_off(last + 1);
        let mut done = std::mem::replace(&mut self.partial, rest);
        done.pop(); // the final '\n'
        done.split('\n').map(str::to_string).collect()
    }

    /// Text received but not yet ended by a newline.
    pub fn pending(&self) -> &str {
        &self.partial
    }

    /// At the end of a connection: the unfinished line, if any (`flush(force=True)`).
    pub fn flush(&mut self) -> Option<String> {
        if self.partial.is_empty() {
            return None;
        }
        self.write("\n").pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_shell_logger() {
        let mut l = TargetLineLogger::new();
        assert!(l.write("\x1bc\x1b[?7l[    0.0] Linux").is_empty());
        assert_eq!(
            l.write(" version\r\n"),
            vec!["c[?7l[    0.0] Linux version"]
        );
        // "\r\n\r\n" keeps an empty line: "\n\n" is replaced before "\r" is removed.
        assert_eq!(l.write("a\r\n\r\nb\n"), vec!["a", "", "b"]);
        assert_eq!(l.write("x\n\ny\n"), vec!["x", "y"]);
        assert_eq!(l.write("echo \"hi\"\n"), vec![r#"echo \"hi\""#]);
        l.write("/ # ");
        assert_eq!(l.pending(), "/ # ");
        assert_eq!(l.flush().as_deref(), Some("/ # "));
        assert_eq!(l.flush(), None);
    }
}
