//! Splitting a Multi-Node submission into its sub-jobs, the way lava-server 2023.01 does it
//! (`split_multinode_yaml` in `lava_scheduler_app/utils.py`) when a user submits
//! `protocols: lava-multinode: roles: {name: {count, device_type, tags, ...}}` with actions
//! marked `role: [...]`.
//!
//! The sub-jobs are shaped exactly like the server's, so a sub-job labd runs is the job a LAVA
//! worker would have received (`tests/multinode_split.rs` compares with the real function):
//!
//! - top level: `actions` (only the role's, `role:` replaced by the role name), then those of
//!   `job_name timeouts priority visibility notify metadata reboot_to_fastboot` the submission
//!   has (other top-level keys are dropped), then the role's `device_type connection host_role
//!   context`, then `protocols`;
//! - `protocols: lava-multinode:` holds `target_group role group_size sub_id`, every other key
//!   of the role (`tags`, `timeout`, `essential`, `is_slave`, `expect_role`, `request`...), then
//!   every key of the submission's `lava-multinode` block but `roles`/`role` (so a block-level
//!   `timeout` wins over a role's);
//! - `sub_id` counts 0.. over all sub-jobs in role order; `group_size` is the sum of counts;
//! - `lava-lxc: {role: ...}` and `lava-vland: {role: ...}` are handed to each role's sub-jobs.
//!
//! The quirks kept on purpose, because a submission that works on a LAVA server must split the
//! same here: an action whose `role:` is a string matches by substring (Python's `in`); the
//! host role of `host_role` must have count 1; a role with a count but no action fails.
//! Where Python would crash with a TypeError/KeyError, labd says what is wrong instead.
//!
//! The `roles: {job id: role}` map is added later by [`assign_roles`], once the sub-jobs have
//! ids (lava-server does it when the whole group is scheduled).

use serde_norway::{Mapping, Value};

use super::GroupError;

/// Top-level keys copied into every sub-job, in the order they are written.
const COPIES: [&str; 7] = [
    "job_name",
    "timeouts",
    "priority",
    "visibility",
    "notify",
    "metadata",
    "reboot_to_fastboot",
];
/// Largest group labd splits (a typo'd count must not make millions of sub-jobs).
pub const MAX_GROUP_SIZE: u32 = 1024;
/// Role keys that stay at the top level of the sub-job (they choose the device).
const SCHEDULING: [&str; 4] = ["device_type", "connection", "host_role", "context"];

/// One sub-job of a split group.
#[derive(Debug, Clone, PartialEq)]
pub struct SubJob {
    pub role: String,
    /// Position in the group (0..group_size), as the server numbers them.
    pub sub_id: u32,
    /// The sub-job definition, as lava-server stores it before `roles` is filled in.
    pub definition: Mapping,
}

impl SubJob {
    /// `protocols: lava-multinode:` of this sub-job.
    pub fn multinode(&self) -> Option<&Mapping> {
        self.definition
            .get("protocols")?
            .get("lava-multinode")?
            .as_mapping()
    }

    /// The sub-job as YAML text (what `labd run-job` hands the runner).
    pub fn to_yaml(&self) -> Result<String, GroupError> {
        serde_norway::to_string(&self.definition).map_err(|e| GroupError::Submission {
            message: format!("cannot write the sub-job of role {}: {e}", self.role),
        })
    }
}

impl SubJob {
    /// The sub-job as YAML for labd's job runner: `is_slave` (a labd extension that LAVA 2023's
    /// job schema does not have) is left out, the runner's Multi-Node hook is told instead;
    /// each action's `role: name` becomes `role: [name]` (the job model accepts both; the
    /// list is the submission's form).
    pub fn runner_yaml(&self) -> Result<String, GroupError> {
        let mut job = self.clone();
        if let Some(Value::Sequence(actions)) = job.definition.get_mut("actions") {
            for action in actions.iter_mut() {
                if let Value::Mapping(a) = action {
                    for (_, body) in a.iter_mut() {
                        if let Value::Mapping(b) = body
                            && let Some(r @ Value::String(_)) = b.get_mut("role")
                        {
                            *r = Value::Sequence(vec![r.clone()]);
                        }
                    }
                }
            }
        }
        if let Some(Value::Mapping(p)) = job.definition.get_mut("protocols")
            && let Some(Value::Mapping(m)) = p.get_mut("lava-multinode")
        {
            m.shift_remove("is_slave");
        }
        job.to_yaml()
    }
}

/// Parses submission text (YAML) for [`split`].
pub fn parse_submission(text: &str) -> Result<Value, GroupError> {
    serde_norway::from_str(text).map_err(|e| GroupError::Submission {
        message: format!("not valid YAML: {e}"),
    })
}

/// True when the submission is a Multi-Node job as a user writes it (roles with requests,
/// no `target_group` yet).
pub fn is_multinode_submission(submission: &Value) -> bool {
    let Some(block) = submission
        .get("protocols")
        .and_then(|p| p.get("lava-multinode"))
    else {
        return false;
    };
    block.get("target_group").is_none()
        && block
            .get("roles")
            .and_then(Value::as_mapping)
            .is_some_and(|roles| roles.values().any(Value::is_mapping))
}

