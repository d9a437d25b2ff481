//! The generic power layer against the simulated PDU with fault injection: retries through a
//! flaky PDU, bounded failure on a dead one, no overlapping requests per PDU, reboot delay,
//! verification of a PDU that acknowledges without switching, health, metrics, job log lines.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use labd::ids::{DeviceName, PduName};
use labd::inventory::Inventory;
use labd::metrics::Registry;
use labd::power::{DriverErrorKind, OutletState, PowerError, PowerOp, PowerRequest, PowerService};
use labd_hw_fixtures::simpdu::http::SimPduServer;
use labd_hw_fixtures::simpdu::{Faults, SimPdu};

fn dev(s: &str) -> DeviceName {
    DeviceName::new(s).unwrap()
}

/// An inventory with PDU `sim1` (in-process, 8 outlets) powering `b1`..`b8` on outlets 1..8.
fn inventory(pdu_extra: &str, power: &str) -> Inventory {
    let mut text = format!(
        "[worker]\nname = \"w\"\nstate_dir = \"/tmp/labd-test\"\n[power]\n{power}\n\
         [[pdu]]\nname = \"sim1\"\ndriver = \"sim\"\noutlets = 8\n{pdu_extra}\n\
         [[pdu]]\nname = \"sim2\"\ndriver = \"sim\"\nretries = 0\n"
    );
    for n in 1..=8 {
        text.push_str(&format!(
            "[[device]]\nname = \"b{n}\"\ndevice_type = \"t\"\n[device.power]\npdu = \"sim1\"\noutlet = {n}\n"
        ));
    }
    text.push_str("[[device]]\nname = \"c1\"\ndevice_type = \"t\"\n[device.power]\npdu = \"sim2\"\noutlet = 1\n");
    Inventory::parse(Path::new("inv.toml"), &text).unwrap()
}

fn registry() -> &'static Registry {
    Box::leak(Box::new(Registry::default()))
}

fn service(inv: &Inventory, sim1: &SimPdu, sim2: &SimPdu, reg: &'static Registry) -> PowerService {
    PowerService::builder(inv)
        .attach_sim(&PduName::new("sim1").unwrap(), sim1.clone())
        .attach_sim(&PduName::new("sim2").unwrap(), sim2.clone())
        .registry(reg)
        .build()
        .unwrap()
}

