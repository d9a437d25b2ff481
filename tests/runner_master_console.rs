//! A master job whose device dictionary says `connect: telnet localhost PORT`, PORT being one
//! of labd's own console listeners: the runner uses that console directly (job subscription,
//! writer lease) and labd's power service for the board, not the dictionary's commands.

mod runner_support;

use labd::daemon::Daemon;
use labd::inventory::Inventory;
use labd::jobs::device::DeviceConfiguration;
use labd::jobs::runner::{ConsoleAccess, DeviceSetup, Health, JobLog, JobRequest, RunEnv, run_job};
use labd_hw_fixtures::simboard::BoardScript;
use labd_hw_fixtures::simpdu::http::SimPduServer;
use runner_support::{SimLab, boot_section, cases};
use tokio_util::sync::CancellationToken;

const JOB: &str = r#"
job_name: master job on a labd console
device_type: labd-sim
visibility: public
timeouts: {job: {minutes: 2}, action: {minutes: 1}, connection: {seconds: 30}}
actions:
- boot:
    method: u-boot
    commands: [boot]
    auto_login: {login_prompt: 'login:', username: root, password_prompt: 'Password:', password: root}
    prompts: ['root@sim31:~# ']
- test:
    definitions:
    - from: inline
      name: smoke
      path: inline/smoke.yaml
      repository:
        metadata: {format: Lava-Test Test Definition 1.0, name: smoke}
        run: {steps: ['lava-test-case on-labd-console --shell true']}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telnet_to_a_labd_listener_uses_the_console_and_labd_power() {
    let lab = SimLab::new("sim31", BoardScript::uboot_linux("sim31"), |d| {
        boot_section(d, "")
    });
    let server = SimPduServer::start(lab.pdu.clone()).await.unwrap();
    let port = labd_hw_fixtures::free_tcp_port();
    let path = lab.write_inventory(&server.url());
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "baud = 115200\n",
        &format!("baud = 115200\nlisten = {port}\n"),
    );
    std::fs::write(&path, text).unwrap();
    let inv = Inventory::load(&path).unwrap();
    let daemon = Daemon::new(&path, inv);
    let services = daemon.services().clone();
    let running = daemon.start().await.unwrap();
    let inv = services.inventory();
    let power = labd::power::PowerService::new(&inv).unwrap();
    // What lava-server renders for a device whose dictionary points at labd.
    let device = format!(
        "commands:\n  connect: telnet localhost {port}\n  hard_reset: /bin/false\n  power_on: /bin/false\n  power_off: /bin/false\n\
         actions:\n  boot:\n    methods:\n      u-boot:\n        parameters:\n          bootloader_prompt: '=> '\n          interrupt_prompt: 'Hit any key to stop autoboot'\n          interrupt_char: ' '\n"
    );
    let config = DeviceConfiguration::parse(&device).unwrap();
    let setup =
        DeviceSetup::from_master(config, Some(&services.consoles), Some(&inv), Some(&power))
            .unwrap();
    assert!(matches!(setup.console, ConsoleAccess::Hub(_)));
    assert_eq!(setup.name.as_ref().map(|n| n.as_str()), Some("sim31"));
    let env = RunEnv {
        consoles: Some(services.consoles.clone()),
        inventory: Some(inv.clone()),
        power: Some(power),
        ..RunEnv::default()
    };
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let l = lines.clone();
    let log = JobLog::stream_only(Box::new(move |s: &str| l.lock().unwrap().push(s.into())));
    let work_dir = lab.dir.path().join("master-job");
    std::fs::create_dir_all(&work_dir).unwrap();
    let report = run_job(
        &env,
        JobRequest {
            id: "31".into(),
            definition: JOB.into(),
            device: setup,
            work_dir,
            log,
            cancel: CancellationToken::new(),
        },
    )
    .await;
    running.stop().await;
    let lines = lines.lock().unwrap().clone();
    assert_eq!(
        report.health,
        Health::Complete,
        "{:?}\n{}",
        report.error,
        lines.join("\n")
    );
    assert!(cases(&report).contains(&("0_smoke".into(), "on-labd-console".into(), "pass".into())));
    let text = lines.join("\n");
    assert!(text.contains("connect-device Connecting to device using 'labd console sim31'"));
    assert!(text.contains("labd power: sim31 reboot"));
    assert!(
        !text.contains("/bin/false"),
        "the dictionary's power commands were not run"
    );
    // The reboot switched the (already off) outlet on; finalising switched it off.
    let events: Vec<bool> = lab.pdu.events().iter().map(|e| e.on).collect();
    assert_eq!(events, [true, false]);
}

