//! The `labd devices` report: the USB ttys present, their identity, the inventory device each
//! matches, and a `[device.usb]` snippet for the ones nothing matches.

use std::fmt::Write as _;

use super::identity::AdapterIdentity;
use super::tracker::Target;

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterRow {
    pub identity: AdapterIdentity,
    /// Inventory devices whose `[device.usb]` matches (more than one = ambiguous inventory).
    pub devices: Vec<String>,
}

/// Matches every USB tty in `adapters` against `targets`, sorted by node.
pub fn rows(targets: &[Target], adapters: &[AdapterIdentity]) -> Vec<AdapterRow> {
    let mut rows: Vec<AdapterRow> = adapters
        .iter()
        .filter(|a| a.is_usb_tty())
        .map(|a| AdapterRow {
            identity: a.clone(),
            devices: targets
                .iter()
                .filter(|t| t.usb.matches(a))
                .map(|t| t.device.to_string())
                .collect(),
        })
        .collect();
    rows.sort_by_key(|r| node_sort_key(&r.identity));
    rows
}

/// `/dev/ttyUSB10` after `/dev/ttyUSB9`.
fn node_sort_key(a: &AdapterIdentity) -> (String, u64, String) {
    let label = a.label();
    let digits = label.len() - label.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (stem, num) = label.split_at(label.len() - digits);
    (stem.to_string(), num.parse().unwrap_or(0), label.clone())
}

fn dash(s: Option<&str>) -> &str {
    s.filter(|s| !s.is_empty()).unwrap_or("-")
}

/// The report as text: a table, then snippets for unmatched adapters.
pub fn render(targets: &[Target], adapters: &[AdapterIdentity]) -> String {
    let rows = rows(targets, adapters);
    if rows.is_empty() {
        return "no USB serial adapters present\n".to_string();
    }
    let header = [
        "NODE", "ID", "VENDOR", "MODEL", "SERIAL", "IF", "PORT", "ID_PATH", "DEVICE",
    ];
    let table: Vec<[String; 9]> = rows
        .iter()
        .map(|r| {
            let a = &r.identity;
            [
                a.label(),
                format!(
                    "{}:{}",
                    dash(a.vendor_id.as_deref()),
                    dash(a.model_id.as_deref())
                ),
                dash(a.vendor.as_deref()).to_string(),
                dash(a.model.as_deref()).to_string(),
                dash(a.serial_short.as_deref()).to_string(),
                a.interface_num
                    .map_or("-".to_string(), |i| format!("{i:02x}")),
                a.port_number.map_or("-".to_string(), |p| p.to_string()),
                dash(a.id_path.as_deref()).to_string(),
                if r.devices.is_empty() {
                    "-".to_string()
                } else {
                    r.devices.join(",")
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &table {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cells);
    }
    let unmatched: Vec<&AdapterRow> = rows.iter().filter(|r| r.devices.is_empty()).collect();
    if !unmatched.is_empty() {
        out.push_str("\nNo inventory device matches these adapters; a [device.usb] for each:\n");
        for r in unmatched {
            let a = &r.identity;
            // A serial is only an identity if no other present adapter of that type has it.
            let shared = a.serial_short.is_some()
                && rows.iter().any(|o| {
                    o.identity.devpath != a.devpath
                        && o.identity.serial_short == a.serial_short
                        && o.identity.vendor_id == a.vendor_id
                        && o.identity.model_id == a.model_id
                        && o.identity.interface_num == a.interface_num
                });
            let _ = writeln!(
                out,
                "\n# {} ({} {}){}",
                a.label(),
                dash(a.vendor.as_deref()),
                dash(a.model.as_deref()),
                if shared {
                    "; its serial is shared with another adapter, so it is matched by port"
                } else if a.serial_short.is_none() {
                    "; it has no serial, so it is matched by port"
                } else {
                    ""
                }
            );
            out.push_str(&a.suggest_snippet_with("lab/NAME", !shared));
        }
    }
    out
}
