//! Inventory section(s) owned by `multinode`. Until that work lands any key here is refused.

use serde::Deserialize;

use crate::inventory::{Diagnostics, Inventory};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {}

/// Cross-checks of this section against the rest of the inventory.
pub fn validate(_inv: &Inventory, _diags: &mut Diagnostics) {}
