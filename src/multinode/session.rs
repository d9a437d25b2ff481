//! One job's Multi-Node life, as lava-dispatcher's `MultinodeProtocol` runs it: register the
//! group before the first action (`group_data`, then a delayed start or the slave handshake),
//! answer the DUT's console requests and an interactive test's `lava-send`/`lava-wait`...
//! steps, and clear the group at the end whatever happened.
//!
//! The job runner's `MultinodeProtocol` trait is a thin adapter over [`MultinodeSession`].
//!
//! Master/slave boot (`lava_ms_*`, LAVA V1's `is_slave`, revived): a slave board is booted by
//! another board of the group, not by labd. The slave's session sends `lava_ms_slave_data`
//! (what the master needs to boot it), waits for `lava_ms_ready`, answers `lava_ms_boot`; the
//! job then watches the console (a `boot` with `reset: false`). The master's test definition
//! does the other half with the ordinary helpers: `lava-wait lava_ms_slave_data`, prepare,
//! `lava-send lava_ms_ready`, `lava-wait lava_ms_boot`, boot the slave.

use std::collections::BTreeMap;
use std::time::Duration;

use super::client::{CoordinatorClient, NodeIdentity, Roles, message_from_pairs};
use super::config::ClientSettings;
use super::dut::{self, DutOutcome, DutRequest};
use super::error::CoordinatorError;
use super::pyjson::{Value, py_str};

/// The `lava_ms_*` message IDs.
pub const MS_SLAVE_DATA: &str = "lava_ms_slave_data";
pub const MS_READY: &str = "lava_ms_ready";
pub const MS_BOOT: &str = "lava_ms_boot";

/// Delayed start: wait for the first job of `expect_role` to send `lava_start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelayedStart {
    pub expect_role: String,
    /// The role's `timeout` (else LAVA's system timeout, 90 s).
    pub timeout: Option<Duration>,
}

/// What a job knows about its place in the group (its `protocols: lava-multinode:`).
#[derive(Debug, Clone)]
pub struct SessionParams {
    pub job_id: String,
    pub target_group: String,
    pub role: String,
    pub group_size: u32,
    /// This worker's host name (the coordinator's `hostname`).
    pub hostname: String,
    /// The protocol block's `timeout`: every API call (send, wait, sync).
    pub api_timeout: Option<Duration>,
    /// Registration and clear (LAVA: 90 s; a delayed start's `timeout` replaces it).
    pub system_timeout: Option<Duration>,
    pub delayed_start: Option<DelayedStart>,
    /// Set for a slave board: the `key=value` data the master gets in `lava_ms_slave_data`.
    pub slave_data: Option<Vec<(String, String)>>,
}

/// A job's Multi-Node session.
#[derive(Debug)]
pub struct MultinodeSession {
    client: CoordinatorClient,
    params: SessionParams,
    roles: Option<Roles>,
}

impl MultinodeSession {
    pub fn new(settings: ClientSettings, params: SessionParams) -> Self {
        let mut client = CoordinatorClient::new(
            settings,
            NodeIdentity {
                job_id: params.job_id.clone(),
                group: params.target_group.clone(),
                role: params.role.clone(),
                group_size: params.group_size,
                hostname: params.hostname.clone(),
            },
        );
        if let Some(t) = params.api_timeout {
            client.set_api_timeout(t);
        }
        if let Some(t) = params.system_timeout {
            client.set_system_timeout(t);
        }
        MultinodeSession {
            client,
            params,
            roles: None,
        }
    }

    pub fn client(&self) -> &CoordinatorClient {
        &self.client
    }

    pub fn params(&self) -> &SessionParams {
        &self.params
    }

    /// The group as the coordinator listed it at registration.
    pub fn roles(&self) -> Option<&Roles> {
        self.roles.as_ref()
    }

