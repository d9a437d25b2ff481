//! `[master]`: how labd reaches its LAVA master (lava-server's worker HTTP API).
//!
//! ```toml
//! [master]
//! url = "http://lava.example.com/"   # the server's base URL, as lava-worker's --url
//! name = "worker1"                   # worker name on the server; default [worker] name
//! token_file = "/etc/labd/lava-token" # or token = "..."; neither: auto-register
//! ping_interval = 20                 # seconds (lava-worker --ping-interval)
//! version = "2023.01"                # sent with every ping; must equal the server's
//! http_timeout = 600                 # seconds (lava-worker --http-timeout)
//! job_log_interval = 5               # seconds (lava-run --job-log-interval)
//! ws_url = "http://lava.example.com/ws/" # lava-publisher's events; default <url>/ws/; "" = off
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::ids::WorkerName;
use crate::inventory::{Diagnostics, DurationValue, Inventory};

/// The LAVA version labd announces by default: the one whose protocol it speaks.
pub const DEFAULT_VERSION: &str = "2023.01";

/// `[master]` as written in the inventory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterConfig {
    /// Base URL of the server, e.g. `http://lava.example.com/` (a trailing `/` is ignored).
    pub url: Spanned<String>,
    /// The worker's name on the server; `[worker] name` when absent.
    pub name: Option<Spanned<WorkerName>>,
    /// The worker token, inline. Prefer `token_file`.
    pub token: Option<Spanned<String>>,
    /// A file holding the worker token. If it does not exist labd registers the worker and
    /// writes the token there (mode 0600), as lava-worker does with `<worker_dir>/token`.
    pub token_file: Option<Spanned<PathBuf>>,
    pub ping_interval: Option<Spanned<DurationValue>>,
    /// Version string sent with every ping; lava-server answers 409 unless it equals its own.
    pub version: Option<Spanned<String>>,
    pub http_timeout: Option<Spanned<DurationValue>>,
    pub job_log_interval: Option<Spanned<DurationValue>>,
    /// lava-publisher's event websocket (lava-worker --ws-url); default `<url>/ws/`, `""` to
    /// disable. With it, labd pings as soon as a job for it is Scheduled or Canceling.
    pub ws_url: Option<Spanned<String>>,
}

/// Where the worker token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// Given in the inventory.
    Inline(String),
    /// Read from this file, or obtained by registering and then written there (0600).
    File(PathBuf),
}

/// `[master]` with defaults applied: what the master link runs with.
#[derive(Debug, Clone)]
pub struct MasterSettings {
    /// Base URL without trailing `/`.
    pub url: String,
    pub name: WorkerName,
    pub token: TokenSource,
    pub ping_interval: Duration,
    pub version: String,
    pub http_timeout: Duration,
    pub job_log_interval: Duration,
    /// The event websocket, or `None` when disabled.
    pub ws_url: Option<String>,
}

impl MasterSettings {
    /// Settings for tests and tools that do not go through an inventory file.
    pub fn new(url: &str, name: WorkerName, token: TokenSource) -> Self {
        let url = url.trim_end_matches('/');
        Self {
            ws_url: Some(format!("{url}/ws/")),
            url: url.to_string(),
            name,
            token,
            ping_interval: Duration::from_secs(20),
            version: DEFAULT_VERSION.to_string(),
            http_timeout: Duration::from_secs(600),
            job_log_interval: Duration::from_secs(5),
        }
    }
}

