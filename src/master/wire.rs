//! The bytes of lava-server's worker API: form bodies encoded exactly as python-requests encodes
//! them (`urllib.parse.urlencode`, i.e. `quote_plus`), and parsers for the server's JSON answers
//! (ping, job payload, log acknowledgement, registration). Everything here is pure so it can be
//! fuzzed and unit-tested without a network.

use serde::Deserialize;

use crate::ids::JobId;

/// Paths of the worker API (lava_dispatcher/worker.py `URL_JOBS`, `URL_WORKERS`).
pub const URL_JOBS: &str = "/scheduler/internal/v1/jobs/";
pub const URL_WORKERS: &str = "/scheduler/internal/v1/workers/";

/// lava-run's `MAX_RECORDS`: most log records sent in one POST.
pub const MAX_RECORDS: usize = 1000;

/// `application/x-www-form-urlencoded` as python-requests writes `data=dict`: fields in order,
/// `quote_plus` on names and values (letters, digits and `_.-~` kept, space as `+`, every other
/// byte of the UTF-8 text as `%XX` with upper-case hex).
pub fn form_encode(fields: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        quote_plus_into(k, &mut out);
        out.push('=');
        quote_plus_into(v, &mut out);
    }
    out
}

/// Python's `urllib.parse.quote_plus`.
pub fn quote_plus(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    quote_plus_into(s, &mut out);
    out
}

fn quote_plus_into(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 15) as usize] as char);
            }
        }
    }
}

/// lava-run's log POST value: `"- " + "\n- ".join(records)`.
pub fn log_lines_value<S: AsRef<str>>(records: &[S]) -> String {
    let total: usize = records.iter().map(|r| r.as_ref().len() + 3).sum();
    let mut out = String::with_capacity(total);
    for (i, r) in records.iter().enumerate() {
        out.push_str(if i == 0 { "- " } else { "\n- " });
        out.push_str(r.as_ref());
    }
    out
}

/// One job named in a ping answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRef {
    pub id: JobId,
    pub token: String,
}

/// The ping answer: what the server wants this worker to start, cancel, and what it believes
/// is running.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PingAnswer {
    pub start: Vec<JobRef>,
    pub cancel: Vec<JobRef>,
    pub running: Vec<JobRef>,
}

/// What the server said that labd could not use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("answer is not the JSON labd expects: {0}")]
    Json(String),
    #[error("job id {0:?} is not a LAVA job id")]
    JobId(String),
    #[error("job token {0:?} cannot be sent back as an HTTP header")]
    Token(String),
}

#[derive(Deserialize)]
struct RawRef {
    id: serde_json::Value,
    token: String,
}

#[derive(Deserialize)]
struct RawPing {
    #[serde(default)]
    start: Vec<RawRef>,
    #[serde(default)]
    cancel: Vec<RawRef>,
    #[serde(default)]
    running: Vec<RawRef>,
}

fn job_ref(r: RawRef) -> Result<JobRef, WireError> {
    // The server sends integers; sub-jobs of a multinode group may be "N.M" strings.
    let id = match &r.id {
        serde_json::Value::Number(n) if n.is_u64() => n.to_string(),
        serde_json::Value::String(s)
            if !s.is_empty()
                && s.split('.').count() <= 2
                && s.split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) =>
        {
            s.clone()
        }
        other => return Err(WireError::JobId(other.to_string())),
    };
    let id = JobId::new(id.clone()).map_err(|_| WireError::JobId(id))?;
    if r.token.is_empty() || !r.token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(WireError::Token(r.token));
    }
    Ok(JobRef { id, token: r.token })
}

/// Parses a 200 ping answer: `{"cancel": [{"id": N, "token": "..."}], "running": [...],
/// "start": [...]}`. A missing list counts as empty (lava-worker uses `.get(key, [])`).
pub fn parse_ping_answer(body: &[u8]) -> Result<PingAnswer, WireError> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| WireError::Json(e.to_string()))?;
    if !v.is_object() {
        return Err(WireError::Json(format!("expected an object, found {v}")));
    }
    let raw: RawPing = serde_json::from_value(v).map_err(|e| WireError::Json(e.to_string()))?;
    let conv = |v: Vec<RawRef>| v.into_iter().map(job_ref).collect::<Result<Vec<_>, _>>();
    Ok(PingAnswer {
        start: conv(raw.start)?,
        cancel: conv(raw.cancel)?,
        running: conv(raw.running)?,
    })
}

