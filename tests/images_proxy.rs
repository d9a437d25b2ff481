//! Downloads through the real tinyproxy: http (absolute-URI forwarding) and https (CONNECT),
//! set in the inventory or by http_proxy-style variables, `no_proxy`, and a proxy that is down.
//! Passage is proven by tinyproxy's own log and by the Via header it adds.

mod images_common;

use std::time::Duration;

use images_common::*;
use labd::images::proxy::ProxySettings;
use labd::images::{ImageRequest, Stage};
use labd_hw_fixtures::peers::tinyproxy::Tinyproxy;

#[tokio::test]
async fn http_through_tinyproxy_from_the_inventory() {
    let proxy = Tinyproxy::start().unwrap();
    let srv = HttpServer::start().unwrap();
    let image = sample_image(2 << 20, 20);
    srv.serve("p.img.gz", compress(&image, "gz").unwrap());
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.proxy = ProxySettings::resolve(Some(&proxy.url()), None, |_| None).unwrap();
    let svc = service(s).await;
    let url = srv.url("p.img.gz");
    let r = svc
        .fetch(ImageRequest::new(&url, dir.path().join("p.img")))
        .await
        .unwrap();
    assert!(std::fs::read(dir.path().join("p.img")).unwrap() == image);
    assert_eq!(r.output_sha256, sha256(&image));
    assert!(
        proxy.wait_for_request(&format!("GET {url} HTTP/1.1"), Duration::from_secs(5)),
        "tinyproxy did not log the request:\n{}",
        proxy.log()
    );
    let seen = srv.requests_to("p.img.gz");
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0]
            .header("via")
            .unwrap_or("")
            .contains("labd-test-proxy"),
        "{:?}",
        seen[0].headers
    );
}

#[tokio::test]
async fn https_through_tinyproxy_connect_from_the_environment() {
    let proxy = Tinyproxy::start().unwrap();
    let ca = TestCa::new().unwrap();
    let srv = HttpServer::start_tls(&ca).unwrap();
    let image = sample_image(1 << 20, 21);
    srv.serve("s.img.zst", compress(&image, "zstd").unwrap());
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    ca.write_ca(&ca_file).unwrap();
    let mut s = settings(dir.path());
    s.ca_file = Some(ca_file);
    // As python-requests (LAVA) reads them: uppercase works too, no_proxy lists other hosts.
    let env_proxy = proxy.url();
    s.proxy = ProxySettings::resolve(None, None, |k| match k {
        "HTTPS_PROXY" => Some(env_proxy.clone()),
        "no_proxy" => Some("example.org,.lab.internal".into()),
        _ => None,
    })
    .unwrap();
    let svc = service(s).await;
    svc.fetch(ImageRequest::new(
        srv.url("s.img.zst"),
        dir.path().join("s.img"),
    ))
    .await
    .unwrap();
    assert!(std::fs::read(dir.path().join("s.img")).unwrap() == image);
    let target = srv.addr().to_string();
    assert!(
        proxy.wait_for_request(
            &format!("CONNECT {target} HTTP/1.1"),
            Duration::from_secs(5)
        ),
        "tinyproxy did not tunnel:\n{}",
        proxy.log()
    );
}

#[tokio::test]
async fn no_proxy_goes_direct() {
    let proxy = Tinyproxy::start().unwrap();
    let srv = HttpServer::start().unwrap();
    srv.serve("d.img", b"direct".to_vec());
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.proxy = ProxySettings::resolve(Some(&proxy.url()), Some("localhost,127.0.0.0/8"), |_| None)
        .unwrap();
    let svc = service(s).await;
    svc.fetch(ImageRequest::new(srv.url("d.img"), dir.path().join("d")))
        .await
        .unwrap();
    assert_eq!(std::fs::read(dir.path().join("d")).unwrap(), b"direct");
    std::thread::sleep(Duration::from_millis(200));
    assert!(proxy.requests().is_empty(), "{}", proxy.log());
    assert_eq!(srv.requests_to("d.img")[0].header("via"), None);
}

#[tokio::test]
async fn proxy_down_is_a_proxy_error() {
    let srv = HttpServer::start().unwrap();
    srv.serve("x.img", b"never".to_vec());
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    let dead = format!("http://127.0.0.1:{}", labd_hw_fixtures::free_tcp_port());
    s.proxy = ProxySettings::resolve(Some(&dead), None, |_| None).unwrap();
    let svc = service(s).await;
    let url = srv.url("x.img");
    let e = svc
        .fetch(ImageRequest::new(&url, dir.path().join("x")))
        .await
        .unwrap_err();
    assert_eq!(e.stage(), Stage::Proxy);
    let text = e.to_string();
    assert!(
        text.starts_with(&format!("proxy: '{url}': through proxy {dead}/: ")),
        "{text}"
    );
    assert!(text.ends_with("(after 4 attempts)"), "{text}");
    assert!(srv.requests().is_empty());
    assert_eq!(
        cache_files(&dir.path().join("cache")),
        Vec::<std::path::PathBuf>::new()
    );
    assert!(!dir.path().join("x").exists());
}

#[tokio::test]
async fn proxy_that_cannot_reach_the_server() {
    let proxy = Tinyproxy::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.proxy = ProxySettings::resolve(Some(&proxy.url()), None, |_| None).unwrap();
    s.retry.retries = 0;
    let svc = service(s).await;
    let url = format!(
        "http://127.0.0.1:{}/gone.img",
        labd_hw_fixtures::free_tcp_port()
    );
    let e = svc
        .fetch(ImageRequest::new(&url, dir.path().join("g")))
        .await
        .unwrap_err();
    // tinyproxy answers 500 itself; the error says the answer came through the proxy.
    assert_eq!(e.stage(), Stage::HttpStatus);
    assert!(
        e.to_string().contains(&format!(
            "500 Internal Server Error (via proxy {}/)",
            proxy.url()
        )),
        "{e}"
    );
}