impl MasterConfig {
    /// Applies defaults; `worker` and `state_dir` come from `[worker]`.
    pub fn settings(&self, worker: &WorkerName, state_dir: &Path) -> MasterSettings {
        let dur = |v: &Option<Spanned<DurationValue>>, d: u64| {
            v.as_ref()
                .map_or(Duration::from_secs(d), |v| v.get_ref().get())
        };
        let token = match (&self.token, &self.token_file) {
            (Some(t), _) => TokenSource::Inline(t.get_ref().trim().to_string()),
            (None, Some(f)) => TokenSource::File(f.get_ref().clone()),
            (None, None) => TokenSource::File(default_token_file(state_dir)),
        };
        let url = self.url.get_ref().trim_end_matches('/').to_string();
        let ws_url = match &self.ws_url {
            Some(w) if w.get_ref().trim().is_empty() => None,
            Some(w) => Some(w.get_ref().trim().to_string()),
            None => Some(format!("{url}/ws/")),
        };
        MasterSettings {
            ws_url,
            url,
            name: self
                .name
                .as_ref()
                .map_or_else(|| worker.clone(), |n| n.get_ref().clone()),
            token,
            ping_interval: dur(&self.ping_interval, 20),
            version: self
                .version
                .as_ref()
                .map_or_else(|| DEFAULT_VERSION.to_string(), |v| v.get_ref().clone()),
            http_timeout: dur(&self.http_timeout, 600),
            job_log_interval: dur(&self.job_log_interval, 5),
        }
    }
}

/// Where an auto-registered token is kept when no `token_file` is configured.
pub fn default_token_file(state_dir: &Path) -> PathBuf {
    state_dir.join("master").join("token")
}

