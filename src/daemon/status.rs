//! The `status` and `ping` control requests. `status` carries the consoles, the inventory's
//! device count, and what other services add (`power`, `discovery`).

use std::sync::Arc;

use super::Services;
use crate::control::{StatusReply, simple};

pub(super) fn register(services: &Arc<Services>) {
    let s = services.clone();
    services.control.register(
        "status",
        simple(move |_req| {
            let s = s.clone();
            async move {
                let reply = StatusReply {
                    worker: s.inventory().worker.name.to_string(),
                    pid: std::process::id(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    consoles: s.consoles.statuses(),
                };
                let mut v = serde_json::to_value(reply)
                    .map_err(|e| crate::control::ControlError::BadReply(e.to_string()))?;
                // Other services' parts: `power`, `discovery`, ...
                if let serde_json::Value::Object(m) = &mut v {
                    m.insert("devices".into(), s.inventory().devices.len().into());
                    for (name, part) in s.status_parts() {
                        m.insert(name.into(), part);
                    }
                }
                Ok(v)
            }
        }),
    );
    services.control.register(
        "ping",
        simple(|_req| async {
            Ok(serde_json::json!({"pid": std::process::id(), "version": env!("CARGO_PKG_VERSION")}))
        }),
    );
}
