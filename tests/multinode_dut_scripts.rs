//! labd's DUT helper scripts against LAVA 2023.01's own (from Debian's lava-dispatcher package,
//! extracted by .ci/install-deps), both run by real shells (`/bin/sh` = dash, and busybox sh as
//! on small boards), with this test playing the dispatcher over pipes: same requests on the
//! console, same cache file, same outputs and exit statuses.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use labd::multinode::dut::{DutParams, console, find_request, helper_scripts};
use labd_hw_fixtures::peers::lava_dispatcher;

const ROLES: [(&str, &str); 3] = [("100", "server"), ("101", "client"), ("102", "client")];

/// Installs labd's scripts in `dir/bin`.
fn install_labd(dir: &Path) -> PathBuf {
    let roles = ROLES
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let p = DutParams::new("101", "client", roles, dir.to_str().unwrap());
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for s in helper_scripts(&p) {
        let path = bin.join(s.name);
        std::fs::write(&path, &s.contents).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(s.mode)).unwrap();
    }
    bin
}

/// Installs LAVA's scripts in `dir/bin` with the header MultinodeOverlayAction writes.
fn install_lava(dir: &Path, cache: &Path) -> PathBuf {
    let roles: Vec<(String, String)> = ROLES
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    lava_dispatcher::install_multinode_helpers(dir, "/bin/sh", "101", "client", &roles, cache)
        .expect("LAVA's helper scripts (run .ci/install-deps)")
}

#[derive(Debug, PartialEq)]
struct Run {
    /// stdout without the debug lines (they carry the date).
    out: String,
    requests: Vec<String>,
    status: i32,
    cache: Option<String>,
}

/// Runs `cmd` with `bin` first on PATH; answers each request with `reply(request)` written as
/// the dispatcher writes it.
fn run(
    shell: &[&str],
    bin: &Path,
    cache: &Path,
    cmd: &str,
    reply: &dyn Fn(&console::DutRequest) -> Option<String>,
) -> Run {
    let _ = std::fs::remove_file(cache);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let mut child = Command::new(shell[0])
        .args(&shell[1..])
        .arg("-c")
        .arg(cmd)
        .env("PATH", path)
        .env("LAVA_MULTI_NODE_CACHE", cache)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut out = String::new();
    let mut requests = Vec::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        if let Some(m) = find_request(&line) {
            requests.push(line[m.start..m.end].to_string());
            if let Some(r) = reply(&m.request) {
                stdin
                    .write_all(console::console_bytes(&r, "\n").as_bytes())
                    .unwrap();
            }
        }
        if line.contains("_DEBUG ") {
            continue;
        }
        out.push_str(&line);
        out.push('\n');
    }
    drop(stdin);
    let status = child.wait().unwrap().code().unwrap_or(-1);
    Run {
        out,
        requests,
        status,
        cache: std::fs::read_to_string(cache).ok(),
    }
}

fn shells() -> Vec<Vec<&'static str>> {
    labd_hw_fixtures::require_program("busybox").expect("busybox");
    vec![vec!["/bin/sh"], vec!["busybox", "sh"]]
}

