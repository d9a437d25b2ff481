//! The coordinator's group state and request dispatch: `LavaCoordinator.dataReceived` and
//! `_updateData` of lava-coordinator 2023.01, ported line by line on Python-like values so
//! every reply (and every quirk) is the same for the same sequence of requests.
//!
//! Where lava-coordinator raises an exception and dies (a missing `group_name`, a new client
//! without `hostname`/`role`, an unknown `waitrole`, `lava_send` after `lava_sync` on the same
//! ID...), labd answers `nack`, logs the error and leaves the state as it was before that step.
//! Every check that can fail runs before the step mutates anything, so a refused request never
//! leaves half an update behind. Nothing here does I/O or looks at the clock: replaying the
//! same requests (the journal, see `store.rs`) rebuilds the same state.

use indexmap::IndexMap;
use tracing::{debug, error, info};

use super::LOG_TARGET as T;
use crate::multinode::protocol::Reply;
use crate::multinode::pyjson::{Dict, Key, KeyError, Value, py_repr, py_str};

/// lava-coordinator's `rpc_delay`: extra `wait`s given to sub_id 0 in `aggregate`.
const RPC_DELAY: i64 = 2;

/// What lava-coordinator would have raised; labd replies `nack` instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crash(pub String);

impl Crash {
    pub(super) fn key(name: &str) -> Self {
        Crash(format!("KeyError: {name}"))
    }

    pub(super) fn from_key_error(e: KeyError, what: &str) -> Self {
        match e {
            KeyError::Unhashable => Crash(format!("TypeError: unhashable {what}")),
            KeyError::Unsupported => Crash(format!("{what}: {e}")),
        }
    }
}

/// The result of one request.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The reply to send; `None` closes the connection without one (`complete`).
    pub reply: Option<Reply>,
    /// The group whose state this request changed (it must be journaled), if any.
    pub changed: Option<Key>,
    /// The request deleted that group (the last `clear_group`).
    pub deleted: bool,
    /// lava-coordinator would have died on this request.
    pub crash: Option<Crash>,
}

impl Outcome {
    fn reply(r: Reply) -> Self {
        Outcome {
            reply: Some(r),
            changed: None,
            deleted: false,
            crash: None,
        }
    }
}

/// One group (`LavaCoordinator._clear_group`'s template).
#[derive(Debug, Clone)]
pub(super) struct Group {
    /// `group`: the group name as first sent.
    pub name: Value,
    pub count: i128,
    pub complete: i64,
    pub rpc_delay: i64,
    /// client_name → hostname.
    pub clients: Dict,
    /// role → client names, in registration order.
    pub roles: IndexMap<Key, Vec<Key>>,
    /// messageID → client → 1 (waiting) / 0 (picked up).
    pub syncs: IndexMap<Key, IndexMap<Key, u8>>,
    /// client → messageID → what that client receives.
    pub messages: IndexMap<Key, Dict>,
    /// messageID → {client: {}, ..., "data": {sender: message}}.
    pub waits: IndexMap<Key, Dict>,
    pub bundles: Dict,
}

/// The state of every group: lava-coordinator's `all_groups`.
#[derive(Debug, Default)]
pub struct Coordinator {
    pub(super) groups: IndexMap<Key, Group>,
    /// New groups are refused (nack) beyond this many; lava-coordinator has no limit.
    max_groups: Option<usize>,
}

/// The request fields the handlers share.
pub(super) struct Ctx<'a> {
    pub req: &'a Dict,
    pub client_name: &'a Value,
    pub ckey: Key,
    pub gkey: Key,
}

impl Coordinator {
    pub fn new(max_groups: Option<usize>) -> Self {
        Self {
            groups: IndexMap::new(),
            max_groups,
        }
    }

    /// Number of live groups.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Names of the live groups (for status and tests).
    pub fn group_names(&self) -> Vec<String> {
        self.groups.values().map(|g| py_str(&g.name)).collect()
    }

