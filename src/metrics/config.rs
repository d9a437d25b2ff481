//! `[metrics]`: the Prometheus endpoint, off unless `listen` is set.

use std::net::SocketAddr;

use serde::Deserialize;

use crate::inventory::{Diagnostics, Inventory};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the `/metrics` endpoint, e.g. `127.0.0.1:9120`.
    pub listen: Option<SocketAddr>,
}

/// Nothing to cross-check yet: the address parses or serde refuses it.
pub fn validate(_inv: &Inventory, _diags: &mut Diagnostics) {}