/// Each case: command, reply to its request(s), expected request lines (checked on labd's).
fn cases() -> Vec<(&'static str, Option<&'static str>)> {
    vec![
        ("lava-self", None),
        ("lava-role; echo", None),
        ("lava-role list", None),
        ("lava-group", None),
        ("lava-group client; echo \" rc=$?\"", None),
        ("lava-group server; echo \" rc=$?\"", None),
        ("lava-group nobody; echo \"rc=$?\"", None),
        ("lava-send ready", None),
        (
            "lava-send ready role=client self=101 junk ip=10.0.0.1",
            None,
        ),
        ("lava-send data 'k=a   b' x= =y k2=v", None),
        ("lava-send k=v; echo \"rc=$?\"", None),
        ("lava-send; echo \"rc=$?\"", None),
        (
            "lava-wait ipaddr; echo \"rc=$?\"",
            Some("<LAVA_WAIT_COMPLETE 100:ipaddr=10.0.0.1 100:port=5000>"),
        ),
        (
            "lava-wait ipaddr; echo \"rc=$?\"",
            Some("<LAVA_WAIT_COMPLETE nack>"),
        ),
        (
            "lava-wait ipaddr",
            Some("<LAVA_WAIT_COMPLETE 100:msg=a b c 12:30 100:k=v>"),
        ),
        (
            "lava-wait-all ready; echo \"rc=$?\"",
            Some("<LAVA_WAIT_ALL_COMPLETE 100:a=1 101:b=2 102:c=3>"),
        ),
        (
            "lava-wait-all ready client",
            Some("<LAVA_WAIT_ALL_COMPLETE 101:b=2 102:c=3>"),
        ),
        (
            "lava-wait-all ready; echo \"rc=$?\"",
            Some("<LAVA_WAIT_ALL_COMPLETE nack>"),
        ),
        ("lava-wait-all ready", Some("<LAVA_WAIT_ALL_COMPLETE>")),
        (
            "lava-sync booted; echo \"rc=$?\"",
            Some("<LAVA_SYNC_COMPLETE>"),
        ),
        (
            "lava-sync booted; echo \"rc=$?\"",
            Some("<LAVA_SYNC_COMPLETE nack>"),
        ),
        ("lava-wait 'two words'", Some("<LAVA_WAIT_COMPLETE>")),
    ]
}

#[test]
fn labd_helpers_behave_like_lavas() {
    let dir = tempfile::tempdir().unwrap();
    let labd_bin = install_labd(&dir.path().join("labd"));
    let cache = dir.path().join("cache.txt");
    let lava_bin = install_lava(&dir.path().join("lava"), &cache);
    for shell in shells() {
        for (cmd, reply) in cases() {
            let answer = |_: &console::DutRequest| reply.map(str::to_string);
            let lava = run(&shell, &lava_bin, &cache, cmd, &answer);
            let labd = run(&shell, &labd_bin, &cache, cmd, &answer);
            assert_eq!(labd, lava, "{shell:?}: {cmd}");
        }
    }
}

#[test]
fn request_lines_and_cache_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let bin = install_labd(dir.path());
    let cache = dir.path().join("sub/cache.txt");
    let r = run(
        &["/bin/sh"],
        &bin,
        &cache,
        "lava-send ready role=client   self=101 junk; lava-wait-all ready; cat \"$LAVA_MULTI_NODE_CACHE\"",
        &|req| {
            (req.name == "WAIT_ALL")
                .then(|| "<LAVA_WAIT_ALL_COMPLETE 100:role=server 101:role=client>".to_string())
        },
    );
    assert_eq!(
        r.requests,
        [
            "<LAVA_MULTI_NODE> <LAVA_SEND ready role=client self=101>",
            "<LAVA_MULTI_NODE> <LAVA_WAIT_ALL ready>"
        ]
    );
    assert_eq!(
        r.cache.as_deref(),
        Some("100:role=server\n101:role=client\n")
    );
    assert!(
        r.out.ends_with("100:role=server\n101:role=client\n"),
        "{}",
        r.out
    );
    assert_eq!(r.status, 0);
}