    /// `dataReceived(json_data)`.
    pub fn handle(&mut self, data: &Value) -> Outcome {
        let Value::Dict(req) = data else {
            // Python evaluates `"request" in json_data` then `json_data["request"]`: a list
            // or string containing "request" raises TypeError, and so does any scalar.
            let raises = match data {
                Value::List(items) => items.iter().any(|i| i.as_str() == Some("request")),
                Value::Str(s) => s.contains("request"),
                _ => true,
            };
            if raises {
                return crashed(
                    Crash("TypeError: the request is not a JSON object".into()),
                    None,
                );
            }
            debug!(target: T, "bad data={}", crate::multinode::pyjson::dumps(data));
            return Outcome::reply(Reply::Nack);
        };
        let Some(request) = req.get_str("request") else {
            debug!(target: T, "bad data={}", crate::multinode::pyjson::dumps(data));
            return Outcome::reply(Reply::Nack);
        };
        let reg = match self.update_data(req) {
            Ok(r) => r,
            Err(crash) => return crashed(crash, None),
        };
        let Some((ckey, gkey, registered)) = reg else {
            info!(target: T, "no client_name or group found");
            return Outcome::reply(Reply::Nack);
        };
        let changed = registered.then(|| gkey.clone());
        let Some(client_name) = req.get_str("client_name") else {
            return Outcome::reply(Reply::Nack); // update_data returned a client, so unreachable
        };
        let group_truthy = self.groups.get(&gkey).is_some_and(|g| g.name.truthy());
        if !client_name.truthy() || !group_truthy {
            info!(target: T, "no client_name or group found");
            let mut o = Outcome::reply(Reply::Nack);
            o.changed = changed;
            return o;
        }
        let ctx = Ctx {
            req,
            client_name,
            ckey,
            gkey: gkey.clone(),
        };
        let result = match request.as_str() {
            Some("group_data") => Ok(self.set_group_data(&ctx)),
            Some("clear_group") => Ok(self.clear_group_data(&ctx)),
            Some("aggregate") => {
                debug!(target: T, "Aggregate called");
                self.aggregate_bundle(&ctx)
            }
            Some("lava_sync") => {
                debug!(target: T,
                    "lava_sync: {} request made by '{}' in group '{}'",
                    crate::multinode::pyjson::dumps(data), py_str(client_name), self.gname(&gkey));
                self.lava_sync(&ctx)
            }
            Some("lava_wait_all") => {
                debug!(target: T, "lava_wait_all: {}", py_repr(data));
                self.lava_wait_all(&ctx)
            }
            Some("lava_wait") => {
                debug!(target: T, "lava_wait: {}", py_repr(data));
                self.lava_wait(&ctx)
            }
            Some("lava_send") => {
                info!(target: T, "lava_send: {}", py_repr(data));
                self.lava_send(&ctx)
            }
            Some("complete") => {
                info!(target: T,
                    "coordinator communication for '{}' in group '{}' is complete, closing.",
                    py_str(client_name), self.gname(&gkey));
                Ok(Step::close())
            }
            _ => {
                error!(target: T, "Unrecognised request {}. Closed connection.", py_repr(data));
                Ok(Step::reply(Reply::Nack))
            }
        };
        match result {
            Ok(step) => Outcome {
                reply: step.reply,
                changed: if step.changed { Some(gkey) } else { changed },
                deleted: step.deleted,
                crash: None,
            },
            Err(crash) => crashed(crash, changed),
        }
    }

    /// The group's name for log lines.
    pub(super) fn gname(&self, gkey: &Key) -> String {
        self.groups
            .get(gkey)
            .map(|g| py_str(&g.name))
            .unwrap_or_default()
    }

