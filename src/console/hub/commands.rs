//! The hub's handling of requests from handles: input and BREAK (with writer arbitration),
//! subscriptions, the writer lease, scrollback, reopen and reconfigure.

use std::time::SystemTime;

use bytes::Bytes;
use tokio::time::Instant;

use super::{Command, Hub, Next, Offline, Online, WriteAs};
use crate::console::ConsoleError;
use crate::console::queue::{ConsoleEvent, SubShared, Subscription};
use crate::ids::ClientId;

impl Hub {
    /// Handles a command while online; returns a transition when the link must be reopened.
    pub(super) fn handle_online(&mut self, cmd: Command, on: &mut Online) -> Option<Next> {
        match cmd {
            Command::Input {
                from,
                data,
                how,
                reply,
            } => {
                let r = self.check_write(&from, &how).and_then(|who| {
                    let limit = self.input_limit;
                    if on.writer.pending_len() + data.len() > limit {
                        return Err(ConsoleError::InputBacklog {
                            device: self.device.clone(),
                            limit,
                        });
                    }
                    self.journal.input(&who, &data);
                    self.metrics.bytes_out.inc_by(data.len() as u64);
                    on.writer.queue(&data);
                    Ok(())
                });
                let _ = reply.send(r);
                None
            }
            Command::Break { from, how, reply } => {
                let r = self.check_write(&from, &how).map(|who| {
                    self.journal.brk(&who);
                    on.writer.queue_break();
                });
                let _ = reply.send(r);
                None
            }
            Command::Reopen {
                path,
                unless_open_on,
            } => {
                if let Some(node) = unless_open_on.filter(|n| self.is_open_on(n)) {
                    tracing::debug!(node = %node.display(), "already open on this node; reopen skipped");
                    if path.is_some() {
                        self.path_override = path;
                    }
                    return None;
                }
                self.path_override = path;
                let why = match &self.path_override {
                    Some(p) => format!("reopening on request at {}", p.display()),
                    None => "reopening on request".to_string(),
                };
                Some(self.reopen(why))
            }
            Command::Reconfigure { source } => {
                self.reconfigured(source);
                Some(self.reopen("reopening with the new configuration".into()))
            }
            Command::AdapterGone => {
                // The link hangs up on its own when the adapter is really gone.
                self.forget_node();
                None
            }
            other => {
                self.handle_common(other, Some(on));
                None
            }
        }
    }

    /// Whether the link now open is `node` (compared as canonical paths: the status names it
    /// `/dev/lab/b1 -> /dev/ttyUSB3`). An old instance of the same node name cannot be told
    /// apart here, but that instance hung up when it went away, so the link is already lost.
    fn is_open_on(&self, node: &std::path::Path) -> bool {
        let opened = self.status.borrow().opened.clone();
        opened_is(opened.as_deref(), node)
    }

    /// Drops the link on purpose and reopens at once.
    fn reopen(&mut self, why: String) -> Next {
        self.journal.marker(&format!("console closed: {why}"));
        self.metrics.online.set(0);
        self.status.send_modify(|s| {
            s.online = false;
            s.since = SystemTime::now();
        });
        self.broadcast(ConsoleEvent::Lost {
            reason: why.clone(),
        });
        let now = Instant::now();
        Next::Offline(Offline {
            lost_at: Some(now),
            started: now,
            attempt: 0,
            next_try: now,
            last_error: None,
        })
    }

    /// Applies the writer arbitration; returns the name to journal the input under.
    fn check_write(&self, from: &ClientId, how: &WriteAs) -> Result<String, ConsoleError> {
        match (&self.lease, how) {
            (Some((id, _)), WriteAs::Lease(l)) if id == l => Ok(from.0.clone()),
            (_, WriteAs::Lease(_)) => Err(ConsoleError::LeaseLost {
                device: self.device.clone(),
            }),
            (Some((_, holder)), WriteAs::Client { force: false }) => Err(ConsoleError::HeldByJob {
                device: self.device.clone(),
                holder: holder.clone(),
            }),
            (Some(_), WriteAs::Client { force: true }) => Ok(format!("{}(forced)", from.0)),
            (None, WriteAs::Client { .. }) => Ok(from.0.clone()),
        }
    }

    /// Commands that do not depend on the link; `on` is `None` while offline.
    pub(super) fn handle_common(&mut self, cmd: Command, on: Option<&mut Online>) {
        match cmd {
            Command::Subscribe { opts, reply } => {
                self.next_id += 1;
                let replay = if opts.replay > 0 {
                    self.scrollback.tail(opts.replay)
                } else {
                    Bytes::new()
                };
                let shared = SubShared::new(
                    self.next_id,
                    opts.name.clone(),
                    opts.queue_bytes.max(replay.len()),
                );
                if !replay.is_empty() {
                    shared.push_data(&replay);
                }
                if on.is_none() {
                    let reason = self
                        .status
                        .borrow()
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "not open yet".into());
                    shared.push_control(ConsoleEvent::Lost { reason });
                }
                tracing::debug!(client = %opts.name, "subscriber attached");
                self.subs.push(shared.clone());
                self.publish_clients();
                let _ = reply.send(Subscription::new(shared, self.cmd_tx.clone()));
            }
            Command::Unsubscribe { id } => {
                if let Some(s) = self.subs.iter().find(|s| s.id == id) {
                    tracing::debug!(client = %s.name, "subscriber detached");
                }
                let before = self.subs.len();
                self.subs.retain(|s| s.id != id && !s.is_gone());
                if self.subs.len() != before {
                    self.publish_clients();
                }
            }
            Command::Input { reply, .. } | Command::Break { reply, .. } => {
                let _ = reply.send(Err(ConsoleError::Offline {
                    device: self.device.clone(),
                }));
            }
            Command::Acquire { owner, reply } => {
                let r = match &self.lease {
                    Some((_, holder)) => Err(ConsoleError::LeaseHeld {
                        device: self.device.clone(),
                        holder: holder.clone(),
                    }),
                    None => {
                        self.next_id += 1;
                        let id = self.next_id;
                        self.journal
                            .marker(&format!("writer lease taken by {owner}"));
                        tracing::info!(%owner, "console writer lease taken");
                        self.status
                            .send_modify(|s| s.writer = Some(owner.0.clone()));
                        self.lease = Some((id, owner));
                        Ok(id)
                    }
                };
                let _ = reply.send(r);
            }
            Command::Release { id } => {
                if let Some((held, owner)) = &self.lease {
                    if *held == id {
                        self.journal
                            .marker(&format!("writer lease released by {owner}"));
                        tracing::info!(%owner, "console writer lease released");
                        self.lease = None;
                        self.status.send_modify(|s| s.writer = None);
                    }
                }
            }
            Command::Scrollback { max, reply } => {
                let _ = reply.send(self.scrollback.tail(max));
            }
            Command::Note { text } => self.journal.marker(&text),
            // Handled by the online/offline loops.
            Command::Reopen { .. } | Command::Reconfigure { .. } | Command::AdapterGone => {}
        }
    }
}

/// Whether a link described by `opened` (`/dev/lab/b1 -> /dev/ttyUSB3`, or the node itself)
/// is `node` once both are canonical.
pub(crate) fn opened_is(opened: Option<&str>, node: &std::path::Path) -> bool {
    let Some(real) = opened.and_then(|o| o.rsplit(" -> ").next()) else {
        return false;
    };
    let node = std::fs::canonicalize(node).unwrap_or_else(|_| node.to_path_buf());
    std::path::Path::new(real) == node
}
