//! Reader for recorded udev property dumps: `udevadm info --query=property` (`KEY=value` lines),
//! `udevadm info` (`E: KEY=value` with `P:`/`N:`/`S:` lines), and `udevadm monitor --property`
//! (a `UDEV  [time] action devpath (subsystem)` header before each record). Records are
//! separated by blank lines. This is outside input (support bundles, fixtures): every malformed
//! line is an error with its line number, never a panic.

use std::collections::BTreeMap;

/// Longest line accepted; real property lines are far shorter, and a bound keeps a corrupt or
/// hostile file from costing memory in proportion to its size per line.
pub const MAX_LINE: usize = 64 * 1024;

/// Where a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordSource {
    /// A database dump (`udevadm info`): the device as it is, no event.
    Database,
    /// `udevadm monitor` `UDEV` record: an event after rule processing.
    Udev,
    /// `udevadm monitor` `KERNEL` record: the raw uevent, before udev's rules ran.
    Kernel,
}

/// One device's properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyRecord {
    /// 1-based line where the record starts.
    pub line: usize,
    pub source: RecordSource,
    pub props: BTreeMap<String, String>,
}

impl PropertyRecord {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.props.get(key).map(String::as_str)
    }
}

/// Why a dump was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DumpError {
    #[error("line {line}: {reason}: {text:?}")]
    BadLine {
        line: usize,
        reason: &'static str,
        text: String,
    },
    #[error("line {line}: longer than {MAX_LINE} bytes")]
    LineTooLong { line: usize },
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 256
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

/// `udevadm monitor` preamble lines, printed once before the first event.
fn is_monitor_preamble(line: &str) -> bool {
    line.starts_with("monitor will print")
        || line.starts_with("UDEV - the event")
        || line.starts_with("KERNEL - the kernel")
        || line.starts_with("KERNEL-")
}

/// Parses a `UDEV  [12.34] add      /devices/... (tty)` header into (source, action, devpath,
/// subsystem).
fn monitor_header(line: &str) -> Option<(RecordSource, String, String, Option<String>)> {
    let (source, rest) = if let Some(r) = line.strip_prefix("UDEV") {
        (RecordSource::Udev, r)
    } else if let Some(r) = line.strip_prefix("KERNEL") {
        (RecordSource::Kernel, r)
    } else {
        return None;
    };
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('[')?;
    let (_time, rest) = rest.split_once(']')?;
    let mut words = rest.split_whitespace();
    let action = words.next()?.to_string();
    let devpath = words.next()?.to_string();
    let subsystem = words
        .next()
        .and_then(|s| s.strip_prefix('('))
        .and_then(|s| s.strip_suffix(')'))
        .map(str::to_string);
    Some((source, action, devpath, subsystem))
}

/// Parses a whole dump into records.
pub fn parse_dump(text: &str) -> Result<Vec<PropertyRecord>, DumpError> {
    let mut records = Vec::new();
    let mut current: Option<PropertyRecord> = None;
    let flush = |current: &mut Option<PropertyRecord>, records: &mut Vec<PropertyRecord>| {
        if let Some(r) = current.take() {
            if !r.props.is_empty() {
                records.push(r);
            }
        }
    };
    for (i, raw) in text.split('\n').enumerate() {
        let line_no = i + 1;
        if raw.len() > MAX_LINE {
            return Err(DumpError::LineTooLong { line: line_no });
        }
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() {
            flush(&mut current, &mut records);
            continue;
        }
        if line.starts_with('#') || is_monitor_preamble(line) {
            continue;
        }
        if let Some((source, action, devpath, subsystem)) = monitor_header(line) {
            flush(&mut current, &mut records);
            let mut props = BTreeMap::new();
            props.insert("ACTION".to_string(), action);
            props.insert("DEVPATH".to_string(), devpath);
            if let Some(s) = subsystem {
                props.insert("SUBSYSTEM".to_string(), s);
            }
            current = Some(PropertyRecord {
                line: line_no,
                source,
                props,
            });
            continue;
        }
        let rec = current.get_or_insert_with(|| PropertyRecord {
            line: line_no,
            source: RecordSource::Database,
            props: BTreeMap::new(),
        });
        // `udevadm info` without --query: "X: value" lines.
        if let Some((tag, value)) = info_line(line) {
            match tag {
                'E' => {
                    insert_property(rec, value, line_no, line)?;
                }
                'P' => {
                    rec.props
                        .entry("DEVPATH".to_string())
                        .or_insert_with(|| value.to_string());
                }
                'N' => {
                    rec.props
                        .entry("DEVNAME".to_string())
                        .or_insert_with(|| format!("/dev/{value}"));
                }
                // S: links, M: sysname, R: number, U: subsystem, D: devnum, L: priority, ...:
                // all also present as E: lines or not needed for identity.
                _ => {}
            }
            continue;
        }
        insert_property(rec, line, line_no, line)?;
    }
    flush(&mut current, &mut records);
    Ok(records)
}