/// Checks of `[master]`: a usable URL, one token source, sane intervals, a sendable version.
pub fn validate(inv: &Inventory, diags: &mut Diagnostics) {
    let Some(m) = &inv.master else {
        return;
    };
    let src = &inv.source;
    let url = m.url.get_ref();
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {
            if u.query().is_some() || u.fragment().is_some() {
                diags.push(src.diag(
                    m.url.span(),
                    "master.url",
                    format!("{url:?}: the master URL must not have a query or fragment"),
                ));
            }
        }
        Ok(u) => diags.push(src.diag(
            m.url.span(),
            "master.url",
            format!(
                "{url:?}: scheme {:?} is not http or https (lava-server's worker API is HTTP)",
                u.scheme()
            ),
        )),
        Err(e) => diags.push(src.diag(
            m.url.span(),
            "master.url",
            format!("{url:?} is not a URL: {e} (example: \"http://lava.example.com/\")"),
        )),
    }
    if let Some(w) = m.ws_url.as_ref().filter(|w| !w.get_ref().trim().is_empty()) {
        let ws = w.get_ref().trim();
        match reqwest::Url::parse(ws) {
            Ok(u) if matches!(u.scheme(), "http" | "https" | "ws" | "wss") => {}
            _ => diags.push(src.diag(
                w.span(),
                "master.ws_url",
                format!("{ws:?} is not an http(s) or ws(s) URL (\"\" disables the event feed)"),
            )),
        }
    }
    if let (Some(t), Some(_)) = (&m.token, &m.token_file) {
        diags.push(src.diag(
            t.span(),
            "master.token",
            "set token or token_file, not both",
        ));
    }
    if let Some(t) = &m.token {
        let tok = t.get_ref().trim();
        if tok.is_empty() || tok.chars().any(|c| c.is_control() || c == ' ') {
            diags.push(src.diag(
                t.span(),
                "master.token",
                "token must be non-empty printable text without spaces (an HTTP header value)",
            ));
        }
    }
    if let Some(f) = &m.token_file {
        if !f.get_ref().is_absolute() {
            diags.push(src.diag(
                f.span(),
                "master.token_file",
                format!("token_file {:?} must be an absolute path", f.get_ref()),
            ));
        }
    }
    if let Some(v) = &m.version {
        let s = v.get_ref();
        if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            diags.push(src.diag(
                v.span(),
                "master.version",
                format!("version {s:?} must be non-empty without spaces (e.g. \"2023.01\")"),
            ));
        }
    }
    let checks = [
        ("master.ping_interval", &m.ping_interval, 3600),
        ("master.http_timeout", &m.http_timeout, 86_400),
        ("master.job_log_interval", &m.job_log_interval, 3600),
    ];
    for (key, value, max_s) in checks {
        if let Some(v) = value {
            let d = v.get_ref().get();
            if d.is_zero() {
                diags.push(src.diag(v.span(), key, "must be greater than zero"));
            } else if d > Duration::from_secs(max_s) {
                diags.push(src.diag(
                    v.span(),
                    key,
                    format!(
                        "{} is more than the maximum of {max_s} s",
                        humantime::format_duration(d)
                    ),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const BASE: &str = "[worker]\nname = \"worker1\"\nstate_dir = \"/var/lib/labd\"\n";

    fn diags(master: &str) -> Vec<String> {
        let text = format!("{BASE}[master]\n{master}");
        match Inventory::parse(Path::new("inv.toml"), &text) {
            Ok(_) => Vec::new(),
            Err(e) => e.diagnostics().iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn defaults_follow_lava_worker() {
        let text = format!("{BASE}[master]\nurl = \"http://lava.example.com/\"\n");
        let inv = Inventory::parse(Path::new("inv.toml"), &text).unwrap();
        let s = inv
            .master
            .as_ref()
            .unwrap()
            .settings(&inv.worker.name, &inv.worker.state_dir);
        assert_eq!(s.url, "http://lava.example.com");
        assert_eq!(s.name.as_str(), "worker1");
        assert_eq!(s.ping_interval, Duration::from_secs(20));
        assert_eq!(s.job_log_interval, Duration::from_secs(5));
        assert_eq!(s.http_timeout, Duration::from_secs(600));
        assert_eq!(s.version, "2023.01");
        assert_eq!(s.ws_url.as_deref(), Some("http://lava.example.com/ws/"));
        assert_eq!(
            s.token,
            TokenSource::File("/var/lib/labd/master/token".into())
        );
    }

    #[test]
    fn explicit_values() {
        let text = format!(
            "{BASE}[master]\nurl = \"https://lava/\"\nname = \"disp-2\"\ntoken = \"abc\"\nping_interval = \"5s\"\nversion = \"2024.01\"\njob_log_interval = 1\nws_url = \"\"\n"
        );
        let inv = Inventory::parse(Path::new("inv.toml"), &text).unwrap();
        let s = inv
            .master
            .as_ref()
            .unwrap()
            .settings(&inv.worker.name, &inv.worker.state_dir);
        assert_eq!(s.name.as_str(), "disp-2");
        assert_eq!(s.token, TokenSource::Inline("abc".into()));
        assert_eq!(s.ping_interval, Duration::from_secs(5));
        assert_eq!(s.version, "2024.01");
        assert_eq!(s.job_log_interval, Duration::from_secs(1));
        assert_eq!(s.ws_url, None);
    }

    #[test]
    fn bad_values_name_file_line_and_key() {
        assert_eq!(
            diags("url = \"ftp://lava/\"\n"),
            vec![
                "inv.toml:5:7: master.url: \"ftp://lava/\": scheme \"ftp\" is not http or https (lava-server's worker API is HTTP)"
            ]
        );
        let d = diags("url = \"http://lava/\"\ntoken = \"a\"\ntoken_file = \"/t\"\n");
        assert_eq!(
            d,
            vec!["inv.toml:6:9: master.token: set token or token_file, not both"]
        );
        let d = diags("url = \"http://lava/\"\nping_interval = 0\n");
        assert_eq!(
            d,
            vec!["inv.toml:6:17: master.ping_interval: must be greater than zero"]
        );
        let d = diags("url = \"http://lava/\"\ntoken_file = \"tok\"\n");
        assert_eq!(
            d,
            vec!["inv.toml:6:14: master.token_file: token_file \"tok\" must be an absolute path"]
        );
        let d = diags("url = \"http://lava/\"\nversion = \"2023 .01\"\n");
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].starts_with("inv.toml:6:11: master.version:"), "{d:?}");
        let d = diags("url = \"not a url\"\n");
        assert!(
            d[0].starts_with("inv.toml:5:7: master.url: \"not a url\" is not a URL"),
            "{d:?}"
        );
        let d = diags("url = \"http://lava/\"\nname = \"../x\"\n");
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].starts_with("inv.toml:6:8: name:"), "{d:?}");
        let d = diags("url = \"http://lava/\"\nws_url = \"tcp://x\"\n");
        assert!(d[0].starts_with("inv.toml:6:10: master.ws_url:"), "{d:?}");
        let d = diags("url = \"http://lava/\"\nping = 3\n");
        assert!(d[0].contains("unknown field `ping`"), "{d:?}");
    }
}
