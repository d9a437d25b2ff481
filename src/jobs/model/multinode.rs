//! `protocols:` of a job, chiefly `lava-multinode` in its two forms: as a user submits it
//! (`roles: {name: {device_type, count, ...}}`) and as a server hands a sub-job to a worker
//! (`target_group`, `role`, `roles: {job_id: role}`, `group_size`, `sub_id`).

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::timeouts::Timeout;
use super::util::OrderedMap;

/// The `protocols:` block.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Protocols {
    #[serde(rename = "lava-multinode")]
    pub multinode: Option<MultinodeProtocol>,
    /// Accepted and not supported by labd: refused by [`super::JobDefinition::validate`].
    #[serde(rename = "lava-lxc")]
    pub lxc: Option<serde_norway::Value>,
    #[serde(rename = "lava-vland")]
    pub vland: Option<serde_norway::Value>,
    #[serde(rename = "lava-xnbd")]
    pub xnbd: Option<serde_norway::Value>,
}

/// `protocols: lava-multinode:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultinodeProtocol {
    /// Group identity (sub-job form; a uuid chosen by the server).
    pub target_group: Option<String>,
    /// This sub-job's role (sub-job form).
    pub role: Option<String>,
    pub roles: OrderedMap<RoleEntry>,
    pub group_size: Option<u32>,
    pub sub_id: Option<u32>,
    /// Poll timeout of `lava-send`/`lava-wait`/`lava-sync` calls.
    pub timeout: Option<Timeout>,
    /// `lava-start`: this role waits until `expect_role` sends `lava_start`.
    pub request: Option<String>,
    pub expect_role: Option<String>,
    pub essential: Option<bool>,
    /// Master/slave boot (`lava_ms_*`): this role's board is booted by another board.
    pub is_slave: Option<bool>,
    pub environment: Option<serde_norway::Value>,
    pub context: Option<serde_norway::Value>,
    pub tags: Option<Vec<String>>,
    pub device_type: Option<String>,
    pub host_role: Option<String>,
    pub connection: Option<String>,
    pub count: Option<u32>,
}

impl MultinodeProtocol {
    /// True for the form a server sends a worker (one role of a split group).
    pub fn is_sub_job(&self) -> bool {
        self.target_group.is_some()
    }

    /// Sub-job form: `{client_name (job id): role}`.
    pub fn assigned_roles(&self) -> BTreeMap<String, String> {
        self.roles
            .iter()
            .filter_map(|(k, v)| match v {
                RoleEntry::Assigned(r) => Some((k.to_string(), r.clone())),
                RoleEntry::Requested(_) => None,
            })
            .collect()
    }

    /// Submission form: `{role: request}` in the order written.
    pub fn requested_roles(&self) -> Vec<(&str, &RoleRequest)> {
        self.roles
            .iter()
            .filter_map(|(k, v)| match v {
                RoleEntry::Requested(r) => Some((k, r)),
                RoleEntry::Assigned(_) => None,
            })
            .collect()
    }
}

/// One value of `roles:` (a few per job; variant sizes do not matter).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum RoleEntry {
    /// Sub-job form: the role of the job id used as key.
    Assigned(String),
    /// Submission form: what a role needs.
    Requested(RoleRequest),
}

impl<'de> Deserialize<'de> for RoleEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RoleEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a role name or a role request mapping")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RoleEntry, E> {
                Ok(RoleEntry::Assigned(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RoleEntry, A::Error> {
                RoleRequest::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RoleEntry::Requested)
            }
        }
        d.deserialize_any(V)
    }
}

/// What a role of a submitted Multi-Node job needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleRequest {
    pub device_type: Option<String>,
    pub count: u32,
    pub context: Option<BTreeMap<String, serde_norway::Value>>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub environment: Option<serde_norway::Value>,
    pub essential: Option<bool>,
    pub timeout: Option<Timeout>,
    /// A secondary connection role (`host_role` boots it): labd refuses these for now.
    pub connection: Option<String>,
    pub expect_role: Option<String>,
    pub host_role: Option<String>,
    pub request: Option<String>,
}
