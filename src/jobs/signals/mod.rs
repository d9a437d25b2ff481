//! Test-shell signals and results: finding `<LAVA_SIGNAL_...>` lines in console output
//! ([`SignalScanner`]), turning them into LAVA's log records and results
//! ([`TestShellSession`]), interactive tests and monitors, and the action/job result records.

mod interactive;
mod records;
mod scan;
mod session;
mod util;

pub use interactive::{InteractiveConsole, MonitorOutcome, run_interactive, run_monitor};
pub use records::{action_result, job_result};
pub use scan::{
    MULTINODE_PATTERN, RUNNER_EXIT, RUNNER_INSTALL_FAIL, SIGNAL_PATTERN, ShellEvent, SignalScanner,
    fuzz_signal_stream,
};
pub use session::{FeedOutcome, RunnerRequest, SessionConfig, TestShellSession};
pub use util::{parse_decimal, py_repr_dict, py_repr_str, yaml_scalar_text, yaml_to_log};