/// A master job on an inventory board waits while a job of this worker (here a Multi-Node
/// group of `labd run-job`) holds the board in the daemon's reservations, says so in its log,
/// and runs once the board is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_job_waits_for_its_board_held_by_a_local_group() {
    use labd::jobs::runner::RunnerExecutor;
    use labd::master::{JobExecutor, JobLogSink, MasterJob};
    use labd::multinode::group::Reservations;

    let lab = SimLab::new("sim31", BoardScript::uboot_linux("sim31"), |d| {
        boot_section(d, "")
    });
    let server = SimPduServer::start(lab.pdu.clone()).await.unwrap();
    let port = labd_hw_fixtures::free_tcp_port();
    let path = lab.write_inventory(&server.url());
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "baud = 115200\n",
        &format!("baud = 115200\nlisten = {port}\n"),
    );
    std::fs::write(&path, text).unwrap();
    let daemon = Daemon::new(&path, Inventory::load(&path).unwrap());
    let services = daemon.services().clone();
    let running = daemon.start().await.unwrap();
    let inv = services.inventory();
    let power = labd::power::PowerService::new(&inv).unwrap();
    let boards = Reservations::new();
    let sim31 = labd::ids::DeviceName::new("sim31").unwrap();
    let group = boards.hold("group 5", &sim31, None, |_| {}).await.unwrap();
    let s = services.clone();
    let executor = RunnerExecutor::new(move || RunEnv {
        consoles: Some(s.consoles.clone()),
        inventory: Some(s.inventory()),
        power: Some(power.clone()),
        ..RunEnv::default()
    })
    .with_boards(std::sync::Arc::new(boards.clone()));
    let device = format!(
        "commands:\n  connect: telnet localhost {port}\n  hard_reset: /bin/false\n  power_on: /bin/false\n  power_off: /bin/false\n\
         actions:\n  boot:\n    methods:\n      u-boot:\n        parameters:\n          bootloader_prompt: '=> '\n          interrupt_prompt: 'Hit any key to stop autoboot'\n          interrupt_char: ' '\n"
    );
    let job = MasterJob {
        id: labd::ids::JobId::new("31").unwrap(),
        token: String::new(),
        definition: JOB.into(),
        device,
        dispatcher: String::new(),
        env: String::new(),
        env_dut: String::new(),
        work_dir: lab.dir.path().join("master-job"),
    };
    std::fs::create_dir_all(&job.work_dir).unwrap();
    let (sink, mut reader) = JobLogSink::detached();
    let run = tokio::spawn(executor.run(job, sink, CancellationToken::new()));
    let mut lines = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !lines
        .iter()
        .any(|l: &String| l.contains("Waiting for the board"))
    {
        assert!(std::time::Instant::now() < deadline, "{lines:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        lines.extend(reader.lines());
    }
    let waiting = lines
        .iter()
        .find(|l| l.contains("Waiting for the board"))
        .unwrap();
    assert!(waiting.contains("busy: [sim31 (group 5)]"), "{waiting}");
    assert_eq!(boards.waiters(), ["master job 31"]);
    assert!(lab.pdu.events().is_empty(), "the board was not touched");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!run.is_finished());
    drop(group);
    let outcome = run.await.unwrap();
    lines.extend(reader.lines());
    running.stop().await;
    assert_eq!(outcome.health(), "complete", "{}", lines.join("\n"));
    assert!(boards.holders().is_empty(), "released at the end");
    let events: Vec<bool> = lab.pdu.events().iter().map(|e| e.on).collect();
    assert_eq!(events, [true, false]);
}
