//! The double's accept loop, its checks of each request, and lava-server's views
//! (`internal_v1_workers`, `internal_v1_jobs`, `internal_v1_jobs_logs`) re-implemented.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use rand::Rng as _;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::http::{
    RawRequest, form_decode, py_json_str, py_urlencode, read_request, write_response,
};
use super::{Control, DoubleJob, DoubleWorker, JobHealth, JobState, Recorded, State};

const WORKERS: &str = "/scheduler/internal/v1/workers/";
const JOBS: &str = "/scheduler/internal/v1/jobs/";

pub(crate) fn random_token() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    (0..32)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

pub(crate) async fn serve(
    listener: std::net::TcpListener,
    port: u16,
    state: Arc<Mutex<State>>,
    mut control: watch::Receiver<Control>,
) {
    listener.set_nonblocking(true).expect("nonblocking");
    let mut listener = Some(TcpListener::from_std(listener).expect("tokio listener"));
    loop {
        let c = *control.borrow_and_update();
        match c {
            Control::Stop => return,
            Control::Down => {
                listener = None;
                if control.changed().await.is_err() {
                    return;
                }
                continue;
            }
            Control::Up if listener.is_none() => {
                match TcpListener::bind(("127.0.0.1", port)).await {
                    Ok(l) => listener = Some(l),
                    Err(_) => {
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        continue;
                    }
                }
            }
            Control::Up => {}
        }
        let Some(l) = &listener else { continue };
        tokio::select! {
            r = l.accept() => {
                if let Ok((mut stream, _)) = r {
                    let st = state.clone();
                    tokio::spawn(async move {
                        if let Some(req) = read_request(&mut stream).await {
                            if req.path == "/ws/" && req.header("Upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
                                super::events::event_feed(&st, stream, req).await;
                                return;
                            }
                            if hangs(&st, &req) {
                                // Keep the connection open, never answer.
                                let _keep = stream;
                                std::future::pending::<()>().await;
                                return;
                            }
                            let (status, body) = handle(&st, req);
                            write_response(&mut stream, status, "application/json", body.as_bytes()).await;
                        }
                    });
                }
            }
            r = control.changed() => if r.is_err() { return },
        }
    }
}

pub(crate) fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn err(status: u16, msg: &str) -> (u16, String) {
    (status, format!("{{\"error\": {}}}", py_json_str(msg)))
}

/// Whether the request is one to leave unanswered; it is recorded with status 0.
fn hangs(state: &Mutex<State>, req: &RawRequest) -> bool {
    let mut st = lock(state);
    if !st.hang.iter().any(|p| req.path.starts_with(p.as_str())) {
        return false;
    }
    st.requests.push(Recorded {
        at: Instant::now(),
        request: req.clone(),
        fields: Vec::new(),
        status: 0,
        response: String::new(),
    });
    true
}

fn handle(state: &Mutex<State>, req: RawRequest) -> (u16, String) {
    let mut st = lock(state);
    let mut violations = Vec::new();
    let fields = check_request(&st, &req, &mut violations);
    let injected = st
        .failures
        .iter_mut()
        .find(|(n, _, p)| *n > 0 && req.path.starts_with(p.as_str()))
        .map(|f| {
            f.0 -= 1;
            f.1
        })
        .or_else(|| {
            let now = Instant::now();
            st.failures_until
                .iter()
                .find(|(until, _, p)| *until > now && req.path.starts_with(p.as_str()))
                .map(|f| f.1)
        });
    let (status, body) = match injected {
        Some(s) => (s, format!("<html><title>{s}</title></html>")),
        None => route(&mut st, &req, &fields, &mut violations),
    };
    for v in &violations {
        eprintln!("master double: violation: {v}");
    }
    st.violations.extend(violations);
    st.requests.push(Recorded {
        at: Instant::now(),
        request: req,
        fields,
        status,
        response: body.clone(),
    });
    (status, body)
}