/// The job as `GET /scheduler/internal/v1/jobs/<id>/` hands it out. `dispatcher` and `env-dut`
/// are `""` (or `null`) when the server has no such file for the worker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobPayload {
    pub definition: String,
    pub device: String,
    pub dispatcher: String,
    pub env: String,
    pub env_dut: String,
}

#[derive(Deserialize)]
struct RawPayload {
    definition: String,
    device: String,
    dispatcher: Option<String>,
    env: Option<String>,
    #[serde(rename = "env-dut")]
    env_dut: Option<String>,
}

/// Parses the job payload; like lava-worker, every key must be present.
pub fn parse_job_payload(body: &[u8]) -> Result<JobPayload, WireError> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| WireError::Json(e.to_string()))?;
    let Some(obj) = v.as_object() else {
        return Err(WireError::Json(format!("expected an object, found {v}")));
    };
    for key in ["definition", "device", "dispatcher", "env", "env-dut"] {
        if !obj.contains_key(key) {
            return Err(WireError::Json(format!("missing key {key:?}")));
        }
    }
    let raw: RawPayload = serde_json::from_value(v).map_err(|e| WireError::Json(e.to_string()))?;
    Ok(JobPayload {
        definition: raw.definition,
        device: raw.device,
        dispatcher: raw.dispatcher.unwrap_or_default(),
        env: raw.env.unwrap_or_default(),
        env_dut: raw.env_dut.unwrap_or_default(),
    })
}

/// Parses the log POST answer `{"line_count": k}`: how many records of the batch the server
/// has now stored (or already had).
pub fn parse_line_count(body: &[u8]) -> Result<u64, WireError> {
    #[derive(Deserialize)]
    struct Raw {
        line_count: serde_json::Value,
    }
    let raw: Raw = serde_json::from_slice(body).map_err(|e| WireError::Json(e.to_string()))?;
    // lava-run does int(...), which also takes a numeric string.
    match &raw.line_count {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| WireError::Json(format!("line_count {} is not a count", raw.line_count)))
}

/// Parses the registration answer `{"name": ..., "token": ...}` and returns the token.
pub fn parse_register_answer(body: &[u8]) -> Result<String, WireError> {
    #[derive(Deserialize)]
    struct Raw {
        token: String,
    }
    let raw: Raw = serde_json::from_slice(body).map_err(|e| WireError::Json(e.to_string()))?;
    if raw.token.is_empty() || !raw.token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(WireError::Token(raw.token));
    }
    Ok(raw.token)
}

/// The `error` text of a lava-server error answer (`{"error": "..."}`), or the body itself.
pub fn error_text(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Raw {
        error: String,
    }
    match serde_json::from_slice::<Raw>(body) {
        Ok(r) => r.error,
        Err(_) => {
            let s = String::from_utf8_lossy(body);
            let s = s.trim();
            s.chars().take(300).collect()
        }
    }
}

