//! Delivering files to a DUT over its console: a list of shell command lines that recreate them.
//!
//! Each line is a `printf` whose format string holds the bytes, with everything that could
//! confuse a serial console, a shell's line editor or LAVA's own pattern matching written as an
//! octal escape: control characters (tab would trigger completion, ^C/^D/^U would be acted on),
//! `\`, `%`, `'`, and `<`, `>`, `#`, `$`, `!`. So the echo of a line can never contain a
//! `<LAVA_SIGNAL_...>` line, a shell prompt (`# `, `$ `) or a here-document prompt, and lines
//! stay under a configurable length (busybox's line editor takes 1024 characters, the kernel tty
//! 4095). The runner sends each line and waits for the shell prompt before the next; at the end
//! it sends [`DeliveryPlan::done_command`] and waits for [`DeliveryPlan::done_marker`], a text
//! that only the command's *output* contains (the echo shows `$((...))`).

use super::overlay::{OverlayFile, shlex_quote};

/// Options of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryOptions {
    /// Longest command line sent, in bytes, line separator excluded.
    pub max_line: usize,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        Self { max_line: 200 }
    }
}

/// The lines to send, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryPlan {
    pub commands: Vec<String>,
    /// Sent last; its output line is `done_marker`.
    pub done_command: String,
    pub done_marker: String,
    /// A check the runner may send: `md5sum` of every file, expected output lines in order.
    pub verify_command: String,
    pub verify_expected: Vec<String>,
}

/// Why a plan cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error("max_line {0} is too short to deliver {1}")]
    LineTooShort(usize, String),
}

/// Builds the command lines that create `dirs` and `files` on the DUT.
pub fn plan_delivery(
    dirs: &[String],
    files: &[OverlayFile],
    opts: DeliveryOptions,
    nonce: u32,
) -> Result<DeliveryPlan, DeliveryError> {
    let mut commands = Vec::new();
    // mkdir -p in batches that fit a line.
    let mut line = String::from("mkdir -p");
    for d in dirs {
        let q = quote_path(d);
        if line.len() + 1 + q.len() > opts.max_line && line != "mkdir -p" {
            commands.push(std::mem::replace(&mut line, String::from("mkdir -p")));
        }
        line.push(' ');
        line.push_str(&q);
    }
    if line != "mkdir -p" {
        commands.push(line);
    }
    for f in files {
        let path = quote_path(&f.path);
        let first_prefix = "printf '";
        let overhead = first_prefix.len() + "' >> ".len() + path.len();
        if overhead + 4 > opts.max_line {
            return Err(DeliveryError::LineTooShort(opts.max_line, f.path.clone()));
        }
        let budget = opts.max_line - overhead;
        let mut chunks: Vec<String> = Vec::new();
        let mut cur = String::new();
        for &b in &f.content {
            let mut e = escape_byte(b);
            if cur.len() + e.len() + 3 > budget {
                chunks.push(std::mem::take(&mut cur));
            }
            // A format that starts with '-' would be taken for an option by printf.
            if cur.is_empty() && b == b'-' {
                e = "\\055".to_string();
            }
            cur.push_str(&e);
        }
        if !cur.is_empty() {
            chunks.push(cur);
        }
        if chunks.is_empty() {
            commands.push(format!(": > {path}"));
        }
        for (i, c) in chunks.iter().enumerate() {
            let redirect = if i == 0 { ">" } else { ">>" };
            commands.push(format!("printf '{c}' {redirect} {path}"));
        }
    }
    let exec: Vec<String> = files
        .iter()
        .filter(|f| f.executable)
        .map(|f| quote_path(&f.path))
        .collect();
    let mut line = String::from("chmod 755");
    for q in exec {
        if line.len() + 1 + q.len() > opts.max_line && line != "chmod 755" {
            commands.push(std::mem::replace(&mut line, String::from("chmod 755")));
        }
        line.push(' ');
        line.push_str(&q);
    }
    if line != "chmod 755" {
        commands.push(line);
    }
    let (a, b) = (nonce / 2, nonce - nonce / 2);
    let done_command = format!("echo LABD_DELIVERED_$(({a}+{b}))");
    let done_marker = format!("LABD_DELIVERED_{nonce}");
    let verify_command = format!(
        "md5sum {}",
        files
            .iter()
            .map(|f| quote_path(&f.path))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let verify_expected = files
        .iter()
        .map(|f| {
            use md5::Digest;
            format!("{:x}  {}", md5::Md5::digest(&f.content), f.path)
        })
        .collect();
    Ok(DeliveryPlan {
        commands,
        done_command,
        done_marker,
        verify_command,
        verify_expected,
    })
}

fn quote_path(p: &str) -> String {
    shlex_quote(p)
}

/// One byte inside a single-quoted `printf` format string (a chunk never starts with a bare
/// `-`: see the caller).
fn escape_byte(b: u8) -> String {
    match b {
        b'\n' => "\\n".into(),
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (b as char).to_string(),
        b' ' | b'-' | b'_' | b'=' | b'+' | b',' | b'.' | b':' | b'/' | b'@' | b'^' | b'~'
        | b'(' | b')' | b'{' | b'}' | b'[' | b']' | b';' | b'&' | b'|' | b'*' | b'?' | b'"'
        | b'`' => (b as char).to_string(),
        _ => format!("\\{b:03o}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_short_and_harmless() {
        let content =
            b"#!/bin/sh\necho \"<LAVA_SIGNAL_ENDRUN $X>\"\t100%\\ 'q' !\x03\xc3\xa9".repeat(20);
        let f = OverlayFile {
            path: "/lava-12/bin/x".into(),
            content,
            executable: true,
        };
        let plan = plan_delivery(
            &["/lava-12/bin".into()],
            &[f],
            DeliveryOptions { max_line: 80 },
            42,
        )
        .unwrap();
        for c in &plan.commands {
            assert!(c.len() <= 80, "{c}");
            for bad in ['<', '#', '$', '!', '\t', '%', '\''] {
                let body = c.trim_start_matches("printf '");
                let body = body.split('\'').next().unwrap();
                assert!(!body.contains(bad), "{bad:?} in {c}");
            }
            assert!(c.is_ascii());
        }
        // Every chunk boundary is tried: no format may start with '-' (printf takes it for an
        // option).
        let dashes = OverlayFile {
            path: "/d".into(),
            content: b"a-b--c---d----".repeat(30),
            executable: false,
        };
        for max_line in 20..40 {
            let p = plan_delivery(
                &[],
                std::slice::from_ref(&dashes),
                DeliveryOptions { max_line },
                1,
            )
            .unwrap();
            assert!(
                p.commands.iter().all(|c| !c.starts_with("printf '-")),
                "{max_line}"
            );
        }
        assert_eq!(plan.done_command, "echo LABD_DELIVERED_$((21+21))");
        assert_eq!(plan.done_marker, "LABD_DELIVERED_42");
        assert!(plan.commands.last().unwrap().starts_with("chmod 755 "));
        assert!(DeliveryOptions::default().max_line <= 1024);
    }
}
