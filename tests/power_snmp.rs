//! labd's SNMP driver against the real snmpsim 1.2.2 serving an APC PowerNet-MIB model
//! (`hw-fixtures/snmpsim/`), on a non-privileged UDP port: v1 and v2c, the rPDU and sPDU
//! presets, a generic OID mapping, read-back, native reboot, a stuck outlet, errors.

use std::path::Path;
use std::time::{Duration, Instant};

use labd::ids::DeviceName;
use labd::inventory::Inventory;
use labd::metrics::Registry;
use labd::power::{DriverErrorKind, OutletState, PowerOp, PowerService};
use labd_hw_fixtures::peers::snmpsim::Snmpsim;

fn dev(s: &str) -> DeviceName {
    DeviceName::new(s).unwrap()
}

fn service(port: u16) -> PowerService {
    let text = format!(
        "[worker]\nname = \"w\"\nstate_dir = \"/tmp/x\"\n[power]\nreboot_delay = \"50ms\"\n\
         [[pdu]]\nname = \"rpdu\"\ndriver = \"snmp\"\nhost = \"127.0.0.1\"\nport = {port}\nversion = \"1\"\npreset = \"apc-rpdu\"\nretries = 1\nretry_delay = \"10ms\"\ntimeout = \"3s\"\n\
         [[pdu]]\nname = \"spdu\"\ndriver = \"snmp\"\nhost = \"localhost\"\nport = {port}\nversion = \"2c\"\npreset = \"apc-spdu\"\ncommunity = \"private\"\nread_community = \"public\"\nnative_reboot = true\n\
         [[pdu]]\nname = \"generic\"\ndriver = \"snmp\"\nhost = \"127.0.0.1\"\nport = {port}\n\
         oid = \"1.3.6.1.4.1.318.1.1.12.3.3.1.1.4.*\"\non_value = 1\noff_value = 2\n\
         state_oid = \"1.3.6.1.4.1.318.1.1.12.3.5.1.1.4.{{outlet}}\"\n\
         [[pdu]]\nname = \"wrongcommunity\"\ndriver = \"snmp\"\nhost = \"127.0.0.1\"\nport = {port}\npreset = \"apc-rpdu\"\ncommunity = \"nobody\"\nretries = 1\nretry_delay = \"10ms\"\ntimeout = \"500ms\"\n\
         [[device]]\nname = \"r3\"\ndevice_type = \"t\"\n[device.power]\npdu = \"rpdu\"\noutlet = 3\n\
         [[device]]\nname = \"r8\"\ndevice_type = \"t\"\n[device.power]\npdu = \"rpdu\"\noutlet = 8\n\
         [[device]]\nname = \"r9\"\ndevice_type = \"t\"\n[device.power]\npdu = \"rpdu\"\noutlet = 9\n\
         [[device]]\nname = \"s5\"\ndevice_type = \"t\"\n[device.power]\npdu = \"spdu\"\noutlet = 5\n\
         [[device]]\nname = \"g6\"\ndevice_type = \"t\"\n[device.power]\npdu = \"generic\"\noutlet = 6\n\
         [[device]]\nname = \"w1\"\ndevice_type = \"t\"\n[device.power]\npdu = \"wrongcommunity\"\noutlet = 1\n"
    );
    let inv = Inventory::parse(Path::new("inv.toml"), &text).unwrap();
    PowerService::builder(&inv)
        .registry(Box::leak(Box::new(Registry::default())))
        .build()
        .unwrap()
}

/// The SET log without its timestamps.
fn sets(sim: &Snmpsim) -> Vec<String> {
    sim.set_log()
        .iter()
        .map(|l| l.split_once(' ').unwrap().1.to_string())
        .collect()
}