    /// `_updateData`: find or create the group, register the client. `Ok(None)` is lava's
    /// `return None` (reply nack); `Ok(Some((client, group, changed)))` otherwise.
    fn update_data(&mut self, req: &Dict) -> Result<Option<(Key, Key, bool)>, Crash> {
        let Some(client_name) = req.get_str("client_name") else {
            error!(target: T, "Missing client_name in request: {}", repr_dict(req));
            return Ok(None);
        };
        let group_name = req
            .get_str("group_name")
            .ok_or_else(|| Crash::key("'group_name'"))?;
        let gkey = Key::try_from(group_name).map_err(|e| Crash::from_key_error(e, "group_name"))?;
        let new_count = if self.groups.contains_key(&gkey) {
            None
        } else {
            let size = req.get_str("group_size").filter(|s| !s.eq_zero());
            let Some(size) = size else {
                error!(target: T,
                    "{} asked for a new group {} without specifying the size of the group",
                    py_str(client_name), py_str(group_name));
                return Ok(None);
            };
            let count = size
                .py_int()
                .ok_or_else(|| Crash(format!("ValueError: int({})", py_repr(size))))?;
            if self.max_groups.is_some_and(|m| self.groups.len() >= m) {
                error!(target: T, "Refusing new group {}: {} groups exist already",
                    py_str(group_name), self.groups.len());
                return Ok(None);
            }
            Some(count)
        };
        let ckey =
            Key::try_from(client_name).map_err(|e| Crash::from_key_error(e, "client_name"))?;
        let known = self
            .groups
            .get(&gkey)
            .is_some_and(|g| g.clients.contains(&ckey));
        // A new client needs `hostname` and a hashable `role`: check before creating anything.
        let new_client = if known {
            None
        } else {
            let hostname = req
                .get_str("hostname")
                .ok_or_else(|| Crash::key("'hostname'"))?;
            let role = req.get_str("role").ok_or_else(|| Crash::key("'role'"))?;
            let rkey = Key::try_from(role).map_err(|e| Crash::from_key_error(e, "role"))?;
            Some((hostname.clone(), rkey))
        };
        if let Some(count) = new_count {
            self.groups
                .insert(gkey.clone(), Group::new(group_name.clone(), count));
            info!(target: T, "The {} group will contain {} nodes.", py_str(group_name), count);
        }
        let Some(group) = self.groups.get_mut(&gkey) else {
            return Ok(None);
        };
        if let Some((hostname, rkey)) = &new_client {
            group.clients.insert(ckey.clone(), hostname.clone());
            group
                .roles
                .entry(rkey.clone())
                .or_default()
                .push(ckey.clone());
        }
        Ok(Some((
            ckey,
            gkey,
            new_count.is_some() || new_client.is_some(),
        )))
    }

    /// `_setGroupData`: `wait` until every client has registered, then the roles.
    fn set_group_data(&mut self, ctx: &Ctx) -> Step {
        let Some(g) = self.groups.get(&ctx.gkey) else {
            return Step::reply(Reply::Nack);
        };
        let have = g.clients.len() as i128;
        if have != g.count {
            info!(target: T, "Waiting for {} more clients to connect to {} group",
                g.count - have, group_arg(ctx));
            return Step::reply(Reply::Wait);
        }
        info!(target: T, "Group complete, starting tests");
        let mut roles = Dict::new();
        for (role, clients) in &g.roles {
            for client in clients {
                roles.insert(client.clone(), role.to_value());
            }
        }
        Step::reply(Reply::GroupData(roles))
    }

    /// `_clearGroupData`: count finished clients; delete the group after the last.
    fn clear_group_data(&mut self, ctx: &Ctx) -> Step {
        let Some(g) = self.groups.get_mut(&ctx.gkey) else {
            return Step::reply(Reply::Nack);
        };
        g.complete += 1;
        debug!(target: T, "clear Group Data: {} of {}", g.complete, g.clients.len());
        let mut step = Step::reply(Reply::Ack(None));
        step.changed = true;
        if (g.clients.len() as i64) > g.complete {
            return step;
        }
        debug!(target: T, "Clearing group data for {}",
            group_arg(ctx));
        self.groups.shift_remove(&ctx.gkey);
        step.deleted = true;
        step
    }

