//! `labd console DEVICE`: attach the terminal to a board's console through the daemon.
//!
//! The terminal goes raw; recent scrollback is replayed; keystrokes go to the board. Escapes,
//! recognised only at the start of a line (after Enter), like ssh and cu:
//! `~.` detach, `~B` send a BREAK, `~~` send one `~`, `~?` list the escapes.
//! With stdin not a terminal, input is sent as it comes and the session ends at end of input.

use std::io::Write as _;
use std::os::fd::AsFd;
use std::process::ExitCode;

use anyhow::Context;
use tokio::io::AsyncReadExt;

use super::InventoryArg;
use crate::control::client::frame_text;
use crate::control::frame::FrameKind;
use crate::control::{AttachRequest, ControlClient};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The device (inventory name).
    pub device: String,
    #[command(flatten)]
    pub inventory: InventoryArg,
    /// The daemon's control socket (default: `labd.sock` in the inventory's state_dir).
    #[arg(long)]
    pub socket: Option<std::path::PathBuf>,
    /// Watch only; never send input.
    #[arg(long)]
    pub read_only: bool,
    /// Type even while a job holds the console (journaled as forced).
    #[arg(long)]
    pub force: bool,
    /// Do not replay recent output on attach.
    #[arg(long)]
    pub no_replay: bool,
}

/// Puts a terminal in raw mode and restores it when dropped.
struct RawTerminal {
    saved: nix::sys::termios::Termios,
}

impl RawTerminal {
    fn enter() -> Option<Self> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(Self { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// What a chunk of keystrokes means once escapes are taken out.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Keys {
    pub input: Vec<u8>,
    pub brk: bool,
    pub help: bool,
    pub detach: bool,
}

/// The `~` escape state machine.
#[derive(Debug)]
pub struct Escapes {
    at_line_start: bool,
    tilde: bool,
}

impl Default for Escapes {
    fn default() -> Self {
        Self {
            at_line_start: true,
            tilde: false,
        }
    }
}

impl Escapes {
    pub fn feed(&mut self, data: &[u8]) -> Keys {
        let mut k = Keys::default();
        for &b in data {
            if k.detach {
                break;
            }
            if self.tilde {
                self.tilde = false;
                // After a command that typed nothing, the board's line is still empty.
                self.at_line_start = true;
                match b {
                    b'.' => k.detach = true,
                    b'B' => k.brk = true,
                    b'?' => k.help = true,
                    b'~' => {
                        k.input.push(b'~');
                        self.at_line_start = false;
                    }
                    other => {
                        k.input.push(b'~');
                        k.input.push(other);
                        self.at_line_start = matches!(other, b'\r' | b'\n');
                    }
                }
                continue;
            }
            if self.at_line_start && b == b'~' {
                self.tilde = true;
                continue;
            }
            k.input.push(b);
            self.at_line_start = matches!(b, b'\r' | b'\n');
        }
        k
    }
}

const HELP: &str = "\r\n[labd escapes, at the start of a line: ~. detach, ~B send BREAK, ~~ send ~, ~? this help]\r\n";

fn say(msg: &str) {
    let mut e = std::io::stderr();
    let _ = write!(e, "\r\n[labd: {msg}]\r\n");
    let _ = e.flush();
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let socket = super::status::socket_path(&args.socket, &args.inventory)?;
    let client = ControlClient::new(socket);
    let req = AttachRequest {
        device: args.device.clone(),
        read_only: args.read_only,
        force: args.force,
        replay: if args.no_replay {
            0
        } else {
            crate::console::DEFAULT_SCROLLBACK
        },
    };
    let (reply, session) = client
        .attach(&req)
        .await
        .with_context(|| format!("cannot attach to {}", args.device))?;
    let interactive = nix::unistd::isatty(std::io::stdin().as_fd()).unwrap_or(false);
    let raw = if interactive {
        RawTerminal::enter()
    } else {
        None
    };
    let mut status = format!("attached to {} as {}", reply.device, reply.client);
    if args.read_only {
        status.push_str(", read-only");
    }
    if let Some(w) = &reply.writer {
        status.push_str(&format!("; held by {w}"));
        if !args.force && !args.read_only {
            status.push_str(" (read-only unless --force)");
        }
    }
    if !reply.online {
        status.push_str("; console offline");
    }
    if interactive {
        status.push_str("; ~. to detach, ~? for help");
    }
    say(&status);

    let mut reader = session.reader;
    let mut writer = session.writer;
    let mut stdin = tokio::io::stdin();
    let mut escapes = Escapes::default();
    let mut buf = vec![0u8; 4096];
    let mut stdin_open = true;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut stdout = std::io::stdout();
    let outcome = loop {
        tokio::select! {
            _ = term.recv() => {
                let _ = writer.detach().await;
                break "detached (SIGTERM)".to_string();
            }
            r = stdin.read(&mut buf), if stdin_open => {
                let n = r.unwrap_or(0);
                if n == 0 {
                    stdin_open = false;
                    let _ = writer.detach().await;
                    continue;
                }
                let keys = if interactive { escapes.feed(&buf[..n]) } else {
                    Keys { input: buf[..n].to_vec(), ..Keys::default() }
                };
                if !keys.input.is_empty() {
                    writer.input(&keys.input).await?;
                }
                if keys.brk {
                    writer.send_break().await?;
                }
                if keys.help {
                    let _ = std::io::stderr().write_all(HELP.as_bytes());
                }
                if keys.detach {
                    let _ = writer.detach().await;
                    break "detached".to_string();
                }
            }
            f = reader.next() => match f {
                Ok(Some(f)) => match f.kind {
                    FrameKind::Data => {
                        stdout.write_all(&f.payload)?;
                        stdout.flush()?;
                    }
                    FrameKind::Missed => {
                        let n = f.payload.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
                        say(&format!("{n} bytes missed (this terminal fell behind)"));
                    }
                    FrameKind::Lost => say(&format!("console lost: {}; waiting for it to come back", frame_text(&f.payload))),
                    FrameKind::Back => say(&format!("console back {}", frame_text(&f.payload))),
                    FrameKind::Notice => say(&frame_text(&f.payload)),
                    _ => {}
                },
                Ok(None) => break if stdin_open { "the daemon ended the session".to_string() } else { "detached (end of input)".to_string() },
                Err(e) => break format!("session error: {e}"),
            }
        }
    };
    say(&outcome);
    drop(raw);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_only_at_line_start() {
        let mut e = Escapes::default();
        assert!(e.feed(b"~.").detach);
        let mut e = Escapes::default();
        let k = e.feed(b"a~.b\r~B~~x\n~?~q");
        assert_eq!(k.input, b"a~.b\r~x\n~q");
        assert!(k.brk && k.help && !k.detach);
        // After ~? (nothing typed) another escape works at once.
        let mut e = Escapes::default();
        assert!(e.feed(b"~?~.").detach);
        // A tilde split across reads still counts.
        let mut e = Escapes::default();
        assert!(e.feed(b"\r~").input == b"\r");
        assert!(e.feed(b".").detach);
    }
}