/// Fuzz entry point: every parser of server input on arbitrary bytes. Must never panic.
pub fn fuzz_server_answer(data: &[u8]) {
    let _ = parse_ping_answer(data);
    let _ = parse_job_payload(data);
    let _ = parse_line_count(data);
    let _ = parse_register_answer(data);
    let _ = error_text(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = super::events::event_wants_ping(s, "worker1");
        let enc = form_encode(&[("lines", s), ("index", "0")]);
        debug_assert!(enc.is_ascii());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding_matches_python_requests() {
        // Bytes from the real lava-worker capture (transcript #37, #70 and #43).
        assert_eq!(form_encode(&[("state", "RUNNING")]), "state=RUNNING");
        let line = r#"{"dt": "2026-11-22T03:38:59.197627", "lvl": "exception", "msg": "login-action timed out after 33 seconds"}"#;
        assert_eq!(
            form_encode(&[("lines", &log_lines_value(&[line])), ("index", "447")]),
            "lines=-+%7B%22dt%22%3A+%222026-11-22T03%3A38%3A59.197627%22%2C+%22lvl%22%3A+%22exception%22%2C+%22msg%22%3A+%22login-action+timed+out+after+33+seconds%22%7D&index=447"
        );
        assert_eq!(
            form_encode(&[
                ("state", "FINISHED"),
                ("result", "pass"),
                ("error_type", ""),
                ("errors", ""),
                (
                    "description",
                    "compatibility: 4\npipeline:\n- class: actions.deploy.image.DeployImagesAction\n  level: '1'\n"
                ),
            ]),
            "state=FINISHED&result=pass&error_type=&errors=&description=compatibility%3A+4%0Apipeline%3A%0A-+class%3A+actions.deploy.image.DeployImagesAction%0A++level%3A+%271%27%0A"
        );
        // Non-ASCII is UTF-8 then %XX; '~' stays (Python >= 3.7).
        assert_eq!(quote_plus("é~/*"), "%C3%A9~%2F%2A");
    }

    #[test]
    fn log_value_joins_like_lava_run() {
        assert_eq!(log_lines_value(&["a", "b", "c"]), "- a\n- b\n- c");
        assert_eq!(log_lines_value(&["a"]), "- a");
    }

    #[test]
    fn ping_answers_from_the_real_server() {
        let idle = parse_ping_answer(br#"{"cancel": [], "running": [], "start": []}"#).unwrap();
        assert_eq!(idle, PingAnswer::default());
        let a = parse_ping_answer(
            br#"{"cancel": [], "running": [], "start": [{"id": 1, "token": "QSOxMmjUDyrtgDgJK94yFmqMCKw6HtMc"}]}"#,
        )
        .unwrap();
        assert_eq!(a.start[0].id.as_str(), "1");
        assert_eq!(a.start[0].token, "QSOxMmjUDyrtgDgJK94yFmqMCKw6HtMc");
        let m = parse_ping_answer(br#"{"cancel": [{"id": "12.1", "token": "t"}]}"#).unwrap();
        assert_eq!(m.cancel[0].id.as_str(), "12.1");
        for bad in [
            &br#"{"start": [{"id": -1, "token": "t"}]}"#[..],
            br#"{"start": [{"id": "../x", "token": "t"}]}"#,
            br#"{"start": [{"id": 1, "token": "a\nb"}]}"#,
            br#"{"start": [{"id": 1.5, "token": "t"}]}"#,
            br#"{"start": {}}"#,
            b"[]",
            b"",
        ] {
            assert!(
                parse_ping_answer(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn job_payload() {
        let p = parse_job_payload(
            br#"{"definition": "job", "device": "dev", "dispatcher": "", "env": "e", "env-dut": ""}"#,
        )
        .unwrap();
        assert_eq!(p.definition, "job");
        assert_eq!(p.dispatcher, "");
        let p = parse_job_payload(
            br#"{"definition": "job", "device": "dev", "dispatcher": null, "env": "e", "env-dut": null}"#,
        )
        .unwrap();
        assert_eq!(p.env_dut, "");
        assert!(parse_job_payload(br#"{"definition": "job", "device": "dev"}"#).is_err());
    }

    #[test]
    fn line_count_and_errors() {
        assert_eq!(parse_line_count(br#"{"line_count": 87}"#).unwrap(), 87);
        assert_eq!(parse_line_count(br#"{"line_count": "3"}"#).unwrap(), 3);
        assert!(parse_line_count(br#"{"line_count": -1}"#).is_err());
        assert_eq!(
            error_text(br#"{"error": "Version mismatch '2022.01' vs '2023.01'"}"#),
            "Version mismatch '2022.01' vs '2023.01'"
        );
        assert_eq!(
            parse_register_answer(
                br#"{"name": "worker2", "token": "9s7ijNDuftHKS7z85kSwkH0f15RyFFue"}"#
            )
            .unwrap(),
            "9s7ijNDuftHKS7z85kSwkH0f15RyFFue"
        );
    }

    #[test]
    fn fuzz_seeds_do_not_panic() {
        for seed in [
            &b""[..],
            b"{",
            b"null",
            br#"{"start": [{"id": 18446744073709551616, "token": "x"}]}"#,
            br#"{"line_count": 1e400}"#,
            b"\xff\xfe",
        ] {
            fuzz_server_answer(seed);
        }
    }
}