#[test]
fn lava_network_broadcast_collect_query_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let bin = install_labd(dir.path());
    let net = dir.path().join("net.txt");
    let hosts = dir.path().join("hosts");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    for shell in shells() {
        let _ = std::fs::remove_file(&hosts);
        let out = Command::new(shell[0])
            .args(&shell[1..])
            .arg("-c")
            .arg("LAVA_MULTI_NODE_DEBUG= lava-network broadcast lo")
            .env("PATH", &path)
            .output()
            .unwrap();
        let line = String::from_utf8(out.stdout).unwrap();
        let req = find_request(&line).expect(&line).request;
        assert_eq!(req.name, "SEND");
        assert_eq!(req.params[0], "network_info");
        let data = console::send_data(&req.params);
        assert!(
            data.contains(&("ipv4".into(), "127.0.0.1".into())),
            "{line}"
        );
        assert!(
            data.contains(&("netmask".into(), "255.0.0.0".into())),
            "{line}"
        );
        assert!(
            data.contains(&("mac".into(), "00:00:00:00:00:00".into())),
            "{line} {data:?}"
        );
        assert!(data.iter().any(|(k, _)| k == "hostname"), "{line}");
        assert!(data.iter().any(|(k, _)| k == "hostname_full"), "{line}");

        let collect = run(
            &shell,
            &bin,
            &dir.path().join("unused"),
            &format!(
                "export LAVA_MULTI_NODE_NETWORK_CACHE={net}; lava-network collect lo server && \
                 lava-network query 101 ipv4 && lava-network hosts {hosts} && cat {hosts}",
                net = net.display(),
                hosts = hosts.display()
            ),
            &|_| {
                Some(
                    "<LAVA_WAIT_ALL_COMPLETE 100:ipv4=10.0.0.1 100:hostname=board0 101:ipv4=10.0.0.2>"
                        .into(),
                )
            },
        );
        assert_eq!(
            collect.requests,
            ["<LAVA_MULTI_NODE> <LAVA_WAIT_ALL network_info server>"]
        );
        assert_eq!(
            collect.out,
            "<LAVA_MULTI_NODE> <LAVA_WAIT_ALL network_info server>\n\
             10.0.0.2\n10.0.0.1\tboard0\n10.0.0.2\t101\n",
            "{shell:?}"
        );
    }
}