    /// `_aggregateBundle` (V1 result bundles; kept for completeness).
    fn aggregate_bundle(&mut self, ctx: &Ctx) -> Result<Step, Crash> {
        let Some(bundle) = ctx.req.get_str("bundle") else {
            debug!(target: T, "Aggregate called without a bundle in the JSON");
            return Ok(Step::reply(Reply::Nack));
        };
        let sub_id = match ctx.req.get_str("sub_id") {
            None | Some(Value::Null) => {
                debug!(target: T, "Aggregation called without a valid sub_id in the JSON");
                return Ok(Step::reply(Reply::Nack));
            }
            Some(Value::Str(s)) => s.clone(),
            Some(other) => {
                return Err(Crash(format!(
                    "AttributeError: {} has no attribute 'endswith'",
                    py_repr(other)
                )));
            }
        };
        let Some(g) = self.groups.get_mut(&ctx.gkey) else {
            return Ok(Step::reply(Reply::Nack));
        };
        g.bundles.insert(ctx.ckey.clone(), bundle.clone());
        let mut step = if sub_id.ends_with(".0") {
            info!(target: T, "len:{} count:{}", g.bundles.len(), g.count);
            if (g.bundles.len() as i128) < g.count {
                info!(target: T, "Waiting for the rest of the group to complete the job.");
                g.rpc_delay = RPC_DELAY;
                Step::reply(Reply::Wait)
            } else if g.rpc_delay > 0 {
                debug!(target: T, "Asking sub_id zero to pause while a pending XMLRPC call is made.");
                g.rpc_delay -= 1;
                Step::reply(Reply::Wait)
            } else {
                debug!(target: T, "Sending bundle list to sub_id zero");
                let msg: Dict = [(Key::from("bundle"), Value::Dict(g.bundles.clone()))]
                    .into_iter()
                    .collect();
                g.rpc_delay = RPC_DELAY;
                Step::reply(Reply::Ack(Some(Value::Dict(msg))))
            }
        } else {
            debug!(target: T, "not sub_id zero");
            Step::reply(Reply::Ack(None))
        };
        step.changed = true;
        Ok(step)
    }
}

impl Group {
    fn new(name: Value, count: i128) -> Self {
        Group {
            name,
            count,
            complete: 0,
            rpc_delay: RPC_DELAY,
            clients: Dict::new(),
            roles: IndexMap::new(),
            syncs: IndexMap::new(),
            messages: IndexMap::new(),
            waits: IndexMap::new(),
            bundles: Dict::new(),
        }
    }
}

/// What one handler did.
pub(super) struct Step {
    pub reply: Option<Reply>,
    pub changed: bool,
    pub deleted: bool,
}

impl Step {
    pub fn reply(r: Reply) -> Self {
        Step {
            reply: Some(r),
            changed: false,
            deleted: false,
        }
    }

    fn close() -> Self {
        Step {
            reply: None,
            changed: false,
            deleted: false,
        }
    }
}

fn crashed(crash: Crash, changed: Option<Key>) -> Outcome {
    error!(target: T,
        "lava-coordinator would stop here ({}); replying nack instead", crash.0);
    Outcome {
        reply: Some(Reply::Nack),
        changed,
        deleted: false,
        crash: Some(crash),
    }
}

fn repr_dict(d: &Dict) -> String {
    py_repr(&Value::Dict(d.clone()))
}

/// `json_data["group_name"]` for log lines.
fn group_arg(ctx: &Ctx) -> String {
    ctx.req
        .get_str("group_name")
        .map(py_str)
        .unwrap_or_default()
}

impl Coordinator {
    /// Every group's full state, in order, as one line per group (tests compare a live
    /// coordinator with one rebuilt from its journal).
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for (k, g) in &self.groups {
            let roles: Dict = g
                .roles
                .iter()
                .map(|(r, cs)| {
                    (
                        r.clone(),
                        Value::List(cs.iter().map(Key::to_value).collect()),
                    )
                })
                .collect();
            let syncs: Dict = g
                .syncs
                .iter()
                .map(|(m, s)| {
                    let d: Dict = s
                        .iter()
                        .map(|(c, v)| (c.clone(), Value::Int(i64::from(*v))))
                        .collect();
                    (m.clone(), Value::Dict(d))
                })
                .collect();
            let nested = |m: &IndexMap<Key, Dict>| -> Dict {
                m.iter()
                    .map(|(a, d)| (a.clone(), Value::Dict(d.clone())))
                    .collect()
            };
            let fields = crate::multinode::pyjson::dict([
                ("group", g.name.clone()),
                (
                    "count",
                    Value::Int(g.count.clamp(i64::MIN as i128, i64::MAX as i128) as i64),
                ),
                ("complete", Value::Int(g.complete)),
                ("rpc_delay", Value::Int(g.rpc_delay)),
                ("clients", Value::Dict(g.clients.clone())),
                ("roles", Value::Dict(roles)),
                ("syncs", Value::Dict(syncs)),
                ("messages", Value::Dict(nested(&g.messages))),
                ("waits", Value::Dict(nested(&g.waits))),
                ("bundles", Value::Dict(g.bundles.clone())),
            ]);
            out.push_str(&py_repr(&k.to_value()));
            out.push_str(" => ");
            out.push_str(&py_repr(&fields));
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
