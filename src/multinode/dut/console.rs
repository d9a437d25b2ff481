//! Multi-Node requests a DUT prints on its console, and the replies written back, exactly as
//! lava-dispatcher 2023.01 handles them (`actions/test/multinode.py`, `MultinodeMixin`).
//!
//! The dispatcher watches the console for `<LAVA_MULTI_NODE> <LAVA_(\S+) ([^>]+)>`. For `SEND`
//! the parameters are split only before `key=` tokens (`re.split(r"\s+(?=\w+(?:=))", ...)`),
//! so values may contain spaces; for the others with `str.split()`. The handler is
//! `_on_<name.lower()>(*params)`; its reply is written with `sendline(reply)` then
//! `sendline("\n")`, i.e. `reply + linesep + "\n" + linesep`.

use super::super::pyjson::py_str;
use crate::multinode::pyjson::Value;

/// The dispatcher's pattern, for documentation and for job runners that use a regex engine.
pub const MULTINODE_PATTERN: &str = r"<LAVA_MULTI_NODE> <LAVA_(\S+) ([^>]+)>";

const PREFIX: &str = "<LAVA_MULTI_NODE> <LAVA_";

/// What the DUT asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DutRequest {
    /// The API name as printed (`SEND`, `WAIT`, `WAIT_ALL`, `SYNC`; matched case-insensitively).
    pub name: String,
    /// The parameters after the dispatcher's split; `params[0]` is the messageID.
    pub params: Vec<String>,
}

/// A request found in console text: its byte range and content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DutMatch {
    pub start: usize,
    pub end: usize,
    pub request: DutRequest,
}

/// Python's `str.isspace()` / `\s` for `str` patterns (includes `\x1c`-`\x1f`, unlike Rust).
pub fn py_isspace(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n'
            | '\u{b}'
            | '\u{c}'
            | '\r'
            | '\u{1c}'..='\u{1f}'
            | ' '
            | '\u{85}'
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
    )
}

fn py_isword(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// The leftmost match of [`MULTINODE_PATTERN`] in `text`, as Python's `re.search` finds it.
/// `None` when there is no complete match yet (more console output may complete one).
pub fn find_request(text: &str) -> Option<DutMatch> {
    let mut from = 0;
    while let Some(off) = text[from..].find(PREFIX) {
        let start = from + off;
        if let Some(m) = match_at(text, start) {
            return Some(m);
        }
        from = start + 1;
    }
    None
}

fn match_at(text: &str, start: usize) -> Option<DutMatch> {
    let rest = &text[start + PREFIX.len()..];
    // (\S+) is greedy and must be followed by a literal space.
    let name_len = rest.find(py_isspace).unwrap_or(rest.len());
    if name_len == 0 || !rest[name_len..].starts_with(' ') {
        return None;
    }
    let name = &rest[..name_len];
    let params_start = name_len + 1;
    // ([^>]+)> : everything up to the first '>' (newlines included), at least one character.
    let gt = rest[params_start..].find('>')?;
    if gt == 0 {
        return None;
    }
    let params = &rest[params_start..params_start + gt];
    let end = start + PREFIX.len() + params_start + gt + 1;
    Some(DutMatch {
        start,
        end,
        request: DutRequest::from_groups(name, params),
    })
}

impl DutRequest {
    /// Splits the two regex groups as `check_patterns` does.
    pub fn from_groups(name: &str, params: &str) -> Self {
        let params = if name == "SEND" {
            split_send(params)
        } else {
            params
                .split(py_isspace)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        DutRequest {
            name: name.to_string(),
            params,
        }
    }

    /// The synthetic test case LAVA records for this request: `multinode-<name>-<id>`,
    /// lower-cased. `None` where the dispatcher records none (no messageID, or one with
    /// whitespace, which its `KEY=VALUE` result parser refuses).
    pub fn test_case_id(&self) -> Option<String> {
        let id = self.params.first()?;
        let tc = format!("multinode-{}-{}", self.name, id).to_lowercase();
        (!tc.contains(py_isspace)).then_some(tc)
    }
}

/// `re.split(r"\s+(?=\w+(?:=))", params)`: split at whitespace runs followed by `word=`.
pub fn split_send(params: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut piece_start = 0;
    let mut i = 0;
    let chars: Vec<(usize, char)> = params.char_indices().collect();
    while i < chars.len() {
        if !py_isspace(chars[i].1) {
            i += 1;
            continue;
        }
        let run_start = i;
        while i < chars.len() && py_isspace(chars[i].1) {
            i += 1;
        }
        let mut j = i;
        while j < chars.len() && py_isword(chars[j].1) {
            j += 1;
        }
        if j > i && j < chars.len() && chars[j].1 == '=' {
            out.push(params[piece_start..chars[run_start].0].to_string());
            piece_start = chars.get(i).map_or(params.len(), |c| c.0);
        }
    }
    out.push(params[piece_start..].to_string());
    out
}

/// `str.split(token, "=")` kept only when it gives exactly two parts: the `lava-send` data.
pub fn send_data(params: &[String]) -> Vec<(String, String)> {
    params
        .iter()
        .skip(1)
        .filter_map(|p| {
            let mut parts = p.split('=');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(k), Some(v), None) => Some((k.to_string(), v.to_string())),
                _ => None,
            }
        })
        .collect()
}