    /// Before the first action: registers and waits for the whole group (90 s), then waits
    /// for a delayed start, then runs a slave's half of the boot handshake.
    pub async fn set_up(&mut self) -> Result<(), CoordinatorError> {
        self.roles = Some(self.client.group_data().await?);
        if let Some(d) = &self.params.delayed_start {
            self.client
                .wait_for_start(&d.expect_role, d.timeout)
                .await?;
        }
        if let Some(data) = &self.params.slave_data {
            let msg = message_from_pairs(data.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            self.client.lava_send(MS_SLAVE_DATA, msg).await?;
            self.client.lava_wait(MS_READY).await?;
            self.client.lava_send(MS_BOOT, Default::default()).await?;
        }
        Ok(())
    }

    /// A console request (`<LAVA_MULTI_NODE> <LAVA_name params>`, the two regex groups):
    /// the coordinator call and the dispatcher's answer.
    pub async fn handle(&self, name: &str, params: &str) -> DutOutcome {
        let req = DutRequest::from_groups(name, params);
        dut::handle(&req, &self.client, "\n").await
    }

    /// An interactive test's step (`lava-send: "id k=v"`, `lava-wait: id`, `lava-wait-all:
    /// "id [role=R]"`, `lava-sync: id`), as lava-dispatcher's `run_script` does: returns the
    /// received `key: value` pairs (later senders win), for `{key}` substitutions.
    pub async fn interactive(
        &self,
        step: &str,
        argument: &str,
    ) -> Result<BTreeMap<String, String>, CoordinatorError> {
        let bad = |message: String| CoordinatorError::DutRequest {
            line: format!("{step}: {argument}"),
            message,
        };
        let parts: Vec<&str> = argument.split_whitespace().collect();
        match step {
            "lava-send" => {
                let Some(id) = parts.first() else {
                    return Err(bad("no messageID".into()));
                };
                let mut pairs = Vec::new();
                for p in &parts[1..] {
                    let (k, v) = p
                        .split_once('=')
                        .ok_or_else(|| bad(format!("'{p}' is not key=value")))?;
                    pairs.push((k, v));
                }
                self.client.lava_send(id, message_from_pairs(pairs)).await?;
                Ok(BTreeMap::new())
            }
            "lava-wait" => flatten(&self.client.lava_wait(argument.trim()).await?),
            "lava-wait-all" => {
                if !(1..=2).contains(&parts.len()) {
                    return Err(bad(format!(
                        "lava-wait-all expects 1 or 2 params, got: {parts:?}"
                    )));
                }
                let role = match parts.get(1) {
                    None => None,
                    Some(p) => match p.split_once('=') {
                        Some(("role", r)) => Some(r),
                        _ => {
                            return Err(bad(format!(
                                "lava-wait-all 2nd param must be role=<rolename>, got: {p}"
                            )));
                        }
                    },
                };
                flatten(&self.client.lava_wait_all(parts[0], role).await?)
            }
            "lava-sync" => {
                self.client.lava_sync(argument.trim()).await?;
                Ok(BTreeMap::new())
            }
            other => Err(bad(format!("unknown Multi-Node step {other}"))),
        }
    }

    /// After the last action, whatever the outcome: tells the coordinator this node is done.
    pub async fn finalise(&self) -> Result<(), CoordinatorError> {
        self.client.clear_group().await
    }
}

/// `{sender: {k: v}}` → `{k: v}` (lava-dispatcher's `multinode2subst`).
fn flatten(reply: &Value) -> Result<BTreeMap<String, String>, CoordinatorError> {
    let mut out = BTreeMap::new();
    let Value::Dict(senders) = reply else {
        return Ok(out);
    };
    for (_, data) in senders.iter() {
        if let Value::Dict(kv) = data {
            for (k, v) in kv.iter() {
                out.insert(py_str(&k.to_value()), py_str(v));
            }
        }
    }
    Ok(out)
}

/// The slave's handshake data parsed back on the master's side from a
/// `<LAVA_WAIT_COMPLETE id:k=v ...>` reply: `{sender: {k: v}}`.
pub fn parse_wait_complete(line: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let body = line
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .split_once(' ')
        .map(|(_, rest)| rest)
        .unwrap_or("");
    for item in body.split_whitespace() {
        if let Some((sender, kv)) = item.split_once(':')
            && let Some((k, v)) = kv.split_once('=')
        {
            out.entry(sender.to_string())
                .or_default()
                .insert(k.to_string(), v.to_string());
        }
    }
    out
}
