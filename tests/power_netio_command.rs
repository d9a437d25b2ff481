//! The Netio JSON driver against the simulator's Netio API (itself checked with the real
//! pdudaemon's `netiojson` driver), and the `command` driver: argument vectors, no shell
//! injection, output captured, timeouts that kill the whole process group, LAVA-style commands.

use std::path::Path;
use std::time::{Duration, Instant};

use labd::ids::DeviceName;
use labd::inventory::Inventory;
use labd::metrics::Registry;
use labd::power::{DriverErrorKind, OutletState, PowerOp, PowerService};
use labd_hw_fixtures::peers::pdudaemon::Pdudaemon;
use labd_hw_fixtures::simpdu::http::SimPduServer;
use labd_hw_fixtures::simpdu::{Faults, SimPdu};

fn dev(s: &str) -> DeviceName {
    DeviceName::new(s).unwrap()
}

fn build(text: &str) -> PowerService {
    let inv = Inventory::parse(Path::new("inv.toml"), text).unwrap_or_else(|e| panic!("{e}"));
    PowerService::builder(&inv)
        .registry(Box::leak(Box::new(Registry::default())))
        .build()
        .unwrap()
}

const HEAD: &str = "[worker]\nname = \"w\"\nstate_dir = \"/tmp/x\"\n";