fn info_line(line: &str) -> Option<(char, &str)> {
    let mut chars = line.chars();
    let tag = chars.next()?;
    if !tag.is_ascii_uppercase() {
        return None;
    }
    let rest = chars.as_str().strip_prefix(": ")?;
    Some((tag, rest))
}

fn insert_property(
    rec: &mut PropertyRecord,
    kv: &str,
    line_no: usize,
    line: &str,
) -> Result<(), DumpError> {
    let Some((key, value)) = kv.split_once('=') else {
        return Err(DumpError::BadLine {
            line: line_no,
            reason: "expected KEY=value",
            text: truncate(line),
        });
    };
    if !valid_key(key) {
        return Err(DumpError::BadLine {
            line: line_no,
            reason: "property name must be letters, digits, '_' or '.'",
            text: truncate(line),
        });
    }
    rec.props.insert(key.to_string(), value.to_string());
    Ok(())
}

fn truncate(s: &str) -> String {
    let mut end = s.len().min(120);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The fuzzing entry point: parse arbitrary bytes as a dump and turn every record into an
/// identity and an event, as `labd devices --from-dump` and the replay tests do.
pub fn fuzz_dump(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(records) = parse_dump(&text) {
        for r in &records {
            let id = super::identity::AdapterIdentity::from_record(r);
            let _ = id.suggest_snippet("x");
            let _ = super::event::UdevEvent::from_record(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_property_form() {
        let recs = parse_dump("DEVPATH=/devices/x\nID_MODEL_ENC=FT232R\\x20USB\nA=b=c\n").unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].source, RecordSource::Database);
        assert_eq!(recs[0].get("ID_MODEL_ENC"), Some("FT232R\\x20USB"));
        assert_eq!(recs[0].get("A"), Some("b=c"));
    }

    #[test]
    fn info_form_with_prefixes() {
        let text = "P: /devices/pci0000:00/x/ttyUSB0/tty/ttyUSB0\nM: ttyUSB0\nN: ttyUSB0\nS: serial/by-id/usb-x\nE: SUBSYSTEM=tty\n";
        let recs = parse_dump(text).unwrap();
        assert_eq!(
            recs[0].get("DEVPATH"),
            Some("/devices/pci0000:00/x/ttyUSB0/tty/ttyUSB0")
        );
        assert_eq!(recs[0].get("DEVNAME"), Some("/dev/ttyUSB0"));
        assert_eq!(recs[0].get("SUBSYSTEM"), Some("tty"));
    }

    #[test]
    fn monitor_form_splits_records() {
        let text = "monitor will print the received events for:\nUDEV - the event which udev sends out after rule processing\n\n\
                    UDEV  [6143.227] add      /devices/a/tty/ttyUSB0 (tty)\nACTION=add\nSEQNUM=4711\n\n\
                    KERNEL[6143.300] remove   /devices/a/tty/ttyUSB0 (tty)\nACTION=remove\nSEQNUM=4712\n";
        let recs = parse_dump(text).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].source, RecordSource::Udev);
        assert_eq!(recs[0].get("SEQNUM"), Some("4711"));
        assert_eq!(recs[0].get("SUBSYSTEM"), Some("tty"));
        assert_eq!(recs[0].line, 4);
        assert_eq!(recs[1].source, RecordSource::Kernel);
        assert_eq!(recs[1].get("ACTION"), Some("remove"));
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        assert_eq!(
            parse_dump("A=1\nnonsense\n"),
            Err(DumpError::BadLine {
                line: 2,
                reason: "expected KEY=value",
                text: "nonsense".into()
            })
        );
        assert!(matches!(
            parse_dump("A=1\nBAD KEY=1\n"),
            Err(DumpError::BadLine { line: 2, .. })
        ));
        let long = format!("A={}", "x".repeat(MAX_LINE));
        assert_eq!(parse_dump(&long), Err(DumpError::LineTooLong { line: 1 }));
    }

    #[test]
    fn fuzz_entry_survives_odd_input() {
        for seed in [
            &b""[..],
            b"\xff\xfe=\n",
            b"UDEV [\n",
            b"UDEV  [1] add\n",
            b"E: \nP: \nN: \n",
            b"DEVPATH=/x\nSUBSYSTEM=tty\nID_BUS=usb\nACTION=add\nSEQNUM=99999999999999999999999\n",
            b"DEVLINKS=/dev/serial/by-path/-port\nID_PATH=\nID_USB_INTERFACE_NUM=zz\n",
        ] {
            fuzz_dump(seed);
        }
    }
}