#[tokio::test]
async fn labd_switches_and_reads_apc_outlets_on_snmpsim() {
    let sim = Snmpsim::start().unwrap();
    let svc = service(sim.port);

    // rPDU, SNMPv1: off, verified by reading the same object back.
    let out = svc.power(&dev("r3"), PowerOp::Off).await.unwrap();
    assert_eq!((out.state, out.verified), (Some(OutletState::Off), true));
    let p = sim.port;
    assert_eq!(
        out.log[1..3],
        [
            format!(
                "  SET 1.3.6.1.4.1.318.1.1.12.3.3.1.1.4.3 = INTEGER: 2 to 127.0.0.1:{p} -> INTEGER: 2"
            ),
            format!("  GET 1.3.6.1.4.1.318.1.1.12.3.3.1.1.4.3 from 127.0.0.1:{p} -> INTEGER: 2"),
        ]
    );
    let out = svc.power(&dev("r3"), PowerOp::Status).await.unwrap();
    assert_eq!(out.state, Some(OutletState::Off));
    svc.power(&dev("r3"), PowerOp::Reboot).await.unwrap();

    // sPDU, v2c, separate read community, the PDU's own reboot (value 3).
    svc.power(&dev("s5"), PowerOp::Off).await.unwrap();
    let out = svc.power(&dev("s5"), PowerOp::Reboot).await.unwrap();
    assert!(
        out.log[1].contains("SET 1.3.6.1.4.1.318.1.1.4.4.2.1.3.5 = INTEGER: 3"),
        "{:#?}",
        out.log
    );

    // Generic mapping, state from the status table.
    let out = svc.power(&dev("g6"), PowerOp::Off).await.unwrap();
    assert!(
        out.log[2].contains("GET 1.3.6.1.4.1.318.1.1.12.3.5.1.1.4.6"),
        "{:#?}",
        out.log
    );
    assert_eq!(out.state, Some(OutletState::Off));

    assert_eq!(
        sets(&sim),
        [
            "outlet=3 kind=rctl value=2 -> off",
            "outlet=3 kind=rctl value=2 -> off",
            "outlet=3 kind=rctl value=1 -> on",
            "outlet=5 kind=sctl value=2 -> off",
            "outlet=5 kind=sctl value=3 -> on",
            "outlet=6 kind=rctl value=2 -> off",
        ]
    );
}

#[tokio::test]
async fn snmp_failures_are_named_and_bounded() {
    let sim = Snmpsim::start().unwrap();
    let svc = service(sim.port);
    // Outlet 8 acknowledges and stays on.
    let e = svc.power(&dev("r8"), PowerOp::Off).await.unwrap_err();
    assert_eq!(e.driver_kind(), Some(DriverErrorKind::NotSwitched));
    assert_eq!(
        e.to_string(),
        "PDU rpdu outlet 8 (device r8): off failed on attempt 2 of 2: the PDU acknowledged off but the outlet reads on"
    );
    // No outlet 9: snmpsim answers noSuchName (v1) to the SET.
    let e = svc.power(&dev("r9"), PowerOp::On).await.unwrap_err();
    assert_eq!(e.driver_kind(), Some(DriverErrorKind::Refused));
    let msg = e.to_string();
    assert!(
        msg.starts_with("PDU rpdu outlet 9 (device r9): on failed on attempt 2 of 2: SET 1.3.6.1.4.1.318.1.1.12.3.3.1.1.4.9 = INTEGER: 1 to 127.0.0.1:"),
        "{msg}"
    );
    assert!(
        msg.ends_with("agent answered noSuchName (2) at index 1"),
        "{msg}"
    );
    // An unknown community gets no answer at all: two attempts of 500 ms.
    let t = Instant::now();
    let e = svc.power(&dev("w1"), PowerOp::On).await.unwrap_err();
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(
        e.to_string(),
        "PDU wrongcommunity outlet 1 (device w1): on failed on attempt 2 of 2: no answer within 500ms"
    );
    assert!(
        sets(&sim).iter().all(|l| l.starts_with("outlet=8 ")),
        "{:?}",
        sets(&sim)
    );
}
