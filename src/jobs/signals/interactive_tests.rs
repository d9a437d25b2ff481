use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};

use super::*;
use crate::jobs::expect::ConsoleExpect;
use crate::jobs::log::parse_line;
use crate::jobs::model::JobDefinition;

/// A console over in-memory pipes to a scripted board.
struct Fake {
    expect: ConsoleExpect<DuplexStream>,
    to_board: DuplexStream,
    timeout: Duration,
}

impl InteractiveConsole for Fake {
    async fn sendline(&mut self, line: &str) -> Result<(), LavaError> {
        self.to_board
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        Ok(())
    }
    async fn expect(&mut self, patterns: &[&Pattern]) -> Result<ExpectMatch, ExpectError> {
        self.expect.expect(patterns, self.timeout).await
    }
    async fn sleep(&mut self, _d: Duration) {}
}

/// A U-Boot-like shell: echoes each line, answers `version`, refuses the rest.
fn board(banner: &'static str) -> Fake {
    let (console_side, mut board_out) = tokio::io::duplex(4096);
    let (to_board, board_in) = tokio::io::duplex(4096);
    tokio::spawn(async move {
        board_out.write_all(banner.as_bytes()).await.unwrap();
        let mut lines = BufReader::new(board_in).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            let reply = match l.as_str() {
                "version" => "U-Boot 2023.01-rc4 (Jan 01 2023)\r\n=> ".to_string(),
                other => format!("Unknown command '{other}' - try 'help'\r\n=> "),
            };
            board_out
                .write_all(format!("{l}\r\n{reply}").as_bytes())
                .await
                .unwrap();
        }
    });
    Fake {
        expect: ConsoleExpect::new(console_side),
        to_board,
        timeout: Duration::from_secs(2),
    }
}

const JOB: &str = r#"
device_type: bbb
job_name: interactive
visibility: public
timeouts: {job: {minutes: 5}}
actions:
- test:
    interactive:
    - name: uboot
      prompts: ['=> ']
      echo: discard
      script:
      - command: version
        name: version
        successes: [{message: 'U-Boot (?P<ver>\S+)'}]
      - command: echo {ver}
        name: bad
        failures: [{message: 'Unknown command'}]
      - command: frobnicate
        failures: [{message: 'Unknown command', exception: InfrastructureError, error: board broken}]
- test:
    monitors:
    - name: Zephyr-Tests
      start: BOOTING ZEPHYR
      end: PROJECT EXECUTION SUCCESSFUL
      pattern: '(?P<result>(PASS|FAIL)) - (?P<test_case_id>\w+)\.'
      fixupdict: {PASS: pass, FAIL: fail}
"#;

#[tokio::test]
async fn interactive_script_like_lava() {
    let job = JobDefinition::parse_and_validate(JOB).unwrap();
    let crate::jobs::model::Action::Test(t) = &job.actions[0] else {
        panic!()
    };
    let crate::jobs::model::TestKind::Interactive(tests) = &t.kind else {
        panic!()
    };
    let mut fake = board("\r\n=> ");
    let mut log = LogWriter::new(Vec::new());
    let mut subst = BTreeMap::new();
    fake.expect(&[&Pattern::literal("=> ")]).await.unwrap();
    let e = run_interactive(&mut fake, &tests[0], 0, &mut log, &mut subst)
        .await
        .unwrap_err();
    assert_eq!(
        (e.kind, e.message.as_str()),
        (LavaErrorType::Infrastructure, "board broken")
    );
    assert_eq!(subst["{ver}"], "2023.01-rc4");
    let recs: Vec<_> = log.sink().iter().map(|l| parse_line(l).unwrap()).collect();
    let results: Vec<_> = recs
        .iter()
        .filter(|r| r.lvl == "results")
        .map(|r| &r.msg)
        .collect();
    assert_eq!(results.len(), 2);
    assert_eq!(
        results[0].get("definition").and_then(LogValue::as_str),
        Some("0_uboot")
    );
    assert_eq!(
        results[0].get("case").and_then(LogValue::as_str),
        Some("version")
    );
    assert_eq!(
        results[0].get("result").and_then(LogValue::as_str),
        Some("pass")
    );
    assert_eq!(
        results[1].get("case").and_then(LogValue::as_str),
        Some("bad")
    );
    assert_eq!(
        results[1].get("result").and_then(LogValue::as_str),
        Some("fail")
    );
    let msgs: Vec<&str> = recs.iter().filter_map(|r| r.msg.as_str()).collect();
    assert!(msgs.contains(&"Sending 'version'"));
    assert!(
        msgs.contains(&"Ignoring echo: 'version\\r\\n'"),
        "{msgs:#?}"
    );
    assert!(
        msgs.contains(
            &"Matched a success: 'U-Boot (?P<ver>\\S+)' (groups: {'ver': '2023.01-rc4'})"
        ),
        "{msgs:#?}"
    );
    assert!(
        msgs.contains(&"Sending 'echo 2023.01-rc4'"),
        "substitution: {msgs:#?}"
    );
    assert!(msgs.contains(&"Matched a failure: 'Unknown command'"));
}

#[tokio::test]
async fn monitors_record_each_match() {
    let job = JobDefinition::parse_and_validate(JOB).unwrap();
    let crate::jobs::model::Action::Test(t) = &job.actions[1] else {
        panic!()
    };
    let crate::jobs::model::TestKind::Monitors(m) = &t.kind else {
        panic!()
    };
    let mut fake = board(
        "*** BOOTING ZEPHYR OS ***\r\nPASS - test_a.\r\nFAIL - test_b.\r\nSKIP - test_c.\r\nPROJECT EXECUTION SUCCESSFUL\r\n",
    );
    let mut log = LogWriter::new(Vec::new());
    let out = run_monitor(&mut fake, &m[0], "3.1", &mut log)
        .await
        .unwrap();
    assert_eq!(out, MonitorOutcome::Passed);
    let recs: Vec<_> = log.sink().iter().map(|l| parse_line(l).unwrap()).collect();
    let results: Vec<_> = recs
        .iter()
        .filter(|r| r.lvl == "results")
        .map(|r| &r.msg)
        .collect();
    assert_eq!(results.len(), 2, "SKIP does not match the pattern");
    assert_eq!(
        *results[1],
        LogValue::map()
            .with("definition", "zephyr-tests")
            .with("case", "test_b")
            .with("level", "3.1")
            .with("result", "fail")
            .with("extra", LogValue::map().with("test_case_id", "test_b"))
    );
    // A monitor whose end never comes times out.
    let mut fake = board("BOOTING ZEPHYR\r\nPASS - x.\r\n");
    fake.timeout = Duration::from_millis(200);
    let out = run_monitor(&mut fake, &m[0], "3.1", &mut LogWriter::new(Vec::new()))
        .await
        .unwrap();
    assert_eq!(out, MonitorOutcome::TimedOut);
}
