//! The demo job (`examples/jobs/demo-sim-uboot.yaml`) on a board like `labd demo`'s first
//! one: it must complete with its results, and the job metrics count it.

mod runner_support;

use labd::jobs::runner::Health;
use labd_hw_fixtures::simboard::BoardScript;
use runner_support::{SimLab, boot_section, cases};

const DEMO_JOB: &str = include_str!("../examples/jobs/demo-sim-uboot.yaml");

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_job_completes_with_its_results() {
    let lab = SimLab::new("demo-bbb01", BoardScript::uboot_linux("demo-bbb01"), |d| {
        boot_section(d, "")
    });
    let (report, _lines) = lab.run(DEMO_JOB).await;
    assert_eq!(report.health, Health::Complete, "{:?}", report.error);
    let c = cases(&report);
    let tests: Vec<(String, String, String)> =
        c.into_iter().filter(|(d, _, _)| d == "0_smoke").collect();
    assert_eq!(
        tests,
        [
            ("0_smoke", "shell-works", "pass"),
            ("0_smoke", "has-proc", "pass"),
            ("0_smoke", "two-plus-two", "pass"),
            ("0_smoke", "boot-speed", "pass"),
            ("0_smoke", "known-bug", "fail"),
        ]
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    );
    let set = report
        .results
        .iter()
        .find(|r| r.get("case").and_then(|v| v.as_str()) == Some("two-plus-two"))
        .unwrap();
    assert_eq!(set.get("set").and_then(|v| v.as_str()), Some("arithmetic"));
    // Metrics: one job started and finished complete on this device, none running.
    let text = labd::metrics::global().render();
    assert_eq!(
        metric(&text, "labd_jobs_started_total{device=\"demo-bbb01\"}"),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "labd_jobs_finished_total{device=\"demo-bbb01\",result=\"complete\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&text, "labd_jobs_running{device=\"demo-bbb01\"}"),
        0.0
    );
}