fn bad(message: impl Into<String>) -> GroupError {
    GroupError::Submission {
        message: message.into(),
    }
}

fn key(s: &str) -> Value {
    Value::String(s.to_string())
}

/// The role names with their requests, in submission order.
pub(super) fn roles_of(submission: &Value) -> Result<Vec<(String, &Mapping)>, GroupError> {
    let roles = submission
        .get("protocols")
        .and_then(|p| p.get("lava-multinode"))
        .and_then(|m| m.get("roles"))
        .ok_or_else(|| bad("no protocols: lava-multinode: roles:"))?
        .as_mapping()
        .ok_or_else(|| bad("protocols: lava-multinode: roles: must be a mapping of role names"))?;
    roles
        .iter()
        .map(|(name, request)| {
            let name = name
                .as_str()
                .ok_or_else(|| bad(format!("role name {name:?} is not a string")))?;
            let request = request.as_mapping().ok_or_else(|| {
                bad(format!(
                    "role {name}: expected a mapping (count, device_type, ...)"
                ))
            })?;
            Ok((name.to_string(), request))
        })
        .collect()
}

/// The role's `count`.
pub(super) fn count_of(role: &str, request: &Mapping) -> Result<u32, GroupError> {
    let value = request
        .get("count")
        .ok_or_else(|| bad(format!("role {role}: no count")))?;
    value
        .as_u64()
        .and_then(|c| u32::try_from(c).ok())
        .ok_or_else(|| {
            bad(format!(
                "role {role}: count must be a non-negative integer, not {value:?}"
            ))
        })
}

/// Python's `role in value["role"]` for the values a YAML action can hold.
fn action_has_role(role: &str, roles: &Value, action: &str) -> Result<bool, GroupError> {
    match roles {
        Value::Sequence(list) => Ok(list.iter().any(|r| r.as_str() == Some(role))),
        // Python: substring test.
        Value::String(s) => Ok(s.contains(role)),
        Value::Mapping(m) => Ok(m.contains_key(role)),
        Value::Tagged(t) => action_has_role(role, &t.value, action),
        other => Err(bad(format!(
            "action '{action}': role must be a list of role names, not {other:?}"
        ))),
    }
}