/// Plays the dispatcher for one DUT shell over pipes: every request the helpers print goes
/// through labd's `dut::handle` to a real coordinator, and the reply is written back.
async fn dispatcher_for(
    bin: PathBuf,
    cache: PathBuf,
    script: &str,
    client: labd::multinode::CoordinatorClient,
) -> (String, Vec<String>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let mut child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .env("PATH", path)
        .env("LAVA_MULTI_NODE_CACHE", &cache)
        .env("LAVA_MULTI_NODE_DEBUG", "")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = String::new();
    let mut results = Vec::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(m) = find_request(&line) {
            let o = labd::multinode::dut::handle(&m.request, &client, "\n").await;
            if let Some(r) = o.result {
                results.push(format!(
                    "{} {}",
                    r.test_case_id,
                    if r.pass { "pass" } else { "fail" }
                ));
            }
            if let Some(c) = o.console {
                stdin.write_all(c.as_bytes()).await.unwrap();
            }
            continue;
        }
        out.push_str(&line);
        out.push('\n');
    }
    assert!(child.wait().await.unwrap().success());
    (out, results)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_duts_talk_through_labd_and_a_real_coordinator() {
    use labd::multinode::server::{Server, ServerConfig};
    use labd::multinode::{ClientSettings, CoordinatorClient, NodeIdentity};
    let server = Server::start(ServerConfig {
        bind: "127.0.0.1".parse().unwrap(),
        port: 0,
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let settings = ClientSettings::at(
        "127.0.0.1",
        server.local_addr().port(),
        std::time::Duration::from_millis(50),
    );
    let dir = tempfile::tempdir().unwrap();
    let bin = install_labd(dir.path());
    let node = |job: &str, role: &str| {
        CoordinatorClient::new(
            settings.clone(),
            NodeIdentity {
                job_id: job.into(),
                group: "e2e".into(),
                role: role.into(),
                group_size: 2,
                hostname: "worker".into(),
            },
        )
    };
    let (a, b) = (node("100", "server"), node("101", "client"));
    let (ra, rb) = tokio::join!(a.group_data(), b.group_data());
    assert_eq!(ra.unwrap(), rb.unwrap());
    let server_script = "lava-send ipaddr ip=10.0.0.1 port=5000; lava-sync ready; \
                         lava-wait-all result; cat \"$LAVA_MULTI_NODE_CACHE\"";
    let client_script = "lava-wait ipaddr; cat \"$LAVA_MULTI_NODE_CACHE\"; \
                         lava-send result who=client; lava-sync ready; \
                         lava-wait-all result client; cat \"$LAVA_MULTI_NODE_CACHE\"; \
                         lava-sync done-all && echo finished";
    let ((out_a, res_a), (out_b, res_b)) = tokio::join!(
        async {
            // The job itself (not its DUT) also sends, as a protocol action in the job would.
            let who = labd::multinode::client::message_from_pairs([("who", "server")]);
            a.lava_send("result", who).await.unwrap();
            let r = dispatcher_for(
                bin.clone(),
                dir.path().join("a.txt"),
                server_script,
                a.clone(),
            )
            .await;
            a.lava_sync("done-all").await.unwrap();
            r
        },
        dispatcher_for(
            bin.clone(),
            dir.path().join("b.txt"),
            client_script,
            b.clone()
        )
    );
    assert_eq!(out_a, "100:who=server\n101:who=client\n");
    assert_eq!(
        out_b,
        "100:ip=10.0.0.1\n100:port=5000\n100:who=server\n101:who=client\nfinished\n"
    );
    assert_eq!(
        res_a,
        [
            "multinode-send-ipaddr pass",
            "multinode-sync-ready pass",
            "multinode-wait_all-result pass"
        ]
    );
    assert_eq!(
        res_b,
        [
            "multinode-wait-ipaddr pass",
            "multinode-send-result pass",
            "multinode-sync-ready pass",
            "multinode-wait_all-result pass",
            "multinode-sync-done-all pass"
        ]
    );
    a.clear_group().await.unwrap();
    b.clear_group().await.unwrap();
    assert!(server.groups().is_empty());
    server.shutdown().await;
}

/// On a real terminal (a pty, echo on, as a board's serial console): the dispatcher's reply
/// is echoed back into the console stream and must not be taken for a request, and the
/// helper reads it in canonical mode.
#[test]
fn helpers_work_on_a_terminal_with_echo() {
    use std::os::fd::OwnedFd;
    let dir = tempfile::tempdir().unwrap();
    let bin = install_labd(dir.path());
    let cache = dir.path().join("cache.txt");
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave: OwnedFd = pty.slave;
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg("lava-wait ipaddr; echo; cat \"$LAVA_MULTI_NODE_CACHE\"; echo END")
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .env("LAVA_MULTI_NODE_CACHE", &cache)
        .env("LAVA_MULTI_NODE_DEBUG", "")
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave))
        .spawn()
        .unwrap();
    let mut master = std::fs::File::from(pty.master);
    let mut seen = String::new();
    let mut answered = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while !seen.contains("END") {
        assert!(std::time::Instant::now() < deadline, "no END in {seen:?}");
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&master),
            nix::poll::PollFlags::POLLIN,
        )];
        if nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(200u16)).unwrap() == 0 {
            continue;
        }
        let n = std::io::Read::read(&mut master, &mut buf).expect(&seen);
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        let mut rest = seen.as_str();
        let mut found = 0;
        while let Some(m) = find_request(rest) {
            found += 1;
            rest = &rest[m.end..];
        }
        if found > answered {
            answered = found;
            let reply = "<LAVA_WAIT_COMPLETE 100:ipaddr=10.0.0.1>";
            master
                .write_all(console::console_bytes(reply, "\n").as_bytes())
                .unwrap();
        }
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(
        answered, 1,
        "the echoed reply was taken for a request: {seen:?}"
    );
    assert!(
        seen.contains("<LAVA_MULTI_NODE> <LAVA_WAIT ipaddr>\r\n"),
        "{seen:?}"
    );
    assert!(seen.contains("100:ipaddr=10.0.0.1\r\nEND"), "{seen:?}");
}