#[tokio::test]
async fn netio_driver_switches_and_reads_the_simulated_netio() {
    let sim = SimPdu::new("netio4", 4);
    let server = SimPduServer::start(sim.clone()).await.unwrap();
    let svc = build(&format!(
        "{HEAD}[[pdu]]\nname = \"n\"\ndriver = \"netio\"\nurl = \"{}\"\nretries = 1\nretry_delay = \"10ms\"\n\
         [[pdu]]\nname = \"badauth\"\ndriver = \"netio\"\nurl = \"{}\"\npassword = \"wrong\"\nretries = 0\n\
         [[device]]\nname = \"d2\"\ndevice_type = \"t\"\n[device.power]\npdu = \"n\"\noutlet = 2\n\
         [[device]]\nname = \"d5\"\ndevice_type = \"t\"\n[device.power]\npdu = \"n\"\noutlet = 5\n\
         [[device]]\nname = \"x1\"\ndevice_type = \"t\"\n[device.power]\npdu = \"badauth\"\noutlet = 1\n",
        server.url(),
        server.url()
    ));
    let out = svc.power(&dev("d2"), PowerOp::On).await.unwrap();
    assert_eq!((out.state, out.verified), (Some(OutletState::On), true));
    assert_eq!(
        out.log[1],
        format!(
            "  POST {}/netio.json {{\"Outputs\":[{{\"Action\":1,\"ID\":2}}]}} -> 200 output 2 State 1",
            server.url()
        )
    );
    assert_eq!(sim.state(2), Some(true));
    svc.power(&dev("d2"), PowerOp::Off).await.unwrap();
    assert_eq!(sim.state(2), Some(false));
    assert_eq!(
        svc.power(&dev("d2"), PowerOp::Status).await.unwrap().state,
        Some(OutletState::Off)
    );
    // A Netio that acknowledges the new State without switching is caught by the reply itself.
    sim.set_faults(Faults {
        stuck: true,
        ..Faults::default()
    });
    let e = svc.power(&dev("d2"), PowerOp::On).await.unwrap_err();
    assert_eq!(e.driver_kind(), Some(DriverErrorKind::NotSwitched), "{e}");
    sim.set_faults(Faults::default());
    let e = svc.power(&dev("d5"), PowerOp::On).await.unwrap_err();
    assert!(
        e.to_string()
            .ends_with("/netio.json answered 400 Bad Request: \"400 Bad Request\""),
        "{e}"
    );
    let e = svc.power(&dev("x1"), PowerOp::On).await.unwrap_err();
    assert!(e.to_string().contains("answered 401 Unauthorized"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulated_netio_satisfies_pdudaemons_real_netiojson_driver() {
    let sim = SimPdu::new("netio4", 4);
    let server = SimPduServer::start(sim.clone()).await.unwrap();
    let pdud = Pdudaemon::start(
        "http",
        serde_json::json!({"netio": {"driver": "netiojson", "ip": "127.0.0.1", "port": server.addr.port(),
                                     "username": "admin", "password": "admin", "retries": 1, "retrydelay": 1}}),
        serde_json::json!({}),
    )
    .unwrap();
    let url = pdud.url();
    let get = |path: String| {
        let url = url.clone();
        async move {
            let r = reqwest::get(format!("{url}{path}")).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(
        get("/power/control/on?hostname=netio&port=3".into()).await,
        (200, "OK - accepted request\n".into())
    );
    assert_eq!(sim.state(3), Some(true));
    assert_eq!(
        get("/power/control/off?hostname=netio&port=3".into())
            .await
            .0,
        200
    );
    assert_eq!(sim.state(3), Some(false));
    // pdudaemon's driver checks the State in the reply: a stuck Netio fails it too.
    sim.set_faults(Faults {
        stuck: true,
        ..Faults::default()
    });
    sim.switch_now(4, false).unwrap();
    let (status, _) = get("/power/control/on?hostname=netio&port=4".into()).await;
    assert_eq!(
        status, 200,
        "the stuck sim acknowledges State 1, which is all pdudaemon checks"
    );
    assert_eq!(
        sim.state(4),
        Some(false),
        "but labd's read-back would see it did not switch"
    );
}

#[tokio::test]
async fn command_driver_runs_argument_vectors_and_captures_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let svc = build(&format!(
        "{HEAD}[[pdu]]\nname = \"relays\"\ndriver = \"command\"\nretries = 0\ntimeout = \"500ms\"\n\
         on_command = \"sh -c 'echo switching {{outlet}} of {{pdu}} for {{device}}; echo warn >&2; echo on > {d}/state-{{outlet}}'\"\n\
         off_command = \"sh -c 'echo off > {d}/state-{{outlet}}'\"\n\
         state_command = \"cat {d}/state-{{outlet}}\"\n\
         [[pdu]]\nname = \"lit\"\ndriver = \"command\"\n\
         on_command = \"printf '%s|' {{outlet}} '$(touch {d}/pwned)' 'a;b' \\\"{{device}}\\\"\"\n\
         off_command = \"true\"\n\
         [[pdu]]\nname = \"slow\"\ndriver = \"command\"\nretries = 1\nretry_delay = \"10ms\"\ntimeout = \"300ms\"\n\
         on_command = \"sh -c 'echo $$ > {d}/pid-$(date +%s%N); exec sleep 30'\"\n\
         off_command = \"sh -c 'echo failing; exit 3'\"\n\
         [[device]]\nname = \"bbb01\"\ndevice_type = \"t\"\n[device.power]\npdu = \"relays\"\noutlet = \"K2\"\n\
         [[device]]\nname = \"bbb02\"\ndevice_type = \"t\"\n[device.power]\npdu = \"slow\"\noutlet = 1\n\
         [[device]]\nname = \"bbb03\"\ndevice_type = \"t\"\n[device.power]\npdu = \"lit\"\noutlet = \"x-1\"\n"
    ));
    let out = svc.power(&dev("bbb01"), PowerOp::On).await.unwrap();
    assert_eq!((out.state, out.verified), (Some(OutletState::On), true));
    assert!(
        out.log
            .iter()
            .any(|l| l == "  switching K2 of relays for bbb01"),
        "{:#?}",
        out.log
    );
    assert!(out.log.iter().any(|l| l == "  warn"), "{:#?}", out.log);
    assert!(
        out.log
            .iter()
            .any(|l| l == &format!("  $ cat {d}/state-K2")),
        "{:#?}",
        out.log
    );

    let out = svc.power(&dev("bbb01"), PowerOp::Off).await.unwrap();
    assert_eq!(out.state, Some(OutletState::Off));

    // Placeholders and metacharacters stay single literal arguments: no shell ran.
    let out = svc.power(&dev("bbb03"), PowerOp::On).await.unwrap();
    assert_eq!(
        out.log[2],
        format!("  x-1|$(touch {d}/pwned)|a;b|bbb03|"),
        "{:#?}",
        out.log
    );
    assert!(!dir.path().join("pwned").exists());
    assert!(!out.verified);

    // A command that hangs is killed with its whole process group at the timeout.
    let t = Instant::now();
    let e = svc.power(&dev("bbb02"), PowerOp::On).await.unwrap_err();
    assert!(
        t.elapsed() < Duration::from_millis(1200),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(
        e.to_string(),
        "PDU slow outlet 1 (device bbb02): on failed on attempt 2 of 2: no answer within 300ms"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pids: Vec<i32> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("pid-"))
        .map(|e| {
            std::fs::read_to_string(e.path())
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(pids.len(), 2);
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .unwrap()
                    .contains(") Z "),
            "sleep {pid} survived"
        );
    }
    // A failing command: its exit status and output are in the error.
    let e = svc.power(&dev("bbb02"), PowerOp::Off).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "PDU slow outlet 1 (device bbb02): off failed on attempt 2 of 2: sh -c 'echo failing; exit 3' failed (exit status: 3) (last output: \"failing\")"
    );
    assert_eq!(e.output(), ["$ sh -c 'echo failing; exit 3'", "failing"]);
}

#[tokio::test]
async fn lava_style_device_commands() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    let l = log.display();
    let svc = build(&format!(
        "{HEAD}[power]\nreboot_delay = \"10ms\"\n\
         [[device]]\nname = \"old03\"\ndevice_type = \"t\"\n[device.power]\n\
         power_on_command = \"sh -c 'echo on {{device}} >> {l}'\"\n\
         power_off_command = \"sh -c 'echo off {{device}} >> {l}'\"\n\
         hard_reset_command = \"sh -c 'echo reset {{device}} >> {l}'\"\n\
         [[device]]\nname = \"old04\"\ndevice_type = \"t\"\n[device.power]\n\
         power_on_command = \"sh -c 'echo on {{device}} >> {l}'\"\n\
         power_off_command = \"sh -c 'echo off {{device}} >> {l}'\"\n\
         [[device]]\nname = \"old05\"\ndevice_type = \"t\"\n[device.power]\n\
         hard_reset_command = \"false\"\n"
    ));
    svc.power(&dev("old03"), PowerOp::On).await.unwrap();
    let out = svc.power(&dev("old03"), PowerOp::Reboot).await.unwrap();
    assert_eq!(
        out.log[0],
        "device old03 power commands: reboot (attempt 1 of 4)"
    );
    svc.power(&dev("old04"), PowerOp::Reboot).await.unwrap();
    let st = svc.power(&dev("old04"), PowerOp::Status).await.unwrap();
    assert_eq!((st.state, st.verified), (Some(OutletState::On), false));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "on old03\nreset old03\noff old04\non old04\n"
    );
    let e = svc.power(&dev("old05"), PowerOp::On).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "device old05 power commands: cannot on: the driver cannot switch on (no on command)"
    );
    let names: Vec<String> = svc.status().pdus.iter().map(|p| p.name.clone()).collect();
    assert_eq!(
        names,
        ["commands:old03", "commands:old04", "commands:old05"]
    );
}
