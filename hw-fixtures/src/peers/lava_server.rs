//! The real lava-server 2023.01 (Debian) for interop tests: its own PostgreSQL 15 instance,
//! gunicorn serving `lava_server.wsgi`, lava-publisher (events, so lava-scheduler schedules a
//! submitted job at once) and lava-scheduler, all on free loopback ports, all state in one
//! temporary directory (nothing under /etc/lava-server or /var/lib is written: settings are
//! overridden with `LAVA_SETTINGS_*` / `LAVA_YAML_SETTINGS_*` environment variables).
//! Installs nothing: `.ci/install-deps` installs postgresql and lava-server.
//!
//! Start-up takes ~20 s (initdb, `manage migrate`, admin user and token, device type), so
//! [`LavaServer::shared`] starts one per test process and stops it at exit.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::util::{free_tcp_port, require_program, wait_for_tcp};

mod rest;

/// Debian's python3 must come first (real-peers.md §1): lava-server's scripts run `python3`.
const DEBIAN_PATH: &str = "/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin";
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// The REST token of the `admin` superuser the harness creates.
pub const ADMIN_TOKEN: &str = "labd-interop-admin-token";

/// A running lava-server with its database.
pub struct LavaServer {
    root: PathBuf,
    http_port: u16,
    publisher_port: u16,
    env: Vec<(String, String)>,
}

/// Processes of the shared server, in stop order, for the exit handler.
static CHILDREN: Mutex<Vec<(String, u32)>> = Mutex::new(Vec::new());
static SHARED: OnceLock<Result<LavaServer, String>> = OnceLock::new();
static ROOT: Mutex<Option<PathBuf>> = Mutex::new(None);

extern "C" fn stop_at_exit() {
    stop_children();
    if let Some(r) = ROOT.lock().ok().and_then(|r| r.clone()) {
        let _ = std::fs::remove_dir_all(r);
    }
}

/// SIGTERM each process in order (scheduler, gunicorn, publisher, PostgreSQL), waiting for
/// each, as real-peers.md §7.6 stops them.
fn stop_children() {
    let children = CHILDREN
        .lock()
        .map(|mut c| std::mem::take(&mut *c))
        .unwrap_or_default();
    for (name, pid) in children.iter().rev() {
        let pid = nix::unistd::Pid::from_raw(*pid as i32);
        // PostgreSQL: SIGINT is its "fast" shutdown.
        let sig = if name == "postgres" {
            nix::sys::signal::Signal::SIGINT
        } else {
            nix::sys::signal::Signal::SIGTERM
        };
        let _ = nix::sys::signal::kill(pid, sig);
        let deadline = Instant::now() + Duration::from_secs(8);
        loop {
            match nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                Ok(nix::sys::wait::WaitStatus::StillAlive) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(nix::sys::wait::WaitStatus::StillAlive) => {
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                    let _ = nix::sys::wait::waitpid(pid, None);
                    break;
                }
                _ => break,
            }
        }
    }
}

fn postgres_ids() -> anyhow::Result<(u32, u32)> {
    let name = std::ffi::CString::new("postgres")?;
    // SAFETY: getpwnam returns a pointer to static storage or null; read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        bail!("no postgres user: run .ci/install-deps to install postgresql");
    }
    // SAFETY: checked non-null above.
    Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

