//! The message handlers of lava-coordinator 2023.01 (`lavaSync`, `lavaWaitAll`, `lavaWait`,
//! `lavaSend`, `_sendMessage`, `_sendWaitMessage`), same order of checks, same replies.

use tracing::{debug, error, info};

use super::LOG_TARGET as T;
use super::state::{Coordinator, Crash, Ctx, Step};
use crate::multinode::protocol::Reply;
use crate::multinode::pyjson::{Dict, Key, Value, dumps, py_repr, py_str};

fn dumps_dict(d: &Dict) -> String {
    dumps(&Value::Dict(d.clone()))
}

fn repr_dict(d: &Dict) -> String {
    py_repr(&Value::Dict(d.clone()))
}

impl Coordinator {
    /// `_getMessageID`: the messageID, or `None` (Python None) with an error logged.
    fn message_id(ctx: &Ctx) -> Value {
        match ctx.req.get_str("messageID") {
            Some(v) => v.clone(),
            None => {
                error!(target: T, "No 'messageID' key found in request {} when looking for ID",
                    dumps_dict(ctx.req));
                Value::Null
            }
        }
    }

    /// `_getMessage`: the message, `{}` when absent or None.
    fn message(ctx: &Ctx) -> Value {
        match ctx.req.get_str("message") {
            None | Some(Value::Null) => Value::Dict(Dict::new()),
            Some(_) if !ctx.req.contains_str("messageID") => {
                error!(target: T,
                    "No 'messageID' key found in request {} when looking for message.",
                    dumps_dict(ctx.req));
                Value::Dict(Dict::new())
            }
            Some(m) => m.clone(),
        }
    }

    fn mkey(mid: &Value) -> Result<Key, Crash> {
        Key::try_from(mid).map_err(|e| Crash::from_key_error(e, "messageID"))
    }

    /// `_sendMessage`: what `messages[client][messageID]` holds, or nack.
    fn send_message(&self, ctx: &Ctx, mid: &Value, mkey: &Key) -> Step {
        let Some(g) = self.groups.get(&ctx.gkey) else {
            return Step::reply(Reply::Nack);
        };
        let Some(m) = g.messages.get(&ctx.ckey).and_then(|d| d.get(mkey)) else {
            error!(target: T, "Unable to find messageID {} for client {}",
                py_str(mid), py_str(ctx.client_name));
            return Step::reply(Reply::Nack);
        };
        info!(target: T, "Sending messageID '{}' to {} in group {}: {}",
            py_str(mid), py_str(ctx.client_name), py_str(&g.name), dumps(m));
        let reply = Reply::Ack(Some(m.clone()));
        info!(target: T, "Sending response to {} in group {}: {}",
            py_str(ctx.client_name), py_str(&g.name), reply.body());
        Step::reply(reply)
    }

    /// `_sendWaitMessage`: every sender's data for `messageID`, or nack.
    fn send_wait_message(&self, ctx: &Ctx, mid: &Value, mkey: &Key) -> Result<Step, Crash> {
        let Some(g) = self.groups.get(&ctx.gkey) else {
            return Ok(Step::reply(Reply::Nack));
        };
        let Some(w) = g.waits.get(mkey).filter(|w| w.contains(&ctx.ckey)) else {
            error!(target: T, "Unable to find messageID {} for client {}",
                py_str(mid), py_str(ctx.client_name));
            return Ok(Step::reply(Reply::Nack));
        };
        let data = w.get_str("data").ok_or_else(|| Crash::key("'data'"))?;
        info!(target: T, "Sending wait messageID '{}' to {} in group {}: {}",
            py_str(mid), py_str(ctx.client_name), py_str(&g.name), dumps(data));
        let reply = Reply::Ack(Some(data.clone()));
        info!(target: T, "Sending wait response to {} in group {}: {}",
            py_str(ctx.client_name), py_str(&g.name), reply.body());
        Ok(Step::reply(reply))
    }

