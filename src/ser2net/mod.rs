//! ser2net configuration from the inventory: the 4.x YAML dialect exactly as Debian's ser2net
//! 4.3.11 reads it, and the 3.x line format. Both are generated as text: ser2net's "version 1"
//! YAML repeats the top-level key `connection:` once per port, which no YAML serializer emits.

pub mod config;
mod legacy;
mod yaml;

pub use config::{ResolvedExport, Ser2netExport, Ser2netProtocol, exports};
pub use legacy::render_legacy;
pub use yaml::render_yaml;

use crate::console::config::{FlowControl, LineSettings, Parity};

/// Which dialect to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// ser2net 4.x YAML (`/etc/ser2net/ser2net.yaml`).
    Yaml,
    /// ser2net 3.x lines (`/etc/ser2net.conf`); 4.x still reads it, with a warning.
    Legacy,
}

/// The configuration for `inv` in `format`.
pub fn render(inv: &crate::inventory::Inventory, format: Format) -> String {
    let exports = exports(inv);
    let worker = inv.worker.name.as_str();
    match format {
        Format::Yaml => render_yaml(worker, &exports),
        Format::Legacy => render_legacy(worker, &exports),
    }
}

fn parity_letter(p: Parity) -> char {
    match p {
        Parity::None => 'n',
        Parity::Odd => 'o',
        Parity::Even => 'e',
        Parity::Mark => 'm',
        Parity::Space => 's',
    }
}

/// gensio serialdev speed string, e.g. `115200n81`.
pub fn speed_string(l: &LineSettings) -> String {
    format!(
        "{}{}{}{}",
        l.baud,
        parity_letter(l.parity),
        l.data_bits,
        l.stop_bits
    )
}

/// gensio serialdev options after the speed: `local` (ignore modem lines, CLOCAL) always,
/// plus flow control.
fn serial_options(l: &LineSettings) -> Vec<&'static str> {
    let mut v = vec!["local"];
    match l.flow_control {
        FlowControl::None => {}
        FlowControl::Software => v.push("xonxoff"),
        FlowControl::Hardware => v.push("rtscts"),
    }
    v
}
