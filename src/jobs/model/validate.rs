//! Rules over several keys (lava_common/schemas `extra_checks`) and labd's own limits.

use super::{Action, DefinitionError, DefinitionSource, JobDefinition, TestKind, is_lava_name};
use crate::jobs::expect::Pattern;

const DOC: &str = "job definition";

pub(super) fn validate(job: &JobDefinition) -> Vec<DefinitionError> {
    let mut out = Vec::new();
    let mut err = |path: String, msg: String| out.push(DefinitionError::at(DOC, path, msg));

    let n = job.job_name.chars().count();
    if !(1..=200).contains(&n) {
        err("job_name".into(), "must be 1 to 200 characters long".into());
    }

    // check_job_timeouts: nothing may outlast the job.
    let job_t = job.timeouts.job.duration;
    let mut check_t = |path: String, what: &str, t: &super::Timeout| {
        if t.duration > job_t {
            err(path, format!("{what} timeout is larger than job timeout"));
        }
    };
    if let Some(t) = &job.timeouts.action {
        check_t("timeouts.action".into(), "Global", t);
    }
    for (k, t) in &job.timeouts.actions {
        check_t(format!("timeouts.actions.{k}"), "Global", t);
    }
    if let Some(t) = &job.timeouts.connection {
        check_t("timeouts.connection".into(), "Global", t);
    }
    for (k, t) in &job.timeouts.connections {
        check_t(format!("timeouts.connections.{k}"), "Global", t);
    }
    for (i, a) in job.actions.iter().enumerate() {
        if let Some(t) = &a.common().timeout {
            check_t(format!("actions[{i}].{}.timeout", a.kind()), "Action", t);
        }
    }

    let p = &job.protocols;
    for (name, v) in [
        ("lava-lxc", &p.lxc),
        ("lava-vland", &p.vland),
        ("lava-xnbd", &p.xnbd),
    ] {
        if v.is_some() {
            err(
                format!("protocols.{name}"),
                "this protocol is not supported by labd".into(),
            );
        }
    }

    match job.multinode() {
        Some(mn) => {
            let submission = !mn.requested_roles().is_empty();
            if submission {
                for (key, set) in [
                    ("device_type", job.device_type.is_some()),
                    ("context", !job.context.is_empty()),
                    ("tags", !job.tags.is_empty()),
                    ("environment", job.environment.is_some()),
                ] {
                    if set {
                        err(
                            key.into(),
                            format!("\"{key}\" should not be used with multinode"),
                        );
                    }
                }
                for (role, req) in mn.requested_roles() {
                    if req.connection.is_some() || req.host_role.is_some() {
                        err(
                            format!("protocols.lava-multinode.roles.{role}"),
                            "secondary connection roles (connection/host_role) are not supported by labd".into(),
                        );
                    } else if req.device_type.is_none() {
                        err(
                            format!("protocols.lava-multinode.roles.{role}"),
                            "a role needs a device_type".into(),
                        );
                    }
                }
                for (i, a) in job.actions.iter().enumerate() {
                    let roles = &a.common().role;
                    if roles.is_empty() {
                        err(
                            format!("actions[{i}].{}", a.kind()),
                            "Every action of a multinode job should have roles".into(),
                        );
                    }
                    for r in roles {
                        if !mn.requested_roles().iter().any(|(n, _)| n == r) {
                            err(
                                format!("actions[{i}].{}.role", a.kind()),
                                format!("role `{r}` is not one of protocols.lava-multinode.roles"),
                            );
                        }
                    }
                }
            } else if mn.role.is_none() || mn.group_size.is_none() {
                err(
                    "protocols.lava-multinode".into(),
                    "a Multi-Node sub-job needs target_group, role, roles and group_size".into(),
                );
            }
        }
        None => {
            if job.device_type.is_none() {
                err(
                    "device_type".into(),
                    "\"device_type\" or multinode should be defined".into(),
                );
            }
        }
    }

    // check_namespace: all or none.
    let with_ns = job
        .actions
        .iter()
        .filter(|a| a.common().namespace.is_some())
        .count();
    if with_ns > 0 && with_ns != job.actions.len() {
        err(
            "actions".into(),
            "When using namespaces, every action should have a namespace".into(),
        );
    }
    for (i, a) in job.actions.iter().enumerate() {
        if let Some(ns) = &a.common().namespace {
            if ns == "common" || ns == "docker-test-shell" {
                err(
                    format!("actions[{i}].{}.namespace", a.kind()),
                    "'common' and 'docker-test-shell' are reserved namespace names".into(),
                );
            }
        }
    }

    for (i, a) in job.actions.iter().enumerate() {
        match a {
            Action::Boot(b) => {
                for (j, p) in b.prompts.iter().enumerate() {
                    check_regex(&mut err, format!("actions[{i}].boot.prompts[{j}]"), p);
                }
            }
            Action::Test(t) => validate_test(&mut err, i, &t.kind),
            Action::Deploy(_) => {}
        }
    }
    out
}