/// The checks every request must pass to look like lava-worker's or lava-run's.
fn check_request(st: &State, req: &RawRequest, v: &mut Vec<String>) -> Vec<(String, String)> {
    let what = format!("{} {}", req.method, req.path);
    let is_logs = req.path.starts_with(JOBS) && req.path.ends_with("/logs/");
    let ua = req.header("User-Agent").unwrap_or("");
    let agent = if is_logs { "lava " } else { "lava-worker " };
    match ua.strip_prefix(agent) {
        Some(ver) if !ver.is_empty() && !ver.contains(' ') => {
            let q = req
                .query
                .as_deref()
                .and_then(|q| q.strip_prefix("version="));
            if let Some(q) = q.filter(|q| *q != ver) {
                v.push(format!(
                    "{what}: User-Agent version {ver:?} differs from ?version={q}"
                ));
            }
        }
        _ => v.push(format!(
            "{what}: User-Agent {ua:?}, expected \"{agent}<version>\""
        )),
    }
    for (name, want) in [
        ("Accept-Encoding", "gzip, deflate"),
        ("Accept", "*/*"),
        ("Connection", "keep-alive"),
    ] {
        if req.header(name) != Some(want) {
            v.push(format!(
                "{what}: {name} is {:?}, python-requests sends {want:?}",
                req.header(name)
            ));
        }
    }
    let register = req.method == "POST" && req.path == WORKERS;
    match (register, req.header("LAVA-Token")) {
        (true, Some(_)) => v.push(format!("{what}: registration must not carry LAVA-Token")),
        (false, None) => v.push(format!("{what}: no LAVA-Token header")),
        _ => {}
    }
    if req.method == "GET" {
        if !req.body.is_empty() {
            v.push(format!("{what}: GET with a body"));
        }
        if req.path.starts_with(WORKERS) {
            match req.query.as_deref() {
                Some(q) if q.starts_with("version=") && !q.contains('&') => {}
                q => v.push(format!(
                    "{what}: query {q:?}, expected exactly version=<version>"
                )),
            }
        } else if req.query.is_some() {
            v.push(format!("{what}: unexpected query {:?}", req.query));
        }
        return Vec::new();
    }
    if req.method != "POST" {
        v.push(format!("{what}: method not used by lava-worker"));
        return Vec::new();
    }
    if req.header("Content-Type") != Some("application/x-www-form-urlencoded") {
        v.push(format!(
            "{what}: Content-Type {:?}",
            req.header("Content-Type")
        ));
    }
    if req
        .header("Content-Length")
        .and_then(|l| l.parse::<usize>().ok())
        != Some(req.body.len())
    {
        v.push(format!("{what}: Content-Length does not match the body"));
    }
    let text = String::from_utf8_lossy(&req.body).into_owned();
    let Some(fields) = form_decode(&text) else {
        v.push(format!("{what}: body is not form-encoded: {text:.200}"));
        return Vec::new();
    };
    if py_urlencode(&fields) != text {
        v.push(format!(
            "{what}: body bytes differ from python-requests' encoding of the same fields"
        ));
    }
    let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    let expected: &[&[&str]] = if register {
        &[&["name"], &["name", "username", "password"]]
    } else if is_logs {
        &[&["lines", "index"]]
    } else if names.first() == Some(&"state") && fields[0].1 == "RUNNING" {
        &[&["state"]]
    } else {
        &[&["state", "result", "error_type", "errors", "description"]]
    };
    if !expected.contains(&names.as_slice()) {
        v.push(format!(
            "{what}: form fields {names:?}, expected one of {expected:?}"
        ));
    }
    if is_logs {
        check_log_post(st, req, &fields, v);
    }
    fields
}