/// Splits a Multi-Node submission into its sub-jobs, in `sub_id` order.
pub fn split(submission: &Value, target_group: &str) -> Result<Vec<SubJob>, GroupError> {
    let top = submission
        .as_mapping()
        .ok_or_else(|| bad("the job definition must be a mapping"))?;
    let block = submission
        .get("protocols")
        .and_then(|p| p.get("lava-multinode"))
        .and_then(Value::as_mapping)
        .ok_or_else(|| bad("no protocols: lava-multinode:"))?;
    let roles = roles_of(submission)?;
    let mut counts = Vec::with_capacity(roles.len());
    for (name, request) in &roles {
        counts.push(count_of(name, request)?);
    }
    let group_size: u64 = counts.iter().map(|c| u64::from(*c)).sum();
    let group_size = u32::try_from(group_size)
        .ok()
        .filter(|n| *n <= MAX_GROUP_SIZE)
        .ok_or_else(|| {
            bad(format!(
                "group of {group_size} sub-jobs; at most {MAX_GROUP_SIZE}"
            ))
        })?;

    // Per role: the top-level keys and the protocol parameters (sub_id filled in below).
    let mut templates = Vec::with_capacity(roles.len());
    for (name, request) in &roles {
        let mut job = Mapping::new();
        for item in COPIES {
            if let Some(v) = top.get(item) {
                job.insert(key(item), v.clone());
            }
        }
        for item in SCHEDULING {
            if let Some(v) = request.get(item) {
                job.insert(key(item), v.clone());
            }
        }
        let mut params = Mapping::new();
        params.insert(key("target_group"), key(target_group));
        params.insert(key("role"), key(name));
        params.insert(key("group_size"), Value::from(group_size));
        params.insert(key("sub_id"), Value::from(0u32));
        // lava-server inserts `essential` first (then overwrites its value with the role's).
        if let Some(e) = request.get("essential") {
            params.insert(key("essential"), e.clone());
        }
        for (k, v) in request.iter() {
            let skip =
                k.as_str() == Some("count") || k.as_str().is_some_and(|k| SCHEDULING.contains(&k));
            if !skip {
                params.insert(k.clone(), v.clone());
            }
        }
        for (k, v) in block {
            if !matches!(k.as_str(), Some("role" | "roles")) {
                params.insert(k.clone(), v.clone());
            }
        }
        templates.push((job, params));
    }

    // Each role's actions, in submission order, with `role:` narrowed to the role.
    let actions = top
        .get("actions")
        .ok_or_else(|| bad("no actions"))?
        .as_sequence()
        .ok_or_else(|| bad("actions: must be a list"))?;
    let mut role_actions: Vec<Option<Vec<Value>>> = vec![None; roles.len()];
    for (i, (name, _)) in roles.iter().enumerate() {
        for action in actions {
            let entries = action
                .as_mapping()
                .ok_or_else(|| bad(format!("action {action:?} is not a mapping")))?;
            let first = entries
                .keys()
                .next()
                .map(|k| {
                    k.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("{k:?}"))
                })
                .unwrap_or_default();
            for (k, v) in entries {
                let Some(wanted) = v.as_mapping().and_then(|m| m.get("role")) else {
                    return Err(bad(format!(
                        "Invalid YAML - Did not find a role in action '{first}', check for consistent use of whitespace indents."
                    )));
                };
                if action_has_role(name, wanted, &first)? {
                    let mut body = v.as_mapping().cloned().unwrap_or_default();
                    body.insert(key("role"), key(name));
                    let mut one = Mapping::new();
                    one.insert(k.clone(), Value::Mapping(body));
                    role_actions[i]
                        .get_or_insert_with(Vec::new)
                        .push(Value::Mapping(one));
                }
            }
        }
    }

    // The role named by a `host_role` (the last one written) runs exactly one sub-job.
    let host = roles
        .iter()
        .filter_map(|(_, r)| r.get("host_role"))
        .next_back();
    if let Some(host) = host {
        for ((name, _), count) in roles.iter().zip(&counts) {
            if host.as_str() == Some(name.as_str()) && *count != 1 {
                return Err(bad(
                    "The count for a role designated as a host_role must be 1.",
                ));
            }
        }
    }

    let mut jobs = Vec::with_capacity(group_size as usize);
    let mut sub_id = 0u32;
    for (i, (name, _)) in roles.iter().enumerate() {
        if counts[i] == 0 {
            continue;
        }
        let Some(acts) = &role_actions[i] else {
            return Err(bad(format!("role {name} has no actions")));
        };
        for _ in 0..counts[i] {
            let (template, params) = &templates[i];
            let mut definition = Mapping::new();
            definition.insert(key("actions"), Value::Sequence(acts.clone()));
            for (k, v) in template {
                definition.insert(k.clone(), v.clone());
            }
            let mut params = params.clone();
            params.insert(key("sub_id"), Value::from(sub_id));
            let mut protocols = Mapping::new();
            protocols.insert(key("lava-multinode"), Value::Mapping(params));
            definition.insert(key("protocols"), Value::Mapping(protocols));
            jobs.push(SubJob {
                role: name.clone(),
                sub_id,
                definition,
            });
            sub_id += 1;
        }
    }
    add_role_protocols(submission, &roles, &mut jobs)?;
    Ok(jobs)
}

/// `lava-vland` and `lava-lxc` are given per role.
fn add_role_protocols(
    submission: &Value,
    roles: &[(String, &Mapping)],
    jobs: &mut [SubJob],
) -> Result<(), GroupError> {
    let protocols = submission.get("protocols");
    if let Some(vland) = protocols.and_then(|p| p.get("lava-vland")) {
        for (name, _) in roles {
            let mine: Vec<usize> = (0..jobs.len()).filter(|i| jobs[*i].role == *name).collect();
            if mine.len() != 1 {
                return Err(bad("vland protocol only supports one device per role."));
            }
            let v = vland
                .get(name.as_str())
                .ok_or_else(|| bad(format!("lava-vland: no entry for role {name}")))?;
            insert_protocol(&mut jobs[mine[0]], "lava-vland", v.clone());
        }
    }
    if let Some(lxc) = protocols.and_then(|p| p.get("lava-lxc")) {
        for job in jobs.iter_mut() {
            if let Some(v) = lxc.get(job.role.as_str()).cloned() {
                insert_protocol(job, "lava-lxc", v);
            }
        }
    }
    Ok(())
}

fn insert_protocol(job: &mut SubJob, name: &str, value: Value) {
    if let Some(Value::Mapping(p)) = job.definition.get_mut("protocols") {
        p.insert(key(name), value);
    }
}

/// Gives every sub-job the group's `roles: {job id: role}` map (lava-server does this when the
/// whole group is scheduled). `ids[i]` is the id of `jobs[i]`, its coordinator client name.
/// Roles with a secondary `connection` (no device) are left out of the map, as the server does.
pub fn assign_roles(jobs: &mut [SubJob], ids: &[String]) {
    let mut map = Mapping::new();
    for (job, id) in jobs.iter().zip(ids) {
        if job.definition.get("connection").is_none() {
            map.insert(key(id), key(&job.role));
        }
    }
    for job in jobs.iter_mut() {
        if let Some(Value::Mapping(p)) = job.definition.get_mut("protocols")
            && let Some(Value::Mapping(m)) = p.get_mut("lava-multinode")
        {
            m.insert(key("roles"), Value::Mapping(map.clone()));
        }
    }
}