fn check_regex(err: &mut impl FnMut(String, String), path: String, re: &str) {
    if let Err(e) = Pattern::new(re) {
        err(path, format!("invalid regular expression {re:?}: {e}"));
    }
}

fn validate_test(err: &mut impl FnMut(String, String), i: usize, kind: &TestKind) {
    match kind {
        TestKind::Definitions(defs) => {
            for (j, d) in defs.iter().enumerate() {
                let path = format!("actions[{i}].test.definitions[{j}]");
                match d.from {
                    DefinitionSource::Git => err(
                        format!("{path}.from"),
                        format!(
                            "`from: git` ({}) is not supported by labd yet: the worker would have to clone the repository; write the definition inline (`from: inline`)",
                            match &d.repository {
                                super::Repository::Url(u) => u.as_str(),
                                super::Repository::Inline(_) => "",
                            }
                        ),
                    ),
                    DefinitionSource::Url => err(
                        format!("{path}.from"),
                        "`from: url` is not supported by labd yet; write the definition inline (`from: inline`)".into(),
                    ),
                    DefinitionSource::Inline => {}
                }
                if let super::Repository::Inline(def) = &d.repository {
                    if def.metadata.format != "Lava-Test Test Definition 1.0" {
                        err(
                            format!("{path}.repository.metadata.format"),
                            format!(
                                "`{}`: expected `Lava-Test Test Definition 1.0`",
                                def.metadata.format
                            ),
                        );
                    }
                    if let Some(p) = def.parse.as_ref().and_then(|p| p.pattern.as_deref()) {
                        check_regex(err, format!("{path}.repository.parse.pattern"), p);
                    }
                }
            }
        }
        TestKind::Interactive(tests) => {
            for (j, t) in tests.iter().enumerate() {
                let path = format!("actions[{i}].test.interactive[{j}]");
                if !is_lava_name(&t.name) {
                    err(format!("{path}.name"), format!("invalid name `{}`", t.name));
                }
                for (k, p) in t.prompts.iter().enumerate() {
                    check_regex(err, format!("{path}.prompts[{k}]"), p);
                }
                for (k, s) in t.script.iter().enumerate() {
                    let sp = format!("{path}.script[{k}]");
                    if let Some(n) = &s.name {
                        if !is_lava_name(n) {
                            err(format!("{sp}.name"), format!("invalid name `{n}`"));
                        }
                    }
                    for (l, m) in s.successes.iter().enumerate() {
                        check_regex(err, format!("{sp}.successes[{l}].message"), &m.message);
                    }
                    for (l, m) in s.failures.iter().enumerate() {
                        check_regex(err, format!("{sp}.failures[{l}].message"), &m.message);
                    }
                }
            }
        }
        TestKind::Monitors(mons) => {
            for (j, m) in mons.iter().enumerate() {
                let path = format!("actions[{i}].test.monitors[{j}]");
                if !is_lava_name(&m.name) {
                    err(format!("{path}.name"), format!("invalid name `{}`", m.name));
                }
                check_regex(err, format!("{path}.start"), &m.start);
                check_regex(err, format!("{path}.end"), &m.end);
                check_regex(err, format!("{path}.pattern"), &m.pattern);
            }
        }
    }
}
