use std::time::{Duration, Instant};

use super::*;
use crate::jobs::log::{LogRecord, parse_line};

fn writer() -> LogWriter<Vec<String>> {
    let t = chrono::NaiveDate::from_ymd_opt(2023, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    LogWriter::with_clock(Vec::new(), Box::new(move || t))
}

fn run(testrun: &str, uuid: &str, pattern: Option<&str>) -> TestRunInfo {
    TestRunInfo {
        testrun_id: testrun.into(),
        uuid: uuid.into(),
        stage: 0,
        runner_path: format!("/lava-1/0/tests/{testrun}"),
        path: "inline/x.yaml".into(),
        repository: LogValue::map().with("metadata", LogValue::map().with("name", "x")),
        revision: None,
        parse_pattern: pattern.map(str::to_string),
        fixupdict: pattern.map(|_| {
            [("OK".to_string(), "pass".to_string())]
                .into_iter()
                .collect()
        }),
    }
}

fn session(pattern: Option<&str>) -> TestShellSession {
    TestShellSession::new(SessionConfig {
        stage: 0,
        namespace: "common".into(),
        runs: vec![run("0_smoke", "1_1.1", pattern)],
        feedback_namespaces: vec!["other".into()],
        ..Default::default()
    })
}

fn records(w: &LogWriter<Vec<String>>) -> Vec<LogRecord> {
    w.sink().iter().map(|l| parse_line(l).unwrap()).collect()
}

#[test]
fn a_run_gives_lavas_records() {
    let mut s = session(None);
    let mut w = writer();
    let t0 = Instant::now();
    let text = "<LAVA_SIGNAL_STARTRUN 0_smoke 1_1.1>\r\n<LAVA_SIGNAL_STARTTC pwd>\r\n/\r\n<LAVA_SIGNAL_ENDTC pwd>\r\n<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=pwd RESULT=pass>\r\n<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=m RESULT=FAIL UNITS=s MEASUREMENT=1e3>\r\n<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=u RESULT=pass UNITS=s>\r\n";
    // The console logger writes the target lines; here the session alone is checked, so every
    // signal's debug line is what numbers the markers.
    let o = s.feed(text, t0, &mut w).unwrap();
    assert!(!o.finished);
    let o = s
        .feed(
            "<LAVA_SIGNAL_ENDRUN 0_smoke 1_1.1>\r\n<LAVA_TEST_RUNNER EXIT>\r\n",
            t0 + Duration::from_millis(1500),
            &mut w,
        )
        .unwrap();
    assert!(o.finished);
    s.finish(t0 + Duration::from_secs(2), &mut w).unwrap();
    let lines = w.sink();
    assert_eq!(
        parse_line(&lines[0]).unwrap().msg.as_str(),
        Some("Received signal: <STARTRUN> 0_smoke 1_1.1")
    );
    assert_eq!(
        parse_line(&lines[1]).unwrap().msg.as_str(),
        Some("Starting test lava.0_smoke (1_1.1)")
    );
    assert_eq!(
        parse_line(&lines[2]).unwrap().msg.as_str(),
        Some("Skipping test definition patterns.")
    );
    // STARTTC's debug line is line index 3, ENDTC's 4, TESTCASE's 5: starttc 3, endtc 4.
    assert!(lines[6].ends_with(r#""msg": {"case": "pwd", "definition": "0_smoke", "endtc": ! "4", "result": "pass", "starttc": ! "3"}}"#), "{}", lines[6]);
    // The default fix-up maps FAIL to fail; the measurement is a float; a TESTCASE without
    // STARTTC/ENDTC gets its own line as both.
    assert!(lines[8].ends_with(r#""msg": {"case": "m", "definition": "0_smoke", "endtc": ! "7", "measurement": ! "1000.0", "result": "fail", "starttc": ! "7", "units": "s"}}"#), "{}", lines[8]);
    // Units without a measurement are dropped, as LAVA does.
    assert!(lines[10].ends_with(r#""msg": {"case": "u", "definition": "0_smoke", "endtc": ! "9", "result": "pass", "starttc": ! "9"}}"#), "{}", lines[10]);
    let recs = records(&w);
    let endrun = recs
        .iter()
        .find(|r| r.msg.get("case").and_then(LogValue::as_str) == Some("0_smoke"))
        .unwrap();
    assert_eq!(
        LogRecord {
            dt: String::new(),
            lvl: String::new(),
            msg: endrun.msg.clone(),
            ns: None
        }
        .msg,
        LogValue::map()
            .with("definition", "lava")
            .with("case", "0_smoke")
            .with("uuid", "1_1.1")
            .with(
                "repository",
                LogValue::map().with("metadata", LogValue::map().with("name", "x"))
            )
            .with("path", "inline/x.yaml")
            .with("duration", "1.50")
            .with("result", "pass")
            .with("revision", "unspecified")
            .with("namespace", "common")
    );
    assert!(
        recs.iter()
            .any(|r| r.msg.as_str() == Some("Ending test lava.0_smoke (1_1.1), duration 1.50"))
    );
    assert!(
        recs.iter()
            .any(|r| r.msg.as_str() == Some("ok: lava_test_shell seems to have completed"))
    );
}

#[test]
fn malformed_signals_are_logged_and_dropped() {
    let mut s = session(None);
    let mut w = writer();
    let t = Instant::now();
    // TESTCASE before STARTRUN is a TestError.
    let e = s
        .feed(
            "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=x RESULT=pass>\n",
            t,
            &mut w,
        )
        .unwrap_err();
    assert_eq!(e.message, "Invalid TESTCASE signal");
    assert_eq!(e.kind, LavaErrorType::Test);
    let mut s = session(None);
    let mut w = writer();
    s.feed("<LAVA_SIGNAL_STARTRUN 0_smoke 1_1.1>\n", t, &mut w)
        .unwrap();
    for sig in [
        "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=a RESULT=maybe>",
        "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=b RESULT=pass MEASUREMENT=fast>",
        "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=c d RESULT=pass>",
        "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=e=f RESULT=pass>",
        "<LAVA_SIGNAL_TESTCASE RESULT=pass>",
        "<LAVA_SIGNAL_TESTFEEDBACK nowhere>",
        "<LAVA_SIGNAL_TESTSET STOP>",
    ] {
        s.feed(&format!("{sig}\n"), t, &mut w).unwrap();
    }
    let msgs: Vec<String> = records(&w)
        .into_iter()
        .filter(|r| r.lvl == "error" || r.lvl == "info")
        .filter_map(|r| r.msg.as_str().map(str::to_string))
        .collect();
    for want in [
        "Bad test result: maybe",
        "Invalid measurement fast",
        "Ignoring malformed parameter for signal: \"d\". ",
        "Ignoring malformed parameter for signal: \"TEST_CASE_ID=e=f\". ",
        "Test case results without test_case_id (probably a sign of an incorrect parsing pattern being used): {'result': 'pass'}",
        "%s is not a valid namespace",
        "Closing test_set None",
    ] {
        assert!(
            msgs.iter().any(|m| m == want),
            "missing {want:?} in {msgs:#?}"
        );
    }
    assert!(records(&w).iter().all(|r| r.lvl != "results"));
    let o = s
        .feed("<LAVA_SIGNAL_TESTFEEDBACK other>\n", t, &mut w)
        .unwrap();
    assert_eq!(o.requests, [RunnerRequest::Feedback("other".into())]);
    assert_eq!(
        s.feed("<LAVA_SIGNAL_TESTREFERENCE a pass>\n", t, &mut w)
            .unwrap_err()
            .message,
        "Invalid use of TESTREFERENCE"
    );
    // `START` without a name is a JobError in LAVA (not caught by the signal handler).
    let e = s
        .feed("<LAVA_SIGNAL_TESTSET START>\n", t, &mut w)
        .unwrap_err();
    assert_eq!(
        (e.kind, e.message.as_str()),
        (LavaErrorType::Job, "Test set declared without a name")
    );
}

#[test]
fn install_fail_and_unfinished_runs() {
    let mut s = session(None);
    let mut w = writer();
    let t = Instant::now();
    s.feed("<LAVA_TEST_RUNNER INSTALL_FAIL>\n", t, &mut w)
        .unwrap();
    let o = s.feed("<LAVA_TEST_RUNNER EXIT>\n", t, &mut w).unwrap();
    assert!(o.finished);
    let e = s
        .finish(t + Duration::from_millis(250), &mut w)
        .unwrap_err();
    assert_eq!(e.message, "Unable to start test stage 0");
    let recs = records(&w);
    assert_eq!(
        recs[0].msg.as_str(),
        Some("Unable to start stage 0. Read the log for more details.")
    );
    let r = recs.iter().find(|r| r.lvl == "results").unwrap();
    assert_eq!(
        r.msg,
        LogValue::map()
            .with("definition", "lava")
            .with("case", "stage_0")
            .with("result", "fail")
            .with("duration", "0.25")
    );

    // A run that never ends (timeout) is recorded as failed by finish().
    let mut s = session(None);
    let mut w = writer();
    s.feed("<LAVA_SIGNAL_STARTRUN 0_smoke 1_1.1>\n", t, &mut w)
        .unwrap();
    s.finish(t + Duration::from_secs(3), &mut w).unwrap();
    let recs = records(&w);
    assert!(recs.iter().any(
        |r| r.lvl == "error" && r.msg.as_str() == Some("Marking unfinished test run as failed")
    ));
    let r = recs.iter().find(|r| r.lvl == "results").unwrap();
    assert_eq!(r.msg.get("result").and_then(LogValue::as_str), Some("fail"));
    assert_eq!(
        r.msg.get("duration").and_then(LogValue::as_str),
        Some("3.00")
    );
}

#[test]
fn parse_patterns_during_a_run() {
    let pat = r"^(?P<test_case_id>[\w/ ]+): (?P<result>OK|BAD)(?: (?P<measurement>[\d.]+))?";
    let mut s = session(Some(pat));
    let mut w = writer();
    let t = Instant::now();
    s.feed("before: OK\n<LAVA_SIGNAL_STARTRUN 0_smoke 1_1.1>\nnet/eth0: OK 3.5\nbad case: OK\nx: BAD\n", t, &mut w).unwrap();
    s.feed("<LAVA_SIGNAL_ENDRUN 0_smoke 1_1.1>\nafter: OK\n", t, &mut w)
        .unwrap();
    let recs = records(&w);
    let msgs: Vec<&LogValue> = recs.iter().map(|r| &r.msg).collect();
    assert!(msgs.iter().any(|m| m.as_str()
        == Some(&format!("Enabling test definition pattern {}", py_repr_str(pat)) as &str)));
    assert!(
        msgs.iter()
            .any(|m| m.as_str() == Some("Enabling test definition fixup {'OK': 'pass'}"))
    );
    let results: Vec<&LogValue> = recs
        .iter()
        .filter(|r| r.lvl == "results")
        .map(|r| &r.msg)
        .collect();
    // Only matches while the run is active; `/` kept in the case; the fix-up applies; a result
    // not in the fix-up dict is passed on unchecked (as LAVA does for parse patterns).
    assert_eq!(
        results[0].get("case").and_then(LogValue::as_str),
        Some("net/eth0")
    );
    assert_eq!(
        results[0].get("result").and_then(LogValue::as_str),
        Some("pass")
    );
    assert_eq!(results[0].get("measurement"), Some(&LogValue::Float(3.5)));
    assert_eq!(results[1].get("case").and_then(LogValue::as_str), Some("x"));
    assert_eq!(
        results[1].get("result").and_then(LogValue::as_str),
        Some("BAD")
    );
    assert!(
        recs.iter()
            .any(|r| r.msg.as_str() == Some("Skipping invalid test_case_id 'bad case'"))
    );
    assert_eq!(results.len(), 3, "{results:#?}");
}