fn metric(reg: &Registry, line_prefix: &str) -> f64 {
    let text = reg.render();
    let line = text
        .lines()
        .find(|l| l.starts_with(line_prefix))
        .unwrap_or_else(|| panic!("no metric {line_prefix} in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn flaky_pdu_failing_30_percent_still_succeeds_through_retries() {
    let inv = inventory("retries = 8\nretry_delay = \"5ms\"\ntimeout = \"2s\"", "");
    let (sim1, sim2) = (SimPdu::new("sim1", 8), SimPdu::new("sim2", 1));
    sim1.set_faults(Faults {
        fail_ratio: 0.3,
        ..Faults::default()
    });
    let reg = registry();
    let svc = service(&inv, &sim1, &sim2, reg);
    let mut ops = 0;
    for round in 0..5 {
        for n in 1..=8u32 {
            let on = round % 2 == 0;
            let op = if on { PowerOp::On } else { PowerOp::Off };
            let out = svc
                .power(&dev(&format!("b{n}")), op)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(out.state, Some(OutletState::from_on(on)));
            assert!(out.verified, "the sim can be read back");
            assert_eq!(sim1.state(n), Some(on));
            ops += 1;
        }
    }
    // Each op is a set plus a read-back; failures add requests.
    assert!(
        sim1.requests() > 2 * ops,
        "no injected failure happened: {}",
        sim1.requests()
    );
    let retries: f64 = (1..=8)
        .map(|n| {
            metric(
                reg,
                &format!("labd_power_retries_total{{pdu=\"sim1\",outlet=\"{n}\"}}"),
            )
        })
        .sum();
    assert!(retries > 0.0);
    assert_eq!(
        metric(
            reg,
            "labd_power_requests_total{pdu=\"sim1\",outlet=\"1\",op=\"on\"}"
        ),
        3.0
    );
    assert_eq!(metric(reg, "labd_power_pdu_healthy{pdu=\"sim1\"}"), 1.0);
    assert_eq!(
        metric(reg, "labd_power_outlet_state{pdu=\"sim1\",outlet=\"1\"}"),
        1.0
    );
    assert_eq!(sim1.overlaps(), 0);
}

#[tokio::test]
async fn dead_pdu_fails_within_a_bounded_time_then_is_unhealthy() {
    let inv = inventory(
        "retries = 2\nretry_delay = \"50ms\"\ntimeout = \"200ms\"",
        "unhealthy_after = 2",
    );
    let (sim1, sim2) = (SimPdu::new("sim1", 8), SimPdu::new("sim2", 1));
    sim1.set_faults(Faults {
        dead: true,
        ..Faults::default()
    });
    let reg = registry();
    let svc = service(&inv, &sim1, &sim2, reg);
    let t = Instant::now();
    let e = svc.power(&dev("b2"), PowerOp::On).await.unwrap_err();
    let took = t.elapsed();
    // 3 attempts x 200 ms + two backoffs of at most 50 ms and 100 ms.
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_millis(1200),
        "{took:?}"
    );
    assert_eq!(
        e.to_string(),
        "PDU sim1 outlet 2 (device b2): on failed on attempt 3 of 3: no answer within 200ms"
    );
    assert_eq!(e.driver_kind(), Some(DriverErrorKind::Timeout));
    assert!(
        svc.device_status(&dev("b2")).unwrap().can_power,
        "one failure is not yet unhealthy"
    );

    svc.power(&dev("b3"), PowerOp::Off).await.unwrap_err();
    let st = svc.device_status(&dev("b5")).unwrap();
    assert!(!st.can_power);
    assert!(st.reason.as_deref().unwrap().starts_with("sim1 is unhealthy after 2 failed requests in a row; last: PDU sim1 outlet 3 (device b3): no answer within 200ms"), "{:?}", st.reason);
    assert_eq!(metric(reg, "labd_power_pdu_healthy{pdu=\"sim1\"}"), 0.0);
    assert_eq!(
        metric(
            reg,
            "labd_power_failures_total{pdu=\"sim1\",outlet=\"3\",op=\"off\"}"
        ),
        1.0
    );
    let status = svc.status();
    let s1 = status.pdus.iter().find(|p| p.name == "sim1").unwrap();
    assert!(!s1.healthy);
    assert_eq!(s1.consecutive_failures, 2);
    // Another PDU is unaffected.
    assert!(svc.device_status(&dev("c1")).unwrap().can_power);
    svc.power(&dev("c1"), PowerOp::On).await.unwrap();

    // Unhealthy: one attempt only, so callers learn fast.
    let t = Instant::now();
    let e = svc.power(&dev("b4"), PowerOp::On).await.unwrap_err();
    assert!(t.elapsed() < Duration::from_millis(400));
    assert_eq!(
        e.to_string(),
        "PDU sim1 outlet 4 (device b4): on failed on attempt 1 of 1 (PDU is unhealthy: one attempt only): no answer within 200ms"
    );
    // It answers again: healthy.
    sim1.set_faults(Faults::default());
    svc.power(&dev("b4"), PowerOp::On).await.unwrap();
    assert!(svc.device_status(&dev("b5")).unwrap().can_power);
    assert_eq!(metric(reg, "labd_power_pdu_healthy{pdu=\"sim1\"}"), 1.0);
}

#[tokio::test]
async fn concurrent_requests_for_one_pdu_never_overlap_and_pdus_run_in_parallel() {
    let inv = inventory("timeout = \"5s\"", "");
    let (sim1, sim2) = (SimPdu::new("sim1", 8), SimPdu::new("sim2", 1));
    sim1.set_faults(Faults {
        latency: Duration::from_millis(10),
        ..Faults::default()
    });
    let svc = service(&inv, &sim1, &sim2, registry());
    let mut tasks = Vec::new();
    for i in 0..24u32 {
        let svc = svc.clone();
        let d = dev(&format!("b{}", i % 8 + 1));
        let op = [PowerOp::On, PowerOp::Off, PowerOp::Status][i as usize % 3];
        tasks.push(tokio::spawn(async move { svc.power(&d, op).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert!(sim1.requests() >= 24);
    assert_eq!(sim1.overlaps(), 0, "two requests reached one PDU at once");
    assert_eq!(sim1.max_in_flight(), 1);

    // Two PDUs, 300 ms per request each: together they take about 300 ms, not 600.
    sim1.set_faults(Faults {
        latency: Duration::from_millis(300),
        ..Faults::default()
    });
    sim2.set_faults(Faults {
        latency: Duration::from_millis(300),
        ..Faults::default()
    });
    let t = Instant::now();
    let (b1, c1) = (dev("b1"), dev("c1"));
    let (a, b) = tokio::join!(
        svc.power(&b1, PowerOp::Status),
        svc.power(&c1, PowerOp::Status)
    );
    a.unwrap();
    b.unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(550),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn reboot_honours_the_delay_and_powers_the_board_off_then_on() {
    let inv = inventory("", "reboot_delay = \"150ms\"");
    let (sim1, sim2) = (SimPdu::new("sim1", 8), SimPdu::new("sim2", 1));
    let board: Arc<Mutex<Vec<(Instant, bool)>>> = Arc::default();
    let b = board.clone();
    sim1.on_switch(
        6,
        Box::new(move |on| b.lock().unwrap().push((Instant::now(), on))),
    );
    sim1.switch_now(6, true).unwrap();
    let svc = service(&inv, &sim1, &sim2, registry());

    let out = svc.power(&dev("b6"), PowerOp::Reboot).await.unwrap();
    assert_eq!(out.state, Some(OutletState::On));
    assert!(out.verified);
    // An explicit delay (the listener's `delay=`, a job's request) wins over the default.
    svc.request(
        &dev("b6"),
        PowerRequest::new(PowerOp::Reboot).delay(Duration::from_millis(400)),
    )
    .await
    .unwrap();
    let seen = board.lock().unwrap().clone();
    let states: Vec<bool> = seen.iter().map(|(_, on)| *on).collect();
    assert_eq!(states, [true, false, true, false, true]);
    let off1 = seen[2].0 - seen[1].0;
    let off2 = seen[4].0 - seen[3].0;
    assert!(
        off1 >= Duration::from_millis(150) && off1 < Duration::from_millis(400),
        "{off1:?}"
    );
    assert!(
        off2 >= Duration::from_millis(400) && off2 < Duration::from_millis(650),
        "{off2:?}"
    );
    // The PDU's event log agrees.
    let ev: Vec<(u32, bool)> = sim1.events().iter().map(|e| (e.outlet, e.on)).collect();
    assert_eq!(
        ev,
        [(6, true), (6, false), (6, true), (6, false), (6, true)]
    );
}

#[tokio::test]
async fn verification_catches_a_pdu_that_acknowledges_but_does_not_switch() {
    let inv = inventory("retries = 1\nretry_delay = \"10ms\"", "");
    let (sim1, sim2) = (SimPdu::new("sim1", 8), SimPdu::new("sim2", 1));
    let svc = service(&inv, &sim1, &sim2, registry());
    svc.power(&dev("b7"), PowerOp::On).await.unwrap();
    sim1.set_faults(Faults {
        stuck: true,
        ..Faults::default()
    });
    let e = svc.power(&dev("b7"), PowerOp::Off).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "PDU sim1 outlet 7 (device b7): off failed on attempt 2 of 2: the PDU acknowledged off but the outlet reads on"
    );
    assert!(matches!(&e, PowerError::Failed { attempts: 2, .. }));
    assert_eq!(e.driver_kind(), Some(DriverErrorKind::NotSwitched));
    assert_eq!(sim1.state(7), Some(true));
    // labd does not pretend to know: the state is unknown until read again.
    let st = svc.device_status(&dev("b7")).unwrap();
    assert_eq!(st.state, None);
    let out = svc.power(&dev("b7"), PowerOp::Status).await.unwrap();
    assert_eq!((out.state, out.verified), (Some(OutletState::On), true));
    assert_eq!(
        svc.device_status(&dev("b7")).unwrap().state,
        Some(OutletState::On)
    );
}

#[tokio::test]
async fn a_job_gets_every_progress_line_live() {
    let inv = inventory(
        "retries = 8\nretry_delay = \"1ms\"",
        "reboot_delay = \"10ms\"",
    );
    let (sim1, sim2) = (SimPdu::new("sim1", 8), SimPdu::new("sim2", 1));
    sim1.set_faults(Faults {
        fail_ratio: 0.3,
        ..Faults::default()
    });
    sim1.seed(7);
    let svc = service(&inv, &sim1, &sim2, registry());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let out = svc
        .request(&dev("b1"), PowerRequest::new(PowerOp::Reboot).events(tx))
        .await
        .unwrap();
    let mut live = Vec::new();
    while let Ok(l) = rx.try_recv() {
        live.push(l);
    }
    assert_eq!(live, out.log);
    assert_eq!(
        live[0],
        "PDU sim1 outlet 1 (device b1): reboot: off (attempt 1 of 9)"
    );
    assert!(
        live.iter()
            .any(|l| l == "PDU sim1 outlet 1 (device b1): off for 10ms"),
        "{live:#?}"
    );
    assert_eq!(
        live.last().unwrap(),
        "PDU sim1 outlet 1 (device b1): reboot: on done, outlet on (read back)"
    );
    assert!(
        live.iter()
            .any(|l| l.contains("failed: simulated PDU: injected failure")),
        "{live:#?}"
    );
}

#[tokio::test]
async fn the_simulator_over_http_behaves_the_same() {
    let sim = SimPdu::new("net", 4);
    let server = SimPduServer::start(sim.clone()).await.unwrap();
    let text = format!(
        "[worker]\nname = \"w\"\nstate_dir = \"/tmp/x\"\n[[pdu]]\nname = \"net\"\ndriver = \"sim\"\nurl = \"{}\"\n\
         retries = 4\nretry_delay = \"1ms\"\n\
         [[device]]\nname = \"d1\"\ndevice_type = \"t\"\n[device.power]\npdu = \"net\"\noutlet = 1\n\
         [[device]]\nname = \"d2\"\ndevice_type = \"t\"\n[device.power]\npdu = \"net\"\noutlet = 2\n",
        server.url()
    );
    let inv = Inventory::parse(Path::new("inv.toml"), &text).unwrap();
    let svc = PowerService::builder(&inv)
        .registry(registry())
        .build()
        .unwrap();
    sim.set_faults(Faults {
        fail_ratio: 0.3,
        latency: Duration::from_millis(5),
        ..Faults::default()
    });
    let mut tasks = Vec::new();
    for i in 0..10 {
        let svc = svc.clone();
        let d = dev(if i % 2 == 0 { "d1" } else { "d2" });
        tasks.push(tokio::spawn(async move {
            svc.power(&d, if i < 5 { PowerOp::On } else { PowerOp::Off })
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(sim.overlaps(), 0);
    let out = svc.power(&dev("d1"), PowerOp::Status).await.unwrap();
    assert_eq!(out.state, Some(OutletState::from_on(sim.state(1).unwrap())));
    assert!(
        out.log
            .iter()
            .any(|l| l.contains(&format!("GET {}/outlets/1 -> {{\"on\":", server.url()))),
        "{:#?}",
        out.log
    );
    drop(server);
    let e = svc.power(&dev("d1"), PowerOp::On).await.unwrap_err();
    assert_eq!(e.driver_kind(), Some(DriverErrorKind::Unreachable), "{e}");
}

/// One HTTP/1.1 GET to the pdudaemon-compatible listener: (status line, body).
async fn get(port: u16, target: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(
        format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).await.unwrap();
    let status = r.lines().next().unwrap_or("").to_string();
    let body = r.split_once("\r\n\r\n").map_or("", |x| x.1).to_string();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_refuses_outlets_the_inventory_does_not_configure() {
    // sim1: `outlets = 4`, a board on outlet 1; sim2: no count, a board on outlet 1.
    let text = "[worker]\nname = \"w\"\nstate_dir = \"/tmp/labd-test\"\n\
                [[pdu]]\nname = \"sim1\"\ndriver = \"sim\"\noutlets = 4\nretries = 0\n\
                [[pdu]]\nname = \"sim2\"\ndriver = \"sim\"\nretries = 0\n\
                [[device]]\nname = \"b1\"\ndevice_type = \"t\"\n[device.power]\npdu = \"sim1\"\noutlet = 1\n\
                [[device]]\nname = \"c1\"\ndevice_type = \"t\"\n[device.power]\npdu = \"sim2\"\noutlet = 1\n";
    let inv = Inventory::parse(Path::new("inv.toml"), text).unwrap();
    let (sim1, sim2) = (SimPdu::new("sim1", 8), SimPdu::new("sim2", 8));
    let reg = registry();
    let svc = service(&inv, &sim1, &sim2, reg);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(labd::power::listener::serve(
        listener,
        svc.clone(),
        stop.clone(),
    ));
    let before = reg.render();
    let refused = [
        "hostname=sim2&port=2",
        "hostname=sim2&port=31337",
        "hostname=sim1&port=5",
    ];
    for q in refused
        .iter()
        .copied()
        .chain((0..50).map(|_| "hostname=sim1&port=99999"))
    {
        let (status, body) = get(port, &format!("/power/control/on?{q}")).await;
        assert_eq!(
            (status.as_str(), body.as_str()),
            ("HTTP/1.1 500 Internal Server Error", "Invalid request\n"),
            "{q}"
        );
    }
    assert_eq!(
        sim1.requests() + sim2.requests(),
        0,
        "nothing reached a PDU"
    );
    assert_eq!(
        reg.render(),
        before,
        "no metric series for unconfigured outlets"
    );
    let outlets = |s: &PowerService| {
        s.status()
            .pdus
            .iter()
            .map(|p| (p.name.clone(), p.outlets.len()))
            .collect::<Vec<_>>()
    };
    assert_eq!(outlets(&svc), [("sim1".into(), 1), ("sim2".into(), 1)]);
    // A device's outlet (as written, "01" is outlet 1) and an outlet within `outlets` work.
    for q in ["hostname=sim2&port=01", "hostname=sim1&port=3"] {
        let (status, _) = get(port, &format!("/power/control/on?{q}")).await;
        assert_eq!(status, "HTTP/1.1 200 OK", "{q}");
    }
    assert_eq!((sim2.state(1), sim1.state(3)), (Some(true), Some(true)));
    assert_eq!(outlets(&svc), [("sim1".into(), 2), ("sim2".into(), 1)]);
    assert_eq!(
        metric(reg, "labd_power_outlet_state{pdu=\"sim2\",outlet=\"1\"}"),
        1.0
    );
    assert!(!reg.render().contains("outlet=\"01\""));
    stop.cancel();
}