fn check_log_post(st: &State, req: &RawRequest, fields: &[(String, String)], v: &mut Vec<String>) {
    let what = format!("POST {}", req.path);
    let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, x)| x.as_str());
    let Some(lines) = get("lines") else { return };
    if !lines.starts_with("- ") {
        v.push(format!("{what}: lines does not start with \"- \""));
    }
    let records: Vec<&str> = lines.split("\n- ").collect();
    if records.len() > 1000 {
        v.push(format!(
            "{what}: {} records in one POST, lava-run sends at most 1000",
            records.len()
        ));
    }
    for r in &records {
        let r = r.strip_prefix("- ").unwrap_or(r);
        if !(r.starts_with("{\"dt\": \"") && r.contains("\", \"lvl\": \"") && r.ends_with('}'))
            || r.contains('\n')
        {
            v.push(format!(
                "{what}: record is not a one-line LAVA log mapping: {r:.200}"
            ));
        }
    }
    let id = job_id_of(&req.path);
    if let (Some(job), Some(index)) = (id.and_then(|i| st.jobs.get(&i)), get("index")) {
        match index.parse::<u64>() {
            Ok(i) if i > job.lines.len() as u64 => v.push(format!(
                "{what}: index {i} is past the {} lines the server holds: lines would be lost",
                job.lines.len()
            )),
            Ok(_) => {}
            Err(_) => v.push(format!("{what}: index {index:?} is not a number")),
        }
    }
}

fn job_id_of(path: &str) -> Option<u64> {
    path.strip_prefix(JOBS)?.split('/').next()?.parse().ok()
}

fn field<'a>(fields: &'a [(String, String)], k: &str) -> Option<&'a str> {
    fields.iter().find(|(n, _)| n == k).map(|(_, x)| x.as_str())
}

fn route(
    st: &mut State,
    req: &RawRequest,
    fields: &[(String, String)],
    v: &mut Vec<String>,
) -> (u16, String) {
    if req.path == WORKERS && req.method == "POST" {
        return register(st, fields);
    }
    let worker = req
        .path
        .strip_prefix(WORKERS)
        .and_then(|r| r.strip_suffix('/'));
    if let Some(name) = worker.filter(|n| req.method == "GET" && !n.contains('/')) {
        return ping(st, name, req);
    }
    if let Some(rest) = req.path.strip_prefix(JOBS) {
        let parts: Vec<&str> = rest.split('/').collect();
        if let Ok(id) = parts[0].parse::<u64>() {
            let Some(job) = st.jobs.get_mut(&id) else {
                return err(404, &format!("Unknown job '{id}'"));
            };
            match req.header("LAVA-Token") {
                None => return err(400, "Missing 'token'"),
                Some(t) if t != job.token => return err(400, "Invalid 'token'"),
                _ => {}
            }
            return match (parts.as_slice(), req.method.as_str()) {
                ([_, ""], "GET") => get_job(job),
                ([_, ""], "POST") => post_job(job, fields),
                ([_, "logs", ""], "POST") => post_logs(job, fields),
                _ => {
                    v.push(format!("{} {}: no such endpoint", req.method, req.path));
                    (404, "<h1>Not Found</h1>".into())
                }
            };
        }
    }
    v.push(format!("{} {}: no such endpoint", req.method, req.path));
    (404, "<h1>Not Found</h1>".into())
}

fn register(st: &mut State, fields: &[(String, String)]) -> (u16, String) {
    let Some(name) = field(fields, "name") else {
        return err(400, "Missing 'name'");
    };
    if st.workers.contains_key(name) {
        return err(403, &format!("Worker '{name}' already exists"));
    }
    let token = random_token();
    st.workers.insert(
        name.to_string(),
        DoubleWorker {
            name: name.to_string(),
            token: token.clone(),
            online: false,
            version: None,
            pings: 0,
        },
    );
    (
        200,
        format!(
            "{{\"name\": {}, \"token\": {}}}",
            py_json_str(name),
            py_json_str(&token)
        ),
    )
}

fn refs(jobs: &[&DoubleJob]) -> String {
    let items: Vec<String> = jobs
        .iter()
        .map(|j| format!("{{\"id\": {}, \"token\": {}}}", j.id, py_json_str(&j.token)))
        .collect();
    format!("[{}]", items.join(", "))
}