    /// `lavaSync`: every client's first call waits; once `count` clients have arrived, each
    /// next poll is acked and marked picked up; when all have picked up, the ID is reusable.
    pub(super) fn lava_sync(&mut self, ctx: &Ctx) -> Result<Step, Crash> {
        let gname = self.gname(&ctx.gkey);
        debug!(target: T, "Coordinator:lavaSync {} from {} in group {}",
            dumps_dict(ctx.req), py_str(ctx.client_name), gname);
        let mid = Self::message_id(ctx);
        let mut message = Self::message(ctx);
        if !message.truthy() {
            message = mid.clone();
        }
        info!(target: T, "LavaSync request for '{}' at stage '{}' in group '{}'",
            py_str(ctx.client_name), py_str(&mid), gname);
        let mkey = Self::mkey(&mid)?;
        let Some(g) = self.groups.get_mut(&ctx.gkey) else {
            return Ok(Step::reply(Reply::Nack));
        };
        let mut changed = false;
        if !g.syncs.contains_key(&mkey) {
            g.syncs.insert(mkey.clone(), Default::default());
            changed = true;
        }
        let mine = g.messages.entry(ctx.ckey.clone()).or_default();
        if !mine.contains(&mkey) {
            mine.insert(mkey.clone(), Value::Dict(Dict::new()));
            changed = true;
        }
        let arrived = g.syncs.get(&mkey).map_or(0, |s| s.len()) as i128;
        let old = mine.get(&mkey).cloned().unwrap_or(Value::Null);
        changed |= !old.same(&message);
        mine.insert(mkey.clone(), message);
        if arrived < g.count {
            info!(target: T,
                "waiting for '{}': not all clients in group '{}' have been seen yet {} < {}",
                py_str(&mid), gname, arrived, g.count);
            let syncs = g.syncs.entry(mkey).or_default();
            changed |= syncs.insert(ctx.ckey.clone(), 1) != Some(1);
            let mut step = Step::reply(Reply::Wait);
            step.changed = changed;
            return Ok(step);
        }
        let mut step = self.send_message(ctx, &mid, &mkey);
        let Some(g) = self.groups.get_mut(&ctx.gkey) else {
            return Ok(step);
        };
        let syncs = g.syncs.entry(mkey).or_default();
        changed |= syncs.insert(ctx.ckey.clone(), 0) != Some(0);
        if syncs.values().all(|v| *v == 0) {
            debug!(target: T, "Clearing all sync messages for '{}' in group '{}'",
                py_str(&mid), gname);
            syncs.clear();
            changed = true;
        }
        step.changed = changed;
        Ok(step)
    }

    /// `lavaWaitAll`. Without `waitrole`: nack if nobody sent the ID, wait until every client
    /// has, then all senders' data. With `waitrole`, as in 2023.01: it iterates the clients of
    /// the *requester's* role and answers from `messages[client]` once the first client of
    /// `waitrole` has sent.
    pub(super) fn lava_wait_all(&mut self, ctx: &Ctx) -> Result<Step, Crash> {
        let mid = Self::message_id(ctx);
        let Some(g) = self.groups.get(&ctx.gkey) else {
            return Ok(Step::reply(Reply::Nack));
        };
        if let Some(waitrole) = ctx.req.get_str("waitrole") {
            let wr = Key::try_from(waitrole).map_err(|e| Crash::from_key_error(e, "waitrole"))?;
            let expected = g
                .roles
                .get(&wr)
                .ok_or_else(|| Crash::key(&py_repr(waitrole)))?
                .first()
                .ok_or_else(|| Crash("IndexError: list index out of range".into()))?;
            debug!(target: T, "lavaWaitAll waiting for role:{} from {}",
                py_str(waitrole), py_str(&expected.to_value()));
            let role = ctx
                .req
                .get_str("role")
                .ok_or_else(|| Crash::key("'role'"))?;
            let rkey = Key::try_from(role).map_err(|e| Crash::from_key_error(e, "role"))?;
            let same_role = g
                .roles
                .get(&rkey)
                .ok_or_else(|| Crash::key(&py_repr(role)))?;
            let mut mkey = None;
            for client in same_role {
                debug!(target: T, "checking {} for wait message", py_str(&client.to_value()));
                let mk = Self::mkey(&mid)?;
                let Some(w) = g.waits.get(&mk) else {
                    debug!(target: T, "messageID {} not yet seen", py_str(&mid));
                    return Ok(Step::reply(Reply::Wait));
                };
                if expected.truthy() && w.contains(expected) {
                    debug!(target: T, "Replying that {} has sent {}",
                        py_str(ctx.client_name), py_str(&mid));
                    return Ok(self.send_message(ctx, &mid, &mk));
                }
                if !w.contains(client) {
                    debug!(target: T, "FIXME: {} not in waits for {}: {}",
                        py_str(&client.to_value()), py_str(&mid), repr_dict(w));
                    return Ok(Step::reply(Reply::Wait));
                }
                if g.waits.contains_key(client) {
                    debug!(target: T, "Replying: {} for {}", py_str(&mid), py_str(ctx.client_name));
                }
                mkey = Some(mk);
            }
            let mkey = match mkey {
                Some(k) => k,
                None => Self::mkey(&mid)?,
            };
            if let Some(w) = g.waits.get(&ctx.ckey) {
                // Python evaluates this debug argument even when DEBUG is off, and raises
                // KeyError when the client's name is also a messageID without this key.
                let v = w.get(&mkey).ok_or_else(|| Crash::key(&py_repr(&mid)))?;
                debug!(target: T, "lavaWaitAll message: {}", dumps(v));
            }
            return self.send_wait_message(ctx, &mid, &mkey);
        }
        debug!(target: T, "lavaWaitAll: no role.");
        let mkey = Self::mkey(&mid)?;
        for client in g.clients.keys() {
            debug!(target: T, "checking {} for wait message", py_str(&client.to_value()));
            let Some(w) = g.waits.get(&mkey) else {
                return Ok(Step::reply(Reply::Nack));
            };
            if !w.contains(client) {
                debug!(target: T, "setting waiting for {}", py_str(&client.to_value()));
                return Ok(Step::reply(Reply::Wait));
            }
        }
        self.send_wait_message(ctx, &mid, &mkey)
    }