/// ` sender:key=value` for every sender and key of a wait reply (`_on_wait`), with Python's
/// `str()` of each part. `Err` where the dispatcher's `.items()` would raise.
pub fn format_wait_data(reply: &Value) -> Result<String, String> {
    let Value::Dict(senders) = reply else {
        return Err(format!("reply {} is not a dict", py_str(reply)));
    };
    let mut out = String::new();
    for (sender, data) in senders.iter() {
        let Value::Dict(kv) = data else {
            return Err(format!(
                "data {} of {} is not a dict",
                py_str(data),
                py_str(&sender.to_value())
            ));
        };
        for (k, v) in kv.iter() {
            out.push_str(&format!(
                " {}:{}={}",
                py_str(&sender.to_value()),
                py_str(&k.to_value()),
                py_str(v)
            ));
        }
    }
    Ok(out)
}

/// The bytes the dispatcher writes for a reply line: `sendline(line)`, `sendline("\n")`.
pub fn console_bytes(reply_line: &str, linesep: &str) -> String {
    format!("{reply_line}{linesep}\n{linesep}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(line: &str) -> DutRequest {
        find_request(line).unwrap().request
    }

    #[test]
    fn parses_what_the_helpers_print() {
        assert_eq!(
            req("<LAVA_MULTI_NODE> <LAVA_SEND ready role=server self=100>"),
            DutRequest {
                name: "SEND".into(),
                params: vec!["ready".into(), "role=server".into(), "self=100".into()]
            }
        );
        assert_eq!(
            req("x <LAVA_MULTI_NODE> <LAVA_WAIT_ALL ready  client>\r\n").params,
            vec!["ready", "client"]
        );
        assert_eq!(req("<LAVA_MULTI_NODE> <LAVA_SYNC booted>").name, "SYNC");
    }

    #[test]
    fn send_values_keep_spaces_and_ids_may_too() {
        assert_eq!(
            split_send("msg k=a b c k2=d"),
            vec!["msg", "k=a b c", "k2=d"]
        );
        assert_eq!(split_send("id a b=c"), vec!["id a", "b=c"]);
        assert_eq!(split_send(" a=b"), vec!["", "a=b"]);
        assert_eq!(split_send("id x-y=1 z"), vec!["id x-y=1 z"]);
        let p: Vec<String> = split_send("id a=b=c d= e=f").into_iter().collect();
        assert_eq!(p, vec!["id", "a=b=c", "d=", "e=f"]);
        assert_eq!(
            send_data(&p),
            vec![("d".into(), "".into()), ("e".into(), "f".into())]
        );
    }

    #[test]
    fn regex_corner_cases() {
        // Tab after the name: no match; a later complete request is found.
        let t = "<LAVA_MULTI_NODE> <LAVA_SEND\tx> <LAVA_MULTI_NODE> <LAVA_SYNC s>";
        let m = find_request(t).unwrap();
        assert_eq!((m.request.name.as_str(), m.start), ("SYNC", 32));
        assert_eq!(m.end, t.len());
        // Incomplete: wait for more output.
        assert_eq!(find_request("<LAVA_MULTI_NODE> <LAVA_WAIT id"), None);
        assert_eq!(find_request("<LAVA_MULTI_NODE> <LAVA_WAIT >"), None);
        // Parameters run across lines up to the first '>'.
        assert_eq!(
            req("<LAVA_MULTI_NODE> <LAVA_WAIT a\nb>").params,
            vec!["a", "b"]
        );
        // \x1c is whitespace for Python.
        assert_eq!(
            req("<LAVA_MULTI_NODE> <LAVA_WAIT a\u{1c}b>").params,
            vec!["a", "b"]
        );
    }

    #[test]
    fn test_case_ids() {
        assert_eq!(
            req("<LAVA_MULTI_NODE> <LAVA_WAIT_ALL Server_Ready>")
                .test_case_id()
                .as_deref(),
            Some("multinode-wait_all-server_ready")
        );
        assert_eq!(
            req("<LAVA_MULTI_NODE> <LAVA_SEND id a b=c>").test_case_id(),
            None
        );
    }

    #[test]
    fn wait_data_uses_python_str() {
        let v = crate::multinode::pyjson::parse(
            r#"{"100": {"ip": "10.0.0.1", "n": 5, "x": null}, "101": {}}"#,
        )
        .unwrap();
        assert_eq!(
            format_wait_data(&v).unwrap(),
            " 100:ip=10.0.0.1 100:n=5 100:x=None"
        );
        assert!(format_wait_data(&Value::str("booted")).is_err());
        assert_eq!(
            console_bytes("<LAVA_SYNC_COMPLETE>", "\n"),
            "<LAVA_SYNC_COMPLETE>\n\n\n"
        );
    }
}