fn ping(st: &mut State, name: &str, req: &RawRequest) -> (u16, String) {
    let server_version = st.version.clone();
    let Some(w) = st.workers.get_mut(name) else {
        return err(404, &format!("Unknown worker '{name}'"));
    };
    match req.header("LAVA-Token") {
        None => return err(400, "Missing 'token'"),
        Some(t) if t != w.token => return err(400, "Invalid 'token'"),
        _ => {}
    }
    let version = req
        .query
        .as_deref()
        .and_then(form_decode)
        .and_then(|f| field(&f, "version").map(str::to_string));
    let Some(version) = version else {
        return err(400, "Missing 'version'");
    };
    let mismatch = version != server_version;
    w.version = Some(version.clone());
    w.pings += 1;
    w.online = !mismatch;
    let mine: Vec<&DoubleJob> = st.jobs.values().filter(|j| j.worker == name).collect();
    let of = |s: JobState| {
        mine.iter()
            .copied()
            .filter(|j| j.state == s)
            .collect::<Vec<_>>()
    };
    let start = if mismatch {
        Vec::new()
    } else {
        of(JobState::Scheduled)
    };
    let cancel = of(JobState::Canceling);
    let running = of(JobState::Running);
    if mismatch && cancel.is_empty() && running.is_empty() {
        return err(
            409,
            &format!("Version mismatch '{version}' vs '{server_version}'"),
        );
    }
    (
        200,
        format!(
            "{{\"cancel\": {}, \"running\": {}, \"start\": {}}}",
            refs(&cancel),
            refs(&running),
            refs(&start)
        ),
    )
}

fn get_job(job: &DoubleJob) -> (u16, String) {
    (
        200,
        format!(
            "{{\"definition\": {}, \"device\": {}, \"dispatcher\": \"\", \"env\": {}, \"env-dut\": \"\"}}",
            py_json_str(&job.definition),
            py_json_str(&job.device),
            py_json_str("overrides:\n  LC_ALL: C.UTF-8\n  PATH: /usr/local/bin:/usr/bin:/bin\n"),
        ),
    )
}

fn post_job(job: &mut DoubleJob, fields: &[(String, String)]) -> (u16, String) {
    let state = field(fields, "state").unwrap_or("");
    let cap = capitalize(state);
    match cap.as_str() {
        "Running" => {
            job.running_posts += 1;
            if job.state == JobState::Scheduled {
                job.state = JobState::Running;
            }
        }
        "Finished" => {
            let health = field(fields, "result").unwrap_or("");
            if health != "pass" && health != "fail" {
                return err(400, &format!("Invalid health '{health}'"));
            }
            job.finished_posts += 1;
            job.health = if job.state == JobState::Canceling {
                JobHealth::Canceled
            } else if health == "pass" {
                JobHealth::Complete
            } else {
                JobHealth::Incomplete
            };
            job.state = JobState::Finished;
            job.finish = Some(fields.to_vec());
        }
        "Submitted" | "Scheduling" | "Scheduled" | "Canceling" => {
            return err(400, &format!("Not handled state '{cap}'"));
        }
        _ => return err(400, &format!("Invalid state '{cap}'")),
    }
    (200, "{}".into())
}

/// Python's `str.capitalize`.
fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f
            .to_uppercase()
            .chain(c.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}

fn post_logs(job: &mut DoubleJob, fields: &[(String, String)]) -> (u16, String) {
    let Some(lines) = field(fields, "lines").filter(|l| !l.is_empty()) else {
        return err(400, "Missing 'lines'");
    };
    let Some(index) = field(fields, "index") else {
        return err(400, "Missing 'index'");
    };
    let Ok(index) = index.parse::<i64>() else {
        return err(400, "Invalid 'index'");
    };
    // lava-server: skip `line_count - index` lines already stored, count every line.
    let mut skip = job.lines.len() as i64 - index;
    let mut count = 0usize;
    for string in lines.split('\n') {
        let record = string.strip_prefix("- ").unwrap_or(string);
        if skip > 0 {
            skip -= 1;
            job.skipped_resends += 1;
        } else {
            job.lines.push(record.to_string());
        }
        count += 1;
    }
    job.log_posts.push((index.max(0) as u64, count, count));
    (200, format!("{{\"line_count\": {count}}}"))
}
