//! Inventory reloads and the one-request-at-a-time rule: the services before and after a
//! reload share each PDU's queue, so a job holding the old service (or a request whose caller
//! went away) and a request through the new service never reach the simulated PDU together.

use std::path::Path;
use std::time::Duration;

use labd::ids::{DeviceName, PduName};
use labd::inventory::Inventory;
use labd::power::control::{Installed, PowerControl};
use labd::power::{OutletState, PowerOp};
use labd_hw_fixtures::simpdu::{Faults, SimPdu};

fn dev(s: &str) -> DeviceName {
    DeviceName::new(s).unwrap()
}

/// PDU `sim1` (`sim1_extra` added to it) powering `b1`, `b2`; PDU `sim2`; `extra` appended.
fn inventory(sim1_extra: &str, extra: &str) -> Inventory {
    let text = format!(
        "[worker]\nname = \"w\"\nstate_dir = \"/tmp/labd-test\"\n[power]\nreboot_delay = \"400ms\"\n\
         [[pdu]]\nname = \"sim1\"\ndriver = \"sim\"\nretries = 0\ntimeout = \"5s\"\n{sim1_extra}\n\
         [[pdu]]\nname = \"sim2\"\ndriver = \"sim\"\nretries = 0\n\
         [[device]]\nname = \"b1\"\ndevice_type = \"t\"\n[device.power]\npdu = \"sim1\"\noutlet = 1\n\
         [[device]]\nname = \"b2\"\ndevice_type = \"t\"\n[device.power]\npdu = \"sim1\"\noutlet = 2\n\
         {extra}"
    );
    Inventory::parse(Path::new("inv.toml"), &text).unwrap()
}

const NEW_BOARD: &str =
    "[[device]]\nname = \"c1\"\ndevice_type = \"t\"\n[device.power]\npdu = \"sim2\"\noutlet = 1\n";

fn control(sim1: &SimPdu, sim2: &SimPdu) -> PowerControl {
    let c = PowerControl::new();
    c.attach_sim(PduName::new("sim1").unwrap(), sim1.clone());
    c.attach_sim(PduName::new("sim2").unwrap(), sim2.clone());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_on_the_old_service_and_a_request_on_the_new_never_overlap() {
    let (sim1, sim2) = (SimPdu::new("sim1", 8), SimPdu::new("sim2", 1));
    let c = control(&sim1, &sim2);
    assert_eq!(c.install(&inventory("", "")).await.unwrap(), Installed::New);
    c.power(&dev("b1"), PowerOp::Off).await.unwrap();
    sim1.set_faults(Faults {
        latency: Duration::from_millis(300),
        ..Faults::default()
    });
    // A job took the service at its start and uses it for its whole run.
    let job_service = c.service().unwrap();
    let job = tokio::spawn(async move { job_service.power(&dev("b1"), PowerOp::On).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A board on another PDU is added: a reload that replaces the service.
    assert_eq!(
        c.install(&inventory("", NEW_BOARD)).await.unwrap(),
        Installed::Replaced
    );
    let new = c.service().unwrap();
    let out = new.power(&dev("b2"), PowerOp::On).await.unwrap();
    assert_eq!(out.state, Some(OutletState::On));
    job.await.unwrap().unwrap();
    assert_eq!(sim1.overlaps(), 0, "two requests reached sim1 at once");
    assert_eq!(sim1.max_in_flight(), 1);
    // sim1's settings did not change: its health and last known states were kept.
    let b1 = new.device_status(&dev("b1")).unwrap();
    assert_eq!(b1.state, Some(OutletState::On));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_reboot_cannot_turn_an_outlet_on_after_a_new_off() {
    let (sim1, sim2) = (SimPdu::new("sim1", 8), SimPdu::new("sim2", 1));
    let c = control(&sim1, &sim2);
    c.install(&inventory("", "")).await.unwrap();
    c.power(&dev("b1"), PowerOp::On).await.unwrap();
    // A reboot whose caller went away keeps running on the old service's unit.
    let old = c.service().unwrap();
    let reboot = tokio::spawn(async move { old.power(&dev("b1"), PowerOp::Reboot).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(sim1.state(1), Some(false), "the reboot is in its off time");
    // sim1's own settings change: a new unit, which must still wait for the old reboot.
    assert_eq!(
        c.install(&inventory("retry_delay = \"10ms\"", NEW_BOARD))
            .await
            .unwrap(),
        Installed::Replaced
    );
    let out = c.power(&dev("b1"), PowerOp::Off).await.unwrap();
    assert_eq!(out.state, Some(OutletState::Off));
    reboot.await.unwrap().unwrap();
    assert_eq!(
        sim1.state(1),
        Some(false),
        "the last request was off: the old reboot finished before it"
    );
    assert_eq!(sim1.overlaps(), 0);
}

#[tokio::test]
async fn the_pool_keeps_unchanged_units_and_forgets_removed_pdus_once_unused() {
    use labd::power::{PowerService, UnitPool};
    let (sim1, sim2) = (SimPdu::new("sim1", 8), SimPdu::new("sim2", 1));
    let build = |inv: &Inventory, pool: &UnitPool| {
        PowerService::builder(inv)
            .attach_sim(&PduName::new("sim1").unwrap(), sim1.clone())
            .attach_sim(&PduName::new("sim2").unwrap(), sim2.clone())
            .pool(pool)
            .build()
            .unwrap()
    };
    let pool = UnitPool::new();
    let first = build(&inventory("", ""), &pool);
    assert_eq!(pool.len(), 2);
    first.power(&dev("b1"), PowerOp::On).await.unwrap();
    // sim2 removed, sim1 unchanged: sim1 keeps its unit (its last known states).
    let text = "[worker]\nname = \"w\"\nstate_dir = \"/tmp/labd-test\"\n[power]\nreboot_delay = \"400ms\"\n\
                [[pdu]]\nname = \"sim1\"\ndriver = \"sim\"\nretries = 0\ntimeout = \"5s\"\n\n\
                [[device]]\nname = \"b1\"\ndevice_type = \"t\"\n[device.power]\npdu = \"sim1\"\noutlet = 1\n\
                [[device]]\nname = \"b2\"\ndevice_type = \"t\"\n[device.power]\npdu = \"sim1\"\noutlet = 2\n";
    let second = build(
        &Inventory::parse(Path::new("inv.toml"), text).unwrap(),
        &pool,
    );
    assert_eq!(
        second.device_status(&dev("b1")).unwrap().state,
        Some(OutletState::On)
    );
    assert_eq!(pool.len(), 2, "the first service still holds sim2");
    drop(first);
    assert_eq!(pool.len(), 1, "sim2 is forgotten once nothing uses it");
}
