//! A submitted group ready to place: its sub-jobs and what each needs from the inventory,
//! after the checks lava-server makes at submission (`_validate_multinode`, and
//! `device_type`/`connection` in `TestJob.from_yaml_and_user`).

use serde_norway::Value;

use super::GroupError;
use super::allocate::Requirement;
use super::split::{self, SubJob, count_of, roles_of};

/// A split group and its board requirements (`requirements[i]` is for `jobs[i]`).
#[derive(Debug, Clone)]
pub struct GroupPlan {
    pub target_group: String,
    pub jobs: Vec<SubJob>,
    pub requirements: Vec<Requirement>,
}

fn bad(message: impl Into<String>) -> GroupError {
    GroupError::Submission {
        message: message.into(),
    }
}

impl GroupPlan {
    /// Validates and splits a submission.
    pub fn from_submission(submission: &Value, target_group: &str) -> Result<Self, GroupError> {
        let roles = roles_of(submission)?;
        if roles.is_empty() {
            return Err(bad("no roles"));
        }
        let names: Vec<&str> = roles.iter().map(|(n, _)| n.as_str()).collect();
        for (name, request) in &roles {
            let host = request.get("host_role");
            let expect = request.get("expect_role");
            if let Some(host) = host {
                let host = host.as_str().unwrap_or_default();
                if !names.contains(&host) {
                    return Err(bad(format!("'host_role' '{host}' does not exist")));
                }
                let Some(expect) = expect else {
                    return Err(bad("'expect_role' is required when 'host_role' is used"));
                };
                let expect = expect.as_str().unwrap_or_default();
                if !names.contains(&expect) {
                    return Err(bad(format!("'expect_role' '{expect}' does not exist")));
                }
            } else if expect.is_some() && request.get("request").is_none() {
                // lava-server requires host_role with expect_role; a delayed start
                // (`request: lava-start`) is the one use labd accepts without it.
                return Err(bad("'expect_role' without 'host_role'"));
            }
            if let Some(expect) = expect.and_then(Value::as_str)
                && expect == name
            {
                return Err(bad(format!(
                    "role {name}: expect_role names the role itself"
                )));
            }
            match (request.get("device_type"), request.get("connection")) {
                (Some(_), Some(_)) => {
                    return Err(bad(
                        "lava-multinode protocol cannot support device_type and connection for a single role.",
                    ));
                }
                (None, Some(_)) => {
                    return Err(GroupError::Unsupported {
                        role: name.clone(),
                        message: "secondary connections (connection: without device_type) are not run by labd".into(),
                    });
                }
                (None, None) => return Err(bad(format!("role {name}: no device_type"))),
                (Some(t), None) if t.as_str().is_none() => {
                    return Err(bad(format!("role {name}: device_type must be a string")));
                }
                _ => {}
            }
            if let Some(tags) = request.get("tags")
                && !tags
                    .as_sequence()
                    .is_some_and(|s| s.iter().all(Value::is_string))
            {
                return Err(bad(format!("role {name}: tags must be a list of strings")));
            }
            count_of(name, request)?;
        }
        let jobs = split::split(submission, target_group)?;
        if jobs.is_empty() {
            return Err(bad("every role has count 0"));
        }
        let requirements = jobs
            .iter()
            .map(|job| {
                let request = roles.iter().find(|(n, _)| *n == job.role).map(|(_, r)| *r);
                let device_type = request
                    .and_then(|r| r.get("device_type"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let tags = request
                    .and_then(|r| r.get("tags"))
                    .and_then(Value::as_sequence)
                    .map(|s| {
                        s.iter()
                            .filter_map(|t| t.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                Requirement {
                    role: job.role.clone(),
                    sub_id: job.sub_id,
                    device_type,
                    tags,
                }
            })
            .collect();
        Ok(GroupPlan {
            target_group: target_group.to_string(),
            jobs,
            requirements,
        })
    }

    fn flag(&self, i: usize, name: &str) -> Option<bool> {
        self.jobs.get(i)?.multinode()?.get(name)?.as_bool()
    }

    /// The sub-job's board is booted by a master board of the group, not by labd.
    pub fn is_slave(&self, i: usize) -> bool {
        self.flag(i, "is_slave").unwrap_or(false)
    }

    /// When an essential sub-job fails, the group is cancelled (LAVA's default: not essential).
    pub fn is_essential(&self, i: usize) -> bool {
        self.flag(i, "essential").unwrap_or(false)
    }

    /// Names the sub-jobs (their coordinator client names) and gives each the `roles` map.
    pub fn assign_ids(&mut self, ids: &[String]) {
        split::assign_roles(&mut self.jobs, ids);
    }
}
