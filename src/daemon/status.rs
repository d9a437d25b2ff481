//! The `status` and `ping` control requests.

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
                serde_json::to_value(reply)
                    .map_err(|e| crate::control::ControlError::BadReply(e.to_string()))
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
