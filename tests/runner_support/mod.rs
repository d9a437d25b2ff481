//! A simulated lab for runner tests: one simulated board on a pty, powered by an in-process
//! simulated PDU, its console started in-process from an inventory, and a helper that runs a
//! job and keeps every log line.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use labd::ids::PduName;
use labd::inventory::Inventory;
use labd::jobs::log::{LogValue, parse_line};
use labd::jobs::runner::{JobLog, JobReport, JobRequest, LocalBoard, run_job};
use labd::power::PowerService;
use labd_hw_fixtures::simboard::{BoardControl, BoardScript, SimBoard};
use labd_hw_fixtures::simpdu::SimPdu;
use tokio_util::sync::CancellationToken;

pub struct SimLab {
    pub dir: tempfile::TempDir,
    pub board: SimBoard,
    pub control: BoardControl,
    pub pdu: SimPdu,
    pub inventory: Arc<Inventory>,
    pub name: String,
}

/// `[device.boot]` for the simulated board (u-boot and minimal), results under the test's
/// directory (the board's shell is a real shell on this machine).
pub fn boot_section(dir: &Path, extra: &str) -> String {
    format!(
        "[device.boot]\nmethods = [\"minimal\", \"u-boot\"]\nbootloader_prompt = \"=> \"\n\
         results_dir = \"{}/lava-%s\"\ncharacter_delays = {{ boot = 1, test = 0 }}\n{extra}\n",
        dir.display()
    )
}

impl SimLab {
    /// A board running `script` (made fast), with `boot` as its `[device.boot]` text.
    pub fn new(name: &str, script: BoardScript, boot: impl FnOnce(&Path) -> String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let board = SimBoard::spawn(name, dir.path(), script.fast()).unwrap();
        let control = board.control();
        let pdu = SimPdu::new("pdu", 1);
        let c = control.clone();
        pdu.on_switch(
            1,
            Box::new(move |on| if on { c.power_on() } else { c.power_off() }),
        );
        let text = format!(
            "[worker]\nname = \"w\"\nstate_dir = \"{state}\"\n\
             [[pdu]]\nname = \"pdu\"\ndriver = \"sim\"\noutlets = 1\n\
             [[device]]\nname = \"{name}\"\ndevice_type = \"labd-sim\"\n\
             [device.console]\ntty = \"{tty}\"\nbaud = 115200\n\
             [device.power]\npdu = \"pdu\"\noutlet = 1\nreboot_delay = \"100ms\"\n{boot}",
            state = dir.path().join("state").display(),
            tty = control.tty_path().display(),
            boot = boot(dir.path()),
        );
        let inventory = Arc::new(
            Inventory::parse(&dir.path().join("inventory.toml"), &text)
                .unwrap_or_else(|e| panic!("{e}\n{text}")),
        );
        Self {
            dir,
            board,
            control,
            pdu,
            inventory,
            name: name.to_string(),
        }
    }

    pub fn power(&self) -> PowerService {
        PowerService::builder(&self.inventory)
            .attach_sim(&PduName::new("pdu").unwrap(), self.pdu.clone())
            .build()
            .unwrap()
    }

    /// Starts the console and power in-process, like `labd run-job` without a daemon.
    pub async fn local(&self) -> LocalBoard {
        LocalBoard::start(self.inventory.clone(), &self.name, Some(self.power()), None)
            .await
            .unwrap()
    }

    /// Runs `job` and returns its report and every log line.
    pub async fn run(&self, job: &str) -> (JobReport, Vec<String>) {
        self.run_with(job, CancellationToken::new()).await
    }

    pub async fn run_with(&self, job: &str, cancel: CancellationToken) -> (JobReport, Vec<String>) {
        let local = self.local().await;
        let (report, lines) = run_collect(&local, job, self.dir.path(), cancel).await;
        local.stop().await;
        (report, lines)
    }
}

/// Runs `job` on `local`, collecting the log lines (also printed, for failing tests).
pub async fn run_collect(
    local: &LocalBoard,
    job: &str,
    dir: &Path,
    cancel: CancellationToken,
) -> (JobReport, Vec<String>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = lines.clone();
    let work_dir: PathBuf = dir.join("job");
    std::fs::create_dir_all(&work_dir).unwrap();
    let log = JobLog::new(
        Some(&work_dir.join("output.yaml")),
        Some(Box::new(move |line: &str| {
            println!("{line}");
            l.lock().unwrap().push(line.to_string());
        })),
    );
    let req = JobRequest {
        id: "17".into(),
        definition: job.to_string(),
        device: local.setup.clone(),
        work_dir,
        log,
        cancel,
    };
    let report = tokio::time::timeout(Duration::from_secs(300), run_job(&local.env, req))
        .await
        .expect("the job ended");
    let lines = lines.lock().unwrap().clone();
    (report, lines)
}

/// The `msg` of every record at level `lvl`.
pub fn msgs(lines: &[String], lvl: &str) -> Vec<LogValue> {
    lines
        .iter()
        .map(|l| parse_line(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|r| r.lvl.as_str() == lvl)
        .map(|r| r.msg)
        .collect()
}

/// `(definition, case, result)` of every results record.
pub fn cases(report: &JobReport) -> Vec<(String, String, String)> {
    report
        .results
        .iter()
        .map(|r| {
            let s = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
            (s("definition"), s("case"), s("result"))
        })
        .collect()
}

/// Whether any log message (as text) contains `needle`.
pub fn logged(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}
