//! The DUT side of Multi-Node: the helper scripts a test definition calls (`lava-send`,
//! `lava-wait`, ...), the requests they print on the console, and what the dispatcher does
//! with them. The job runner only has to install [`scripts::helper_scripts`] on the board,
//! look for [`console::find_request`] in the console output, call [`handle`] and write
//! [`DutOutcome::console`] back.

pub mod console;
pub mod scripts;

pub use console::{DutMatch, DutRequest, MULTINODE_PATTERN, find_request};
pub use scripts::{DutParams, HelperScript, helper_scripts};

use crate::multinode::client::CoordinatorClient;
use crate::multinode::error::CoordinatorError;
use crate::multinode::pyjson::{Key, Value};

/// What the test shell does after a Multi-Node request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DutFlow {
    /// Keep reading the console.
    Continue,
    /// End the test-shell loop, as LAVA's handler returning false does (a Multi-Node timeout,
    /// a request the dispatcher does not know, a protocol JobError). The DUT may still be
    /// blocked in its helper.
    StopTestShell,
    /// Fail the job, as LAVA's TestError does (`nack` to `lava-send`, a request with the wrong
    /// number of arguments).
    FailJob,
}

/// The synthetic result LAVA records for each request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultinodeResult {
    /// `multinode-<name>-<messageID>`, lower-cased.
    pub test_case_id: String,
    pub pass: bool,
}

/// Everything the job runner needs after one request.
#[derive(Debug)]
pub struct DutOutcome {
    /// The reply line (`<LAVA_SYNC_COMPLETE>`, `<LAVA_WAIT_COMPLETE 100:k=v>`, ...), if any.
    pub reply_line: Option<String>,
    /// Exactly what to write to the console: the reply line, linesep, `"\n"`, linesep.
    pub console: Option<String>,
    pub result: Option<MultinodeResult>,
    pub flow: DutFlow,
    /// Why the flow is not `Continue`, or the error behind a failed result.
    pub error: Option<CoordinatorError>,
}

/// Makes the coordinator call a DUT request asks for and builds the dispatcher's answer.
/// `linesep` is the connection's line separator (`"\n"` unless the device says otherwise).
pub async fn handle(req: &DutRequest, client: &CoordinatorClient, linesep: &str) -> DutOutcome {
    let tc = req.test_case_id();
    let result = |pass: bool| {
        tc.clone()
            .map(|test_case_id| MultinodeResult { test_case_id, pass })
    };
    let bad_args = |what: &str| DutOutcome {
        reply_line: None,
        console: None,
        result: None,
        flow: DutFlow::FailJob,
        error: Some(CoordinatorError::DutRequest {
            line: format!("<LAVA_{} {}>", req.name, req.params.join(" ")),
            message: what.to_string(),
        }),
    };
    let Some(id) = req.params.first() else {
        return bad_args("no messageID");
    };
    let api = req.name.to_lowercase();
    let (reply, err) = match api.as_str() {
        "send" => {
            let data = console::send_data(&req.params);
            let msg = data
                .into_iter()
                .map(|(k, v)| (Key::Str(k), Value::Str(v)))
                .collect();
            match client.lava_send(id, msg).await {
                Ok(()) => (None, None),
                Err(e @ CoordinatorError::Nack { .. }) => {
                    return DutOutcome {
                        reply_line: None,
                        console: None,
                        result: None,
                        flow: DutFlow::FailJob,
                        error: Some(e),
                    };
                }
                Err(e) => (None, Some(e)),
            }
        }
        "sync" | "wait" | "wait_all" => {
            let arity_ok = match api.as_str() {
                "wait_all" => (1..=2).contains(&req.params.len()),
                _ => req.params.len() == 1,
            };
            if !arity_ok {
                return bad_args("wrong number of arguments");
            }
            let (tag, call) = match api.as_str() {
                "sync" => ("LAVA_SYNC_COMPLETE", client.lava_sync(id).await),
                "wait" => ("LAVA_WAIT_COMPLETE", client.lava_wait(id).await),
                _ => (
                    "LAVA_WAIT_ALL_COMPLETE",
                    client
                        .lava_wait_all(id, req.params.get(1).map(String::as_str))
                        .await,
                ),
            };
            match call {
                Ok(v) if api == "sync" => {
                    let _ = v;
                    (Some(format!("<{tag}>")), None)
                }
                Ok(v) => match console::format_wait_data(&v) {
                    Ok(data) => (Some(format!("<{tag}{data}>")), None),
                    Err(why) => {
                        return DutOutcome {
                            reply_line: None,
                            console: None,
                            result: None,
                            flow: DutFlow::FailJob,
                            error: Some(CoordinatorError::DutRequest {
                                line: format!("<LAVA_{} {}>", req.name, req.params.join(" ")),
                                message: format!("unusable coordinator reply: {why}"),
                            }),
                        };
                    }
                },
                Err(CoordinatorError::Nack { .. }) => (Some(format!("<{tag} nack>")), None),
                Err(e) => (None, Some(e)),
            }
        }
        // No `_on_<name>` handler: LAVA records a pass and ends the test shell.
        _ => {
            return DutOutcome {
                reply_line: None,
                console: None,
                result: result(true),
                flow: DutFlow::StopTestShell,
                error: None,
            };
        }
    };
    match err {
        None => DutOutcome {
            console: reply.as_deref().map(|l| console::console_bytes(l, linesep)),
            reply_line: reply,
            result: result(true),
            flow: DutFlow::Continue,
            error: None,
        },
        // LAVA: MultinodeProtocolTimeoutError → result fail, loop ends.
        Some(e @ (CoordinatorError::Timeout { .. } | CoordinatorError::Unreachable { .. })) => {
            DutOutcome {
                reply_line: None,
                console: None,
                result: result(false),
                flow: DutFlow::StopTestShell,
                error: Some(e),
            }
        }
        // LAVA: a JobError inside the handler → result pass (sic), loop ends.
        Some(e) => DutOutcome {
            reply_line: None,
            console: None,
            result: result(true),
            flow: DutFlow::StopTestShell,
            error: Some(e),
        },
    }
}