impl LavaServer {
    /// The server shared by every test of this process, started on first use.
    pub fn shared() -> anyhow::Result<&'static LavaServer> {
        SHARED
            .get_or_init(|| {
                // SAFETY: registering a plain extern "C" fn with no captured state.
                unsafe { libc::atexit(stop_at_exit) };
                Self::start().map_err(|e| {
                    // Keep the directory (logs) for a post-mortem; the processes still stop.
                    *ROOT.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    format!("{e:#}")
                })
            })
            .as_ref()
            .map_err(|e| anyhow::anyhow!("lava-server did not start: {e}"))
    }

    fn start() -> anyhow::Result<Self> {
        for p in ["lava-server", "gunicorn3", "psql"] {
            require_program(p)?;
        }
        let initdb = Path::new(PG_BIN).join("initdb");
        if !initdb.is_file() {
            bail!(
                "{} is missing: run .ci/install-deps to install postgresql",
                initdb.display()
            );
        }
        if !nix::unistd::geteuid().is_root() {
            bail!(
                "the lava-server harness must run as root: it runs PostgreSQL as the postgres user"
            );
        }
        let (pg_uid, pg_gid) = postgres_ids()?;
        let root = tempfile::Builder::new()
            .prefix("labd-lava-server-")
            .tempdir()?
            .keep();
        *ROOT.lock().unwrap_or_else(|p| p.into_inner()) = Some(root.clone());
        std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let pgdata = root.join("pg");
        for d in ["pg", "media", "devices"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        std::os::unix::fs::chown(&pgdata, Some(pg_uid), Some(pg_gid))?;
        let as_postgres = |prog: &str| {
            let mut c = Command::new(Path::new(PG_BIN).join(prog));
            std::os::unix::process::CommandExt::uid(&mut c, pg_uid);
            std::os::unix::process::CommandExt::gid(&mut c, pg_gid);
            c.env("PATH", DEBIAN_PATH).current_dir(&root);
            c
        };
        run(
            as_postgres("initdb").args(["-D"]).arg(&pgdata).args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ]),
            &root.join("initdb.log"),
        )?;
        let pg_port = free_tcp_port();
        let pg = as_postgres("postgres")
            .arg("-D")
            .arg(&pgdata)
            .args(["-p", &pg_port.to_string(), "-k"])
            .arg(&pgdata)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdin(Stdio::null())
            .stdout(log_file(&root, "postgres.log")?)
            .stderr(log_file(&root, "postgres.log")?)
            .spawn()
            .context("starting postgres")?;
        push_child("postgres", pg.id());
        wait_for_tcp(
            SocketAddr::from(([127, 0, 0, 1], pg_port)),
            Duration::from_secs(30),
        )
        .context("PostgreSQL did not listen")?;
        let mut ready = false;
        for _ in 0..100 {
            let ok = Command::new("psql")
                .env("PATH", DEBIAN_PATH)
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &pg_port.to_string(),
                    "-U",
                    "postgres",
                ])
                .args(["-c", "CREATE DATABASE lavaserver"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?
                .success();
            if ok {
                ready = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !ready {
            bail!(
                "cannot create the lavaserver database (see {}/postgres.log)",
                root.display()
            );
        }

        let event_port = free_tcp_port();
        let publisher_port = free_tcp_port();
        let http_port = free_tcp_port();
        let databases = format!(
            "{{\"default\": {{\"ENGINE\": \"django.db.backends.postgresql\", \"NAME\": \"lavaserver\", \"USER\": \"postgres\", \"PASSWORD\": \"\", \"HOST\": \"127.0.0.1\", \"PORT\": {pg_port}}}}}"
        );
        let r = root.display();
        let env: Vec<(String, String)> = [
            ("PATH", DEBIAN_PATH.to_string()),
            ("LAVA_YAML_SETTINGS_DATABASES", databases),
            ("LAVA_SETTINGS_MEDIA_ROOT", format!("{r}/media")),
            ("LAVA_SETTINGS_DEVICES_PATH", format!("{r}/devices")),
            ("LAVA_SETTINGS_DJANGO_LOGFILE", format!("{r}/django.log")),
            ("LAVA_YAML_SETTINGS_EVENT_NOTIFICATION", "true".to_string()),
            (
                "LAVA_SETTINGS_EVENT_SOCKET",
                format!("tcp://127.0.0.1:{event_port}"),
            ),
            (
                "LAVA_SETTINGS_INTERNAL_EVENT_SOCKET",
                format!("ipc://{r}/internal.events"),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let server = LavaServer {
            root: root.clone(),
            http_port,
            publisher_port,
            env,
        };
        server.manage(&["migrate", "--noinput"])?;
        server.manage(&[
            "users",
            "add",
            "admin",
            "--passwd",
            "admin",
            "--superuser",
            "--staff",
            "--email",
            "admin@localhost",
        ])?;
        server.manage(&[
            "tokens",
            "add",
            "--user",
            "admin",
            "--secret",
            ADMIN_TOKEN,
            "--description",
            "tests",
        ])?;
        server.manage(&["device-types", "add", "qemu"])?;

        let publisher = server
            .command("lava-server")
            .args(["manage", "lava-publisher", "--level", "DEBUG", "--log-file"])
            .arg(root.join("lava-publisher.log"))
            .args(["--host", "127.0.0.1", "--port", &publisher_port.to_string()])
            .args(["-u", "root", "-g", "root"])
            .spawn()
            .context("starting lava-publisher")?;
        push_child("lava-publisher", publisher.id());
        let mut gunicorn = server
            .command("gunicorn3")
            .args(["lava_server.wsgi", "--log-level", "DEBUG", "--log-file"])
            .arg(root.join("gunicorn.log"))
            .args(["--worker-class", "eventlet", "--workers", "2", "--bind"])
            .arg(format!("127.0.0.1:{http_port}"))
            .spawn()
            .context("starting gunicorn")?;
        push_child("gunicorn", gunicorn.id());
        let scheduler = server
            .command("lava-server")
            .args(["manage", "lava-scheduler", "--level", "DEBUG", "--log-file"])
            .arg(root.join("lava-scheduler.log"))
            .args(["--event-url", &format!("tcp://127.0.0.1:{event_port}")])
            .args(["-u", "root", "-g", "root"])
            .spawn()
            .context("starting lava-scheduler")?;
        push_child("lava-scheduler", scheduler.id());
        // Generous: on a loaded 2-core machine Django's start-up alone can take a minute.
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            if let Ok((200, body)) = server.http("GET", "/api/v0.2/system/version/", None) {
                if body.contains("\"version\":\"2023.01\"") {
                    break;
                }
                bail!("lava-server is not 2023.01: {body}");
            }
            if let Ok(Some(status)) = gunicorn.try_wait() {
                bail!(
                    "gunicorn exited ({status}); end of {}/gunicorn.log:\n{}",
                    root.display(),
                    tail(&root.join("gunicorn.log"), 30)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "gunicorn did not answer within 240 s; end of {}/gunicorn.log:\n{}",
                    root.display(),
                    tail(&root.join("gunicorn.log"), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        wait_for_tcp(
            SocketAddr::from(([127, 0, 0, 1], publisher_port)),
            Duration::from_secs(30),
        )
        .context("lava-publisher did not listen")?;
        Ok(server)
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("HOME", &self.root)
            .env("LANG", "C.UTF-8")
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&self.root, "lava-server.out").map_or(Stdio::null(), Stdio::from));
        c
    }

    /// `lava-server manage ARGS...`; returns its standard output.
    pub fn manage(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self
            .command("lava-server")
            .arg("manage")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("lava-server manage {args:?}"))?;
        if !out.status.success() {
            bail!(
                "lava-server manage {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Base URL of the server (what labd's `[master] url` is), with a trailing slash.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.http_port)
    }

    /// lava-publisher's event websocket (what lava-worker's `--ws-url` would be).
    pub fn ws_url(&self) -> String {
        format!("http://127.0.0.1:{}/ws/", self.publisher_port)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `lava-server manage workers add NAME`; returns the worker token.
    pub fn add_worker(&self, name: &str) -> anyhow::Result<String> {
        let out = self.manage(&["workers", "add", name, "--description", "labd interop"])?;
        self.worker_token(name)
            .with_context(|| format!("workers add printed {out:?}"))
    }

    /// The worker's token, from `lava-server manage workers details`.
    pub fn worker_token(&self, name: &str) -> anyhow::Result<String> {
        let out = self.manage(&["workers", "details", name])?;
        out.lines()
            .find_map(|l| {
                l.strip_prefix("token")?
                    .split_once(':')
                    .map(|(_, t)| t.trim().to_string())
            })
            .context("no token line")
    }

    /// A qemu device on `worker`, tagged `tag` so only jobs asking for the tag land on it.
    pub fn add_qemu_device(&self, name: &str, worker: &str, tag: &str) -> anyhow::Result<()> {
        let dict = "{% extends 'qemu.jinja2' %}\n{% set mac_addr = '52:54:00:12:34:59' %}\n{% set memory = 256 %}\n{% set no_kvm = True %}\n{% set netdevice = 'user,restrict=on' %}\n";
        std::fs::write(
            self.root.join("devices").join(format!("{name}.jinja2")),
            dict,
        )?;
        self.manage(&[
            "devices",
            "add",
            "--device-type",
            "qemu",
            "--worker",
            worker,
            name,
            "--tags",
            tag,
        ])?;
        Ok(())
    }
}

/// The last `n` lines of a log file, for error messages.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn push_child(name: &str, pid: u32) {
    CHILDREN
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((name.to_string(), pid));
}

fn log_file(root: &Path, name: &str) -> anyhow::Result<std::fs::File> {
    Ok(std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join(name))?)
}

fn run(cmd: &mut Command, log: &Path) -> anyhow::Result<()> {
    let f = log_file(
        log.parent().unwrap_or(Path::new("/")),
        &log.file_name().unwrap_or_default().to_string_lossy(),
    )?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f)
        .status()
        .with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        let mut text = String::new();
        let _ = std::fs::File::open(log).and_then(|mut f| f.read_to_string(&mut text));
        bail!("{cmd:?} failed ({status}): {text}");
    }
    Ok(())
}