    /// `lavaWait`: the message for this client once anyone has sent the ID, else `wait`.
    pub(super) fn lava_wait(&mut self, ctx: &Ctx) -> Result<Step, Crash> {
        let mid = Self::message_id(ctx);
        let Some(g) = self.groups.get(&ctx.gkey) else {
            return Ok(Step::reply(Reply::Nack));
        };
        // Python short-circuits: an unhashable ID only raises when the client has messages.
        let seen = match g.messages.get(&ctx.ckey) {
            None => None,
            Some(mine) => {
                let mk = Self::mkey(&mid)?;
                mine.contains(&mk).then_some(mk)
            }
        };
        match seen {
            None => {
                debug!(target: T, "MessageID {} not yet seen for {}",
                    py_str(&mid), py_str(ctx.client_name));
                Ok(Step::reply(Reply::Wait))
            }
            Some(mk) => Ok(self.send_message(ctx, &mid, &mk)),
        }
    }

    /// `lavaSend`: `{sender: message}` merged into `messages[c][messageID]` for the sender and
    /// every client, and into `waits[messageID]["data"]`; the sender marked in `waits`.
    pub(super) fn lava_send(&mut self, ctx: &Ctx) -> Result<Step, Crash> {
        let message = Self::message(ctx);
        let mid = Self::message_id(ctx);
        let gname = self.gname(&ctx.gkey);
        info!(target: T,
            "lavaSend handler in Coordinator received a messageID '{}' for group '{}' from {}",
            py_str(&mid), gname, py_str(ctx.client_name));
        let mkey = Self::mkey(&mid)?;
        let Some(g) = self.groups.get_mut(&ctx.gkey) else {
            return Ok(Step::reply(Reply::Nack));
        };
        // `.update()` on a value that `lava_sync` replaced by a non-dict raises AttributeError
        // in Python: check every target before touching any.
        let targets: Vec<Key> = std::iter::once(ctx.ckey.clone())
            .chain(g.clients.keys().cloned())
            .collect();
        for c in &targets {
            if let Some(v) = g.messages.get(c).and_then(|d| d.get(&mkey))
                && !matches!(v, Value::Dict(_))
            {
                return Err(Crash(format!(
                    "AttributeError: {} object has no attribute 'update'",
                    py_repr(v)
                )));
            }
        }
        if let Some(Some(data)) = g.waits.get(&mkey).map(|w| w.get_str("data"))
            && !matches!(data, Value::Dict(_))
        {
            return Err(Crash("AttributeError: no attribute 'update'".into()));
        }
        let msg_hash: Dict = [(ctx.ckey.clone(), message)].into_iter().collect();
        for (n, c) in targets.iter().enumerate() {
            let entry = g
                .messages
                .entry(c.clone())
                .or_default()
                .setdefault(mkey.clone(), Value::Dict(Dict::new()));
            if let Value::Dict(d) = entry {
                d.update(&msg_hash);
            }
            debug!(target: T, "{} ID {} {} for {}",
                if n == 0 { "message" } else { "broadcast" }, py_str(&mid), dumps(entry),
                py_str(&c.to_value()));
        }
        let w = g.waits.entry(mkey).or_default();
        if !w.contains(&ctx.ckey) {
            w.insert(ctx.ckey.clone(), Value::Dict(Dict::new()));
        }
        if let Value::Dict(data) = w.setdefault(Key::from("data"), Value::Dict(Dict::new())) {
            data.update(&msg_hash);
        }
        let mut step = Step::reply(Reply::Ack(None));
        step.changed = true;
        Ok(step)
    }
}
